"""Class-wise frequency analysis (Chen2022 Figs. 5 and 7) on hand-built Shapley results with known numbers,
and once on the embedded ResNet-18."""

import math

import numpy as np
import pytest
import torch

from freqplug.attributions import FrequencyShapley
from freqplug.attributions.frequency_shapley import FrequencyShapleyResult
from freqplug.eval import (classwise_hfc_shapley, hfc_mask, per_class_accuracy, significant_component_ratio)
from freqplug.spectral import make_players


def _result(values: torch.Tensor, players) -> FrequencyShapleyResult:
    n = values.shape[0]
    zeros = torch.zeros(n, dtype=torch.float64)
    return FrequencyShapleyResult(attributions=players.expand(values), values=values, stderr=torch.zeros_like(values),
                                  value_full=zeros, value_empty=zeros, efficiency_gap=zeros, n_evaluations=0,
                                  n_forward_calls=0, num_samples=1, players=players, estimator="permutation", seed=0)


def _radius(u, v, h, w):
    fu = u if u <= h // 2 else u - h  # signed frequency of row u (numpy.fft.fftfreq * h, up to the Nyquist sign)
    fv = v if v <= w // 2 else v - w
    return math.hypot(fu, fv)


def _oracle_hfc_bins(h, w, threshold):
    radii = {(u, v): _radius(u, v, h, w) for u in range(h) for v in range(w)}
    r_max = max(radii.values())
    return [b for b, r in radii.items() if r > threshold * r_max]


def _ranks(a):
    return np.argsort(np.argsort(a)).astype(float)  # no ties in the test data


def test_hfc_mask_is_the_outer_thirty_percent_of_the_radius():
    bins = _oracle_hfc_bins(6, 6, 0.7)
    mask = hfc_mask(6, 6)
    assert sorted(map(tuple, mask.nonzero().tolist())) == sorted(bins)


def test_classwise_hfc_matches_a_loop_oracle_and_numpy_correlations():
    players = make_players("pairs", 6, 6)
    g = torch.Generator().manual_seed(0)
    values = torch.randn(12, players.num_players, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])
    robust = torch.tensor([0.9, 0.3, 0.5, 0.2, 0.7], dtype=torch.float64)
    result = _result(values, players)
    out = classwise_hfc_shapley(result, labels, robust_accuracy=robust)

    maps = result.attributions
    bins = _oracle_hfc_bins(6, 6, 0.7)
    per_image = [sum(abs(float(maps[i, u, v])) for u, v in bins) / len(bins) for i in range(12)]
    expected = [np.mean([per_image[i] for i in range(12) if labels[i] == k]) for k in range(5)]
    np.testing.assert_allclose(out.hfc_abs.numpy(), expected, rtol=1e-12)
    assert out.counts.tolist() == [3, 3, 2, 2, 2]
    assert out.pearson == pytest.approx(np.corrcoef(expected, robust.numpy())[0, 1], abs=1e-12)
    assert out.spearman == pytest.approx(np.corrcoef(_ranks(expected), _ranks(robust.numpy()))[0, 1], abs=1e-12)
    assert out.num_classes == 5 and 0 <= out.pearson_p <= 1
    assert out.to_dict()["num_classes"] == 5


def test_a_perfect_negative_relation_gives_minus_one_and_classes_without_images_are_left_out():
    players = make_players("pairs", 4, 4)
    hfc = hfc_mask(4, 4)
    # image i of class i: |phi| = i + 1 on every HFC bin, 0 elsewhere
    rows = []
    for i in range(4):
        bin_map = torch.where(hfc, torch.tensor(float(i + 1)), torch.tensor(0.0)).double()
        rows.append(players.reduce(bin_map) / players.sizes())  # per-player value with that map
    result = _result(torch.stack(rows), players)
    labels = torch.tensor([0, 1, 2, 4])  # class 3 has no image
    robust = torch.tensor([0.9, 0.7, 0.5, 0.45, 0.3], dtype=torch.float64)  # linear in |phi_HFC|: 1.1 - 0.2 * phi
    out = classwise_hfc_shapley(result, labels, robust_accuracy=robust)
    assert math.isnan(float(out.hfc_abs[3]))
    np.testing.assert_allclose(out.hfc_abs[[0, 1, 2, 4]].numpy(), [1, 2, 3, 4])
    assert out.num_classes == 4
    assert out.pearson == pytest.approx(-1.0) and out.spearman == pytest.approx(-1.0)
    # a dict and a list give the same
    again = classwise_hfc_shapley(result, labels, robust_accuracy={0: 0.9, 1: 0.7, 2: 0.5, 4: 0.3})
    assert again.pearson == pytest.approx(-1.0) and again.num_classes == 4
    # without robust accuracies: the HFC values only
    alone = classwise_hfc_shapley(result, labels)
    assert alone.robust_accuracy is None and math.isnan(alone.pearson) and alone.num_classes == 0
    # results from two calls with the same partition pool
    pooled = classwise_hfc_shapley([_result(result.values[:2], players), _result(result.values[2:], players)],
                                   labels, robust_accuracy=robust)
    assert torch.allclose(pooled.hfc_abs, out.hfc_abs, equal_nan=True)


def test_significant_component_ratio_matches_a_loop_oracle():
    players = make_players("pairs", 4, 4)
    g = torch.Generator().manual_seed(1)
    values = torch.randn(7, players.num_players, generator=g, dtype=torch.float64)
    result = _result(values, players)
    labels = torch.tensor([0, 0, 1, 1, 1, 0, 1])
    out = significant_component_ratio(result, labels=labels, fraction=0.2)
    maps = result.attributions
    for u in range(4):
        for v in range(4):
            column = [float(maps[i, u, v]) for i in range(7)]
            top = max(abs(c) for c in column)
            assert float(out.pfc_ratio[u, v]) == pytest.approx(sum(c > 0.2 * top for c in column) / 7)
            assert float(out.nfc_ratio[u, v]) == pytest.approx(sum(c < -0.2 * top for c in column) / 7)
    assert float(out.pfc_ratio[0, 0]) == 0 and float(out.nfc_ratio[0, 0]) == 0  # DC: never a player
    assert bool(((out.pfc_ratio + out.nfc_ratio) <= 1).all())
    # ring averages: ring 1 holds the bins whose radius rounds to 1 (axis bins and the diagonal ones, sqrt 2)
    ring1 = [(u, v) for u in range(4) for v in range(4) if round(_radius(u, v, 4, 4)) == 1]
    assert len(ring1) == 8
    assert float(out.pfc_radial[1]) == pytest.approx(np.mean([float(out.pfc_ratio[b]) for b in ring1]))
    # per class: maximum within the class
    sub = significant_component_ratio(_result(values[labels == 1], players), fraction=0.2)
    assert torch.allclose(out.by_class[1]["pfc_radial"], sub.pfc_radial) and out.by_class[1]["count"] == 4
    # a larger fraction never finds more significant components
    strict = significant_component_ratio(result, fraction=0.6)
    assert bool((strict.pfc_ratio <= out.pfc_ratio).all())


def test_per_class_accuracy():
    correct = torch.tensor([True, False, True, True])
    labels = torch.tensor([0, 0, 2, 2])
    acc = per_class_accuracy(correct, labels, num_classes=4)
    assert acc[0] == 0.5 and acc[2] == 1.0 and math.isnan(float(acc[1])) and math.isnan(float(acc[3]))
    with pytest.raises(TypeError, match="`correct`"):
        per_class_accuracy(correct.long(), labels)
    with pytest.raises(ValueError, match="`labels`"):
        per_class_accuracy(correct, labels[:3])


def test_refusals():
    players = make_players("pairs", 4, 4)
    other = make_players(2, 4, 4)
    values = torch.randn(3, players.num_players, dtype=torch.float64)
    result = _result(values, players)
    labels = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="`labels`"):
        classwise_hfc_shapley(result, labels[:2])
    with pytest.raises(ValueError, match="`labels`"):
        classwise_hfc_shapley(result, labels, num_classes=2)
    with pytest.raises(TypeError, match="`results`"):
        classwise_hfc_shapley(result.attributions, labels)
    with pytest.raises(ValueError, match=r"`results\[1\]`.*players"):
        classwise_hfc_shapley([result, _result(torch.randn(1, other.num_players, dtype=torch.float64), other)],
                              torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="`robust_accuracy`"):
        classwise_hfc_shapley(result, labels, robust_accuracy=[0.5, 1.5, 0.2])
    with pytest.raises(ValueError, match="`robust_accuracy`"):
        classwise_hfc_shapley(result, labels, robust_accuracy=[0.5, 0.5], num_classes=3)
    with pytest.raises(ValueError, match="`threshold`"):
        classwise_hfc_shapley(result, labels, threshold=1.5)
    with pytest.raises(ValueError, match="`fraction`"):
        significant_component_ratio(result, fraction=0.0)
    broken = _result(values, players)
    broken.attributions = broken.attributions[:, :3]
    with pytest.raises(ValueError, match="`results`"):
        significant_component_ratio(broken)


def test_on_the_embedded_resnet18(reference_model, cifar_samples):
    x, y = cifar_samples
    x, y = x[:4], y[:4]
    fs = FrequencyShapley(lambda z: torch.softmax(reference_model(z), dim=1))
    result = fs.attribute(x, target=y, players=("bands", 4), n_samples=2, return_result=True)
    correct = reference_model(x).argmax(1) == y
    robust = per_class_accuracy(correct, y, num_classes=10)
    out = classwise_hfc_shapley(result, y, robust_accuracy=robust)
    mask = hfc_mask(32, 32)
    for k in torch.unique(y).tolist():
        expected = result.attributions[y == k][:, mask].abs().mean(dim=1).mean().double()
        assert float(out.hfc_abs[k]) == pytest.approx(float(expected), rel=1e-6)
    assert out.num_classes <= len(torch.unique(y))
    ratio = significant_component_ratio(result, labels=y)
    assert ratio.pfc_ratio.shape == (32, 32) and bool(((ratio.pfc_ratio + ratio.nfc_ratio) <= 1).all())
    assert float(ratio.pfc_ratio.max()) > 0  # a trained model has components that help the true class


def test_classwise_pair_and_plots():
    from freqplug.report.plots import PlotView
    from freqplug.report.plots_curves import (classwise_pair, plot_classwise_hfc, plot_classwise_stage,
                                              plot_significant_components)

    hfc = [0.1, 0.4, 0.2, 0.3]
    metrics = {"standard": {"hfc_abs": hfc, "robust_accuracy": [0.9, 0.8, 0.9, 0.8], "overall_robust": 0.05},
               "robust": {"hfc_abs": [0.0, 0.0, 0.0, 0.0], "robust_accuracy": [0.8, 0.2, 0.6, 0.4],
                          "overall_robust": 0.5}}
    pair = classwise_pair(metrics)
    assert pair["standard"] == "standard" and pair["robust"] == "robust" and pair["num_classes"] == 4
    assert pair["pearson"] == pytest.approx(np.corrcoef(hfc, [0.8, 0.2, 0.6, 0.4])[0, 1])
    assert pair["spearman"] == pytest.approx(-1.0)
    figure = plot_classwise_stage(PlotView(names=list(metrics), metrics=metrics, arrays={}, settings={}))
    (ax,) = figure.axes
    assert "standard" in ax.get_title() and "robust" in ax.get_title() and ax.get_xlabel().startswith("mean |phi|")
    alone = plot_classwise_stage(PlotView(names=["standard"], metrics={"standard": metrics["standard"]}, arrays={},
                                          settings={}))
    assert alone.axes[0].get_legend_handles_labels()[1] == ["standard"]

    players = make_players("pairs", 4, 4)
    result = _result(torch.randn(4, players.num_players, generator=torch.Generator().manual_seed(2),
                                 dtype=torch.float64), players)
    labels = torch.tensor([0, 1, 2, 3])
    figure = plot_classwise_hfc(classwise_hfc_shapley(result, labels, robust_accuracy=[0.9, 0.1, 0.5, 0.3]))
    assert figure.axes[0].get_title().startswith("Pearson")
    figure = plot_significant_components(significant_component_ratio(result))
    assert figure.axes[0].get_legend_handles_labels()[1] == ["PFC", "NFC"]
