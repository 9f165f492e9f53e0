"""freqplug.attacks: frequency attacks as torchattacks attacks.

- :class:`HFAttack`: the High Frequency attack (seed 002 §3.4).
- :class:`FrequencyMaskedAttack`: wraps any torchattacks attack and keeps only chosen
  frequency components of its perturbation (seed 000 §4.4, eq. 11-12);
  :func:`masked_noise_table` reproduces seed 000 Fig. 6.
- :func:`attack_spectra` / :func:`plot_attack_spectra`: RCT maps and spectral SNR of
  perturbations (seed 001 Fig. 2, seed 004 Fig. 2).
"""

from .frequency_masked import FrequencyMaskedAttack, frequency_mask, masked_noise_table
from .hf_attack import HFAttack
from .spectra import attack_spectra, plot_attack_spectra

__all__ = [
    "FrequencyMaskedAttack",
    "HFAttack",
    "attack_spectra",
    "frequency_mask",
    "masked_noise_table",
    "plot_attack_spectra",
]
