"""freqplug: which frequencies does your image classifier rely on?

Public API: what this module exports. Subpackages: ``freqplug.spectral`` (the spectral
core), ``freqplug.models`` and ``freqplug.data`` (embedded reference model and images).
"""

from . import attacks, attributions, compat, data, defenses, eval, models, spectral
from ._version import __version__
from .attributions import (
    BandImportance,
    FrequencyShapley,
    FrequencyShapleyResult,
    OccludedFrequency,
    SpectralBandShapley,
)
from .attacks import FrequencyMaskedAttack, HFAttack, attack_spectra, masked_noise_table, plot_attack_spectra
from .compat import install_autoattack
from .defenses import LowPassFilter, low_pass_kernels
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
    "FrequencyMaskedAttack",
    "HFAttack",
    "LowPassFilter",
    "attack_spectra",
    "attacks",
    "defenses",
    "low_pass_kernels",
    "masked_noise_table",
    "plot_attack_spectra",
    "AutoAttackResult",
    "AutoAttackRunner",
    "compat",
    "eval",
    "evaluate_frequency_robustness",
    "install_autoattack",
    "BandImportance",
    "FrequencyShapley",
    "FrequencyShapleyResult",
    "OccludedFrequency",
    "SpectralBandShapley",
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
