"""OccludedFrequency (seed 001, Definition 1): hand-computed logit drops, Captum conventions, helpers."""

import numpy as np
import pytest
import scipy.fft
import torch
from captum.attr import FeatureAblation

from freqplug.attributions.occluded_frequency import OccludedFrequency, plot_group_scores
from freqplug.spectral import dct2, idct2
from helpers import tiny_cnn


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
