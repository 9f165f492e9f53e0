"""FrequencyShapley: Shapley values of frequency components (seed 000 §3, eq. 6-9).

Players are groups of DFT bins (conjugate-closed, DC always present); the value of a
coalition S for image x is

    v(S) = f(IDFT(sigma_S * DFT(x)))_target - f(IDFT(sigma_empty * DFT(x)))_target      (eq. 7-9)

with the same mask on every channel and absent bins filled by a baseline (zero by default,
seed 000 §3.2). Because every coalition is conjugate-closed, every masked image is real.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from captum._utils.progress import progress
from captum.attr._utils.attribution import PerturbationAttribution

from .._validation import check_floating, check_images, check_positive_int
from ..spectral import (
    Players,
    apply_spectral_mask,
    baseline_spectrum,
    fftshift2,
    make_players,
    radial_profile,
    render_coalitions,
    rfft2,
)
from ._estimators import ESTIMATORS, make_design
from ._forward import format_forward_args, run_rows, validate_target

DEFAULT_N_SAMPLES = {"antithetic": 10, "permutation": 10, "kernel": None, "owen": 10}


@dataclass
class FrequencyShapleyResult:
    """Everything one :meth:`FrequencyShapley.attribute` call measured.

    Attributes:
        attributions: (N, H, W) in ``torch.fft.fft2`` layout; every bin carries its player's value,
            always-present bins (DC) carry 0.
        values: (N, P) Shapley value of every player.
        stderr: (N, P) standard error of ``values`` (NaN where one sample cannot tell).
        value_full, value_empty: (N,) the forward output (target selected) at the full and empty coalition.
        efficiency_gap: (N,) ``sum(values) - (value_full - value_empty)``; 0 up to rounding for the
            permutation estimators and for ``kernel`` (the constraint is solved exactly).
        n_evaluations: model evaluations (masked images) spent in total, over all images.
        n_forward_calls: calls of the forward function.
        num_samples: independent samples behind the standard errors (per image).
        players: the partition used.
        estimator: the estimator's name.
    """

    attributions: torch.Tensor
    values: torch.Tensor
    stderr: torch.Tensor
    value_full: torch.Tensor
    value_empty: torch.Tensor
    efficiency_gap: torch.Tensor
    n_evaluations: int
    n_forward_calls: int
    num_samples: int
    players: Players
    estimator: str

    def positive_mask(self) -> torch.Tensor:
        """PFC mask (N, H, W), fft2 layout: bins whose player has phi > 0 (seed 000 §3)."""
        return positive_frequency_mask(self.attributions)

    def negative_mask(self) -> torch.Tensor:
        """NFC mask (N, H, W), fft2 layout: bins whose player has phi < 0."""
        return negative_frequency_mask(self.attributions)


class FrequencyShapley(PerturbationAttribution):
    r"""Shapley values of the frequency components of images, with Captum's conventions.

    ``FrequencyShapley(forward_func).attribute(inputs, target=...)`` is to frequencies what
    ``captum.attr.ShapleyValueSampling`` is to pixels: the forward function's (target-selected)
    output is the game, the players are groups of DFT bins. Which output is explained is the
    forward function's business, as in Captum: pass the model for logits, or
    ``lambda z: torch.softmax(model(z), dim=1)`` for the softmax probability that seed 000's code uses.

    Args:
        forward_func: callable taking images (B, C, H, W) (plus ``additional_forward_args``) and
            returning (B, num_outputs) or (B,).
    """

    def __init__(self, forward_func: Callable) -> None:
        if not callable(forward_func):
            raise TypeError(f"`forward_func` must be callable, got {type(forward_func).__name__}")
        super().__init__(forward_func)

    def attribute(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        n_samples: Optional[int] = None,
        perturbations_per_eval: int = 64,
        show_progress: bool = False,
        *,
        players: Any = "pairs",
        estimator: str = "antithetic",
        seed: Optional[int] = None,
        noise_std: float = 1.0,
        return_result: bool = False,
    ):
        r"""Frequency Shapley values of every image.

        Args:
            inputs: images (N, C, H, W) in [0, 1].
            baselines: what absent bins become: ``None``/``"zero"``/``0`` (default, seed 000 §3.2),
                ``"gaussian"`` (complex Gaussian, pixel std ``noise_std``, one fixed draw per image), or
                images (N or 1, C, H, W) whose spectrum fills them ("replacement", I-ASIDE App. B.2).
            target: Captum's target: int, (N,) tensor or list of per-example ints, or a tuple for
                outputs with more than 2 dims (see ``captum.attr.ShapleyValueSampling``).
            additional_forward_args: passed to ``forward_func`` after the images; tensors whose first
                dim is N are indexed per example.
            n_samples: the budget: permutations for ``"permutation"``/``"antithetic"`` (Captum's meaning;
                default 10), coalitions for ``"kernel"`` (default 8 per player) and ``"owen"`` (default 10).
            perturbations_per_eval: masked images per forward call (rows of several images and
                permutations are batched together); bounds memory. Note: Captum's argument of this
                name counts perturbations *per example*; here it counts images per call.
            show_progress: Captum-style tqdm bar counting forward calls.
            players: ``"pairs"`` (one player per conjugate pair, default), an int g (symmetrized g x g patch
                grid of the centered spectrum; 16 is the paper's code for 32x32), ``("bands", M[, metric])``
                (radial rings), a :class:`~freqplug.spectral.Players`, or an integer tensor (H, W) in
                ``torch.fft.fft2`` layout with ids 0..P-1 and -1 for always-present bins (DC must be -1;
                the map must be conjugate-closed).
            estimator: ``"antithetic"`` (default), ``"permutation"`` (the paper's), ``"kernel"``, ``"owen"``
                (see ``freqplug.attributions._estimators`` for each design).
            seed: seeds the sampling; the same seed gives the same result.
            return_result: return a :class:`FrequencyShapleyResult` instead of the attribution tensor.

        Returns:
            (N, H, W) tensor in ``torch.fft.fft2`` layout and the inputs' dtype, each bin holding its
            player's Shapley value (Captum's feature-mask convention), or the full result.

        Model evaluations: ``N * K`` masked images, ``K = 2 + n_samples * (P - 1)`` for the permutation
        estimators, ``2 + n_samples`` for ``kernel`` and ``2 + n_samples * (P + 1)`` for ``owen``;
        forward calls: ``ceil(N * K / perturbations_per_eval)``.
        """
        check_images(inputs, "inputs")
        check_positive_int(perturbations_per_eval, "perturbations_per_eval")
        if estimator not in ESTIMATORS:
            raise ValueError(f"`estimator` must be one of {list(ESTIMATORS)}, got {estimator!r}")
        n, c, h, w = inputs.shape
        players = make_players(players, h, w, require_fixed_dc=True)
        num_players = players.num_players
        if n_samples is None:
            n_samples = DEFAULT_N_SAMPLES[estimator] or 8 * num_players
        check_positive_int(n_samples, "n_samples")
        target = validate_target(target, n)
        additional_forward_args = format_forward_args(additional_forward_args)

        generator = torch.Generator().manual_seed(
            int(torch.randint(0, 2**62, (1,))) if seed is None else int(seed))
        design = make_design(estimator, num_players, n_samples, generator)
        num_coalitions = design.num_coalitions
        total_rows = n * num_coalitions
        n_calls = math.ceil(total_rows / perturbations_per_eval)

        with torch.no_grad():
            images = inputs.detach()
            spectrum = rfft2(images)
            fill = _baseline_fill(images, baselines, noise_std, generator)
            values = torch.empty(n, num_coalitions, dtype=torch.float64, device=images.device)
            bar = progress(desc=f"{self.get_name()} attribution", total=n_calls) if show_progress else None
            try:
                for call in range(n_calls):
                    rows = torch.arange(call * perturbations_per_eval,
                                        min((call + 1) * perturbations_per_eval, total_rows), device=images.device)
                    image_index, coalition_index = rows // num_coalitions, rows % num_coalitions
                    coalitions = design.coalitions(coalition_index)
                    batch = render_coalitions(spectrum, players, image_index, coalitions, fill, h, w).to(images.dtype)
                    out = run_rows(self.forward_func, batch, image_index, target, additional_forward_args, n,
                                   check_range=call == 0)
                    values[image_index, coalition_index] = out.to(torch.float64)
                    if bar is not None:
                        bar.update()
            finally:
                if bar is not None:
                    bar.close()

        estimate = design.estimate(values.cpu())
        phi = estimate.values.to(images.device)
        value_empty, value_full = values[:, 0], values[:, 1]
        gap = phi.sum(dim=1) - (value_full - value_empty)
        attributions = players.expand(phi.to(inputs.dtype))
        if not return_result:
            return attributions
        return FrequencyShapleyResult(
            attributions=attributions,
            values=phi,
            stderr=estimate.stderr.to(images.device),
            value_full=value_full,
            value_empty=value_empty,
            efficiency_gap=gap,
            n_evaluations=total_rows,
            n_forward_calls=n_calls,
            num_samples=estimate.num_samples,
            players=players,
            estimator=estimator,
        )


def _baseline_fill(images: torch.Tensor, baselines: Any, noise_std: float,
                   generator: torch.Generator) -> Optional[torch.Tensor]:
    if baselines is None or (isinstance(baselines, (int, float)) and not isinstance(baselines, bool)
                             and baselines == 0):
        return None
    if isinstance(baselines, (int, float)):
        raise ValueError(f"`baselines` scalar must be 0 (absent bins are zero), got {baselines}")
    return baseline_spectrum(images, baselines, noise_std=noise_std, generator=generator)


# ---------------------------------------------------------------------------- helpers
def positive_frequency_mask(attributions: torch.Tensor) -> torch.Tensor:
    """PFC mask: bins with positive Shapley value, (N, H, W) bool in fft2 layout (conjugate-symmetric)."""
    check_floating(attributions, "attributions")
    return attributions > 0


def negative_frequency_mask(attributions: torch.Tensor) -> torch.Tensor:
    """NFC mask: bins with negative Shapley value, (N, H, W) bool in fft2 layout (conjugate-symmetric)."""
    check_floating(attributions, "attributions")
    return attributions < 0


def reconstruct_from_mask(inputs: torch.Tensor, mask: torch.Tensor, *, include_dc: bool = False) -> torch.Tensor:
    """Image made of the masked frequency components of ``inputs`` (seed 000 Fig. 2).

    Args:
        inputs: images (N, C, H, W).
        mask: (N, H, W) or (H, W) bool, fft2 layout, conjugate-symmetric (e.g. a PFC/NFC mask).
        include_dc: also keep DC (the mean colour); off by default, so the result is the signed,
            unclipped component image, as CSA stores NFC images.

    Returns:
        (N, C, H, W), real, signed (not clipped to [0, 1]).
    """
    check_floating(inputs, "inputs")
    mask = mask.clone()
    mask[..., 0, 0] = include_dc
    if mask.dim() == 3 and mask.shape[0] != inputs.shape[0]:
        raise ValueError(f"`mask` has {mask.shape[0]} maps but `inputs` has batch size {inputs.shape[0]}")
    return apply_spectral_mask(inputs, mask)


def centered_attributions(attributions: torch.Tensor) -> torch.Tensor:
    """Attributions in centered layout (DC at (H//2, W//2)) for display, as seed 000's heatmaps."""
    return fftshift2(attributions)


def radial_average(attributions: torch.Tensor, *, metric: str = "l2") -> torch.Tensor:
    """Average attribution per radius (..., R) from (..., H, W) in fft2 layout (seed 000 Figs. 3-4)."""
    return radial_profile(attributions, metric=metric)
