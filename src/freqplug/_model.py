"""The user's model at ground level: keep its state, read its device/dtype, check its outputs, predict.

Every public entry point that calls a model goes through these helpers, so the conventions (what
is restored, what counts as a bad output, how labels are checked against the output width) are
written once.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Tuple

import torch
from torch import nn

from ._validation import check_labels, check_positive_int


def _model_name(model) -> str:
    return type(model).__name__ if isinstance(model, nn.Module) else getattr(model, "__name__", type(model).__name__)


@contextmanager
def preserved_model_state(model, *, eval_mode: bool = False, freeze: bool = False,
                          fork_rng: bool = False) -> Iterator[None]:
    """Leave the user's model as it was: every module's train/eval flag, every parameter's
    ``requires_grad`` and ``.grad``.

    ``model.train(flag)`` would set one flag on all submodules and lose per-module modes (a frozen
    BatchNorm in a training model, say); this puts each module back as it was.

    Args:
        model: an ``nn.Module`` (anything else, e.g. a plain function, is left alone).
        eval_mode: call ``model.eval()`` inside the block.
        freeze: set ``requires_grad=False`` on every parameter inside the block, so code that calls
            ``backward()`` on the inputs does not write ``.grad`` of the user's parameters.
        fork_rng: fork torch's global RNG (CPU and the model's CUDA device), so nothing inside the
            block changes the user's random stream.
    """
    if not isinstance(model, nn.Module):
        if fork_rng:
            with torch.random.fork_rng(devices=[]):
                yield
        else:
            yield
        return
    modes = [(module, module.training) for module in model.modules()]
    parameters = list(model.parameters())
    flags = [p.requires_grad for p in parameters]
    grads = [p.grad for p in parameters]
    device, _ = model_device_dtype(model)
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices, enabled=fork_rng):
            if eval_mode:
                model.eval()
            if freeze:
                for parameter in parameters:
                    parameter.requires_grad_(False)
            yield
    finally:
        for module, training in modes:
            module.training = training
        for parameter, flag, grad in zip(parameters, flags, grads):
            parameter.requires_grad_(flag)
            parameter.grad = grad


def model_device_dtype(model, default_device: Optional[torch.device] = None,
                       default_dtype: torch.dtype = torch.float32) -> Tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first floating parameter (or buffer).

    A model without parameters (a function, a parameter-free module) gets the defaults
    (``default_device`` or CPU).
    """
    if isinstance(model, nn.Module):
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.dtype.is_floating_point:
                return tensor.device, tensor.dtype
    return torch.device(default_device or "cpu"), default_dtype


def check_logits(output, model=None, *, batch_size: Optional[int] = None, labels: Optional[torch.Tensor] = None,
                 labels_name: str = "labels", name: str = "model") -> torch.Tensor:
    """Check a classifier's output: a finite (N, K) tensor, and ``labels`` in [0, K).

    Call it on the first forward of every public call: a model that returns NaN makes every
    downstream number meaningless (an attack "succeeds", an accuracy reads 1.0), and labels
    outside the output width silently score as wrong predictions.

    Args:
        output: what the model returned.
        model: the model (only for its name in the message).
        batch_size: expected N.
        labels: class labels (N,) or targets to check against the output width K.
        labels_name: the argument name the user passed ``labels`` as.
        name: how to call the model in messages.

    Returns:
        ``output`` unchanged.
    """
    who = f"`{name}` ({_model_name(model)})" if model is not None else f"`{name}`"
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"{who} must return a tensor of logits (N, num_classes), got {type(output).__name__}")
    if output.dim() != 2:
        raise ValueError(f"{who} must return logits of shape (N, num_classes), got shape {tuple(output.shape)}")
    if batch_size is not None and output.shape[0] != batch_size:
        raise ValueError(f"{who} returned {output.shape[0]} rows for a batch of {batch_size} images")
    if not output.dtype.is_floating_point:
        raise TypeError(f"{who} must return floating-point logits, got dtype {output.dtype}")
    finite = torch.isfinite(output.detach())
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{who} returned {bad} NaN or infinite output value(s) (of {output.numel()}); "
                         "results computed from them would be meaningless")
    if labels is not None:
        check_labels(labels, labels_name, output.shape[0] if batch_size is None else batch_size,
                     num_classes=int(output.shape[1]))
    return output


def num_classes_of(model: Callable, example: torch.Tensor, *, labels: Optional[torch.Tensor] = None,
                   labels_name: str = "labels", name: str = "model") -> int:
    """Output width K of ``model`` from one forward of ``example[:1]`` (no grad), checked like :func:`check_logits`."""
    with torch.no_grad():
        output = model(example[:1])
    check_logits(output, model, batch_size=1, name=name)
    num_classes = int(output.shape[1])
    if labels is not None:
        check_labels(labels, labels_name, labels.shape[0], num_classes=num_classes)
    return num_classes


def predict(model: Callable, x: torch.Tensor, *, batch_size: int = 256, device: Optional[torch.device] = None,
            labels: Optional[torch.Tensor] = None, labels_name: str = "labels", name: str = "model") -> torch.Tensor:
    """Predicted classes (N,) long on CPU, in chunks of ``batch_size`` images, without gradients.

    Every chunk's output is checked with :func:`check_logits` (finite, (B, K)); ``labels`` are
    checked against K on the first chunk.
    """
    check_positive_int(batch_size, "batch_size")
    if device is None:
        device, _ = model_device_dtype(model, x.device)
    _, dtype = model_device_dtype(model, default_dtype=x.dtype)
    if labels is not None:
        check_labels(labels, labels_name, x.shape[0])
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start:start + batch_size].to(device=device, dtype=dtype)
            logits = check_logits(model(chunk), model, batch_size=chunk.shape[0], name=name)
            if start == 0 and labels is not None:
                check_labels(labels, labels_name, x.shape[0], num_classes=int(logits.shape[1]))
            out.append(logits.argmax(dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy(model: Callable, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256,
             device: Optional[torch.device] = None, name: str = "model", labels_name: str = "y") -> float:
    """Fraction of ``x`` classified as ``y`` (labels checked against the model's output width)."""
    check_labels(y, labels_name, x.shape[0])
    predictions = predict(model, x, batch_size=batch_size, device=device, labels=y, labels_name=labels_name,
                          name=name)
    return float((predictions == y.cpu()).double().mean()) if y.numel() else float("nan")
