"""D1 of Wang2020b (Wang et al. 2020, §3.3): low-pass the input before the model."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_floating, check_number
from ..spectral import low_high_split

__all__ = ["LowPassFilter"]


class LowPassFilter(nn.Module):
    """``LowPassFilter(model, radius)(x) == model(low_high_split(x, radius)[0])`` (Wang2020b D1).

    The input's spectrum is cut at Euclidean radius ``radius`` (bins, strict ``<``, centered
    spectrum, every channel alike) before the wrapped model sees it. Differentiable, so it can
    be the ``model`` of any torchattacks / AutoAttack attack (a gradient attack then sees the
    gradient of the filtered model; the paper notes D1 masks gradients, App. B). The low-pass
    image is not clipped to [0, 1], as in the paper.

    Args:
        model: the classifier (N, C, H, W) -> (N, K); stored as ``self.model`` (a submodule, so
            ``.eval()``, ``.to()`` and ``parameters()`` reach it). The wrapper starts in the model's
            train/eval mode.
        radius: cut-off in bins, > 0 (0 would remove the DC too and leave a zero image).

    Shape:
        input (N, C, H, W); output whatever ``model`` returns.
    """

    def __init__(self, model: nn.Module, radius: float):
        super().__init__()
        if not callable(model):
            raise TypeError(f"`model` must be a callable nn.Module, got {type(model).__name__}")
        self.model = model
        self.radius = check_number(radius, "radius", minimum=0.0, strict_minimum=True)
        # A new nn.Module starts in training mode; adopt the model's, or torchattacks (which restores
        # ``model.train()`` when the attacked module was training) would switch the wrapped model to train.
        if isinstance(model, nn.Module):
            self.training = model.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_floating(x, "x")
        return self.model(low_high_split(x, self.radius)[0])

    def extra_repr(self) -> str:
        return f"radius={self.radius}"
