"""freqplug: which frequencies does your image classifier rely on?

Public API: what this module exports. Subpackages: ``spectral`` (the spectral core, the one
place where Fourier/DCT work lives), ``attributions``, ``attacks``, ``defenses``, ``training``
(hooks for training loops), ``eval`` (AutoAttack and RobustBench), ``compat``, ``report``
(``freqplug profile``), ``models`` and ``data`` (embedded reference model and images), ``cli``.
"""

from . import attacks, attributions, compat, data, defenses, eval, models, report, spectral, training
from ._version import __version__
from .attributions import (
    BandImportance,
    FrequencyShapley,
    FrequencyShapleyResult,
    OccludedFrequency,
    SpectralBandShapley,
)
from .attacks import FrequencyMaskedAttack, HFAttack
from .compat import install_autoattack
from .defenses import LowPassFilter, low_pass_kernels
from .eval import (
    AutoAttackResult,
    AutoAttackRunner,
    attack_spectra,
    evaluate_frequency_robustness,
    masked_noise_table,
    plot_attack_spectra,
)
from .report import ProfileResult, profile
from .training import CSABank, CSAugment, JaFRLoss, JaFROutput
from .spectral import (
    dct2,
    frequency_bias,
    idct2,
    low_high_split,
    relative_change_dct,
    spectral_robustness_score,
)

__all__ = [
    "attack_spectra",
    "attacks",
    "attributions",
    "AutoAttackResult",
    "AutoAttackRunner",
    "BandImportance",
    "compat",
    "CSABank",
    "CSAugment",
    "data",
    "dct2",
    "defenses",
    "eval",
    "evaluate_frequency_robustness",
    "frequency_bias",
    "FrequencyMaskedAttack",
    "FrequencyShapley",
    "FrequencyShapleyResult",
    "HFAttack",
    "idct2",
    "install_autoattack",
    "JaFRLoss",
    "JaFROutput",
    "low_high_split",
    "low_pass_kernels",
    "LowPassFilter",
    "masked_noise_table",
    "models",
    "OccludedFrequency",
    "plot_attack_spectra",
    "profile",
    "ProfileResult",
    "relative_change_dct",
    "report",
    "spectral",
    "spectral_robustness_score",
    "SpectralBandShapley",
    "training",
    "__version__",
]
