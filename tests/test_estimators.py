"""The estimator registry and the ``tree`` estimator (boosted-tree surrogate, issue 12).

Oracles: pure-Python enumeration of all 2^P coalitions (:func:`helpers.exact_shapley_oracle`) on the
surrogate's own predict function, XGBoost's own ``Booster.predict``, exact Shapley values of table games,
and a counting model for the evaluation budget.
"""

from __future__ import annotations

import logging
import sys
import warnings

import numpy as np
import pytest
import torch

from freqplug import FrequencyShapley
from freqplug.attributions import _tree_shapley
from freqplug.attributions._estimators import (
    REGISTRY,
    design_size,
    exact_design_values,
    exact_shapley,
    make_design,
    resolve_estimator,
)
from helpers import CountingModel, exact_shapley_oracle, tiny_cnn
from helpers.attributions import coalition_codes, random_game

pytest.importorskip("xgboost")


def design_values(design, table):
    """Values (1, K) of a table game (2^P,) on every coalition of a design."""
    coalitions = design.coalitions(torch.arange(design.num_coalitions))
    return table[coalition_codes(coalitions)][None]


PLAYERS = 4  # the symmetrized 4 x 4 patch grid: 10 players on 8 x 8 images


def images(n=2, seed=0):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------------------ the surrogate's exact values
def test_leaf_shapley_values_equal_enumeration_of_the_surrogate():
    p = 8
    rng = np.random.default_rng(0)
    coalitions = rng.random((60, p)) < 0.5
    surrogate = _tree_shapley.fit_surrogate(coalitions, rng.standard_normal(60), seed=0)

    table = surrogate.predict(exact_design_values(p).numpy())  # f on every coalition, one batched call

    def value(coalition):
        return float(table[sum(2**i for i in coalition)])

    oracle = np.array(exact_shapley_oracle(value, p))
    phi = surrogate.shapley()
    assert np.abs(phi).max() > 0.05  # a non-trivial surrogate
    np.testing.assert_allclose(phi, oracle, rtol=0, atol=1e-9)
    assert phi.sum() == pytest.approx(value(frozenset(range(p))) - value(frozenset()), abs=1e-12)


def test_float64_predict_reads_the_booster_as_xgboost_predicts():
    import xgboost

    p = 10
    rng = np.random.default_rng(1)
    x = (rng.random((80, p)) < 0.5).astype(np.float32)
    booster = xgboost.train(_tree_shapley.TREE_PARAMS, xgboost.DMatrix(x, label=rng.standard_normal(80)), 50)
    ensemble = _tree_shapley.TreeEnsemble.from_booster(booster, p, offset=0.0)
    fresh = (rng.random((200, p)) < 0.5).astype(np.float32)  # coalitions the trees were not fitted on
    np.testing.assert_allclose(ensemble.predict(fresh.astype(bool)), booster.predict(xgboost.DMatrix(fresh)),
                               rtol=1e-5, atol=1e-5)


def test_surrogate_and_estimate_are_bitwise_repeatable():
    p = 8
    table = random_game(p, seed=2)
    results = []
    for _ in range(2):
        design = make_design("tree", p, 20, torch.Generator().manual_seed(4))
        results.append(design.estimate(design_values(design, table)))
    assert torch.equal(results[0].values, results[1].values) and torch.equal(results[0].stderr, results[1].stderr)


# ------------------------------------------------------------------------------ the estimator
def test_exact_on_a_game_depth_limited_trees_represent():
    # v(S) = w0 [0 in S] + w1 [1 in S] + 2 [0 and 1 in S], 8 null players: one depth-2 tree. The estimate equals
    # the exact values up to XGBoost's float32 fitting floor (about 1e-6 of the values' spread).
    p = 10
    table_coalitions = exact_design_values(p).double()
    table = table_coalitions[:, 0] - 0.7 * table_coalitions[:, 1] + 2 * table_coalitions[:, 0] * table_coalitions[:, 1]
    exact = exact_shapley(table[None], p)[0]
    for seed in (0, 2):
        design = make_design("tree", p, 60, torch.Generator().manual_seed(seed))
        estimate = design.estimate(design_values(design, table))
        assert torch.allclose(estimate.values[0], exact, atol=1e-5), (seed, estimate.values[0] - exact)


def test_exactly_efficient_on_an_arbitrary_game():
    p = 9
    table = random_game(p, seed=5)
    design = make_design("tree", p, 2 * p, torch.Generator().manual_seed(0))
    values = design_values(design, table)
    estimate = design.estimate(values)
    assert estimate.values.dtype == torch.float64
    assert float(estimate.values.sum() - (values[0, 1] - values[0, 0])) == pytest.approx(0.0, abs=1e-12)


def test_residual_samples_are_unbiased_under_the_pair_design():
    # E_S[u(S)] over |S| uniform on 1..P-1, S uniform given its size, equals phi(r) - (r(N) - r(empty)) / P
    from math import comb

    from freqplug.attributions._estimators import _residual_samples

    p = 6
    table = random_game(p, seed=7)
    coalitions = exact_design_values(p)
    size = coalitions.sum(1)
    inner = (size > 0) & (size < p)
    probability = 1.0 / ((p - 1) * torch.tensor([comb(p, int(k)) for k in size[inner]], dtype=torch.float64))
    samples = torch.from_numpy(_residual_samples(coalitions[inner].numpy(), table[inner].numpy(), p))
    expected = exact_shapley(table[None], p)[0] - (table[-1] - table[0]) / p
    assert torch.allclose(probability @ samples, expected, atol=1e-12)


def test_standard_errors_cover_the_error():
    # a small noisy game (a linear part, a 3-way interaction and independent noise on every coalition)
    p = 8
    z = exact_design_values(p).double()
    weights = torch.randn(p, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    table = z @ weights + 1.5 * z[:, 0] * z[:, 3] * z[:, 5] + 0.3 * random_game(p, seed=3)
    exact = exact_shapley(table[None], p)[0]
    covered, covered_unbiased, errors = [], [], []
    for seed in range(6):
        design = make_design("tree", p, 32, torch.Generator().manual_seed(seed))
        parts = design.estimate_parts(design_values(design, table))
        error = (parts["values"][0] - exact).abs()
        covered.append((error <= 3 * parts["stderr"][0]).float())
        covered_unbiased.append(((parts["unbiased"][0] - exact).abs() <= 3 * parts["stderr"][0]).float())
        errors.append(float(error.norm()))
    # the blend and the unbiased cross-fitted estimate it leans on are both within 3 SE almost always
    assert float(torch.cat(covered).mean()) >= 0.9 and float(torch.cat(covered_unbiased).mean()) >= 0.9
    assert max(errors) > 1e-3  # the game is noisy enough for the check to mean something


def test_budget_below_2p_is_refused_and_auto_picks_by_players():
    with pytest.raises(ValueError, match="n_samples >= 14"):
        design_size("tree", 8, 12)
    assert design_size("tree", 8, 14) == 16  # K = 2 + n_samples = 2P
    assert resolve_estimator("auto", 7, 10) == ("antithetic", 10)  # P < 8
    assert resolve_estimator("auto", 8, 1) == ("tree", 14)  # K = 2 + 2 (P - 1): what antithetic would spend
    assert resolve_estimator("auto", 64, 5) == ("tree", 6 * 63)
    assert resolve_estimator("kernel", 64, 5) == ("kernel", 5)
    for name, spec in REGISTRY.items():
        assert spec.name == name and design_size(name, 16, spec.default_n_samples(16)) >= 2


def test_fallback_without_xgboost_warns_once_and_runs_antithetic(monkeypatch):
    monkeypatch.setitem(sys.modules, "xgboost", None)  # `import xgboost` now fails, as when not installed
    model = tiny_cnn()
    x = images(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = FrequencyShapley(model).attribute(x, target=1, players=PLAYERS, n_samples=2, return_result=True)
    notices = [w for w in caught if "freqplug[shapley]" in str(w.message)]
    assert len(notices) == 1 and "\n" not in str(notices[0].message)
    assert result.estimator == "antithetic"
    reference = FrequencyShapley(model).attribute(x, target=1, players=PLAYERS, n_samples=2,
                                                  estimator="antithetic", return_result=True)
    assert torch.equal(result.values, reference.values)
    with pytest.raises(ImportError, match=r"freqplug\[shapley\]"):
        FrequencyShapley(model).attribute(x, target=1, players=PLAYERS, estimator="tree")


# ------------------------------------------------------------------------------ end to end
def test_default_is_tree_counts_evaluations_and_is_efficient():
    model = CountingModel(tiny_cnn())
    x = images(2)
    result = FrequencyShapley(model).attribute(x, target=torch.tensor([0, 3]), players=PLAYERS, n_samples=2,
                                               return_result=True)
    assert result.estimator == "tree" and result.n_samples == 18
    assert result.n_evaluations == model.rows == 2 * (2 + 18) == 2 * design_size("antithetic", 10, 2)
    assert float(result.efficiency_gap.abs().max()) < 1e-10
    assert torch.equal(result.sign_determined, result.values.abs() > 2 * result.stderr)


def test_target_stderr_samples_until_reached_and_counts_every_row(caplog):
    model = CountingModel(tiny_cnn())
    x = images(1)
    explainer = FrequencyShapley(model)
    first = explainer.attribute(x, target=2, players=PLAYERS, estimator="antithetic", n_samples=4,
                                return_result=True)
    assert float(first.relative_stderr[0]) > 0.1
    model.rows = 0
    grown = explainer.attribute(x, target=2, players=PLAYERS, estimator="antithetic", n_samples=4,
                                target_stderr=0.1, return_result=True)
    assert float(grown.relative_stderr[0]) <= 0.1 and grown.n_samples > 4
    assert grown.n_evaluations == model.rows == design_size("antithetic", 10, grown.n_samples)
    # the first rounds are the first call's coalitions: growing only appends
    assert grown.value_full.equal(first.value_full)
    # a cap stops it, with a warning in the log, within the cap
    model.rows = 0
    with caplog.at_level(logging.WARNING, logger="freqplug.attributions"):
        capped = explainer.attribute(x, target=2, players=PLAYERS, estimator="antithetic", n_samples=4,
                                     target_stderr=1e-6, max_evaluations=100, return_result=True)
    assert capped.n_evaluations == model.rows <= 100 and "not reached" in caplog.text
    with pytest.raises(ValueError, match="target_stderr"):
        explainer.attribute(x, target=2, players=PLAYERS, estimator="kernel", target_stderr=0.1)
    with pytest.raises(ValueError, match="target_stderr"):
        explainer.attribute(x, target=2, players=PLAYERS, target_stderr=0.0)


def test_undetermined_signs_are_neither_pfc_nor_nfc():
    result = FrequencyShapley(tiny_cnn()).attribute(images(1), target=0, players=PLAYERS, estimator="antithetic",
                                                    n_samples=2, return_result=True)
    undetermined = ~result.sign_determined[0]
    assert bool(undetermined.any())  # two permutations leave some signs open
    bins = result.players.player_map
    for name, sign in (("positive_mask", 1), ("negative_mask", -1)):
        strict = getattr(result, name)(determined_only=True)[0]
        loose = getattr(result, name)(determined_only=False)[0]
        expected = (result.values[0] * sign > 0) & result.sign_determined[0]
        assert torch.equal(strict[bins >= 0], expected[bins[bins >= 0]])
        assert torch.equal(loose, result.attributions[0] * sign > 0)
    with pytest.warns(FutureWarning, match="determined_only"):
        assert torch.equal(result.positive_mask()[0] if bool(((result.values[0] > 0) & undetermined).any())
                           else result.negative_mask()[0],
                           (result.attributions[0] > 0) if bool(((result.values[0] > 0) & undetermined).any())
                           else (result.attributions[0] < 0))


def test_tree_values_do_not_depend_on_batching_or_chunking():
    # the same coalitions for every image and one fit per image: an image's values are the same alone or in a
    # batch, whatever perturbations_per_eval
    model = tiny_cnn()
    x = images(2, seed=3)
    explainer = FrequencyShapley(model)
    together = explainer.attribute(x, target=torch.tensor([1, 2]), players=PLAYERS, n_samples=2,
                                   perturbations_per_eval=7, return_result=True)
    alone = explainer.attribute(x[1:], target=2, players=PLAYERS, n_samples=2, return_result=True)
    assert together.estimator == alone.estimator == "tree"
    assert torch.allclose(together.values[1], alone.values[0], rtol=0, atol=1e-12)
    assert torch.allclose(together.stderr[1], alone.stderr[0], rtol=0, atol=1e-12)
