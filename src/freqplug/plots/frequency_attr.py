"""Captum-style visualization of frequency attribution maps.

:func:`visualize_frequency_attr` draws what a frequency attribution means: the map over frequency
bins (a centered spectrum for DFT maps), its radial profile (low -> high frequency) and, next to the
image, the images rebuilt from the positive and negative frequency components (PFC/NFC, Chen2022
Fig. 2). It returns ``(figure, axes)`` like ``captum.attr.visualization.visualize_image_attr``.

Why not ``captum.attr.visualization.visualize_image_attr``: a frequency map is indexed by frequency
``(u, v)``, not by pixel position. Bin ``(u, v)`` is a plane wave over the whole image; overlaying the
map on the picture would paint the low-frequency scores over the image's top-left corner (fft2 and
DCT layouts put DC at ``[0, 0]``) and the high-frequency ones over its centre. Such an overlay looks
like a saliency map and means nothing. The PFC/NFC reconstructions are the pixel-space view.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch

from .._optional import require
from .._validation import check_choice, check_finite, check_floating, check_number
from ..spectral import apply_dct_mask, apply_spectral_mask, dct_band_groups, fftshift2, mirror_indices, radial_profile

__all__ = ["visualize_frequency_attr", "METHODS", "LAYOUTS", "SIGNS"]

#: Panels drawn by each ``method`` (Captum's word for what to draw).
METHODS = {
    "all": ("heat_map", "radial_profile", "original_image", "positive_components", "negative_components"),
    "heat_map": ("heat_map",),
    "radial_profile": ("radial_profile",),
    "reconstructions": ("original_image", "positive_components", "negative_components"),
}
#: Layouts of the maps freqplug's attributions return: ``"fft2"`` (FrequencyShapley,
#: SpectralBandShapley's bins: ``torch.fft.fft2`` layout, DC at [0, 0]) and ``"dct"``
#: (OccludedFrequency: orthonormal DCT, DC at [0, 0], frequency grows to the bottom-right).
LAYOUTS = ("fft2", "dct")
SIGNS = ("all", "positive", "negative", "absolute_value")
_IMAGE_PANELS = ("original_image", "positive_components", "negative_components")
_DEFAULT_CMAPS = {"all": "RdBu_r", "positive": "Greens", "negative": "Reds", "absolute_value": "Blues"}


def visualize_frequency_attr(
    attr: Any,
    image: Optional[Any] = None,
    *,
    method: str = "all",
    layout: str = "fft2",
    sign: str = "all",
    plt_fig_axis: Optional[Tuple[Any, Any]] = None,
    outlier_perc: float = 0.0,
    cmap: Optional[Any] = None,
    show_colorbar: bool = True,
    title: Optional[str] = None,
    fig_size: Optional[Tuple[float, float]] = None,
    use_pyplot: bool = False,
    include_dc: bool = False,
):
    """Draw one image's frequency attribution map (Captum-style; Chen2022 Figs. 2-4, Wang2020a).

    Panels (``method="all"``): the map as a heatmap (DFT maps centered, DC in the middle, as in
    Chen2022's figures) with a diverging colormap centred at 0 and a colorbar; its radial profile
    (mean score per ring of equal frequency: rounded L2 radius of the DFT, Chen2022 Figs. 3-4, or the
    DCT ring ``max(u, v)``, Wang2020a); and, when ``image`` is given, the image and its PFC/NFC
    reconstructions ``IDFT(1[phi > 0] * DFT(x))`` / ``IDFT(1[phi < 0] * DFT(x))`` (Chen2022 Fig. 2;
    ``IDCT(1[score > 0] * DCT(x))`` for DCT maps). Reconstructions are signed images (DC left out
    unless ``include_dc``), stretched to [0, 1] for display. Masks go through
    :func:`freqplug.spectral.apply_spectral_mask` / :func:`freqplug.spectral.apply_dct_mask`.

    Do not draw a frequency map with ``captum.attr.visualization.visualize_image_attr``: its axes are
    frequencies, not pixels, so a pixel overlay is meaningless (see the module docstring).

    No model is evaluated; the inputs are not modified. matplotlib is imported here (the ``report``
    extra); without ``use_pyplot`` the figure is a plain ``matplotlib.figure.Figure`` on the Agg
    canvas (no pyplot state, no display).

    Args:
        attr: one image's map (H, W) or (1, H, W) -- ``attribute(...)[i]`` of
            :class:`~freqplug.FrequencyShapley` or :class:`~freqplug.SpectralBandShapley` (fft2 layout) or
            :class:`~freqplug.OccludedFrequency` (DCT layout) -- as a tensor, numpy array or Captum's 1-tuple.
            Maps of several images and per-pixel (N, C, H, W) attributions are refused.
        image: optional image (C, H, W) or (1, C, H, W) in [0, 1] the map explains (needed for the
            reconstruction panels).
        method: ``"all"`` (default), ``"heat_map"``, ``"radial_profile"`` or ``"reconstructions"``
            (image, PFC, NFC; needs ``image``). ``"all"`` without an image draws the first two panels.
        layout: ``"fft2"`` (default; FrequencyShapley) or ``"dct"`` (OccludedFrequency).
        sign: ``"all"`` (signed, diverging colormap centred at 0), ``"positive"``, ``"negative"``
            (magnitude of the negative scores) or ``"absolute_value"``, as in Captum.
        plt_fig_axis: ``(figure, axis)`` to draw into: one axis for a one-panel method, else a sequence
            of as many axes as panels. Default: a new figure.
        outlier_perc: percentage of the largest |scores| saturated by the colour scale (Captum's
            ``outlier_perc``; default 0: the scale reaches the largest |score|).
        cmap: colormap of the heatmap (default ``"RdBu_r"`` for ``sign="all"``, Captum's sequential
            ones otherwise).
        show_colorbar: draw the heatmap's colorbar (default True).
        title: figure title (``suptitle``).
        fig_size: figure size in inches (default 3.2 per panel x 3.2).
        use_pyplot: create the figure through ``matplotlib.pyplot`` (shows in notebooks) instead of
            the object API.
        include_dc: keep DC (the mean colour) in the reconstructions.

    Returns:
        ``(figure, axes)``: the ``matplotlib.figure.Figure`` and, for a one-panel method, its
        ``Axes``, else a 1-D numpy array of the panels' ``Axes`` (heatmap, radial profile, image, PFC,
        NFC, as drawn).

    Raises:
        TypeError / ValueError: naming the argument: an attr that is not one image's floating finite map
            (or not conjugate-symmetric in fft2 layout, so not a DFT attribution), an image of another
            size or outside [0, 1], an unknown method/layout/sign, reconstructions without an image,
            ``plt_fig_axis`` with the wrong number of axes.
    """
    check_choice(method, "method", tuple(METHODS))
    check_choice(layout, "layout", LAYOUTS)
    check_choice(sign, "sign", SIGNS)
    check_number(outlier_perc, "outlier_perc", minimum=0.0, maximum=100.0)
    values = _check_attr(attr, layout)
    h, w = values.shape
    picture = None if image is None else _check_image(image, h, w)
    panels = list(METHODS[method])
    if picture is None:
        if method == "reconstructions":
            raise ValueError("`image` is required for method='reconstructions' (the image the map explains, "
                             "(C, H, W) in [0, 1])")
        panels = [p for p in panels if p not in _IMAGE_PANELS]

    figure, axes = _figure_and_axes(plt_fig_axis, len(panels), fig_size, use_pyplot)
    drawers = {"heat_map": lambda ax: _heat_map(figure, ax, values, layout, sign, outlier_perc, cmap, show_colorbar),
               "radial_profile": lambda ax: _radial(ax, values, layout),
               "original_image": lambda ax: _show_image(ax, picture, "image", stretch=False),
               "positive_components": lambda ax: _show_image(
                   ax, _reconstruct(picture, values > 0, layout, include_dc),
                   "PFC: components with score > 0", stretch=True),
               "negative_components": lambda ax: _show_image(
                   ax, _reconstruct(picture, values < 0, layout, include_dc),
                   "NFC: components with score < 0", stretch=True)}
    for panel, ax in zip(panels, axes):
        drawers[panel](ax)
    if title is not None:
        figure.suptitle(title)
    return figure, (axes[0] if len(axes) == 1 else np.asarray(axes, dtype=object))


# ------------------------------------------------------------------------------------------ checks
def _check_attr(attr: Any, layout: str) -> torch.Tensor:
    """One image's map as a float64 CPU tensor (H, W)."""
    if isinstance(attr, tuple):  # Captum's tuple outputs for tuple inputs
        if len(attr) != 1:
            raise ValueError(f"`attr` tuple must hold one map (Captum's output for a 1-tuple input), got {len(attr)}")
        attr = attr[0]
    if isinstance(attr, np.ndarray):
        attr = torch.from_numpy(attr)
    if not isinstance(attr, torch.Tensor):
        raise TypeError(f"`attr` must be a tensor or numpy array (H, W), got {type(attr).__name__}")
    if not attr.dtype.is_floating_point:
        raise TypeError(f"`attr` must be floating point (attribution scores), got dtype {attr.dtype}")
    shape = tuple(attr.shape)
    if attr.dim() == 4:
        raise ValueError(f"`attr` has shape {shape}: that is a per-pixel attribution (N, C, H, W) (e.g. Captum's). "
                         "Frequency attributions (FrequencyShapley, OccludedFrequency) return (N, H, W) maps over "
                         "frequency bins shared by the channels; pass one of them, attr[i]. Per-pixel maps belong "
                         "to captum.attr.visualization.visualize_image_attr")
    if attr.dim() == 3 and shape[0] != 1:
        raise ValueError(f"`attr` holds {shape[0]} maps (shape {shape}); pass one image's map, e.g. attr[i] "
                         "(with image=inputs[i])")
    if attr.dim() not in (2, 3):
        raise ValueError(f"`attr` must be one map (H, W) or (1, H, W), got shape {shape}")
    values = attr.detach().reshape(shape[-2:]).to(device="cpu", dtype=torch.float64)
    if min(values.shape) < 2:
        raise ValueError(f"`attr` must be a map of at least 2x2 frequency bins, got shape {shape}")
    if not bool(torch.isfinite(values).all()):
        raise ValueError("`attr` must be finite (no NaN or inf)")
    if layout == "fft2":
        h, w = values.shape
        mirrored = values.reshape(-1)[mirror_indices(h, w).reshape(-1)].reshape(h, w)
        scale = float(values.abs().max())
        if not torch.allclose(values, mirrored, rtol=0.0, atol=1e-6 * scale + 1e-12):
            raise ValueError("`attr` is not conjugate-symmetric (score(u, v) != score(-u, -v)), so it is not a DFT "
                             "attribution in fft2 layout (FrequencyShapley's); for OccludedFrequency's DCT maps pass "
                             "layout='dct'; a centered map must be moved back with freqplug.spectral.ifftshift2")
    return values


def _check_image(image: Any, h: int, w: int) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"`image` must be a tensor or numpy array (C, H, W), got {type(image).__name__}")
    check_floating(image, "image")
    shape = tuple(image.shape)
    if image.dim() == 4 and shape[0] == 1:
        image = image[0]
    if image.dim() != 3:
        raise ValueError(f"`image` must be one image (C, H, W) or (1, C, H, W), got shape {shape}")
    if tuple(image.shape[-2:]) != (h, w):
        raise ValueError(f"`image` is {image.shape[-2]}x{image.shape[-1]} but `attr` is a {h}x{w} map; pass the "
                         "image the map explains")
    picture = check_finite(image.detach().to(device="cpu", dtype=torch.float64), "image")
    lo, hi = float(picture.min()), float(picture.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"`image` must be in [0, 1] (unnormalized), got values in [{lo:.4g}, {hi:.4g}]")
    return picture


def _figure_and_axes(plt_fig_axis, count: int, fig_size, use_pyplot: bool):
    if plt_fig_axis is not None:
        if not isinstance(plt_fig_axis, (tuple, list)) or len(plt_fig_axis) != 2:
            raise TypeError("`plt_fig_axis` must be a (figure, axis) pair, or (figure, axes) with one axis per panel")
        figure, given = plt_fig_axis
        axes = list(np.ravel(np.asarray(given, dtype=object))) if isinstance(given, (list, tuple, np.ndarray)) \
            else [given]
        if len(axes) != count:
            raise ValueError(f"`plt_fig_axis` holds {len(axes)} axis/axes but this call draws {count} panel(s); pass "
                             "that many axes or choose a one-panel `method`")
        return figure, axes
    size = tuple(fig_size) if fig_size is not None else (3.2 * count, 3.2)
    if use_pyplot:
        pyplot = require("matplotlib.pyplot", "visualize_frequency_attr(use_pyplot=True)")
        figure = pyplot.figure(figsize=size, layout="constrained")
    else:
        require("matplotlib", "visualize_frequency_attr")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(figure)
    return figure, list(figure.subplots(1, count, squeeze=False)[0])


# ------------------------------------------------------------------------------------------ panels
def heat_map_extent(h: int, w: int, layout: str) -> Tuple[float, float, float, float]:
    """``imshow`` extent in normalized frequency (cycles per pixel) of a displayed (H, W) map.

    fft2 maps are shown centered (DC in the middle): column k is frequency ``(k - W // 2) / W`` in
    [-0.5, 0.5). DCT coefficient u of the orthonormal DCT-II is ``u / (2 W)`` cycles per pixel, in [0, 0.5).
    """
    if layout == "fft2":
        return ((-(w // 2) - 0.5) / w, (w - w // 2 - 0.5) / w, (h - h // 2 - 0.5) / h, (-(h // 2) - 0.5) / h)
    return (-0.25 / w, (w - 0.5) / (2 * w), (h - 0.5) / (2 * h), -0.25 / h)


def diverging_norm(limit: float):
    """A ``TwoSlopeNorm`` centred at 0 with symmetric limits (a zero map gets limits +-1)."""
    from matplotlib.colors import TwoSlopeNorm

    limit = float(limit) if limit > 0 and np.isfinite(limit) else 1.0
    return TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)


def _heat_map(figure, ax, values: torch.Tensor, layout: str, sign: str, outlier_perc: float, cmap, show_colorbar):
    from matplotlib.colors import Normalize

    shown = fftshift2(values) if layout == "fft2" else values
    if sign == "positive":
        shown = shown.clamp_min(0)
    elif sign == "negative":
        shown = (-shown).clamp_min(0)
    elif sign == "absolute_value":
        shown = shown.abs()
    magnitude = shown.abs().reshape(-1)
    limit = float(torch.quantile(magnitude, 1 - outlier_perc / 100)) if outlier_perc > 0 else float(magnitude.max())
    norm = diverging_norm(limit) if sign == "all" else Normalize(vmin=0.0, vmax=limit if limit > 0 else 1.0)
    h, w = values.shape
    image = ax.imshow(shown.numpy(), cmap=cmap or _DEFAULT_CMAPS[sign], norm=norm,
                      extent=heat_map_extent(h, w, layout), interpolation="nearest")
    where = "centered DFT, DC in the middle" if layout == "fft2" else "DCT, DC top-left"
    ax.set_title(f"frequency attribution ({where})", fontsize=8)
    kind = "" if layout == "fft2" else "DCT "
    ax.set_xlabel(f"horizontal {kind}frequency (cycles/pixel)", fontsize=7)
    ax.set_ylabel(f"vertical {kind}frequency (cycles/pixel)", fontsize=7)
    if show_colorbar:
        bar = figure.colorbar(image, ax=ax, shrink=0.8)
        bar.set_label({"all": "score (0 = white)", "positive": "positive score", "negative": "|negative score|",
                       "absolute_value": "|score|"}[sign], fontsize=7)
    return image


def radial_scores(values: torch.Tensor, layout: str) -> torch.Tensor:
    """Mean score per ring (R,): rounded L2 DFT radius (fft2 layout) or DCT ring ``max(u, v)``."""
    if layout == "fft2":
        return radial_profile(values)
    rings = dct_band_groups(*values.shape, kind="ring").player_map.reshape(-1)
    sums = torch.zeros(int(rings.max()) + 1, dtype=values.dtype).index_add_(0, rings, values.reshape(-1))
    return sums / torch.bincount(rings).to(values.dtype)


def _radial(ax, values: torch.Tensor, layout: str):
    profile = radial_scores(values, layout)
    ax.plot(range(profile.numel()), profile.numpy(), marker="o", markersize=2, color="C0")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_title("radial profile (low -> high frequency)", fontsize=8)
    ax.set_xlabel("radius (DFT bins from DC)" if layout == "fft2" else "DCT ring max(u, v) (bins)", fontsize=7)
    ax.set_ylabel("mean score per ring", fontsize=7)


def _reconstruct(picture: torch.Tensor, mask: torch.Tensor, layout: str, include_dc: bool) -> torch.Tensor:
    mask = mask.clone()
    mask[0, 0] = include_dc
    if layout == "fft2":
        return apply_spectral_mask(picture[None], mask)[0]
    return apply_dct_mask(picture[None], mask)[0]


def _show_image(ax, picture: torch.Tensor, label: str, *, stretch: bool):
    if stretch:  # signed components: stretched to [0, 1] for display only
        span = (picture.max() - picture.min()).clamp_min(1e-12)
        picture = (picture - picture.min()) / span
    pixels = picture.permute(1, 2, 0).clamp(0, 1).numpy()
    if pixels.shape[-1] != 3:  # grey images (and other channel counts, averaged) in grey
        ax.imshow(pixels.mean(-1), cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(pixels)
    ax.set_title(label, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
