"""Spectral metrics of the five methods: RCT, ESD / spectral SNR, radial profiles,
the Jacobian frequency bias B_low and the spectral robustness score."""

from __future__ import annotations

from typing import Sequence, Union

import torch

from .._validation import check_finite, check_floating, check_number, check_same_shape
from .dct import dct2
from .fourier import radial_bin_index
from .masking import rfft2

#: Added to |DCT(x)| in :func:`relative_change_dct`: guards against division by exact zeros
#: (constant images, zero-padded borders) without changing any ratio of a natural image's
#: coefficient (orthonormal DCT coefficients of [0, 1] images are rarely below 1e-6).
RCT_EPSILON = 1e-6

#: Added to the Jacobian's Fourier magnitudes and to the exponents in :func:`frequency_bias`,
#: as the authors' code of Chan2022 does, so that log(0) and 0^0 never occur.
FREQUENCY_BIAS_EPSILON = 1e-5


def relative_change_dct(x: torch.Tensor, x_adv: torch.Tensor, *, epsilon: float = RCT_EPSILON,
                        reduction: str = "mean") -> torch.Tensor:
    """Relative Change in DCT (RCT, Wang2020a eq. 8).

    ``|DCT(x_adv) - DCT(x)| / (|DCT(x)| + epsilon)`` per coefficient, with the orthonormal
    2-D DCT of every channel.

    Args:
        x, x_adv: images (N, C, H, W) of the same shape.
        epsilon: see :data:`RCT_EPSILON`.
        reduction: ``"mean"`` averages over images and channels -> (H, W) (the paper's map);
            ``"none"`` returns (N, C, H, W).
    """
    check_floating(x, "x")
    check_floating(x_adv, "x_adv")
    check_same_shape(x_adv, x, "x_adv", "x")
    check_finite(x, "x")
    check_finite(x_adv, "x_adv")
    check_number(epsilon, "epsilon", minimum=0.0)
    clean = dct2(x)
    change = (dct2(x_adv) - clean).abs() / (clean.abs() + epsilon)
    if reduction == "none":
        return change
    if reduction != "mean":
        raise ValueError(f"`reduction` must be 'mean' or 'none', got {reduction!r}")
    return change.reshape(-1, *change.shape[-2:]).mean(dim=0)


def radial_profile(values: torch.Tensor, *, metric: str = "l2") -> torch.Tensor:
    """Average of a spectral map over rings of equal (rounded) radius.

    Args:
        values: (..., H, W) in fft2 layout (e.g. |F(x)|^2 or Shapley values per bin).
        metric: ``"l2"`` or ``"linf"`` radius.

    Returns:
        (..., R) with R = largest ring + 1; entry r averages the bins whose radius rounds to r
        (Chen2022 Figs. 3-4, Luo2024 eq. 1).
    """
    check_floating(values, "values")
    h, w = values.shape[-2:]
    ring = radial_bin_index(h, w, metric=metric, device=values.device).reshape(-1)
    num_rings = int(ring.max()) + 1
    flat = values.reshape(*values.shape[:-2], h * w)
    sums = flat.new_zeros(*flat.shape[:-1], num_rings).index_add_(-1, ring, flat)
    counts = torch.bincount(ring, minlength=num_rings).to(flat.dtype)
    return sums / counts


def energy_spectral_density(x: torch.Tensor, *, metric: str = "l2") -> torch.Tensor:
    """Point-wise energy spectral density per radial frequency (Luo2024 eq. 1).

    ``ESD_r(x) = mean over ring L_r of |F(x)(u, v)|^2`` with the orthonormal DFT (so energy
    is preserved: sum |F|^2 == sum x^2). Input (..., H, W) -> (..., R).
    """
    check_floating(x, "x")
    h, w = x.shape[-2:]
    power = torch.fft.fft2(x.to(torch.float64 if x.dtype == torch.float64 else torch.float32), norm="ortho").abs() ** 2
    return radial_profile(power, metric=metric)


def spectral_snr(x: torch.Tensor, perturbation: torch.Tensor, *, metric: str = "l2", average: bool = True,
                 decibels: bool = False) -> torch.Tensor:
    """Spectral signal-to-noise ratio per radius, ``ESD_r(x) / ESD_r(delta)`` (Luo2024 eq. 1).

    Args:
        x: clean images (N, C, H, W).
        perturbation: the perturbation delta (``x_adv - x``), same shape.
        average: average the ESDs over images and channels before the ratio -> (R,)
            (Luo2024 Fig. 2); otherwise per image and channel -> (N, C, R).
        decibels: return ``10 * log10(SNR)``.
    Rings where the perturbation has no energy give ``inf``.
    """
    check_same_shape(perturbation, x, "perturbation", "x")
    signal = energy_spectral_density(x, metric=metric)
    noise = energy_spectral_density(perturbation, metric=metric)
    if average:
        signal = signal.reshape(-1, signal.shape[-1]).mean(0)
        noise = noise.reshape(-1, noise.shape[-1]).mean(0)
    ratio = signal / noise
    return 10 * torch.log10(ratio) if decibels else ratio


def frequency_bias(jacobian: torch.Tensor) -> torch.Tensor:
    """Low-frequency bias B_low of input Jacobians (Chan2022 eq. 10), as the authors' code computes it.

    Steps: M = |rfft2(J)| averaged over every leading dim (batch and channels, eq. 6);
    keep the non-negative-frequency quadrant, rows 0..H//2 and columns 0..W//2 (17x17 for
    32x32 inputs, DC at [0, 0]); add 1e-5 to M; exponents alpha = linspace(1, -1) + 1e-5
    along each axis (eq. 8-9); return
    ``log( sum_j prod_i M[i, j]^alpha_i + sum_i prod_j M[i, j]^alpha_j )``.
    The products are evaluated as ``exp(sum alpha * log M)`` and the outer log as a
    logsumexp, which is the same number without overflow. Differentiable; JaFR's
    L_freq is ``-frequency_bias(J)`` (eq. 11).

    Args:
        jacobian: (..., H, W), e.g. the input gradient (N, C, H, W).

    Returns:
        0-dim tensor (higher = more low-frequency energy).
    """
    check_floating(jacobian, "jacobian")
    if jacobian.dim() < 2 or min(jacobian.shape[-2:]) < 2:
        raise ValueError(f"`jacobian` must have shape (..., H, W) with H, W >= 2, got {tuple(jacobian.shape)}")
    h, w = jacobian.shape[-2:]
    return frequency_bias_of_magnitude(rfft2(jacobian).abs().reshape(-1, h, w // 2 + 1).mean(0))


def frequency_bias_of_magnitude(magnitude: torch.Tensor) -> torch.Tensor:
    """B_low (Chan2022 eq. 10) from the mean one-sided DFT magnitude M (H, W//2+1) of :func:`frequency_bias`.

    For callers that accumulate M over chunks of data (e.g. corruption noise in units) instead of holding
    every map: ``frequency_bias(J) == frequency_bias_of_magnitude(rfft2(J).abs().reshape(-1, H, W//2+1).mean(0))``.
    """
    h = magnitude.shape[-2]
    log_map = torch.log(magnitude[: h // 2 + 1] + FREQUENCY_BIAS_EPSILON)
    rows, cols = log_map.shape
    alpha_rows = torch.linspace(1, -1, rows, dtype=log_map.dtype, device=log_map.device) + FREQUENCY_BIAS_EPSILON
    alpha_cols = torch.linspace(1, -1, cols, dtype=log_map.dtype, device=log_map.device) + FREQUENCY_BIAS_EPSILON
    column_products = (alpha_rows[:, None] * log_map).sum(0)  # log prod_i M[i, j]^alpha_i, one per column j
    row_products = (alpha_cols[None, :] * log_map).sum(1)  # log prod_j M[i, j]^alpha_j, one per row i
    return torch.logsumexp(torch.cat([column_products, row_products]), dim=0)


def _as_tensor(values, name: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(values, dtype=torch.float64)
    check_floating(values, name)
    check_finite(values, name)
    if values.dim() < 1 or values.shape[-1] < 2:
        raise ValueError(f"`{name}` must have shape (..., M) with M >= 2 bands, got {tuple(values.shape)}")
    return values


def spectral_importance_distribution(values: Union[torch.Tensor, Sequence[float]]) -> torch.Tensor:
    """Spectral importance distribution (SID) of band Shapley values psi (Luo2024 §3.1).

    ``(psi - min psi) / ||psi - min psi||_1`` over the last dim. When every band has the
    same value the shifted vector is zero; the SID is then uniform (no band preferred).

    Example:
        >>> spectral_importance_distribution([1.0, 3.0, 2.0])
        tensor([0.0000, 0.6667, 0.3333], dtype=torch.float64)
    """
    values = _as_tensor(values, "values")
    shifted = values - values.min(dim=-1, keepdim=True).values
    total = shifted.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(shifted, 1.0 / shifted.shape[-1])
    return torch.where(total > 0, shifted / torch.where(total > 0, total, torch.ones_like(total)), uniform)


def spectral_robustness_score(sid: Union[torch.Tensor, Sequence[float]], beta: float = 0.75) -> torch.Tensor:
    """Spectral robustness score (SRS, Luo2024 eq. 11).

    ``S = |(beta_bar . sid - eta) / (1 - eta)|`` with weights beta^k (k = 0 lowest band),
    ``beta_bar = beta / ||beta||_2`` and ``eta = ||beta||_1 / (M ||beta||_2)``. A uniform
    SID scores 0; the paper's normalizer is an upper bound that no SID attains, so a
    one-hot SID on the lowest band scores below 1 (0.52 for M = 8, beta = 0.75).

    Args:
        sid: a spectral importance distribution (..., M): non-negative; it is L1-normalized here
            (pass the output of :func:`spectral_importance_distribution` for raw Shapley values).
        beta: weight base in (0, 1); 0.75 is the paper's choice.

    Returns:
        Tensor of shape ``sid.shape[:-1]`` (0-dim for one SID), values in [0, 1].

    Example:
        >>> spectral_robustness_score([1 / 8] * 8)  # uniform: no preference
        tensor(0., dtype=torch.float64)
        >>> spectral_robustness_score([1.0] + [0.0] * 7)  # all importance on the lowest band
        tensor(0.5217, dtype=torch.float64)
    """
    sid = _as_tensor(sid, "sid")
    check_number(beta, "beta", minimum=0.0, maximum=1.0, strict_minimum=True)
    if beta >= 1.0:
        raise ValueError(f"`beta` must be < 1 (beta = 1 weighs every band alike), got {beta}")
    if bool((sid < 0).any()):
        raise ValueError("`sid` must be non-negative (a distribution); pass raw Shapley values through "
                         "spectral_importance_distribution() first")
    total = sid.sum(dim=-1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("`sid` must have a positive sum")
    sid = sid / total
    m = sid.shape[-1]
    weights = beta ** torch.arange(m, dtype=sid.dtype, device=sid.device)
    weights_unit = weights / weights.norm(p=2)
    eta = weights.sum() / (m * weights.norm(p=2))
    return ((sid @ weights_unit - eta) / (1 - eta)).abs()
