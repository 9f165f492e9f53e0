"""Orthonormal 2-D DCT-II / DCT-III over the last two dimensions.

Implemented as two matrix products with the orthonormal DCT-II matrix, which is exact,
differentiable, device- and dtype-preserving, and equals
``scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional

import torch

from .._validation import check_floating


@lru_cache(maxsize=32)
def _dct_matrix_cpu64(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    matrix[0] /= math.sqrt(2.0)
    return matrix


def dct_matrix(n: int, *, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Orthonormal DCT-II matrix D of size (n, n): dct(v) = D @ v, idct(c) = D.T @ c."""
    return _dct_matrix_cpu64(int(n)).to(device=device, dtype=dtype)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # Half precision matmuls lose too much for a transform that must invert exactly.
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II of ``x`` (..., H, W) -> coefficients (..., H, W).

    Coefficient [u, v] is the frequency u along H and v along W; [0, 0] is DC.
    """
    check_floating(x, "x")
    dtype = _compute_dtype(x)
    d_h = dct_matrix(x.shape[-2], dtype=dtype, device=x.device)
    d_w = dct_matrix(x.shape[-1], dtype=dtype, device=x.device)
    return (d_h @ x.to(dtype) @ d_w.T).to(x.dtype)


def idct2(coefficients: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (orthonormal 2-D DCT-III), (..., H, W) -> (..., H, W)."""
    check_floating(coefficients, "coefficients")
    dtype = _compute_dtype(coefficients)
    d_h = dct_matrix(coefficients.shape[-2], dtype=dtype, device=coefficients.device)
    d_w = dct_matrix(coefficients.shape[-1], dtype=dtype, device=coefficients.device)
    return (d_h.T @ coefficients.to(dtype) @ d_w).to(coefficients.dtype)


def apply_dct_mask(x: torch.Tensor, mask: torch.Tensor, fill: Optional[torch.Tensor] = None, *,
                   keep: bool = True) -> torch.Tensor:
    """Images with a selection of their orthonormal DCT coefficients kept (or occluded).

    ``keep=True`` returns ``IDCT(where(mask, DCT(x), fill))``: the coefficients selected by ``mask``
    are kept and the others replaced by ``fill``; ``keep=False`` occludes the selected coefficients
    instead, ``IDCT(where(mask, fill, DCT(x)))`` (Wang2020a, Definition 1: occluding a group of
    frequencies). Several masks at once broadcast: a mask (G, 1, 1, H, W) on images (N, C, H, W)
    gives (G, N, C, H, W).

    Args:
        x: images (..., H, W), real floating.
        mask: boolean (..., H, W) in DCT layout ([0, 0] = DC), broadcastable against ``x``.
        fill: DCT coefficients that replace the others, broadcastable against ``x`` (None: zero).
        keep: keep (True, default) or occlude (False) the coefficients selected by ``mask``.

    Returns:
        Images of the broadcast shape of ``x``, ``mask`` and ``fill``, in ``x``'s dtype and device.

    Example:
        >>> x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
        >>> dc = torch.zeros(4, 4, dtype=torch.bool); dc[0, 0] = True
        >>> torch.allclose(apply_dct_mask(x, dc), x.mean((-2, -1), keepdim=True).expand_as(x))
        True
        >>> torch.allclose(apply_dct_mask(x, dc) + apply_dct_mask(x, dc, keep=False), x)
        True
        >>> apply_dct_mask(x, torch.stack([dc, ~dc])[:, None, None]).shape
        torch.Size([2, 2, 3, 4, 4])
    """
    check_floating(x, "x")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"`mask` must be a boolean tensor (..., H, W), got "
                        f"{type(mask).__name__ if not isinstance(mask, torch.Tensor) else mask.dtype}")
    if mask.dim() < 2 or tuple(mask.shape[-2:]) != tuple(x.shape[-2:]):
        raise ValueError(f"`mask` must end in the images' (H, W) = {tuple(x.shape[-2:])}, "
                         f"got shape {tuple(mask.shape)}")
    coefficients = dct2(x)
    mask = mask.to(coefficients.device)
    fill = coefficients.new_zeros(()) if fill is None else fill.to(device=coefficients.device, dtype=coefficients.dtype)
    mixed = torch.where(mask, coefficients, fill) if keep else torch.where(mask, fill, coefficients)
    return idct2(mixed)
