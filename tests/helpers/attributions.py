"""Helpers for the attribution tests: conformance cases and games with known Shapley values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import torch


@dataclass
class AttributionCase:
    """One attribution class in the conformance suite (kornia BaseTester style).

    Attributes:
        cls: the class, constructed as ``cls(forward_func, **init)``.
        init: extra constructor keyword arguments.
        call: ``attribute()`` keyword arguments that keep a call small (a few players, few samples).
        players: ``players(explainer, height, width)`` -> the partition :meth:`player_values` refers to
            (default: ``explainer.players(height, width)``).
    """

    cls: type
    init: Dict[str, Any] = field(default_factory=dict)
    call: Dict[str, Any] = field(default_factory=dict)
    players: Optional[Callable] = None

    @property
    def id(self) -> str:
        return self.cls.__name__

    def make(self, forward_func):
        return self.cls(forward_func, **self.init)

    def partition(self, explainer, height: int, width: int):
        if self.players is not None:
            return self.players(explainer, height, width)
        return explainer.players(height, width)


def random_game(num_players: int, seed: int = 0) -> torch.Tensor:
    """Values (2^P,) float64 of a game with arbitrary interactions; coalition c holds the players of c's bits."""
    return torch.randn(2**num_players, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def coalition_codes(coalitions: torch.Tensor) -> torch.Tensor:
    """Bit codes (R,) of boolean coalitions (R, P): player i <-> bit i."""
    weights = 2 ** torch.arange(coalitions.shape[1])
    return (coalitions.long() * weights).sum(1)


def game_value(table: torch.Tensor) -> Callable[[frozenset], float]:
    """The value function of a table game for :func:`helpers.exact_shapley_oracle`."""
    return lambda coalition: float(table[sum(2**i for i in coalition)])
