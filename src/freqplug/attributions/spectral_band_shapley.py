"""SpectralBandShapley: I-ASIDE band Shapley values and the spectral robustness score (seed 004).

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
from captum._utils.common import _format_additional_forward_args
from captum._utils.progress import NullProgress, progress
from captum.attr._utils.attribution import PerturbationAttribution
from torch import Tensor

from .. import _distributed
from .._batches import data_length, image_generator, iter_labelled_batches
from .._model import check_logits, preserved_model_state
from .._validation import (
    check_budget,
    check_callable,
    check_choice,
    check_images,
    check_number,
    check_positive_int,
    check_seed,
)
from ..spectral import (
    Players,
    baseline_spectrum,
    iter_coalition_images,
    radial_band_players,
    spectral_importance_distribution,
    spectral_robustness_score,
)
from ._estimators import DeduplicatedPermutationDesign, exact_design_values, exact_shapley_weights
from ._forward import rows_forward_args
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
class SpectralBandShapley(PerturbationAttribution):
    r"""I-ASIDE: Shapley values of M radial spectral bands (Luo2024, eq. 3-8 and 11).

    Args:
        forward_func: the model (or any callable) mapping images (R, C, H, W) in [0, 1] to
            outputs (R, num_classes); its train/eval flags, parameters and the global RNG are left as
            they were (call it in the mode you want).
        num_bands: M, number of players (default 8, the paper's choice).
        metric: ``"linf"`` (the paper's square rings) or ``"l2"`` (circular rings).
        include_dc: DC in band 0 (default, see the module docstring); False keeps DC always present.
        output: ``"log_softmax"`` (default, eq. 8: log Q(y | ·)) or ``"identity"`` (use the forward
            output as it is, e.g. a model that already returns log-probabilities or logits). With
            ``"log_softmax"`` the forward output must have at least 2 columns: the log-softmax of a
            single column is 0 for every image, so every value would be 0; such a forward raises
            (use ``output="identity"`` for a scalar score).
    """

    def __init__(self, forward_func: Callable, num_bands: int = 8, *, metric: str = "linf",
                 include_dc: bool = True, output: str = "log_softmax") -> None:
        check_callable(forward_func, "forward_func")
        check_positive_int(num_bands, "num_bands", minimum=2)
        check_choice(metric, "metric", ("linf", "l2"))
        check_choice(output, "output", OUTPUTS)
        if not isinstance(include_dc, bool):
            raise TypeError(f"`include_dc` must be a bool, got {type(include_dc).__name__}")
        PerturbationAttribution.__init__(self, forward_func)
        self.num_bands = num_bands
        self.metric = metric
        self.include_dc = include_dc
        self.output = output

    # ------------------------------------------------------------------ public API
    def players(self, height: int, width: int) -> Players:
        """The band partition for (height, width) images (fft layout)."""
        return radial_band_players(height, width, self.num_bands, metric=self.metric, include_dc=self.include_dc)

    def num_evaluations(self, num_images: int, *, method: str = "auto", n_samples: int = 64, seed: int = 0) -> int:
        """Model rows (one image each) that :meth:`attribute` / :meth:`importance` spend on ``num_images``
        images: ``2^M`` per image in exact mode, the distinct prefix coalitions of the sampled
        permutations (at most ``n_samples · (M - 1) + 2``) in sampled mode."""
        check_positive_int(num_images, "num_images")
        coalitions, _ = self._design(self._resolve_method(method), n_samples, seed)
        return num_images * int(coalitions.shape[0])

    def attribute(  # type: ignore[override]
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
        noise_std: float = 1.0,
        seed: int = 0,
        max_evaluations: Optional[float] = None,
    ) -> Tensor:
        r"""Per-image band Shapley values painted on the spectrum, Captum style: (N, H, W).

        Every frequency bin carries the value of its band (Captum's feature-mask convention, as
        :class:`OccludedFrequency` and :class:`FrequencyShapley`); :meth:`player_values` gives the
        values (N, M) themselves. Arguments are those of :meth:`player_values`.

        Returns:
            (N, H, W) in the inputs' dtype and device, fft2 layout ([0, 0] = DC): bin (u, v) holds
            ψ_n of the band it belongs to (with ``include_dc=False`` the DC bin holds 0).
        """
        values = self.player_values(inputs, baselines, target, additional_forward_args, perturbations_per_eval,
                                    show_progress, method=method, n_samples=n_samples, noise_std=noise_std,
                                    seed=seed, max_evaluations=max_evaluations)
        players = self.players(inputs.shape[-2], inputs.shape[-1])
        return players.expand(values.cpu()).to(device=inputs.device, dtype=inputs.dtype)

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
        noise_std: float = 1.0,
        seed: int = 0,
        max_evaluations: Optional[float] = None,
    ) -> Tensor:
        r"""Per-image band Shapley values (N, M) (Luo2024 eq. 3 with the per-image game of eq. 8).

        For every image x_n the game is ``v_n(S) = g(x_n ⋈ S) - g(x_n ⋈ ∅)`` with g the log-softmax
        (or raw output, ``output="identity"``) of ``forward_func`` at ``target``; the mean of these
        values over a dataset is the ψ of :meth:`importance` (linearity of eq. 3). Makes
        :meth:`num_evaluations` (N) model rows, ``perturbations_per_eval · N`` per forward call.

        Args:
            inputs: images (N, C, H, W) in [0, 1].
            baselines: what fills absent bands (App. B.2): ``"zero"`` (default, b = 0; ``None``,
                ``0`` and ``0.0`` mean the same), ``"gaussian"`` (a conjugate-symmetric complex
                Gaussian spectrum: real white noise of pixel std ``noise_std``, one draw per image
                kept for all coalitions, drawn from the generator of (``seed``, image index), so it
                does not depend on batching; ``noise_std=1`` is the paper's standard complex
                Gaussian in orthonormal units), ``"replacement"`` (the spectrum of another image of
                ``inputs``, a seeded derangement) or a tensor of images (N or 1, C, H, W) whose
                spectra fill the absences.
            target: Captum target: int, 0-d tensor, tensor (N,) or list of N ints (class per image),
                each in [0, num_classes). Required unless the forward output has a single column
                (which needs ``output="identity"``).
            additional_forward_args: extra arguments of ``forward_func``; tensors whose first
                dimension is N are indexed per coalition row, other non-tensor arguments are passed
                as they are, and a tensor whose first dimension is not N raises.
            perturbations_per_eval: coalitions per forward call; each call sees
                ``perturbations_per_eval * N`` images (Captum's meaning). Results do not depend on it.
            show_progress: a progress bar over the model rows.
            method: ``"exact"`` (all 2^M coalitions, M <= 12), ``"sampled"`` (antithetic
                permutations) or ``"auto"`` (exact when M <= 12).
            n_samples: permutations in sampled mode (rounded up to an even number).
            noise_std: pixel std of the ``"gaussian"`` baseline.
            seed: seeds the Gaussian / replacement baselines and the permutations.
            max_evaluations: refuse calls above this many model rows (None: the library default,
                :data:`freqplug._validation.DEFAULT_MAX_EVALUATIONS`; ``float("inf")`` for no limit).

        Returns:
            Band values (N, M) in the inputs' dtype and device, band 0 = lowest frequencies. Rows
            sum to ``v_n(all) - v_n(∅)`` (efficiency).
        """
        x = self._check_inputs(inputs)
        n = x.shape[0]
        check_positive_int(perturbations_per_eval, "perturbations_per_eval")
        targets = _target_tensor(target, n, x.device)
        args = _format_additional_forward_args(additional_forward_args)
        method = self._resolve_method(method)
        coalitions, estimator = self._design(method, n_samples, seed)
        check_budget(n * coalitions.shape[0], max_evaluations, f"{self.get_name()} on {n} image(s)",
                     "lower num_bands or use method='sampled' with fewer n_samples")
        fill = self._baseline_fill(x, baselines, noise_std, seed, torch.arange(n))
        bar = progress(desc=f"{self.get_name()} attribution", total=n * coalitions.shape[0]) if show_progress \
            else NullProgress()
        with torch.no_grad(), preserved_model_state(self.forward_func, fork_rng=True):
            values = self._coalition_values(x, targets, args, coalitions, fill, perturbations_per_eval * n, bar)
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
        noise_std: float = 1.0,
        seed: int = 0,
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
            method, n_samples, noise_std, seed: see :meth:`player_values`.
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
            for block, (x, labels, offset) in enumerate(iter_labelled_batches(data, name="data",
                                                                             require_labels=False)):
                x = self._check_inputs(x, "data")
                k = x.shape[0]
                global_index = torch.arange(offset, offset + k)
                targets = self._block_targets(target, labels, global_index, total_images, x.device)
                mine = (global_index % world) == rank
                if bool(mine.any()):
                    local = mine.nonzero().squeeze(1)
                    fill = self._baseline_fill(x, baselines, noise_std, seed, global_index, block=block)
                    if fill is not None and fill.shape[0] == k:
                        fill = fill[local.to(fill.device)]
                    values = self._coalition_values(x[local.to(x.device)], targets[local.to(targets.device)], None,
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
    def _check_inputs(self, x: Any, name: str = "inputs") -> Tensor:
        check_images(x, name)
        self.players(x.shape[-2], x.shape[-1])  # raises when M is too large for the image size
        return x

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
        check_seed(seed, allow_none=False)
        if method == "exact":
            weights = exact_shapley_weights(m)

            def exact(values: Tensor):
                return values @ weights, None, values[:, -1] - values[:, 0]

            return exact_design_values(m), exact
        check_positive_int(n_samples, "n_samples", minimum=2)
        design = DeduplicatedPermutationDesign(m, _num_pairs(n_samples), torch.Generator().manual_seed(seed))
        return design.coalitions, design.estimate

    def _baseline_fill(self, x: Tensor, baselines: Any, noise_std: float, seed: int,
                       global_index: Tensor, block: int = 0) -> Optional[Tensor]:
        """One-sided absence spectra: None (zero) or (N or 1, C, H, W//2+1), fixed for all coalitions."""
        check_seed(seed, allow_none=False)
        if _is_zero_baseline(baselines):
            return None
        if isinstance(baselines, Tensor):
            return baseline_spectrum(x, baselines)
        if not isinstance(baselines, str):
            raise TypeError(f"`baselines` must be 'zero' (or None/0/0.0), 'gaussian', 'replacement' or a tensor of "
                            f"images, got {type(baselines).__name__} {baselines!r}")
        check_choice(baselines, "baselines", BASELINES)
        if baselines == "gaussian":
            check_number(noise_std, "noise_std", minimum=0.0)
            # One generator per image, keyed by its index in the data: the draw does not depend on
            # batching, chunking or on which rank handles the image.
            spectra = [baseline_spectrum(x[i:i + 1], "gaussian", noise_std=noise_std,
                                         generator=image_generator(seed, g))
                       for i, g in enumerate(global_index.tolist())]
            return torch.cat(spectra)
        n = x.shape[0]
        if n < 2:
            raise ValueError("`baselines`='replacement' needs at least 2 images (each image's absences are filled "
                             f"by another image's spectrum), got {n}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + block))
        partner = torch.empty(n, dtype=torch.long)
        partner[order] = order.roll(-1)  # one cycle through a random order: nobody is its own partner
        return baseline_spectrum(x, x[partner.to(x.device)])

    def _coalition_values(self, x: Tensor, targets: Optional[Tensor], args: Optional[Tuple], coalitions: Tensor,
                          fill: Optional[Tensor], rows_per_call: int, bar) -> Tensor:
        """g(x_n ⋈ S) for every image and coalition: float64 (N, U) (one model row each)."""
        n = x.shape[0]
        players = self.players(x.shape[-2], x.shape[-1])
        values = torch.empty(n, coalitions.shape[0], dtype=torch.float64)
        for image_index, coalition_index, images in iter_coalition_images(
                x, players, coalitions, chunk_size=rows_per_call, baseline_fill=fill):
            call_args = rows_forward_args(args, image_index, n) or ()
            output = self.forward_func(images, *call_args)
            values[image_index.cpu(), coalition_index.cpu()] = self._select(output, targets, image_index).cpu()
            bar.update(int(image_index.numel()))
        return values

    def _select(self, output: Any, targets: Optional[Tensor], image_index: Tensor) -> Tensor:
        if isinstance(output, Tensor) and output.dim() == 1:
            output = output[:, None]
        check_logits(output, self.forward_func, batch_size=image_index.numel(), name="forward_func")
        output = output.detach().to(torch.float64)
        if self.output == "log_softmax":
            if output.shape[1] == 1:
                raise ValueError("`forward_func` returns a single column: its log-softmax is 0 for every image, so "
                                 "every band value would be 0; return (batch, num_classes) logits, or use "
                                 "output='identity' to take the single output as the score")
            output = torch.log_softmax(output, dim=-1)
        if targets is None:
            if output.shape[1] != 1:
                raise ValueError(f"`target` is required: the forward output has {output.shape[1]} classes")
            return output[:, 0]
        row_targets = targets[image_index.to(targets.device)].to(output.device)
        if int(row_targets.max()) >= output.shape[1]:
            raise ValueError(f"`target` must hold class indices in [0, {output.shape[1]}) (the forward output's "
                             f"width), got {int(row_targets.max())}")
        return output.gather(1, row_targets[:, None])[:, 0]

    def _block_targets(self, target: Any, labels: Optional[Tensor], global_index: Tensor,
                       total_images: Optional[int], device) -> Tensor:
        k = global_index.numel()
        if target is None:
            if labels is None:
                raise ValueError("`target` is required when `data` has no labels (pass (x, y) or target=...)")
            return labels.to(torch.long)
        if isinstance(target, Tensor) and target.dim() == 1 and target.numel() > 1:
            if total_images is not None and target.numel() != total_images:
                raise ValueError(f"`target` tensor must have one class per image ({total_images}), "
                                 f"got {target.numel()}")
            if int(global_index[-1]) >= target.numel():
                raise ValueError(f"`target` tensor has {target.numel()} entries but `data` has more images")
            return _target_tensor(target[global_index.to(target.device)], k, device)
        return _target_tensor(target, k, device)

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
            baseline="zero" if _is_zero_baseline(baselines) else baselines if isinstance(baselines, str) else "images", distinguishable=distinguishable,
            message=message, p_value=p_value, spread=spread, spread_stderr=spread_se, covariance=cov_total)


# ---------------------------------------------------------------------------- helpers
def _num_pairs(n_samples: int) -> int:
    return (n_samples + 1) // 2


def _is_zero_baseline(baselines: Any) -> bool:
    """None, "zero", 0 and 0.0 all mean the zero baseline (Captum's spellings)."""
    if baselines is None or (isinstance(baselines, str) and baselines == "zero"):
        return True
    return isinstance(baselines, (int, float)) and not isinstance(baselines, bool) and baselines == 0


def _target_tensor(target: Any, n: int, device) -> Optional[Tensor]:
    """Captum classification targets -> long tensor (N,) or None."""
    if target is None:
        return None
    if isinstance(target, bool):
        raise TypeError("`target` must be an int, a tensor or a list of ints, got bool")
    if isinstance(target, int):
        if target < 0:
            raise ValueError(f"`target` must be a class index >= 0, got {target}")
        return torch.full((n,), target, dtype=torch.long, device=device)
    if isinstance(target, list):
        if any(isinstance(t, tuple) for t in target):
            raise ValueError("`target` tuples (multi-dimensional outputs) are not supported: the output must be "
                             "(batch, num_classes)")
        target = torch.tensor(target, dtype=torch.long)
    if not isinstance(target, Tensor):
        raise TypeError(f"`target` must be an int, a tensor or a list of ints, got {type(target).__name__}")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(f"`target` must hold integer class indices, got dtype {target.dtype}")
    if target.dim() == 0 or target.numel() == 1:
        return _target_tensor(int(target.reshape(())), n, device)
    if target.dim() != 1 or target.numel() != n:
        raise ValueError(f"`target` must be an int or have one class per image ({n}), got shape {tuple(target.shape)}")
    if int(target.min()) < 0:
        raise ValueError(f"`target` must hold class indices >= 0, got {int(target.min())}")
    return target.to(device=device, dtype=torch.long)


