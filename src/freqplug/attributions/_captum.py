"""The one place freqplug touches Captum's private helpers (``captum._utils``).

Captum expands ``target`` and ``additional_forward_args`` to repeated copies of the batch;
freqplug batches rows of different images (and coalitions) together, so each row picks its
example's target and tensor arguments by index instead (:func:`rows_target`,
:func:`rows_forward_args`). Keeping every ``captum._utils`` import here means a Captum upgrade
that moves a private helper breaks one module, not three.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from captum._utils.common import (  # noqa: F401  (re-exported for the attribution modules)
    _expand_additional_forward_args,
    _expand_target,
    _format_additional_forward_args,
    _format_tensor_into_tuples,
    _run_forward,
    _select_targets,
)
from captum._utils.progress import NullProgress, progress

TargetType = Any

__all__ = [
    "NullProgress",
    "TargetType",
    "check_target_range",
    "format_forward_args",
    "progress",
    "rows_forward_args",
    "rows_target",
    "select_targets",
    "validate_target",
]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_index_tuple(value, name: str = "target") -> None:
    if not value or not all(_is_int(t) for t in value):
        raise TypeError(f"`{name}` tuple must hold ints (one index per output dim after the batch), got {value!r}")
    if min(value) < 0:
        raise ValueError(f"`{name}` must hold non-negative output indices, got {value!r}")


def validate_target(target: TargetType, batch_size: int, name: str = "target") -> TargetType:
    """Check Captum's target forms and normalize them.

    Accepted: None, an int, a tuple of ints (an index into outputs with more than 2 dims), a 0-d or
    (N,) integer tensor, a list of N ints or N tuples. Negative indices are refused here (Captum
    would silently wrap ``-1`` to the last class); indices past the output width are refused on
    the first forward by :func:`check_target_range`.

    Returns:
        None, an int, a tuple, a (N,) long tensor or a list of N ints/tuples.
    """
    if target is None:
        return None
    if isinstance(target, bool):
        raise TypeError(f"`{name}` must be an int class index, got a bool")
    if _is_int(target):
        if target < 0:
            raise ValueError(f"`{name}` must be a non-negative output index, got {target}")
        return target
    if isinstance(target, tuple):
        _check_index_tuple(target, name)
        return target
    if isinstance(target, torch.Tensor):
        if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
            raise TypeError(f"`{name}` tensor must hold integer class indices, got dtype {target.dtype}")
        if target.dim() == 0:
            return validate_target(int(target), batch_size, name)
        if target.dim() != 1 or target.shape[0] != batch_size:
            raise ValueError(
                f"`{name}` tensor must be 0-d or have shape ({batch_size},) (one index per example), "
                f"got shape {tuple(target.shape)}"
            )
        target = target.detach().to(torch.long)
        if target.numel() and int(target.min()) < 0:
            raise ValueError(f"`{name}` must hold non-negative output indices, got minimum {int(target.min())}")
        return target
    if isinstance(target, list):
        if len(target) != batch_size:
            raise ValueError(f"`{name}` list must have one entry per example ({batch_size}), got {len(target)}")
        if all(_is_int(t) for t in target):
            if target and min(target) < 0:
                raise ValueError(f"`{name}` must hold non-negative output indices, got minimum {min(target)}")
            return list(target)
        if all(isinstance(t, tuple) for t in target):
            for t in target:
                _check_index_tuple(t, name)
            return list(target)
        raise TypeError(f"`{name}` list must hold ints or tuples of ints, got {target!r}")
    raise TypeError(
        f"`{name}` must be None, an int, a tuple, an integer tensor or a list, got {type(target).__name__}"
    )


def check_target_range(output: torch.Tensor, target: TargetType, name: str = "target") -> None:
    """Refuse targets past the forward output's width (Captum would raise a bare IndexError).

    An int (or an (N,) tensor / list of ints) indexes the last output dim, as Captum's
    ``_select_targets`` does; a tuple indexes the dims after the batch, in order.
    """
    if target is None:
        return
    if isinstance(target, torch.Tensor):
        checks = [(int(target.max()),)] if target.numel() else []
    elif isinstance(target, (int, tuple)):
        checks = [target]
    else:
        checks = list(target)
    per_example = tuple(output.shape[1:])
    for index in checks:
        if isinstance(index, int):
            dims = per_example[-1:]
            index = (index,)
        else:
            dims = per_example[:len(index)]
        if len(dims) < len(index):
            raise ValueError(
                f"`{name}` {index!r} indexes {len(index)} output dim(s) but the forward function's output per "
                f"example has shape {per_example} ({len(per_example)} dim(s))"
            )
        for value, size in zip(index, dims, strict=True):
            if not 0 <= value < size:
                raise ValueError(
                    f"`{name}` must hold indices in [0, {size}) for this forward function (its output per "
                    f"example has shape {per_example}), got {value}"
                )


def rows_target(target: TargetType, image_index: torch.Tensor) -> TargetType:
    """The target of every row, given the example each row belongs to."""
    if isinstance(target, torch.Tensor):
        return target.to(image_index.device)[image_index]
    if isinstance(target, list):
        return [target[int(i)] for i in image_index.tolist()]
    return target


def rows_forward_args(additional_forward_args: Optional[Tuple], image_index: torch.Tensor,
                      batch_size: int, name: str = "additional_forward_args") -> Optional[Tuple]:
    """Index tensor arguments (first dimension = the batch) per row; pass non-tensors and 0-d tensors unchanged.

    Raises:
        ValueError: a tensor argument whose first dimension is not the batch size (Captum would
            repeat it along dim 0 as if it were per-example, which is rarely what was meant).
    """
    if additional_forward_args is None:
        return None
    out = []
    for position, arg in enumerate(additional_forward_args):
        if isinstance(arg, torch.Tensor) and arg.dim() > 0:
            if arg.shape[0] != batch_size:
                raise ValueError(
                    f"tensor {position} of `{name}` has first dimension {arg.shape[0]}, expected the batch size "
                    f"{batch_size} (tensor arguments are per-example, as in Captum; wrap other tensors in the "
                    "forward function)"
                )
            arg = arg[image_index.to(arg.device)]
        out.append(arg)
    return tuple(out)


def format_forward_args(additional_forward_args: Any) -> Optional[Tuple]:
    """Captum's normalization: None stays None, a non-tuple becomes a 1-tuple."""
    return _format_additional_forward_args(additional_forward_args)


def select_targets(output: torch.Tensor, target: TargetType) -> torch.Tensor:
    """Captum's target selection (the same rules as every Captum attribution method)."""
    return _select_targets(output, target)


def format_inputs(inputs: Any) -> Tuple[torch.Tensor, ...]:
    """Captum's tensor-or-tuple normalization: a tensor becomes a 1-tuple."""
    return _format_tensor_into_tuples(inputs)
