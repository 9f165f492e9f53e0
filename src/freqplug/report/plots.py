"""Plot functions of the built-in report stages (one per stage record in :mod:`freqplug.report.stages`).

Every function takes a :class:`PlotView` (the models that ran the stage, their metrics and arrays)
and returns a matplotlib ``Figure`` or ``None`` (nothing to draw). Figures use matplotlib's object
API with the Agg canvas (no pyplot, no display, no global backend change). With several models,
curves are overlaid and maps are drawn side by side.

Every panel has a title and axis labels, heatmaps have a labelled colorbar and axes in bins or
normalized frequency (cycles per pixel), panels with several series have a legend, and no empty
panel is left in a figure (``tests/test_report_plots.py`` checks all of it for every registered stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping

import torch


@dataclass
class PlotView:
    """What a stage's plot function sees.

    Attributes:
        names: models that ran the stage (skipped ones left out), in report order.
        metrics: ``{model: stage metrics}``.
        arrays: ``{model: {name: tensor}}``.
        settings: the run's settings (``metrics.json["settings"]``).
    """

    names: List[str]
    metrics: Dict[str, Mapping[str, Any]]
    arrays: Dict[str, Mapping[str, torch.Tensor]]
    settings: Mapping[str, Any]

    def with_arrays(self) -> List[str]:
        """The models whose stage produced arrays (a stage with nothing to show has none)."""
        return [n for n in self.names if self.arrays.get(n)]


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 3.6, height: float = 3.0):
    """A constrained-layout Agg ``Figure`` and its (nrows, ncols) axes array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(nrows, ncols, squeeze=False)


def frequency_heatmap(figure, ax, values: torch.Tensor, *, title: str, colorbar_label: str, cmap: str = "magma",
                      centered: bool = True, diverging: bool = False):
    """A centered DFT map (H, W) with axes in normalized frequency (cycles/pixel) and a labelled colorbar.

    ``diverging``: a colormap centred at 0 with symmetric limits (signed scores, e.g. Shapley values).
    """
    from ..plots.frequency_attr import diverging_norm, heat_map_extent

    h, w = values.shape[-2:]
    norm = diverging_norm(float(values.abs().max())) if diverging else None
    extent = heat_map_extent(h, w, "fft2") if centered else None
    image = ax.imshow(values.numpy(), cmap=cmap, norm=norm, extent=extent, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("horizontal frequency (cycles/pixel)", fontsize=7)
    ax.set_ylabel("vertical frequency (cycles/pixel)", fontsize=7)
    figure.colorbar(image, ax=ax, shrink=0.8).set_label(colorbar_label, fontsize=7)
    return image


def _grouped_bars(ax, names, categories, values_of, **tick_options):
    """One group of bars per category, one bar per model (``values_of(name)``: its value per category), each
    labelled with its value (a bar of height 0 is otherwise invisible); rates in [0, 1]."""
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        bars = ax.bar([j + i * width for j in range(len(categories))], values_of(n), width=width, label=n)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(categories))], categories, **tick_options)
    ax.set_ylim(0, 1.1)


def plot_autoattack(view: PlotView):
    names, metrics = view.names, view.metrics
    figure, axes = new_figure()
    ax = axes[0, 0]
    _grouped_bars(ax, names, ["clean", "robust"],
                  lambda n: [metrics[n]["clean_accuracy"], metrics[n]["robust_accuracy"]])
    ax.set_title("clean and robust accuracy", fontsize=8)
    ax.set_xlabel("evaluation")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    return figure


def plot_perturbation_spectrum(view: PlotView):
    names, arrays = view.with_arrays(), view.arrays
    if not names:
        return None
    figure, axes = new_figure(len(names) + 1)
    for ax, n in zip(axes[0], names):
        image = ax.imshow(arrays[n]["rct"].clamp_min(1e-6).log10().numpy(), cmap="viridis")
        ax.set_title(f"log10 RCT: {n}", fontsize=8)
        ax.set_xlabel("DCT column (bins, low -> high)")
        ax.set_ylabel("DCT row (bins, low -> high)")
        figure.colorbar(image, ax=ax, shrink=0.8).set_label("log10 RCT", fontsize=7)
    ax = axes[0, -1]
    for n in names:
        ax.plot(arrays[n]["snr_db"].numpy(), marker="o", markersize=2, label=n)
    ax.set_xlabel("radius (DFT bins)")
    ax.set_ylabel("ESD(x) / ESD(delta) [dB]")
    ax.set_title("spectral SNR", fontsize=8)
    ax.legend(fontsize=7)
    return figure


def plot_masked_noise(view: PlotView):
    names, metrics = view.names, view.metrics
    figure, axes = new_figure(width=5.0)
    ax = axes[0, 0]
    keys = list(metrics[names[0]]["error_rate"])
    _grouped_bars(ax, names, [k.replace("x+delta", "x+δ") for k in keys],
                  lambda n: [metrics[n]["error_rate"][k] for k in keys], fontsize=7, rotation=20)
    ax.set_title("error under frequency-restricted PGD noise", fontsize=8)
    ax.set_xlabel("input (noise restricted to a frequency set)")
    ax.set_ylabel("error rate")
    ax.legend(fontsize=7)
    return figure


def plot_band_shapley(view: PlotView):
    names, arrays = view.with_arrays(), view.arrays
    if not names:
        return None
    figure, axes = new_figure(2)
    for n in names:
        bands = range(len(arrays[n]["sid"]))
        axes[0, 0].plot(bands, arrays[n]["sid"].numpy(), marker="o", label=n)
        axes[0, 1].errorbar(bands, arrays[n]["psi"].numpy(), yerr=arrays[n]["stderr"].numpy(), marker="o",
                            capsize=2, label=n)
    axes[0, 0].set_title("SID (min-shifted, L1-normalized)", fontsize=8)
    axes[0, 0].set_ylabel("SID (share of importance)")
    axes[0, 1].set_title("band Shapley value ψ ± stderr", fontsize=8)
    axes[0, 1].set_ylabel("ψ (change of the true-class output)")
    for ax in axes[0]:
        ax.set_xlabel("band (low -> high)")
        ax.legend(fontsize=7)
    return figure


def plot_frequency_shapley(view: PlotView):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names, arrays = view.with_arrays(), view.arrays
    if not names:
        return None
    m = arrays[names[0]]["images"].shape[0]
    # Two sub-figures, so the maps' colorbars do not widen the columns of the image grid below them.
    width = 2.2 * max(len(names) + 1, m)
    figure = Figure(figsize=(width, 2.6 + 2.0 * 3 * len(names)), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subfigures(2, 1, height_ratios=[2.6, 2.0 * 3 * len(names)])
    maps = top.subplots(1, len(names) + 1, squeeze=False)[0]
    for ax, n in zip(maps, names):
        frequency_heatmap(top, ax, arrays[n]["mean_map"], title=f"mean φ (centered DFT): {n}",
                          colorbar_label="φ (0 = white)", cmap="RdBu_r", diverging=True)
    ax = maps[-1]
    for n in names:
        ax.plot(arrays[n]["radial"].numpy(), label=n)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_title("radial average of φ", fontsize=7)
    ax.set_xlabel("radius (DFT bins from DC)", fontsize=7)
    ax.set_ylabel("mean φ per ring", fontsize=7)
    ax.legend(fontsize=6)
    grid = bottom.subplots(3 * len(names), m, squeeze=False)
    for i, n in enumerate(names):
        for j in range(m):
            for r, (label, images) in enumerate((("image", arrays[n]["images"]), ("PFC", arrays[n]["pfc"]),
                                                 ("NFC", arrays[n]["nfc"]))):
                ax = grid[3 * i + r, j]
                picture = images[j]
                if label != "image":  # signed components: stretch to [0, 1] for display
                    picture = (picture - picture.min()) / (picture.max() - picture.min()).clamp_min(1e-12)
                ax.imshow(picture.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(),
                          cmap="gray" if picture.shape[0] == 1 else None)
                ax.set_title(f"{label} {j}" + (f" ({n})" if len(names) > 1 else ""), fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
    return figure


def plot_frequency_bias(view: PlotView):
    names, arrays, metrics = view.with_arrays(), view.arrays, view.metrics
    if not names:
        return None
    figure, axes = new_figure(len(names))
    for ax, n in zip(axes[0], names):
        frequency_heatmap(figure, ax, arrays[n]["jacobian_spectrum"].clamp_min(1e-12).log10(),
                          title=f"log10 |DFT(J)| (centered): {n}\nB_low = {metrics[n]['b_low']:.3g}",
                          colorbar_label="log10 |DFT(J)|")
    return figure


def plot_hf_attack(view: PlotView):
    names, arrays, metrics = view.with_arrays(), view.arrays, view.metrics
    if not names:
        return None
    figure, axes = new_figure(width=5.0)
    ax = axes[0, 0]
    for n in names:
        radius = arrays[n]["found_radius"]
        radius = radius[~torch.isnan(radius)]
        rate = metrics[n]["success_rate"]
        if radius.numel():
            ax.hist(radius.numpy(), bins=12, alpha=0.6,
                    label=f"{n} ({'n/a' if rate is None else f'{rate:.0%}'} success)")
    ax.set_title("HF attack: largest misclassified low-pass radius", fontsize=8)
    ax.set_xlabel("low-pass radius (bins)")
    ax.set_ylabel("correctly classified images")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:  # say so rather than leave an empty panel
        ax.text(0.5, 0.5, "no success at any radius tried", ha="center", va="center", transform=ax.transAxes)
    return figure


def plot_occluded_frequency(view: PlotView):
    import matplotlib
    import numpy as np

    names, arrays = view.with_arrays(), view.arrays
    if not names:
        return None
    figure, axes = new_figure(len(names) + 1)
    ax = axes[0, 0]
    for n in names:
        ax.plot(arrays[n]["mean"].numpy(), marker="o", markersize=2, label=n)
    ax.set_title("mean logit drop per occluded ring", fontsize=8)
    ax.set_xlabel("DCT ring max(u, v) // ring width (low -> high)")
    ax.set_ylabel("true-class logit drop")
    ax.legend(fontsize=7)
    # A class with no image has no average: drawn as a grey (masked) row, never as a zero drop.
    colormap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    for ax, n in zip(axes[0, 1:], names):
        image = ax.imshow(np.ma.masked_invalid(arrays[n]["class_means"].numpy()), aspect="auto", cmap=colormap)
        ax.set_title(f"per class: {n} (grey: no image)", fontsize=8)
        ax.set_xlabel("DCT ring (low -> high)")
        ax.set_ylabel("class")
        figure.colorbar(image, ax=ax, shrink=0.8).set_label("true-class logit drop", fontsize=7)
    return figure
