"""Optional dependencies: the one place that imports a package an extra provides, or says which extra to install.

freqplug's core (spectral core, attributions, training hooks) needs torch, captum, numpy and tqdm only. The rest
comes with extras named after what a user does (``pip install "freqplug[attacks]"``); :data:`EXTRAS` maps every
optional top-level module to the extra that installs it, so a missing one fails with an error naming the extra.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Dict

__all__ = ["EXTRAS", "available", "require"]

#: Optional top-level module -> the extra that installs it (``pip install "freqplug[<extra>]"``).
EXTRAS: Dict[str, str] = {
    "torchattacks": "attacks",
    "robustbench": "robustbench",
    "torchvision": "robustbench",
    "pyautoattack": "robustbench",
    "matplotlib": "report",
    "scipy": "report",
    "xgboost": "shapley",
    "imagecorruptions": "corruptions",
}


def available(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken __spec__
        return False


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` (e.g. ``"scipy.stats"``) or raise an ``ImportError`` naming the extra that installs it.

    Args:
        module: dotted module name; its top-level package must be a key of :data:`EXTRAS`.
        what: the feature that needs it, for the message (e.g. ``"estimator='tree'"``).
    """
    top = module.split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        raise ValueError(f"`module` {module!r} is not an optional dependency of freqplug; known: "
                         f"{', '.join(sorted(EXTRAS))}")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{what} needs the optional package {top!r}, which is not installed here "
                          f"({error}); install it with: pip install \"freqplug[{extra}]\"") from error
