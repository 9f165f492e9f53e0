"""Captum conformance of every frequency attribution class (kornia BaseTester style).

A new attribution class passes this module by being added to ``ATTRIBUTION_CLASSES`` with
constructor and ``attribute()`` arguments that keep a call small. What the suite expects of a class
(all provided by :class:`freqplug.attributions.FrequencyAttribution`): ``attribute(inputs, baselines,
target, additional_forward_args, ..., perturbations_per_eval=, seed=, max_evaluations=)`` decorated
with ``captum.log.log_usage()`` and returning an (N, ..., H, W) map in the inputs' dtype;
``player_values(...)`` (N, P); ``players(H, W)``; ``baseline_images(...)``. The checks follow Captum's own
generic test logic: target forms, ``perturbations_per_eval`` invariance, ``additional_forward_args``
forms, baseline forms, ``NoiseTunnel``, ``sensitivity_max`` with tuple inputs, gradient modes,
the caller's model / inputs / RNG untouched, and clear errors for bad arguments.
"""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import sensitivity_max

from freqplug import FrequencyShapley, OccludedFrequency, SpectralBandShapley
from helpers import CountingModel, NaNModel, assert_model_unchanged, snapshot_model, tiny_cnn
from helpers.attributions import AttributionCase

ATTRIBUTION_CLASSES = [
    AttributionCase(FrequencyShapley, call=dict(players=("bands", 3), n_samples=2),
                    players=lambda explainer, h, w: explainer.players(h, w, ("bands", 3))),
    AttributionCase(OccludedFrequency, init=dict(groups="diagonal")),
    # output="identity": the suite checks linearity in the forward output (additional_forward_args),
    # which the default log-softmax game does not have; the log-softmax path is tested in its own module.
    AttributionCase(SpectralBandShapley, init=dict(num_bands=3, output="identity")),
]

N, C, H, W, K = 3, 3, 8, 8, 4  # tiny_cnn has K = 4 outputs


@pytest.fixture(params=ATTRIBUTION_CLASSES, ids=lambda case: case.id)
def case(request) -> AttributionCase:
    return request.param


@pytest.fixture
def model():
    return tiny_cnn(num_classes=K)


def images(n=N, seed=0, dtype=torch.float64):
    return torch.rand(n, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def run(case, forward, x, **kwargs):
    """attribute() with the case's small settings; FutureWarnings of deprecated meanings are not the subject here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return case.make(forward).attribute(x, **{**case.call, **kwargs})


# ---------------------------------------------------------------------------- targets
def test_target_forms_equal_per_example_runs(case, model):
    x = images()
    labels = [0, 2, 3]
    by_tensor = run(case, model, x, target=torch.tensor(labels))
    assert torch.equal(by_tensor, run(case, model, x, target=list(labels)))
    for i, t in enumerate(labels):
        single = run(case, model, x[i:i + 1], target=t)
        assert torch.allclose(single[0], by_tensor[i], atol=1e-12), i
    by_int = run(case, model, x, target=1)
    assert torch.equal(by_int, run(case, model, x, target=torch.tensor(1)))
    assert torch.equal(by_int, run(case, model, x, target=[1, 1, 1]))
    assert not torch.allclose(by_int, by_tensor)


def test_tuple_targets_index_outputs_with_more_dims(case, model):
    x = images()

    def stacked(z):  # (B, 2, K): the model's logits and twice them
        out = model(z)
        return torch.stack([out, 2 * out], dim=1)

    doubled = run(case, lambda z: 2 * model(z), x, target=2)
    assert torch.allclose(run(case, stacked, x, target=(1, 2)), doubled, atol=1e-12)
    per_example = run(case, stacked, x, target=[(1, 2), (0, 1), (1, 3)])
    assert torch.allclose(per_example[0], doubled[0], atol=1e-12)
    assert torch.allclose(per_example[1], run(case, model, x, target=1)[1], atol=1e-12)
    with pytest.raises(ValueError, match=r"target.*\[0, 2\)"):
        run(case, stacked, x, target=(2, 0))


def test_targets_out_of_range_give_one_clear_error(case, model):
    x = images()
    for bad in (K, [0, 1, K], torch.tensor([0, K + 3, 1])):
        with pytest.raises(ValueError, match=rf"`target` must hold indices in \[0, {K}\)"):
            run(case, model, x, target=bad)
    for negative in (-1, [0, -1, 2], torch.tensor([0, 1, -2])):
        with pytest.raises(ValueError, match="`target` must .*non-negative"):
            run(case, model, x, target=negative)
    with pytest.raises(ValueError, match=r"`target` list must have one entry per example \(3\)"):
        run(case, model, x, target=[0, 1])
    with pytest.raises(ValueError, match=r"`target` tensor must be 0-d or have shape \(3,\)"):
        run(case, model, x, target=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="`target` tensor must hold integer"):
        run(case, model, x, target=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="pass `target`"):  # a multi-output model needs a target
        run(case, model, x, target=None)


# ---------------------------------------------------------------------------- chunking and forward args
def test_perturbations_per_eval_invariance(case, model):
    x = images()
    counted = CountingModel(model)
    reference = run(case, counted, x, target=0, perturbations_per_eval=1)
    assert max(counted.batch_sizes) <= 1 * N
    for ppe in (2, 5, 1000):
        counted.batch_sizes.clear()
        out = run(case, counted, x, target=0, perturbations_per_eval=ppe)
        assert max(counted.batch_sizes) <= ppe * N  # Captum's meaning: ppe perturbations of each example
        assert torch.allclose(out, reference, atol=1e-12), ppe


def test_additional_forward_args_forms(case, model):
    x = images()
    plain = run(case, model, x, target=0)
    scale = torch.tensor([[1.0], [3.0], [-2.0]], dtype=torch.float64)

    calls = []

    def scaled(z, s, offset=0.0):
        calls.append(z.shape[0])
        return model(z) * s + offset

    expected = plain * scale[:, :, None]  # the map is linear in the output; an offset cancels in differences
    assert torch.allclose(run(case, scaled, x, target=0, additional_forward_args=scale), expected, atol=1e-10)
    assert torch.allclose(run(case, scaled, x, target=0, additional_forward_args=(scale, 5.0)), expected, atol=1e-10)
    assert torch.allclose(run(case, scaled, x, target=0, additional_forward_args=(torch.tensor(2.0),)),
                          2 * plain, atol=1e-10)
    calls.clear()
    with pytest.raises(ValueError, match=r"additional_forward_args.*first dimension 2.*batch size 3"):
        run(case, scaled, x, target=0, additional_forward_args=(scale[:2],))
    assert not calls  # refused before any model call


# ---------------------------------------------------------------------------- baselines
def test_zero_baseline_forms_agree(case, model):
    x = images()
    reference = run(case, model, x, target=0)
    for zero in (None, 0, 0.0, "zero", (None,), torch.zeros_like(x), torch.zeros(1, C, H, W, dtype=x.dtype)):
        assert torch.allclose(run(case, model, x, target=0, baselines=zero), reference, atol=1e-12), repr(zero)


def test_baselines_change_the_result_and_bad_ones_are_refused(case, model):
    x = images()
    zero = run(case, model, x, target=0)
    for baseline in ("gaussian", "replacement", images(seed=5)):
        assert not torch.allclose(run(case, model, x, target=0, baselines=baseline), zero)
    with pytest.raises(ValueError, match="`baselines` scalar must be 0"):
        run(case, model, x, target=0, baselines=0.5)
    with pytest.raises(ValueError, match="`baselines` must be one of"):
        run(case, model, x, target=0, baselines="random-ish")
    with pytest.raises(ValueError, match=r"`baselines` images must have shape \(3 or 1, 3, 8, 8\)"):
        run(case, model, x, target=0, baselines=images(n=2))
    with pytest.raises(ValueError, match="needs at least 2 images"):
        run(case, model, x[:1], target=0, baselines="replacement")


def test_random_baselines_do_not_depend_on_the_batch(case, model):
    x = images()
    for baseline in ("gaussian", "replacement"):
        batched = run(case, model, x, target=0, baselines=baseline, seed=4)
        assert torch.equal(batched, run(case, model, x, target=0, baselines=baseline, seed=4))
        assert torch.allclose(run(case, model, x, target=0, baselines=baseline, seed=4, perturbations_per_eval=1),
                              batched, atol=1e-12)
    # image 0 has dataset index 0 alone and in the batch: the same Gaussian baseline
    alone = run(case, model, x[:1], target=0, baselines="gaussian", seed=4)
    assert torch.allclose(alone[0], run(case, model, x, target=0, baselines="gaussian", seed=4)[0], atol=1e-12)


def test_baseline_images_are_keyed_on_dataset_index(case, model):
    explainer = case.make(model)
    x = images(n=4)
    order = torch.tensor([2, 0, 3, 1])
    for baseline in ("gaussian", "replacement"):
        straight = explainer.baseline_images(x, baseline, seed=3)
        shuffled = explainer.baseline_images(x[order], baseline, seed=3, dataset_index=order)
        assert torch.equal(shuffled, straight[order]), baseline
    chosen = torch.zeros(4, 4, dtype=torch.long)  # chosen[i, j]: how often image j filled image i
    for seed in range(12):
        partners = explainer.baseline_images(x, "replacement", seed=seed)
        for i in range(4):
            matches = [j for j in range(4) if torch.equal(partners[i], x[j])]
            assert len(matches) == 1
            chosen[i, matches[0]] += 1
    assert chosen.diagonal().sum() == 0  # never the image itself
    assert (chosen + torch.eye(4, dtype=torch.long) > 0).all()  # every other image is drawn for some seed
    noise = explainer.baseline_images(x, "gaussian", seed=3, noise_std=2.0)
    assert noise.shape == x.shape and 1.7 < float(noise.std()) < 2.3
    assert not torch.equal(noise[0], noise[1])


# ---------------------------------------------------------------------------- Captum wrappers
def test_noise_tunnel_averages_attributions_of_noisy_inputs(case, model):
    x = images(n=2)
    explainer = case.make(model)
    nt_samples, stdev = 3, 0.05
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.manual_seed(11)
        smoothed = NoiseTunnel(explainer).attribute(x, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=stdev,
                                                    target=1, **case.call)
        torch.manual_seed(11)  # NoiseTunnel's own draw, repeated: the noisy copies it explained
        noise = torch.normal(0, torch.tensor(stdev).repeat(2 * nt_samples, C, H, W))  # float32, as Captum draws it
    noisy = x.repeat_interleave(nt_samples, dim=0) + noise
    expected = run(case, model, noisy, target=1)
    expected = expected.reshape(2, nt_samples, *expected.shape[1:]).mean(1)
    assert smoothed.shape == expected.shape
    assert torch.allclose(smoothed, expected, atol=1e-10)


def test_tuple_inputs_return_a_tuple_and_work_with_sensitivity_max(case, model):
    x = images(n=2)
    tensor_out = run(case, model, x, target=0)
    tuple_out = run(case, model, (x,), target=0)
    assert isinstance(tuple_out, tuple) and len(tuple_out) == 1
    assert torch.equal(tuple_out[0], tensor_out)
    explainer = case.make(model)
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.manual_seed(0)
        sensitivity = sensitivity_max(explainer.attribute, (x,), target=0, n_perturb_samples=2, **case.call)
    assert sensitivity.shape == (2,) and bool(torch.isfinite(sensitivity).all()) and bool((sensitivity > 0).all())
    with pytest.raises(ValueError, match="exactly one image tensor"):
        run(case, model, (x, x), target=0)


def test_attribute_carries_captum_log_usage(case):
    assert hasattr(case.cls.attribute, "__wrapped__")


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_works_under_gradient_modes(case, model, mode):
    x = images()
    reference = run(case, model, x, target=2)
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:
        out = run(case, model, x, target=2)
    assert torch.allclose(out, reference, atol=1e-12)


# ---------------------------------------------------------------------------- the caller's state
@pytest.mark.parametrize("seed", [0, None])
def test_model_inputs_and_global_rng_untouched(case, seed):
    model = tiny_cnn(num_classes=K)
    model.train()
    model[0].bias.requires_grad_(False)
    snapshot = snapshot_model(model)
    x = images().requires_grad_(True)
    before = x.detach().clone()
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    out = run(case, model, x, target=0, seed=seed, baselines="gaussian")
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state
    assert_model_unchanged(model, snapshot)
    assert model.training and not model[0].bias.requires_grad and model[0].weight.requires_grad
    assert x.grad is None and x.requires_grad and torch.equal(x.detach(), before)
    assert not out.requires_grad


def test_same_seed_same_result_and_seed_checked(case, model):
    x = images(n=1)
    a = run(case, model, x, target=0, seed=7, baselines="gaussian")
    assert torch.equal(a, run(case, model, x, target=0, seed=7, baselines="gaussian"))
    assert not torch.equal(a, run(case, model, x, target=0, seed=8, baselines="gaussian"))
    for bad, error in ((1.5, TypeError), (True, TypeError), (-1, ValueError)):
        with pytest.raises(error, match="`seed`"):
            run(case, model, x, target=0, seed=bad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_and_layout_follow_the_inputs(case, dtype):
    model = tiny_cnn(num_classes=K, dtype=dtype)
    x = images(dtype=dtype)
    out = run(case, model, x, target=0)
    assert out.dtype == dtype and out.shape[0] == N and tuple(out.shape[-2:]) == (H, W)


def test_player_values_spread_over_the_players_give_the_map(case, model):
    x = images()
    explainer = case.make(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        values = explainer.player_values(x, target=[0, 1, 2], **case.call)
    players = case.partition(explainer, H, W)
    assert values.shape == (N, players.num_players) and values.dtype == x.dtype
    assert torch.allclose(players.expand(values), run(case, model, x, target=[0, 1, 2]), atol=1e-12)


# ---------------------------------------------------------------------------- cost
def test_budget_is_checked_before_any_model_call(case, model):
    counted = CountingModel(model)
    with pytest.raises(ValueError, match="pass a larger `max_evaluations`"):
        run(case, counted, images(), target=0, max_evaluations=5)
    assert counted.calls == 0


# ---------------------------------------------------------------------------- bad inputs
def test_bad_inputs_give_clear_errors(case, model):
    x = images()
    with pytest.raises(TypeError, match="`forward_func` must be callable"):
        case.make("model")
    with pytest.raises(ValueError, match=r"`inputs` must have 4 dimensions"):
        run(case, model, x[0], target=0)
    with pytest.raises(TypeError, match="`inputs`"):
        run(case, model, (x * 255).to(torch.uint8), target=0)
    nan = x.clone()
    nan[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="`inputs`.*NaN"):
        run(case, model, nan, target=0)
    with pytest.raises(ValueError, match=r"`inputs` must hold images in \[0, 1\]"):
        run(case, model, x * 255, target=0)
    with pytest.raises(ValueError, match=r"`inputs` must hold images in \[0, 1\]"):  # mean/std normalized
        run(case, model, (x - 0.5) / 0.25, target=0)
    with pytest.raises(ValueError, match=r"`forward_func` \(NaNModel\) returned .*non-finite"):
        run(case, NaNModel(model), x, target=0)
    with pytest.raises(ValueError, match="non-finite"):
        run(case, NaNModel(model, float("inf")), x, target=0)
