"""freqplug.plots.visualize_frequency_attr: real attributions of a tiny network, numpy/scipy oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_cnn

import freqplug
from freqplug.plots import visualize_frequency_attr

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def shapley_case():
    """One real FrequencyShapley map of an 8x8 image (fft2 layout), its image and a DCT map of the same image."""
    model = tiny_cnn(num_classes=4, dtype=torch.float64)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    attr = freqplug.FrequencyShapley(model).attribute(x, target=1, n_samples=2, seed=0)
    occluded = freqplug.OccludedFrequency(model).attribute(x, target=1)
    return {"model": model, "x": x, "attr": attr, "occluded": occluded}


def _numpy_radial(values: np.ndarray) -> np.ndarray:
    """Mean per rounded L2 radius of the fft2 grid (frequencies folded to [-H/2, H/2))."""
    h, w = values.shape
    fu = np.minimum(np.arange(h), h - np.arange(h))[:, None]
    fv = np.minimum(np.arange(w), w - np.arange(w))[None, :]
    ring = np.rint(np.sqrt(fu ** 2 + fv ** 2)).astype(int)
    return np.array([values[ring == r].mean() for r in range(ring.max() + 1)])


def _stretch(a: np.ndarray) -> np.ndarray:
    return (a - a.min()) / max(a.max() - a.min(), 1e-12)


def test_full_figure_shows_centered_map_radial_profile_and_pfc_nfc(shapley_case):
    from matplotlib.colors import TwoSlopeNorm

    x, attr = shapley_case["x"], shapley_case["attr"]
    figure, axes = visualize_frequency_attr(attr[0], x[0], title="FrequencyShapley, image 0")
    assert len(axes) == 5 and all(ax.figure is figure for ax in axes)
    assert figure.get_suptitle() == "FrequencyShapley, image 0"
    heat, radial, image, pfc, nfc = axes
    # heatmap: the map centered with numpy's fftshift, a 0-centred symmetric diverging scale and a colorbar
    shown = heat.images[0]
    np.testing.assert_array_equal(np.asarray(shown.get_array()), np.fft.fftshift(attr[0].numpy()))
    norm = shown.norm
    assert isinstance(norm, TwoSlopeNorm) and norm.vcenter == 0 and norm.vmin == -norm.vmax
    assert norm.vmax == pytest.approx(float(attr[0].abs().max()))
    assert shown.colorbar is not None and shown.colorbar.ax in figure.axes
    assert "cycles/pixel" in heat.get_xlabel() and "cycles/pixel" in heat.get_ylabel()
    left, right, bottom, top = shown.get_extent()
    assert (left, right) == pytest.approx((-4.5 / 8, 3.5 / 8)) and (top, bottom) == pytest.approx((-4.5 / 8, 3.5 / 8))
    # radial profile: numpy's rings
    xs, ys = radial.get_lines()[0].get_data()
    np.testing.assert_allclose(ys, _numpy_radial(attr[0].numpy()), atol=1e-12)
    assert radial.get_xlabel() and radial.get_ylabel() and radial.get_title()
    # reconstructions: numpy's ifft2 of the masked spectrum (DC left out), stretched for display
    spectrum = np.fft.fft2(x[0].numpy())
    for ax, mask in ((pfc, attr[0].numpy() > 0), (nfc, attr[0].numpy() < 0)):
        mask = mask.copy()
        mask[0, 0] = False
        expected = _stretch(np.fft.ifft2(spectrum * mask).real).transpose(1, 2, 0)
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), expected, atol=1e-9)
    np.testing.assert_allclose(np.asarray(image.images[0].get_array()), x[0].permute(1, 2, 0).numpy())
    assert [ax.get_title()[:3] for ax in (image, pfc, nfc)] == ["ima", "PFC", "NFC"]


def test_dct_maps_of_occluded_frequency_use_the_dct(shapley_case):
    fft = pytest.importorskip("scipy.fft")
    x, occluded = shapley_case["x"], shapley_case["occluded"]
    with pytest.raises(ValueError, match="layout='dct'"):  # a DCT map is not conjugate-symmetric
        visualize_frequency_attr(occluded[0], x[0])
    figure, axes = visualize_frequency_attr(occluded[0], x[0], layout="dct")
    heat, radial, _, pfc, _ = axes
    np.testing.assert_array_equal(np.asarray(heat.images[0].get_array()), occluded[0].numpy())  # not shifted
    assert "DCT" in heat.get_xlabel()
    values = occluded[0].numpy()
    ring = np.maximum(*np.meshgrid(np.arange(8), np.arange(8), indexing="ij"))
    np.testing.assert_allclose(radial.get_lines()[0].get_data()[1], [values[ring == k].mean() for k in range(8)])
    mask = values > 0
    mask[0, 0] = False
    coefficients = fft.dctn(x[0].numpy(), axes=(-2, -1), norm="ortho") * mask
    expected = _stretch(fft.idctn(coefficients, axes=(-2, -1), norm="ortho")).transpose(1, 2, 0)
    np.testing.assert_allclose(np.asarray(pfc.images[0].get_array()), expected, atol=1e-9)


def test_one_panel_methods_signs_and_captum_arguments(shapley_case):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x, attr = shapley_case["x"], shapley_case["attr"]
    own = Figure()
    FigureCanvasAgg(own)
    own_axis = own.subplots()
    figure, axis = visualize_frequency_attr(attr[:1], method="heat_map", plt_fig_axis=(own, own_axis),
                                            sign="absolute_value", show_colorbar=False)
    assert figure is own and axis is own_axis
    assert np.asarray(axis.images[0].get_array()).min() >= 0 and axis.images[0].colorbar is None
    _, axis = visualize_frequency_attr(attr[0].numpy(), method="radial_profile")  # numpy maps, like Captum
    assert len(axis.get_lines()) == 2  # the profile and the zero line
    figure, axes = visualize_frequency_attr((attr[0],), x[0].numpy(), method="reconstructions", fig_size=(6, 2))
    assert len(axes) == 3 and tuple(figure.get_size_inches()) == (6, 2)
    _, axes = visualize_frequency_attr(attr[0])  # no image: heatmap and profile only, no empty panel
    assert len(axes) == 2
    _, axis = visualize_frequency_attr(attr[0], method="heat_map", sign="negative")
    np.testing.assert_allclose(np.asarray(axis.images[0].get_array()),
                               np.clip(-np.fft.fftshift(attr[0].numpy()), 0, None))


def test_refuses_what_is_not_one_frequency_map(shapley_case):
    x, attr = shapley_case["x"], shapley_case["attr"]
    with pytest.raises(ValueError, match=r"`attr` holds 2 maps.*attr\[i\]"):
        visualize_frequency_attr(attr, x[0])
    with pytest.raises(ValueError, match="per-pixel attribution"):
        visualize_frequency_attr(torch.zeros(1, 3, 8, 8))
    with pytest.raises(TypeError, match="`attr` must be floating"):
        visualize_frequency_attr(torch.zeros(8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="`attr` must be finite"):
        visualize_frequency_attr(torch.full((8, 8), float("nan")))
    with pytest.raises(ValueError, match="conjugate-symmetric"):  # a centered map is not an fft2 map
        visualize_frequency_attr(torch.fft.fftshift(attr[0] + torch.arange(8.0)[:, None] / 1e3))
    with pytest.raises(ValueError, match=r"`image` is 16x16 but `attr` is a 8x8"):
        visualize_frequency_attr(attr[0], torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=r"`image` must be in \[0, 1\]"):
        visualize_frequency_attr(attr[0], x[0] * 255)
    with pytest.raises(ValueError, match="`image` is required"):
        visualize_frequency_attr(attr[0], method="reconstructions")
    with pytest.raises(ValueError, match="`plt_fig_axis` holds 1"):
        figure, axis = visualize_frequency_attr(attr[0], method="heat_map")
        visualize_frequency_attr(attr[0], plt_fig_axis=(figure, axis))
    with pytest.raises(ValueError, match="`method`"):
        visualize_frequency_attr(attr[0], method="blended_heat_map")


def test_no_pyplot_state_unless_asked(shapley_case):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    pyplot = pytest.importorskip("matplotlib.pyplot")
    before = pyplot.get_fignums()
    figure, _ = visualize_frequency_attr(shapley_case["attr"][0])
    assert pyplot.get_fignums() == before and isinstance(figure.canvas, FigureCanvasAgg)
    figure, _ = visualize_frequency_attr(shapley_case["attr"][0], use_pyplot=True)
    try:
        assert figure.number in pyplot.get_fignums()
    finally:
        pyplot.close(figure)
