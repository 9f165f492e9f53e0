"""Radial frequency filters: functional forms and module forms (as kornia pairs them)."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .._validation import check_choice, check_floating, check_number, check_positive_int
from .fourier import frequency_radius
from .masking import apply_spectral_mask


def radial_mask(height: int, width: int, radius: float, *, metric: str = "l2", normalized: bool = False,
                keep: str = "below", device=None) -> torch.Tensor:
    """Boolean mask (H, W) in fft2 layout of the bins inside or outside a radius.

    ``keep="below"``: r < radius (strict, as the authors' code of Wang2020b); ``"above"``: r > radius;
    ``"at_most"``: r <= radius; ``"at_least"``: r >= radius. ``normalized`` measures
    r / r_max (Chen2022 eq. 12) instead of bins. Conjugate-symmetric by construction.
    """
    check_choice(keep, "keep", ("below", "above", "at_most", "at_least"))
    r = frequency_radius(height, width, metric=metric, normalized=normalized, device=device)
    return {"below": r < radius, "above": r > radius, "at_most": r <= radius, "at_least": r >= radius}[keep]


#: Chen2022 §4.4, eq. 12: the "low" band is r < 0.4 r_max, the "high" band r > 0.6 r_max.
LOW_BAND_THRESHOLD = 0.4
#: Chen2022 eq. 12: the "high" band is r > 0.6 r_max (between the two thresholds is neither).
HIGH_BAND_THRESHOLD = 0.6

#: Bands :func:`band_mask` knows.
BANDS = ("low", "high")


def band_mask(height: int, width: int, band: str, *, low_threshold: float = LOW_BAND_THRESHOLD,
              high_threshold: float = HIGH_BAND_THRESHOLD, metric: str = "l2", device=None) -> torch.Tensor:
    """Low- or high-frequency band of Chen2022 eq. 12, bool (H, W) in fft2 layout.

    ``sigma_low(u, v) = 1[r(u, v) < low_threshold * r_max]`` and
    ``sigma_high(u, v) = 1[r(u, v) > high_threshold * r_max]``, with ``r`` the distance of the bin
    from DC (``metric``) and ``r_max`` the largest one of the grid (``radial_mask(..., normalized=True)``).
    Conjugate-symmetric, so a perturbation masked with it stays real.

    Args:
        height, width: H and W of the images.
        band: ``"low"`` or ``"high"``.
        low_threshold, high_threshold: eps_low and eps_high of eq. 12, fractions of r_max in [0, 1]
            (defaults 0.4 and 0.6, the paper's).
        metric: ``"l2"`` (Euclidean radius) or ``"linf"``.
        device: device of the mask.

    Returns:
        (H, W) bool mask.

    Example:
        >>> band_mask(32, 32, "low").sum().item(), band_mask(32, 32, "high").sum().item()
        (253, 447)
    """
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    check_choice(band, "band", BANDS)
    if band == "low":
        check_number(low_threshold, "low_threshold", minimum=0.0, maximum=1.0)
        return radial_mask(height, width, low_threshold, metric=metric, normalized=True, keep="below", device=device)
    check_number(high_threshold, "high_threshold", minimum=0.0, maximum=1.0)
    return radial_mask(height, width, high_threshold, metric=metric, normalized=True, keep="above", device=device)


def low_high_split(x: torch.Tensor, radius: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split images into low- and high-frequency components (Wang2020b §3.1).

    Per channel, on the centered spectrum: ``low`` keeps the bins whose Euclidean distance
    from (H//2, W//2) is strictly less than ``radius`` (in bins), ``high`` keeps the rest,
    and ``low + high == x`` (to float rounding). Differentiable.

    Args:
        x: real tensor (..., H, W), typically images (N, C, H, W).
        radius: cut-off in bins, >= 0 (0 puts everything in ``high``).

    Returns:
        ``(low, high)``, each of the shape and dtype of ``x``.
    """
    check_floating(x, "x")
    check_number(radius, "radius", minimum=0.0)
    if x.dim() < 2:
        raise ValueError(f"`x` must have at least 2 dimensions (..., H, W), got shape {tuple(x.shape)}")
    mask = radial_mask(x.shape[-2], x.shape[-1], radius, metric="l2", keep="below", device=x.device)
    low = _mask_any_rank(x, mask)
    return low, x - low


def low_pass(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Low-frequency component of :func:`low_high_split` (r < radius)."""
    return low_high_split(x, radius)[0]


def high_pass(x: torch.Tensor, radius: float) -> torch.Tensor:
    """High-frequency component of :func:`low_high_split` (r >= radius)."""
    return low_high_split(x, radius)[1]


def _mask_any_rank(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # apply_spectral_mask expects a channel dim before (H, W); add one for 2-D input.
    if x.dim() == 2:
        return apply_spectral_mask(x[None], mask, check_symmetry=False)[0]
    return apply_spectral_mask(x, mask, check_symmetry=False)


class LowPass(nn.Module):
    """Module form of :func:`low_pass`: ``LowPass(radius)(x) == low_high_split(x, radius)[0]``."""

    def __init__(self, radius: float):
        super().__init__()
        self.radius = check_number(radius, "radius", minimum=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return low_pass(x, self.radius)

    def extra_repr(self) -> str:
        return f"radius={self.radius}"


class HighPass(nn.Module):
    """Module form of :func:`high_pass`."""

    def __init__(self, radius: float):
        super().__init__()
        self.radius = check_number(radius, "radius", minimum=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return high_pass(x, self.radius)

    def extra_repr(self) -> str:
        return f"radius={self.radius}"
