"""Keeping what the user owns as it was."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def preserved_module_modes(model) -> Iterator[None]:
    """Restore the train/eval flag of every submodule of ``model`` on exit.

    ``model.train(flag)`` would set one flag on all submodules and lose per-module modes (a
    frozen BatchNorm in a training model, say); this puts each module back as it was.
    Anything that is not an ``nn.Module`` (a plain forward function) is left alone.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
