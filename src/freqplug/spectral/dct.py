"""Orthonormal 2-D DCT-II / DCT-III over the last two dimensions.

Implemented as two matrix products with the orthonormal DCT-II matrix, which is exact,
differentiable, device- and dtype-preserving, and equals
``scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))``.
"""

from __future__ import annotations

import math
from functools import lru_cache

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
