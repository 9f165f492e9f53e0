"""Resumable AutoAttack evaluation state in the official ``autoattack.state`` file format."""

from __future__ import annotations

import ast
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import torch

__all__ = ["EvaluationState"]


@dataclass
class EvaluationState:
    """Resumable evaluation state, in the file format of the official ``autoattack.state``.

    The JSON file holds ``_attacks_to_run``, ``path``, ``_run_attacks``, ``_robust_flags``
    (list of bools, one per point), ``_last_saved``, ``_SAVE_TIMEOUT`` and ``_clean_accuracy``,
    so files written here are read by the official/pyautoattack ``EvaluationState.from_disk``
    (robustbench reads ``robust_flags`` from it) and the other way round. One difference:
    the official class writes the attack set as its Python repr (``"{'apgd-ce'}"``), which its
    own ``from_disk`` then compares unequal to any attack set, so official state files can
    never be resumed; this class writes a JSON list and reads both forms.
    """

    _attacks_to_run: set[str]
    path: Path | None = None
    _run_attacks: set[str] = field(default_factory=set)
    _robust_flags: torch.Tensor | None = None
    _last_saved: datetime = datetime(1, 1, 1)
    _SAVE_TIMEOUT: int = 60
    _clean_accuracy: float = float("nan")

    def to_disk(self, force: bool = False) -> None:
        elapsed = (datetime.now() - self._last_saved).total_seconds()
        if self.path is None or (elapsed < self._SAVE_TIMEOUT and not force):
            return
        self._last_saved = datetime.now()
        record = asdict(self)
        record["_attacks_to_run"] = sorted(self._attacks_to_run)
        record["_run_attacks"] = sorted(self._run_attacks)
        if self._robust_flags is not None:
            record["_robust_flags"] = self._robust_flags.cpu().tolist()
        # Write a sibling file and rename it over the old one, so an interrupted run never leaves
        # a truncated state file that can no longer be resumed.
        path = Path(self.path)
        partial = path.with_name(path.name + ".partial")
        with partial.open("w") as handle:
            json.dump(record, handle, default=str)
        os.replace(partial, path)

    @classmethod
    def from_disk(cls, path: str | Path) -> EvaluationState:
        path = Path(path)
        with path.open("r") as handle:
            record = json.load(handle)
        attacks = record["_attacks_to_run"]
        if isinstance(attacks, str):  # the official writer's repr of a set
            attacks = ast.literal_eval(attacks) if attacks not in ("set()", "") else set()
        record["_attacks_to_run"] = set(attacks)
        record["_run_attacks"] = set(record.get("_run_attacks") or ())
        flags = record.get("_robust_flags")
        record["_robust_flags"] = None if flags is None else torch.tensor(flags, dtype=torch.bool)
        record["path"] = path
        record["_last_saved"] = datetime.fromisoformat(record["_last_saved"])
        return cls(**record)

    @property
    def robust_flags(self) -> torch.Tensor | None:
        return self._robust_flags

    @robust_flags.setter
    def robust_flags(self, flags: torch.Tensor) -> None:
        self._robust_flags = flags
        self.to_disk(force=True)

    @property
    def run_attacks(self) -> set[str]:
        return self._run_attacks

    def add_run_attack(self, attack: str) -> None:
        self._run_attacks.add(attack)
        self.to_disk()

    @property
    def attacks_to_run(self) -> set[str]:
        return self._attacks_to_run

    @property
    def clean_accuracy(self) -> float:
        return self._clean_accuracy

    @clean_accuracy.setter
    def clean_accuracy(self, accuracy: float) -> None:
        self._clean_accuracy = accuracy
        self.to_disk(force=True)

    @property
    def robust_accuracy(self) -> float:
        if self._robust_flags is None:
            raise ValueError("robust_flags is not set yet. Start the attack first.")
        return self._robust_flags.double().mean().item()
