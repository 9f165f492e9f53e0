"""2-D DFT helpers and frequency grids.

Layouts: a spectrum is in *fft2 layout* when DC sits at index [0, 0] (what
``torch.fft.fft2`` returns) and in *centered layout* after ``fftshift``, with DC at
``(H // 2, W // 2)``. Frequencies are the signed integers of ``torch.fft.fftfreq(n) * n``,
so a bin and its conjugate mirror (-u, -v) always share the same radius, for even and
odd sizes alike (the Nyquist row/column of an even size is its own mirror).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .._validation import check_choice

METRICS = ("l2", "linf")


def fft2(x: torch.Tensor) -> torch.Tensor:
    """2-D DFT over the last two dimensions, fft2 layout, unnormalized (as ``torch.fft.fft2``)."""
    return torch.fft.fft2(x)


def ifft2(spectrum: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2` (complex output)."""
    return torch.fft.ifft2(spectrum)


def fftshift2(spectrum: torch.Tensor) -> torch.Tensor:
    """fft2 layout -> centered layout over the last two dimensions (DC to (H//2, W//2))."""
    return torch.fft.fftshift(spectrum, dim=(-2, -1))


def ifftshift2(spectrum: torch.Tensor) -> torch.Tensor:
    """Centered layout -> fft2 layout over the last two dimensions."""
    return torch.fft.ifftshift(spectrum, dim=(-2, -1))


def centered_fft2(x: torch.Tensor) -> torch.Tensor:
    """DFT of ``x`` in centered layout (``fftshift(fft2(x))``), shape (..., H, W), complex."""
    return fftshift2(fft2(x))


def centered_ifft2(spectrum: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`centered_fft2` (complex output)."""
    return ifft2(ifftshift2(spectrum))


def frequency_indices(height: int, width: int, *, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Signed integer frequencies (fy, fx), each of shape (H, W), in fft2 layout."""
    fy = torch.fft.fftfreq(height, d=1.0 / height, device=device).round().long()
    fx = torch.fft.fftfreq(width, d=1.0 / width, device=device).round().long()
    return fy[:, None].expand(height, width), fx[None, :].expand(height, width)


def mirror_indices(height: int, width: int, *, device=None) -> torch.Tensor:
    """Flat index of the conjugate mirror (-u, -v) of every bin, shape (H, W), fft2 layout."""
    rows = (-torch.arange(height, device=device)) % height
    cols = (-torch.arange(width, device=device)) % width
    return rows[:, None] * width + cols[None, :]


def frequency_radius(
    height: int,
    width: int,
    *,
    metric: str = "l2",
    normalized: bool = False,
    centered: bool = False,
    device=None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Distance of every frequency bin from DC, shape (H, W).

    Args:
        metric: ``"l2"`` (Euclidean, sqrt(fy^2 + fx^2)) or ``"linf"`` (max(|fy|, |fx|)).
        normalized: divide by the largest radius of the grid, so values lie in [0, 1]
            (seed 000 eq. 12 uses r / r_max).
        centered: return the map in centered layout instead of fft2 layout.

    Returns:
        Radius in bins (or normalized), conjugate-symmetric: r(u, v) == r(-u, -v).
    """
    check_choice(metric, "metric", METRICS)
    fy, fx = frequency_indices(height, width, device=device)
    fy, fx = fy.to(dtype), fx.to(dtype)
    if metric == "l2":
        radius = torch.sqrt(fy**2 + fx**2)
    else:
        radius = torch.maximum(fy.abs(), fx.abs())
    if normalized:
        radius = radius / radius.max().clamp_min(1)
    return fftshift2(radius) if centered else radius


def radial_bin_index(height: int, width: int, *, metric: str = "l2", device=None) -> torch.Tensor:
    """Integer ring index (rounded radius in bins) of every bin, shape (H, W), fft2 layout.

    Ring r holds the bins whose radius rounds to r; used for the radial averages of
    seed 004 eq. 1-2 (ESD per radial frequency) and seed 000 Figs. 3-4.
    """
    return frequency_radius(height, width, metric=metric, device=device).round().long()


def is_conjugate_symmetric(values: torch.Tensor) -> bool:
    """True when ``values[..., u, v] == values[..., -u, -v]`` for every bin (fft2 layout)."""
    h, w = values.shape[-2:]
    flat = values.reshape(*values.shape[:-2], h * w)
    mirrored = flat[..., mirror_indices(h, w, device=values.device).reshape(-1)]
    return bool((flat == mirrored).all())


def real_spectrum_mask(mask: torch.Tensor, width: Optional[int] = None) -> torch.Tensor:
    """Restrict a conjugate-symmetric fft2-layout mask (..., H, W) to the rfft2 half (..., H, W//2+1)."""
    w = mask.shape[-1] if width is None else width
    return mask[..., : w // 2 + 1]
