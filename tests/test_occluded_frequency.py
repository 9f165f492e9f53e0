"""OccludedFrequency (Wang2020a, Definition 1): hand-computed logit drops, Captum conventions, helpers."""

import numpy as np
import pytest
import scipy.fft
import torch
from captum.attr import FeatureAblation

from freqplug._batches import image_generator
from freqplug.attributions.occluded_frequency import OccludedFrequency, plot_group_scores
from freqplug.spectral import dct2, idct2
from helpers import CountingModel, NaNModel, tiny_cnn


@pytest.fixture
def setup():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    return tiny_cnn(), x, y


def _hand_drop(model, x, y, group_mask, baseline=None):
    """Logit drop with the DCT done by scipy (independent of freqplug.spectral)."""
    c = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    b = 0.0 if baseline is None else baseline
    occluded = np.where(group_mask.numpy(), b, c)
    image = torch.from_numpy(scipy.fft.idctn(occluded, type=2, norm="ortho", axes=(-2, -1)))
    with torch.no_grad():
        rows = torch.arange(x.shape[0])
        return model(x)[rows, y] - model(image)[rows, y]


def test_scores_equal_hand_logit_drops_ring_and_diagonal(setup):
    model, x, y = setup
    u, v = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    ring = OccludedFrequency(model).player_values(x, target=y)
    assert ring.shape == (3, 8)  # every ring max(u, v) = 0..7 scored, the highest included
    for k in (0, 3, 7):
        torch.testing.assert_close(ring[:, k], _hand_drop(model, x, y, torch.maximum(u, v) == k))
    diagonal = OccludedFrequency(model, groups="diagonal").player_values(x, target=y)
    assert diagonal.shape == (3, 15)
    for k in (0, 5, 14):
        torch.testing.assert_close(diagonal[:, k], _hand_drop(model, x, y, (u + v) == k))


def test_attribute_map_carries_group_scores_and_matches_captum_feature_ablation(setup):
    model, x, y = setup
    of = OccludedFrequency(model)
    attribution = of.attribute(x, target=y)
    scores = of.player_values(x, target=y)
    assert attribution.shape == (3, 8, 8) and attribution.dtype == x.dtype
    u, v = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    ring = torch.maximum(u, v)
    torch.testing.assert_close(attribution, scores[:, ring])
    # Captum's own FeatureAblation on the DCT coefficients with the ring feature mask gives the same map.
    ablation = FeatureAblation(lambda coefficients: model(idct2(coefficients)))
    captum_map = ablation.attribute(dct2(x), target=y, baselines=0.0, feature_mask=ring.expand(1, 3, 8, 8))
    torch.testing.assert_close(captum_map[:, 0], attribution)


def test_keep_mode_random_and_image_baselines(setup):
    model, x, y = setup
    of = OccludedFrequency(model)
    u, v = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    keep = of.player_values(x, target=y, mode="keep")
    c = dct2(x)
    rows = torch.arange(3)
    with torch.no_grad():
        nothing = model(torch.zeros_like(x))[rows, y]
        only_ring2 = model(idct2(torch.where(torch.maximum(u, v) == 2, c, torch.zeros_like(c))))[rows, y]
    torch.testing.assert_close(keep[:, 2], only_ring2 - nothing)
    first = of.player_values(x, "gaussian", target=y, seed=3)
    torch.testing.assert_close(first, of.player_values(x, "gaussian", target=y, seed=3))  # same seed, same result
    assert not torch.allclose(first, of.player_values(x, "gaussian", target=y, seed=4))
    gray = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    with_gray = of.player_values(x, gray, target=y)
    torch.testing.assert_close(with_gray[:, 0], _hand_drop(model, x, y, torch.maximum(u, v) == 0,
                                                           baseline=dct2(gray).numpy()))


def test_custom_group_map(setup):
    model, x, y = setup
    custom = (torch.arange(64).reshape(8, 8) % 3)
    scores = OccludedFrequency(model, groups=custom).player_values(x, target=y)
    assert scores.shape == (3, 3)
    torch.testing.assert_close(scores[:, 1], _hand_drop(model, x, y, custom == 1))


def test_captum_conventions_targets_batching_progress_and_forward_args(setup, capsys):
    model, x, y = setup
    of = OccludedFrequency(model)
    by_tensor = of.attribute(x, target=y)
    torch.testing.assert_close(by_tensor, of.attribute(x, target=y.tolist()))
    torch.testing.assert_close(of.attribute(x, target=2)[1], by_tensor[1])
    for ppe in (2, 3, 8, 50):
        torch.testing.assert_close(of.attribute(x, target=y, perturbations_per_eval=ppe), by_tensor)
    of.attribute(x, target=y, perturbations_per_eval=3, show_progress=True)
    assert "Occluded Frequency attribution" in capsys.readouterr().err

    def scaled(images, scale):
        return model(images) * scale[:, None]

    scale = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    with_args = OccludedFrequency(scaled).attribute(x, target=y, additional_forward_args=(scale,),
                                                    perturbations_per_eval=4)
    torch.testing.assert_close(with_args, by_tensor * scale[:, None, None])


def test_class_average_scores_and_plot(setup, tmp_path):
    model, x, y = setup
    x = torch.cat([x, x.flip(-1)])
    y = torch.tensor([0, 2, 1, 0, 1, 1])
    of = OccludedFrequency(model)
    means, counts = of.class_average_scores((x, y), num_classes=4, batch_size=4, show_progress=False)
    scores = of.player_values(x, target=y)
    assert counts.tolist() == [2, 3, 1, 0]
    torch.testing.assert_close(means[1], scores[y == 1].mean(0))
    assert torch.isnan(means[3]).all()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    torch.testing.assert_close(of.class_average_scores(loader, show_progress=False)[0], means[:3])
    path = tmp_path / "bars.png"
    figure = plot_group_scores(scores[0], path=str(path))
    assert path.stat().st_size > 1000 and len(figure.axes[0].patches) == 8


def test_bad_inputs_raise_clear_errors(setup):
    model, x, y = setup
    of = OccludedFrequency(model)
    with pytest.raises(ValueError, match="inputs"):
        of.attribute(x * 3, target=y)
    with pytest.raises(ValueError, match="mode"):
        of.attribute(x, target=y, mode="drop")
    with pytest.raises(ValueError, match="baselines"):
        of.attribute(x, "uniform", target=y)
    with pytest.raises(ValueError, match="target"):
        of.attribute(x)  # (N, 4) logits without a target
    with pytest.raises(ValueError, match="4x4|8x8"):
        OccludedFrequency(model, groups=torch.zeros(4, 4, dtype=torch.long)).attribute(x, target=y)
    with pytest.raises(ValueError, match="groups"):
        OccludedFrequency(model, groups="square")
    with pytest.raises(TypeError, match="perturbations_per_eval"):
        of.attribute(x, target=y, perturbations_per_eval=1.5)


def test_model_and_inputs_untouched(setup):
    model, x, y = setup
    model.train()
    x = x.clone().requires_grad_(True)
    before_x = x.detach().clone()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    OccludedFrequency(model).attribute(x, "gaussian", target=y, perturbations_per_eval=4)
    assert model.training and x.requires_grad and x.grad is None
    assert torch.equal(x.detach(), before_x)
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------- trust, vocabulary, per-image baselines
def test_group_map_with_minus_one_is_refused(setup):
    model, _, _ = setup
    groups = torch.maximum(*torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")).clone()
    groups[1, 1] = -1  # "always present" has no meaning for occlusion
    with pytest.raises(ValueError, match=r"`groups` map holds -1 at 1 DCT coefficient"):
        OccludedFrequency(model, groups=groups)
    from freqplug.spectral import Players

    with pytest.raises(ValueError, match="no -1"):
        OccludedFrequency(model, groups=Players(groups, layout="dct"))


def test_targets_outside_the_classes_are_refused_not_wrapped(setup):
    model, x, y = setup
    of = OccludedFrequency(model)
    with pytest.raises(ValueError, match="`target` must .*non-negative"):
        of.player_values(x, target=-1)  # Captum would silently read the last class
    with pytest.raises(ValueError, match=r"`target` must hold indices in \[0, 4\)"):
        of.player_values(x, target=10)  # Captum raises a bare IndexError
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        of.player_values(x, target=torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        of.class_average_scores((x, torch.tensor([0, 1, 4])), show_progress=False)
    counted = CountingModel(model)
    with pytest.raises(ValueError, match="num_classes"):
        OccludedFrequency(counted).class_average_scores((x, y), num_classes=2, show_progress=False)
    assert counted.calls == 0  # refused before any model call
    with pytest.raises(ValueError, match=r"`forward_func` \(NaNModel\) returned .*non-finite"):
        OccludedFrequency(NaNModel(model)).player_values(x, target=y)


def test_gaussian_baseline_is_the_dct_of_per_image_noise(setup):
    model, x, y = setup
    of = OccludedFrequency(model)
    scores = of.player_values(x, "gaussian", target=y, seed=3)
    u, v = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    for i in range(3):  # image i's noise comes from the generator of (seed, dataset index i), pixel std 1
        noise = torch.randn(3, 8, 8, generator=image_generator(3, i), dtype=torch.float64)
        coefficients = scipy.fft.dctn(noise.numpy(), type=2, norm="ortho", axes=(-2, -1))
        for k in (0, 5):
            drop = _hand_drop(model, x[i:i + 1], y[i:i + 1], torch.maximum(u, v) == k, baseline=coefficients)
            torch.testing.assert_close(scores[i, k], drop[0])
    assert not torch.allclose(scores, of.player_values(x, "gaussian", target=y, seed=3, noise_std=0.5))


def test_random_is_a_deprecated_name_of_gaussian_with_its_old_default(setup):
    model, x, y = setup
    of = OccludedFrequency(model)
    with pytest.warns(DeprecationWarning, match="'random' is deprecated.*gaussian"):
        old = of.player_values(x, "random", target=y, seed=2)
    torch.testing.assert_close(old, of.player_values(x, "gaussian", target=y, seed=2, noise_std=0.1))
    assert not torch.allclose(old, of.player_values(x, "gaussian", target=y, seed=2))  # new default: 1.0
    with pytest.warns(DeprecationWarning):
        torch.testing.assert_close(of.player_values(x, "random", target=y, seed=2, noise_std=0.3),
                                   of.player_values(x, "gaussian", target=y, seed=2, noise_std=0.3))


def test_group_scores_is_a_deprecated_alias_of_player_values(setup):
    model, x, y = setup
    of = OccludedFrequency(model)
    with pytest.warns(DeprecationWarning, match="player_values"):
        old = of.group_scores(x, target=y, perturbations_per_eval=3)
    torch.testing.assert_close(old, of.player_values(x, target=y))


def test_class_averages_do_not_depend_on_the_batching(setup):
    # Issue: with the draw keyed on the position in the batch, class averages moved by 3.5 on a scale
    # of 14 between batch_size 1 and 4. Each image's baseline is now keyed on its dataset index.
    model, x, _ = setup
    x = torch.cat([x, x.flip(-1), x.flip(-2)])
    y = torch.tensor([0, 2, 1, 0, 1, 1, 3, 2, 0])
    of = OccludedFrequency(model)
    for baseline in ("zero", "gaussian"):  # gaussian last: `one` is used below
        one, counts = of.class_average_scores((x, y), baselines=baseline, batch_size=1, seed=5, show_progress=False)
        four, _ = of.class_average_scores((x, y), baselines=baseline, batch_size=4, seed=5, show_progress=False)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)
        by_loader, _ = of.class_average_scores(loader, baselines=baseline, seed=5, show_progress=False)
        torch.testing.assert_close(four, one, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(by_loader, one, rtol=1e-12, atol=1e-12)
    # and the class means are the means of the per-image scores of the whole set
    scores = of.player_values(x, "gaussian", target=y, seed=5)
    torch.testing.assert_close(one[1], scores[y == 1].mean(0))
    assert counts.tolist() == [3, 3, 2, 1]


def test_zero_baseline_spellings_tuple_inputs_dtype_and_budget(setup):
    model, x, y = setup
    of = OccludedFrequency(model)
    reference = of.attribute(x, target=y)
    for zero in (None, 0, 0.0, torch.zeros(1, 3, 8, 8, dtype=x.dtype)):
        torch.testing.assert_close(of.attribute(x, zero, target=y), reference)
    as_tuple = of.attribute((x,), target=y)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], reference)
    model32 = tiny_cnn(dtype=torch.float32)
    out = OccludedFrequency(model32).attribute(x.float(), target=y)
    assert out.dtype == torch.float32 and OccludedFrequency(model32).player_values(x.float(), target=y).dtype == \
        torch.float32
    assert of.num_evaluations(3, 8, 8) == 3 * 9
    with pytest.raises(ValueError, match="max_evaluations"):
        of.player_values(x, target=y, max_evaluations=26)
    of.player_values(x, target=y, max_evaluations=27)


# ---------------------------------------------------------------------------- spectral.apply_dct_mask
def test_apply_dct_mask_matches_scipy_and_its_doctest():
    import doctest

    import freqplug.spectral.dct as dct_module
    from freqplug.spectral import apply_dct_mask

    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 6, 5, generator=gen, dtype=torch.float64)
    mask = torch.rand(6, 5, generator=gen) < 0.4
    fill = torch.randn(1, 3, 6, 5, generator=gen, dtype=torch.float64)
    c = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    for keep in (True, False):
        mixed = np.where(mask.numpy(), c, fill.numpy()) if keep else np.where(mask.numpy(), fill.numpy(), c)
        expected = torch.from_numpy(scipy.fft.idctn(mixed, type=2, norm="ortho", axes=(-2, -1)))
        torch.testing.assert_close(apply_dct_mask(x, mask, fill, keep=keep), expected)
    stacked = apply_dct_mask(x, torch.stack([mask, ~mask])[:, None, None])
    assert stacked.shape == (2, 2, 3, 6, 5)
    torch.testing.assert_close(stacked.sum(0), x)  # the two complementary parts add up to the image
    with pytest.raises(TypeError, match="`mask` must be a boolean"):
        apply_dct_mask(x, mask.long())
    with pytest.raises(ValueError, match=r"`mask` must end in the images' \(H, W\)"):
        apply_dct_mask(x, mask.T)
    failures, tried = doctest.testmod(dct_module, extraglobs={"torch": torch})[:2]
    assert tried >= 3 and failures == 0
