"""Masking: images restricted to a set of frequency bins.

Every attribution, attack, defense and training hook that keeps or drops frequencies
goes through this module. Masks are conjugate-symmetric, so the work is done on the
one-sided spectrum (``rfft2`` / ``irfft2``): the result is real by construction, with no
``.real`` truncation, and costs half the FFT of a full complex transform.

Absent bins are filled by a *baseline spectrum* (I-ASIDE App. B.2): zero (default),
complex Gaussian noise, or the spectrum of other images ("replacement").
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple, Union

import torch

from .._validation import check_choice, check_finite, check_floating, check_ndim, check_number, check_positive_int
from .fourier import is_conjugate_symmetric
from .players import Players

BaselineSpec = Union[str, torch.Tensor, None]
BASELINES = ("zero", "gaussian")


def _fft_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def rfft2(x: torch.Tensor) -> torch.Tensor:
    """One-sided 2-D DFT over the last two dims, (..., H, W) -> (..., H, W//2+1), unnormalized."""
    return torch.fft.rfft2(x.to(_fft_dtype(x)))


def irfft2(spectrum: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`rfft2` for an (H, W) real signal."""
    return torch.fft.irfft2(spectrum, s=(height, width))


def baseline_spectrum(
    x: torch.Tensor,
    baseline: BaselineSpec = "zero",
    *,
    noise_std: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> Optional[torch.Tensor]:
    """One-sided spectrum that fills absent bins, broadcastable to ``rfft2(x)``.

    Args:
        x: images (N, C, H, W).
        baseline: ``"zero"`` / ``None`` (returns None: absent bins are 0, Chen2022 §3.2);
            ``"gaussian"``: the spectrum of real white noise of pixel std ``noise_std``, one
            draw per image, i.e. a conjugate-symmetric complex Gaussian with
            E|b|^2 = noise_std^2 * H * W per bin (``noise_std^2`` in orthonormal units;
            I-ASIDE App. B.2 "standard complex Gaussian" is ``noise_std=1``);
            a tensor of images (N or 1, C, H, W): their spectrum ("replacement").
        generator: torch.Generator for the Gaussian draw (reproducible).
    """
    if baseline is None or (isinstance(baseline, str) and baseline == "zero"):
        return None
    n, c, h, w = x.shape
    if isinstance(baseline, str):
        check_choice(baseline, "baselines", BASELINES)
        check_number(noise_std, "noise_std", minimum=0.0)
        noise = torch.randn(x.shape, generator=generator, dtype=_fft_dtype(x),
                            device="cpu" if generator is None else generator.device)
        return rfft2(noise.to(x.device) * noise_std)
    check_floating(baseline, "baselines")
    check_ndim(baseline, "baselines", 4, "(N or 1, C, H, W)")
    check_finite(baseline, "baselines")
    if tuple(baseline.shape[1:]) != (c, h, w) or baseline.shape[0] not in (1, n):
        raise ValueError(
            f"`baselines` images must have shape ({n} or 1, {c}, {h}, {w}) to match `inputs`, "
            f"got {tuple(baseline.shape)}"
        )
    return rfft2(baseline.to(x.device))


def apply_spectral_mask(
    x: torch.Tensor,
    mask: torch.Tensor,
    baseline: Optional[torch.Tensor] = None,
    *,
    check_symmetry: bool = True,
) -> torch.Tensor:
    """Keep the masked frequencies of ``x``; fill the others from ``baseline``.

    Args:
        x: real tensor (..., C, H, W) (any leading dims; every channel gets the same mask).
        mask: (..., H, W) in fft2 layout, bool or float in [0, 1] (soft masks blend
            ``mask * X + (1 - mask) * B``), broadcastable against ``x`` without its channel dim;
            must be conjugate-symmetric so the result is real.
        baseline: one-sided spectrum from :func:`baseline_spectrum` broadcastable to
            ``rfft2(x)``, or None for zero.

    Returns:
        Real tensor of the shape of ``x`` in ``x.dtype``; differentiable in ``x``.

    Example:
        >>> x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> dc_only = torch.zeros(8, 8, dtype=torch.bool)
        >>> dc_only[0, 0] = True  # keep the mean colour, drop every other frequency
        >>> torch.allclose(apply_spectral_mask(x, dc_only), x.mean(dim=(-2, -1), keepdim=True).expand_as(x))
        True
    """
    h, w = x.shape[-2:]
    if tuple(mask.shape[-2:]) != (h, w):
        raise ValueError(f"`mask` must end in ({h}, {w}) like the images, got shape {tuple(mask.shape)}")
    if check_symmetry and not is_conjugate_symmetric(mask):
        raise ValueError(
            "`mask` must be conjugate-symmetric in torch.fft.fft2 layout (mask[u, v] == mask[-u, -v]) "
            "so that the masked image is real"
        )
    spectrum = rfft2(x)
    half = mask[..., : w // 2 + 1].unsqueeze(-3).to(spectrum.device)
    if half.dtype == torch.bool:
        fill = torch.zeros((), dtype=spectrum.dtype, device=spectrum.device) if baseline is None else baseline
        masked = torch.where(half, spectrum, fill)
    else:
        half = half.to(spectrum.real.dtype)
        masked = spectrum * half if baseline is None else spectrum * half + baseline * (1 - half)
    return irfft2(masked, h, w).to(x.dtype)


def iter_coalition_images(
    x: torch.Tensor,
    players: Players,
    coalitions: torch.Tensor,
    *,
    baseline: BaselineSpec = "zero",
    noise_std: float = 1.0,
    generator: Optional[torch.Generator] = None,
    chunk_size: int = 64,
    baseline_fill: Optional[torch.Tensor] = None,
) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield coalition images in chunks of at most ``chunk_size`` images.

    Args:
        x: images (N, C, H, W).
        players: a fft-layout :class:`Players` partition of (H, W).
        coalitions: bool (K, P), the same K coalitions for every image, or (N, K, P), per image.
        chunk_size: images per yielded chunk (bounds peak memory).
        baseline_fill: a precomputed :func:`baseline_spectrum` (overrides ``baseline``), so a
            caller can keep one random baseline fixed across several calls.

    Yields:
        ``(image_index, coalition_index, images)``: two long tensors (R,) and images
        (R, C, H, W), rows in image-major order (image 0's K coalitions first).
    """
    _check_coalition_args(x, players, coalitions)
    check_positive_int(chunk_size, "chunk_size")
    n, c, h, w = x.shape
    spectrum = rfft2(x)
    fill = baseline_fill if baseline_fill is not None else baseline_spectrum(
        x, baseline, noise_std=noise_std, generator=generator)
    per_image = coalitions.dim() == 3
    k = coalitions.shape[-2]
    coalitions = coalitions.to(x.device)
    for start in range(0, n * k, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, n * k), device=x.device)
        image_index, coalition_index = rows // k, rows % k
        chosen = coalitions[image_index, coalition_index] if per_image else coalitions[coalition_index]
        yield image_index, coalition_index, render_coalitions(spectrum, players, image_index, chosen, fill,
                                                              h, w).to(x.dtype)


def render_coalitions(
    spectrum: torch.Tensor,
    players: Players,
    image_index: torch.Tensor,
    coalitions: torch.Tensor,
    fill: Optional[torch.Tensor],
    height: int,
    width: int,
) -> torch.Tensor:
    """The masking kernel: one image per row, each restricted to its coalition.

    Args:
        spectrum: ``rfft2`` of the images (N, C, H, W//2+1).
        players: fft-layout partition.
        image_index: (R,) which image each row shows.
        coalitions: bool (R, P), the coalition of each row.
        fill: baseline spectrum broadcastable to ``spectrum`` (N or 1 leading), or None for zero.

    Returns:
        Real images (R, C, H, W) in the spectrum's real dtype.
    """
    half = players.masks(coalitions, one_sided=True).unsqueeze(1)  # (R, 1, H, W//2+1)
    if fill is None:
        masked = spectrum[image_index] * half
    else:
        row_fill = fill[image_index] if fill.shape[0] > 1 else fill
        masked = torch.where(half, spectrum[image_index], row_fill)
    return irfft2(masked, height, width)


def coalition_images(
    x: torch.Tensor,
    players: Players,
    coalitions: torch.Tensor,
    *,
    baseline: BaselineSpec = "zero",
    noise_std: float = 1.0,
    generator: Optional[torch.Generator] = None,
    chunk_size: int = 64,
) -> torch.Tensor:
    """All coalition images at once: (N, C, H, W) x (K, P) or (N, K, P) -> (N, K, C, H, W).

    Chen2022 eq. 7: ``IDFT(sigma_S * DFT(x))`` for every coalition S, the same mask on every
    channel, always-present bins (DC) kept. Computed in chunks of ``chunk_size`` images.
    """
    _check_coalition_args(x, players, coalitions)
    n, c, h, w = x.shape
    k = coalitions.shape[-2]
    out = x.new_empty(n * k, c, h, w)
    for image_index, coalition_index, images in iter_coalition_images(
            x, players, coalitions, baseline=baseline, noise_std=noise_std, generator=generator,
            chunk_size=chunk_size):
        out[image_index * k + coalition_index] = images
    return out.reshape(n, k, c, h, w)


def _check_coalition_args(x: torch.Tensor, players: Players, coalitions: torch.Tensor) -> None:
    check_floating(x, "inputs")
    check_ndim(x, "inputs", 4, "(N, C, H, W)")
    if not isinstance(players, Players) or players.layout != "fft":
        raise TypeError("`players` must be a Players partition in fft layout")
    players.check_shape(x.shape[-2], x.shape[-1])
    if not isinstance(coalitions, torch.Tensor) or coalitions.dim() not in (2, 3):
        raise ValueError("`coalitions` must be a tensor (K, P) or (N, K, P)")
    if coalitions.shape[-1] != players.num_players:
        raise ValueError(
            f"`coalitions` must have {players.num_players} entries (one per player) in its last dimension, "
            f"got shape {tuple(coalitions.shape)}"
        )
    if coalitions.dim() == 3 and coalitions.shape[0] != x.shape[0]:
        raise ValueError(
            f"`coalitions` has {coalitions.shape[0]} per-image rows but `inputs` has batch size {x.shape[0]}"
        )
