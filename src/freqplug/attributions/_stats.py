"""Statistics behind the attribution summaries: one place, computed with scipy.

scipy is imported inside the functions so that ``import freqplug`` stays light.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def f_survival(f_stat: float, df1: int, df2: int) -> float:
    """P(F(df1, df2) > f_stat), the survival function of Fisher's F distribution (``scipy.stats.f.sf``).

    Args:
        f_stat: the observed F statistic (values <= 0 give 1).
        df1: numerator degrees of freedom (>= 1).
        df2: denominator degrees of freedom (>= 1).

    Returns:
        The p-value, a float in [0, 1].
    """
    if df1 < 1 or df2 < 1:
        raise ValueError(f"F distribution degrees of freedom must be >= 1, got df1={df1}, df2={df2}")
    if f_stat <= 0:
        return 1.0
    from scipy.stats import f as f_distribution

    return float(f_distribution.sf(f_stat, df1, df2))


def equal_means_test(values: Tensor, covariance: Tensor, num_samples: int) -> Tuple[float, bool]:
    """Hotelling T² test of H0 "all M means are equal", from the means and the covariance of the means.

    Uses the M-1 successive differences ``d = C ψ`` (``d_i = ψ_{i+1} - ψ_i``) with covariance
    ``S = C Σ C^T``: ``T² = d^T S^+ d`` and ``F = (K - r) / ((K - 1) r) · T² ~ F(r, K - r)`` with r the
    rank of S and K the number of samples (images) the means come from. A difference with zero
    variance but a non-zero mean is a certain difference (p = 0); no difference at all gives p = 1.
    Used for the ``distinguishable`` flag of I-ASIDE band values (Luo2024 §3.1: the SID of equal
    band values is noise).

    Args:
        values: the means ψ (M,).
        covariance: covariance of the means (M, M) (the per-sample covariance divided by K, plus
            any sampling covariance).
        num_samples: K, the number of samples behind the means.

    Returns:
        ``(p_value, tested)``: tested is False (and p NaN) when the test cannot be computed
        (non-finite covariance, K <= M-1, or K <= rank).
    """
    values = values.to(torch.float64)
    covariance = covariance.to(torch.float64)
    m = values.shape[0]
    if not bool(torch.isfinite(covariance).all()) or num_samples <= m - 1:
        # K <= M-1 samples leave the covariance of the M-1 differences rank-deficient whatever the
        # data: a direction without variance then says "too few samples", not "certain difference".
        return float("nan"), False
    eye = torch.eye(m, dtype=torch.float64)
    contrasts = eye[1:] - eye[:-1]
    diff = contrasts @ values
    cov = contrasts @ covariance @ contrasts.T
    eigenvalues, eigenvectors = torch.linalg.eigh((cov + cov.T) / 2)
    projected = eigenvectors.T @ diff
    scale = float(max(eigenvalues.abs().max(), 1e-300)) if eigenvalues.numel() else 1e-300
    kept = eigenvalues > 1e-12 * scale
    if bool((projected[~kept].abs() > 1e-9 * max(float(diff.abs().max()), 1e-300)).any()):
        return 0.0, True  # a difference every sample agrees on exactly
    rank = int(kept.sum())
    if rank == 0:
        return 1.0, True  # no differences at all
    df2 = num_samples - rank
    if df2 <= 0:
        return float("nan"), False
    t2 = float((projected[kept] ** 2 / eigenvalues[kept]).sum())
    f_stat = df2 / ((num_samples - 1) * rank) * t2
    return f_survival(f_stat, rank, df2), True
