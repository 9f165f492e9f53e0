"""Cross-model correlation (freqplug.report.comparison): hand-built measures with known correlations,
and a real three-model profile whose report renders the section."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import tiny_cnn

from freqplug.report import profile
from freqplug.report.comparison import MIN_MODELS, cross_model_correlation, profile_measures


def _numpy_pearson(a, b):
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


def _numpy_spearman(a, b):  # no ties in these tests: ranks by argsort of argsort
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


MEASURES = {
    "a": {"SRS": 0.10, "robust accuracy": 0.05, "B_low": 0.20, "HF attack success": 0.9},
    "b": {"SRS": 0.30, "robust accuracy": 0.20, "B_low": 0.45, "HF attack success": 0.7},
    "c": {"SRS": 0.35, "robust accuracy": 0.15, "B_low": 0.40, "HF attack success": 0.8},
    "d": {"SRS": 0.60, "robust accuracy": 0.45, "B_low": 0.70, "HF attack success": 0.2},
    "e": {"SRS": 0.55, "robust accuracy": 0.50, "B_low": 0.65, "HF attack success": 0.4},
}


def test_correlations_match_numpy_and_scipy():
    from scipy import stats

    result = cross_model_correlation(MEASURES)
    assert [(r.x, r.y) for r in result.rows] == [("SRS", "robust accuracy"), ("B_low", "robust accuracy"),
                                                  ("HF attack success", "robust accuracy")]  # no corruption stage
    for row in result.rows:
        a = [MEASURES[m][row.x] for m in "abcde"]
        b = [MEASURES[m][row.y] for m in "abcde"]
        assert row.n == 5 and row.models == list("abcde")
        assert row.pearson == pytest.approx(_numpy_pearson(a, b), abs=1e-12)
        assert row.spearman == pytest.approx(_numpy_spearman(a, b), abs=1e-12)
        assert row.pearson_p == pytest.approx(stats.pearsonr(a, b)[1], rel=1e-9)
    assert result["HF attack success", "robust accuracy"].pearson < -0.9  # the sign is kept
    assert json.loads(json.dumps(result.to_dict()))["correlations"][0]["n"] == 5


def test_exact_rank_agreement_gives_spearman_one_and_pearson_below_one():
    # y = exp(10 x): same order, far from a line.
    measures = {f"m{i}": {"SRS": x, "robust accuracy": math.exp(10 * x)} for i, x in enumerate([0.0, 0.2, 0.5, 0.9])}
    row = cross_model_correlation(measures)["SRS", "robust accuracy"]
    assert row.spearman == pytest.approx(1.0, abs=1e-12)
    assert row.pearson < 0.95
    reversed_ = {m: {"SRS": v["SRS"], "robust accuracy": -v["robust accuracy"]} for m, v in measures.items()}
    assert cross_model_correlation(reversed_)["SRS", "robust accuracy"].spearman == pytest.approx(-1.0, abs=1e-12)


def test_fewer_than_three_models_is_not_computed():
    two = {m: MEASURES[m] for m in "ab"}
    row = cross_model_correlation(two)["SRS", "robust accuracy"]
    assert row.n == 2 and row.pearson is None and row.spearman is None
    assert row.note == "n/a, need >= 3 models (have 2)"
    head, body = cross_model_correlation(two).table()
    assert body[0][3] == "n/a, need >= 3 models (have 2)"


def test_missing_measures_reduce_n_and_constants_are_reported():
    measures = {m: dict(v) for m, v in MEASURES.items()}
    measures["c"]["robust accuracy"] = None  # not measured for c
    row = cross_model_correlation(measures)["SRS", "robust accuracy"]
    assert row.models == ["a", "b", "d", "e"]
    a = [MEASURES[m]["SRS"] for m in "abde"]
    b = [MEASURES[m]["robust accuracy"] for m in "abde"]
    assert row.pearson == pytest.approx(_numpy_pearson(a, b), abs=1e-12)
    constant = {m: {"SRS": v["SRS"], "robust accuracy": 0.5} for m, v in MEASURES.items()}
    row = cross_model_correlation(constant)["SRS", "robust accuracy"]
    assert row.pearson is None and row.note == "n/a, robust accuracy is the same for every model"


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match=r"measures\['a'\]\['SRS'\].*finite"):
        cross_model_correlation({"a": {"SRS": float("nan")}, "b": {}, "c": {}})
    with pytest.raises(TypeError, match=r"measures\['a'\]\['SRS'\].*number"):
        cross_model_correlation({"a": {"SRS": True}, "b": {}, "c": {}})
    with pytest.raises(ValueError, match="`pairs` names the measure 'corruption accuracy'"):
        cross_model_correlation(MEASURES, pairs=[("SRS", "corruption accuracy")])
    with pytest.raises(ValueError, match="min_models"):
        cross_model_correlation(MEASURES, min_models=2)
    with pytest.raises(TypeError, match="measures"):
        cross_model_correlation([1, 2, 3])
    assert MIN_MODELS == 3


def test_profile_measures_reads_stages_and_ignores_skipped_ones():
    metrics = {"schema_version": 2, "models": {
        "x": {"autoattack": {"robust_accuracy": 0.4}, "band_shapley": {"srs": 0.7},
              "hf_attack": {"success_rate": None},
              "frequency_bias": {"skipped": "needs ...", "b_low": 0.5}},  # a skipped stage gives no number
        # the corruptions stage's layout: accuracy per corruption (averaged over severities)
        "y": {"corruptions": {"mean_accuracy": {"fog": 0.5, "gaussian_noise": 0.8}}, "frequency_bias": {"b_low": 0.3}}}}
    assert profile_measures(metrics) == {"x": {"robust accuracy": 0.4, "SRS": 0.7},
                                         "y": {"corruption accuracy": pytest.approx(0.65), "B_low": 0.3}}
    with pytest.raises(TypeError, match="result"):
        profile_measures({"no": "models"})


@pytest.mark.slow
def test_three_model_profile_renders_the_section(tmp_path, cifar_samples):
    x, y = cifar_samples
    x, y = x[:4], y[:4] % 4
    models = {f"net{s}": tiny_cnn(seed=s, dtype=torch.float32) for s in range(3)}
    stages = ["clean_accuracy", "autoattack", "corruptions", "frequency_bias", "hf_attack"]
    result = profile(models, x, y, out=tmp_path, preset="fast", stages=stages, quiet=True)
    measures = profile_measures(result)
    b_low = [result.metrics["models"][n]["frequency_bias"]["b_low"] for n in models]
    robust = [result.metrics["models"][n]["autoattack"]["robust_accuracy"] for n in models]
    assert [measures[n]["B_low"] for n in models] == b_low
    report = (tmp_path / "report.md").read_text()
    assert "### Cross-model correlation" in report
    line = next(row for row in report.splitlines() if row.startswith("| B_low | robust accuracy |"))
    assert len(set(robust)) > 1  # these seeds give different robust accuracies, so r is computed
    assert f"{_numpy_pearson(b_low, robust):+.3f}" in line
    corrupted = [sum(m.values()) / len(m) for m in
                 (result.metrics["models"][n]["corruptions"]["mean_accuracy"] for n in models)]
    assert [measures[n]["corruption accuracy"] for n in models] == pytest.approx(corrupted)
    line = next(row for row in report.splitlines() if row.startswith("| B_low | corruption accuracy |"))
    if len(set(corrupted)) > 1:
        assert f"{_numpy_pearson(b_low, corrupted):+.3f}" in line
    assert (tmp_path / "cross_model_correlation.png").exists()
    assert "Cross-model correlation" in (tmp_path / "report.html").read_text()

    two = dict(list(models.items())[:2])
    profile(two, x, y, out=tmp_path / "two", preset="fast", stages=["frequency_bias"], quiet=True)
    assert "n/a, need >= 3 models (this run has 2)" in (tmp_path / "two" / "report.md").read_text()
    assert "n/a, need &gt;= 3 models (this run has 2)" in (tmp_path / "two" / "report.html").read_text()
