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
from freqplug.attributions._estimators import exact_design_values, exact_shapley
from freqplug.spectral import coalition_images, conjugate_pair_players, is_conjugate_symmetric, make_players
from helpers import linear_model, tiny_cnn


def images(n=3, c=3, h=8, w=8, seed=0, dtype=torch.float64):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def exact_values(model, x, target, players):
    coalitions = exact_design_values(players.num_players)
    with torch.no_grad():
        out = model(coalition_images(x, players, coalitions).flatten(0, 1)).reshape(x.shape[0], -1, model(x[:1]).shape[1])
    v = out[torch.arange(x.shape[0]), :, target]  # (N, 2^P)
    return exact_shapley(v - v[:, :1], players.num_players)


@pytest.mark.parametrize("estimator,n_samples", [("permutation", 3), ("antithetic", 4), ("kernel", 200), ("owen", 4)])
def test_efficiency_per_image(estimator, n_samples):
    x = images()
    model = tiny_cnn()
    result = FrequencyShapley(model).attribute(x, target=1, n_samples=n_samples, estimator=estimator, seed=0,
                                               players=("bands", 3), return_result=True)
    assert result.efficiency_gap.abs().max() < 1e-9
    assert result.values.shape == (3, 3) and result.stderr.shape == (3, 3)
    assert result.attributions.shape == (3, 8, 8)
    assert torch.all(result.attributions[:, 0, 0] == 0)  # DC is never a player


def test_every_permutation_sample_is_efficient():
    from freqplug.attributions._estimators import PermutationDesign

    design = PermutationDesign(5, 6, torch.Generator().manual_seed(0), antithetic=False)
    values = torch.randn(2, design.num_coalitions, dtype=torch.float64)
    n, m, p = 2, 6, 5
    inner = values[:, 2:].reshape(n, m, p - 1)
    prefix = torch.cat([values[:, None, :1].expand(n, m, 1), inner, values[:, None, 1:2].expand(n, m, 1)], 2)
    samples = torch.gather(prefix[:, :, 1:] - prefix[:, :, :-1], 2, design.ranks[None].expand(n, m, p))
    assert torch.allclose(samples.sum(2), (values[:, 1] - values[:, 0])[:, None].expand(n, m))


def test_linear_model_values_are_exact_for_every_estimator():
    x = images(n=2, h=6, w=6)
    model = linear_model(3, 6, 6)
    players = conjugate_pair_players(6, 6)
    p = players.num_players
    # phi_i = w . (component image of player i), the contribution of that player's bins
    one_hot = torch.eye(p, dtype=torch.bool)
    components = coalition_images(x, players, one_hot) - coalition_images(x, players, torch.zeros(1, p, dtype=torch.bool))
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
    linear, pairwise = torch.randn(p, generator=g, dtype=torch.float64), torch.randn(p, p, generator=g, dtype=torch.float64)
    pairwise = torch.triu(pairwise, 1)
    design = OwenDesign(p, 2, torch.Generator().manual_seed(1))
    z = design.coalitions(torch.arange(design.num_coalitions)).double()
    values = z @ linear + ((z @ pairwise) * z).sum(1)
    exact = linear + 0.5 * (pairwise + pairwise.T).sum(1)
    assert design.num_coalitions == 2 + 2 * (p + 1)
    assert torch.allclose(design.estimate(values[None]).values[0], exact, atol=1e-12)


def test_targets_int_list_tensor_agree_with_per_example_runs():
    x = images(n=3)
    model = tiny_cnn()
    fs = FrequencyShapley(model)
    kwargs = dict(players=("bands", 3), n_samples=4, seed=7)
    by_tensor = fs.attribute(x, target=torch.tensor([0, 2, 1]), **kwargs)
    by_list = fs.attribute(x, target=[0, 2, 1], **kwargs)
    assert torch.equal(by_tensor, by_list)
    for i, t in enumerate([0, 2, 1]):
        single = fs.attribute(x[i:i + 1], target=t, **kwargs)
        assert torch.allclose(single[0], by_tensor[i], atol=1e-12)
    by_int = fs.attribute(x, target=1, **kwargs)
    assert torch.equal(by_int, fs.attribute(x, target=torch.tensor(1), **kwargs))
    assert torch.equal(by_int, fs.attribute(x, target=[1, 1, 1], **kwargs))


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
        with pytest.warns(FutureWarning, match="Captum's meaning"):
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


def test_model_and_inputs_untouched():
    model = tiny_cnn()
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    model[0].weight.requires_grad_(True)
    x = images(n=2).requires_grad_(True)
    before = x.detach().clone()
    out = FrequencyShapley(model).attribute(x, target=0, players=("bands", 3), n_samples=2, seed=0)
    assert model.training
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad
    assert model[0].weight.grad is None and x.grad is None
    assert torch.equal(x.detach(), before) and x.requires_grad
    assert not out.requires_grad and out.dtype == torch.float64


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


def test_additional_forward_args_are_indexed_per_example():
    x = images(n=2)
    model = tiny_cnn()

    def forward(z, scale, offset):
        return model(z) * scale + offset

    scale = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    fs = FrequencyShapley(forward)
    both = fs.attribute(x, target=0, additional_forward_args=(scale, 5.0), players=("bands", 3), n_samples=2, seed=0)
    plain = FrequencyShapley(model).attribute(x, target=0, players=("bands", 3), n_samples=2, seed=0)
    assert torch.allclose(both[0], plain[0]) and torch.allclose(both[1], 3 * plain[1])


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
    parts = reconstruct_from_mask(x, pfc) + reconstruct_from_mask(x, nfc) + reconstruct_from_mask(x, zero, include_dc=True)
    assert torch.allclose(parts, x, atol=1e-12)
    assert centered_attributions(attributions)[:, 4, 4].abs().sum() == 0  # DC at the centre
    assert radial_average(attributions).shape == (2, 7)
