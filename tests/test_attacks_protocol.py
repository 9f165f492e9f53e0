"""One masked-perturbation protocol (eval.evaluate_masked_perturbations) and its callers
(masked_noise_table, evaluate_frequency_robustness), one spectrum measure (perturbation_spectrum,
attack_spectra), the band mask and mask check in freqplug.spectral, and the trust checks of issue 14
(labels outside the model's width, NaN logits, a precomputed result of other inputs, torch.no_grad()).

A real linear classifier (float64; its clean predictions take 4 classes on these images, and FGSM at
2/255 flips them while masked noise flips only some) keeps these tests fast and able to fail; the
ResNet-18 runs are in test_attacks_masked.py.
"""

import warnings

import pytest
import torch
import torchattacks

from freqplug.attacks import FrequencyMaskedAttack
from freqplug.eval import attack_spectra, masked_noise_table
from freqplug.eval import (
    AutoAttackRunner,
    evaluate_frequency_robustness,
    evaluate_masked_perturbations,
    frequency_band_masks,
    perturbation_spectrum,
)
from freqplug.spectral import band_mask, check_spectral_mask, relative_change_dct, spectral_snr
from helpers import NaNModel, assert_model_unchanged, linear_model, snapshot_model
from helpers.attacks import numpy_band, numpy_masked, numpy_masked_delta

EPS = 2 / 255  # the linear model below: FGSM breaks some points, and some masked noises do not
CHEAP_AA = dict(version="custom", attacks=["apgd-ce"], n_iter=5, n_restarts=1, backend="torchattacks")
CHEAP_SHAPLEY = {"players": ("bands", 4), "n_samples": 2, "seed": 0}


@pytest.fixture(scope="module")
def setup(cifar_samples):
    model = linear_model(3, 32, 32, num_classes=10)
    x = cifar_samples[0][:8].double()
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.fixture(scope="module")
def aa_first_half(setup):
    model, x, y = setup
    return AutoAttackRunner(model, eps=EPS, **CHEAP_AA).run(x[:4], y[:4], batch_size=4)


# ------------------------------------------------------------------ spectral: one band mask, one mask check
@pytest.mark.parametrize("size", [(32, 32), (31, 28), (7, 9)])
@pytest.mark.parametrize("band", ["low", "high"])
def test_band_mask_is_eq12_on_numpys_grid(size, band):
    assert torch.equal(band_mask(*size, band), numpy_band(*size, band))
    assert torch.equal(band_mask(*size, band, low_threshold=0.25, high_threshold=0.75),
                       numpy_band(*size, band, low=0.25, high=0.75))


def test_band_mask_and_deprecated_duplicates():
    with pytest.warns(DeprecationWarning, match="band_mask"):
        old = frequency_band_masks(32, 32, low=0.3, high=0.7)
    assert torch.equal(old["low"], band_mask(32, 32, "low", low_threshold=0.3))
    assert torch.equal(old["high"], band_mask(32, 32, "high", high_threshold=0.7))
    with pytest.raises(ValueError, match="band"):
        band_mask(32, 32, "middle")
    with pytest.raises(ValueError, match="low_threshold"):
        band_mask(32, 32, "low", low_threshold=1.5)


def test_check_spectral_mask_names_the_argument():
    good = band_mask(8, 8, "low")
    assert check_spectral_mask(good, "m", 8, 8) is good
    assert check_spectral_mask(torch.ones(3, 8, 8), "m", 8, 8, batch_size=3).shape == (3, 8, 8)
    with pytest.raises(TypeError, match="`m`.*tensor"):
        check_spectral_mask([[True]], "m", 8, 8)
    with pytest.raises(ValueError, match=r"`m`.*\(8, 8\) or \(2, 8, 8\)"):
        check_spectral_mask(torch.ones(3, 8, 8), "m", 8, 8, batch_size=2)
    with pytest.raises(TypeError, match="`m`.*dtype"):
        check_spectral_mask(torch.ones(8, 8, dtype=torch.long), "m", 8, 8)
    with pytest.raises(ValueError, match=r"`m`.*\[0, 1\]"):
        check_spectral_mask(torch.full((8, 8), 1.5), "m", 8, 8)
    asymmetric = torch.zeros(8, 8, dtype=torch.bool)
    asymmetric[1, 2] = True
    with pytest.raises(ValueError, match="`m`.*conjugate-symmetric"):
        check_spectral_mask(asymmetric, "m", 8, 8)


# ------------------------------------------------------------------ the protocol
def test_protocol_against_numpy(setup):
    model, x, y = setup
    x_adv = torchattacks.FGSM(model, eps=EPS)(x, y)
    pfc = torch.rand(32, 32, generator=torch.Generator().manual_seed(0)) > 0.5
    pfc = pfc & pfc.flip(0, 1).roll((1, 1), (0, 1))  # mirror (-u, -v) of fft2 layout: symmetric
    result = evaluate_masked_perturbations(model, x, y, x_adv, masks={"pfc": pfc})
    assert list(result.accuracy) == ["clean", "full", "low", "high", "pfc"]
    with torch.no_grad():
        for name, mask in (("low", numpy_band(32, 32, "low")), ("high", numpy_band(32, 32, "high")), ("pfc", pfc)):
            images = numpy_masked(x, x_adv, mask)
            assert torch.equal(result.correct[name], model(images).argmax(1) == y), name
            linf = numpy_masked_delta(x, x_adv, mask).flatten(1).abs().amax(1)
            torch.testing.assert_close(result.perturbation_linf[name], linf)
        assert torch.equal(result.correct["full"], model(x_adv).argmax(1) == y)
    assert result.accuracy["clean"] == 1.0 and result.accuracy["full"] < 1.0
    assert 0.0 < result.accuracy["low"] < 1.0, "the comparison is not trivial (measured: 0.5)"
    assert result.error_rate()["full"] == 1 - result.accuracy["full"]
    rct, snr = perturbation_spectrum(x, x_adv)
    assert torch.equal(result.rct, rct) and torch.equal(result.snr, snr)


def test_projection_and_reserved_names(setup):
    model, x, y = setup
    x_adv = torchattacks.FGSM(model, eps=EPS)(x, y)
    free = evaluate_masked_perturbations(model, x, y, x_adv)
    projected = evaluate_masked_perturbations(model, x, y, x_adv, project_eps=EPS)
    assert float(free.perturbation_linf["low"].max()) > EPS + 1e-4
    assert float(projected.perturbation_linf["low"].max()) <= EPS + 1e-9
    with pytest.raises(ValueError, match="reserved"):
        evaluate_masked_perturbations(model, x, y, x_adv, masks={"full": torch.ones(32, 32)})
    with pytest.raises(ValueError, match="x_adv"):
        evaluate_masked_perturbations(model, x, y, x_adv[:3])
    with pytest.raises(ValueError, match=r"`y`.*\[0, 10\)"):
        evaluate_masked_perturbations(model, x, y + 10, x_adv)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_masked_perturbations(NaNModel(model), x, y, x_adv)


# ------------------------------------------------------------------ a precomputed AutoAttack result
def test_attack_result_of_other_inputs_is_refused(setup, aa_first_half):
    model, x, y = setup
    result = aa_first_half
    ok = evaluate_frequency_robustness(model, x[:4], y[:4], attack_result=result)
    assert ok.accuracy["full"] == pytest.approx(result.robust_accuracy) and ok.attack_result is result
    with pytest.raises(ValueError, match="attack_result"):
        evaluate_frequency_robustness(model, x[4:8], y[4:8], attack_result=result)
    with pytest.raises(ValueError, match="attack_result"):
        evaluate_frequency_robustness(model, x[:4].flip(0), y[:4].flip(0), attack_result=result)
    with pytest.raises(ValueError, match="attack_result.*shape"):
        evaluate_frequency_robustness(model, x[:3], y[:3], attack_result=result)
    # Same unbroken points and labels, but the broken points moved: outside the eps-ball of the run.
    broken = torch.tensor([b not in (None, "clean") for b in result.broken_by])
    assert broken.any()
    moved = x[:4].clone()
    moved[broken] = (moved[broken] + 0.05).clamp(0, 1)
    with pytest.raises(ValueError, match="attack_result.*Linf ball"):
        evaluate_frequency_robustness(model, moved, y[:4], attack_result=result)
    with pytest.raises(TypeError, match="attack_result"):
        evaluate_frequency_robustness(model, x[:4], y[:4], attack_result=result, n_iter=3)


def test_attack_result_with_inputs_digest_is_checked(setup, aa_first_half):
    import copy

    from freqplug._io import digest

    model, x, y = setup
    result = copy.copy(aa_first_half)
    result.inputs_digest = digest(x[:4].cpu(), y[:4].cpu())
    evaluate_frequency_robustness(model, x[:4], y[:4], attack_result=result)
    result.inputs_digest = digest(x[4:8].cpu(), y[4:8].cpu())
    with pytest.raises(ValueError, match="inputs_digest"):
        evaluate_frequency_robustness(model, x[:4], y[:4], attack_result=result)


# ------------------------------------------------------------------ callers: masked_noise_table, attack_spectra
def test_masked_noise_table_is_the_protocols_error_view(setup):
    model, x, y = setup
    fgsm = torchattacks.FGSM(model, eps=EPS)
    table = masked_noise_table(model, fgsm, x, y, masks=("high", "low", "positive"), shapley=CHEAP_SHAPLEY)
    assert list(table) == ["x", "x+delta", "x+delta_high", "x+delta_low", "x+delta_PFC"]
    result = evaluate_masked_perturbations(model, x, y, fgsm(x, y))
    assert table["x"] == result.error_rate()["clean"] and table["x+delta"] == result.error_rate()["full"]
    assert table["x+delta_low"] == result.error_rate()["low"]
    assert table["x+delta_high"] == result.error_rate()["high"]
    projected = masked_noise_table(model, fgsm, x, y, masks=("low",), project=True)
    assert projected["x+delta_low"] == evaluate_masked_perturbations(
        model, x, y, fgsm(x, y), project_eps=EPS).error_rate()["low"]


def test_attack_spectra_is_the_spectrum_measure(setup):
    model, x, y = setup
    fgsm = torchattacks.FGSM(model, eps=EPS)
    spectra = attack_spectra(model, [fgsm, FrequencyMaskedAttack(fgsm, "low")], x, y)
    assert list(spectra) == ["FGSM", "FrequencyMaskedAttack"]
    adv = fgsm(x, y)
    rct, snr = perturbation_spectrum(x, adv, only_perturbed=False)
    assert torch.equal(spectra["FGSM"]["rct"], rct) and torch.equal(spectra["FGSM"]["snr"], snr)
    # ... which is the RCT and SNR of the spectral metrics (Wang2020a eq. 8, Luo2024 eq. 1).
    torch.testing.assert_close(rct, relative_change_dct(x, adv))
    torch.testing.assert_close(snr, spectral_snr(x, adv - x))
    with torch.no_grad():
        assert spectra["FGSM"]["error_rate"] == pytest.approx(float((model(adv).argmax(1) != y).double().mean()))
    assert spectra["FGSM"]["linf"] == pytest.approx(EPS, abs=1e-6)
    # Images an attack leaves unchanged count too (only_perturbed=False), unlike AutoAttack's spectrum.
    def all_but_first(images, labels):
        mask = torch.ones(images.shape[0], 32, 32, dtype=torch.bool)
        mask[0] = False
        return mask

    partial = FrequencyMaskedAttack(fgsm, all_but_first)
    measured = attack_spectra(model, {"partial": partial}, x, y)["partial"]
    adv = partial(x, y)
    assert torch.equal(adv[0], x[0])
    rct, snr = perturbation_spectrum(x, adv, only_perturbed=False)
    assert torch.equal(measured["rct"], rct) and torch.equal(measured["snr"], snr)
    assert not torch.equal(rct, perturbation_spectrum(x, adv)[0])


def test_callers_work_under_no_grad_and_leave_the_model(setup):
    model, x, y = setup
    snapshot = snapshot_model(model)
    fgsm = torchattacks.FGSM(model, eps=EPS)
    table = masked_noise_table(model, fgsm, x, y, masks=("low", "high"))
    spectra = attack_spectra(model, {"FGSM": fgsm}, x, y)
    with torch.no_grad():
        assert masked_noise_table(model, fgsm, x, y, masks=("low", "high")) == table
        inside = attack_spectra(model, {"FGSM": fgsm}, x, y)
        masked = FrequencyMaskedAttack(fgsm, "low")(x, y)
    assert torch.equal(inside["FGSM"]["rct"], spectra["FGSM"]["rct"])
    assert inside["FGSM"]["error_rate"] == spectra["FGSM"]["error_rate"]
    torch.testing.assert_close(masked, FrequencyMaskedAttack(fgsm, "low")(x, y), rtol=0, atol=0)
    assert_model_unchanged(model, snapshot)


def test_callers_refuse_labels_outside_the_model_width_and_nan(setup):
    model, x, y = setup
    bad = torch.tensor([10, 11, 12, 13])
    fgsm = torchattacks.FGSM(model, eps=EPS)
    with pytest.raises(ValueError, match=r"`y`.*\[0, 10\)"):
        masked_noise_table(model, fgsm, x[:4], bad, masks=("low",))
    with pytest.raises(ValueError, match=r"`y`.*\[0, 10\)"):
        attack_spectra(model, [fgsm], x[:4], bad)
    with pytest.raises(ValueError, match=r"`labels`.*\[0, 10\)"):
        FrequencyMaskedAttack(fgsm, "low")(x[:4], bad)
    random_targets = torchattacks.PGD(model, eps=EPS, steps=1)
    random_targets.set_mode_targeted_by_function(lambda images, labels: labels + 10, quiet=True)
    with pytest.raises(ValueError, match="targets"):
        masked_noise_table(model, random_targets, x[:4], y[:4], masks=("low",))
    with pytest.raises(ValueError, match="targets"):
        attack_spectra(model, [random_targets], x[:4], y[:4])
    nan_model = NaNModel(model)
    with pytest.raises(ValueError, match="NaN"):
        masked_noise_table(nan_model, torchattacks.FGSM(nan_model, eps=EPS), x[:2], y[:2], masks=("low",))
    with pytest.raises(ValueError, match="NaN"):
        attack_spectra(nan_model, [torchattacks.FGSM(nan_model, eps=EPS)], x[:2], y[:2])


def test_no_deprecation_warning_from_the_new_names(setup):
    model, x, y = setup
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        band_mask(32, 32, "low")
        masked_noise_table(model, torchattacks.FGSM(model, eps=EPS), x[:2], y[:2], masks=("low", "high"))
