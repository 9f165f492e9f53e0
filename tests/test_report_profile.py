"""freqplug.profile's contracts: the global RNG and the caller's grad mode are left alone, overrides
are checked, the threat model drives every attack stage and is reported exactly, metadata is
recorded verbatim, HF success counts correctly classified images only, and classes without images
are missing (not zero) in the occlusion heatmap."""

import json
import warnings

import pytest
import torch
import torchattacks
from helpers import assert_model_unchanged, snapshot_model, tiny_cnn

from freqplug import HFAttack, masked_noise_table
from freqplug._distributed import unit_seed
from freqplug.report import PRESETS, profile, stages
from freqplug.report.plots import PlotView, plot_occluded_frequency


@pytest.fixture
def small(cifar_samples):
    x, y = cifar_samples[0][:6], cifar_samples[1][:6]
    return tiny_cnn(num_classes=10, seed=0, dtype=torch.float32), x, y


# ------------------------------------------------------------------------------------------ RNG, grad mode
def test_global_rng_is_left_as_it_was_and_same_seed_gives_the_same_table(small):
    model, x, y = small
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = profile(model, x, y, out=None, preset="fast", stages=["masked_noise"], quiet=True)
    assert torch.equal(torch.get_rng_state(), state)
    second = profile(model, x, y, out=None, preset="fast", stages=["masked_noise"], quiet=True)
    assert first["model"]["masked_noise"] == second["model"]["masked_noise"]


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_profile_works_under_no_grad_and_gives_the_same_numbers(small, mode):
    model, x, y = small
    chosen = ["autoattack", "masked_noise", "frequency_bias", "hf_attack"]
    reference = profile(model, x, y, out=None, preset="fast", stages=chosen, quiet=True)
    before = snapshot_model(model)
    with mode():
        inside = profile(model, x, y, out=None, preset="fast", stages=chosen, quiet=True)
        assert not torch.is_grad_enabled()
    assert_model_unchanged(model, before)
    for stage in chosen:
        assert inside["model"][stage] == reference["model"][stage], stage


# ------------------------------------------------------------------------------------------ argument checks
@pytest.mark.parametrize("overrides, error, names", [
    ({"band_shapely": {"num_bands": 6}}, ValueError, "`overrides` has an unknown key 'band_shapely'"),
    ({"band_shapley": {"num_band": 6}}, ValueError, "`overrides.'band_shapley'.` has an unknown setting 'num_band'"),
    ({"autoattack": {"n_iters": 3}}, ValueError, "unknown setting 'n_iters'"),
    ({"band_shapley": 6}, TypeError, "`overrides.'band_shapley'.` must be a dict"),
    ({"batch_size": 0}, ValueError, "batch_size"),
])
def test_a_typo_in_overrides_raises_naming_it(small, overrides, error, names):
    model, x, y = small
    with pytest.raises(error, match=names):
        profile(model, x, y, out=None, preset="fast", stages=["clean_accuracy"], overrides=overrides, quiet=True)


def test_known_overrides_are_applied(small):
    model, x, y = small
    result = profile(model, x, y, out=None, preset="fast", stages=["band_shapley"], quiet=True,
                     overrides={"band_shapley": {"num_bands": 3}, "autoattack": {"n_target_classes": 2}})
    assert result["model"]["band_shapley"]["num_bands"] == 3 and len(result["model"]["band_shapley"]["psi"]) == 3
    assert result.metrics["settings"]["autoattack"]["n_target_classes"] == 2


@pytest.mark.parametrize("kwargs, error, names", [
    ({"seed": 1.7}, TypeError, "seed"),
    ({"seed": -1}, ValueError, "seed"),
    ({"threat_model": "L3"}, ValueError, "threat_model"),
    ({"eps": -0.1}, ValueError, "eps"),
    ({"eps": float("nan")}, ValueError, "eps"),
    ({"metadata": ["a"]}, TypeError, "metadata"),
    ({"metadata": {"a": object()}}, TypeError, "metadata"),
    ({"metadata": {"a": (1, 2)}}, ValueError, "metadata"),
    ({"metadata": {1: "a"}}, ValueError, "metadata"),
    ({"num_classes": 7}, ValueError, "num_classes"),
])
def test_bad_arguments_raise_naming_them(small, kwargs, error, names):
    model, x, y = small
    with pytest.raises(error, match=names):
        profile(model, x, y, out=None, preset="fast", stages=["clean_accuracy"], quiet=True, **kwargs)


def test_labels_outside_the_model_classes_are_refused(small):
    model, x, y = small
    bad = y.clone()
    bad[0] = 10  # the model has 10 classes: 0..9
    with pytest.raises(ValueError, match="`y`"):
        profile(model, x, bad, out=None, preset="fast", stages=["clean_accuracy", "hf_attack"], quiet=True)


def test_metadata_is_recorded_verbatim(small, tmp_path):
    model, x, y = small
    metadata = {"class_folders": {"airplane": 0, "cat": 3}, "note": "sample", "n": [1, 2.5, None, True]}
    result = profile(model, x, y, out=tmp_path, preset="fast", stages=["clean_accuracy"], quiet=True,
                     metadata=metadata)
    assert result.metrics["metadata"] == metadata
    assert json.loads((tmp_path / "metrics.json").read_text())["metadata"] == metadata
    assert profile(model, x, y, out=None, stages=["clean_accuracy"], quiet=True).metrics["metadata"] == {}


# ------------------------------------------------------------------------------------------ threat model
def test_default_eps_per_threat_model_follows_robustbench(small):
    model, x, y = small
    for threat_model, eps in (("Linf", 8 / 255), ("L2", 0.5), ("L1", 12.0)):
        result = profile(model, x, y, out=None, preset="fast", stages=["clean_accuracy"], quiet=True,
                         threat_model=threat_model)
        assert result.metrics["threat_model"]["norm"] == threat_model
        assert result.metrics["threat_model"]["eps"] == pytest.approx(eps)
        assert result.metrics["threat_model"]["eps_is_robustbench_default"] is True
        assert result.metrics["settings"]["norm"] == threat_model
    explicit = profile(model, x, y, out=None, stages=["clean_accuracy"], quiet=True, threat_model="L2", eps=0.25)
    assert explicit.metrics["threat_model"]["eps"] == 0.25
    assert explicit.metrics["threat_model"]["eps_is_robustbench_default"] is False


@pytest.mark.slow
def test_l2_threat_model_drives_autoattack(reference_model, cifar_samples, tmp_path):
    model, x, y = reference_model, cifar_samples[0][:2], cifar_samples[1][:2]
    eps = 0.5
    result = profile(model, x, y, out=tmp_path, preset="fast", stages=["autoattack"], quiet=True, threat_model="L2")
    aa = result["model"]["autoattack"]
    assert aa["norm"] == "L2" and aa["eps"] == pytest.approx(eps) and aa["robust_accuracy"] < 1.0
    delta = (result.arrays["model"]["autoattack"]["x_adv"] - x).flatten(1)
    assert float(delta.norm(dim=1).max()) <= eps + 1e-4
    assert float(delta.abs().max()) > 8 / 255  # an Linf 8/255 attack could not go this far in one pixel
    markdown = (tmp_path / "report.md").read_text()
    assert "threat model L2, eps=0.5" in markdown
    assert "## Robust accuracy under APGD-CE (5 iterations; 1 restart; L2, eps=0.5), not the AutoAttack" in markdown


def test_l2_threat_model_drives_masked_noise(small):
    model, x, _ = small
    with torch.no_grad():
        y = model(x).argmax(1)  # correctly classified: the noise decides the error rates
    eps = 4.0  # the tiny net's logits are flat: a budget it feels
    result = profile(model, x, y, out=None, preset="fast", stages=["masked_noise"], quiet=True, threat_model="L2",
                     eps=eps)
    # The same table as torchattacks' own L2 PGD with the stage's settings, image by image (the fast preset's
    # units are single images) under each unit's seed, error rates counted over all images.
    s = PRESETS["fast"]["masked_noise"]
    pgd = torchattacks.PGDL2(model, eps=eps, alpha=eps / 4, steps=s["pgd_steps"], random_start=True)
    k = min(s["n_images"], x.shape[0])
    per_image = []
    for i in range(k):
        with torch.random.fork_rng():
            torch.manual_seed(unit_seed(0, i))
            per_image.append(masked_noise_table(model, pgd, x[i:i + 1], y[i:i + 1], batch_size=128, shapley={
                "players": s["players"], "n_samples": s["n_samples"], "seed": 0}))
    table = {row: sum(t[row] for t in per_image) / k for row in per_image[0]}
    assert result["model"]["masked_noise"]["error_rate"] == table
    assert table["x+delta"] > 0  # the L2 noise does something
    assert "L2" in result["model"]["masked_noise"]["attack"]


def test_l1_masked_noise_is_reported_as_skipped_not_run_in_linf(small):
    model, x, y = small
    result = profile(model, x, y, out=None, preset="fast", stages=["masked_noise"], quiet=True, threat_model="L1")
    assert "L1" in result["model"]["masked_noise"]["skipped"]


def test_deprecated_eps_and_norm_overrides_still_work_with_a_warning(small):
    model, x, y = small
    with pytest.warns(DeprecationWarning, match="threat_model"):
        result = profile(model, x, y, out=None, stages=["clean_accuracy"], quiet=True,
                         overrides={"eps": 4 / 255, "norm": "L2"})
    assert result.metrics["threat_model"]["norm"] == "L2" and result.metrics["settings"]["eps"] == 4 / 255
    with pytest.raises(ValueError, match="eps"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        profile(model, x, y, out=None, stages=["clean_accuracy"], quiet=True, eps=0.1, overrides={"eps": 0.2})


def test_a_cut_down_attack_is_not_titled_autoattack():
    fast = stages.attack_configuration(PRESETS["fast"])
    title = stages.get_stage("autoattack").heading(PRESETS["fast"])
    assert fast["standard"] is False
    assert title == ("Robust accuracy under APGD-CE (5 iterations; 1 restart; Linf, eps=8/255), "
                     "not the AutoAttack standard evaluation")
    gpu = dict(PRESETS["gpu"], norm="L2", eps=0.5)
    assert stages.attack_configuration(gpu)["standard"] is True
    assert stages.get_stage("autoattack").heading(gpu) == (
        "Robust accuracy under the AutoAttack standard evaluation (APGD-CE, APGD-T, FAB-T, SQUARE; L2, eps=0.5)")


# ------------------------------------------------------------------------------------------ HF attack, occlusion
@pytest.mark.slow
def test_hf_success_counts_correctly_classified_images_only(reference_model, cifar_samples):
    x, y = cifar_samples[0][:8], cifar_samples[1][:8].clone()
    y[4:] = (y[4:] + 1) % 10  # the reference model is right on all 20 samples: now wrong on these four
    result = profile(reference_model, x, y, out=None, preset="fast", stages=["hf_attack"], quiet=True)
    got = result["model"]["hf_attack"]
    # Oracle: HFAttack on every image, then keep the images the model classifies correctly.
    attack = HFAttack(reference_model, step=PRESETS["fast"]["hf_attack"]["step"], batch_size=128)
    attack(x, y)
    with torch.no_grad():
        correct = reference_model(x).argmax(1) == y
    assert int(correct.sum()) == 4 and got["n_correct"] == 4
    assert bool(attack.success[~correct].all())  # what the old rate counted as successes
    wins = attack.success & correct
    assert got["n_success"] == int(wins.sum())
    assert got["success_rate"] == pytest.approx(float(wins.sum()) / 4)
    if bool(wins.any()):
        assert got["mean_radius"] == pytest.approx(float(attack.found_radius[wins].mean()))
    radius = result.arrays["model"]["hf_attack"]["found_radius"]
    assert bool(torch.isnan(radius[~correct]).all())


def test_classes_without_images_are_missing_in_the_occlusion_heatmap(small):
    model, x, y = small
    y = torch.tensor([0, 0, 3, 3, 7, 7])
    result = profile(model, x, y, out=None, preset="fast", stages=["occluded_frequency"], quiet=True)
    means = result.arrays["model"]["occluded_frequency"]["class_means"]
    metrics = result["model"]["occluded_frequency"]
    empty = [c for c in range(10) if c not in (0, 3, 7)]
    assert bool(torch.isnan(means[empty]).all()) and bool(torch.isfinite(means[[0, 3, 7]]).all())
    assert all(value is None for c in empty for value in metrics["class_means"][c])
    view = PlotView(names=["model"], metrics={"model": metrics},
                    arrays={"model": result.arrays["model"]["occluded_frequency"]}, settings=result.metrics["settings"])
    drawn = plot_occluded_frequency(view).axes[1].images[0].get_array()
    assert drawn.mask[empty].all() and not drawn.mask[[0, 3, 7]].any()
