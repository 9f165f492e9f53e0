"""OccludedFrequency: occlusion of groups of DCT frequencies (Wang2020a, Definition 1).

The score of a frequency group G for class c is the logit drop (Wang2020a eq. 7)::

    OF_G(x)_c = f(x)_c - f(IDCT(occlude_G(DCT(x))))_c,

with the orthonormal 2-D DCT of every channel; the masking is
:func:`freqplug.spectral.apply_dct_mask`. Groups of "the same frequency" come from
:func:`freqplug.spectral.dct_band_groups`: l_inf rings ``max(u, v) = k`` (the authors' code,
default), diagonals ``u + v = k``, or any integer map. Every group is scored, the highest ring
included (the authors' loop stops one short).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, Optional, Tuple, Union

import torch
from captum.log import log_usage
from torch import Tensor

from .._batches import data_length, iter_labelled_batches
from .._model import preserved_model_state
from .._validation import check_budget, check_choice, check_images, check_positive_int
from ..spectral import Players, apply_dct_mask, dct2, dct_band_groups, idct2, players_from_map
from ._base import DEFAULT_NOISE_STD, DEFAULT_SEED, FrequencyAttribution
from ._captum import NullProgress, progress

MODES = ("occlude", "keep")
#: The deprecated ``"random"`` baseline keeps its old default std for its last release.
RANDOM_NOISE_STD = 0.1
GroupSpec = Union[str, Tensor, Players]


class OccludedFrequency(FrequencyAttribution):
    r"""Occluded Frequency attribution over DCT frequency groups (Wang2020a, Definition 1).

    Args:
        forward_func: the model or any callable returning (batch, ...) outputs (logits for the
            paper's score); its train/eval flags, parameters and the global RNG are left as they were.
        groups: ``"ring"`` (default, max(u, v) = k), ``"diagonal"`` (u + v = k), an integer map
            (H, W) of group ids 0..G-1 over DCT coefficients (every coefficient in a group: -1 is
            refused, since every coefficient is occluded by its group), or a ``Players`` with layout
            ``"dct"``. Groups are numbered from the lowest frequency.
    """

    def __init__(self, forward_func: Callable, groups: GroupSpec = "ring") -> None:
        FrequencyAttribution.__init__(self, forward_func)
        if isinstance(groups, str):
            check_choice(groups, "groups", ("ring", "diagonal"))
        elif isinstance(groups, Tensor):
            if not (groups.dtype.is_floating_point or groups.dtype.is_complex or groups.dtype == torch.bool) \
                    and groups.numel() and bool((groups == -1).any()):
                raise ValueError(
                    f"`groups` map holds -1 at {int((groups == -1).sum())} DCT coefficient(s): OccludedFrequency "
                    "occludes every coefficient with its group, so every entry must be a group id 0..G-1 "
                    "(-1, 'always present', means something only for Shapley players)")
            groups = players_from_map(groups, layout="dct")
        elif isinstance(groups, Players):
            if groups.layout != "dct":
                raise ValueError(f"`groups` Players must have layout 'dct', got {groups.layout!r}")
            if bool(groups.fixed_bins().any()):
                raise ValueError("`groups` must assign every DCT coefficient to a group (no -1 entries)")
        else:
            raise TypeError("`groups` must be 'ring', 'diagonal', an integer tensor (H, W) or a dct-layout Players, "
                            f"got {type(groups).__name__}")
        self.groups = groups

    def players(self, height: int, width: int) -> Players:
        """The group partition of (height, width) DCT coefficients (layout ``"dct"``)."""
        if isinstance(self.groups, str):
            return dct_band_groups(height, width, kind=self.groups)
        self.groups.check_shape(height, width)
        return self.groups

    def num_evaluations(self, num_images: int, height: int, width: int) -> int:
        """Model rows one call spends on ``num_images`` images of (height, width): ``N · (1 + G)``."""
        return num_images * (1 + self.players(height, width).num_players)

    # ------------------------------------------------------------------ Captum API
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
        mode: str = "occlude",
        noise_std: Optional[float] = None,
        seed: Optional[int] = DEFAULT_SEED,
        max_evaluations: Optional[float] = None,
    ) -> Union[Tensor, Tuple[Tensor]]:
        r"""Occluded Frequency map in DCT layout (N, H, W). Arguments are those of :meth:`player_values`.

        Returns:
            (N, H, W) in the inputs' dtype, DCT layout ([0, 0] = DC): every coefficient carries the
            score of its group (Captum's feature-mask convention; the channels share a group); a
            1-tuple of it for Captum's tuple inputs ``(images,)``.
        """
        images, is_tuple = self._format_inputs(inputs)
        scores = self.player_values(images, baselines, target, additional_forward_args, perturbations_per_eval,
                                    show_progress, mode=mode, noise_std=noise_std, seed=seed,
                                    max_evaluations=max_evaluations)
        players = self.players(images.shape[-2], images.shape[-1])
        attribution = players.expand(scores.cpu()).to(device=images.device, dtype=images.dtype)
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
        mode: str = "occlude",
        noise_std: Optional[float] = None,
        seed: Optional[int] = DEFAULT_SEED,
        max_evaluations: Optional[float] = None,
        first_index: int = 0,
    ) -> Tensor:
        r"""Per-group scores (N, G), group 0 = lowest frequency (Wang2020a eq. 7).

        Makes ``N · (1 + G)`` model rows (:meth:`num_evaluations`), ``perturbations_per_eval · N``
        per forward call.

        Args:
            inputs: images (N, C, H, W) in [0, 1] (or Captum's 1-tuple of them); values up to 0.5
                outside [0, 1] are accepted for ``NoiseTunnel`` / ``sensitivity_max`` noise.
            baselines: what replaces occluded DCT coefficients, the vocabulary of
                :meth:`~freqplug.attributions._base.FrequencyAttribution.baseline_images`:
                ``"zero"`` (default; ``None``, ``0`` and ``0.0`` mean the same), ``"gaussian"`` (the
                DCT of white pixel noise of std ``noise_std``, i.e. i.i.d. N(0, noise_std²)
                coefficients; one draw per image from the generator of (``seed``, image index), the
                same for every group, so it does not depend on batching), ``"replacement"`` (the
                coefficients of another image of ``inputs``) or images (N or 1, C, H, W) whose DCT
                coefficients are used. ``"random"`` is the deprecated name of ``"gaussian"`` (it warns and keeps
                its old default ``noise_std=0.1``).
            target: Captum target (int, tensor, list of ints or tuples), each index within the
                forward output's shape (class indices in [0, num_classes), checked on every forward
                call; negative indices are refused); the selected output per example must be a scalar.
            additional_forward_args: extra ``forward_func`` arguments; tensors must have the batch as
                first dim and are indexed per example.
            perturbations_per_eval: groups per forward call (each call sees that many times N
                images, Captum's meaning); the result does not depend on it.
            show_progress: progress bar over forward calls.
            mode: ``"occlude"`` (default): score = f(x)_c - f(x with group occluded)_c;
                ``"keep"``: score = f(x with only the group kept)_c - f(x with every group occluded)_c.
            noise_std: std of the ``"gaussian"`` baseline (default 1.0, the pixel std that
                FrequencyShapley and SpectralBandShapley use; OccludedFrequency's old ``"random"``
                default was 0.1).
            seed: seeds the Gaussian / replacement baselines (default 0; None draws a fresh seed from
                the OS, never from torch's global RNG).
            max_evaluations: refuse calls above this many model rows (None: the library default;
                ``float("inf")`` for no limit).
            first_index: dataset index of ``inputs[0]`` (default 0): the ``"gaussian"`` baseline of image i is
                that of dataset index ``first_index + i``, so a data set scored in chunks (e.g. split across
                ranks) gets the scores of one call on all of it.

        Returns:
            Scores (N, G) in the inputs' dtype and device.
        """
        return self._player_values(inputs, baselines, target, additional_forward_args, perturbations_per_eval,
                                   show_progress, mode=mode, noise_std=noise_std, seed=seed,
                                   max_evaluations=max_evaluations, first_index=self._check_first_index(first_index))

    def group_scores(self, *args, **kwargs) -> Tensor:
        """Deprecated name of :meth:`player_values` (the shared per-player method name); warns."""
        warnings.warn("OccludedFrequency.group_scores() is deprecated; use player_values() (same arguments and "
                      "result)", DeprecationWarning, stacklevel=2)
        return self.player_values(*args, **kwargs)

    # ------------------------------------------------------------------ dataset helpers
    def class_average_scores(
        self,
        data: Union[Tuple[Tensor, Tensor], Iterable],
        num_classes: Optional[int] = None,
        *,
        baselines: Union[None, int, float, str, Tensor] = "zero",
        mode: str = "occlude",
        batch_size: int = 64,
        perturbations_per_eval: int = 1,
        noise_std: Optional[float] = None,
        seed: int = DEFAULT_SEED,
        show_progress: bool = True,
        max_evaluations: Optional[float] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Scores of the true class averaged per class ("attribution shift", Wang2020a Exp. IV / Fig. 1).

        Image k of the data gets the per-image baseline of dataset index k (see
        :meth:`player_values`), so the result does not depend on ``batch_size`` or on the loader's
        batching (``"replacement"`` partners are drawn within each batch).

        Args:
            data: a pair (x (K, C, H, W), y (K,)) or an iterable / DataLoader of (x, y) batches.
            num_classes: rows of the result (default: max label + 1); labels must be below it.
            baselines, mode, perturbations_per_eval, noise_std, seed, max_evaluations: see
                :meth:`player_values`.
            batch_size: images per :meth:`player_values` call for tensor data.
            show_progress: progress bar over images.

        Returns:
            ``(means, counts)``: means (num_classes, G) float64, NaN in the rows of classes with no
            image (not 0: there is no score to show), counts (num_classes,) long.
        """
        check_positive_int(batch_size, "batch_size")
        if num_classes is not None:
            check_positive_int(num_classes, "num_classes")
        total = data_length(data)
        sums: Optional[Tensor] = None
        counts: Optional[Tensor] = None
        bar = progress(desc=f"{self.get_name()} class averages", total=total) if show_progress else NullProgress()
        for x, y, offset in iter_labelled_batches(data, batch_size, name="data"):
            check_images(x, "data")
            if total and offset == 0:
                check_budget(self.num_evaluations(total, x.shape[-2], x.shape[-1]), max_evaluations,
                             f"{self.get_name()}.class_average_scores on {total} image(s)")
            if num_classes is not None and y.numel() and int(y.max()) >= num_classes:
                raise ValueError(f"`data` labels must be in [0, {num_classes}) (num_classes={num_classes}), "
                                 f"got {int(y.max())}")
            scores = self._player_values(x, baselines, y.to(x.device), None, perturbations_per_eval, False,
                                         mode=mode, noise_std=noise_std, seed=seed, max_evaluations=float("inf"),
                                         first_index=offset).to(torch.float64).cpu()
            if sums is None:
                sums = torch.zeros(0, scores.shape[1], dtype=torch.float64)
                counts = torch.zeros(0, dtype=torch.long)
            needed = max(int(y.max()) + 1, num_classes or 0)
            if needed > sums.shape[0]:
                sums = torch.cat([sums, sums.new_zeros(needed - sums.shape[0], sums.shape[1])])
                counts = torch.cat([counts, counts.new_zeros(needed - counts.shape[0])])
            labels = y.cpu().long()
            sums.index_add_(0, labels, scores)
            counts += torch.bincount(labels, minlength=counts.shape[0])
            bar.update(x.shape[0])
        bar.close()
        if sums is None:
            raise ValueError("`data` holds no images")
        return _means_of_sums(sums, counts), counts

    # ------------------------------------------------------------------ internals
    def _player_values(self, inputs: Any, baselines: Any, target: Any, additional_forward_args: Any,
                       perturbations_per_eval: int, show_progress: bool, *, mode: str, noise_std: Optional[float],
                       seed: Optional[int], max_evaluations: Optional[float], first_index: int) -> Tensor:
        inputs, _ = self._format_inputs(inputs)
        check_choice(mode, "mode", MODES)
        check_positive_int(perturbations_per_eval, "perturbations_per_eval")
        n, _, h, w = inputs.shape
        players = self.players(h, w)
        num_groups = players.num_players
        seed = self._resolve_seed(seed)
        target = self._prepare_target(target, n)
        args = self._prepare_forward_args(additional_forward_args, n)
        bar = self._start(n * (1 + num_groups), max_evaluations, show_progress=show_progress,
                          what=f"{self.get_name()} ({num_groups} groups, {n} image(s))")
        masks = players.masks(torch.eye(num_groups, dtype=torch.bool)).to(inputs.device)  # (G, H, W)
        with torch.no_grad(), preserved_model_state(self.forward_func, fork_rng=True):
            inputs = inputs.detach()
            fill = self._baseline_coefficients(inputs, baselines, noise_std, seed, first_index)
            everyone = torch.arange(n, device=inputs.device)
            if mode == "occlude":
                reference = self._run_rows(inputs, everyone, target, args, n)
            else:  # every group occluded: the image the baseline alone makes
                reference = self._run_rows(idct2(fill.expand(inputs.shape)), everyone, target, args, n)
            bar.update(n)

            def render(group_ids: Tensor, image_index: Tensor) -> Tensor:
                chosen = masks[group_ids][:, None, None]  # (g, 1, 1, H, W): one group per coalition
                return apply_dct_mask(inputs, chosen, fill, keep=mode == "keep").reshape(-1, *inputs.shape[1:])

            values = self._coalition_values(render, num_groups, n, perturbations_per_eval, target, args, bar,
                                            device=inputs.device)  # (N, G)
            reference = reference.to(values.device)[:, None]
            scores = (reference - values) if mode == "occlude" else (values - reference)
        bar.close()
        return scores.to(device=inputs.device, dtype=inputs.dtype)

    def _baseline_coefficients(self, inputs: Tensor, baselines: Any, noise_std: Optional[float], seed: int,
                               first_index: int) -> Tensor:
        """DCT coefficients that replace occluded ones, broadcastable to (N, C, H, W)."""
        if isinstance(baselines, str) and baselines == "random":
            warnings.warn("OccludedFrequency baselines='random' is deprecated: use baselines='gaussian' (the same "
                          f"draw; note its default noise_std is {DEFAULT_NOISE_STD}, 'random' used "
                          f"{RANDOM_NOISE_STD})", DeprecationWarning, stacklevel=5)
            baselines = "gaussian"
            noise_std = RANDOM_NOISE_STD if noise_std is None else noise_std
        noise_std = DEFAULT_NOISE_STD if noise_std is None else noise_std
        n = inputs.shape[0]
        fill_images = self.baseline_images(inputs, baselines, seed=seed, noise_std=noise_std,
                                           dataset_index=torch.arange(first_index, first_index + n))
        if fill_images is None:
            return inputs.new_zeros(1, *inputs.shape[1:])
        return dct2(fill_images)


def _class_means(scores: Tensor, labels: Tensor, num_classes: int) -> Tuple[Tensor, Tensor]:
    """Per-class means of per-image scores: what :meth:`OccludedFrequency.class_average_scores` returns, from
    scores computed elsewhere (e.g. per unit of a data set split across ranks, each unit with ``first_index`` =
    its first dataset index).

    Args:
        scores: (N, G) per-image scores of the true class (image order of ``labels``).
        labels: (N,) labels in [0, num_classes).
        num_classes: rows of the result.

    Returns:
        ``(means, counts)``: means (num_classes, G) float64, NaN for classes without images; counts
        (num_classes,) long.
    """
    scores = scores.detach().to("cpu", torch.float64)
    labels = labels.detach().cpu().long()
    if scores.dim() != 2 or scores.shape[0] != labels.numel():
        raise ValueError(f"`scores` must have shape (N, G) with N = {labels.numel()} labels, got "
                         f"{tuple(scores.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"`labels` must be in [0, {num_classes}), got values in [{int(labels.min())}, "
                         f"{int(labels.max())}]")
    sums = torch.zeros(num_classes, scores.shape[1], dtype=torch.float64).index_add_(0, labels, scores)
    counts = torch.bincount(labels, minlength=num_classes)
    return _means_of_sums(sums, counts), counts


def _means_of_sums(sums: Tensor, counts: Tensor) -> Tensor:
    """Per-class means (K, G) of per-class sums (K, G) and counts (K,); NaN rows for classes without images."""
    means = sums / counts[:, None].clamp(min=1)
    means[counts == 0] = float("nan")
    return means


def plot_group_scores(scores: Union[Tensor, Iterable[float]], *, ax=None, title: str = "Occluded Frequency",
                      xlabel: str = "frequency group (low → high)", path: Optional[str] = None):
    """Bar chart of per-group scores (Wang2020a Fig. 4), drawn with the Agg canvas (no display needed).

    Args:
        scores: (G,) scores of one image, or (N, G) (their mean is drawn).
        ax: a matplotlib Axes to draw into; a new Figure otherwise.
        path: if given, the figure is saved there (PNG by extension).

    Returns:
        The matplotlib Figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = torch.as_tensor(scores, dtype=torch.float64).detach().cpu()
    if values.dim() == 2:
        values = values.mean(0)
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"`scores` must have shape (G,) or (N, G), got {tuple(values.shape)}")
    if ax is None:
        figure = Figure(figsize=(6, 3))
        FigureCanvasAgg(figure)
        ax = figure.add_subplot(1, 1, 1)
    else:
        figure = ax.figure
    positions = range(values.numel())
    colors = ["tab:red" if v < 0 else "tab:blue" for v in values.tolist()]
    ax.bar(list(positions), values.tolist(), color=colors)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("logit drop")
    ax.set_title(title)
    if path is not None:
        figure.savefig(path, dpi=100, bbox_inches="tight")
    return figure
