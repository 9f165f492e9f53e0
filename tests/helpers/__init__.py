"""Shared test helpers: tiny real networks, forward counters, misbehaving models and an
independent exact-Shapley oracle (pure Python enumeration, no freqplug code)."""

from __future__ import annotations

import itertools
import math
from typing import Callable

import torch
from torch import nn

from .nets import linear_model, tiny_cnn

__all__ = ["CountingModel", "NaNModel", "exact_shapley_oracle", "linear_model", "tiny_cnn", "snapshot_model",
           "assert_model_unchanged"]


class CountingModel(nn.Module):
    """Wraps a model and counts forward calls and rows (images) seen."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.calls = 0
        self.rows = 0
        self.batch_sizes = []

    def forward(self, x, *args):
        self.calls += 1
        self.rows += int(x.shape[0])
        self.batch_sizes.append(int(x.shape[0]))
        return self.model(x, *args)


class NaNModel(nn.Module):
    """A real network whose output is NaN (or inf) on every row: a model gone wrong."""

    def __init__(self, model: nn.Module, value: float = float("nan")):
        super().__init__()
        self.model = model
        self.value = value

    def forward(self, x, *args):
        out = self.model(x, *args)
        return out + self.value  # keeps the graph (gradients exist) but every value is non-finite


def exact_shapley_oracle(value: Callable[[frozenset], float], num_players: int) -> list:
    """Shapley values by enumerating every coalition (Shapley 1953), in float64 Python arithmetic."""
    players = range(num_players)
    cache = {}

    def v(coalition):
        if coalition not in cache:
            cache[coalition] = float(value(coalition))
        return cache[coalition]

    phi = []
    for i in players:
        others = [j for j in players if j != i]
        total = 0.0
        for size in range(num_players):
            weight = math.factorial(size) * math.factorial(num_players - size - 1) / math.factorial(num_players)
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                total += weight * (v(s | {i}) - v(s))
        phi.append(total)
    return phi


def snapshot_model(model: nn.Module) -> dict:
    """Everything a freqplug call must leave as it was: per-module modes, requires_grad, grads, weights."""
    return {
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def assert_model_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot_model(model)
    assert after["modes"] == before["modes"], "train/eval flags changed"
    assert after["requires_grad"] == before["requires_grad"], "requires_grad changed"
    for g0, g1 in zip(before["grads"], after["grads"]):
        assert (g0 is None) == (g1 is None), ".grad appeared or vanished"
        if g0 is not None:
            assert torch.equal(g0, g1), ".grad changed"
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), f"state entry {key} changed"
