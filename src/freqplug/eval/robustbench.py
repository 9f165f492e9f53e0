"""Deprecated location of :mod:`freqplug.compat.robustbench` (kept for one release)."""

import importlib
import warnings

_NAMES = ("CheckpointNotFoundError", "benchmark", "checkpoint_paths", "load_model", "model_names")


def __getattr__(name):
    # Resolved on first use, so that nothing in freqplug.eval imports freqplug.compat eagerly.
    if name in _NAMES or name == "OFFLINE_ENV":
        warnings.warn(f"freqplug.eval.robustbench.{name} moved to freqplug.compat.{name}; the old module will be "
                      "removed in the next release", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("freqplug.compat.robustbench"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
