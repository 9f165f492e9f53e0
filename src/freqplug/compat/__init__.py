"""freqplug.compat: make host libraries work from a plain registry install.

``install_autoattack()`` registers an ``autoattack`` module with the official AutoAttack
API (backed by :class:`freqplug.eval.AutoAttackRunner`) so that ``import robustbench`` and
``robustbench.eval.benchmark`` work without the git-only official package. ``load_model``,
``checkpoint_paths`` and ``model_names`` are RobustBench's, working offline (no network call with
``download=False``) with an actionable :class:`CheckpointNotFoundError` naming the exact file
robustbench reads when one is missing. ``benchmark`` is robustbench's, resumable from a state file
with every AutoAttack backend; ``model_preprocessing`` names the image preprocessing RobustBench
uses for a model.

Layering: compat imports eval, never the other way round. Names are imported on first use (PEP 562).
"""

from .._lazy import attach, names_from

_LAZY = names_from({
    ".autoattack": ["install_autoattack", "is_shim", "uninstall_autoattack"],
    ".robustbench": ["CheckpointNotFoundError", "benchmark", "checkpoint_paths", "load_model", "model_names",
                     "model_preprocessing"],
})

__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = [
    "CheckpointNotFoundError",
    "benchmark",
    "checkpoint_paths",
    "install_autoattack",
    "is_shim",
    "load_model",
    "model_names",
    "model_preprocessing",
    "uninstall_autoattack",
]
