"""Low-pass defenses of Wang2020b §3.3: D1 (LowPassFilter) and D2 (low_pass_kernels), Theorem 1."""

import pytest
import torch
import torchattacks
from torch import nn

from freqplug.defenses import LowPassFilter, low_pass_kernel_weights, low_pass_kernels
from freqplug.spectral import low_high_split, radial_mask


def circular_model(kernel=3, stride=1, channels=3, size=(8, 8), groups=1):
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, 6, kernel, stride=stride, padding=kernel // 2, padding_mode="circular",
                     groups=groups)
    body = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
    with torch.no_grad():
        features = body(torch.zeros(1, channels, *size)).shape[1]
    return nn.Sequential(body, nn.Linear(features, 5)).double().eval()


def test_d1_equals_model_on_the_low_frequency_component(reference_model, cifar_samples):
    x, _ = cifar_samples
    x = x[:4]
    defended = LowPassFilter(reference_model, 8)
    with torch.no_grad():
        assert torch.equal(defended(x), reference_model(low_high_split(x, 8)[0]))
    assert list(defended.parameters()) == list(reference_model.parameters())


def test_d1_is_differentiable_and_usable_by_attacks(reference_model, cifar_samples):
    x, y = cifar_samples
    x, y = x[:2], y[:2]
    defended = LowPassFilter(reference_model, 8)
    inputs = x.clone().requires_grad_(True)
    defended(inputs)[torch.arange(2), y].sum().backward()
    assert inputs.grad is not None and inputs.grad.abs().sum() > 0
    reference_model.zero_grad(set_to_none=True)
    adv = torchattacks.PGD(defended, eps=8 / 255, alpha=2 / 255, steps=2)(x, y)
    assert adv.min() >= 0 and adv.max() <= 1 and float((adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert not defended.training and not reference_model.training, "the attack leaves the model in eval mode"


def test_d2_copies_and_leaves_the_original_untouched(reference_model, cifar_samples):
    x, _ = cifar_samples
    state = {k: v.clone() for k, v in reference_model.state_dict().items()}
    grads = [p.requires_grad for p in reference_model.parameters()]
    defended = low_pass_kernels(reference_model, 1.2)
    after = reference_model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert [p.requires_grad for p in reference_model.parameters()] == grads
    assert defended is not reference_model and not defended.training
    changed = [k for k, v in defended.state_dict().items() if not torch.equal(v, state[k])]
    assert changed == ["conv1.weight"], "only the first convolution changes"
    with torch.no_grad():
        assert not torch.equal(defended(x[:2]), reference_model(x[:2]))
    two = low_pass_kernels(reference_model, [1.2, 1.2])
    changed = [k for k, v in two.state_dict().items() if not torch.equal(v, state[k])]
    assert changed == ["conv1.weight", "layer1.0.conv1.weight"]


def test_d2_kernels_are_the_real_part_of_the_masked_spectrum():
    weight = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    for radius in (1.0, 1.5, 2.2):
        mask = radial_mask(5, 5, radius)
        complex_result = torch.fft.ifft2(torch.fft.fft2(weight) * mask)
        assert complex_result.imag.abs().max() < 1e-12, "symmetric masks give real kernels"
        torch.testing.assert_close(low_pass_kernel_weights(weight, radius), complex_result.real)
    # A 3x3 kernel keeps only its mean for r <= 1.
    weight = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(low_pass_kernel_weights(weight, 1.0),
                               weight.mean(dim=(-2, -1), keepdim=True).expand_as(weight))


@pytest.mark.parametrize("size,kernel,stride", [((8, 8), 3, 1), ((8, 8), 3, 2), ((7, 9), 5, 1), ((6, 6), 3, 2)])
@pytest.mark.parametrize("radius", [1.5, 2.5, 3.2])
def test_theorem1_holds_for_circular_convolutions_on_the_image_grid(size, kernel, stride, radius):
    # Conditions (module docstring): circular padding k//2, odd k, dilation 1, kernel low-passed on
    # the input's grid (grid="input"), first layer sees the input directly.
    model = circular_model(kernel=kernel, stride=stride, size=size)
    x = torch.rand(5, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    d2 = low_pass_kernels(model, radius, grid="input", input_size=(3, *size))
    d1 = LowPassFilter(model, radius)
    with torch.no_grad():
        torch.testing.assert_close(d2(x), d1(x), rtol=0, atol=1e-10)
        assert (model(x) - d1(x)).abs().max() > 1e-3, "the low-pass changes the output at all"


def test_theorem1_with_the_kernel_grid_when_kernel_and_image_sizes_agree():
    model = circular_model(kernel=5, size=(5, 5))
    x = torch.rand(4, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for radius in (1.2, 2.0, 2.5):
        with torch.no_grad():
            torch.testing.assert_close(low_pass_kernels(model, radius)(x), LowPassFilter(model, radius)(x),
                                       rtol=0, atol=1e-10)


def test_theorem1_fails_with_zero_padding_or_a_smaller_kernel_grid():
    torch.manual_seed(0)
    zero_padded = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                nn.Linear(4 * 8 * 8, 5)).double()
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="circular"):
        low_pass_kernels(zero_padded, 2.0, grid="input", input_size=(3, 8, 8))
    with torch.no_grad():
        assert (low_pass_kernels(zero_padded, 1.2)(x) - LowPassFilter(zero_padded, 1.2)(x)).abs().max() > 1e-3
        circular = circular_model(kernel=3, size=(8, 8))
        assert (low_pass_kernels(circular, 1.2)(x) - LowPassFilter(circular, 1.2)(x)).abs().max() > 1e-3


def test_d2_bad_arguments(reference_model):
    with pytest.raises(ValueError, match="radius"):
        low_pass_kernels(reference_model, 0)
    with pytest.raises(TypeError, match="radius"):
        low_pass_kernels(reference_model, "wide")
    with pytest.raises(ValueError, match="grid"):
        low_pass_kernels(reference_model, 1.0, grid="image")
    with pytest.raises(ValueError, match="nn.Conv2d"):
        low_pass_kernels(nn.Sequential(nn.Conv2d(3, 3, 3)), [1.0, 1.0])
    with pytest.raises(ValueError, match="input_size"):
        low_pass_kernels(circular_model(), 1.0, grid="input")
    with pytest.raises(TypeError, match="nn.Module"):
        low_pass_kernels(lambda z: z, 1.0)
    with pytest.raises(ValueError, match="radius"):
        LowPassFilter(reference_model, 0)
