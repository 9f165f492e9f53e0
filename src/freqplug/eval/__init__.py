"""freqplug.eval: AutoAttack over every backend and frequency-aware robustness evaluation.

Importing this package is cheap: names are imported on first use (PEP 562), and pyautoattack and
torchattacks only when a function needs them. RobustBench loading moved to :mod:`freqplug.compat`
(``load_model``, ``benchmark``, ``checkpoint_paths``, ``model_names``, ``CheckpointNotFoundError``); the old
names here still work for one release with a ``DeprecationWarning``.
"""

import importlib
import warnings

from .._lazy import attach, names_from

__all__ = [
    "ATTACKS",
    "BACKENDS",
    "VERSIONS",
    "AutoAttackCheckWarning",
    "AutoAttackResult",
    "AutoAttackRunner",
    "ClasswiseHFC",
    "CorruptionRobustness",
    "EvaluationState",
    "FrequencyRobustness",
    "RobustnessCurve",
    "SignificantComponents",
    "attack_spectra",
    "available_backends",
    "classwise_hfc_shapley",
    "corrupt_images",
    "corruption_robustness",
    "evaluate_frequency_robustness",
    "evaluate_masked_perturbations",
    "frequency_band_masks",
    "hfc_mask",
    "masked_noise_table",
    "per_class_accuracy",
    "perturbation_spectrum",
    "point_seed",
    "plot_attack_spectra",
    "robustness_curve",
    "significant_component_ratio",
]

_LAZY = names_from({
    ".autoattack_runner": ["ATTACKS", "BACKENDS", "VERSIONS", "AutoAttackCheckWarning", "AutoAttackResult",
                           "AutoAttackRunner", "EvaluationState", "available_backends"],
    ".frequency": ["FrequencyRobustness", "evaluate_frequency_robustness", "evaluate_masked_perturbations",
                   "frequency_band_masks", "perturbation_spectrum"],
    ".masked_noise": ["masked_noise_table"],
    ".spectra": ["attack_spectra", "plot_attack_spectra"],
    ".classwise": ["ClasswiseHFC", "SignificantComponents", "classwise_hfc_shapley", "hfc_mask", "per_class_accuracy",
                   "significant_component_ratio"],
    ".curves": ["RobustnessCurve", "point_seed", "robustness_curve"],
    ".corruptions": ["CorruptionRobustness", "corrupt_images", "corruption_robustness"],
})

#: Names that moved to freqplug.compat (compat depends on eval, never the other way round).
_MOVED_TO_COMPAT = ("CheckpointNotFoundError", "benchmark", "checkpoint_paths", "load_model", "model_names")


def _deprecated(name):
    # Imported on first use, so that importing freqplug.eval never imports freqplug.compat.
    if name in _MOVED_TO_COMPAT:
        warnings.warn(f"freqplug.eval.{name} moved to freqplug.compat.{name}; the old name will be removed in "
                      "the next release", DeprecationWarning, stacklevel=3)
        return getattr(importlib.import_module("freqplug.compat.robustbench"), name)
    if name == "robustbench":  # the deprecated module itself (warns when a name is read from it)
        return importlib.import_module(".robustbench", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__getattr__, __dir__ = attach(__name__, _LAZY, fallback=_deprecated)
