"""An ``autoattack`` module with the official API, for libraries that import it (RobustBench).

The official AutoAttack package (github.com/fra31/auto-attack) is installable from git only;
``robustbench`` 1.1.1 does ``from autoattack import AutoAttack`` and
``from autoattack.state import EvaluationState`` at import time, builds
``AutoAttack(model, norm=..., eps=..., version='standard', device=..., log_path=...)`` and calls
``run_standard_evaluation(x, y, bs=..., state_path=...)`` expecting one tensor back.
:func:`install_autoattack` registers a module ``autoattack`` (and ``autoattack.state``,
``autoattack.autoattack``) in ``sys.modules`` whose :class:`AutoAttack` mirrors the official
class and delegates to :class:`freqplug.eval.AutoAttackRunner` (attacks from pyautoattack, or
torchattacks).

Mirrored official behaviour (``autoattack/autoattack.py``):

* ``AutoAttack(model, norm='Linf', eps=.3, seed=None, verbose=True, attacks_to_run=[],
  version='standard', is_tf_model=False, device=..., log_path=None)``; a non-empty
  ``attacks_to_run`` with version 'standard'/'plus'/'rand' raises ``ValueError``; the attributes
  ``norm``, ``epsilon``, ``seed``, ``verbose``, ``attacks_to_run``, ``version``, ``device`` and,
  with a package backend, the attack objects ``apgd``, ``apgd_targeted``, ``fab``, ``square``
  (changing e.g. ``adversary.apgd.n_restarts`` takes effect, as officially).
* ``run_standard_evaluation(x_orig, y_orig, bs=250, return_labels=False, state_path=None)``
  returns ``x_adv`` (N, C, H, W), or ``(x_adv, y_adv)`` with ``return_labels=True``; a
  ``state_path`` file is created, or resumed when it exists.
* ``run_standard_evaluation_individual(x_orig, y_orig, bs=250, return_labels=False)`` returns
  ``{attack: x_adv}`` or ``{attack: (x_adv, y_adv)}``.
* ``clean_accuracy(x_orig, y_orig, bs=250)``, ``get_logits``, ``get_seed``, ``set_version``.
* ``verbose`` prints the log lines, ``log_path`` appends them to a file.

Differences: ``device`` defaults to the model's device (officially ``'cuda'``);
``is_tf_model=True`` is not supported; the input checks are freqplug's (images in [0, 1]).
The last run's full :class:`~freqplug.eval.AutoAttackResult` is kept as ``last_result``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch

__all__ = ["AutoAttack", "install_autoattack", "is_shim", "uninstall_autoattack"]

#: Version string of the API mirrored (robustbench 1.1.1 needs the ``state_path`` API of 0.1+).
SHIM_VERSION = "0.1+freqplug"


class AutoAttack:
    """Official ``autoattack.AutoAttack`` API over :class:`freqplug.eval.AutoAttackRunner`.

    Extra keyword ``backend`` (default ``"auto"``) picks the runner backend.
    """

    def __init__(self, model, norm: str = "Linf", eps: float = 0.3, seed: Optional[int] = None,
                 verbose: bool = True, attacks_to_run: Sequence[str] = (), version: str = "standard",
                 is_tf_model: bool = False, device=None, log_path: Optional[Union[str, Path]] = None,
                 *, backend: str = "auto"):
        from ..eval.autoattack_runner import VERSIONS

        if is_tf_model:
            raise NotImplementedError("is_tf_model=True is not supported by freqplug's autoattack shim; "
                                      "install the official package for TensorFlow models")
        if version in VERSIONS and attacks_to_run:
            raise ValueError("attacks_to_run will be overridden unless you use version='custom'")
        self.model = model
        self.norm = norm
        self.epsilon = eps
        self.seed = seed
        self.verbose = verbose
        self.version = version
        self.is_tf_model = False
        self.log_path = log_path
        self.backend_name = backend
        self.attacks_to_run = list(VERSIONS[version]) if version in VERSIONS else list(attacks_to_run)
        self.last_result = None
        self._runner = self._make_runner(device)
        self.device = self._runner.device

    def _make_runner(self, device):
        from ..eval.autoattack_runner import AutoAttackRunner

        return AutoAttackRunner(
            self.model, norm=self.norm, eps=self.epsilon, version=self.version,
            attacks=self.attacks_to_run if self.version == "custom" else None, backend=self.backend_name,
            seed=self.seed, device=device, verbose=self.verbose, log_path=self.log_path,
        )

    # Attack objects of the package backends (official attribute names).
    def _attack_object(self, name: str):
        backend = self._runner.backend
        if not hasattr(backend, "adversary"):
            raise AttributeError(f"`{name}` exists with the official/pyautoattack backends only; "
                                 f"this adversary uses backend {self._runner.backend_name!r}")
        return getattr(backend.adversary, name)

    apgd = property(lambda self: self._attack_object("apgd"))
    apgd_targeted = property(lambda self: self._attack_object("apgd_targeted"))
    fab = property(lambda self: self._attack_object("fab"))
    square = property(lambda self: self._attack_object("square"))

    def _sync(self) -> None:
        # Official code reads these attributes at run time, so users may change them after __init__.
        from ..eval.autoattack_runner import ATTACKS

        for name in self.attacks_to_run:
            if name not in ATTACKS:
                raise ValueError(f"Attack not supported: {name!r}; choose from {list(ATTACKS)}")
        self._runner.attacks = tuple(self.attacks_to_run)
        self._runner.verbose = bool(self.verbose)
        self._runner.log_path = None if self.log_path is None else Path(self.log_path)
        if self.seed is not None:
            self._runner.seed = self.seed

    def get_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def get_seed(self):
        return self._runner.seed

    def set_version(self, version: str = "standard") -> None:
        """Switch to a preset version ('standard', 'plus', 'rand'), as the official method."""
        from ..eval.autoattack_runner import VERSIONS

        if version not in VERSIONS:
            raise ValueError(f"`version` must be one of {sorted(VERSIONS)}, got {version!r}")
        self.version = version
        self.attacks_to_run = list(VERSIONS[version])
        self._runner = self._make_runner(self.device)

    def run_standard_evaluation(self, x_orig: torch.Tensor, y_orig: torch.Tensor, bs: int = 250,
                                return_labels: bool = False, state_path: Optional[Union[str, Path]] = None):
        """Returns ``x_adv`` (N, C, H, W), or ``(x_adv, y_adv)`` when ``return_labels``."""
        self._sync()
        result = self._runner.run(x_orig, y_orig, batch_size=bs, state_path=state_path)
        self.last_result = result
        return (result.x_adv, result.y_pred) if return_labels else result.x_adv

    def run_standard_evaluation_individual(self, x_orig: torch.Tensor, y_orig: torch.Tensor, bs: int = 250,
                                           return_labels: bool = False) -> Dict[str, object]:
        """Each attack alone: ``{attack: x_adv}``, or ``{attack: (x_adv, y_adv)}`` when ``return_labels``."""
        self._sync()
        results = self._runner.run_individual(x_orig, y_orig, batch_size=bs)
        if self.verbose:
            for name, result in results.items():
                self._runner._log("robust accuracy by {} \t {:.2%}".format(name.upper(), result.robust_accuracy))
        return {name: ((r.x_adv, r.y_pred) if return_labels else r.x_adv) for name, r in results.items()}

    def clean_accuracy(self, x_orig: torch.Tensor, y_orig: torch.Tensor, bs: int = 250) -> float:
        accuracy = self._runner.clean_accuracy(x_orig, y_orig, batch_size=bs)
        if self.verbose:
            print("clean accuracy: {:.2%}".format(accuracy))
        return accuracy

    def __repr__(self) -> str:
        return f"autoattack.AutoAttack[freqplug shim]({self._runner!r})"


def _shim_state_class():
    from ..eval.autoattack_runner import EvaluationState as _State

    class EvaluationState(_State):
        """Official ``autoattack.state.EvaluationState`` file format (see freqplug.eval.EvaluationState).

        One deliberate difference: ``from_disk`` returns ``robust_flags`` as a float 0/1 tensor
        (officially bool), because robustbench 1.1.1 ``benchmark(aa_state_path=...)`` computes
        ``robust_flags.mean()``, which raises for bool tensors.
        """

        @classmethod
        def from_disk(cls, path):
            state = super().from_disk(path)
            if state._robust_flags is not None:
                state._robust_flags = state._robust_flags.float()
            return state

    EvaluationState.__module__ = "autoattack.state"
    return EvaluationState


def is_shim(module: Optional[types.ModuleType] = None) -> bool:
    """True when ``module`` (default: the imported ``autoattack``) is freqplug's shim."""
    module = sys.modules.get("autoattack") if module is None else module
    return bool(getattr(module, "__freqplug_shim__", False))


def _new_module(name: str, doc: str, package: bool = False) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        module.__path__ = []
    module.__freqplug_shim__ = True
    return module


def install_autoattack(*, force: bool = False) -> types.ModuleType:
    """Make ``import autoattack`` give the official AutoAttack API. Idempotent.

    If an ``autoattack`` module is already imported, or a real official package is
    installed, that one is returned and nothing is registered (a real install is never
    shadowed) unless ``force=True``. Otherwise the modules ``autoattack``,
    ``autoattack.autoattack`` and ``autoattack.state`` are registered in ``sys.modules``.

    Returns:
        The module ``import autoattack`` now gives.

    Example:
        >>> import freqplug.compat; freqplug.compat.install_autoattack()   # doctest: +SKIP
        >>> import robustbench                                              # works now
    """
    existing = sys.modules.get("autoattack")
    if existing is not None and (is_shim(existing) or not force):
        return existing
    if not force:
        try:
            spec = importlib.util.find_spec("autoattack")
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            import autoattack as official  # a real install: use it

            return official

    EvaluationState = _shim_state_class()

    package = _new_module("autoattack", "freqplug shim of the official AutoAttack API (see freqplug.compat.autoattack)",
                          package=True)
    package.AutoAttack = AutoAttack
    package.__version__ = SHIM_VERSION
    core = _new_module("autoattack.autoattack", "AutoAttack class (freqplug shim)")
    core.AutoAttack = AutoAttack
    state = _new_module("autoattack.state", "EvaluationState (freqplug shim, official file format)")
    state.EvaluationState = EvaluationState
    package.autoattack = core
    package.state = state
    sys.modules["autoattack.autoattack"] = core
    sys.modules["autoattack.state"] = state
    sys.modules["autoattack"] = package
    return package


def uninstall_autoattack() -> bool:
    """Remove the shim from ``sys.modules`` (modules that imported it keep their reference).

    Returns True when a shim was removed; a real official package is left alone.
    """
    if not is_shim():
        return False
    for name in ("autoattack", "autoattack.autoattack", "autoattack.state"):
        sys.modules.pop(name, None)
    return True
