"""Corruption robustness by frequency (issue 16 item 1; Chan2022 Table 1): accuracy per corruption and severity on
the embedded ResNet-18 against imagecorruptions called directly, B_low and the radial energy of the noise against
frequency_bias and numpy's FFT, reproducibility, hygiene, refusals, mCE, and the RobustBench CIFAR-10-C folder."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from helpers import NaNModel, assert_model_unchanged, snapshot_model, tiny_cnn
from helpers.corruptions import imagecorruptions_direct, quantized, radial_energy_numpy, write_cifar_c_folder

from freqplug._model import accuracy
from freqplug.data import CORRUPTIONS, load_corrupted_cifar
from freqplug.eval import CorruptionRobustness, corrupt_images, corruption_robustness
from freqplug.spectral import frequency_bias

pytest.importorskip("imagecorruptions")

NAMES = ("gaussian_noise", "defocus_blur", "jpeg_compression")
SEVERITIES = (1, 4)


@pytest.fixture(scope="module")
def images(cifar_samples):
    return cifar_samples[0][:3].clone(), cifar_samples[1][:3].clone()


@pytest.fixture(scope="module")
def measured(reference_model, images):
    x, y = images
    return corruption_robustness(reference_model, x, y, NAMES, SEVERITIES, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def small_net():
    return tiny_cnn(num_classes=10, dtype=torch.float32)


@pytest.fixture(scope="module")
def direct(images):
    x, _ = images
    return {(c, s): imagecorruptions_direct(x, c, s, seed=0) for c in NAMES for s in SEVERITIES}


def test_accuracy_equals_the_checked_accuracy_on_images_corrupted_by_imagecorruptions(reference_model, images,
                                                                                      measured, direct):
    x, y = images
    assert measured.clean_accuracy == accuracy(reference_model, x, y)
    for key, corrupted in direct.items():
        assert measured.accuracy[key] == accuracy(reference_model, corrupted, y), key
    assert len(set(measured.accuracy.values())) > 1  # the corruptions differ in effect: the test can tell them apart
    assert measured.evaluations == 3 * (1 + len(NAMES) * len(SEVERITIES))
    for key, corrupted in direct.items():  # the generator itself, image for image
        assert torch.equal(corrupt_images(x, *key, seed=0), corrupted), key


def test_b_low_and_radial_energy_of_the_noise_match_independent_computations(images, measured, direct, small_net):
    x, y = images
    for c in NAMES:
        per_severity = [float(frequency_bias(direct[(c, s)] - quantized(x))) for s in SEVERITIES]
        for s, value in zip(SEVERITIES, per_severity):
            assert measured.frequency_bias_per_severity[(c, s)] == pytest.approx(value, abs=1e-5)
        assert measured.frequency_bias[c] == pytest.approx(np.mean(per_severity), abs=1e-5)
        profile = np.mean([radial_energy_numpy(direct[(c, s)] - quantized(x)) for s in SEVERITIES], axis=0)
        np.testing.assert_allclose(measured.radial_profile[c].double().numpy(), profile, rtol=1e-4, atol=1e-9)
    # Images off the 1/255 grid: the noise is the corruption's, measured against the quantized image the
    # corruption started from (not the quantization error on top).
    off_grid = x[:2] * 0.9 + 0.3 / 255
    result = corruption_robustness(small_net, off_grid, y[:2], ["defocus_blur"], (1,))
    noise = imagecorruptions_direct(off_grid, "defocus_blur", 1) - quantized(off_grid)
    assert result.frequency_bias["defocus_blur"] == pytest.approx(float(frequency_bias(noise)), abs=1e-5)


def test_blur_noise_is_lower_frequency_than_gaussian_noise(measured):
    # Physics, not implementation: a blur removes high frequencies (its noise is low-pass), additive gaussian noise
    # is white; Chan2022 Table 1 puts Gauss. N at the bottom (3.62) and the blurs around 7-11.
    assert measured.frequency_bias["defocus_blur"] > measured.frequency_bias["gaussian_noise"] + 3
    assert measured.frequency_bias["gaussian_noise"] == pytest.approx(math.log(34), abs=0.6)  # flat spectrum
    noise_profile, blur_profile = measured.radial_profile["gaussian_noise"], measured.radial_profile["defocus_blur"]
    assert noise_profile[-4:].mean() / noise_profile[1:4].mean() > 0.3  # roughly flat
    assert blur_profile[-4:].mean() / blur_profile[1:4].mean() < 0.01  # concentrated at low radii
    table = measured.table()
    assert [row["corruption"] for row in table] == sorted(NAMES, key=lambda c: -measured.frequency_bias[c])
    assert table[-1]["corruption"] == "gaussian_noise"


def test_same_seed_same_result_any_batching_and_nothing_of_the_caller_changes(small_net, images):
    x, y = images
    x_before, y_before = x.clone(), y.clone()
    first = corruption_robustness(small_net, x, y, NAMES, SEVERITIES, batch_size=32, seed=0)
    small_net.train()  # the user's modes, per module
    small_net[0].eval()
    before = snapshot_model(small_net)
    np.random.seed(123)
    numpy_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    try:
        again = corruption_robustness(small_net, x, y, NAMES, SEVERITIES, batch_size=1, seed=0)
        assert_model_unchanged(small_net, before)
    finally:
        small_net.eval()
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert again.to_dict() == first.to_dict()
    other = corruption_robustness(small_net, x, y, ["gaussian_noise"], (5,), seed=1)
    assert other.frequency_bias["gaussian_noise"] != first.frequency_bias_per_severity[("gaussian_noise", 4)]
    # Per-image seeding: a chunk starting at image 1 gets image 1's corruption.
    assert torch.equal(corrupt_images(x[1:], "gaussian_noise", 3, seed=5, start_index=1),
                       corrupt_images(x, "gaussian_noise", 3, seed=5)[1:])
    assert not torch.equal(corrupt_images(x, "gaussian_noise", 3, seed=5), corrupt_images(x, "gaussian_noise", 3))


def test_corruptions_imagecorruptions_cannot_run_here_run_through_the_shim(images):
    import skimage.filters

    from freqplug.eval.corruptions import _imagecorruptions

    x, _ = images
    _, module = _imagecorruptions()
    original_gaussian, original_np = module.gaussian, module.np
    # gaussian_blur severity 2 is skimage's gaussian with sigma 2 over both axes of every channel.
    image = (x[:1].double() * 255).round() / 255
    expected = np.clip(skimage.filters.gaussian(image[0].permute(1, 2, 0).numpy(), sigma=2, channel_axis=-1), 0, 1)
    expected = torch.from_numpy(np.uint8(expected * 255)).permute(2, 0, 1).float()[None] / 255
    assert torch.equal(corrupt_images(x[:1], "gaussian_blur", 2), expected)
    for name in ("glass_blur", "fog"):
        out = corrupt_images(x[:1], name, 5, seed=1)
        assert out.shape == x[:1].shape and not torch.equal(out, quantized(x[:1]))
        assert torch.equal(out, corrupt_images(x[:1], name, 5, seed=1))
    assert module.gaussian is original_gaussian and module.np is original_np  # the package is left as it was


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_every_corruption_runs_at_32x32_on_the_installed_libraries(images, corruption):
    x = images[0][:1]
    for severity in (1, 5):
        out = corrupt_images(x, corruption, severity, seed=3)
        assert out.shape == x.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
        assert float((out * 255 - (out * 255).round()).abs().max()) < 1e-4  # uint8 levels
        assert not torch.equal(out, quantized(x)), f"{corruption} at severity {severity} changed nothing"


def test_grey_images_are_corrupted_as_rgb_and_averaged_back(images):
    x = quantized(images[0][:2].mean(1, keepdim=True))
    out = corrupt_images(x, "gaussian_noise", 2)  # independent noise per RGB channel: the average is no copy
    rgb = imagecorruptions_direct(x.repeat(1, 3, 1, 1), "gaussian_noise", 2)
    assert out.shape == x.shape
    torch.testing.assert_close(out, rgb.mean(1, keepdim=True), rtol=0, atol=1e-6)


def test_mce_relative_to_a_baseline_model_and_to_its_precomputed_result(small_net, images, measured):
    resnet_result = measured
    x, y = images
    baseline = tiny_cnn(num_classes=10, seed=1, dtype=torch.float32)
    measured = corruption_robustness(small_net, x, y, NAMES, SEVERITIES, batch_size=32)
    with_model = corruption_robustness(small_net, x, y, NAMES, SEVERITIES, batch_size=4, baseline=baseline)
    own = corruption_robustness(baseline, x, y, NAMES, SEVERITIES, batch_size=4)
    assert with_model.baseline_accuracy == own.accuracy and with_model.baseline_clean_accuracy == own.clean_accuracy
    assert with_model.evaluations == 2 * measured.evaluations
    # The CE formula where the two differ: the embedded ResNet's result as the tiny net's baseline.
    against_resnet = corruption_robustness(small_net, x, y, NAMES, SEVERITIES, batch_size=32, baseline=resnet_result)
    assert against_resnet.evaluations == measured.evaluations  # a precomputed baseline costs no forwards
    for c in NAMES:
        err = sum(1 - measured.accuracy[(c, s)] for s in SEVERITIES)
        base = sum(1 - resnet_result.accuracy[(c, s)] for s in SEVERITIES)
        expected = 100 * err / base if base > 0 else float("nan")
        assert against_resnet.corruption_error[c] == pytest.approx(expected, nan_ok=True)
    finite = [v for v in against_resnet.corruption_error.values() if not math.isnan(v)]
    assert finite and any(v != 100 for v in finite)  # the check can see an inverted ratio
    if len(finite) == len(NAMES):
        assert against_resnet.mce == pytest.approx(np.mean(finite))
    assert with_model.mce == pytest.approx(np.mean([with_model.corruption_error[c] for c in NAMES]))
    from_result = corruption_robustness(small_net, x, y, NAMES, SEVERITIES, batch_size=4, baseline=own)
    assert from_result.mce == with_model.mce and measured.mce is None and measured.corruption_error is None
    # A baseline result of other images, seed or corruptions is refused.
    with pytest.raises(ValueError, match="`baseline`.*other images"):
        corruption_robustness(small_net, x[:2], y[:2], NAMES, SEVERITIES, baseline=own)
    with pytest.raises(ValueError, match="`baseline`.*seed 0, these with seed 1"):
        corruption_robustness(small_net, x, y, NAMES, SEVERITIES, baseline=own, seed=1)
    with pytest.raises(ValueError, match="`baseline`.*no accuracy for fog/1"):
        corruption_robustness(small_net, x, y, ["fog"], (1,), baseline=own)
    # The baseline gets everything right -> CE undefined: nan and a warning, never a number.
    perfect = CorruptionRobustness(**{**own.__dict__, "accuracy": {k: 1.0 for k in own.accuracy}, "_warned": False})
    undefined = corruption_robustness(small_net, x, y, NAMES, SEVERITIES, baseline=perfect)
    with pytest.warns(RuntimeWarning, match="mCE is undefined"):
        assert math.isnan(undefined.mce)
    assert json.loads(json.dumps(undefined.to_dict(), allow_nan=False))["mce"] is None


def test_to_dict_is_json_and_the_markdown_table_follows_b_low(measured):
    data = json.loads(json.dumps(measured.to_dict(), allow_nan=False))
    assert data["accuracy"]["gaussian_noise"]["4"] == measured.accuracy[("gaussian_noise", 4)]
    assert data["frequency_bias"] == pytest.approx(measured.frequency_bias)
    assert data["order_by_b_low"] == [row["corruption"] for row in measured.table()]
    lines = measured.to_markdown().splitlines()
    assert lines[2].startswith("| clean |") and [line.split("|")[1].strip() for line in lines[3:]] == \
        data["order_by_b_low"]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"corruptions": ["gaussian_noise", "rain"]}, ValueError, "`corruptions`.*'rain'"),
    ({"corruptions": []}, ValueError, "`corruptions`"),
    ({"severities": (0, 1)}, ValueError, "`severities`.*1..5.*0"),
    ({"severities": (6,)}, ValueError, "`severities`.*6"),
    ({"severities": (2.5,)}, ValueError, "`severities`.*2.5"),
    ({"severities": (True,)}, ValueError, "`severities`"),
    ({"seed": -1}, ValueError, "`seed`"),
    ({"seed": 1.5}, (TypeError, ValueError), "`seed`"),
    ({"batch_size": 0}, ValueError, "`batch_size`"),
    ({"max_evaluations": 8}, ValueError, "9 model evaluations.*`max_evaluations`"),
    ({"data_dir": "/nonexistent/freqplug"}, ValueError, "`data_dir`.*CIFAR-10-C.*never downloads"),
    ({"dataset": "svhn", "data_dir": "."}, ValueError, "`dataset`"),
])
def test_refuses_bad_arguments_naming_them(small_net, images, kwargs, error, match):
    x, y = images
    kwargs = {"corruptions": ["gaussian_noise"], "severities": (1, 2), **kwargs}
    corruptions = kwargs.pop("corruptions")
    severities = kwargs.pop("severities")
    with pytest.raises(error, match=match):
        corruption_robustness(small_net, x, y, corruptions, severities, **kwargs)


@pytest.mark.parametrize("change, match", [
    (lambda x, y: (x * 2, y), "`x` must hold images in \\[0, 1\\]"),
    (lambda x, y: (x[..., :16, :16], y), "`x` images must be at least 32x32"),
    (lambda x, y: (x[:, :2], y), "`x` must have 1 or 3 channels"),
    (lambda x, y: (x, y[:2]), "`y`"),
    (lambda x, y: (x, y.float()), "`y` must be an integer tensor"),
    (lambda x, y: (x, torch.full_like(y, 10)), "`y` must hold class indices in \\[0, 10\\)"),
])
def test_refuses_bad_images_and_labels(small_net, images, change, match):
    x, y = change(*images)
    with pytest.raises((TypeError, ValueError), match=match):
        corruption_robustness(small_net, x, y, ["gaussian_noise"], (1,))


def test_refuses_a_model_with_non_finite_outputs(small_net, images):
    with pytest.raises(ValueError, match="NaN or infinite"):
        corruption_robustness(NaNModel(small_net), *images, ["gaussian_noise"], (1,))


def test_cifar_c_folder_reads_like_generating(small_net, images, direct, tmp_path, no_network):
    x, y = images
    per_name = {c: [direct[(c, s)] if (c, s) in direct else imagecorruptions_direct(x, c, s) for s in range(1, 6)]
                for c in ("gaussian_noise", "defocus_blur")}
    write_cifar_c_folder(tmp_path, per_name, y.numpy())
    read_x, read_y = load_corrupted_cifar(tmp_path, "defocus_blur", 4)
    assert torch.equal(read_x, direct[("defocus_blur", 4)]) and torch.equal(read_y, y)
    from_folder = corruption_robustness(small_net, x, y, list(per_name), SEVERITIES, data_dir=tmp_path,
                                        batch_size=2)
    generated = corruption_robustness(small_net, x, y, list(per_name), SEVERITIES, batch_size=2)
    assert from_folder.accuracy == generated.accuracy and from_folder.source == "folder:CIFAR-10-C"
    for c in per_name:  # the folder's noise is measured against x itself (on the 1/255 grid here)
        assert from_folder.frequency_bias[c] == pytest.approx(generated.frequency_bias[c], abs=1e-5)
    with pytest.raises(ValueError, match="`y` differs from the folder's labels.npy on 3 of 3"):
        corruption_robustness(small_net, x, (y + 1) % 10, ["fog" if False else "defocus_blur"], (1,),
                              data_dir=tmp_path)
    with pytest.raises(ValueError, match="`corruptions` names 'fog' but .*fog.npy does not exist"):
        corruption_robustness(small_net, x, y, ["fog"], (1,), data_dir=tmp_path)


def test_cifar_c_reader_equals_robustbench_loader(tmp_path, no_network):
    robustbench_data = pytest.importorskip("robustbench.data")
    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    # RobustBench's loader assumes the published 10000 images per severity: a full-size file, mostly zeros.
    images = np.lib.format.open_memmap(root / "snow.npy", mode="w+", dtype=np.uint8, shape=(50000, 32, 32, 3))
    generator = np.random.default_rng(0)
    for severity in range(5):
        images[severity * 10000:severity * 10000 + 5] = generator.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    images.flush()
    del images
    np.save(root / "labels.npy", np.tile(generator.integers(0, 10, 10000), 5))
    for severity in (5,):  # the last block: the offsets of the 4 before it are right
        expected_x, expected_y = robustbench_data.load_cifar10c(5, severity, str(tmp_path), corruptions=("snow",))
        got_x, got_y = load_corrupted_cifar(tmp_path, "snow", severity, n_examples=5)
        assert torch.equal(got_x, expected_x) and torch.equal(got_y, expected_y.long())
        assert float(got_x.std()) > 0.1  # real (random) content, not the zero padding


def test_report_stage_agrees_with_the_function(reference_model, images):
    from freqplug.report import profile
    from freqplug.report.stages import get_stage

    x, y = images
    settings = {"corruptions": ["gaussian_noise", "defocus_blur"], "severities": [4], "n_images": 2}
    result = profile(reference_model, x, y, out=None, preset="fast", stages=["corruptions"], quiet=True,
                     overrides={"corruptions": settings})
    got = result.metrics["models"]["model"]["corruptions"]
    expected = corruption_robustness(reference_model, x[:2], y[:2], settings["corruptions"], (4,), seed=0).to_dict()
    assert got["accuracy"] == expected["accuracy"] and got["frequency_bias"] == expected["frequency_bias"]
    assert got["order_by_b_low"] == ["defocus_blur", "gaussian_noise"]
    assert got["clean_accuracy"] != got["mean_accuracy"]["gaussian_noise"]  # rows can tell the values apart
    rows = dict(get_stage("corruptions").rows(got))
    assert rows["gaussian_noise (B_low %.2f)" % got["frequency_bias"]["gaussian_noise"]] == \
        expected["mean_accuracy"]["gaussian_noise"]
    # The rendered section and its plot: tests/test_profile.py's fast report covers every stage's PNG.


def test_the_corruption_list_is_imagecorruptions_own():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import imagecorruptions

    assert CORRUPTIONS == tuple(imagecorruptions.get_corruption_names("common")
                                + imagecorruptions.get_corruption_names("validation"))


def test_impulse_noise_is_reproducible_from_the_seed(images):
    # scikit-image >= 0.19 ignores numpy's global seed in random_noise: without the shim two calls differ.
    x, _ = images
    first = corrupt_images(x[:2], "impulse_noise", 3, seed=0)
    assert torch.equal(first, corrupt_images(x[:2], "impulse_noise", 3, seed=0))
    assert not torch.equal(first, corrupt_images(x[:2], "impulse_noise", 3, seed=1))
