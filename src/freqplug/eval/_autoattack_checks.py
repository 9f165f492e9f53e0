"""AutoAttack's own sanity checks, run through the ``checks`` module the package ships.

Croce & Hein's package (and pyautoattack, the registry release of the same code) ships
``checks``: before the cascade it flags a randomized model, a model that outputs probabilities
instead of logits, a dynamic model (gradient code run at inference) and too few classes for the
DLR and targeted losses; inside APGD it flags points with zero gradient; after the cascade it
flags Square Attack lowering the robust accuracy below the white-box attacks (a sign of gradient
masking). See ``flags_doc.md`` of the official repository.

The functions are called from the shipped module (never a copy), with a collecting logger in
place of the package's one, so the runner can surface each message as an
:class:`AutoAttackCheckWarning` and in its log.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

__all__ = ["AutoAttackCheckWarning", "CheckLog", "run_input_checks"]


class AutoAttackCheckWarning(UserWarning):
    """A flag raised by AutoAttack's shipped sanity checks: the evaluation may be unreliable.

    Filter it like any warning, e.g. ``warnings.simplefilter("error", AutoAttackCheckWarning)``
    to stop on the first flag.
    """


class CheckLog:
    """Logger handed to the shipped checks; keeps the messages (in order, without repeats).

    The official module calls ``logger.log("Warning: <message>")``, pyautoattack's
    ``logger.warning(<message>)``; both end up in :attr:`messages` without the prefix.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []

    def _add(self, message: str) -> None:
        message = str(message)
        message = message.removeprefix("Warning: ")
        if message not in self.messages:
            self.messages.append(message)

    def log(self, message: str) -> None:
        self._add(message)

    def warning(self, message: str, *args) -> None:
        self._add(message % args if args else message)

    # APGD of pyautoattack only calls ``warning``; accept the other logging levels as no-ops.
    def debug(self, *args, **kwargs) -> None:
        pass

    info = debug


def _check_dynamic(checks, model, x: torch.Tensor, log: CheckLog) -> None:
    # The shipped check counts gradient calls in a module-level dict it never resets (one dynamic
    # model would flag every later one), and it ends with sys.settrace(None), which would drop a
    # debugger's or coverage tool's tracer: reset the counts and put the previous tracer back.
    for key in checks.funcs:
        checks.funcs[key] = 0
    previous = sys.gettrace()
    try:
        checks.check_dynamic(model, x, False, logger=log)
    finally:
        sys.settrace(previous)


def run_input_checks(checks, model, x: torch.Tensor, y: torch.Tensor, *, version: str, attacks: Sequence[str],
                     target_classes: tuple[int, int], log: CheckLog) -> None:
    """The checks of the official ``run_standard_evaluation`` before the cascade, in its order.

    Args:
        checks: the shipped module (``autoattack.checks`` or ``pyautoattack.checks``).
        model: the classifier, already in eval mode with frozen parameters.
        x: (B, C, H, W) first attack batch, on the model's device and dtype.
        y: (B,) its labels.
        version: AutoAttack version (``"rand"`` skips the randomness check, as officially).
        attacks: the attacks about to run.
        target_classes: targets of APGD-T and FAB-T as configured.
        log: where the messages go.

    Cost: 7 forward passes of the batch (5 for randomness, 1 for the output range, 1 traced).
    """
    if version != "rand":
        checks.check_randomized(model, x, y, bs=x.shape[0], logger=log)
    num_classes = checks.check_range_output(model, x, logger=log)
    _check_dynamic(checks, model, x, log)
    apgd_targets, fab_targets = target_classes
    checks.check_n_classes(num_classes, list(attacks), apgd_targets, fab_targets, logger=log)
