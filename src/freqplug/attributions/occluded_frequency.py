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
from captum._utils.common import (
    _expand_additional_forward_args,
    _expand_target,
    _format_additional_forward_args,
    _select_targets,
)
from captum._utils.progress import NullProgress, progress
from captum.attr._utils.attribution import PerturbationAttribution
from torch import Tensor

from .._batches import data_length, image_generator, iter_labelled_batches
from .._model import preserved_model_state
from .._validation import (
    check_budget,
    check_callable,
    check_choice,
    check_images,
    check_number,
    check_positive_int,
    check_seed,
)
from ..spectral import Players, apply_dct_mask, dct2, dct_band_groups, idct2, players_from_map
from ._forward import validate_target

MODES = ("occlude", "keep")
BASELINES = ("zero", "gaussian", "replacement")
#: Pixel (= orthonormal DCT) std of the ``"gaussian"`` baseline, as FrequencyShapley and SpectralBandShapley.
DEFAULT_NOISE_STD = 1.0
#: The deprecated ``"random"`` baseline keeps its old default std for its last release.
RANDOM_NOISE_STD = 0.1
GroupSpec = Union[str, Tensor, Players]


class OccludedFrequency(PerturbationAttribution):
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
        check_callable(forward_func, "forward_func")
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
        PerturbationAttribution.__init__(self, forward_func)
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
    def attribute(  # type: ignore[override]
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
        seed: int = 0,
        max_evaluations: Optional[float] = None,
    ) -> Tensor:
        r"""Occluded Frequency map in DCT layout (N, H, W). Arguments are those of :meth:`player_values`.

        Returns:
            (N, H, W) in the inputs' dtype, DCT layout ([0, 0] = DC): every coefficient carries the
            score of its group (Captum's feature-mask convention; the channels share a group).
        """
        scores = self.player_values(inputs, baselines, target, additional_forward_args, perturbations_per_eval,
                                    show_progress, mode=mode, noise_std=noise_std, seed=seed,
                                    max_evaluations=max_evaluations)
        players = self.players(inputs.shape[-2], inputs.shape[-1])
        return players.expand(scores.cpu()).to(device=inputs.device, dtype=inputs.dtype)

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
        seed: int = 0,
        max_evaluations: Optional[float] = None,
    ) -> Tensor:
        r"""Per-group scores (N, G), group 0 = lowest frequency (Wang2020a eq. 7).

        Makes ``N · (1 + G)`` model rows (:meth:`num_evaluations`), ``perturbations_per_eval · N``
        per forward call.

        Args:
            inputs: images (N, C, H, W) in [0, 1].
            baselines: what replaces occluded DCT coefficients: ``"zero"`` (default; ``None``, ``0``
                and ``0.0`` mean the same), ``"gaussian"`` (i.i.d. N(0, noise_std²) coefficients,
                i.e. the DCT of white pixel noise of std ``noise_std``; one draw per image from the
                generator of (``seed``, image index), the same for every group, so it does not
                depend on batching), ``"replacement"`` (the coefficients of another image of
                ``inputs``, a seeded derangement) or images (N or 1, C, H, W) whose DCT coefficients
                are used. ``"random"`` is the deprecated name of ``"gaussian"`` (it warns and keeps
                its old default ``noise_std=0.1``).
            target: Captum target (int, tensor, list of ints or tuples), each index within the
                forward output's shape (class indices in [0, num_classes)); the selected output per
                example must be a scalar.
            additional_forward_args: extra ``forward_func`` arguments (expanded like Captum).
            perturbations_per_eval: groups per forward call (each call sees that many times N
                images, Captum's meaning); the result does not depend on it.
            show_progress: progress bar over forward calls.
            mode: ``"occlude"`` (default): score = f(x)_c - f(x with group occluded)_c;
                ``"keep"``: score = f(x with only the group kept)_c - f(x with every group occluded)_c.
            noise_std: std of the ``"gaussian"`` baseline (default 1.0, the pixel std that
                FrequencyShapley and SpectralBandShapley use; OccludedFrequency's old ``"random"``
                default was 0.1).
            seed: seeds the Gaussian / replacement baselines.
            max_evaluations: refuse calls above this many model rows (None: the library default;
                ``float("inf")`` for no limit).

        Returns:
            Scores (N, G) in the inputs' dtype and device.
        """
        return self._player_values(inputs, baselines, target, additional_forward_args, perturbations_per_eval,
                                   show_progress, mode=mode, noise_std=noise_std, seed=seed,
                                   max_evaluations=max_evaluations, first_index=0)

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
        seed: int = 0,
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
        means = sums / counts[:, None].clamp(min=1)
        means[counts == 0] = float("nan")
        return means, counts

    # ------------------------------------------------------------------ internals
    def _player_values(self, inputs: Tensor, baselines: Any, target: Any, additional_forward_args: Any,
                       perturbations_per_eval: int, show_progress: bool, *, mode: str, noise_std: Optional[float],
                       seed: int, max_evaluations: Optional[float], first_index: int) -> Tensor:
        check_images(inputs, "inputs")
        check_choice(mode, "mode", MODES)
        check_positive_int(perturbations_per_eval, "perturbations_per_eval")
        n, _, h, w = inputs.shape
        target = validate_target(target, n)
        if isinstance(target, int) and target < 0:
            raise ValueError(f"`target` must be a class index >= 0, got {target} (negative indices would silently "
                             "count from the last class)")
        players = self.players(h, w)
        num_groups = players.num_players
        check_budget(n * (1 + num_groups), max_evaluations, f"{self.get_name()} on {n} image(s) x {num_groups} groups")
        masks = players.masks(torch.eye(num_groups, dtype=torch.bool)).to(inputs.device)  # (G, H, W)
        fill = self._baseline_coefficients(inputs, baselines, noise_std, seed, first_index)
        args = _format_additional_forward_args(additional_forward_args)
        calls = 1 + -(-num_groups // perturbations_per_eval)
        bar = progress(desc=f"{self.get_name()} attribution", total=calls) if show_progress else NullProgress()
        with torch.no_grad(), preserved_model_state(self.forward_func, fork_rng=True):
            if mode == "occlude":
                reference = self._forward(inputs, target, args, n, 1)
            else:  # every group occluded: the image the baseline alone makes
                reference = self._forward(idct2(fill.expand(inputs.shape)), target, args, n, 1)
            bar.update()
            scores = torch.empty(n, num_groups, dtype=torch.float64, device=reference.device)
            for start in range(0, num_groups, perturbations_per_eval):
                chosen = masks[start:start + perturbations_per_eval][:, None, None]  # (g, 1, 1, H, W)
                g = chosen.shape[0]
                images = apply_dct_mask(inputs, chosen, fill, keep=mode == "keep").reshape(g * n, *inputs.shape[1:])
                out = self._forward(images, target, args, n, g).reshape(g, n)
                scores[:, start:start + g] = ((reference - out) if mode == "occlude" else (out - reference)).T
                bar.update()
        bar.close()
        return scores.to(device=inputs.device, dtype=inputs.dtype)

    def _forward(self, images: Tensor, target: Any, args: Optional[Tuple], n: int, repeats: int) -> Tensor:
        """Selected outputs of ``repeats`` stacked copies of an N-image batch -> float64 (repeats * N,)."""
        rows_target = _expand_target(target, repeats) if repeats > 1 else target
        rows_args = _expand_additional_forward_args(args, repeats) if (args is not None and repeats > 1) else args
        out = self.forward_func(images, *rows_args) if rows_args else self.forward_func(images)
        if not isinstance(out, Tensor):
            raise TypeError(f"`forward_func` must return a tensor, got {type(out).__name__}")
        if out.dim() == 0 or out.shape[0] != repeats * n:
            raise ValueError(f"`forward_func` must return one output row per image ({repeats * n}), "
                             f"got shape {tuple(out.shape)}")
        if not bool(torch.isfinite(out.detach()).all()):
            raise ValueError(f"`forward_func` returned {int((~torch.isfinite(out.detach())).sum())} NaN or infinite "
                             "output value(s); scores computed from them would be meaningless")
        _check_target_range(target, out.shape)
        if rows_target is not None:
            out = _select_targets(out, rows_target)
        if out.dim() == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.dim() != 1 or out.shape[0] != repeats * n:
            raise ValueError(
                f"`forward_func` output selected by `target` must be one scalar per example ({repeats * n},), got "
                f"shape {tuple(out.shape)}; pass `target` (a class index) for a classifier")
        return out.detach().to(torch.float64)

    def _baseline_coefficients(self, inputs: Tensor, baselines: Any, noise_std: Optional[float], seed: int,
                               first_index: int) -> Tensor:
        """DCT coefficients that replace occluded ones, broadcastable to (N, C, H, W)."""
        check_seed(seed, allow_none=False)
        if baselines is None or (isinstance(baselines, (int, float)) and not isinstance(baselines, bool)
                                 and baselines == 0):
            baselines = "zero"
        if isinstance(baselines, Tensor):
            check_images(baselines, "baselines", check_range=False)
            n, c, h, w = inputs.shape
            if tuple(baselines.shape[1:]) != (c, h, w) or baselines.shape[0] not in (1, n):
                raise ValueError(f"`baselines` images must have shape ({n} or 1, {c}, {h}, {w}), "
                                 f"got {tuple(baselines.shape)}")
            return dct2(baselines.to(device=inputs.device, dtype=inputs.dtype))
        if not isinstance(baselines, str):
            raise TypeError("`baselines` must be 'zero' (or None/0/0.0), 'gaussian', 'replacement' or a tensor of "
                            f"images, got {type(baselines).__name__} {baselines!r}")
        if baselines == "random":
            warnings.warn("OccludedFrequency baselines='random' is deprecated: use baselines='gaussian' (the same "
                          f"draw; note its default noise_std is {DEFAULT_NOISE_STD}, 'random' used "
                          f"{RANDOM_NOISE_STD})", DeprecationWarning, stacklevel=4)
            baselines = "gaussian"
            noise_std = RANDOM_NOISE_STD if noise_std is None else noise_std
        check_choice(baselines, "baselines", BASELINES)
        if baselines == "zero":
            return inputs.new_zeros(1, *inputs.shape[1:])
        n = inputs.shape[0]
        if baselines == "replacement":
            if n < 2:
                raise ValueError("`baselines`='replacement' needs at least 2 images (each image's occluded "
                                 f"coefficients come from another image), got {n}")
            order = torch.randperm(n, generator=image_generator(seed, first_index))
            partner = torch.empty(n, dtype=torch.long)
            partner[order] = order.roll(-1)  # one cycle through a random order: nobody is its own partner
            return dct2(inputs[partner.to(inputs.device)])
        noise_std = DEFAULT_NOISE_STD if noise_std is None else noise_std
        check_number(noise_std, "noise_std", minimum=0.0)
        # One generator per image, keyed by its index in the data: the draw does not depend on batching.
        noise = torch.stack([torch.randn(inputs.shape[1:], generator=image_generator(seed, first_index + i),
                                         dtype=torch.float64) for i in range(n)]) * noise_std
        return noise.to(device=inputs.device, dtype=inputs.dtype)


def _check_target_range(target: Any, output_shape: torch.Size) -> None:
    """Refuse target indices outside the forward output (negative ones included: they would wrap around)."""
    if target is None:
        return
    if len(output_shape) < 2:
        raise ValueError(f"`target` selects an output column but `forward_func` returns shape {tuple(output_shape)} "
                         "(one value per example); pass target=None")
    width = int(output_shape[1])
    if isinstance(target, int):
        indices = [target]
    elif isinstance(target, Tensor):
        indices = [int(target.min()), int(target.max())] if target.numel() else []
    elif isinstance(target, tuple):
        indices = []
        for axis, index in enumerate(target):
            size = int(output_shape[1 + axis]) if 1 + axis < len(output_shape) else 0
            if not 0 <= index < size:
                raise ValueError(f"`target` index {index} on output axis {1 + axis} must be in [0, {size})")
        return
    else:  # list of ints or tuples
        flat = [t for t in target if not isinstance(t, tuple)]
        for t in target:
            if isinstance(t, tuple):
                _check_target_range(t, output_shape)
        indices = [int(t) for t in flat]
    for index in indices:
        if not 0 <= index < width:
            raise ValueError(f"`target` must hold class indices in [0, {width}) (the forward output has {width} "
                             f"columns), got {index}")


def plot_group_scores(scores: Union[Tensor, Iterable[float]], *, ax=None, title: str = "Occluded Frequency",
                      xlabel: str = "frequency group (low → high)", path: Optional[str] = None):
    """Bar chart of per-group scores (seed 001 Fig. 4), drawn with the Agg canvas (no display needed).

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
