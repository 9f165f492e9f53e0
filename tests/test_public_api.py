import subprocess
import sys

import freqplug


def test_every_public_name_resolves():
    missing = [name for name in freqplug.__all__ if not hasattr(freqplug, name)]
    assert not missing
    for name in ("FrequencyShapley", "OccludedFrequency", "SpectralBandShapley", "HFAttack", "FrequencyMaskedAttack",
                 "LowPassFilter", "JaFRLoss", "CSABank", "CSAugment", "AutoAttackRunner", "install_autoattack",
                 "low_high_split", "frequency_bias", "spectral_robustness_score"):
        assert name in freqplug.__all__


def test_import_is_lazy_about_robustbench_and_autoattack():
    code = ("import sys, freqplug; "
            "print(sorted(m for m in ('robustbench', 'pyautoattack', 'autoattack', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_measurements_moved_to_eval_keep_deprecated_names_in_attacks():
    import pytest

    import freqplug.attacks
    import freqplug.eval

    for name in ("masked_noise_table", "attack_spectra", "plot_attack_spectra"):
        assert getattr(freqplug, name) is getattr(freqplug.eval, name)
        assert name not in freqplug.attacks.__all__  # attacks/ holds attacks only
        with pytest.warns(DeprecationWarning, match=f"freqplug.eval.{name}"):
            assert getattr(freqplug.attacks, name) is getattr(freqplug.eval, name)
    with pytest.raises(AttributeError):
        freqplug.attacks.no_such_name
