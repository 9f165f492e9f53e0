"""OccludedFrequency: occlusion of groups of DCT frequencies (seed 001, Definition 1).

The score of a frequency group G for class c is the logit drop (eq. 7 of seed 001)::

    OF_G(x)_c = f(x)_c - f(IDCT(occlude_G(DCT(x))))_c,

with the orthonormal 2-D DCT of every channel (:func:`freqplug.spectral.dct2`). Groups of "the
same frequency" come from :func:`freqplug.spectral.dct_band_groups`: l_inf rings
``max(u, v) = k`` (the authors' code, default), diagonals ``u + v = k``, or any integer map.
Every group is scored, the highest ring included (the authors' loop stops one short).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Tuple, Union

import torch
from captum.attr._utils.attribution import PerturbationAttribution
from torch import Tensor

from .._validation import check_choice, check_images, check_labels, check_number, check_positive_int
from ..spectral import Players, dct2, dct_band_groups, idct2, players_from_map
from ._captum import (
    NullProgress,
    _expand_additional_forward_args,
    _expand_target,
    _format_additional_forward_args,
    _run_forward,
    progress,
)

MODES = ("occlude", "keep")
BASELINES = ("zero", "random")
GroupSpec = Union[str, Tensor, Players]


class OccludedFrequency(PerturbationAttribution):
    r"""Occluded Frequency attribution over DCT frequency groups (seed 001, Definition 1).

    Args:
        forward_func: the model or any callable returning (batch, ...) outputs (logits for the
            paper's score); never modified.
        groups: ``"ring"`` (default, max(u, v) = k), ``"diagonal"`` (u + v = k), an integer map
            (H, W) of group ids 0..G-1 over DCT coefficients, or a ``Players`` with layout ``"dct"``.
            Groups are numbered from the lowest frequency.
    """

    def __init__(self, forward_func: Callable, groups: GroupSpec = "ring") -> None:
        if not callable(forward_func):
            raise TypeError(f"`forward_func` must be callable, got {type(forward_func).__name__}")
        if isinstance(groups, str):
            check_choice(groups, "groups", ("ring", "diagonal"))
        elif isinstance(groups, Tensor):
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

    # ------------------------------------------------------------------ Captum API
    def attribute(  # type: ignore[override]
        self,
        inputs: Tensor,
        baselines: Union[str, Tensor] = "zero",
        target: Any = None,
        additional_forward_args: Any = None,
        perturbations_per_eval: int = 1,
        show_progress: bool = False,
        *,
        mode: str = "occlude",
        noise_std: float = 0.1,
        seed: int = 0,
    ) -> Tensor:
        r"""Occluded Frequency map in DCT layout.

        Args:
            inputs: images (N, C, H, W) in [0, 1].
            baselines: what replaces occluded DCT coefficients: ``"zero"`` (default), ``"random"``
                (i.i.d. N(0, noise_std²) coefficients, i.e. the DCT of white pixel noise of std
                ``noise_std``; one seeded draw per image, the same for every group), or images
                (N or 1, C, H, W) whose DCT coefficients are used.
            target: Captum target (int, tensor, list of ints or tuples); the selected output per
                example must be a scalar.
            additional_forward_args: extra ``forward_func`` arguments (expanded like Captum).
            perturbations_per_eval: groups per forward call (each call sees that many times N
                images); the result does not depend on it.
            show_progress: progress bar over forward calls.
            mode: ``"occlude"`` (default): score = f(x)_c - f(x with group occluded)_c;
                ``"keep"``: score = f(x with only the group kept)_c - f(x with every group occluded)_c.

        Returns:
            (N, H, W) in the input dtype, DCT layout ([0, 0] = DC): every coefficient carries the
            score of its group (Captum's feature-mask convention; the channels share a group).
        """
        scores = self.group_scores(inputs, baselines, target, additional_forward_args, perturbations_per_eval,
                                   show_progress, mode=mode, noise_std=noise_std, seed=seed)
        players = self.players(inputs.shape[-2], inputs.shape[-1])
        return players.expand(scores).to(inputs.dtype)

    def group_scores(
        self,
        inputs: Tensor,
        baselines: Union[str, Tensor] = "zero",
        target: Any = None,
        additional_forward_args: Any = None,
        perturbations_per_eval: int = 1,
        show_progress: bool = False,
        *,
        mode: str = "occlude",
        noise_std: float = 0.1,
        seed: int = 0,
    ) -> Tensor:
        """Per-group scores (N, G), group 0 = lowest frequency. Arguments as :meth:`attribute`."""
        check_images(inputs, "inputs")
        check_choice(mode, "mode", MODES)
        check_positive_int(perturbations_per_eval, "perturbations_per_eval")
        n, _, h, w = inputs.shape
        players = self.players(h, w)
        masks = players.masks(torch.eye(players.num_players, dtype=torch.bool)).to(inputs.device)  # (G, H, W)
        coefficients = dct2(inputs)
        fill = self._baseline_coefficients(inputs, baselines, noise_std, seed)
        args = _format_additional_forward_args(additional_forward_args)
        num_groups = players.num_players
        calls = 1 + -(-num_groups // perturbations_per_eval)
        bar = progress(desc=f"{self.get_name()} attribution", total=calls) if show_progress else NullProgress()
        with torch.no_grad():
            if mode == "occlude":
                reference = self._forward(inputs, target, args, n, 1)
            else:  # every group occluded: the image the baseline alone makes
                reference = self._forward(idct2(fill.expand_as(coefficients)), target, args, n, 1)
            bar.update()
            scores = reference.new_empty(n, num_groups)
            for start in range(0, num_groups, perturbations_per_eval):
                chosen = masks[start:start + perturbations_per_eval][:, None, None]  # (g, 1, 1, H, W)
                if mode == "occlude":
                    mixed = torch.where(chosen, fill, coefficients)
                else:
                    mixed = torch.where(chosen, coefficients, fill)
                g = chosen.shape[0]
                images = idct2(mixed.expand(g, *coefficients.shape)).reshape(g * n, *inputs.shape[1:])
                out = self._forward(images, target, args, n, g).reshape(g, n)
                scores[:, start:start + g] = (reference - out).T if mode == "occlude" else (out - reference).T
                bar.update()
        bar.close()
        return scores

    # ------------------------------------------------------------------ dataset helpers
    def class_average_scores(
        self,
        data: Union[Tuple[Tensor, Tensor], Iterable],
        num_classes: Optional[int] = None,
        *,
        baselines: Union[str, Tensor] = "zero",
        mode: str = "occlude",
        batch_size: int = 64,
        perturbations_per_eval: int = 1,
        noise_std: float = 0.1,
        seed: int = 0,
        show_progress: bool = True,
    ) -> Tuple[Tensor, Tensor]:
        """Scores of the true class averaged per class ("attribution shift", seed 001 Exp. IV / Fig. 1).

        Args:
            data: a pair (x (K, C, H, W), y (K,)) or an iterable / DataLoader of (x, y) batches.
            num_classes: rows of the result (default: max label + 1).
            batch_size: images per :meth:`group_scores` call for tensor data.

        Returns:
            ``(means, counts)``: means (num_classes, G) float64 (NaN for classes with no image),
            counts (num_classes,) long.
        """
        check_positive_int(batch_size, "batch_size")
        if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
            x, y = data
            check_images(x, "data")
            check_labels(y, "data labels", x.shape[0])
            batches: Iterable = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
        elif hasattr(data, "__iter__"):
            batches = data
        else:
            raise TypeError(f"`data` must be a pair (x, y) or an iterable of (x, y) batches, got {type(data).__name__}")
        sums: Optional[Tensor] = None
        counts: Optional[Tensor] = None
        index = 0
        bar = progress(desc=f"{self.get_name()} class averages", total=None) if show_progress else NullProgress()
        for batch in batches:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise TypeError("`data` batches must be (x, y) pairs")
            x, y = batch[0], batch[1]
            check_labels(y, "data labels", x.shape[0])
            scores = self.group_scores(x, baselines, y.to(x.device), None, perturbations_per_eval, False,
                                       mode=mode, noise_std=noise_std, seed=seed + index).to(torch.float64).cpu()
            index += x.shape[0]
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
        if num_classes is not None and sums.shape[0] > num_classes:
            raise ValueError(f"`data` labels reach {sums.shape[0] - 1} but num_classes={num_classes}")
        means = sums / counts[:, None].clamp(min=1)
        means[counts == 0] = float("nan")
        return means, counts

    # ------------------------------------------------------------------ internals
    def _forward(self, images: Tensor, target: Any, args: Optional[Tuple], n: int, repeats: int) -> Tensor:
        """Selected outputs of ``repeats`` stacked copies of an N-image batch -> (repeats * N,)."""
        rows_target = _expand_target(target, repeats) if repeats > 1 else target
        rows_args = _expand_additional_forward_args(args, repeats) if (args is not None and repeats > 1) else args
        out = _run_forward(self.forward_func, images, rows_target, rows_args)
        if not isinstance(out, Tensor):
            raise TypeError(f"`forward_func` must return a tensor, got {type(out).__name__}")
        if out.dim() == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.dim() != 1 or out.shape[0] != repeats * n:
            raise ValueError(
                f"`forward_func` output selected by `target` must be one scalar per example ({repeats * n},), got "
                f"shape {tuple(out.shape)}; pass `target` (a class index) for a classifier")
        return out.detach()

    def _baseline_coefficients(self, inputs: Tensor, baselines: Union[str, Tensor], noise_std: float,
                               seed: int) -> Tensor:
        """DCT coefficients that replace occluded ones, broadcastable to (N, C, H, W)."""
        if isinstance(baselines, Tensor):
            check_images(baselines, "baselines", check_range=False)
            n, c, h, w = inputs.shape
            if tuple(baselines.shape[1:]) != (c, h, w) or baselines.shape[0] not in (1, n):
                raise ValueError(f"`baselines` images must have shape ({n} or 1, {c}, {h}, {w}), "
                                 f"got {tuple(baselines.shape)}")
            return dct2(baselines.to(device=inputs.device, dtype=inputs.dtype))
        if not isinstance(baselines, str):
            raise TypeError("`baselines` must be 'zero', 'random' or a tensor of images, "
                            f"got {type(baselines).__name__}")
        check_choice(baselines, "baselines", BASELINES)
        if baselines == "zero":
            return inputs.new_zeros(1, *inputs.shape[1:])
        check_number(noise_std, "noise_std", minimum=0.0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"`seed` must be an int, got {type(seed).__name__}")
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(inputs.shape, generator=generator, dtype=torch.float64) * noise_std
        return noise.to(device=inputs.device, dtype=inputs.dtype)


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
