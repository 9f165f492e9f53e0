"""Radial frequency filters: functional forms and module forms (as kornia pairs them)."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .._validation import check_choice, check_floating, check_number
from .fourier import frequency_radius
from .masking import apply_spectral_mask


def radial_mask(height: int, width: int, radius: float, *, metric: str = "l2", normalized: bool = False,
                keep: str = "below", device=None) -> torch.Tensor:
    """Boolean mask (H, W) in fft2 layout of the bins inside or outside a radius.

    ``keep="below"``: r < radius (strict, as the authors' code of seed 002); ``"above"``: r > radius;
    ``"at_most"``: r <= radius; ``"at_least"``: r >= radius. ``normalized`` measures
    r / r_max (seed 000 eq. 12) instead of bins. Conjugate-symmetric by construction.
    """
    check_choice(keep, "keep", ("below", "above", "at_most", "at_least"))
    r = frequency_radius(height, width, metric=metric, normalized=normalized, device=device)
    return {"below": r < radius, "above": r > radius, "at_most": r <= radius, "at_least": r >= radius}[keep]


def low_high_split(x: torch.Tensor, radius: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split images into low- and high-frequency components (seed 002 §3.1).

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
