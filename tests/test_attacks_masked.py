"""FrequencyMaskedAttack (Chen2022 eq. 11-12), masked_noise_table (Fig. 6) and attack_spectra,
on the embedded CIFAR-10 ResNet-18 and its 20 sample images."""

import pytest
import torch
import torchattacks

from freqplug.attacks import (
    FrequencyMaskedAttack,
    attack_spectra,
    frequency_mask,
    masked_noise_table,
    plot_attack_spectra,
)
from freqplug.spectral import band_mask, frequency_radius
from helpers.attacks import CIFAR_MEAN, CIFAR_STD, numpy_band, numpy_masked

EPS = 8 / 255
CHEAP_SHAPLEY = {"players": ("bands", 8), "n_samples": 2, "seed": 0}


def inner_range(x):
    # Contrast-reduced images in [0.1, 0.9]: x + delta_masked never leaves [0, 1] for eps = 8/255,
    # so the clamp does not bind and the returned perturbation is exactly the masked one.
    return 0.1 + 0.8 * x


def energy_fraction(delta, region):
    power = torch.fft.fft2(delta.double()).abs() ** 2
    return float((power * region).sum() / power.sum())


@pytest.mark.parametrize("kind", ["low", "high"])
def test_radial_masks_remove_the_other_frequencies(reference_model, cifar_samples, kind):
    x, y = cifar_samples
    x = inner_range(x)
    fgsm = torchattacks.FGSM(reference_model, eps=EPS)
    attack = FrequencyMaskedAttack(fgsm, kind)
    adv = attack(x, y)
    delta = adv - x
    assert float((x + attack.last_perturbation).min()) >= 0 and float((x + attack.last_perturbation).max()) <= 1
    torch.testing.assert_close(delta, attack.last_perturbation, rtol=0, atol=1e-6)
    r = frequency_radius(32, 32, normalized=True)
    outside = r >= 0.4 if kind == "low" else r <= 0.6  # the bins the mask must have removed
    assert energy_fraction(delta, outside) < 1e-9
    assert energy_fraction(fgsm(x, y) - x, outside) > 0.1, "the unmasked FGSM noise has energy there"
    assert torch.equal(attack.last_mask[0], band_mask(32, 32, kind))
    assert torch.equal(band_mask(32, 32, kind), numpy_band(32, 32, kind))  # eq. 12 from numpy's grid
    with pytest.warns(DeprecationWarning, match="band_mask"):
        assert torch.equal(frequency_mask(32, 32, kind), band_mask(32, 32, kind))


@pytest.mark.slow
def test_all_ones_mask_is_a_no_op(reference_model, cifar_samples):
    x, y = cifar_samples
    x, y = x[:5], y[:5]
    fgsm = torchattacks.FGSM(reference_model, eps=EPS)
    expected = fgsm(x, y)
    for ones in (torch.ones(32, 32, dtype=torch.bool), torch.ones(5, 32, 32)):
        out = FrequencyMaskedAttack(fgsm, ones)(x, y)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    callable_ones = FrequencyMaskedAttack(fgsm, lambda images, labels: torch.ones(images.shape[0], 32, 32) > 0)
    torch.testing.assert_close(callable_ones(x, y), expected, rtol=0, atol=1e-6)


def test_settings_propagate_to_the_wrapped_attack(reference_model):
    pgd = torchattacks.PGD(reference_model, eps=EPS, steps=2)
    attack = FrequencyMaskedAttack(pgd, "high")
    assert pgd in attack._attacks.values()
    attack.set_mode_targeted_by_label(quiet=True)
    assert pgd.targeted and pgd.attack_mode == "targeted(label)"
    attack.set_mode_targeted_least_likely(quiet=True)
    assert pgd.attack_mode == "targeted(least-likely)"
    attack.set_mode_default()
    assert not pgd.targeted
    attack.set_normalization_used(mean=CIFAR_MEAN, std=CIFAR_STD)
    assert pgd.normalization_used is not None and pgd._normalization_applied
    attack.set_model_training_mode(model_training=True)
    assert pgd._model_training
    # The wrapper adopts a wrapped attack's mode at construction.
    fgsm = torchattacks.FGSM(reference_model)
    fgsm.set_mode_targeted_by_label(quiet=True)
    assert FrequencyMaskedAttack(fgsm).targeted
    with pytest.raises(ValueError, match="Targeted mode is not supported"):
        FrequencyMaskedAttack(torchattacks.VANILA(reference_model)).set_mode_targeted_by_label(quiet=True)


@pytest.mark.slow
def test_targeted_mode_reaches_the_targets(reference_model, cifar_samples):
    x, y = cifar_samples
    x, y = x[:2], y[:2]
    targets = (y + 1) % 10
    pgd = torchattacks.PGD(reference_model, eps=EPS, alpha=3 / 255, steps=3, random_start=False)
    attack = FrequencyMaskedAttack(pgd, torch.ones(32, 32, dtype=torch.bool))
    attack.set_mode_targeted_by_label(quiet=True)
    adv = attack(x, targets)
    with torch.no_grad():
        predictions = reference_model(adv).argmax(1)
    assert (predictions == targets).any()
    reference = torchattacks.PGD(reference_model, eps=EPS, alpha=3 / 255, steps=3, random_start=False)
    reference.set_mode_targeted_by_label(quiet=True)
    torch.testing.assert_close(adv, reference(x, targets), rtol=0, atol=1e-6)


def test_clean_accuracy_above_robust_accuracy_range_and_ownership(reference_model, cifar_samples):
    # torchattacks' own check (clean_acc >= robust_acc), made able to fail: the output must be the
    # masked FGSM noise computed independently with numpy's FFT (returning the input unchanged, or
    # random images, fails), and on these images it does fool the model on some of them.
    x, y = cifar_samples
    x, y = x[:8], y[:8]
    before = x.clone()
    fgsm = torchattacks.FGSM(reference_model, eps=EPS)
    attack = FrequencyMaskedAttack(fgsm, "low")
    adv = attack(x.double(), y)
    assert adv.dtype == torch.float64
    assert adv.min() >= 0 and adv.max() <= 1
    expected = numpy_masked(x, fgsm(x, y), numpy_band(32, 32, "low"))
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-5)
    with torch.no_grad():
        clean_acc = (reference_model(x).argmax(1) == y).float().mean()
        robust_acc = (reference_model(adv.float()).argmax(1) == y).float().mean()
    assert clean_acc == 1.0 and robust_acc < clean_acc
    assert torch.equal(x, before)
    assert all(p.grad is None for p in reference_model.parameters())
    assert not any(m.training for m in reference_model.modules())


def test_projection_keeps_delta_in_the_eps_ball(reference_model, cifar_samples):
    x, y = cifar_samples
    x, y = x[:6], y[:6]
    fgsm = torchattacks.FGSM(reference_model, eps=EPS)
    free = FrequencyMaskedAttack(fgsm, "low")
    assert float((free(x, y) - x).abs().max()) > EPS + 1e-4, "masking alone can leave the eps-ball"
    projected = FrequencyMaskedAttack(fgsm, "low", project=True)
    assert float((projected(x, y) - x).abs().max()) <= EPS + 1e-6


@pytest.mark.slow
def test_positive_and_negative_masks_follow_the_shapley_signs(reference_model, cifar_samples):
    from freqplug.attributions import FrequencyShapley

    x, y = cifar_samples
    x, y = inner_range(x[:2]), y[:2]
    fgsm = torchattacks.FGSM(reference_model, eps=EPS)
    phi = FrequencyShapley(lambda z: torch.softmax(reference_model(z), dim=1)).attribute(
        x, target=y, **CHEAP_SHAPLEY)
    assert (phi > 0).any() and (phi < 0).any()
    for kind, expected_mask in (("positive", phi > 0), ("negative", phi < 0)):
        attack = FrequencyMaskedAttack(fgsm, kind, shapley=CHEAP_SHAPLEY)
        adv = attack(x, y)
        assert torch.equal(attack.last_mask, expected_mask)
        assert energy_fraction(adv - x, (~expected_mask)[:, None].double()) < 1e-9
    # A FrequencyShapley instance is used as given.
    explainer = FrequencyShapley(lambda z: torch.softmax(reference_model(z), dim=1))
    attack = FrequencyMaskedAttack(fgsm, "positive", shapley=explainer, shapley_kwargs=CHEAP_SHAPLEY)
    attack(x, y)
    assert torch.equal(attack.last_mask, phi > 0)


@pytest.mark.slow
def test_masked_noise_table(reference_model, cifar_samples):
    x, y = cifar_samples
    x, y = x[:3], y[:3]
    fgsm = torchattacks.FGSM(reference_model, eps=EPS)
    table = masked_noise_table(reference_model, fgsm, x, y, shapley=CHEAP_SHAPLEY)
    assert list(table) == ["x", "x+delta", "x+delta_low", "x+delta_high", "x+delta_PFC", "x+delta_NFC"]
    assert all(0.0 <= value <= 1.0 for value in table.values())
    assert table["x"] == 0.0 and table["x+delta"] > 0.5
    # Every entry against an independent computation (numpy FFT masks, the model's own predictions).
    adv = fgsm(x, y)
    with torch.no_grad():
        def error(images):
            return float((reference_model(images.float()).argmax(1) != y).double().mean())
        assert table["x+delta"] == error(adv)
        for kind in ("low", "high"):
            assert table[f"x+delta_{kind}"] == error(numpy_masked(x, adv, numpy_band(32, 32, kind)))
    # The table is the error-rate view of the one protocol.
    from freqplug.eval import evaluate_masked_perturbations

    result = evaluate_masked_perturbations(reference_model, x, y, adv, masks={}, bands=True)
    assert table["x+delta_low"] == result.error_rate()["low"] and table["x+delta_high"] == result.error_rate()["high"]


def test_attack_spectra_and_plot(reference_model, cifar_samples, tmp_path):
    x, y = cifar_samples
    x, y = inner_range(x[:4]), y[:4]  # no clamping: the low-pass noise stays band-limited
    fgsm = torchattacks.FGSM(reference_model, eps=EPS)
    spectra = attack_spectra(reference_model, {"FGSM": fgsm, "FGSM-low": FrequencyMaskedAttack(fgsm, "low")}, x, y)
    assert spectra["FGSM"]["rct"].shape == (32, 32)
    snr_full, snr_low = spectra["FGSM"]["snr"], spectra["FGSM-low"]["snr"]
    assert snr_full.shape == snr_low.shape and torch.isfinite(snr_full).all()
    # Low-pass noise (r < 0.4 r_max = 9.05 bins) leaves the rings above untouched: only float32
    # rounding of x_adv - x is left there (SNR > 80 dB), while FGSM's full noise is at most ~50 dB.
    assert (snr_low[10:] > 1e8).all() and (snr_full < 1e6).all()
    torch.testing.assert_close(snr_low[:9], snr_full[:9], rtol=1e-3, atol=0)
    path = tmp_path / "spectra.png"
    plot_attack_spectra(spectra, str(path))
    assert path.stat().st_size > 1000


def test_bad_arguments(reference_model, cifar_samples):
    x, y = cifar_samples
    fgsm = torchattacks.FGSM(reference_model)
    with pytest.raises(TypeError, match="torchattacks.Attack"):
        FrequencyMaskedAttack(reference_model)
    with pytest.raises(ValueError, match="mask"):
        FrequencyMaskedAttack(fgsm, "medium")
    with pytest.raises(ValueError, match="low_threshold"):
        FrequencyMaskedAttack(fgsm, "low", low_threshold=1.5)
    with pytest.raises(ValueError, match="eps"):
        FrequencyMaskedAttack(torchattacks.VANILA(reference_model), "low", project=True)
    asymmetric = torch.zeros(32, 32, dtype=torch.bool)
    asymmetric[0, 1] = True
    with pytest.raises(ValueError, match="conjugate-symmetric"):
        FrequencyMaskedAttack(fgsm, asymmetric)(x[:1], y[:1])
    with pytest.raises(ValueError, match="shape"):
        FrequencyMaskedAttack(fgsm, torch.ones(16, 16, dtype=torch.bool))(x[:1], y[:1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FrequencyMaskedAttack(fgsm, "low")(x[:1] - 1, y[:1])
    with pytest.raises(TypeError, match="shapley"):
        FrequencyMaskedAttack(fgsm, "positive", shapley=3)
    with pytest.raises(ValueError, match="masks"):
        masked_noise_table(reference_model, fgsm, x[:1], y[:1], masks=("middle",))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FrequencyMaskedAttack(fgsm, torch.full((32, 32), 2.0))(x[:1], y[:1])
