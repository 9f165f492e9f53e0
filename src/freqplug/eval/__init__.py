"""freqplug.eval: AutoAttack over every backend, RobustBench from a registry install, and
frequency-aware robustness evaluation.

Importing this package is cheap: robustbench, pyautoattack and torchattacks are imported
only when a function needs them.
"""

from .autoattack_runner import (
    ATTACKS,
    BACKENDS,
    VERSIONS,
    AutoAttackResult,
    AutoAttackRunner,
    EvaluationState,
    available_backends,
)
from .frequency import (FrequencyRobustness, evaluate_frequency_robustness, evaluate_masked_perturbations,  # noqa: F401
                        frequency_band_masks, perturbation_spectrum)
from .robustbench import CheckpointNotFoundError, benchmark, checkpoint_paths, load_model, model_names

__all__ = [
    "ATTACKS",
    "BACKENDS",
    "VERSIONS",
    "AutoAttackResult",
    "AutoAttackRunner",
    "CheckpointNotFoundError",
    "EvaluationState",
    "FrequencyRobustness",
    "available_backends",
    "benchmark",
    "checkpoint_paths",
    "evaluate_frequency_robustness",
    "frequency_band_masks",
    "load_model",
    "model_names",
    "perturbation_spectrum",
]
