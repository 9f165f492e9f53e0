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
            (Chen2022 eq. 12 uses r / r_max).
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
    Luo2024 eq. 1-2 (ESD per radial frequency) and Chen2022 Figs. 3-4.
    """
    return frequency_radius(height, width, metric=metric, device=device).round().long()


def is_conjugate_symmetric(values: torch.Tensor) -> bool:
    """True when ``values[..., u, v] == values[..., -u, -v]`` for every bin (fft2 layout)."""
    h, w = values.shape[-2:]
    flat = values.reshape(*values.shape[:-2], h * w)
    mirrored = flat[..., mirror_indices(h, w, device=values.device).reshape(-1)]
    return bool((flat == mirrored).all())


def check_spectral_mask(mask, name: str, height: int, width: int, *,
                        batch_size: Optional[int] = None) -> torch.Tensor:
    """Check a user's frequency mask and return it unchanged.

    The one check of a mask given to a masking entry point (Chen2022 eq. 11-12 masks,
    :class:`freqplug.FrequencyMaskedAttack`, :func:`freqplug.eval.evaluate_frequency_robustness`).

    Args:
        mask: tensor (H, W), or (N, H, W) with one mask per image, in ``torch.fft.fft2`` layout
            (DC at [0, 0]); bool, or floating with values in [0, 1] (a soft mask).
        name: the argument's name, for the message.
        height, width: H and W of the images the mask is used with.
        batch_size: N of the images; a 3-D mask must have N rows (None: any N).

    Returns:
        ``mask``, unchanged.

    Raises:
        TypeError: not a tensor, or neither bool nor floating.
        ValueError: wrong shape, values outside [0, 1] or non-finite, or not conjugate-symmetric
            (``mask[..., u, v] != mask[..., -u, -v]``: the masked image would not be real).

    Example:
        >>> check_spectral_mask(torch.ones(4, 4, dtype=torch.bool), "mask", 4, 4).shape
        torch.Size([4, 4])
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"`{name}` must be a tensor (H, W) or (N, H, W) in torch.fft.fft2 layout, "
                        f"got {type(mask).__name__}")
    expected = f"({height}, {width})" + ("" if batch_size is None else f" or ({batch_size}, {height}, {width})")
    if (mask.dim() not in (2, 3) or tuple(mask.shape[-2:]) != (height, width)
            or (mask.dim() == 3 and batch_size is not None and mask.shape[0] != batch_size)):
        raise ValueError(f"`{name}` must have shape {expected} (fft2 layout, like the images), "
                         f"got shape {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if not mask.dtype.is_floating_point:
            raise TypeError(f"`{name}` must be bool, or floating with values in [0, 1], got dtype {mask.dtype}")
        if not bool(torch.isfinite(mask).all()) or bool(((mask < 0) | (mask > 1)).any()):
            raise ValueError(f"`{name}` values must lie in [0, 1], got values in "
                             f"[{float(mask.min()):.4g}, {float(mask.max()):.4g}] (or non-finite values)")
    if not is_conjugate_symmetric(mask):
        raise ValueError(f"`{name}` must be conjugate-symmetric in torch.fft.fft2 layout "
                         "(mask[..., u, v] == mask[..., -u, -v]) so that the masked perturbation is real")
    return mask


def real_spectrum_mask(mask: torch.Tensor, width: Optional[int] = None) -> torch.Tensor:
    """Restrict a conjugate-symmetric fft2-layout mask (..., H, W) to the rfft2 half (..., H, W//2+1)."""
    w = mask.shape[-1] if width is None else width
    return mask[..., : w // 2 + 1]
