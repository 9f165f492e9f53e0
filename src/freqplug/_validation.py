"""Shared input checks.

Every public entry point validates its tensors here so that bad input fails with a
message that names the argument, says what was expected and shows what came.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

#: Values up to this far outside [0, 1] are accepted as rounding error.
RANGE_TOLERANCE = 1e-5

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_floating(value: torch.Tensor, name: str) -> torch.Tensor:
    check_tensor(value, name)
    if value.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"`{name}` must be a floating-point tensor (float16/bfloat16/float32/float64), "
            f"got dtype {value.dtype}"
        )
    return value


def check_finite(value: torch.Tensor, name: str) -> torch.Tensor:
    if value.numel() and not bool(torch.isfinite(value.detach()).all()):
        n_bad = int((~torch.isfinite(value.detach())).sum())
        raise ValueError(f"`{name}` contains {n_bad} NaN or infinite value(s)")
    return value


def check_ndim(value: torch.Tensor, name: str, ndim: int, layout: str) -> torch.Tensor:
    if value.dim() != ndim:
        raise ValueError(
            f"`{name}` must have {ndim} dimensions {layout}, got shape {tuple(value.shape)}"
        )
    return value


def check_images(
    value,
    name: str = "inputs",
    *,
    check_range: bool = True,
    min_size: int = 1,
    tolerance: float = RANGE_TOLERANCE,
) -> torch.Tensor:
    """Check an image batch: float tensor of shape (N, C, H, W), finite, in [0, 1].

    Returns the tensor unchanged (never a copy), so callers keep the user's object.
    """
    check_floating(value, name)
    check_ndim(value, name, 4, "(N, C, H, W)")
    n, c, h, w = value.shape
    if n == 0 or c == 0:
        raise ValueError(f"`{name}` must hold at least one image with one channel, got shape {tuple(value.shape)}")
    if h < min_size or w < min_size:
        raise ValueError(
            f"`{name}` images must be at least {min_size}x{min_size}, got {h}x{w}"
        )
    check_finite(value, name)
    if check_range:
        lo, hi = float(value.detach().min()), float(value.detach().max())
        if lo < -tolerance or hi > 1 + tolerance:
            raise ValueError(
                f"`{name}` must hold images in [0, 1] (models carry their own normalization), "
                f"got values in [{lo:.4g}, {hi:.4g}]"
            )
    return value


def check_labels(value, name: str, batch_size: int, num_classes: Optional[int] = None) -> torch.Tensor:
    """Check integer class labels of shape (N,) with values in [0, num_classes)."""
    check_tensor(value, name)
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(f"`{name}` must be an integer tensor of class indices, got dtype {value.dtype}")
    if value.dim() != 1:
        raise ValueError(f"`{name}` must have shape (N,), got shape {tuple(value.shape)}")
    check_same_batch(value.shape[0], batch_size, name)
    if value.numel():
        lo, hi = int(value.min()), int(value.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else "[0, inf)"
            raise ValueError(f"`{name}` must hold class indices in {bound}, got values in [{lo}, {hi}]")
    return value


def check_same_batch(size: int, expected: int, name: str, reference: str = "inputs") -> None:
    if size != expected:
        raise ValueError(
            f"`{name}` has batch size {size} but `{reference}` has batch size {expected}; they must agree"
        )


def check_same_shape(value: torch.Tensor, reference: torch.Tensor, name: str, reference_name: str) -> None:
    if value.shape != reference.shape:
        raise ValueError(
            f"`{name}` must have the shape of `{reference_name}` {tuple(reference.shape)}, "
            f"got {tuple(value.shape)}"
        )


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return value


def check_number(value, name: str, *, minimum: Optional[float] = None, maximum: Optional[float] = None,
                 strict_minimum: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"`{name}` must be finite, got {value}")
    if minimum is not None and (value < minimum or (strict_minimum and value == minimum)):
        op = ">" if strict_minimum else ">="
        raise ValueError(f"`{name}` must be {op} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, got {value}")
    return value


def check_choice(value, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {value!r}")
    return value


def spatial_shape(value: torch.Tensor) -> Tuple[int, int]:
    return int(value.shape[-2]), int(value.shape[-1])


def check_callable(value, name: str = "forward_func"):
    """Check that ``value`` can be called (a model or a forward function)."""
    if not callable(value):
        raise TypeError(f"`{name}` must be callable (a model or a function), got {type(value).__name__}")
    return value


def check_seed(value, name: str = "seed", *, allow_none: bool = True) -> Optional[int]:
    """Check a random seed: a non-negative int (or None where a fresh seed is allowed).

    Floats are refused rather than truncated (``seed=1.7`` would silently be seed 1).
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        allowed = "an int or None" if allow_none else "an int"
        raise TypeError(f"`{name}` must be {allowed}, got {type(value).__name__} {value!r}")
    if not 0 <= value < 2**63:
        raise ValueError(f"`{name}` must be in [0, 2**63), got {value}")
    return value


#: Default ceiling on the model evaluations one call may spend (about an hour for a ResNet-18 on 2 CPU cores).
DEFAULT_MAX_EVALUATIONS = 2_000_000


def check_budget(num_evaluations: int, max_evaluations: Optional[int], what: str, hint: str = "") -> int:
    """Refuse a call that would spend more than ``max_evaluations`` model evaluations.

    ``max_evaluations=None`` uses :data:`DEFAULT_MAX_EVALUATIONS`; pass ``float("inf")`` (or a larger
    int) to run a bigger budget on purpose. Returns ``num_evaluations``.
    """
    limit = DEFAULT_MAX_EVALUATIONS if max_evaluations is None else max_evaluations
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit != limit or limit <= 0:
        raise ValueError(f"`max_evaluations` must be a positive number (or inf), got {max_evaluations!r}")
    if num_evaluations > limit:
        raise ValueError(
            f"{what} would make {num_evaluations:,} model evaluations, more than `max_evaluations`={limit:,.0f}"
            + (f"; {hint}" if hint else "")
            + "; pass a larger `max_evaluations` to run it anyway"
        )
    return num_evaluations
