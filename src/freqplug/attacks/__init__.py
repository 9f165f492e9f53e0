"""freqplug.attacks: frequency attacks as torchattacks attacks.

- :class:`HFAttack`: the High Frequency attack (Wang2020b §3.4).
- :class:`FrequencyMaskedAttack`: wraps any torchattacks attack and keeps only chosen
  frequency components of its perturbation (Chen2022 §4.4, eq. 11-12);
  the masked-noise table of Fig. 6 (:func:`freqplug.eval.masked_noise_table`) composes it.
- Measurements of attacks live in :mod:`freqplug.eval`: ``masked_noise_table``, ``attack_spectra`` and
  ``plot_attack_spectra`` (the old names here still work for one release, with a DeprecationWarning).

The attacks need torchattacks (``pip install "freqplug[attacks]"``); names are imported on first use (PEP 562).
"""

import importlib
import warnings

from .._lazy import attach, names_from

__all__ = [
    "FrequencyMaskedAttack",
    "HFAttack",
    "frequency_mask",
]

_LAZY = names_from({
    ".frequency_masked": ["FrequencyMaskedAttack", "frequency_mask"],
    ".hf_attack": ["HFAttack"],
})

#: Measurements that moved to freqplug.eval (attacks/ holds attacks only; eval composes them).
_MOVED_TO_EVAL = ("attack_spectra", "masked_noise_table", "plot_attack_spectra")


def _deprecated(name):
    # Imported on first use, so that freqplug.attacks never imports the layer above it.
    if name in _MOVED_TO_EVAL:
        warnings.warn(f"freqplug.attacks.{name} moved to freqplug.eval.{name} (also freqplug.{name}); the old "
                      "name will be removed in the next release", DeprecationWarning, stacklevel=3)
        return getattr(importlib.import_module("freqplug.eval"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__getattr__, __dir__ = attach(__name__, _LAZY, fallback=_deprecated)
