"""Captum conventions for perturbation rows that mix several examples.

Captum expands ``target`` and ``additional_forward_args`` to repeated copies of the batch;
freqplug batches rows of different images (and permutations) together, so each row picks
its example's target and tensor arguments by index instead.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
from captum._utils.common import _format_additional_forward_args, _run_forward

TargetType = Any


def validate_target(target: TargetType, batch_size: int) -> TargetType:
    """Check Captum's target forms: None, int, 0-dim or (N,) tensor, list of N ints/tuples, tuple."""
    if target is None or (isinstance(target, int) and not isinstance(target, bool)):
        return target
    if isinstance(target, tuple):
        if not all(isinstance(t, int) for t in target):
            raise TypeError(f"`target` tuple must hold ints (an output index), got {target!r}")
        return target
    if isinstance(target, torch.Tensor):
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise TypeError(f"`target` tensor must hold integer class indices, got dtype {target.dtype}")
        if target.numel() == 1:
            return int(target.reshape(()))
        if target.dim() != 1 or target.shape[0] != batch_size:
            raise ValueError(
                f"`target` tensor must be a scalar or have shape ({batch_size},) (one per example), "
                f"got shape {tuple(target.shape)}"
            )
        return target
    if isinstance(target, list):
        if len(target) != batch_size:
            raise ValueError(f"`target` list must have one entry per example ({batch_size}), got {len(target)}")
        return target
    raise TypeError(f"`target` must be None, an int, a tuple, a tensor or a list, got {type(target).__name__}")


def rows_target(target: TargetType, image_index: torch.Tensor) -> TargetType:
    """The target of every row, given the example each row belongs to."""
    if isinstance(target, torch.Tensor):
        return target.to(image_index.device)[image_index]
    if isinstance(target, list):
        return [target[int(i)] for i in image_index.tolist()]
    return target


def rows_forward_args(additional_forward_args: Optional[Tuple], image_index: torch.Tensor,
                      batch_size: int) -> Optional[Tuple]:
    """Index tensor arguments whose first dimension is the batch; pass the rest unchanged."""
    if additional_forward_args is None:
        return None
    out = []
    for arg in additional_forward_args:
        if isinstance(arg, torch.Tensor) and arg.dim() > 0:
            if arg.shape[0] != batch_size:
                raise ValueError(
                    f"tensor in `additional_forward_args` has first dimension {arg.shape[0]}, "
                    f"expected the batch size {batch_size}"
                )
            arg = arg[image_index.to(arg.device)]
        out.append(arg)
    return tuple(out)


def format_forward_args(additional_forward_args: Any) -> Optional[Tuple]:
    return _format_additional_forward_args(additional_forward_args)


def check_target_range(output: torch.Tensor, target: TargetType) -> None:
    """Raise a clear error when an int target is out of range for the model's output."""
    if output.dim() < 2 or target is None or isinstance(target, tuple):
        return
    num_outputs = output.shape[1]
    values = target.tolist() if isinstance(target, torch.Tensor) else ([target] if isinstance(target, int) else target)
    flat = [t for t in values if isinstance(t, int)]
    if flat and (min(flat) < 0 or max(flat) >= num_outputs):
        raise ValueError(
            f"`target` must hold indices in [0, {num_outputs}) for this model's output of shape "
            f"{tuple(output.shape)}, got values in [{min(flat)}, {max(flat)}]"
        )


def run_rows(forward_func: Callable, images: torch.Tensor, image_index: torch.Tensor, target: TargetType,
             additional_forward_args: Optional[Tuple], batch_size: int, check_range: bool = False) -> torch.Tensor:
    """Forward a chunk of rows and select each row's target -> (R,) values."""
    args = rows_forward_args(additional_forward_args, image_index, batch_size)
    row_target = rows_target(target, image_index)
    if check_range:
        raw = forward_func(*((images,) + (args or ())))
        check_target_range(raw, target)
        from captum._utils.common import _select_targets

        output = _select_targets(raw, row_target)
    else:
        output = _run_forward(forward_func, images, row_target, args)
    output = output.detach() if isinstance(output, torch.Tensor) else torch.as_tensor(output)
    if output.numel() != images.shape[0]:
        raise ValueError(
            f"the forward function must return one value per example after `target` selection; got shape "
            f"{tuple(output.shape)} for {images.shape[0]} examples (pass `target` for multi-output models; "
            "forward functions that return one scalar per batch are not supported)"
        )
    return output.reshape(-1)
