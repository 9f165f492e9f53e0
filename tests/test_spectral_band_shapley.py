"""SpectralBandShapley (I-ASIDE, Luo2024): Shapley axioms, Captum conventions, sampling, distribution."""

import itertools
import math
import os
import socket

import numpy as np
import pytest
import scipy.stats
import torch
import torch.multiprocessing as mp

from freqplug.attributions._estimators import DeduplicatedPermutationDesign, exact_shapley_weights
from freqplug.attributions._stats import equal_means_test, f_survival
from freqplug.attributions.spectral_band_shapley import SpectralBandShapley
from freqplug.spectral import apply_spectral_mask, radial_band_players
from helpers import CountingModel, NaNModel, exact_shapley_oracle, tiny_cnn


@pytest.fixture
def setup():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(5, 3, 16, 16, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    return tiny_cnn(), x, y


def _log_q(model, images, y):
    with torch.no_grad():
        return torch.log_softmax(model(images), -1)[torch.arange(images.shape[0]), y]


def test_exact_values_match_brute_force_eq3_and_efficiency(setup):
    model, x, y = setup
    m = 3
    values = SpectralBandShapley(model, m).player_values(x, target=y)
    players = radial_band_players(16, 16, m, include_dc=True)
    v = {}
    for subset in itertools.product([False, True], repeat=m):
        mask = players.masks(torch.tensor(subset))
        v[subset] = _log_q(model, apply_spectral_mask(x, mask), y)
    expected = torch.zeros(5, m, dtype=torch.float64)
    for i in range(m):
        for subset in v:
            if subset[i]:
                continue
            with_i = tuple(True if j == i else s for j, s in enumerate(subset))
            size = sum(subset)
            weight = 1 / m / math.comb(m - 1, size)
            expected[:, i] += weight * (v[with_i] - v[subset])
    torch.testing.assert_close(values, expected)
    # Efficiency: sum of psi = v(all) - v(empty); with DC in band 0 the empty coalition is the black image.
    total = _log_q(model, x, y) - _log_q(model, torch.zeros_like(x), y)
    torch.testing.assert_close(values.sum(1), total)
    assert torch.allclose(exact_shapley_weights(6).sum(0), torch.zeros(6, dtype=torch.float64), atol=1e-15)
    # DC always present (include_dc=False): the empty coalition is the image's mean colour; l2 rings work too.
    fixed_dc = SpectralBandShapley(model, m, metric="l2", include_dc=False).player_values(x, target=y)
    mean_colour = x.mean((2, 3), keepdim=True).expand_as(x)
    torch.testing.assert_close(fixed_dc.sum(1), _log_q(model, x, y) - _log_q(model, mean_colour, y))


def test_null_player_model_reading_one_band_only(setup):
    _, x, y = setup
    players = radial_band_players(16, 16, 4, include_dc=True)
    band2 = players.masks(torch.tensor([False, False, True, False]))
    inner = tiny_cnn()

    def only_band2(images):
        return inner(apply_spectral_mask(images, band2))

    values = SpectralBandShapley(only_band2, 4).player_values(x, target=y)
    total = _log_q(only_band2, x, y) - _log_q(only_band2, torch.zeros_like(x), y)
    torch.testing.assert_close(values[:, 2], total)
    assert values[:, [0, 1, 3]].abs().max() < 1e-12


def test_captum_conventions_targets_batching_progress_forward_args(setup, capsys):
    model, x, y = setup
    sbs = SpectralBandShapley(model, 4)
    reference = sbs.player_values(x, target=y)
    assert reference.shape == (5, 4) and reference.dtype == x.dtype
    torch.testing.assert_close(sbs.player_values(x, target=y.tolist()), reference)
    torch.testing.assert_close(sbs.player_values(x, target=1)[1], reference[1])
    for ppe in (3, 16, 40):
        torch.testing.assert_close(sbs.player_values(x, target=y, perturbations_per_eval=ppe), reference)
    sbs.player_values(x, target=y, show_progress=True)
    assert "Spectral Band Shapley attribution" in capsys.readouterr().err

    def shifted(images, shift):  # per-image additive shift of the logit of class 0
        out = model(images).clone()
        out[:, 0] += shift
        return out

    shift = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    manual = torch.stack([SpectralBandShapley(lambda im, s=float(s): shifted(im, s), 3)
                          .player_values(x[i:i + 1], target=y[i:i + 1])[0] for i, s in enumerate(shift)])
    torch.testing.assert_close(SpectralBandShapley(shifted, 3).player_values(
        x[:3], target=y[:3], additional_forward_args=(shift,), perturbations_per_eval=3), manual)


def test_importance_rows_mean_stderr_and_noise_flag(setup):
    model, x, y = setup
    counting = CountingModel(model)
    sbs = SpectralBandShapley(counting, 4)
    result = sbs.importance((x, y), internal_batch_size=7, show_progress=False)
    assert counting.rows == 2 ** 4 * 5 == result.rows_evaluated  # no repeated work
    assert counting.calls == math.ceil(80 / 7)
    per_image = SpectralBandShapley(model, 4).player_values(x, target=y)
    torch.testing.assert_close(result.values, per_image.mean(0))
    torch.testing.assert_close(result.stderr, per_image.std(0) / math.sqrt(5))
    assert result.values.sum().item() == pytest.approx(result.total_value, abs=1e-12)
    assert result.sid.sum().item() == pytest.approx(1.0) and 0 <= result.srs <= 1
    hi, lo = int(per_image.mean(0).argmax()), int(per_image.mean(0).argmin())
    spread_se = float((per_image[:, hi] - per_image[:, lo]).std() / math.sqrt(5))
    assert result.spread_stderr == pytest.approx(spread_se)
    # Equal-psi test = Hotelling T^2 on the successive differences, recomputed here with scipy.
    diffs = (per_image[:, 1:] - per_image[:, :-1]).numpy()
    mean, cov = diffs.mean(0), np.cov(diffs, rowvar=False)
    t2 = 5 * mean @ np.linalg.solve(cov, mean)
    p_value = scipy.stats.f.sf((5 - 3) / (4 * 3) * t2, 3, 5 - 3)
    assert result.p_value == pytest.approx(p_value, rel=1e-6)
    assert result.distinguishable == (p_value < 0.05)
    assert ("NOT distinguishable" in result.message) == (not result.distinguishable)
    assert result.message in str(result)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)
    torch.testing.assert_close(sbs.importance(loader, show_progress=False).values, result.values)
    torch.testing.assert_close(sbs.importance(x, target=y, show_progress=False).values, result.values)


def test_noise_flag_on_a_clear_preference_and_on_pure_noise(setup):
    _, x, y = setup
    players = radial_band_players(16, 16, 4, include_dc=True)
    band0 = players.masks(torch.tensor([True, False, False, False]))

    def reads_band0_energy(images):  # class 0 logit grows with the band-0 energy of the image
        energy = apply_spectral_mask(images, band0).pow(2).mean((1, 2, 3))
        return torch.stack([10 * energy, torch.zeros_like(energy)], dim=1)

    clear = SpectralBandShapley(reads_band0_energy, 4).importance((x, torch.zeros(5, dtype=torch.long)),
                                                                   show_progress=False)
    assert clear.distinguishable and int(clear.values.argmax()) == 0

    gen = torch.Generator().manual_seed(0)
    noise_logits = torch.randn(100, 4, generator=gen, dtype=torch.float64) * 1e-3

    def noise(images):  # output depends on the image only through a hash of its pixels: no band preference
        index = (images.sum((1, 2, 3)) * 1e6).round().long() % 100
        return noise_logits[index]

    noisy = SpectralBandShapley(noise, 4).importance((x, y), show_progress=False)
    assert not noisy.distinguishable and "NOT distinguishable" in noisy.message
    one = SpectralBandShapley(reads_band0_energy, 4).importance((x[:1], torch.zeros(1, dtype=torch.long)),
                                                                 show_progress=False)
    assert not one.distinguishable and "cannot test" in one.message


def test_sampled_mode_converges_to_exact_for_m8(setup):
    model, x, y = setup
    sbs = SpectralBandShapley(model, 8)
    exact = sbs.importance((x[:3], y[:3]), show_progress=False)
    sampled = sbs.importance((x[:3], y[:3]), method="sampled", n_samples=200, seed=1, show_progress=False)
    assert sampled.method == "sampled" and sampled.stderr_sampling is not None
    assert sampled.values.sum().item() == pytest.approx(exact.total_value, abs=1e-12)  # efficiency per permutation
    error = (sampled.values - exact.values).abs()
    assert (error <= 4 * sampled.stderr_sampling + 1e-12).all()
    coarse = sbs.importance((x[:3], y[:3]), method="sampled", n_samples=8, seed=1, show_progress=False)
    assert sampled.stderr_sampling.mean() < coarse.stderr_sampling.mean()
    assert error.sum() < (coarse.values - exact.values).abs().sum()


def test_large_m_is_sampled_automatically(setup):
    model, _, _ = setup
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.tensor([1, 2])
    counting = CountingModel(model)
    result = SpectralBandShapley(counting, 16).importance((x, y), n_samples=6, internal_batch_size=64,
                                                          show_progress=False)
    assert result.method == "sampled" and result.values.shape == (16,)
    assert counting.rows == result.rows_evaluated <= 2 * (6 * 15 + 2)  # prefix coalitions, each evaluated once
    assert result.values.sum().item() == pytest.approx(result.total_value, abs=1e-12)
    assert torch.isfinite(result.stderr_sampling).all() and torch.isfinite(result.stderr).all()


def test_baselines_gaussian_and_replacement(setup):
    model, x, y = setup
    sbs = SpectralBandShapley(model, 4)
    gaussian = sbs.player_values(x, "gaussian", target=y, seed=5)
    torch.testing.assert_close(gaussian, sbs.player_values(x, "gaussian", target=y, seed=5))
    replacement = sbs.player_values(x, "replacement", target=y, seed=5)
    assert not torch.allclose(gaussian, replacement)
    # Replacement = explicit partner images: full coalition is x, empty coalition is the partner.
    total = _log_q(model, x, y)
    for values in (gaussian, replacement):
        assert torch.isfinite(values).all()
    partner_total = replacement.sum(1)
    empties = total - partner_total
    partners = [int(torch.argmin((_log_q(model, x, torch.full((5,), int(y[i]))) - empties[i]).abs()))
                for i in range(5)]
    assert all(p != i for i, p in enumerate(partners))


def test_bad_inputs_raise_clear_errors(setup):
    model, x, y = setup
    sbs = SpectralBandShapley(model, 4)
    with pytest.raises(ValueError, match="inputs"):
        sbs.player_values(x - 1, target=y)
    with pytest.raises(ValueError, match="target"):
        sbs.player_values(x)
    with pytest.raises(ValueError, match="target"):
        sbs.player_values(x, target=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target"):
        sbs.player_values(x, target=9)
    with pytest.raises(ValueError, match="num_bands"):
        SpectralBandShapley(model, 13).player_values(x, target=y, method="exact")
    with pytest.raises(ValueError, match="num_bands"):
        SpectralBandShapley(model, 12).player_values(x, target=y)  # 12 rings do not fit a 16x16 l_inf spectrum
    with pytest.raises(ValueError, match="baselines"):
        sbs.player_values(x, "uniform", target=y)
    with pytest.raises(ValueError, match="replacement"):
        sbs.player_values(x[:1], "replacement", target=y[:1])
    with pytest.raises(ValueError, match="labels"):
        sbs.importance((x, torch.tensor([0, 1])), show_progress=False)
    with pytest.raises(ValueError, match="target"):
        sbs.importance(x, show_progress=False)


def test_model_and_inputs_untouched(setup):
    model, x, y = setup
    model.train()
    x = x.clone().requires_grad_(True)
    before = x.detach().clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    SpectralBandShapley(model, 3).importance((x, y), baselines="gaussian", show_progress=False)
    assert model.training and x.requires_grad and x.grad is None and torch.equal(x.detach(), before)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------- distributed (2 gloo ranks)
def _distributed_worker(rank, world, port, x, y, out_dir):
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        sbs = SpectralBandShapley(tiny_cnn(), 4)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=3)
        results = [sbs.importance((x, y), baselines="gaussian", seed=3, show_progress=False),
                   sbs.importance(loader, method="sampled", n_samples=10, show_progress=False)]
        torch.save([(r.values, r.stderr, r.num_images, r.rows_evaluated) for r in results],
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_two_gloo_ranks_equal_single_process(setup, tmp_path):
    _, x, y = setup
    mp.spawn(_distributed_worker, args=(2, _free_port(), x, y, str(tmp_path)), nprocs=2, join=True)
    sbs = SpectralBandShapley(tiny_cnn(), 4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=3)
    single = [sbs.importance((x, y), baselines="gaussian", seed=3, show_progress=False),
              sbs.importance(loader, method="sampled", n_samples=10, show_progress=False)]
    for rank in (0, 1):
        for (values, stderr, count, rows), expected in zip(torch.load(tmp_path / f"rank{rank}.pt"), single):
            torch.testing.assert_close(values, expected.values, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(stderr, expected.stderr, rtol=1e-9, atol=1e-12)
            assert count == expected.num_images == 5 and rows == expected.rows_evaluated


# ---------------------------------------------------------------------------- embedded ResNet-18 (Luo2024 Fig. 7)
@pytest.mark.slow
def test_trained_resnet18_values_largest_in_lowest_band(reference_model, cifar_samples):
    # Per image the bands trade places; over the 20 samples band 0 (DC and the lowest quarter) leads:
    # psi = [1.95, 0.25, 1.33, 0.63] for M = 4 (M = 8 costs 5120 rows, see examples/ and bench/).
    x, y = cifar_samples
    result = SpectralBandShapley(reference_model, 4).importance((x, y), internal_batch_size=80,
                                                                show_progress=False)
    assert int(result.values.argmax()) == 0
    assert result.distinguishable and result.p_value < 0.05  # p = 0.003
    assert result.values.sum().item() == pytest.approx(result.total_value, abs=1e-9)
    assert result.rows_evaluated == 16 * 20


@pytest.mark.slow
def test_random_resnet18_reports_noise_flag(cifar_samples):
    from freqplug.models import resnet18_cifar

    x, y = cifar_samples
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random_model = resnet18_cifar().eval()
    result = SpectralBandShapley(random_model, 4).importance((x[:4], y[:4]), internal_batch_size=64,
                                                             show_progress=False)
    assert result.values.abs().max() < 0.5  # an untrained net barely moves log Q
    # Flagged as noise (p = 0.27 here); the trained net is flagged as a real preference (p = 0.003,
    # test_trained_resnet18_values_largest_in_lowest_band), so this assertion can fail.
    assert not result.distinguishable and result.p_value > 0.05
    assert "NOT distinguishable" in result.message


# ---------------------------------------------------------------------------- maps, dtype, vocabulary, trust
def test_attribute_returns_the_band_map_in_the_inputs_dtype(setup):
    model, x, y = setup
    sbs = SpectralBandShapley(model, 4)
    values = sbs.player_values(x, target=y)
    attribution = sbs.attribute(x, target=y)
    assert attribution.shape == (5, 16, 16) and attribution.dtype == x.dtype
    band = radial_band_players(16, 16, 4, include_dc=True).player_map  # fft layout, band id per bin
    torch.testing.assert_close(attribution, values[:, band])
    # every bin of a band carries the band's value: the band means of the map give the values back
    for b in range(4):
        torch.testing.assert_close(attribution[:, band == b].mean(1), values[:, b])
    x32 = x.float()
    model32 = tiny_cnn(dtype=torch.float32)
    assert SpectralBandShapley(model32, 4).attribute(x32, target=y).dtype == torch.float32
    assert SpectralBandShapley(model32, 4).player_values(x32, target=y).dtype == torch.float32


def test_zero_baseline_spellings_and_deprecated_batch_size(setup):
    model, x, y = setup
    sbs = SpectralBandShapley(model, 3)
    reference = sbs.player_values(x, "zero", target=y)
    for spelling in (None, 0, 0.0):
        torch.testing.assert_close(sbs.player_values(x, spelling, target=y), reference)
    assert not torch.allclose(sbs.player_values(x, "gaussian", target=y), reference)
    with pytest.raises(ValueError, match="baselines"):
        sbs.player_values(x, 0.5, target=y)
    result = sbs.importance((x, y), internal_batch_size=5, show_progress=False)
    with pytest.warns(DeprecationWarning, match="internal_batch_size"):
        old = sbs.importance((x, y), batch_size=5, show_progress=False)
    torch.testing.assert_close(old.values, result.values)
    assert result.baseline == "zero" and sbs.importance((x, y), baselines=None, show_progress=False).baseline == "zero"
    with pytest.raises(TypeError, match="internal_batch_size"):
        sbs.importance((x, y), batch_size=5, internal_batch_size=5, show_progress=False)


def test_single_column_forward_raises_with_log_softmax_and_works_with_identity(setup):
    model, x, _ = setup

    def score(images):  # one column: log-softmax of it is 0 for every image
        return model(images)[:, :1]

    with pytest.raises(ValueError, match="single column.*identity"):
        SpectralBandShapley(score, 3).player_values(x)
    with pytest.raises(ValueError, match="single column"):
        SpectralBandShapley(score, 3).importance(x, target=0, show_progress=False)
    values = SpectralBandShapley(score, 3, output="identity").player_values(x)
    with torch.no_grad():
        total = score(x)[:, 0] - score(torch.zeros_like(x))[:, 0]
    torch.testing.assert_close(values.sum(1), total)  # efficiency on the raw score
    assert values.abs().max() > 1e-6


def test_targets_outside_the_output_and_non_finite_outputs_raise(setup):
    model, x, y = setup
    sbs = SpectralBandShapley(model, 3)
    for bad in (4, 10, torch.tensor([0, 1, 2, 3, 4]), [0, 1, 2, 3, 9]):
        with pytest.raises(ValueError, match="target"):
            sbs.player_values(x, target=bad)
    with pytest.raises(ValueError, match="target"):
        sbs.player_values(x, target=-1)
    with pytest.raises(ValueError, match="labels|target"):
        sbs.importance((x, torch.tensor([0, 1, 2, 3, 4])), show_progress=False)
    with pytest.raises(ValueError, match="forward_func.*NaN"):
        SpectralBandShapley(NaNModel(model), 3).player_values(x, target=y)
    with pytest.raises(ValueError, match="forward_func.*NaN"):
        SpectralBandShapley(NaNModel(model), 3).importance((x, y), show_progress=False)
    with pytest.raises(TypeError, match="seed"):
        sbs.player_values(x, "gaussian", target=y, seed=1.7)


def test_budget_is_announced_and_enforced(setup):
    model, x, y = setup
    sbs = SpectralBandShapley(model, 4)
    assert sbs.num_evaluations(5) == 5 * 16
    assert sbs.num_evaluations(5, method="sampled", n_samples=6) <= 5 * (6 * 3 + 2)
    with pytest.raises(ValueError, match="max_evaluations"):
        sbs.player_values(x, target=y, max_evaluations=79)
    sbs.player_values(x, target=y, max_evaluations=80)
    with pytest.raises(ValueError, match="max_evaluations"):
        sbs.importance((x, y), max_evaluations=79, show_progress=False)


def test_gaussian_baseline_per_image_does_not_depend_on_batching(setup):
    model, x, y = setup
    sbs = SpectralBandShapley(model, 3)
    results = []
    for batch in (1, 2, 5):
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
        results.append(sbs.importance(loader, baselines="gaussian", seed=7, show_progress=False))
    for other in results[1:]:
        torch.testing.assert_close(other.values, results[0].values, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(other.stderr, results[0].stderr, rtol=1e-9, atol=1e-12)
    # per image, the draw of image i in player_values equals the draw of dataset index i
    per_image = sbs.player_values(x, "gaussian", target=y, seed=7)
    torch.testing.assert_close(per_image.mean(0), results[0].values)
    assert not torch.allclose(sbs.player_values(x, "gaussian", target=y, seed=8), per_image)


def test_model_state_and_global_rng_untouched_with_a_dropout_model(setup):
    _, x, y = setup
    model = torch.nn.Sequential(tiny_cnn(), torch.nn.Dropout(0.5)).train()
    model[0].eval()  # per-module modes must survive
    state = torch.get_rng_state()
    SpectralBandShapley(model, 3).player_values(x, "gaussian", target=y)
    SpectralBandShapley(model, 3).importance((x, y), show_progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training and not model[0].training and model[1].training


def test_sampled_numbers_equal_the_previous_sampler():
    # Regression: the sampler moved to _estimators.DeduplicatedPermutationDesign; these values were
    # printed by the previous in-module sampler (commit 4f87817) for the same data and seed.
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(5, 3, 16, 16, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    result = SpectralBandShapley(tiny_cnn(), 6).importance((x, y), method="sampled", n_samples=6, seed=4,
                                                           show_progress=False)
    expected = torch.tensor([2.199249094918e-03, 5.265772314840e-05, 1.121546485522e-04, -1.255497400473e-04,
                             6.361577029964e-04, -3.690490830231e-05], dtype=torch.float64)
    torch.testing.assert_close(result.values, expected, rtol=1e-9, atol=1e-14)
    assert result.rows_evaluated == 140


def test_deduplicated_design_is_exact_for_pairwise_games_and_evaluates_each_coalition_once():
    # Antithetic pairs are exact for games with interactions of order <= 2; check against enumeration.
    p = 5
    gen = torch.Generator().manual_seed(0)
    linear = torch.randn(p, generator=gen, dtype=torch.float64)
    pairwise = torch.randn(p, p, generator=gen, dtype=torch.float64).triu(1)

    def v(coalition):
        members = sorted(coalition)
        return float(sum(linear[i] for i in members) + sum(pairwise[i, j] for i in members for j in members))

    def values_of(game, coalitions):
        return torch.tensor([[game(frozenset(row.nonzero().flatten().tolist())) for row in coalitions]],
                            dtype=torch.float64)

    oracle = torch.tensor(exact_shapley_oracle(v, p), dtype=torch.float64)
    design = DeduplicatedPermutationDesign(p, 3, torch.Generator().manual_seed(1))
    coalitions = design.coalitions
    assert len({tuple(row.tolist()) for row in coalitions}) == coalitions.shape[0]  # no coalition twice
    phi, pairs, total = design.estimate(values_of(v, coalitions))
    torch.testing.assert_close(phi[0], oracle)
    assert pairs.shape == (1, 3, p)
    torch.testing.assert_close(pairs[0], oracle.expand(3, p))  # every antithetic pair is exact here
    torch.testing.assert_close(total[0], torch.tensor(v(frozenset(range(p))), dtype=torch.float64))

    def cubic(coalition):  # a third-order interaction: one pair is no longer exact, efficiency still holds
        return v(coalition) + 3.0 * float({0, 1, 2} <= set(coalition))

    oracle3 = torch.tensor(exact_shapley_oracle(cubic, p), dtype=torch.float64)
    pairs3 = design.estimate(values_of(cubic, coalitions))[1][0]
    torch.testing.assert_close(pairs3.sum(1), oracle3.sum().expand(3))


# ---------------------------------------------------------------------------- the equal-psi test (scipy)
def test_f_survival_equals_scipy_and_the_previous_hand_written_values():
    # (f, df1, df2, p of the previous hand-written incomplete beta)
    previous = [(0.5, 3, 2, 0.7194341411251526), (2.7, 3, 16, 0.08042655893029331),
                (9.1, 7, 13, 0.0003832340526418889), (0.01, 1, 1, 0.9365489651388929),
                (40.0, 2, 5, 0.0008392236160426744)]
    for f_stat, df1, df2, old in previous:
        assert f_survival(f_stat, df1, df2) == pytest.approx(float(scipy.stats.f.sf(f_stat, df1, df2)), rel=1e-12)
        assert f_survival(f_stat, df1, df2) == pytest.approx(old, rel=1e-12)
    assert f_survival(0.0, 2, 3) == 1.0
    with pytest.raises(ValueError, match="degrees of freedom"):
        f_survival(1.0, 0, 3)


def test_equal_means_test_matches_hotelling_by_hand_and_the_previous_p_value():
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(12, 4, generator=gen, dtype=torch.float64) + torch.tensor([0.0, 0.3, 0.5, 0.2],
                                                                                dtype=torch.float64)
    psi, cov = data.mean(0), torch.cov(data.T) / 12
    p_value, tested = equal_means_test(psi, cov, 12)
    assert tested and p_value == pytest.approx(0.692781645914477, rel=1e-9)  # previous implementation
    diffs = (data[:, 1:] - data[:, :-1]).numpy()
    mean, sample_cov = diffs.mean(0), np.cov(diffs, rowvar=False)
    t2 = 12 * mean @ np.linalg.solve(sample_cov, mean)
    assert p_value == pytest.approx(scipy.stats.f.sf((12 - 3) / (11 * 3) * t2, 3, 12 - 3), rel=1e-9)
    # a shift every sample agrees on exactly is certain; no differences at all is p = 1
    shifted = torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=torch.float64).repeat(12, 1)
    shifted[:, 2:] += data[:, 2:3]
    assert equal_means_test(shifted.mean(0), torch.cov(shifted.T) / 12, 12) == (0.0, True)
    flat = torch.ones(12, 4, dtype=torch.float64)
    assert equal_means_test(flat.mean(0), torch.cov(flat.T) / 12, 12) == (1.0, True)


def test_too_few_images_for_the_bands_cannot_be_tested():
    # K = 5 images for M = 6 bands: the covariance of the 5 differences has rank <= 4 whatever the data.
    # The previous implementation read the missing direction as a certain difference (p = 0,
    # "distinguishable"); it is "cannot test".
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(5, 3, 16, 16, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    result = SpectralBandShapley(tiny_cnn(), 6).importance((x, y), baselines="gaussian", seed=3, show_progress=False)
    assert not result.distinguishable and math.isnan(result.p_value) and "cannot test" in result.message
    data = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    assert equal_means_test(data.mean(0), torch.cov(data.T) / 5, 5)[1] is False
