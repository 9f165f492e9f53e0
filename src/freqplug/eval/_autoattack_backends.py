"""The attacks of AutoAttack from three backends, behind one ``perturb(attack, x, y)`` call.

* ``"autoattack"``: the official package (github.com/fra31/auto-attack, installable from git
  only); only a real install counts, not freqplug's compatibility shim;
* ``"pyautoattack"``: the registry release of the same code (module ``pyautoattack``);
* ``"torchattacks"``: torchattacks' APGD, APGDT, FAB and Square with AutoAttack's settings
  (Linf and L2 only).

Each backend also names the shipped ``checks`` module of AutoAttack that the runner calls
(:mod:`freqplug.eval._autoattack_checks`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ATTACKS", "BACKENDS", "NORMS", "VERSIONS", "available_backends", "make_backend"]

#: Attack names of the official package, in the order of version "plus".
ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")

#: Attack lists of the preset versions (official ``AutoAttack.set_version``).
VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}

#: The AutoAttack implementations freqplug can run: the official package, pyautoattack and torchattacks.
BACKENDS = ("autoattack", "pyautoattack", "torchattacks")
NORMS = ("Linf", "L2", "L1")


def _official_autoattack_available() -> bool:
    """True when a real official ``autoattack`` package (not freqplug's shim) is importable."""
    module = sys.modules.get("autoattack")
    if module is not None:
        return not getattr(module, "__freqplug_shim__", False)
    try:
        return importlib.util.find_spec("autoattack") is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> tuple[str, ...]:
    """Backends importable here, in the order ``backend="auto"`` tries them."""
    found = []
    if _official_autoattack_available():
        found.append("autoattack")
    for name in ("pyautoattack", "torchattacks"):
        if importlib.util.find_spec(name) is not None:
            found.append(name)
    return tuple(found)


def _version_defaults(version: str, norm: str) -> dict[str, dict[str, float]]:
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
                 attacks: Sequence[str], seed: int, device: torch.device, overrides: dict[str, int]):
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

    def target_classes(self) -> tuple[int, int]:
        """Targets of APGD-T and FAB-T, as the official ``check_n_classes`` reads them."""
        return self.adversary.apgd_targeted.n_target_classes, self.adversary.fab.n_target_classes

    def settings_of(self, attack: str) -> dict[str, int]:
        """The budget settings ``attack`` will run with (read from the package's attack objects)."""
        a = self.adversary
        if attack in ("apgd-ce", "apgd-dlr"):
            return {"n_iter": a.apgd.n_iter, "n_restarts": a.apgd.n_restarts, "eot_iter": a.apgd.eot_iter}
        if attack == "apgd-t":
            t = a.apgd_targeted
            return {"n_iter": t.n_iter, "n_restarts": t.n_restarts, "eot_iter": t.eot_iter,
                    "n_target_classes": t.n_target_classes}
        if attack in ("fab", "fab-t"):
            return {"n_iter": a.fab.n_iter, "n_restarts": 1 if attack == "fab-t" else a.fab.n_restarts,
                    "n_target_classes": a.fab.n_target_classes}
        return {"n_queries": a.square.n_queries, "n_restarts": a.square.n_restarts}

    def checks_module(self):
        """The package's own ``checks`` module (the one its ``run_standard_evaluation`` calls)."""
        return importlib.import_module(f"{self.name}.checks")

    def route_attack_logs(self, logger) -> None:
        """Send the in-attack check (APGD's zero-gradient warning) to ``logger`` instead of the
        package's own logger, which prints to stdout (official) or to ``logging`` (pyautoattack)."""
        for attack in (self.adversary.apgd, self.adversary.apgd_targeted):
            attack.logger = logger

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
                 seed: int, device: torch.device, overrides: dict[str, int]):
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
        self.attacks: dict[str, object] = {}

    def limit_target_classes(self, num_classes: int) -> None:
        for group in ("apgd-t", "fab"):
            self.settings[group]["n_target_classes"] = min(self.settings[group]["n_target_classes"], num_classes - 1)

    def target_classes(self) -> tuple[int, int]:
        return self.settings["apgd-t"]["n_target_classes"], self.settings["fab"]["n_target_classes"]

    def settings_of(self, attack: str) -> dict[str, int]:
        """The budget settings ``attack`` will run with."""
        group = {"apgd-ce": "apgd", "apgd-dlr": "apgd", "fab-t": "fab"}.get(attack, attack)
        settings = dict(self.settings[group])
        if attack == "fab-t":
            settings["n_restarts"] = 1
        return settings

    def checks_module(self):
        """torchattacks ships no AutoAttack checks: use the shipped module of pyautoattack (a freqplug
        dependency), else of a real official install; None when neither is importable."""
        for name in ("pyautoattack", "autoattack"):
            if name == "autoattack" and not _official_autoattack_available():
                continue
            if importlib.util.find_spec(name) is not None:
                return importlib.import_module(f"{name}.checks")
        return None

    def route_attack_logs(self, logger) -> None:
        """torchattacks' attacks run no AutoAttack checks inside: nothing to route."""

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




def make_backend(name: str, model: nn.Module, norm: str, eps: float, version: str, attacks: Sequence[str],
                 seed: int, device: torch.device, overrides: dict[str, int | None]):
    """The backend object ``name`` (one of :data:`BACKENDS`) configured as the official version."""
    if name == "torchattacks":
        return _TorchattacksBackend(model, norm, eps, version, attacks, seed, device, overrides)
    return _PackageBackend(name, model, norm, eps, version, attacks, seed, device, overrides)


def evaluations_per_point(attack: str, settings: dict[str, int], num_classes: int) -> int:
    """Upper bound on the model evaluations (forward, or forward + backward, of one image) that
    ``attack`` spends on one point with ``settings`` (early stopping on broken points only lowers it).

    Per restart (and per target for APGD-T and FAB-T): APGD ``n_iter + 2`` steps times the EOT
    samples; FAB ``n_iter + 2`` steps, each with the gradient of every class (untargeted) or of
    two classes (targeted); Square ``n_queries + 2`` queries. Plus one clean forward. Checked
    against counted forward passes of both registry backends in the tests.
    """
    restarts = int(settings.get("n_restarts", 1))
    targets = int(settings["n_target_classes"]) if attack in ("apgd-t", "fab-t") else 1
    if attack in ("apgd-ce", "apgd-dlr", "apgd-t"):
        per_run = (int(settings["n_iter"]) + 2) * int(settings.get("eot_iter", 1))
    elif attack in ("fab", "fab-t"):
        per_run = (int(settings["n_iter"]) + 2) * (num_classes if attack == "fab" else 2)
    else:
        per_run = int(settings["n_queries"]) + 2
    return 1 + restarts * targets * per_run
