import math

import pytest
import torch

from freqplug.spectral import (
    dct2,
    energy_spectral_density,
    frequency_bias,
    radial_profile,
    relative_change_dct,
    spectral_importance_distribution,
    spectral_robustness_score,
    spectral_snr,
)


def frequency_bias_direct(jacobian):
    """Chan2022 eq. 10 exactly as the authors' code writes it: products of powers, then log."""
    h, w = jacobian.shape[-2:]
    m = torch.fft.rfft2(jacobian).abs().reshape(-1, h, w // 2 + 1).mean(0)[: h // 2 + 1] + 1e-5
    a_rows = torch.linspace(1, -1, h // 2 + 1, dtype=m.dtype) + 1e-5
    a_cols = torch.linspace(1, -1, w // 2 + 1, dtype=m.dtype) + 1e-5
    columns = torch.prod(m ** a_rows[:, None], dim=0).sum()
    rows = torch.prod(m ** a_cols[None, :], dim=1).sum()
    return torch.log(columns + rows)


def test_frequency_bias_equals_direct_formula():
    g = torch.Generator().manual_seed(0)
    for shape in [(4, 3, 32, 32), (2, 1, 28, 28), (3, 3, 9, 12)]:
        jacobian = torch.randn(shape, generator=g, dtype=torch.float64) * 1e-2
        assert frequency_bias(jacobian).item() == pytest.approx(frequency_bias_direct(jacobian).item(), rel=1e-10)


def test_frequency_bias_prefers_low_frequencies_and_gradient_flows():
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2)  # low-passed version
    assert frequency_bias(smooth) > frequency_bias(noise)
    jacobian = noise.clone().requires_grad_(True)
    value = frequency_bias(jacobian)
    assert value.dim() == 0
    (grad,) = torch.autograd.grad(value, jacobian)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # finite-difference check of one entry
    step = 1e-6
    bumped = noise.clone()
    bumped[0, 0, 3, 5] += step
    numeric = (frequency_bias(bumped) - frequency_bias(noise)) / step
    assert numeric.item() == pytest.approx(grad[0, 0, 3, 5].item(), rel=1e-3, abs=1e-8)
    with pytest.raises(ValueError, match="jacobian"):
        frequency_bias(torch.randn(5))


def test_frequency_bias_of_reference_model_jacobian(reference_model, cifar_samples):
    x, y = cifar_samples
    x = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(reference_model(x), y)
    (jacobian,) = torch.autograd.grad(loss, x, create_graph=True)
    bias = frequency_bias(jacobian)
    assert math.isfinite(bias.item())
    (param_grad,) = torch.autograd.grad(bias, reference_model.linear.weight)
    assert param_grad.abs().sum() > 0  # differentiable through the double backprop used by JaFR


def test_srs_uniform_and_one_hot():
    assert spectral_robustness_score(torch.full((8,), 1 / 8, dtype=torch.float64)).item() == pytest.approx(0, abs=1e-12)
    assert spectral_robustness_score(torch.full((8,), 1 / 8)).item() == pytest.approx(0, abs=1e-6)
    for k in range(8):
        score = spectral_robustness_score(torch.eye(8, dtype=torch.float64)[k]).item()
        assert 0 < score < 1
    scores = spectral_robustness_score(torch.eye(8, dtype=torch.float64))
    assert scores.shape == (8,)
    # hand computation for the lowest band, beta = 0.75, M = 8
    beta = 0.75 ** torch.arange(8, dtype=torch.float64)
    eta = beta.sum() / (8 * beta.norm())
    assert scores[0].item() == pytest.approx(((1 / beta.norm() - eta) / (1 - eta)).item())
    # unnormalized input is L1-normalized first
    normalized = spectral_robustness_score([1.0, 0, 0, 0]).item()
    assert spectral_robustness_score([2.0, 0, 0, 0]).item() == pytest.approx(normalized)
    with pytest.raises(ValueError, match="non-negative"):
        spectral_robustness_score([0.5, -0.1, 0.6])
    with pytest.raises(ValueError, match="beta"):
        spectral_robustness_score([0.5, 0.5], beta=1.0)
    with pytest.raises(ValueError, match="NaN"):
        spectral_robustness_score([0.5, float("nan")])


def test_sid_min_shift_and_l1():
    sid = spectral_importance_distribution(torch.tensor([1.91, 0.33, 0.22, 0.16, 0.58, 0.46, 0.31, 0.19]))
    assert sid.sum().item() == pytest.approx(1)
    assert sid[3] == 0 and sid.argmax() == 0
    assert spectral_robustness_score(sid).item() == pytest.approx(0.28, abs=0.02)  # the measured value
    uniform = spectral_importance_distribution(torch.ones(4))
    assert torch.allclose(uniform, torch.full((4,), 0.25))


def test_relative_change_dct():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64)
    assert torch.all(relative_change_dct(x, x) == 0)
    delta = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64) * 0.01
    rct = relative_change_dct(x, x + delta)
    expected = ((dct2(x + delta) - dct2(x)).abs() / (dct2(x).abs() + 1e-6)).mean((0, 1))
    assert rct.shape == (8, 8) and torch.allclose(rct, expected)
    assert relative_change_dct(x, x + delta, reduction="none").shape == (3, 3, 8, 8)
    with pytest.raises(ValueError, match="x_adv"):
        relative_change_dct(x, x[:2])


def test_esd_radial_profile_and_snr():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64)
    esd = energy_spectral_density(x)
    assert esd.shape == (2, 3, 12)  # rings 0..round(sqrt(8^2 + 8^2)) = 11
    # DC energy in orthonormal units = (sum x)^2 / (H W)
    assert torch.allclose(esd[..., 0], x.sum((-2, -1)) ** 2 / 256)
    # white noise has a flat ESD in expectation; the SNR of x against itself is 1
    assert torch.allclose(spectral_snr(x, x), torch.ones(12, dtype=torch.float64))
    noise = torch.randn(64, 1, 16, 16, generator=g, dtype=torch.float64)
    flat = energy_spectral_density(noise).mean((0, 1))
    assert torch.all((flat[1:] > 0.7) & (flat[1:] < 1.3))
    assert spectral_snr(x, 0.1 * x, decibels=True).allclose(torch.full((12,), 20.0, dtype=torch.float64))
    # radial profile of the radius map itself is increasing
    from freqplug.spectral import frequency_radius

    profile = radial_profile(frequency_radius(16, 16))
    assert torch.all(profile[1:] > profile[:-1])
