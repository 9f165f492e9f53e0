"""SpectralBandShapley: I-ASIDE band Shapley values and the spectral robustness score (Luo2024).

Players are M radial bands of the centered Fourier spectrum (equal-width l_inf rings from DC
outward, l2 as an option), built by :func:`freqplug.spectral.radial_band_players`; they are
conjugate-closed, so every coalition image ``x ⋈ S`` (eq. 5) is real and needs no ``abs()`` or
rescaling. The characteristic function is eq. 7-8 with one-hot labels::

    v(S) = E_{(x, y)} log Q(y | x ⋈ S) - E_{(x, y)} log Q(y | x ⋈ ∅),

Q the softmax of the model, and the band values ψ are the exact Shapley values of eq. 3 over
all 2^M coalitions, every coalition evaluated on the same images.

**DC belongs to band 0.** Eq. 4-5 mask *every* frequency point and the bands partition the
whole spectrum from the frequency centre outward, so the empty coalition ``x ⋈ ∅`` is the
all-absent image ``F^-1[b]`` (the black image for the zero baseline), not the mean colour of
``x``. Keeping DC always present would give a different game, in which band 0 loses the
credit for the image's mean colour. With DC in band 0 this module reproduces the issue's
independent computation (M = 8, 20 CIFAR-10 samples, zero baseline, embedded ResNet-18:
ψ = [1.91, 0.33, 0.22, 0.16, 0.58, 0.46, 0.31, 0.19], SRS 0.28); with DC fixed it gives
[0.64, 0.80, 0.79, 0.16, 0.65, 0.50, 0.52, -0.05], SRS 0.08. ``include_dc=False`` is offered.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Tuple, Union

import torch
from captum.log import log_usage
from torch import Tensor

from .. import _distributed
from .._batches import data_length, iter_labelled_batches
from .._model import preserved_model_state
from .._validation import check_budget, check_choice, check_number, check_positive_int, check_seed
from ..spectral import (
    Players,
    baseline_spectrum,
    iter_coalition_images,
    radial_band_players,
    spectral_importance_distribution,
    spectral_robustness_score,
)
from ._base import DEFAULT_NOISE_STD, DEFAULT_SEED, FrequencyAttribution, _describe
from ._captum import (
    NullProgress,
    TargetType,
    check_target_range,
    progress,
    rows_forward_args,
    rows_target,
    select_targets,
)
from ._estimators import exact_design_values, exact_shapley_weights, make_deduplicated_design
from ._stats import equal_means_test

#: Largest M evaluated exactly (2^12 = 4096 coalitions per image); larger M are sampled.
MAX_EXACT_BANDS = 12
BASELINES = ("zero", "gaussian", "replacement")
METHODS = ("auto", "exact", "sampled")
OUTPUTS = ("log_softmax", "identity")


# ---------------------------------------------------------------------------- result
@dataclass
class BandImportance:
    """Dataset-level result of :meth:`SpectralBandShapley.importance`.

    Attributes:
        values: ψ, band Shapley values (M,), float64, lowest band first (eq. 3 with eq. 8).
        sid: spectral importance distribution (M,): ``(ψ - min ψ) / ||ψ - min ψ||_1`` (§3.1).
        srs: spectral robustness score (eq. 11, ``beta``).
        stderr: standard error of each ψ_i (M,): over the images, combined with the sampling error
            in sampled mode (``sqrt(stderr_images² + stderr_sampling²)``).
        stderr_images: standard error of ψ over the images (M,) (nan for one image).
        stderr_sampling: standard error from permutation sampling (M,), None when exact.
        total_value: ``v(all) - v(∅)`` averaged over the images (= Σψ, the efficiency axiom).
        distinguishable: False when the data cannot reject "every band has the same ψ": a Hotelling
            T² test on the M-1 successive differences of ψ with their covariance over the images
            (plus the sampling covariance when sampled) gives ``p_value >= alpha``. The spread of ψ
            is then within what its standard errors explain, and the SID (which min-shifts and
            rescales whatever differences there are) shows noise, not a spectral preference.
        message: one line saying so.
        p_value: p-value of that test (nan when it cannot be computed, e.g. K <= M-1 images).
        spread, spread_stderr: max ψ - min ψ and the standard error of that difference
            (descriptive; picking the extremes biases spread/spread_stderr upward, hence the test).
        covariance: covariance (M, M) of ψ (images plus sampling).
    """

    values: Tensor
    sid: Tensor
    srs: float
    stderr: Tensor
    stderr_images: Tensor
    stderr_sampling: Optional[Tensor]
    total_value: float
    num_images: int
    num_bands: int
    rows_evaluated: int
    method: str
    baseline: str
    distinguishable: bool
    message: str
    p_value: float = field(default=float("nan"))
    spread: float = field(default=float("nan"))
    spread_stderr: float = field(default=float("nan"))
    covariance: Optional[Tensor] = field(default=None, repr=False)

    def __str__(self) -> str:
        psi = ", ".join(f"{v:.4g}±{s:.2g}" for v, s in zip(self.values.tolist(), self.stderr.tolist()))
        sid = ", ".join(f"{v:.3f}" for v in self.sid.tolist())
        return (f"BandImportance({self.method}, M={self.num_bands}, K={self.num_images} images, "
                f"{self.rows_evaluated} rows)\n  psi = [{psi}]\n  SID = [{sid}]\n  SRS = {self.srs:.4f}\n"
                f"  {self.message}")


# ---------------------------------------------------------------------------- the method
class SpectralBandShapley(FrequencyAttribution):
    r"""I-ASIDE: Shapley values of M radial spectral bands (Luo2024, eq. 3-8 and 11).

    Args:
        forward_func: the model (or any callable) mapping images (R, C, H, W) in [0, 1] to
            outputs (R, num_classes) (or (R, ..., num_classes) with tuple targets); its train/eval
            flags, parameters and the global RNG are left as they were (call it in the mode you want).
        num_bands: M, number of players (default 8, the paper's choice).
        metric: ``"linf"`` (the paper's square rings) or ``"l2"`` (circular rings).
        include_dc: DC in band 0 (default, see the module docstring); False keeps DC always present.
        output: ``"log_softmax"`` (default, eq. 8: log Q(y | ·)) or ``"identity"`` (use the forward
            output as it is, e.g. a model that already returns log-probabilities or logits). The
            log-softmax is taken over the last output dim, before ``target`` selects a value. With
            ``"log_softmax"`` the forward output must have at least 2 columns: the log-softmax of a
            single column is 0 for every image, so every value would be 0; such a forward raises
            (use ``output="identity"`` for a scalar score).
    """

    def __init__(self, forward_func: Callable, num_bands: int = 8, *, metric: str = "linf",
                 include_dc: bool = True, output: str = "log_softmax") -> None:
        FrequencyAttribution.__init__(self, forward_func)
        check_positive_int(num_bands, "num_bands", minimum=2)
        check_choice(metric, "metric", ("linf", "l2"))
        check_choice(output, "output", OUTPUTS)
        if not isinstance(include_dc, bool):
            raise TypeError(f"`include_dc` must be a bool, got {type(include_dc).__name__}")
        self.num_bands = num_bands
        self.metric = metric
        self.include_dc = include_dc
        self.output = output

    # ------------------------------------------------------------------ public API
    def players(self, height: int, width: int) -> Players:
        """The band partition for (height, width) images (fft layout)."""
        return radial_band_players(height, width, self.num_bands, metric=self.metric, include_dc=self.include_dc)

    def num_evaluations(self, num_images: int, *, method: str = "auto", n_samples: int = 64,
                        seed: int = DEFAULT_SEED) -> int:
        """Model rows (one image each) that :meth:`attribute` / :meth:`importance` spend on ``num_images``
        images: ``2^M`` per image in exact mode, the distinct prefix coalitions of the sampled
        permutations (at most ``n_samples · (M - 1) + 2``) in sampled mode."""
        check_positive_int(num_images, "num_images")
        coalitions, _ = self._design(self._resolve_method(method), n_samples, seed)
        return num_images * int(coalitions.shape[0])

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: Union[Tensor, Tuple[Tensor]],
        baselines: Union[None, int, float, str, Tensor] = "zero",
        target: Any = None,
        additional_forward_args: Any = None,
        perturbations_per_eval: int = 1,
        show_progress: bool = False,
        *,
        method: str = "auto",
        n_samples: int = 64,
        noise_std: float = DEFAULT_NOISE_STD,
        seed: Optional[int] = DEFAULT_SEED,
        max_evaluations: Optional[float] = None,
    ) -> Union[Tensor, Tuple[Tensor]]:
        r"""Per-image band Shapley values painted on the spectrum, Captum style: (N, H, W).

        Every frequency bin carries the value of its band (Captum's feature-mask convention, as
        :class:`OccludedFrequency` and :class:`FrequencyShapley`); :meth:`player_values` gives the
        values (N, M) themselves. Arguments are those of :meth:`player_values`.

        Returns:
            (N, H, W) in the inputs' dtype and device, fft2 layout ([0, 0] = DC): bin (u, v) holds
            ψ_n of the band it belongs to (with ``include_dc=False`` the DC bin holds 0); a 1-tuple of
            it for Captum's tuple inputs ``(images,)``.
        """
        images, is_tuple = self._format_inputs(inputs)
        values = self.player_values(images, baselines, target, additional_forward_args, perturbations_per_eval,
                                    show_progress, method=method, n_samples=n_samples, noise_std=noise_std,
                                    seed=seed, max_evaluations=max_evaluations)
        players = self.players(images.shape[-2], images.shape[-1])
        attribution = players.expand(values.cpu()).to(device=images.device, dtype=images.dtype)
        return self._format_output(attribution, is_tuple)

    def player_values(
        self,
        inputs: Tensor,
        baselines: Union[None, int, float, str, Tensor] = "zero",
        target: Any = None,
        additional_forward_args: Any = None,
        perturbations_per_eval: int = 1,
        show_progress: bool = False,
        *,
        method: str = "auto",
        n_samples: int = 64,
        noise_std: float = DEFAULT_NOISE_STD,
        seed: Optional[int] = DEFAULT_SEED,
        max_evaluations: Optional[float] = None,
    ) -> Tensor:
        r"""Per-image band Shapley values (N, M) (Luo2024 eq. 3 with the per-image game of eq. 8).

        For every image x_n the game is ``v_n(S) = g(x_n ⋈ S) - g(x_n ⋈ ∅)`` with g the log-softmax
        (or raw output, ``output="identity"``) of ``forward_func`` at ``target``; the mean of these
        values over a dataset is the ψ of :meth:`importance` (linearity of eq. 3). Makes
        :meth:`num_evaluations` (N) model rows, ``perturbations_per_eval · N`` per forward call.

        Args:
            inputs: images (N, C, H, W) in [0, 1] (or Captum's 1-tuple of them); values up to 0.5
                outside [0, 1] are accepted for ``NoiseTunnel`` / ``sensitivity_max`` noise (see
                :mod:`freqplug.attributions._base`).
            baselines: what fills absent bands (App. B.2), the vocabulary of
                :meth:`~freqplug.attributions._base.FrequencyAttribution.baseline_images`:
                ``"zero"`` (default, b = 0; ``None``, ``0`` and ``0.0`` mean the same), ``"gaussian"``
                (a conjugate-symmetric complex Gaussian spectrum: real white noise of pixel std
                ``noise_std``, one draw per image kept for all coalitions, from the generator of
                (``seed``, image index), so it does not depend on batching; ``noise_std=1`` is the
                paper's standard complex Gaussian in orthonormal units), ``"replacement"`` (the
                spectrum of another image of ``inputs``) or a tensor of images (N or 1, C, H, W)
                whose spectra fill the absences.
            target: Captum target: int, 0-d tensor, tensor (N,), list of N ints, or tuples for
                outputs with more dims; indices in [0, output width), checked on every forward.
                Required unless the forward output has a single column (which needs
                ``output="identity"``).
            additional_forward_args: extra arguments of ``forward_func``; tensors whose first
                dimension is N are indexed per coalition row, non-tensors and 0-d tensors are passed
                as they are, and a tensor whose first dimension is not N raises before any model call.
            perturbations_per_eval: coalitions per forward call; each call sees
                ``perturbations_per_eval * N`` images (Captum's meaning). Results do not depend on it.
            show_progress: a progress bar over the model rows.
            method: ``"exact"`` (all 2^M coalitions, M <= 12), ``"sampled"`` (antithetic
                permutations) or ``"auto"`` (exact when M <= 12).
            n_samples: permutations in sampled mode (rounded up to an even number).
            noise_std: pixel std of the ``"gaussian"`` baseline.
            seed: seeds the Gaussian / replacement baselines and the permutations (default 0; None
                draws a fresh seed from the OS, never from torch's global RNG).
            max_evaluations: refuse calls above this many model rows (None: the library default,
                :data:`freqplug._validation.DEFAULT_MAX_EVALUATIONS`; ``float("inf")`` for no limit).

        Returns:
            Band values (N, M) in the inputs' dtype and device, band 0 = lowest frequencies. Rows
            sum to ``v_n(all) - v_n(∅)`` (efficiency).
        """
        x, _ = self._format_inputs(inputs)
        self.players(x.shape[-2], x.shape[-1])  # raises when M is too large for the image size
        n = x.shape[0]
        check_positive_int(perturbations_per_eval, "perturbations_per_eval")
        seed = self._resolve_seed(seed)
        target = self._prepare_target(target, n)
        args = self._prepare_forward_args(additional_forward_args, n)
        method = self._resolve_method(method)
        coalitions, estimator = self._design(method, n_samples, seed)
        bar = self._start(n * coalitions.shape[0], max_evaluations, show_progress=show_progress,
                          what=f"{self.get_name()} ({method}, M={self.num_bands}, {n} image(s))",
                          hint="lower num_bands or use method='sampled' with fewer n_samples")
        with torch.no_grad(), preserved_model_state(self.forward_func, fork_rng=True):
            x = x.detach()
            fill = self._baseline_fill(x, baselines, noise_std, seed, torch.arange(n))
            values = self._band_game_values(x, target, args, coalitions, fill, perturbations_per_eval * n, bar)
        bar.close()
        return estimator(values)[0].to(device=x.device, dtype=x.dtype)

    def importance(
        self,
        data: Union[Tensor, Tuple[Tensor, Tensor], Iterable],
        target: Any = None,
        *,
        baselines: Union[None, int, float, str, Tensor] = "zero",
        internal_batch_size: Optional[int] = None,
        method: str = "auto",
        n_samples: int = 64,
        noise_std: float = DEFAULT_NOISE_STD,
        seed: Optional[int] = DEFAULT_SEED,
        beta: float = 0.75,
        alpha: float = 0.05,
        show_progress: bool = True,
        max_evaluations: Optional[float] = None,
        batch_size: Optional[int] = None,
    ) -> BandImportance:
        r"""Dataset-level I-ASIDE: ψ, SID, SRS and standard errors (Luo2024 eq. 3, 7-8, 11).

        Evaluates exactly ``2^M · K`` model rows for K images in exact mode (each coalition image
        once, every coalition on the same images), in forward calls of ``internal_batch_size`` rows.
        When ``torch.distributed`` is initialized, image k is handled by rank ``k % world_size`` and
        the sums are all-reduced, so every rank returns the numbers of a single process.

        Args:
            data: a tuple ``(x, y)`` of images (K, C, H, W) in [0, 1] and labels (K,), a tensor ``x``
                (then ``target`` gives the classes), or an iterable / DataLoader of ``(x, y)``
                batches (every rank must iterate it in the same order).
            target: None (use the labels), an int class for every image, or a tensor (K,) of classes.
            baselines: ``"zero"`` (or None/0/0.0), ``"gaussian"`` (per image, keyed on its index in
                the data: the same numbers for any batching of the data), ``"replacement"``
                (partner from the same block of the data: the whole set for tensor data, the batch
                for a DataLoader) or images (1, C, H, W). See :meth:`player_values`.
            internal_batch_size: model rows (coalition images) per forward call (default 256),
                Captum's name for row chunking. Results do not depend on it.
            method, n_samples, noise_std: see :meth:`player_values`.
            seed: an int (default 0) seeding the baselines and permutations; None is refused here,
                since every rank of a distributed run must draw the same ones.
            beta: SRS weight base (eq. 11).
            alpha: significance level of the equal-ψ test behind ``distinguishable`` (see
                :class:`BandImportance`).
            show_progress: progress bar over rows (rank 0 only).
            max_evaluations: refuse data whose known size needs more model rows (None: the library
                default; ``float("inf")`` for no limit).
            batch_size: deprecated name of ``internal_batch_size`` (it counted model rows, not
                images); it warns and will be removed in the next release.

        Returns:
            :class:`BandImportance`.
        """
        if batch_size is not None:
            if internal_batch_size is not None:
                raise TypeError("pass `internal_batch_size` only (`batch_size` is its deprecated name)")
            warnings.warn("SpectralBandShapley.importance(batch_size=...) counted model rows per forward call and is "
                          "deprecated; pass internal_batch_size=... (same meaning)", DeprecationWarning, stacklevel=2)
            internal_batch_size = batch_size
        internal_batch_size = 256 if internal_batch_size is None else internal_batch_size
        check_positive_int(internal_batch_size, "internal_batch_size")
        check_number(alpha, "alpha", minimum=0.0, maximum=1.0)
        check_number(beta, "beta", minimum=0.0, maximum=1.0, strict_minimum=True)
        if isinstance(baselines, Tensor) and baselines.dim() == 4 and baselines.shape[0] != 1:
            raise ValueError("`baselines` images for importance() must have batch size 1 (one baseline for the "
                             f"whole set), got shape {tuple(baselines.shape)}; use 'replacement' for partners")
        method = self._resolve_method(method)
        seed = check_seed(seed, allow_none=False)  # every rank must use the same seed: no fresh one here
        coalitions, estimator = self._design(method, n_samples, seed)
        rank, world = _distributed.rank(), _distributed.world_size()
        m = self.num_bands

        total_images = data_length(data)
        if total_images:
            check_budget(total_images * coalitions.shape[0], max_evaluations,
                         f"{self.get_name()}.importance on {total_images} image(s)",
                         "lower num_bands, use fewer images or method='sampled' with fewer n_samples")
        bar = progress(desc=f"{self.get_name()} importance", total=None if total_images is None else
                       math.ceil(total_images / world) * coalitions.shape[0]) \
            if show_progress and rank == 0 else NullProgress()
        psi_sum = torch.zeros(m, dtype=torch.float64)
        outer_sum = torch.zeros(m, m, dtype=torch.float64)
        total_sum = torch.zeros((), dtype=torch.float64)
        pair_sum: Optional[Tensor] = None
        count = torch.zeros((), dtype=torch.float64)
        seen = 0
        with torch.no_grad(), preserved_model_state(self.forward_func, fork_rng=True):
            for x, labels, offset in iter_labelled_batches(data, name="data", require_labels=False):
                x, _ = self._format_inputs(x, "data")
                self.players(x.shape[-2], x.shape[-1])
                x = x.detach()
                k = x.shape[0]
                global_index = torch.arange(offset, offset + k)
                targets = self._block_targets(target, labels, global_index, total_images, x.device)
                mine = (global_index % world) == rank
                if bool(mine.any()):
                    local = mine.nonzero().squeeze(1)
                    fill = self._baseline_fill(x, baselines, noise_std, seed, global_index)
                    if fill is not None and fill.shape[0] == k:
                        fill = fill[local.to(fill.device)]
                    values = self._band_game_values(x[local.to(x.device)], _subset_target(targets, local), None,
                                                    coalitions, fill, internal_batch_size, bar)
                    psi, pairs, totals = estimator(values)
                    psi_sum += psi.sum(0)
                    outer_sum += psi.T @ psi
                    total_sum += totals.sum()
                    count += psi.shape[0]
                    if pairs is not None:
                        pair_sum = pairs.sum(0) if pair_sum is None else pair_sum + pairs.sum(0)
                seen += k
        bar.close()
        if seen == 0:
            raise ValueError("`data` holds no images")
        if method == "sampled" and pair_sum is None:
            pair_sum = torch.zeros(_num_pairs(n_samples), m, dtype=torch.float64)
        psi_sum, outer_sum, total_sum, count, pair_sum = _distributed.all_reduce_sums(
            psi_sum, outer_sum, total_sum, count, pair_sum)
        return self._summarize(psi_sum, outer_sum, total_sum, int(count), pair_sum, coalitions.shape[0], method,
                               baselines, beta, alpha)

    # ------------------------------------------------------------------ internals
    def _resolve_method(self, method: str) -> str:
        check_choice(method, "method", METHODS)
        if method == "auto":
            return "exact" if self.num_bands <= MAX_EXACT_BANDS else "sampled"
        if method == "exact" and self.num_bands > MAX_EXACT_BANDS:
            raise ValueError(f"method='exact' evaluates 2^M coalitions and is limited to M <= {MAX_EXACT_BANDS}, "
                             f"got num_bands={self.num_bands}; use method='sampled'")
        if self.num_bands > 62:
            raise ValueError(f"`num_bands` must be <= 62 (coalitions are coded in int64), got {self.num_bands}")
        return method

    def _design(self, method: str, n_samples: int, seed: int):
        """Coalitions to evaluate (U, M) and the estimator mapping values (N, U) to
        (per-image ψ (N, M), per-pair estimates (N, pairs, M) or None, v(all) - v(∅) (N,))."""
        m = self.num_bands
        if method == "exact":
            weights = exact_shapley_weights(m)

            def exact(values: Tensor):
                return values @ weights, None, values[:, -1] - values[:, 0]

            return exact_design_values(m), exact
        check_positive_int(n_samples, "n_samples", minimum=2)
        check_seed(seed, allow_none=False)
        design = make_deduplicated_design("antithetic", m, n_samples, torch.Generator().manual_seed(seed))
        return design.coalitions, design.estimate

    def _baseline_fill(self, x: Tensor, baselines: Any, noise_std: float, seed: int,
                       dataset_index: Tensor) -> Optional[Tensor]:
        """One-sided absence spectra: None (zero) or (N or 1, C, H, W//2+1), fixed for all coalitions."""
        fill_images = self.baseline_images(x, baselines, seed=seed, noise_std=noise_std, dataset_index=dataset_index)
        return None if fill_images is None else baseline_spectrum(x, fill_images)

    def _band_game_values(self, x: Tensor, target: TargetType, args: Optional[Tuple], coalitions: Tensor,
                          fill: Optional[Tensor], rows_per_call: int, bar) -> Tensor:
        """g(x_n ⋈ S) for every image and coalition: float64 (N, U) (one model row each)."""
        n = x.shape[0]
        players = self.players(x.shape[-2], x.shape[-1])
        values = torch.empty(n, coalitions.shape[0], dtype=torch.float64)
        for image_index, coalition_index, images in iter_coalition_images(
                x, players, coalitions, chunk_size=rows_per_call, baseline_fill=fill):
            values[image_index.cpu(), coalition_index.cpu()] = self._rows(images, image_index, target, args, n).cpu()
            bar.update(int(image_index.numel()))
        return values

    def _rows(self, images: Tensor, image_index: Tensor, target: TargetType, args: Optional[Tuple],
              n: int) -> Tensor:
        """g of every row: the forward output, its log-softmax over the last dim (``output="log_softmax"``),
        then each row's target -> float64 (R,). Non-finite outputs and targets past the output width raise."""
        call_args = rows_forward_args(args, image_index, n) or ()
        output = self.forward_func(images, *call_args)
        if not isinstance(output, Tensor):
            raise TypeError(f"`forward_func` must return a tensor, got {type(output).__name__}")
        output = output.detach()
        if output.dim() == 0 or output.shape[0] != images.shape[0]:
            raise ValueError(f"`forward_func` must return one output per image: got shape {tuple(output.shape)} for "
                             f"{images.shape[0]} images")
        if not output.dtype.is_floating_point:
            raise TypeError(f"`forward_func` must return floating-point outputs, got dtype {output.dtype}")
        if not bool(torch.isfinite(output).all()):
            raise ValueError(f"`forward_func` ({_describe(self.forward_func)}) returned "
                             f"{int((~torch.isfinite(output)).sum())} non-finite value(s) (NaN or inf) on masked "
                             "images; band values of a non-finite output are meaningless")
        output = output.to(torch.float64)
        if output.dim() == 1:
            output = output[:, None]
        if self.output == "log_softmax":
            if output.shape[-1] == 1:
                raise ValueError("`forward_func` returns a single column: its log-softmax is 0 for every image, so "
                                 "every band value would be 0; return (batch, num_classes) logits, or use "
                                 "output='identity' to take the single output as the score")
            output = torch.log_softmax(output, dim=-1)
        if target is None:
            if output[0].numel() != 1:
                raise ValueError(f"the forward output has shape {tuple(output.shape)}: pass `target` (the class of "
                                 "each image) to select one value per image")
            return output.reshape(-1)
        check_target_range(output, target, "target")
        selected = select_targets(output, rows_target(target, image_index))
        if selected.numel() != images.shape[0]:
            raise ValueError(f"the forward output must give one value per image after `target` selection; got shape "
                             f"{tuple(selected.shape)} from output {tuple(output.shape)} (pass `target`)")
        return selected.reshape(-1)

    def _block_targets(self, target: Any, labels: Optional[Tensor], global_index: Tensor,
                       total_images: Optional[int], device) -> TargetType:
        """The target of one block of the data: its labels, or the matching slice of ``target``."""
        k = global_index.numel()
        if target is None:
            if labels is None:
                raise ValueError("`target` is required when `data` has no labels (pass (x, y) or target=...)")
            return labels.to(device=device, dtype=torch.long)
        if isinstance(target, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in target):
            target = torch.tensor(target, dtype=torch.long)
        if isinstance(target, Tensor) and target.dim() == 1 and target.numel() > 1:
            if total_images is not None and target.numel() != total_images:
                raise ValueError(f"`target` tensor must have one class per image ({total_images}), "
                                 f"got {target.numel()}")
            if int(global_index[-1]) >= target.numel():
                raise ValueError(f"`target` tensor has {target.numel()} entries but `data` has more images")
            target = target[global_index.to(target.device)]
        return self._prepare_target(target, k)

    def _summarize(self, psi_sum: Tensor, outer_sum: Tensor, total_sum: Tensor, count: int,
                   pair_sum: Optional[Tensor], rows_per_image: int, method: str, baselines, beta: float,
                   alpha: float) -> BandImportance:
        psi = psi_sum / count
        if count > 1:
            covariance = (outer_sum - count * torch.outer(psi, psi)) / (count - 1)
            covariance = (covariance + covariance.T) / 2
            cov_mean = covariance / count  # covariance of the mean over images
        else:
            cov_mean = torch.full_like(outer_sum, float("nan"))
        stderr_images = cov_mean.diagonal().clamp(min=0).sqrt()
        stderr_sampling = None
        cov_total = cov_mean
        if pair_sum is not None:
            pairs = pair_sum / count  # (P, M) dataset-mean estimate from each antithetic pair
            p = pairs.shape[0]
            if p > 1:
                centered = pairs - pairs.mean(0)
                cov_sampling = centered.T @ centered / (p - 1) / p
            else:
                cov_sampling = torch.full_like(cov_mean, float("nan"))
            stderr_sampling = cov_sampling.diagonal().clamp(min=0).sqrt()
            cov_total = cov_mean + cov_sampling
        stderr = cov_total.diagonal().clamp(min=0).sqrt()
        sid = spectral_importance_distribution(psi)
        srs = float(spectral_robustness_score(sid, beta=beta))
        hi, lo = int(psi.argmax()), int(psi.argmin())
        spread = float(psi[hi] - psi[lo])
        spread_se = float((cov_total[hi, hi] + cov_total[lo, lo] - 2 * cov_total[hi, lo]).clamp(min=0).sqrt())
        p_value, tested = equal_means_test(psi, cov_total, count)
        ratio = f"spread max-min of psi = {spread:.3g} ({spread / spread_se:.1f} s.e.)" if spread_se > 0 else \
            f"spread max-min of psi = {spread:.3g}"
        if not tested:
            distinguishable = False
            message = (f"SID NOT distinguishable from noise: cannot test with {count} image(s) for {self.num_bands} "
                       f"bands (need K >= M); {ratio}; the SID and SRS are not meaningful")
        elif p_value < alpha:
            distinguishable = True
            message = f"SID distinguishable from noise: {ratio}; equal-psi test p = {p_value:.2g} < {alpha:g}"
        else:
            distinguishable = False
            message = (f"SID NOT distinguishable from noise: {ratio} is within what the standard errors explain "
                       f"(equal-psi test p = {p_value:.2g} >= {alpha:g}); the SID and SRS are not meaningful")
        return BandImportance(
            values=psi, sid=sid, srs=srs, stderr=stderr, stderr_images=stderr_images,
            stderr_sampling=stderr_sampling, total_value=float(total_sum / count), num_images=count,
            num_bands=self.num_bands, rows_evaluated=count * rows_per_image, method=method,
            baseline=_baseline_name(baselines), distinguishable=distinguishable,
            message=message, p_value=p_value, spread=spread, spread_stderr=spread_se, covariance=cov_total)


# ---------------------------------------------------------------------------- helpers
def _num_pairs(n_samples: int) -> int:
    return (n_samples + 1) // 2


def _baseline_name(baselines: Any) -> str:
    """The baseline as recorded in :class:`BandImportance`: a string, or "images" for a tensor."""
    if isinstance(baselines, tuple) and len(baselines) == 1:
        baselines = baselines[0]
    if baselines is None or (isinstance(baselines, (int, float)) and not isinstance(baselines, bool)
                             and baselines == 0):
        return "zero"
    return baselines if isinstance(baselines, str) else "images"


def _subset_target(target: TargetType, local: Tensor) -> TargetType:
    """The target of the images ``local`` of a block (per-image targets are indexed, shared ones kept)."""
    if isinstance(target, Tensor) and target.dim() == 1:
        return target[local.to(target.device)]
    if isinstance(target, list):
        return [target[int(i)] for i in local.tolist()]
    return target
