import itertools
import logging
import warnings

import pytest
import torch

from freqplug import FrequencyShapley
from freqplug.attributions import (
    centered_attributions,
    negative_frequency_mask,
    positive_frequency_mask,
    radial_average,
    reconstruct_from_mask,
)
from freqplug.attributions._estimators import PermutationDesign, exact_design_values, exact_shapley
from freqplug.spectral import coalition_images, conjugate_pair_players, is_conjugate_symmetric, make_players
from helpers import CountingModel, exact_shapley_oracle, linear_model, tiny_cnn
from helpers.attributions import coalition_codes, game_value, random_game


def images(n=3, c=3, h=8, w=8, seed=0, dtype=torch.float64):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def exact_values(model, x, target, players):
    coalitions = exact_design_values(players.num_players)
    with torch.no_grad():
        out = model(coalition_images(x, players, coalitions).flatten(0, 1))
    out = out.reshape(x.shape[0], -1, out.shape[1])
    v = out[torch.arange(x.shape[0]), :, target]  # (N, 2^P)
    return exact_shapley(v - v[:, :1], players.num_players)


def _table_values(design, table):
    """The game ``table`` (2^P,) evaluated on every coalition of ``design`` -> (1, K)."""
    coalitions = design.coalitions(torch.arange(design.num_coalitions))
    return table[coalition_codes(coalitions)][None]


@pytest.mark.parametrize("antithetic", [False, True])
def test_permutation_designs_over_every_permutation_give_the_exact_values(antithetic):
    """A design holding all P! orders is exact for ANY game: checks coalitions() and estimate() together
    against the enumeration oracle (a prefix off by one, a wrong gather or pairing breaks it)."""
    p = 4
    table = random_game(p, seed=1)
    exact = torch.tensor(exact_shapley_oracle(game_value(table), p), dtype=torch.float64)
    orders = [list(o) for o in itertools.permutations(range(p))]
    if antithetic:  # rows come in (order, reversed order) pairs
        firsts = [o for o in orders if o < o[::-1]]
        orders = [row for o in firsts for row in (o, o[::-1])]
    ranks = torch.tensor([[order.index(i) for i in range(p)] for order in orders])
    design = PermutationDesign(p, len(orders), torch.Generator().manual_seed(0), antithetic=antithetic)
    design.ranks = ranks
    estimate = design.estimate(_table_values(design, table))
    assert torch.allclose(estimate.values[0], exact, atol=1e-12)
    assert estimate.num_samples == (len(orders) // 2 if antithetic else len(orders))


def test_permutation_design_coalitions_are_the_prefixes_of_its_orders():
    p, m = 5, 6
    design = PermutationDesign(p, m, torch.Generator().manual_seed(3), antithetic=False)
    coalitions = design.coalitions(torch.arange(design.num_coalitions))
    assert design.num_coalitions == 2 + m * (p - 1) and coalitions.shape == (design.num_coalitions, p)
    assert not coalitions[0].any() and coalitions[1].all()
    table = random_game(p, seed=2)
    values = table[coalition_codes(coalitions)]
    phi = torch.zeros(p, dtype=torch.float64)
    samples = []
    for j in range(m):
        order = sorted(range(p), key=lambda i: int(design.ranks[j, i]))
        assert sorted(order) == list(range(p))  # a permutation
        sample = [0.0] * p
        for k in range(1, p):
            assert set(coalitions[2 + j * (p - 1) + k - 1].nonzero().flatten().tolist()) == set(order[:k])
        prefix = [0] + [sum(2**i for i in order[:k]) for k in range(1, p + 1)]
        for k, player in enumerate(order):
            sample[player] = float(table[prefix[k + 1]] - table[prefix[k]])
        samples.append(sample)
    samples = torch.tensor(samples, dtype=torch.float64)
    phi = samples.mean(0)
    estimate = design.estimate(values[None])
    assert torch.allclose(estimate.values[0], phi, atol=1e-12)
    assert torch.allclose(estimate.stderr[0], samples.std(0) / m**0.5, atol=1e-12)


@pytest.mark.parametrize("estimator,n_samples", [("antithetic", 2), ("owen", 2), ("kernel", 8)])
def test_two_player_games_are_exact_end_to_end(estimator, n_samples):
    """With two players these designs cover the whole game: FrequencyShapley must return the exact values of
    the model on the masked images (computed here by the enumeration oracle on coalition_images)."""
    x = images(n=3)
    model = tiny_cnn()
    target = [0, 3, 1]
    players = make_players(("bands", 2), 8, 8)
    result = FrequencyShapley(model).attribute(x, target=target, players=("bands", 2), n_samples=n_samples,
                                               estimator=estimator, seed=5, return_result=True)
    coalitions = torch.tensor([[False, False], [True, False], [False, True], [True, True]])
    with torch.no_grad():
        out = model(coalition_images(x, players, coalitions).flatten(0, 1)).reshape(3, 4, -1)
    for i in range(3):
        exact = exact_shapley_oracle(game_value(out[i, :, target[i]]), 2)
        assert torch.allclose(result.values[i], torch.tensor(exact, dtype=torch.float64), atol=1e-10), i
    assert torch.all(result.attributions[:, 0, 0] == 0)  # DC is never a player


def test_linear_model_values_are_exact_for_every_estimator():
    x = images(n=2, h=6, w=6)
    model = linear_model(3, 6, 6)
    players = conjugate_pair_players(6, 6)
    p = players.num_players
    # phi_i = w . (component image of player i), the contribution of that player's bins
    one_hot = torch.eye(p, dtype=torch.bool)
    empty = torch.zeros(1, p, dtype=torch.bool)
    components = coalition_images(x, players, one_hot) - coalition_images(x, players, empty)
    with torch.no_grad():
        expected = (model(components.flatten(0, 1)) - model[1].bias).reshape(2, p, 3)[:, :, 2]
    for estimator, n_samples in [("permutation", 1), ("antithetic", 2), ("kernel", 4 * p), ("owen", 2)]:
        result = FrequencyShapley(model).attribute(x, target=2, n_samples=n_samples, estimator=estimator, seed=1,
                                                   return_result=True)
        assert torch.allclose(result.values, expected, atol=1e-10), estimator


def test_converges_to_exact_values():
    x = images(n=2, h=8, w=8, seed=3)
    model = tiny_cnn(seed=2)
    players = make_players(("bands", 4, "l2"), 8, 8)
    exact = exact_values(model, x, torch.tensor([0, 3]), players)
    fs = FrequencyShapley(model)
    errors = {}
    for estimator, budgets in [("antithetic", (2, 200)), ("permutation", (2, 200)), ("kernel", (16, 2000)),
                               ("owen", (2, 200))]:
        errs = []
        for budget in budgets:
            phi = fs.attribute(x, target=torch.tensor([0, 3]), players=players, n_samples=budget,
                               estimator=estimator, seed=0, return_result=True).values
            errs.append(float((phi - exact).norm() / exact.norm()))
        errors[estimator] = errs
        assert errs[1] < 0.05, (estimator, errs)
    assert errors["permutation"][1] < errors["permutation"][0]


def test_standard_errors_cover_the_error():
    x = images(n=1, h=8, w=8, seed=4)
    model = tiny_cnn(seed=5)
    players = make_players(("bands", 4, "l2"), 8, 8)
    exact = exact_values(model, x, torch.tensor([1]), players)
    result = FrequencyShapley(model).attribute(x, target=1, players=players, n_samples=64, estimator="permutation",
                                               seed=0, return_result=True)
    z = ((result.values - exact).abs() / result.stderr).max()
    assert z < 5


def test_owen_is_exact_for_pairwise_games_and_counts_evaluations():
    """Antithetic Owen sampling is exact for games with interactions of order <= 2."""
    from freqplug.attributions._estimators import OwenDesign

    p = 6
    g = torch.Generator().manual_seed(0)
    linear = torch.randn(p, generator=g, dtype=torch.float64)
    pairwise = torch.randn(p, p, generator=g, dtype=torch.float64)
    pairwise = torch.triu(pairwise, 1)
    design = OwenDesign(p, 2, torch.Generator().manual_seed(1))
    z = design.coalitions(torch.arange(design.num_coalitions)).double()
    values = z @ linear + ((z @ pairwise) * z).sum(1)
    exact = linear + 0.5 * (pairwise + pairwise.T).sum(1)
    assert design.num_coalitions == 2 + 2 * (p + 1)
    assert torch.allclose(design.estimate(values[None]).values[0], exact, atol=1e-12)


def test_perturbations_per_eval_invariance_and_forward_call_count():
    x = images(n=2)
    model = tiny_cnn()
    calls = []

    def forward(z):
        calls.append(z.shape[0])
        return model(z)

    fs = FrequencyShapley(forward)
    reference = None
    for ppe in (1, 7, 64, 1000):
        calls.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the changed meaning; tested below
            result = fs.attribute(x, target=0, players=("bands", 3), n_samples=4, perturbations_per_eval=ppe,
                                  seed=3, return_result=True)
        k = 2 + 4 * (3 - 1)  # documented: K = 2 + n_samples (P - 1) per image
        assert result.n_evaluations == 2 * k == sum(calls)
        # Captum's meaning: each call holds at most ppe coalitions of each of the N = 2 images
        assert len(calls) == result.n_forward_calls == -(-k // ppe)
        assert max(calls) <= ppe * 2
        if reference is None:
            reference = result.attributions
        assert torch.allclose(result.attributions, reference, atol=1e-12)


def test_same_seed_same_output_and_different_seed_differs():
    x = images(n=1)
    fs = FrequencyShapley(tiny_cnn())
    a = fs.attribute(x, target=0, n_samples=2, seed=11)
    b = fs.attribute(x, target=0, n_samples=2, seed=11)
    c = fs.attribute(x, target=0, n_samples=2, seed=12)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_progress_bar_text(capsys):
    FrequencyShapley(tiny_cnn()).attribute(images(n=1), target=0, players=("bands", 3), n_samples=2,
                                           perturbations_per_eval=2, show_progress=True, seed=0)
    err = capsys.readouterr().err
    # the bar counts evaluations: K = 2 + 2 * (3 - 1) = 6 masked images
    assert "Frequency Shapley attribution" in err and "6/6" in err


def test_float32_inputs_keep_dtype(reference_model, cifar_samples):
    x, y = cifar_samples
    result = FrequencyShapley(reference_model).attribute(x[:2], target=y[:2], players=("bands", 4), n_samples=2,
                                                         seed=0, return_result=True)
    assert result.attributions.dtype == torch.float32
    assert result.efficiency_gap.abs().max() < 1e-4
    # v(N) is the model's logit of the target on the unmasked image
    with torch.no_grad():
        logits = reference_model(x[:2])[torch.arange(2), y[:2]]
    assert torch.allclose(result.value_full.float(), logits, atol=1e-4)


def test_baselines():
    x = images(n=2)
    other = images(n=2, seed=9)
    fs = FrequencyShapley(tiny_cnn())
    kwargs = dict(target=0, players=("bands", 3), n_samples=2, seed=0, return_result=True)
    zero = fs.attribute(x, **kwargs)
    assert torch.equal(fs.attribute(x, baselines="zero", **kwargs).values, zero.values)
    replaced = fs.attribute(x, baselines=other, **kwargs)
    gaussian = fs.attribute(x, baselines="gaussian", noise_std=0.1, **kwargs)
    for r in (replaced, gaussian):
        assert r.efficiency_gap.abs().max() < 1e-9
        assert not torch.allclose(r.values, zero.values)
    assert torch.equal(gaussian.values, fs.attribute(x, baselines="gaussian", noise_std=0.1, **kwargs).values)


def test_bad_inputs_raise_clear_errors():
    x = images(n=2)
    fs = FrequencyShapley(tiny_cnn())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fs.attribute(x * 3, target=0)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fs.attribute(nan, target=0)
    with pytest.raises(ValueError, match=r"target.*\[0, 4\)"):
        fs.attribute(x, target=4, players=("bands", 3), n_samples=1)
    with pytest.raises(ValueError, match="target"):
        fs.attribute(x, target=[0, 1, 2])
    with pytest.raises(ValueError, match="target"):
        fs.attribute(x, target=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="estimator"):
        fs.attribute(x, target=0, estimator="exact-ish")
    with pytest.raises(ValueError, match="n_samples >= "):
        fs.attribute(x, target=0, estimator="kernel", n_samples=10)
    pmap = conjugate_pair_players(8, 8).player_map
    bad = pmap.clone()
    bad[0, 1], bad[0, 7] = 0, 1
    with pytest.raises(ValueError, match="conjugate-closed"):
        fs.attribute(x, target=0, players=bad)
    with pytest.raises(ValueError, match="DC"):
        fs.attribute(x, target=0, players=conjugate_pair_players(8, 8, include_dc=True).player_map)
    with pytest.raises(ValueError, match="16x16"):
        fs.attribute(x, target=0, players=conjugate_pair_players(16, 16))
    with pytest.raises(TypeError, match="callable"):
        FrequencyShapley("model")
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        fs.attribute(x, target=0, perturbations_per_eval=0)


def test_large_images_run_with_bounded_chunks():
    x, _ = __import__("freqplug").data.sample_images("imagenet")
    x = x[:1].double()
    model = tiny_cnn()
    seen = []

    def forward(z):
        seen.append(z.shape[0])
        return model(z)

    result = FrequencyShapley(forward).attribute(x, target=0, players=("bands", 4), n_samples=2,
                                                 perturbations_per_eval=3, seed=0, return_result=True)
    assert max(seen) <= 3 and result.attributions.shape == (1, 224, 224)
    assert result.efficiency_gap.abs().max() < 1e-9


def test_pfc_nfc_helpers_reconstruct_the_image():
    x = images(n=2)
    attributions = FrequencyShapley(tiny_cnn()).attribute(x, target=0, n_samples=2, seed=0)
    pfc, nfc = positive_frequency_mask(attributions), negative_frequency_mask(attributions)
    assert is_conjugate_symmetric(pfc) and is_conjugate_symmetric(nfc)
    assert not (pfc & nfc).any()
    zero = ~(pfc | nfc)
    parts = (reconstruct_from_mask(x, pfc) + reconstruct_from_mask(x, nfc)
             + reconstruct_from_mask(x, zero, include_dc=True))
    assert torch.allclose(parts, x, atol=1e-12)
    assert centered_attributions(attributions)[:, 4, 4].abs().sum() == 0  # DC at the centre
    assert radial_average(attributions).shape == (2, 7)


# ---------------------------------------------------------------------------- cost and memory
def test_default_players_follow_the_image_size():
    fs = FrequencyShapley(tiny_cnn())
    assert fs.players(8, 8).num_players == conjugate_pair_players(8, 8).num_players == 33
    assert fs.players(32, 32).num_players == 513  # pairs up to 32x32
    assert fs.players(64, 64).num_players == fs.players(224, 224).num_players == 136  # 16x16 patch grid above


def _mean_colour(z):  # a cheap real forward function: (R, 3) channel means
    return z.mean(dim=(2, 3))


class _StopAtFirstCall(Exception):
    pass


def test_224_defaults_stay_within_the_limit_with_bounded_chunks(caplog):
    """A 224x224 call with every default: 136 players, 1,352 evaluations announced before the first
    model call, 64 images per call. The run is stopped at its first call (the rest is the same loop)."""
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    seen = []

    def forward(z):
        seen.append((z.shape[0], [r.getMessage() for r in caplog.records]))
        raise _StopAtFirstCall

    with caplog.at_level(logging.INFO, logger="freqplug.attributions"), \
            pytest.warns(FutureWarning, match="default `players` for 224x224"), pytest.raises(_StopAtFirstCall):
        FrequencyShapley(forward).attribute(x, target=0)
    rows, messages = seen[0]
    assert rows == 64
    assert any("136 players" in m and "1,352 model evaluations" in m for m in messages)  # 2 + 10 x 135


def test_budgets_above_the_limit_are_refused_before_any_allocation_or_call():
    x = torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    counted = CountingModel(_mean_colour)
    fs = FrequencyShapley(counted)
    # the old default (pairs) at 224x224: 8 x (2 + 10 x 25088) = 2,007,056 evaluations > 2,000,000
    with pytest.raises(ValueError, match=r"2,007,056 model evaluations.*max_evaluations.*players=16"):
        fs.attribute(x, target=0, players="pairs")
    with pytest.raises(ValueError, match="limited to 1024 players"):  # kernel at 224x224 asked for GBs before
        fs.attribute(x[:1], target=0, players="pairs", estimator="kernel", max_evaluations=float("inf"))
    assert counted.calls == 0
    with pytest.raises(ValueError, match="`max_evaluations` must be a positive number"):
        fs.attribute(x[:1], target=0, players=4, max_evaluations=0)


def test_design_setup_memory_is_bounded_by_the_caps():
    from freqplug.attributions._estimators import (
        KERNEL_MAX_DESIGN_ENTRIES,
        KERNEL_MAX_PLAYERS,
        KernelDesign,
        OwenDesign,
        design_size,
    )

    g = torch.Generator().manual_seed(0)
    kernel = KernelDesign(KERNEL_MAX_PLAYERS, 8 * KERNEL_MAX_PLAYERS, g)
    assert kernel.nbytes() <= KERNEL_MAX_DESIGN_ENTRIES  # one bool per (coalition, player): 8 MB
    with pytest.raises(ValueError, match="more than 8,388,608 entries"):
        design_size("kernel", 512, 20_000)
    # permutation and Owen designs hold (n_samples, P) entries: bounded by the evaluation budget itself
    permutation = PermutationDesign(25089, 10, g, antithetic=True)
    assert permutation.nbytes() == 10 * 25089 * 8 and design_size("antithetic", 25089, 10) == 2 + 10 * 25088
    assert OwenDesign(25089, 10, g).nbytes() == 10 * 25089


def test_evaluation_count_is_logged_before_the_first_call(caplog):
    model = tiny_cnn()
    logged_at_first_call = []

    def forward(z):
        if not logged_at_first_call:
            logged_at_first_call.append([r.getMessage() for r in caplog.records])
        return model(z)

    with caplog.at_level(logging.INFO, logger="freqplug.attributions"):
        FrequencyShapley(forward).attribute(images(n=2), target=0, players=("bands", 3), n_samples=4)
    assert any("20 model evaluations" in m for m in logged_at_first_call[0])  # 2 x (2 + 4 x 2)


# ---------------------------------------------------------------------------- vocabulary
def test_perturbations_per_eval_warns_only_where_its_meaning_changed():
    fs = FrequencyShapley(tiny_cnn())
    kwargs = dict(target=0, players=("bands", 3), n_samples=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = fs.attribute(images(n=2), **kwargs)  # default: no warning
        fs.attribute(images(n=1), perturbations_per_eval=100, **kwargs)  # N = 1: both meanings agree
        fs.attribute(images(n=2), perturbations_per_eval=32, **kwargs)  # calls of 64 images: no bigger than before
    with pytest.warns(FutureWarning, match=r"33 x 2 = 66 masked images"):
        explicit = fs.attribute(images(n=2), perturbations_per_eval=33, **kwargs)
    assert torch.allclose(explicit, default, atol=1e-12)


def test_seed_none_draws_a_fresh_recorded_seed():
    fs = FrequencyShapley(tiny_cnn())
    kwargs = dict(target=0, players=("bands", 3), n_samples=2, return_result=True)
    a, b = fs.attribute(images(n=1), seed=None, **kwargs), fs.attribute(images(n=1), seed=None, **kwargs)
    assert a.seed != b.seed
    again = fs.attribute(images(n=1), seed=a.seed, **kwargs)
    assert torch.equal(again.values, a.values)
    assert fs.attribute(images(n=1), **kwargs).seed == 0  # the default seed
