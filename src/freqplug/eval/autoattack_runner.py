"""One AutoAttack API over every backend.

:class:`AutoAttackRunner` runs the AutoAttack cascade of Croce & Hein (2020): each attack of
the list is run only on the points that are still robust, and a point counts as robust when
it is classified correctly clean and after every attack. The attacks themselves come from a
backend (:mod:`freqplug.eval._autoattack_backends`), chosen automatically in this order or by
``backend=``:

* ``"autoattack"``: the official package (``pip install git+https://github.com/fra31/auto-attack``,
  not on the package registry); only a real install counts, not freqplug's compatibility shim;
* ``"pyautoattack"``: the registry release of the same code (module ``pyautoattack``);
* ``"torchattacks"``: torchattacks' APGD, APGDT, FAB and Square with AutoAttack's settings
  (Linf and L2 only).

The cascade (robust flags, per-batch evaluation, resumable state file
(:mod:`freqplug.eval._autoattack_state`), log lines, AutoAttack's sanity checks
(:mod:`freqplug.eval._autoattack_checks`)) is the official ``AutoAttack.run_standard_evaluation``
logic, implemented once here so that every backend returns the same result object, reports which
attack broke each point and restores the caller's model, RNG and tensors.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._model import model_device_dtype, num_classes_of, predict, preserved_model_state
from .._validation import (
    check_choice,
    check_images,
    check_labels,
    check_number,
    check_positive_int,
    check_seed,
)
from ._autoattack_backends import (
    ATTACKS,
    BACKENDS,
    NORMS,
    VERSIONS,
    available_backends,
    evaluations_per_point,
    make_backend,
)
from ._autoattack_checks import AutoAttackCheckWarning, CheckLog, run_input_checks
from ._autoattack_state import EvaluationState

__all__ = [
    "ATTACKS",
    "BACKENDS",
    "VERSIONS",
    "AutoAttackCheckWarning",
    "AutoAttackResult",
    "AutoAttackRunner",
    "EvaluationState",
    "available_backends",
]

#: ``broken_by`` entry of points misclassified before any attack.
CLEAN = "clean"
#: ``broken_by`` entry of points broken in an earlier run whose state was restored.
RESTORED = "restored"


# --------------------------------------------------------------------------- result
@dataclass
class AutoAttackResult:
    """What an AutoAttack run returns.

    Attributes:
        x_adv: (N, C, H, W) adversarial examples on the device and in the dtype of the inputs;
            equal to the input for points no attack broke (as the official package returns).
        y_pred: (N,) int64 predictions on ``x_adv``.
        clean_correct: (N,) bool, classified correctly before any attack.
        robust: (N,) bool, classified correctly clean and after every attack (official
            ``robust_flags``).
        broken_by: N entries: ``None`` (still robust), ``"clean"`` (misclassified clean),
            the attack name that broke the point first, or ``"restored"`` (broken in an earlier
            run whose state file was resumed).
        robust_accuracy_by_attack: ``{"clean": acc, attack: robust accuracy after it, ...}``
            (official ``robust_accuracy_dict``), in run order.
        attacks: the attack list that was run; ``version``, ``norm``, ``eps``, ``backend``.
        check_warnings: the flags AutoAttack's shipped sanity checks raised during the run (also
            issued as :class:`AutoAttackCheckWarning` and written to the log), empty when none.
    """

    x_adv: torch.Tensor
    y_pred: torch.Tensor
    clean_correct: torch.Tensor
    robust: torch.Tensor
    broken_by: list[str | None]
    robust_accuracy_by_attack: dict[str, float]
    attacks: tuple[str, ...]
    version: str
    norm: str
    eps: float
    backend: str
    check_warnings: tuple[str, ...] = ()

    @property
    def clean_accuracy(self) -> float:
        """Fraction of points classified correctly before the attacks."""
        return self.clean_correct.double().mean().item()

    @property
    def robust_accuracy(self) -> float:
        """Fraction of points classified correctly clean and under every attack."""
        return self.robust.double().mean().item()


def _concatenate_results(results: Sequence[AutoAttackResult]) -> AutoAttackResult:
    """One :class:`AutoAttackResult` for the concatenation of the parts' points, in the given order.

    The parts are runs of the same evaluation (attacks, version, norm, eps, backend) on consecutive
    blocks of one data set (the report's units under torch.distributed). Per-point fields are
    concatenated; ``robust_accuracy_by_attack`` is recomputed from ``broken_by`` over all points
    (never averaged over parts of unequal size): after attack ``a_k`` it is the fraction of points not
    broken clean, restored, or by ``a_1 ... a_k``, listed for the attacks a single run would have
    reached (those with a point still robust before them). ``check_warnings`` is the union of the
    parts' flags in order of first appearance.

    Raises:
        ValueError: no parts, or parts of different evaluations.
    """
    results = list(results)
    if not results:
        raise ValueError("`results` must hold at least one AutoAttackResult, got none")
    for i, part in enumerate(results):
        if not isinstance(part, AutoAttackResult):
            raise TypeError(f"`results[{i}]` must be an AutoAttackResult, got {type(part).__name__}")
    first = results[0]
    for i, part in enumerate(results[1:], start=1):
        for name in ("attacks", "version", "norm", "eps", "backend"):
            if getattr(part, name) != getattr(first, name):
                raise ValueError(f"`results[{i}]` comes from another evaluation: its {name} is "
                                 f"{getattr(part, name)!r}, results[0]'s is {getattr(first, name)!r}")
    broken_by = [entry for part in results for entry in part.broken_by]
    clean_correct = torch.cat([part.clean_correct.cpu() for part in results])
    n = len(broken_by)
    broken = torch.tensor([entry in (CLEAN, RESTORED) for entry in broken_by], dtype=torch.bool)
    accuracies = {"clean": clean_correct.double().mean().item()}
    for attack in first.attacks:
        if bool(broken.all()):  # a single run stops here: no robust point left for this attack
            break
        broken = broken | torch.tensor([entry == attack for entry in broken_by], dtype=torch.bool)
        accuracies[attack] = (~broken).double().mean().item() if n else float("nan")
    warnings_seen: list[str] = []
    for part in results:
        warnings_seen += [w for w in part.check_warnings if w not in warnings_seen]
    return AutoAttackResult(
        x_adv=torch.cat([part.x_adv for part in results]), y_pred=torch.cat([part.y_pred for part in results]),
        clean_correct=clean_correct, robust=torch.cat([part.robust.cpu() for part in results]),
        broken_by=broken_by, robust_accuracy_by_attack=accuracies, attacks=first.attacks, version=first.version,
        norm=first.norm, eps=first.eps, backend=first.backend, check_warnings=tuple(warnings_seen))


# --------------------------------------------------------------------------- runner
class AutoAttackRunner:
    """AutoAttack (Croce & Hein, ICML 2020) with one API over three backends.

    Args:
        model: classifier taking images (N, C, H, W) in [0, 1] and returning logits (N, K).
        norm: ``"Linf"``, ``"L2"`` or ``"L1"`` (L1: official and pyautoattack backends only).
        eps: radius of the threat model, > 0 (e.g. 8/255 for CIFAR-10 Linf).
        version: ``"standard"`` (APGD-CE, APGD-T, FAB-T, Square), ``"plus"``, ``"rand"`` (for
            randomized defenses: APGD-CE/DLR with 20 EOT iterations) or ``"custom"`` (then
            ``attacks`` lists the attacks to run, in order).
        attacks: attack names from :data:`ATTACKS`; only with ``version="custom"``.
        backend: ``"auto"`` (official > pyautoattack > torchattacks), or one of :data:`BACKENDS`.
        seed: seed of every attack's random start; the same seed gives the same result.
            ``None`` draws one from the clock (official default behaviour).
        device: device of the attacks; default: the model's.
        n_iter, n_restarts, n_queries, n_target_classes: override the version's settings of
            every attack that has them (APGD/APGD-T/FAB iterations; restarts; Square queries;
            targets of APGD-T and FAB-T). Useful for cheap runs, e.g.
            ``version="custom", attacks=["apgd-ce"], n_iter=10, n_restarts=1``.
        verbose: print the official log lines (initial accuracy, robust accuracy after each attack).
        log_path: also append those lines to this file (as the official ``log_path``).
        show_progress: tqdm progress bar over attack batches.

    Checks: every run calls AutoAttack's own sanity checks from the ``checks`` module the package
    ships (official or pyautoattack; with the torchattacks backend, pyautoattack's): randomized
    model, probabilities instead of logits, gradient code at inference, too few classes, zero
    gradients inside APGD (package backends), Square beating the white-box attacks. The official
    package prints their flags; here each one is issued as an :class:`AutoAttackCheckWarning`
    (filterable), written to the log and kept in :attr:`AutoAttackResult.check_warnings`. They
    cost 7 extra forward passes of one batch. The model's output is also checked on every
    prediction: non-finite logits raise ``ValueError`` naming the model, and labels outside the
    output width raise ``ValueError`` naming ``y``.

    Cost: one attack call per attack and batch of still-robust points; APGD runs about
    ``n_iter × n_restarts`` forward/backward passes per point (APGD-T and FAB-T times the number
    of target classes), Square up to ``n_queries`` forward passes per point.

    Example:
        >>> runner = AutoAttackRunner(model, norm="Linf", eps=8/255)   # doctest: +SKIP
        >>> result = runner.run(x, y, batch_size=128)                  # doctest: +SKIP
        >>> result.clean_accuracy, result.robust_accuracy               # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, norm: str = "Linf", eps: float = 8 / 255, version: str = "standard",
                 attacks: Sequence[str] | None = None, backend: str = "auto", *, seed: int | None = 0,
                 device: str | torch.device | None = None, n_iter: int | None = None,
                 n_restarts: int | None = None, n_queries: int | None = None,
                 n_target_classes: int | None = None, verbose: bool = False,
                 log_path: str | Path | None = None, show_progress: bool = False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        check_choice(norm, "norm", NORMS)
        self.eps = check_number(eps, "eps", minimum=0.0, strict_minimum=True)
        check_choice(version, "version", ("standard", "plus", "rand", "custom"))
        check_choice(backend, "backend", ("auto",) + BACKENDS)
        if version == "custom":
            if attacks is None or isinstance(attacks, str) or len(attacks) == 0:
                raise ValueError(
                    "version='custom' needs `attacks`, a non-empty list of attack names from "
                    f"{list(ATTACKS)}, got {attacks!r}"
                )
            attacks = tuple(attacks)
            for name in attacks:
                check_choice(name, "attacks", ATTACKS)
            if len(set(attacks)) != len(attacks):
                raise ValueError(f"`attacks` must not repeat an attack, got {list(attacks)}")
        elif attacks is not None:
            raise ValueError(
                f"`attacks` is only used with version='custom' (version={version!r} runs "
                f"{list(VERSIONS[version])}); pass version='custom' to choose the attacks"
            )
        else:
            attacks = VERSIONS[version]
        check_seed(seed, "seed", allow_none=True)
        self.overrides = {
            "n_iter": None if n_iter is None else check_positive_int(n_iter, "n_iter"),
            "n_restarts": None if n_restarts is None else check_positive_int(n_restarts, "n_restarts"),
            "n_queries": None if n_queries is None else check_positive_int(n_queries, "n_queries"),
            "n_target_classes": None if n_target_classes is None else check_positive_int(n_target_classes,
                                                                                          "n_target_classes"),
        }
        self.model, self.norm, self.version, self.attacks = model, norm, version, tuple(attacks)
        self.seed = int(time.time() * 1000) % 2**31 if seed is None else seed
        model_device, self.dtype = model_device_dtype(model)
        self.device = torch.device(device) if device is not None else model_device
        self.verbose, self.show_progress = bool(verbose), bool(show_progress)
        self.log_path = None if log_path is None else Path(log_path)
        self.backend_name = self._select_backend(backend)
        self._backend = None
        # In-attack checks (APGD's zero-gradient flag) land here; surfaced after each attack list.
        self._attack_log = CheckLog()

    # ----------------------------------------------------------------- backend
    def _select_backend(self, requested: str) -> str:
        available = available_backends()
        if requested == "auto":
            if not available:
                raise ImportError("no AutoAttack backend found: install one with `pip install pyautoattack` "
                                  "or `pip install torchattacks`")
            chosen = available[0]
        else:
            if requested not in available:
                hint = {
                    "autoattack": "the official package is not on the package registry; install it with `pip "
                                  "install git+https://github.com/fra31/auto-attack`, or use backend='pyautoattack'",
                    "pyautoattack": "install it with `pip install pyautoattack`",
                    "torchattacks": "install it with `pip install torchattacks`",
                }[requested]
                raise ImportError(f"backend {requested!r} is not importable: {hint}")
            chosen = requested
        if chosen == "torchattacks" and self.norm == "L1":
            raise ValueError("backend 'torchattacks' supports norm 'Linf' and 'L2' only, got 'L1'; "
                             "use backend='pyautoattack' (pip install pyautoattack) for L1")
        return chosen

    @property
    def backend(self):
        """The backend object (built on first use): ``.adversary`` is the package's AutoAttack."""
        if self._backend is None:
            self._backend = make_backend(self.backend_name, self.model, self.norm, self.eps, self.version,
                                         self.attacks, self.seed, self.device, self.overrides)
        return self._backend

    # ----------------------------------------------------------------- logging
    def _log(self, message: str) -> None:
        if self.verbose:
            print(message)
        if self.log_path is not None:
            with self.log_path.open("a") as handle:
                handle.write(message + "\n")

    # ----------------------------------------------------------------- helpers
    def _predict(self, x: torch.Tensor, batch_size: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        # Every chunk's logits are checked (finite, (B, K)); labels against K on the first chunk.
        return predict(self.model, x, batch_size=batch_size, device=self.device, labels=labels, labels_name="y")

    def _surface_checks(self, log: CheckLog, already: list[str]) -> None:
        """Issue the checks' new messages as warnings and log lines (the official package prints them)."""
        for message in log.messages:
            if message in already:
                continue
            already.append(message)
            warnings.warn(AutoAttackCheckWarning(f"AutoAttack check ({self.backend_name} backend): {message}"),
                          stacklevel=4)
            self._log(f"Warning: {message}")

    def _input_checks(self, x_cpu: torch.Tensor, y_cpu: torch.Tensor, batch_size: int, attacks) -> CheckLog:
        """AutoAttack's shipped checks on the first batch, as ``run_standard_evaluation`` runs them."""
        log = CheckLog()
        backend = self.backend
        checks = backend.checks_module()
        if checks is None:
            log.log("AutoAttack's sanity checks were not run: no package shipping them (pyautoattack or the "
                    "official autoattack) is importable; install pyautoattack")
            return log
        xb = x_cpu[:batch_size].to(device=self.device, dtype=self.dtype)
        yb = y_cpu[:batch_size].to(self.device)
        run_input_checks(checks, self.model, xb, yb, version=self.version, attacks=attacks,
                         target_classes=backend.target_classes(), log=log)
        return log

    def _check(self, x, y, batch_size) -> int:
        check_images(x, "x")
        check_labels(y, "y", x.shape[0])
        return check_positive_int(batch_size, "batch_size")

    # ----------------------------------------------------------------- run
    def run(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250,
            state_path: str | Path | None = None, *, input_checks: bool = True) -> AutoAttackResult:
        """Run the attack cascade (official ``run_standard_evaluation``).

        Args:
            x: (N, C, H, W) images in [0, 1].
            y: (N,) int64 labels in [0, K), K the model's output width.
            batch_size: points per attack call (official ``bs``).
            state_path: resumable state file (official ``state_path``): created when absent,
                resumed when present (attacks already run are skipped; only adversarial
                examples of the current run are returned, as the official package does).
            input_checks: run AutoAttack's sanity checks on the first batch before the cascade (7
                forward passes of it). ``False`` skips them, for runs over many small parts of one
                data set whose first part already ran them (the sharded report stage); the
                after-cascade Square check, which costs no model evaluation, always runs.

        Returns:
            :class:`AutoAttackResult`; robust accuracy = mean over the N points of
            ``1[f(x_i) = y_i and f(x_adv_i) = y_i for every attack]`` (Croce & Hein 2020).

        Raises:
            ValueError: ``x`` outside [0, 1], ``y`` outside [0, K), or the model returns
                non-finite logits (on clean or adversarial inputs).
        """
        batch_size = self._check(x, y, batch_size)
        if not isinstance(input_checks, bool):
            raise TypeError(f"`input_checks` must be a bool, got {type(input_checks).__name__}")
        x_cpu, y_cpu = x.detach().cpu(), y.detach().to("cpu", torch.long)
        with preserved_model_state(self.model, eval_mode=True, freeze=True, fork_rng=True):
            seen: list[str] = []
            self._prepare(x_cpu, y_cpu, batch_size, self.attacks, seen, input_checks=input_checks)
            result = self._cascade(x_cpu, y_cpu, batch_size, self.attacks, state_path, seen)
        return self._to_caller(result, x, y)

    def run_individual(self, x: torch.Tensor, y: torch.Tensor,
                       batch_size: int = 250) -> dict[str, AutoAttackResult]:
        """Run each attack of the list alone on all clean-correct points (official
        ``run_standard_evaluation_individual``); arguments as :meth:`run`.

        Returns:
            ``{attack: AutoAttackResult}`` in the order of the attack list.
        """
        batch_size = self._check(x, y, batch_size)
        x_cpu, y_cpu = x.detach().cpu(), y.detach().to("cpu", torch.long)
        results = {}
        with preserved_model_state(self.model, eval_mode=True, freeze=True, fork_rng=True):
            seen: list[str] = []
            self._prepare(x_cpu, y_cpu, batch_size, self.attacks, seen)
            for attack in self.attacks:
                results[attack] = self._to_caller(
                    self._cascade(x_cpu, y_cpu, batch_size, (attack,), None, seen), x, y)
        return results

    def _prepare(self, x_cpu, y_cpu, batch_size, attacks, seen: list[str], *, input_checks: bool = True) -> None:
        """Check the model's output and the labels on one image, then run AutoAttack's checks."""
        example = x_cpu[:1].to(device=self.device, dtype=self.dtype)
        num_classes = num_classes_of(self.model, example, labels=y_cpu, labels_name="y")
        backend = self.backend
        if any(a in ("apgd-t", "fab-t") for a in attacks) and num_classes - 1 < 9:
            backend.limit_target_classes(num_classes)
        backend.route_attack_logs(self._attack_log)
        budget = self.evaluation_estimate(x_cpu.shape[0], num_classes, attacks=attacks)
        self._log("budget: at most about {:,} model evaluations for {} points ({})".format(
            sum(budget.values()), x_cpu.shape[0], ", ".join(f"{a} {n:,}" for a, n in budget.items())))
        if input_checks:
            self._surface_checks(self._input_checks(x_cpu, y_cpu, batch_size, attacks), seen)

    def evaluation_estimate(self, num_points: int, num_classes: int = 10,
                            attacks: Sequence[str] | None = None) -> dict[str, int]:
        """Upper bound on the model evaluations each attack spends on ``num_points`` points.

        One evaluation is a forward (Square) or forward + backward (APGD, FAB) pass of one image;
        every point is counted for every attack, as if none broke (the cascade stops attacking
        broken points, so a real run spends less). AutoAttack's checks add 7 forward passes of one
        batch. For example the standard version on 1,000 CIFAR-10 images is at most about 7.9 million.

        Args:
            num_points: N, the points to attack.
            num_classes: K, the model's output width (untargeted FAB's cost grows with it; the
                targeted attacks use at most K - 1 targets).
            attacks: the attack list (default: the runner's).

        Returns:
            ``{attack: evaluations}`` in run order.
        """
        num_points = check_positive_int(num_points, "num_points")
        num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
        estimate = {}
        for attack in self.attacks if attacks is None else attacks:
            settings = self.backend.settings_of(attack)
            if "n_target_classes" in settings:
                settings["n_target_classes"] = min(settings["n_target_classes"], num_classes - 1)
            estimate[attack] = num_points * evaluations_per_point(attack, settings, num_classes)
        return estimate

    def _cascade(self, x_cpu, y_cpu, batch_size, attacks, state_path, seen: list[str]) -> AutoAttackResult:
        from tqdm.auto import tqdm

        n = x_cpu.shape[0]
        state = self._open_state(state_path, attacks)
        backend = self.backend
        self._attack_log.messages.clear()

        y_pred = self._predict(x_cpu, batch_size, labels=y_cpu)
        clean_correct = y_pred == y_cpu
        broken_by: list[str | None] = [None if ok else CLEAN for ok in clean_correct.tolist()]
        if state.robust_flags is None:
            robust = clean_correct.clone()
            state.robust_flags = robust.clone()
            state.clean_accuracy = clean_correct.double().mean().item()
        else:
            robust = state.robust_flags.clone().cpu().bool()
            if robust.shape != (n,):
                raise ValueError(f"the state file {state.path} holds {robust.numel()} points, "
                                 f"but {n} were given")
            for i in torch.nonzero(clean_correct & ~robust).flatten().tolist():
                broken_by[i] = RESTORED
            self._log(f"Restored state from {state.path}: {sorted(state.run_attacks)} already run")
        accuracies = {"clean": state.clean_accuracy}
        self._log(f"using {self.version} version including {', '.join(attacks)}.")
        self._log(f"initial accuracy: {state.clean_accuracy:.2%}")

        x_adv = x_cpu.clone()
        started = time.time()
        pending = [a for a in attacks if a not in state.run_attacks]
        for attack in pending:
            indices = torch.nonzero(robust).flatten()
            if indices.numel() == 0:
                self._log("no robust datapoints left, skipping remaining attacks")
                break
            for chunk in tqdm(list(indices.split(batch_size)), desc=attack, disable=not self.show_progress):
                xb = x_cpu[chunk].to(device=self.device, dtype=self.dtype)
                yb = y_cpu[chunk].to(self.device)
                adversarial = backend.perturb(attack, xb, yb).detach()
                output = self._predict(adversarial, batch_size)
                fooled = output != y_cpu[chunk]
                fooled_idx = chunk[fooled]
                robust[fooled_idx] = False
                x_adv[fooled_idx] = adversarial[fooled].cpu().to(x_adv.dtype)
                y_pred[fooled_idx] = output[fooled]
                for i in fooled_idx.tolist():
                    broken_by[i] = attack
                state.robust_flags = robust.clone()
            accuracies[attack] = robust.double().mean().item()
            state.add_run_attack(attack)
            self._log(f"robust accuracy after {attack.upper()}: {accuracies[attack]:.2%} "
                      f"(total time {time.time() - started:.1f} s)")
        state.to_disk(force=True)
        self._surface_checks(self._attack_log, seen)
        checks = backend.checks_module()
        if checks is not None:
            square_log = CheckLog()
            checks.check_square_sr(accuracies, logger=square_log)
            self._surface_checks(square_log, seen)
        if any(b == RESTORED for b in broken_by):
            # Restored points come back clean; predict them so y_pred matches x_adv.
            y_pred = self._predict(x_adv, batch_size)
        self._log(f"robust accuracy: {robust.double().mean().item():.2%}")
        return AutoAttackResult(
            x_adv=x_adv, y_pred=y_pred, clean_correct=clean_correct, robust=robust, broken_by=broken_by,
            robust_accuracy_by_attack=accuracies, attacks=tuple(attacks), version=self.version, norm=self.norm,
            eps=self.eps, backend=self.backend_name, check_warnings=tuple(seen),
        )

    @staticmethod
    def _to_caller(result: AutoAttackResult, x: torch.Tensor, y: torch.Tensor) -> AutoAttackResult:
        """Adversarial examples on the caller's device and dtype, predictions on the labels' device."""
        result.x_adv = result.x_adv.to(device=x.device, dtype=x.dtype)
        result.y_pred = result.y_pred.to(y.device)
        return result

    def _open_state(self, state_path, attacks) -> EvaluationState:
        if state_path is None:
            return EvaluationState(set(attacks))
        if not isinstance(state_path, (str, Path)):
            raise TypeError(f"`state_path` must be a str or pathlib.Path, got {type(state_path).__name__}")
        path = Path(state_path)
        if path.exists():
            state = EvaluationState.from_disk(path)
            if set(attacks) != state.attacks_to_run:
                raise ValueError(
                    f"The state file {path} was created with attacks {sorted(state.attacks_to_run)}, "
                    f"not {sorted(attacks)}: you are probably using the wrong state file"
                )
            return state
        if not path.parent.is_dir():
            raise FileNotFoundError(f"folder of `state_path` does not exist: {path.parent}")
        state = EvaluationState(set(attacks), path=path)
        state.to_disk(force=True)
        return state

    def clean_accuracy(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250) -> float:
        """Fraction of ``x`` (N, C, H, W) classified as ``y`` (N,); logits and labels checked as in :meth:`run`."""
        batch_size = self._check(x, y, batch_size)
        y_cpu = y.detach().to("cpu", torch.long)
        with preserved_model_state(self.model, eval_mode=True, freeze=True, fork_rng=True):
            predictions = self._predict(x.detach().cpu(), batch_size, labels=y_cpu)
        return (predictions == y_cpu).double().mean().item()

    def __repr__(self) -> str:
        return (f"AutoAttackRunner(norm={self.norm!r}, eps={self.eps:.6g}, version={self.version!r}, "
                f"attacks={list(self.attacks)}, backend={self.backend_name!r}, seed={self.seed})")

