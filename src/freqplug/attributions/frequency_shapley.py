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

from .._validation import check_budget, check_floating, check_number, check_positive_int
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
from ._base import DEFAULT_NOISE_STD, DEFAULT_SEED, FrequencyAttribution, logger
from ._estimators import ESTIMATOR_CHOICES, REGISTRY, default_n_samples, design_size, make_design, resolve_estimator

TensorOrTuple = Union[torch.Tensor, Tuple[torch.Tensor]]

#: Default budgets by estimator (None: 8 coalitions per player for ``kernel``, 10 (P - 1) for ``tree``);
#: see :func:`freqplug.attributions._estimators.default_n_samples`.
DEFAULT_N_SAMPLES = {"auto": 10, "antithetic": 10, "permutation": 10, "kernel": None, "owen": 10, "tree": None}
#: A player's sign is determined when ``|phi| > SIGN_STDERRS * stderr`` (about 95 % confidence).
SIGN_STDERRS = 2.0

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
        efficiency_gap: (N,) ``sum(values) - (value_full - value_empty)``; 0 up to rounding for every
            estimator (the permutation estimators telescope, ``kernel`` solves the constraint, ``owen``
            spreads the gap, ``tree`` is efficient term by term).
        n_evaluations: model evaluations (masked images) spent in total, over all images.
        n_forward_calls: calls of the forward function.
        num_samples: independent samples behind the standard errors (per image).
        players: the partition used.
        estimator: the estimator that ran (``"auto"`` resolved to ``"tree"`` or ``"antithetic"``).
        seed: the seed the call used (the drawn one when ``seed=None`` was passed).
        sign_determined: (N, P) bool, ``|values| > 2 stderr`` (False where the standard error is NaN):
            the players whose sign the sampling error cannot flip at about 95 % confidence.
        relative_stderr: (N,) ``||stderr||_2 / ||values||_2`` per image (NaN without standard errors),
            what ``target_stderr`` compares with.
        n_samples: the final budget in the estimator's unit (grown by ``target_stderr``).
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
    sign_determined: Optional[torch.Tensor] = None
    relative_stderr: Optional[torch.Tensor] = None
    n_samples: Optional[int] = None

    def _determined_bins(self) -> torch.Tensor:
        determined = self.sign_determined
        if determined is None:
            determined = sign_determined(self.values, self.stderr)
        return self.players.expand(determined.to(torch.float64)) > 0.5

    def _mask(self, sign: int, determined_only: Optional[bool], name: str) -> torch.Tensor:
        mask = self.attributions * sign > 0
        if determined_only is None:
            determined = self._determined_bins()
            if bool((mask & ~determined).any()):
                warnings.warn(
                    f"FrequencyShapleyResult.{name}(): some components in this mask have a sign within 2 standard "
                    "errors of 0 (sign undetermined); from the next release they are left out by default. Pass "
                    "determined_only=True for the new behaviour or determined_only=False to keep them and silence "
                    "this warning.", FutureWarning, stacklevel=3)
            return mask
        return mask & self._determined_bins() if determined_only else mask

    def positive_mask(self, determined_only: Optional[bool] = None) -> torch.Tensor:
        """PFC mask (N, H, W), fft2 layout: bins whose player has phi > 0 (Chen2022 §3).

        Args:
            determined_only: True keeps only players whose sign is determined (``sign_determined``,
                ``|phi| > 2 SE``): a player whose sign sampling noise could flip is neither PFC nor NFC.
                False keeps every phi > 0 (the old meaning). None (default, for one release): the old
                meaning, with a ``FutureWarning`` when an undetermined player is in the mask.
        """
        return self._mask(1, determined_only, "positive_mask")

    def negative_mask(self, determined_only: Optional[bool] = None) -> torch.Tensor:
        """NFC mask (N, H, W), fft2 layout: bins whose player has phi < 0 (``determined_only``: see
        :meth:`positive_mask`)."""
        return self._mask(-1, determined_only, "negative_mask")


#: Per-image fields of :class:`FrequencyShapleyResult` (first dim N), concatenated by :func:`_concatenate_results`.
_PER_IMAGE_FIELDS = ("attributions", "values", "stderr", "value_full", "value_empty", "efficiency_gap",
                     "sign_determined", "relative_stderr")
#: Fields that describe the call and must agree between the parts.
_SHARED_FIELDS = ("num_samples", "estimator", "seed", "n_samples")


def _concatenate_results(results, name: str = "results") -> FrequencyShapleyResult:
    """One result for the images of several :meth:`FrequencyShapley.attribute` calls, in the order given.

    Used to combine the per-unit results of a data set split across ranks
    (:func:`freqplug._distributed.map_units`): parts computed with the same players, estimator, seed and budget
    (and ``first_index`` set to each part's dataset index for the ``"gaussian"`` baseline) give the result of one
    call on all images, field by field; ``n_evaluations`` and ``n_forward_calls`` are the sums (the calls
    actually made). Per-image fields are concatenated on the first part's device.

    Args:
        results: a non-empty sequence of :class:`FrequencyShapleyResult`.
        name: the argument name used in error messages.

    Returns:
        :class:`FrequencyShapleyResult` with N = the sum of the parts' images.

    Raises:
        ValueError: no parts, or parts whose players, estimator, seed or budget differ (their values are not
            estimates of one computation: e.g. ``target_stderr`` grew the budget of one part only).
    """
    parts = list(results)
    if not parts:
        raise ValueError(f"`{name}` must hold at least one FrequencyShapleyResult, got none")
    for i, part in enumerate(parts):
        if not isinstance(part, FrequencyShapleyResult):
            raise TypeError(f"`{name}[{i}]` must be a FrequencyShapleyResult, got {type(part).__name__}")
    first = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        if part.players != first.players:
            raise ValueError(f"`{name}[{i}]` was computed with players {part.players!r}, `{name}[0]` with "
                             f"{first.players!r}: results over different partitions cannot be concatenated")
        for key in _SHARED_FIELDS:
            if getattr(part, key) != getattr(first, key):
                raise ValueError(f"`{name}[{i}]` has {key}={getattr(part, key)!r}, `{name}[0]` has "
                                 f"{getattr(first, key)!r}: only results of the same estimator, seed and budget "
                                 "form one result")
    device = first.values.device
    merged = {}
    for key in _PER_IMAGE_FIELDS:
        pieces = [getattr(part, key) for part in parts]
        if any(piece is None for piece in pieces):
            merged[key] = None
        else:
            merged[key] = torch.cat([piece.to(device) for piece in pieces])
    return FrequencyShapleyResult(
        **merged, n_evaluations=sum(int(part.n_evaluations) for part in parts),
        n_forward_calls=sum(int(part.n_forward_calls) for part in parts), players=first.players,
        **{key: getattr(first, key) for key in _SHARED_FIELDS})


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
        estimator: str = "auto",
        seed: Optional[int] = DEFAULT_SEED,
        noise_std: float = DEFAULT_NOISE_STD,
        max_evaluations: Optional[float] = None,
        return_result: bool = False,
        target_stderr: Optional[float] = None,
        first_index: int = 0,
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
            n_samples: the budget: permutations for ``"auto"``/``"permutation"``/``"antithetic"`` (Captum's
                meaning; default 10; ``"auto"`` spends what ``"antithetic"`` would), coalitions for
                ``"kernel"`` (default 8 per player), ``"owen"`` (default 10) and ``"tree"`` (default
                10 (P - 1); at least 2P - 2).
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
            estimator: ``"auto"`` (default: ``"tree"`` when P >= 8 players and the budget is at least 2P
                evaluations per image and XGBoost (``freqplug[shapley]``) is installed, else ``"antithetic"``),
                ``"tree"`` (boosted-tree surrogate with a cross-fitted correction; about 5x fewer evaluations
                than antithetic sampling for the same error at 2P-10P evaluations), ``"antithetic"`` (the
                previous default), ``"permutation"`` (Chen2022's), ``"kernel"``, ``"owen"`` (see
                ``freqplug.attributions._estimators`` for each design). ``result.estimator`` says which ran.
            seed: seeds the sampling and the per-image baselines; default 0 (the same call gives the
                same result); None draws a fresh seed from the OS (torch's global RNG is never used).
            noise_std: pixel std of the ``"gaussian"`` baseline (default 1.0).
            max_evaluations: refuse calls needing more model evaluations (default
                ``freqplug._validation.DEFAULT_MAX_EVALUATIONS`` = 2,000,000); ``float("inf")`` lifts it.
            return_result: return a :class:`FrequencyShapleyResult` instead of the attribution tensor.
            target_stderr: optional relative standard error ``||stderr|| / ||phi||`` to reach in every image:
                after the first ``n_samples``, the design doubles (new coalitions only are evaluated) until
                it is reached or the next round would pass ``max_evaluations`` (then the call returns what
                it has, logged as a warning). Estimators ``tree``, ``antithetic``, ``permutation`` (and
                ``auto``). Real ResNet games are noisy: 5 % needs about 10^5 evaluations per image.
            first_index: dataset index of ``inputs[0]`` (default 0): the ``"gaussian"`` baseline of image i is
                drawn from the generator of (seed, ``first_index + i``), so a data set attributed in chunks
                (e.g. split across ranks) gets the baselines of one call on all of it. Every other part of an
                image's result (the coalitions, the tree fits) depends only on the seed, the estimator, the
                players and the budget, never on the other images of the call -- except ``"replacement"``
                (partners come from the same call) and ``target_stderr`` (the design grows until every image
                of the call reaches it).

        Returns:
            (N, H, W) tensor in ``torch.fft.fft2`` layout and the inputs' dtype, each bin holding its
            player's Shapley value (Captum's feature-mask convention), a 1-tuple of it for tuple
            inputs, or the full result.

        Model evaluations: ``N * K`` masked images, ``K = 2 + n_samples * (P - 1)`` for ``auto`` and the
        permutation estimators, ``2 + n_samples`` for ``kernel`` and ``tree`` and ``2 + n_samples * (P + 1)``
        for ``owen`` (n_samples rounded up to even except for permutation); forward calls:
        ``ceil(K / perturbations_per_eval)``. The count is logged (INFO) before the first call and is
        ``result.n_evaluations``. With ``target_stderr`` each extra round adds the evaluations of its new
        coalitions (``result.n_evaluations`` is the total); the ``tree`` estimator also costs three tree
        fits per image (about 0.4 s CPU each at 5P with 64 players: 11 % of the embedded ResNet-18's forwards).
        """
        inputs, is_tuple = self._format_inputs(inputs)
        n, c, h, w = inputs.shape
        if estimator not in ESTIMATOR_CHOICES:
            raise ValueError(f"`estimator` must be one of {list(ESTIMATOR_CHOICES)}, got {estimator!r}")
        if target_stderr is not None:
            target_stderr = check_number(target_stderr, "target_stderr", minimum=0.0)
            if target_stderr <= 0:
                raise ValueError(f"`target_stderr` must be > 0 (a relative standard error), got {target_stderr}")
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
            n_samples = default_n_samples(estimator, num_players)
        check_positive_int(n_samples, "n_samples")
        estimator, n_samples = resolve_estimator(estimator, num_players, n_samples, warn_stacklevel=4)
        if target_stderr is not None and not REGISTRY[estimator].extensible:
            raise ValueError(f"`target_stderr` needs estimator 'tree', 'antithetic', 'permutation' or 'auto' (their "
                             f"designs can grow), got estimator={estimator!r}")
        seed = self._resolve_seed(seed)
        first_index = self._check_first_index(first_index)
        target = self._prepare_target(target, n)
        additional_forward_args = self._prepare_forward_args(additional_forward_args, n)

        num_coalitions = design_size(estimator, num_players, n_samples)  # refuses oversized designs
        total_rows = n * num_coalitions
        n_calls = math.ceil(num_coalitions / perturbations_per_eval)
        bar = self._start(total_rows, max_evaluations, show_progress=show_progress,
                          what=f"FrequencyShapley ({estimator}, {num_players} players, n_samples={n_samples}, "
                               f"{n} image(s))",
                          hint="lower n_samples, use fewer players (e.g. players=16 or ('bands', 8)) or fewer images")
        generator = torch.Generator().manual_seed(seed)
        design = make_design(estimator, num_players, n_samples, generator)

        try:
            with torch.no_grad():
                images = inputs.detach()
                spectrum = rfft2(images)
                fill_images = self.baseline_images(images, baselines, seed=seed, noise_std=noise_std,
                                                   dataset_index=torch.arange(first_index, first_index + n))
                fill = None if fill_images is None else rfft2(fill_images)

                def render(coalition_ids: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
                    row_coalitions = design.coalitions(coalition_ids).repeat_interleave(n, dim=0)  # (k*N, P)
                    masked = render_coalitions(spectrum, players, image_index, row_coalitions, fill, h, w)
                    return masked.to(images.dtype)

                values = self._coalition_values(render, num_coalitions, n, perturbations_per_eval, target,
                                                additional_forward_args, bar, device=images.device)
                estimate = design.estimate(values.cpu())
                # NaN (too few samples for an error) counts as not reached
                while target_stderr is not None and not float(
                        relative_stderr(estimate.values, estimate.stderr).max()) <= target_stderr:
                    old, grow = design.num_coalitions, design.n_samples
                    new = design_size(estimator, num_players, 2 * grow) - old  # coalitions the doubling adds
                    try:
                        check_budget(n * (old + new), max_evaluations, "target_stderr")
                    except ValueError:
                        logger.warning("FrequencyShapley: target_stderr=%g not reached (relative standard error %.3g) "
                                       "within max_evaluations; returning the estimate of %s evaluations",
                                       target_stderr, float(relative_stderr(estimate.values, estimate.stderr).max()),
                                       f"{n * old:,}")
                        break
                    design.extend(grow, generator)
                    shifted = lambda ids, index, base=old: render(ids + base, index)  # noqa: E731
                    more = self._coalition_values(shifted, design.num_coalitions - old, n, perturbations_per_eval,
                                                  target, additional_forward_args, bar, device=images.device)
                    values = torch.cat([values, more], dim=1)
                    n_calls += math.ceil((design.num_coalitions - old) / perturbations_per_eval)
                    estimate = design.estimate(values.cpu())
        finally:
            bar.close()
        total_rows = n * design.num_coalitions
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
            sign_determined=sign_determined(phi, estimate.stderr.to(images.device)),
            relative_stderr=relative_stderr(phi, estimate.stderr.to(images.device)),
            n_samples=design.n_samples,
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
def sign_determined(values: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    """(..., P) bool: ``|values| > 2 stderr`` (:data:`SIGN_STDERRS`); False where the standard error is NaN."""
    return (values.abs() > SIGN_STDERRS * stderr) & ~torch.isnan(stderr)


def relative_stderr(values: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    """(...,) ``||stderr||_2 / ||values||_2`` over the players (inf for all-zero values with an error, NaN
    when a standard error is NaN)."""
    values, stderr = values.to(torch.float64), stderr.to(torch.float64)
    return stderr.norm(dim=-1) / values.norm(dim=-1)


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
