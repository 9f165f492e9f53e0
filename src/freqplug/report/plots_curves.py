"""Plots of robustness curves (Wang2020b Figs. 2-4) and of the class-wise frequency analysis (Chen2022 Figs. 5, 7).

matplotlib's object API on an Agg canvas (no pyplot, no display, no global backend change), imported through
:func:`freqplug._optional.require` (extra ``freqplug[report]``). Library-level functions take a result (or its
``to_dict()``) and return a ``Figure``; the ``*_stage`` functions are the report stages' plot functions (they
take a :class:`~freqplug.report.plots.PlotView`).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional

from .._optional import require

__all__ = ["plot_classwise_hfc", "plot_classwise_stage", "plot_robustness_curve", "plot_robustness_curve_stage",
           "plot_significant_components"]


def _figure(ncols: int = 1, width: float = 4.2, height: float = 3.2):
    figure_module = require("matplotlib.figure", "freqplug's report plots")
    agg = require("matplotlib.backends.backend_agg", "freqplug's report plots")
    figure = figure_module.Figure(figsize=(width * ncols, height), layout="constrained")
    agg.FigureCanvasAgg(figure)
    return figure, figure.subplots(1, ncols, squeeze=False)[0]


def _as_dict(result) -> Mapping[str, Any]:
    return result if isinstance(result, Mapping) else result.to_dict()


def _eps_axis(eps: List[float], norm: str):
    """eps in 1/255 for Linf budgets (Wang2020b plot the Linf distance in pixel units), else as is."""
    if norm == "Linf":
        return [e * 255 for e in eps], "Linf budget eps (x 1/255)"
    return list(eps), f"{norm} budget eps"


def _draw_curves(ax, data: Mapping[str, Any], prefix: str = "") -> None:
    x, label = _eps_axis(data["eps"], data.get("norm", "Linf"))
    colors = {}
    for i, (attack, acc) in enumerate(data["accuracy"].items()):
        line, = ax.plot(x, acc, marker="o", markersize=3,
                        label=f"{prefix}{attack} (AUC {data['auc'][attack]:.2f})")
        colors[attack] = line.get_color()
    styles = ["--", ":", "-."]
    for j, (defense, curves) in enumerate(data.get("defended", {}).items()):
        for attack, acc in curves.items():
            ax.plot(x, acc, linestyle=styles[j % len(styles)], marker="x", markersize=3, color=colors.get(attack),
                    label=f"{prefix}{attack} + {defense} (AUC {data['defended_auc'][defense][attack]:.2f})")
    ax.set_xlabel(label)
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)


def _draw_hf_radius(ax, data: Mapping[str, Any], prefix: str = "") -> None:
    for attack, curve in data.get("hf_radius", {}).items():
        ax.plot(curve["radius"], curve["accuracy"], marker="o", markersize=3, label=f"{prefix}{attack}")
    ax.invert_xaxis()  # HF scans from the largest radius down
    ax.set_xlabel("smallest low-pass radius allowed (bins)")
    ax.set_ylabel("accuracy under the HF attack")
    ax.set_ylim(-0.02, 1.02)


def plot_robustness_curve(result, *, title: Optional[str] = None):
    """Accuracy against eps, one solid curve per attack and a dashed one per (attack, defense); a second panel
    with the HF attack's accuracy against its smallest radius when the result has one (Wang2020b Figs. 2-4).

    Args:
        result: a :class:`~freqplug.eval.RobustnessCurve` or its ``to_dict()``.
        title: figure title (default: "Robustness curves (N images)").

    Returns:
        matplotlib ``Figure``.
    """
    data = _as_dict(result)
    has_hf = bool(data.get("hf_radius"))
    figure, axes = _figure(2 if has_hf else 1)
    _draw_curves(axes[0], data)
    axes[0].set_title("accuracy under attack", fontsize=9)
    _legend(axes[0])
    if has_hf:
        _draw_hf_radius(axes[1], data)
        axes[1].set_title("HF attack against radius", fontsize=9)
        _legend(axes[1])
    figure.suptitle(title or f"Robustness curves ({data['n_images']} images)", fontsize=10)
    return figure


def _legend(ax) -> None:
    """A legend inside the axes for a few curves, beside them for many (several models x attacks x defenses)."""
    entries = len(ax.get_legend_handles_labels()[0])
    if entries > 6:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    elif entries:
        ax.legend(fontsize=7)


def _finite(values) -> List[float]:
    return [float("nan") if v is None else float(v) for v in values]


def plot_classwise_hfc(classwise, *, title: Optional[str] = None, class_names: Optional[List[str]] = None):
    """Chen2022 Fig. 5: per-class mean |phi_HFC| (x) against per-class robust accuracy (y), one labelled point per
    class, with Pearson/Spearman and the number of classes in the title; bars of |phi_HFC| when the result has no
    robust accuracies.

    Args:
        classwise: a :class:`~freqplug.eval.ClasswiseHFC` or its ``to_dict()``.
        title: figure title. class_names: labels of the classes (default: their indices).
    """
    data = _as_dict(classwise)
    hfc = _finite(data["hfc_abs"])
    names = class_names or [str(k) for k in range(len(hfc))]
    figure, (ax,) = _figure()
    if data.get("robust_accuracy") is None:
        keep = [k for k, v in enumerate(hfc) if not math.isnan(v)]
        ax.bar([names[k] for k in keep], [hfc[k] for k in keep])
        ax.set_xlabel("class")
        ax.set_ylabel("mean |phi| of HFC")
        ax.set_title(title or "Per-class |phi| of the high-frequency components", fontsize=9)
        return figure
    robust = _finite(data["robust_accuracy"])
    keep = [k for k in range(len(hfc)) if not (math.isnan(hfc[k]) or math.isnan(robust[k]))]
    ax.scatter([hfc[k] for k in keep], [robust[k] for k in keep])
    for k in keep:
        ax.annotate(names[k], (hfc[k], robust[k]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("mean |phi| of HFC (standard model)")
    ax.set_ylabel("robust accuracy (robust model)")

    def fmt(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    ax.set_title(title or f"Pearson {fmt(data['pearson'])}, Spearman {fmt(data['spearman'])}, "
                          f"{data['num_classes']} classes", fontsize=9)
    return figure


def plot_significant_components(significant, *, title: Optional[str] = None):
    """Chen2022 Fig. 7: the fraction of significantly large PFCs and NFCs against the radius (ring average).

    Args:
        significant: a :class:`~freqplug.eval.SignificantComponents` or its ``to_dict()``.
    """
    data = _as_dict(significant)
    figure, (ax,) = _figure()
    ax.plot(data["pfc_radial"], marker="o", markersize=3, label="PFC")
    ax.plot(data["nfc_radial"], marker="o", markersize=3, label="NFC")
    ax.set_xlabel("radius (DFT bins)")
    ax.set_ylabel(f"ratio with |phi| > {data['fraction']:.0%} of max")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title(title or f"Significant PFC / NFC ({data['num_images']} images)", fontsize=9)
    return figure


# ---------------------------------------------------------------------------------------------- report stages
def plot_robustness_curve_stage(view):
    """Plot of the ``robustness_curve`` report stage: every model's curves on one axis (models as prefixes)."""
    names = [n for n in view.names if view.metrics[n].get("eps")]
    if not names:
        return None
    has_hf = any(view.metrics[n].get("hf_radius") for n in names)
    figure, axes = _figure(2 if has_hf else 1)
    for n in names:
        prefix = f"{n}: " if len(names) > 1 else ""
        _draw_curves(axes[0], view.metrics[n], prefix)
        if has_hf:
            _draw_hf_radius(axes[1], view.metrics[n], prefix)
    _legend(axes[0])
    axes[0].set_title("accuracy under attack (defenses: same adversarial examples)", fontsize=8)
    if has_hf:
        _legend(axes[1])
        axes[1].set_title("HF attack against radius", fontsize=8)
    return figure


def classwise_pair(metrics: Mapping[str, Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """For two or more profiled models: the Chen2022 Fig. 5 pair, the least robust model as "standard" and the
    most robust one as "robust", and the correlation of the standard model's per-class |phi_HFC| with the robust
    model's per-class robust accuracy. None when fewer than two models have both numbers."""
    usable = [n for n, m in metrics.items() if m.get("robust_accuracy") is not None and m.get("overall_robust")
              is not None]
    if len(usable) < 2:
        return None
    standard = min(usable, key=lambda n: metrics[n]["overall_robust"])
    robust = max(usable, key=lambda n: metrics[n]["overall_robust"])
    if standard == robust:
        return None
    import torch

    from ..eval.classwise import _correlations

    hfc = torch.tensor(_finite(metrics[standard]["hfc_abs"]), dtype=torch.float64)
    acc = torch.tensor(_finite(metrics[robust]["robust_accuracy"]), dtype=torch.float64)
    if hfc.shape != acc.shape:
        return None
    pearson, spearman, _, _, count = _correlations(hfc, acc)
    return {"standard": standard, "robust": robust, "hfc_abs": hfc.tolist(), "robust_accuracy": acc.tolist(),
            "pearson": pearson, "spearman": spearman, "num_classes": count}


def plot_classwise_stage(view):
    """Plot of the ``classwise`` report stage: with two models, the standard model's |phi_HFC| against the robust
    model's per-class robust accuracy (Chen2022 Fig. 5); otherwise each model's per-class |phi_HFC|."""
    names = [n for n in view.names if view.metrics[n].get("hfc_abs")]
    if not names:
        return None
    pair = classwise_pair({n: view.metrics[n] for n in names})
    if pair is not None:
        pearson = "n/a" if math.isnan(pair["pearson"]) else f"{pair['pearson']:.3f}"
        return plot_classwise_hfc(pair, title=f"|phi_HFC| of {pair['standard']} vs robust accuracy of "
                                              f"{pair['robust']}: Pearson {pearson}, {pair['num_classes']} classes")
    figure, (ax,) = _figure()
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        hfc = _finite(view.metrics[n]["hfc_abs"])
        ax.bar([k + i * width for k in range(len(hfc))], [0 if math.isnan(v) else v for v in hfc], width=width,
               label=n)
    num_classes = max(len(view.metrics[n]["hfc_abs"]) for n in names)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(num_classes)], [str(k) for k in range(num_classes)])
    ax.set_xlabel("class")
    ax.set_ylabel("mean |phi| of HFC")
    ax.set_title("Per-class |phi_HFC| (Chen2022 Fig. 5)", fontsize=9)
    ax.legend(fontsize=7)
    return figure
