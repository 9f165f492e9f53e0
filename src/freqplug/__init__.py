"""freqplug: which frequencies does your image classifier rely on?

Public API: what this module exports. Subpackages: ``freqplug.spectral`` (the spectral
core), ``freqplug.models`` and ``freqplug.data`` (embedded reference model and images).
"""

from . import attributions, compat, data, eval, models, spectral
from ._version import __version__
from .attributions import FrequencyShapley, FrequencyShapleyResult
from .compat import install_autoattack
from .eval import AutoAttackResult, AutoAttackRunner, evaluate_frequency_robustness
from .spectral import (
    dct2,
    frequency_bias,
    idct2,
    low_high_split,
    relative_change_dct,
    spectral_robustness_score,
)

__all__ = [
    "AutoAttackResult",
    "AutoAttackRunner",
    "compat",
    "eval",
    "evaluate_frequency_robustness",
    "install_autoattack",
    "FrequencyShapley",
    "FrequencyShapleyResult",
    "__version__",
    "attributions",
    "data",
    "dct2",
    "frequency_bias",
    "idct2",
    "low_high_split",
    "models",
    "relative_change_dct",
    "spectral",
    "spectral_robustness_score",
]
