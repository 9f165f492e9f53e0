import numpy as np
import pytest
import scipy.fft
import torch

from freqplug.spectral import (
    LowPass,
    apply_spectral_mask,
    dct2,
    frequency_radius,
    high_pass,
    idct2,
    low_high_split,
    low_pass,
    radial_mask,
)


def numpy_low_high_split(x, radius):
    """The convention of Wang2020b's code: per channel, centered spectrum, distance from (H//2, W//2) < radius."""
    h, w = x.shape[-2:]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    low_mask = np.sqrt((rows - h // 2) ** 2 + (cols - w // 2) ** 2) < radius
    spectrum = np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))
    low = np.fft.ifft2(np.fft.ifftshift(spectrum * low_mask, axes=(-2, -1))).real
    high = np.fft.ifft2(np.fft.ifftshift(spectrum * ~low_mask, axes=(-2, -1))).real
    return low, high


@pytest.mark.parametrize("shape", [(32, 32), (28, 28), (7, 9), (10, 15)])
@pytest.mark.parametrize("radius", [0, 1, 3.5, 8, 100])
def test_low_high_split_matches_numpy_reference(shape, radius):
    x = np.random.default_rng(0).random((2, 3, *shape))
    low, high = low_high_split(torch.from_numpy(x), radius)
    ref_low, ref_high = numpy_low_high_split(x, radius)
    np.testing.assert_allclose(low.numpy(), ref_low, atol=1e-12)
    np.testing.assert_allclose(high.numpy(), ref_high, atol=1e-12)
    np.testing.assert_allclose((low + high).numpy(), x, atol=1e-12)


def test_low_high_split_keeps_dtype_device_and_gradient(cifar_samples):
    x, _ = cifar_samples
    x = x[:2].clone().requires_grad_(True)
    low, high = low_high_split(x, 8)
    assert low.dtype == torch.float32 and low.shape == x.shape
    assert torch.allclose(low + high, x, atol=1e-6)
    low.sum().backward()
    assert x.grad is not None
    # the gradient of sum(low) is the low-pass of all-ones: DC only
    assert torch.allclose(x.grad, torch.ones_like(x), atol=1e-5)
    assert torch.equal(LowPass(8)(x.detach()), low_pass(x.detach(), 8))
    assert torch.allclose(high_pass(x.detach(), 8), high.detach())


def test_low_high_split_bad_args():
    with pytest.raises(ValueError, match="radius"):
        low_high_split(torch.rand(1, 1, 4, 4), -1)
    with pytest.raises(TypeError, match="floating"):
        low_high_split(torch.ones(1, 1, 4, 4, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="radius"):
        low_high_split(torch.rand(1, 1, 4, 4), "2")


@pytest.mark.parametrize("shape", [(8, 8), (5, 7), (32, 32)])
def test_dct2_matches_scipy_and_inverts(shape):
    x = np.random.default_rng(1).random((2, 3, *shape))
    ref = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))
    coefficients = dct2(torch.from_numpy(x))
    np.testing.assert_allclose(coefficients.numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(idct2(coefficients).numpy(), x, atol=1e-12)
    np.testing.assert_allclose(idct2(torch.from_numpy(ref)).numpy(),
                               scipy.fft.idctn(ref, type=2, norm="ortho", axes=(-2, -1)), atol=1e-12)
    x32 = torch.from_numpy(x).float()
    assert dct2(x32).dtype == torch.float32
    assert torch.allclose(idct2(dct2(x32)), x32, atol=1e-5)


def test_frequency_radius():
    r = frequency_radius(4, 4)
    assert r[0, 0] == 0 and r[0, 1] == 1 and r[0, 3] == 1 and r[2, 2] == pytest.approx(8 ** 0.5)
    rinf = frequency_radius(4, 4, metric="linf", normalized=True)
    assert rinf.max() == 1 and rinf[1, 1] == 0.5
    centered = frequency_radius(5, 5, centered=True)
    assert centered[2, 2] == 0
    with pytest.raises(ValueError, match="metric"):
        frequency_radius(4, 4, metric="l1")


def test_radial_mask_and_asymmetric_mask_error():
    mask = radial_mask(8, 8, 0.4, normalized=True, keep="below")
    assert mask[0, 0] and not mask[4, 4]
    bad = torch.zeros(8, 8, dtype=torch.bool)
    bad[0, 1] = True
    with pytest.raises(ValueError, match="conjugate-symmetric"):
        apply_spectral_mask(torch.rand(1, 1, 8, 8), bad)
    soft = radial_mask(8, 8, 2).double() * 0.5
    x = torch.rand(1, 2, 8, 8, dtype=torch.float64)
    assert torch.allclose(apply_spectral_mask(x, soft), 0.5 * low_pass(x, 2))
