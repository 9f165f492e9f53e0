"""One AutoAttack API over every backend.

:class:`AutoAttackRunner` runs the AutoAttack cascade of Croce & Hein (2020): each attack of
the list is run only on the points that are still robust, and a point counts as robust when
it is classified correctly clean and after every attack. The attacks themselves come from a
backend, chosen automatically in this order or by ``backend=``:

* ``"autoattack"``: the official package (``pip install git+https://github.com/fra31/auto-attack``,
  not on the package registry); only a real install counts, not freqplug's compatibility shim;
* ``"pyautoattack"``: the registry release of the same code (module ``pyautoattack``);
* ``"torchattacks"``: torchattacks' APGD, APGDT, FAB and Square with AutoAttack's settings
  (Linf and L2 only).

The cascade (robust flags, per-batch evaluation, resumable state file, log lines) is the
official ``AutoAttack.run_standard_evaluation`` logic, implemented once here so that every
backend returns the same result object, reports which attack broke each point and restores
the caller's model, RNG and tensors.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import math
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn

from .._model import preserved_model_state
from .._validation import check_choice, check_images, check_labels, check_number, check_positive_int

__all__ = [
    "ATTACKS",
    "BACKENDS",
    "VERSIONS",
    "AutoAttackResult",
    "AutoAttackRunner",
    "EvaluationState",
    "available_backends",
]

#: Attack names of the official package, in the order of version "plus".
ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")

#: Attack lists of the preset versions (official ``AutoAttack.set_version``).
VERSIONS: Dict[str, Tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}

BACKENDS = ("autoattack", "pyautoattack", "torchattacks")
NORMS = ("Linf", "L2", "L1")

#: ``broken_by`` entry of points misclassified before any attack.
CLEAN = "clean"
#: ``broken_by`` entry of points broken in an earlier run whose state was restored.
RESTORED = "restored"


# --------------------------------------------------------------------------- state file
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

    _attacks_to_run: Set[str]
    path: Optional[Path] = None
    _run_attacks: Set[str] = field(default_factory=set)
    _robust_flags: Optional[torch.Tensor] = None
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
        with Path(self.path).open("w") as handle:
            json.dump(record, handle, default=str)

    @classmethod
    def from_disk(cls, path: Union[str, Path]) -> "EvaluationState":
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
    def robust_flags(self) -> Optional[torch.Tensor]:
        return self._robust_flags

    @robust_flags.setter
    def robust_flags(self, flags: torch.Tensor) -> None:
        self._robust_flags = flags
        self.to_disk(force=True)

    @property
    def run_attacks(self) -> Set[str]:
        return self._run_attacks

    def add_run_attack(self, attack: str) -> None:
        self._run_attacks.add(attack)
        self.to_disk()

    @property
    def attacks_to_run(self) -> Set[str]:
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
    """

    x_adv: torch.Tensor
    y_pred: torch.Tensor
    clean_correct: torch.Tensor
    robust: torch.Tensor
    broken_by: List[Optional[str]]
    robust_accuracy_by_attack: Dict[str, float]
    attacks: Tuple[str, ...]
    version: str
    norm: str
    eps: float
    backend: str

    @property
    def clean_accuracy(self) -> float:
        """Fraction of points classified correctly before the attacks."""
        return self.clean_correct.double().mean().item()

    @property
    def robust_accuracy(self) -> float:
        """Fraction of points classified correctly clean and under every attack."""
        return self.robust.double().mean().item()


# --------------------------------------------------------------------------- backends
def _official_autoattack_available() -> bool:
    """True when a real official ``autoattack`` package (not freqplug's shim) is importable."""
    module = sys.modules.get("autoattack")
    if module is not None:
        return not getattr(module, "__freqplug_shim__", False)
    try:
        return importlib.util.find_spec("autoattack") is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> Tuple[str, ...]:
    """Backends importable here, in the order ``backend="auto"`` tries them."""
    found = []
    if _official_autoattack_available():
        found.append("autoattack")
    for name in ("pyautoattack", "torchattacks"):
        if importlib.util.find_spec(name) is not None:
            found.append(name)
    return tuple(found)


def _version_defaults(version: str, norm: str) -> Dict[str, Dict[str, float]]:
    """Per-attack settings of the official package for a version (its __init__ + set_version)."""
    apgd = {"n_iter": 100, "n_restarts": 5, "eot_iter": 1}
    apgd_t = {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9}
    fab = {"n_iter": 100, "n_restarts": 5, "n_target_classes": 9}
    square = {"n_queries": 5000, "n_restarts": 1}
    if version == "standard":
        apgd["n_restarts"] = 1
        fab["n_restarts"] = 1
        if norm == "L1":
            apgd["n_restarts"] = 5
            apgd_t["n_target_classes"] = 5
    elif version == "plus":
        fab["n_restarts"] = 5
    elif version == "rand":
        apgd["n_restarts"] = 1
        apgd["eot_iter"] = 20
    return {"apgd": apgd, "apgd-t": apgd_t, "fab": fab, "square": square}


class _PackageBackend:
    """Attacks of the official ``autoattack`` package or of ``pyautoattack`` (same classes)."""

    def __init__(self, name: str, model: nn.Module, norm: str, eps: float, version: str,
                 attacks: Sequence[str], seed: int, device: torch.device, overrides: Dict[str, int]):
        self.name = name
        module = importlib.import_module(name)
        custom = version == "custom"
        if name == "autoattack":
            adversary = module.AutoAttack(model, norm=norm, eps=eps, seed=seed, verbose=False,
                                          attacks_to_run=list(attacks) if custom else [], version=version,
                                          device=device)
        else:
            adversary = module.AutoAttack(model, attacks=list(attacks) if custom else None, device=device,
                                          eps=eps, norm=norm, seed=seed, version=version)
            adversary.verbose = False
        self.adversary = adversary
        self.seed = seed
        if overrides.get("n_iter") is not None:
            n_iter = overrides["n_iter"]
            for attack in (adversary.apgd, adversary.apgd_targeted):
                # APGD derives its checkpoint schedule from n_iter in __init__: recompute it.
                attack.n_iter = attack.n_iter_orig = n_iter
                attack.n_iter_2 = max(int(0.22 * n_iter), 1)
                attack.n_iter_min = max(int(0.06 * n_iter), 1)
                attack.size_decr = max(int(0.03 * n_iter), 1)
            adversary.fab.n_iter = n_iter
        if overrides.get("n_restarts") is not None:
            for attack in (adversary.apgd, adversary.apgd_targeted, adversary.fab, adversary.square):
                attack.n_restarts = overrides["n_restarts"]
        if overrides.get("n_queries") is not None:
            adversary.square.n_queries = overrides["n_queries"]
        if overrides.get("n_target_classes") is not None:
            adversary.apgd_targeted.n_target_classes = overrides["n_target_classes"]
            adversary.fab.n_target_classes = overrides["n_target_classes"]

    def limit_target_classes(self, num_classes: int) -> None:
        for attack in (self.adversary.apgd_targeted, self.adversary.fab):
            attack.n_target_classes = min(attack.n_target_classes, num_classes - 1)

    def perturb(self, attack: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # The dispatch of the official run_standard_evaluation, attack by attack.
        adversary = self.adversary
        if attack in ("apgd-ce", "apgd-dlr"):
            adversary.apgd.loss = "ce" if attack == "apgd-ce" else "dlr"
            adversary.apgd.seed = self.seed
            return adversary.apgd.perturb(x, y)
        if attack == "apgd-t":
            adversary.apgd_targeted.seed = self.seed
            return adversary.apgd_targeted.perturb(x, y)
        if attack in ("fab", "fab-t"):
            adversary.fab.targeted = attack == "fab-t"
            if attack == "fab-t":
                adversary.fab.n_restarts = 1
            adversary.fab.seed = self.seed
            return adversary.fab.perturb(x, y)
        adversary.square.seed = self.seed
        return adversary.square.perturb(x, y)


class _TorchattacksBackend:
    """torchattacks' APGD/APGDT/FAB/Square configured as the official versions configure them."""

    name = "torchattacks"

    def __init__(self, model: nn.Module, norm: str, eps: float, version: str, attacks: Sequence[str],
                 seed: int, device: torch.device, overrides: Dict[str, int]):
        if norm == "L1":
            raise ValueError(
                "backend 'torchattacks' supports norm 'Linf' and 'L2' only, got 'L1'; "
                "use backend='pyautoattack' (pip install pyautoattack) for L1"
            )
        self.model, self.norm, self.eps, self.seed = model, norm, eps, seed
        self.settings = _version_defaults(version, norm)
        for group in self.settings.values():
            for key, value in overrides.items():
                if value is not None and key in group:
                    group[key] = value
        self.attacks: Dict[str, object] = {}

    def limit_target_classes(self, num_classes: int) -> None:
        for group in ("apgd-t", "fab"):
            self.settings[group]["n_target_classes"] = min(self.settings[group]["n_target_classes"], num_classes - 1)

    def _build(self, attack: str):
        import torchattacks

        common = dict(norm=self.norm, eps=self.eps, seed=self.seed)
        if attack in ("apgd-ce", "apgd-dlr"):
            s = self.settings["apgd"]
            return torchattacks.APGD(self.model, steps=s["n_iter"], n_restarts=s["n_restarts"], eot_iter=s["eot_iter"],
                                     loss="ce" if attack == "apgd-ce" else "dlr", rho=0.75, **common)
        if attack == "apgd-t":
            s = self.settings["apgd-t"]
            # torchattacks targets the n_classes - 1 runner-up classes: n_classes = targets + 1.
            return torchattacks.APGDT(self.model, steps=s["n_iter"], n_restarts=s["n_restarts"], rho=0.75,
                                      n_classes=s["n_target_classes"] + 1, **common)
        if attack in ("fab", "fab-t"):
            s = self.settings["fab"]
            return torchattacks.FAB(self.model, steps=s["n_iter"],
                                    n_restarts=1 if attack == "fab-t" else s["n_restarts"],
                                    multi_targeted=attack == "fab-t", n_classes=s["n_target_classes"] + 1, **common)
        s = self.settings["square"]
        return torchattacks.Square(self.model, n_queries=s["n_queries"], n_restarts=s["n_restarts"], p_init=0.8,
                                   loss="margin", resc_schedule=False, **common)

    def perturb(self, attack: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if attack not in self.attacks:
            self.attacks[attack] = self._build(attack)
        return self.attacks[attack](x, y)


# --------------------------------------------------------------------------- runner
def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextmanager
def _owned_state_preserved(model: nn.Module, device: torch.device):
    """Run in eval mode with frozen parameters; restore mode, requires_grad and the global RNG.

    Freezing the parameters keeps attacks that call ``loss.backward()`` from writing ``.grad``
    of the caller's model; the backends reseed torch's RNG, so it is forked.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    devices = [device] if device.type == "cuda" else []
    try:
        with preserved_model_state(model), torch.random.fork_rng(devices=devices):
            model.eval()
            for parameter, _ in flags:
                parameter.requires_grad_(False)
            yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


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

    Example:
        >>> runner = AutoAttackRunner(model, norm="Linf", eps=8/255)   # doctest: +SKIP
        >>> result = runner.run(x, y, batch_size=128)                  # doctest: +SKIP
        >>> result.clean_accuracy, result.robust_accuracy               # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, norm: str = "Linf", eps: float = 8 / 255, version: str = "standard",
                 attacks: Optional[Sequence[str]] = None, backend: str = "auto", *, seed: Optional[int] = 0,
                 device: Optional[Union[str, torch.device]] = None, n_iter: Optional[int] = None,
                 n_restarts: Optional[int] = None, n_queries: Optional[int] = None,
                 n_target_classes: Optional[int] = None, verbose: bool = False,
                 log_path: Optional[Union[str, Path]] = None, show_progress: bool = False):
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
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"`seed` must be an int or None, got {type(seed).__name__}")
        self.overrides = {
            "n_iter": None if n_iter is None else check_positive_int(n_iter, "n_iter"),
            "n_restarts": None if n_restarts is None else check_positive_int(n_restarts, "n_restarts"),
            "n_queries": None if n_queries is None else check_positive_int(n_queries, "n_queries"),
            "n_target_classes": None if n_target_classes is None else check_positive_int(n_target_classes,
                                                                                          "n_target_classes"),
        }
        self.model, self.norm, self.version, self.attacks = model, norm, version, tuple(attacks)
        self.seed = int(time.time() * 1000) % 2**31 if seed is None else seed
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.verbose, self.show_progress = bool(verbose), bool(show_progress)
        self.log_path = None if log_path is None else Path(log_path)
        self.backend_name = self._select_backend(backend)
        self._backend = None

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
                    "autoattack": "the official package is not on the package registry; install it with "
                                  "`pip install git+https://github.com/fra31/auto-attack`, or use backend='pyautoattack'",
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
            args = (self.model, self.norm, self.eps, self.version, self.attacks, self.seed, self.device,
                    self.overrides)
            if self.backend_name == "torchattacks":
                self._backend = _TorchattacksBackend(*args)
            else:
                self._backend = _PackageBackend(self.backend_name, *args)
        return self._backend

    # ----------------------------------------------------------------- logging
    def _log(self, message: str) -> None:
        if self.verbose:
            print(message)
        if self.log_path is not None:
            with self.log_path.open("a") as handle:
                handle.write(message + "\n")

    # ----------------------------------------------------------------- helpers
    def _predict(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        predictions = []
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                batch = x[start:start + batch_size].to(self.device)
                predictions.append(self.model(batch).argmax(dim=1).cpu())
        return torch.cat(predictions)

    def _check(self, x, y, batch_size) -> int:
        check_images(x, "x")
        check_labels(y, "y", x.shape[0])
        return check_positive_int(batch_size, "batch_size")

    # ----------------------------------------------------------------- run
    def run(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250,
            state_path: Optional[Union[str, Path]] = None) -> AutoAttackResult:
        """Run the attack cascade on images ``x`` (N, C, H, W) in [0, 1] with labels ``y`` (N,).

        Args:
            batch_size: points per attack call (official ``bs``).
            state_path: resumable state file (official ``state_path``): created when absent,
                resumed when present (attacks already run are skipped; only adversarial
                examples of the current run are returned, as the official package does).

        Returns:
            :class:`AutoAttackResult`.
        """
        batch_size = self._check(x, y, batch_size)
        return self._run(x, y, batch_size, self.attacks, state_path)

    def run_individual(self, x: torch.Tensor, y: torch.Tensor,
                       batch_size: int = 250) -> Dict[str, AutoAttackResult]:
        """Run each attack of the list alone on all clean-correct points (official
        ``run_standard_evaluation_individual``). Returns ``{attack: AutoAttackResult}``."""
        batch_size = self._check(x, y, batch_size)
        return {attack: self._run(x, y, batch_size, (attack,), None) for attack in self.attacks}

    def _run(self, x, y, batch_size, attacks, state_path) -> AutoAttackResult:
        from tqdm.auto import tqdm

        n = x.shape[0]
        y_cpu = y.detach().to("cpu", torch.long)
        x_cpu = x.detach().cpu()
        state = self._open_state(state_path, attacks)
        with _owned_state_preserved(self.model, self.device):
            with torch.no_grad():
                logits = self.model(x_cpu[: min(batch_size, n)].to(self.device))
            num_classes = int(logits.shape[1])
            if int(y_cpu.max()) >= num_classes:
                raise ValueError(f"`y` holds class {int(y_cpu.max())} but the model returns {num_classes} logits")
            backend = self.backend
            if any(a in ("apgd-t", "fab-t") for a in attacks) and num_classes - 1 < 9:
                backend.limit_target_classes(num_classes)

            y_pred = self._predict(x_cpu, batch_size)
            clean_correct = y_pred == y_cpu
            broken_by: List[Optional[str]] = [None if ok else CLEAN for ok in clean_correct.tolist()]
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
            self._log("initial accuracy: {:.2%}".format(state.clean_accuracy))

            x_adv = x_cpu.clone()
            started = time.time()
            pending = [a for a in attacks if a not in state.run_attacks]
            for attack in pending:
                indices = torch.nonzero(robust).flatten()
                if indices.numel() == 0:
                    self._log("no robust datapoints left, skipping remaining attacks")
                    break
                batches = list(indices.split(batch_size))
                for chunk in tqdm(batches, desc=attack, disable=not self.show_progress):
                    xb = x_cpu[chunk].to(self.device)
                    yb = y_cpu[chunk].to(self.device)
                    adversarial = backend.perturb(attack, xb, yb).detach()
                    with torch.no_grad():
                        output = self.model(adversarial).argmax(dim=1).cpu()
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
                self._log("robust accuracy after {}: {:.2%} (total time {:.1f} s)".format(
                    attack.upper(), accuracies[attack], time.time() - started))
            state.to_disk(force=True)
            if any(b == RESTORED for b in broken_by):
                # Restored points come back clean; predict them so y_pred matches x_adv.
                y_pred = self._predict(x_adv, batch_size)
            self._log("robust accuracy: {:.2%}".format(robust.double().mean().item()))

        return AutoAttackResult(
            x_adv=x_adv.to(device=x.device, dtype=x.dtype),
            y_pred=y_pred.to(y.device),
            clean_correct=clean_correct,
            robust=robust,
            broken_by=broken_by,
            robust_accuracy_by_attack=accuracies,
            attacks=tuple(attacks),
            version=self.version,
            norm=self.norm,
            eps=self.eps,
            backend=self.backend_name,
        )

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
        """Fraction of ``x`` (N, C, H, W) classified as ``y`` (N,)."""
        batch_size = self._check(x, y, batch_size)
        with _owned_state_preserved(self.model, self.device):
            predictions = self._predict(x.detach().cpu(), batch_size)
        return (predictions == y.cpu()).double().mean().item()

    def __repr__(self) -> str:
        return (f"AutoAttackRunner(norm={self.norm!r}, eps={self.eps:.6g}, version={self.version!r}, "
                f"attacks={list(self.attacks)}, backend={self.backend_name!r}, seed={self.seed})")
