"""freqplug: which frequencies does your image classifier rely on?

Public API: what this module exports. Subpackages: ``spectral`` (the spectral core, the one
place where Fourier/DCT work lives), ``attributions``, ``attacks``, ``defenses``, ``training``
(hooks for training loops), ``eval`` (AutoAttack and RobustBench), ``compat``, ``report``
(``freqplug profile``), ``models`` and ``data`` (embedded reference model and images), ``cli``.

Every name is imported on first use (PEP 562): ``import freqplug`` imports neither torch's optional
companions (torchattacks, scipy, matplotlib, robustbench, xgboost, imagecorruptions) nor Captum; each
subpackage is imported when one of its names is first read.
"""

from ._lazy import attach, names_from
from ._version import __version__

_SUBPACKAGES = ("attacks", "attributions", "compat", "data", "defenses", "eval", "models", "plots", "report",
                "spectral", "training")

#: Public name -> the submodule that defines it (imported on first use).
_LAZY = {package: f".{package}" for package in _SUBPACKAGES}
_LAZY.update(names_from({
    ".attributions": ["BandImportance", "FrequencyShapley", "FrequencyShapleyResult", "OccludedFrequency",
                      "SpectralBandShapley"],
    ".attacks": ["FrequencyMaskedAttack", "HFAttack"],
    ".compat": ["install_autoattack"],
    ".defenses": ["LowPassFilter", "low_pass_kernels"],
    ".eval": ["AutoAttackResult", "AutoAttackRunner", "CorruptionRobustness", "RobustnessCurve", "attack_spectra",
              "corruption_robustness", "evaluate_frequency_robustness", "masked_noise_table", "plot_attack_spectra",
              "robustness_curve"],
    ".plots": ["visualize_frequency_attr"],
    ".report": ["ProfileResult", "cross_model_correlation", "profile"],
    ".training": ["CSABank", "CSAugment", "JaFRLoss", "JaFROutput"],
    ".spectral": ["dct2", "frequency_bias", "idct2", "low_high_split", "relative_change_dct",
                  "spectral_robustness_score"],
}))

__getattr__, __dir__ = attach(__name__, _LAZY)

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
    "CorruptionRobustness",
    "corruption_robustness",
    "cross_model_correlation",
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
    "plots",
    "plot_attack_spectra",
    "profile",
    "ProfileResult",
    "relative_change_dct",
    "report",
    "robustness_curve",
    "RobustnessCurve",
    "spectral",
    "spectral_robustness_score",
    "SpectralBandShapley",
    "training",
    "visualize_frequency_attr",
    "__version__",
]
