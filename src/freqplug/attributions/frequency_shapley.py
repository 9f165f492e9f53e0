"""FrequencyShapley: Shapley values of frequency components (Chen2022 §3, eq. 6-9).

Players are groups of DFT bins (conjugate-closed, DC always present); the value of a
coalition S for image x is

    v(S) = f(IDFT(sigma_S * DFT(x)))_target - f(IDFT(sigma_empty * DFT(x)))_target      (eq. 7-9)

with the same mask on every channel and absent bins filled by a baseline (zero by default,
Chen2022 §3.2). Because every coalition is conjugate-closed, every masked image is real.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple, Union

import torch
from captum.log import log_usage

from .._validation import check_choice, check_floating, check_positive_int
from ..spectral import (
    Players,
    apply_spectral_mask,
    fftshift2,
    make_players,
    patch_grid_players,
    radial_profile,
    render_coalitions,
    rfft2,
)
from ._base import DEFAULT_NOISE_STD, DEFAULT_SEED, FrequencyAttribution
from ._estimators import ESTIMATORS, design_size, make_design

TensorOrTuple = Union[torch.Tensor, Tuple[torch.Tensor]]

DEFAULT_N_SAMPLES = {"antithetic": 10, "permutation": 10, "kernel": None, "owen": 10}

#: Images with at most this many bins default to one player per conjugate pair (32x32: 513 players).
AUTO_PAIRS_MAX_BINS = 32 * 32
#: Larger images default to this symmetrized patch grid (136 players).
AUTO_GRID = 16
#: Default masked images per forward call (perturbations_per_eval = max(1, ROWS_PER_CALL // N)).
ROWS_PER_CALL = 64


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
        seed: the seed the call used (the drawn one when ``seed=None`` was passed).
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
    seed: Optional[int] = None

    def positive_mask(self) -> torch.Tensor:
        """PFC mask (N, H, W), fft2 layout: bins whose player has phi > 0 (Chen2022 §3)."""
        return positive_frequency_mask(self.attributions)

    def negative_mask(self) -> torch.Tensor:
        """NFC mask (N, H, W), fft2 layout: bins whose player has phi < 0."""
        return negative_frequency_mask(self.attributions)


class FrequencyShapley(FrequencyAttribution):
    r"""Shapley values of the frequency components of images, with Captum's conventions (Chen2022 §3).

    ``FrequencyShapley(forward_func).attribute(inputs, target=...)`` is to frequencies what
    ``captum.attr.ShapleyValueSampling`` is to pixels: the forward function's (target-selected)
    output is the game, the players are groups of DFT bins. Which output is explained is the
    forward function's business, as in Captum: pass the model for logits, or
    ``lambda z: torch.softmax(model(z), dim=1)`` for the softmax probability that Chen2022's code uses.

    Shared conventions (seed, baselines, ``perturbations_per_eval``, input range, cost limit):
    see :class:`~freqplug.attributions._base.FrequencyAttribution`.

    Args:
        forward_func: callable taking images (B, C, H, W) (plus ``additional_forward_args``) and
            returning (B, num_outputs) or (B,).
    """

    def __init__(self, forward_func: Callable) -> None:
        super().__init__(forward_func)

    def players(self, height: int, width: int, spec: Any = None) -> Players:
        """The partition for (height, width) images: ``spec`` resolved, or the size-dependent default.

        The default (``spec=None``) is ``"pairs"`` (one player per conjugate pair) up to
        :data:`AUTO_PAIRS_MAX_BINS` bins (32x32: 513 players) and the symmetrized 16 x 16 patch grid
        of the centered spectrum (136 players, Chen2022's code for 32x32) for larger images, where
        pairs would cost ``n_samples * H * W / 2`` evaluations per image (about 250,000 at 224x224).
        """
        if spec is None:
            if height * width <= AUTO_PAIRS_MAX_BINS:
                spec = "pairs"
            else:  # a thin image (e.g. 8 x 512) gets as many patches as it has rows/columns
                return patch_grid_players(height, width, (min(AUTO_GRID, height), min(AUTO_GRID, width)))
        return make_players(spec, height, width, require_fixed_dc=True)

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        n_samples: Optional[int] = None,
        perturbations_per_eval: Optional[int] = None,
        show_progress: bool = False,
        *,
        players: Any = None,
        estimator: str = "antithetic",
        seed: Optional[int] = DEFAULT_SEED,
        noise_std: float = DEFAULT_NOISE_STD,
        max_evaluations: Optional[float] = None,
        return_result: bool = False,
    ):
        r"""Frequency Shapley values of every image (Chen2022 eq. 5-9).

        Args:
            inputs: images (N, C, H, W) in [0, 1], or Captum's 1-tuple ``(images,)`` (then the
                attributions come back as a 1-tuple too). Values up to 0.5 outside [0, 1] are
                accepted so that ``captum.attr.NoiseTunnel`` and ``captum.metrics.sensitivity_max``
                (which add noise) work; the noisy images are explained as given, not clamped.
            baselines: what absent bins become: ``None``/``0``/``0.0``/``"zero"`` (default, Chen2022
                §3.2), ``"gaussian"`` (white noise of pixel std ``noise_std``, one draw per image keyed
                on (seed, image index)), ``"replacement"`` (another image of ``inputs``), or images
                (N or 1, C, H, W) whose spectrum fills them (Luo2024 App. B.2).
            target: Captum's target: int, 0-d or (N,) tensor, list of N ints, or a tuple (list of
                tuples) for outputs with more than 2 dims. Indices must lie in [0, output width):
                checked on every forward call.
            additional_forward_args: passed to ``forward_func`` after the images; tensors must have
                the batch as first dim and are indexed per example.
            n_samples: the budget: permutations for ``"permutation"``/``"antithetic"`` (Captum's meaning;
                default 10), coalitions for ``"kernel"`` (default 8 per player) and ``"owen"`` (default 10).
            perturbations_per_eval: Captum's meaning: coalitions per example in one forward call, so
                each call holds at most ``perturbations_per_eval x N`` masked images. Default
                ``max(1, 64 // N)`` (about 64 images per call). Results do not depend on it.
                Changed meaning: it used to count masked images per call. Where that matters -- an
                explicit value with N > 1 images whose calls would exceed 64 images -- a ``FutureWarning``
                says so, for one release.
            show_progress: Captum-style tqdm bar; its total is the number of model evaluations.
            players: ``None`` (default: ``"pairs"`` up to 32x32 images, the symmetrized 16 x 16 patch
                grid above; see :meth:`players`), ``"pairs"`` (one player per conjugate pair), an int g
                (symmetrized g x g patch grid of the centered spectrum), ``("bands", M[, metric])``
                (radial rings), a :class:`~freqplug.spectral.Players`, or an integer tensor (H, W) in
                ``torch.fft.fft2`` layout with ids 0..P-1 and -1 for always-present bins (DC must be -1;
                the map must be conjugate-closed).
            estimator: ``"antithetic"`` (default), ``"permutation"`` (Chen2022's), ``"kernel"``, ``"owen"``
                (see ``freqplug.attributions._estimators`` for each design).
            seed: seeds the sampling and the per-image baselines; default 0 (the same call gives the
                same result); None draws a fresh seed from the OS (torch's global RNG is never used).
            noise_std: pixel std of the ``"gaussian"`` baseline (default 1.0).
            max_evaluations: refuse calls needing more model evaluations (default
                ``freqplug._validation.DEFAULT_MAX_EVALUATIONS`` = 2,000,000); ``float("inf")`` lifts it.
            return_result: return a :class:`FrequencyShapleyResult` instead of the attribution tensor.

        Returns:
            (N, H, W) tensor in ``torch.fft.fft2`` layout and the inputs' dtype, each bin holding its
            player's Shapley value (Captum's feature-mask convention), a 1-tuple of it for tuple
            inputs, or the full result.

        Model evaluations: ``N * K`` masked images, ``K = 2 + n_samples * (P - 1)`` for the permutation
        estimators, ``2 + n_samples`` for ``kernel`` and ``2 + n_samples * (P + 1)`` for ``owen``
        (n_samples rounded up to even for antithetic, kernel and owen); forward calls:
        ``ceil(K / perturbations_per_eval)``. The count is logged (INFO) before the first call.
        """
        inputs, is_tuple = self._format_inputs(inputs)
        n, c, h, w = inputs.shape
        check_choice(estimator, "estimator", ESTIMATORS)
        if perturbations_per_eval is None:
            perturbations_per_eval = max(1, ROWS_PER_CALL // n)
        else:
            check_positive_int(perturbations_per_eval, "perturbations_per_eval")
            if n > 1 and perturbations_per_eval * n > ROWS_PER_CALL:  # larger calls than the old meaning gave
                warnings.warn(
                    "FrequencyShapley: `perturbations_per_eval` now has Captum's meaning (coalitions per example "
                    f"per forward call): each call holds up to {perturbations_per_eval} x {n} = "
                    f"{perturbations_per_eval * n} masked images; before, it counted masked images per call. "
                    f"Results are unchanged; pass perturbations_per_eval={max(1, perturbations_per_eval // n)} "
                    "for calls of the old size, or leave it out for the default.",
                    FutureWarning, stacklevel=3)
        if players is None and h * w > AUTO_PAIRS_MAX_BINS:
            warnings.warn(
                f"FrequencyShapley: the default `players` for {h}x{w} images is now the symmetrized {AUTO_GRID}x"
                f"{AUTO_GRID} patch grid instead of 'pairs' ({(h * w) // 2 + 1} players, about n_samples x that many "
                "evaluations per image); pass players='pairs' for the old default or players="
                f"{AUTO_GRID} to keep the new one without this warning.",
                FutureWarning, stacklevel=3)
        players = self.players(h, w, players)
        num_players = players.num_players
        if n_samples is None:
            n_samples = DEFAULT_N_SAMPLES[estimator] or 8 * num_players
        check_positive_int(n_samples, "n_samples")
        seed = self._resolve_seed(seed)
        target = self._prepare_target(target, n)
        additional_forward_args = self._prepare_forward_args(additional_forward_args, n)

        num_coalitions = design_size(estimator, num_players, n_samples)  # refuses oversized designs
        total_rows = n * num_coalitions
        n_calls = math.ceil(num_coalitions / perturbations_per_eval)
        bar = self._start(total_rows, max_evaluations, show_progress=show_progress,
                          what=f"FrequencyShapley ({estimator}, {num_players} players, n_samples={n_samples}, "
                               f"{n} image(s))",
                          hint="lower n_samples, use fewer players (e.g. players=16 or ('bands', 8)) or fewer images")
        design = make_design(estimator, num_players, n_samples, torch.Generator().manual_seed(seed))

        try:
            with torch.no_grad():
                images = inputs.detach()
                spectrum = rfft2(images)
                fill_images = self.baseline_images(images, baselines, seed=seed, noise_std=noise_std)
                fill = None if fill_images is None else rfft2(fill_images)

                def render(coalition_ids: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
                    row_coalitions = design.coalitions(coalition_ids).repeat_interleave(n, dim=0)  # (k*N, P)
                    masked = render_coalitions(spectrum, players, image_index, row_coalitions, fill, h, w)
                    return masked.to(images.dtype)

                values = self._coalition_values(render, num_coalitions, n, perturbations_per_eval, target,
                                                additional_forward_args, bar, device=images.device)
        finally:
            bar.close()

        estimate = design.estimate(values.cpu())
        phi = estimate.values.to(images.device)
        value_empty, value_full = values[:, 0], values[:, 1]
        gap = phi.sum(dim=1) - (value_full - value_empty)
        attributions = players.expand(phi.to(inputs.dtype))
        if not return_result:
            return self._format_output(attributions, is_tuple)
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
            seed=seed,
        )

    def player_values(self, inputs: TensorOrTuple, baselines: Any = None, target: Any = None,
                      additional_forward_args: Any = None, **kwargs) -> torch.Tensor:
        """Shapley value of every player (N, P) in the inputs' dtype: the ``values`` of :meth:`attribute`'s result.

        Takes the same arguments as :meth:`attribute` (``return_result`` excluded); player ``p`` is
        player ``p`` of ``self.players(H, W, players)``.
        """
        if "return_result" in kwargs:
            raise TypeError("`return_result` is not an argument of player_values()")
        images, _ = self._format_inputs(inputs)
        result = self.attribute.__wrapped__(self, images, baselines, target, additional_forward_args,
                                            return_result=True, **kwargs)
        return result.values.to(images.dtype)


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
    """Image made of the masked frequency components of ``inputs`` (Chen2022 Fig. 2).

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
    """Attributions in centered layout (DC at (H//2, W//2)) for display, as Chen2022's heatmaps."""
    return fftshift2(attributions)


def radial_average(attributions: torch.Tensor, *, metric: str = "l2") -> torch.Tensor:
    """Average attribution per radius (..., R) from (..., H, W) in fft2 layout (Chen2022 Figs. 3-4)."""
    return radial_profile(attributions, metric=metric)
