"""The attribution stages split across ranks (issue 13): an image's attribution does not depend on the other
images of its call, per-unit results combine into the result of one call on all images, and the stages give the
same metrics in 1 and 2 gloo processes with both ranks doing part of the model evaluations."""

from __future__ import annotations

import json

import pytest
import torch

from freqplug.attributions import FrequencyShapley, OccludedFrequency
from freqplug.attributions.frequency_shapley import _concatenate_results
from freqplug.attributions.occluded_frequency import _class_means
from helpers import tiny_cnn
from helpers.sharded_attributions import images, stage_runs

PER_IMAGE = ("attributions", "values", "stderr", "value_full", "value_empty", "efficiency_gap", "sign_determined",
             "relative_stderr")


def _assert_same_result(got, expected, *, atol=1e-12):
    for key in PER_IMAGE:
        a, b = getattr(got, key), getattr(expected, key)
        assert a.shape == b.shape, key
        if a.dtype == torch.bool:
            assert torch.equal(a, b), key
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=atol, equal_nan=True, msg=key)
    for key in ("n_evaluations", "num_samples", "n_samples", "estimator", "seed", "players"):
        assert getattr(got, key) == getattr(expected, key), key


@pytest.mark.parametrize("estimator", ["antithetic", "tree"])
def test_frequency_shapley_chunks_concatenate_to_one_call(estimator):
    if estimator == "tree":
        pytest.importorskip("xgboost")
    x, y = images(3)
    x = torch.nn.functional.avg_pool2d(x, 4)  # 8x8: a small game
    fs = FrequencyShapley(lambda z: torch.softmax(tiny_cnn()(z), dim=1))
    options = dict(players=4, n_samples=18 if estimator == "tree" else 2, estimator=estimator, seed=7,
                   baselines="gaussian", return_result=True)
    whole = fs.attribute(x, target=y, **options)
    # a unit's images in a call of their own, their gaussian baselines keyed on the dataset index
    parts = [fs.attribute(x[i:j], target=y[i:j], first_index=i, **options) for i, j in ((0, 2), (2, 3))]
    merged = _concatenate_results(parts)
    _assert_same_result(merged, whole)
    assert merged.n_forward_calls == sum(p.n_forward_calls for p in parts)
    assert merged.estimator == estimator


def test_frequency_shapley_first_index_keys_the_gaussian_baseline():
    x, y = images(3)
    x = torch.nn.functional.avg_pool2d(x, 4)
    fs = FrequencyShapley(tiny_cnn())
    options = dict(target=y[2:], players=4, n_samples=2, estimator="antithetic", baselines="gaussian")
    keyed = fs.attribute(x[2:], first_index=2, **options)
    unkeyed = fs.attribute(x[2:], **options)
    expected = fs.attribute(x, target=y, players=4, n_samples=2, estimator="antithetic", baselines="gaussian")[2:]
    torch.testing.assert_close(keyed, expected, rtol=0, atol=1e-12)
    assert not torch.allclose(unkeyed, expected)  # the position in the call is not the image's key
    with pytest.raises(ValueError, match="first_index"):
        fs.attribute(x, first_index=-1, target=y, players=4, n_samples=2)


def test_concatenate_results_refuses_parts_of_different_calls():
    x, y = images(2)
    x = torch.nn.functional.avg_pool2d(x, 4)
    fs = FrequencyShapley(tiny_cnn())
    options = dict(players=4, n_samples=2, estimator="antithetic", return_result=True)
    a = fs.attribute(x[:1], target=y[:1], seed=0, **options)
    b = fs.attribute(x[1:], target=y[1:], seed=1, **options)
    with pytest.raises(ValueError, match=r"results\[1\]` has seed=1"):
        _concatenate_results([a, b])
    with pytest.raises(ValueError, match="at least one"):
        _concatenate_results([])
    with pytest.raises(TypeError, match="FrequencyShapleyResult"):
        _concatenate_results([a, "b"])


def test_occluded_frequency_unit_scores_give_the_class_averages_of_the_whole_data():
    x, y = images(5)
    x = torch.nn.functional.avg_pool2d(x, 2)  # 16x16: 16 rings
    of = OccludedFrequency(tiny_cnn(), groups="ring")
    expected_means, expected_counts = of.class_average_scores((x, y), num_classes=6, baselines="gaussian", seed=4,
                                                              batch_size=5, show_progress=False)
    scores = torch.cat([of.player_values(x[i:j], "gaussian", target=y[i:j], perturbations_per_eval=8, seed=4,
                                         first_index=i)
                        for i, j in ((0, 2), (2, 4), (4, 5))])
    means, counts = _class_means(scores, y, 6)
    assert torch.equal(counts, expected_counts)
    assert bool(torch.isnan(means[counts == 0]).all()) and int((counts == 0).sum()) >= 2  # classes 4, 5: no image
    torch.testing.assert_close(means, expected_means, rtol=0, atol=1e-12, equal_nan=True)
    with pytest.raises(ValueError, match="labels"):
        _class_means(scores, y, 2)
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="first_index"):
            of.player_values(x[:1], target=y[:1], first_index=bad)


def test_corruptions_in_units_equal_one_call():
    pytest.importorskip("imagecorruptions")
    from freqplug.eval.corruptions import _corruption_robustness, corrupt_images, corruption_robustness
    from freqplug.spectral import energy_spectral_density, frequency_bias

    x, y = images(5)
    model = tiny_cnn()
    args = (model, x, y, ("gaussian_noise", "defocus_blur"), (2, 4))
    whole = corruption_robustness(*args, batch_size=3, seed=5).to_dict()
    units = _corruption_robustness(*args, batch_size=3, seed=5, baseline=None, data_dir=None, dataset="cifar10",
                                   device=None, max_evaluations=None, show_progress=False, unit_size=2).to_dict()
    for key in ("accuracy", "clean_accuracy", "evaluations", "n_examples", "inputs_digest", "order_by_b_low"):
        assert units[key] == whole[key], key
    for key in ("frequency_bias", "radial_profile"):
        for c in whole[key]:
            assert units[key][c] == pytest.approx(whole[key][c], rel=1e-12), (key, c)
    # independent oracle: the corrupted images of corrupt_images (one call, dataset indices 0..4), B_low and the
    # radial energy of their noise by freqplug.spectral on all images at once, accuracy by a direct forward
    clean = (x.clamp(0, 1) * 255).round() / 255
    for c in ("gaussian_noise", "defocus_blur"):
        for s in (2, 4):
            corrupted = corrupt_images(x, c, s, seed=5)
            noise = (corrupted - clean.float()).float()
            assert units["frequency_bias_per_severity"][c][str(s)] == pytest.approx(float(frequency_bias(noise)),
                                                                                   abs=1e-5)
            accuracy = (model(corrupted.double()).argmax(1) == y).double().mean().item()
            assert units["accuracy"][c][str(s)] == accuracy
        profile = torch.stack([energy_spectral_density(
            (corrupt_images(x, c, s, seed=5) - clean.float()).float()).double().mean(dim=(0, 1)) for s in (2, 4)])
        assert units["radial_profile"][c] == pytest.approx(profile.mean(0).tolist(), rel=1e-5)


@pytest.mark.slow
def test_attribution_stages_equal_in_one_and_two_processes(tmp_path):
    pytest.importorskip("imagecorruptions")
    # classwise runs the same sharded Shapley helper as frequency_shapley (the check script compares it too)
    stages = ["frequency_shapley", "occluded_frequency", "corruptions"]
    (one,) = stage_runs(tmp_path / "1", 1, stages)
    ranks = stage_runs(tmp_path / "2", 2, stages)
    assert ranks[1]["metrics"] == {stage: None for stage in stages}  # only the writer holds the result
    for stage in stages:
        assert json.dumps(ranks[0]["metrics"][stage], sort_keys=True) == json.dumps(one["metrics"][stage],
                                                                                      sort_keys=True), stage
        per_rank = [r["evaluations"][stage] for r in ranks]
        assert all(rows > 0 for rows in per_rank), (stage, per_rank)
        assert sum(per_rank) == one["evaluations"][stage], (stage, per_rank)
