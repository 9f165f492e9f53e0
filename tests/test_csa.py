"""CSA (seed 000 §5): NFC bank, save/load, resumable build, augmentation hook."""

import itertools
import math

import pytest
import torch
import torch.nn as nn

import freqplug
from freqplug.spectral import coalition_images, radial_band_players
from freqplug.training import CSABank, CSAugment


class ExactFrequencyShapley:
    """Test reference: exact Shapley values (all 2^P coalitions) of the true-class softmax
    probability over a small conjugate-closed partition; returns the (N, H, W) fft2-layout map
    in which every bin carries its player's value and DC (always present) carries 0."""

    def __init__(self, model, players):
        self.model, self.player_map, self.calls = model, players, 0
        self.settings = {"players": players.name, "estimator": "exact", "game": "softmax probability of y"}
        p = players.num_players
        self.coalitions = torch.tensor(list(itertools.product([0, 1], repeat=p)), dtype=torch.bool)

    def __call__(self, inputs, target):
        self.calls += 1
        p = self.player_map.num_players
        images = coalition_images(inputs, self.player_map, self.coalitions)  # (N, K, C, H, W)
        n, k = images.shape[:2]
        probs = torch.softmax(self.model(images.flatten(0, 1)), dim=1).reshape(n, k, -1)
        value = probs.gather(2, target.reshape(n, 1, 1).expand(n, k, 1)).squeeze(2).double()
        index = {tuple(c.tolist()): i for i, c in enumerate(self.coalitions.int())}
        phi = torch.zeros(n, p, dtype=torch.float64)
        for i in range(p):
            for coalition in self.coalitions:
                if coalition[i]:
                    continue
                s = int(coalition.sum())
                weight = math.factorial(s) * math.factorial(p - s - 1) / math.factorial(p)
                with_i = coalition.clone()
                with_i[i] = True
                phi[:, i] += weight * (value[:, index[tuple(with_i.int().tolist())]]
                                       - value[:, index[tuple(coalition.int().tolist())]])
        return self.player_map.expand(phi.float())


class Interrupting:
    """Wraps an attribution and raises KeyboardInterrupt on call number ``fail_at``."""

    def __init__(self, inner, fail_at):
        self.inner, self.fail_at, self.calls = inner, fail_at, 0
        self.settings, self.player_map = inner.settings, inner.player_map
        self.__qualname__ = "ExactFrequencyShapley"

    def __call__(self, inputs, target):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        return self.inner(inputs, target)


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 4 * 4, 4))


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 8, 8, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])
    return x, y


@pytest.fixture
def exact():
    model = tiny_cnn()
    ExactFrequencyShapley.__qualname__ = "ExactFrequencyShapley"
    return model, ExactFrequencyShapley(model, radial_band_players(8, 8, 4, metric="l2"))


def reconstruct_negative_bins(x, phi):
    """Full complex reference: keep the bins with phi < 0 (not DC), inverse fft2, real part."""
    mask = (phi < 0).clone()
    mask[:, 0, 0] = False
    spectrum = torch.fft.fft2(x.double()) * mask[:, None]
    image = torch.fft.ifft2(spectrum)
    assert float(image.imag.abs().max()) < 1e-10  # the mask is conjugate-symmetric
    return image.real.float()


def test_nfc_images_equal_reconstruction_of_negative_shapley_bins(data, exact):
    x, y = data
    model, attribution = exact
    bank = CSABank.build(model, x, y, per_class=2, attribution=attribution, batch_size=3, show_progress=False)
    # the first two images of each class, grouped by class
    chosen = torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])
    assert torch.equal(bank.labels, y[chosen])
    phi = ExactFrequencyShapley(model, attribution.player_map)(x[chosen], y[chosen])
    assert bool((phi < 0).any()) and bool((phi > 0).any())  # the game has both signs
    # efficiency of the reference: sum of player values = v(all) - v(DC only)
    torch.testing.assert_close(bank.nfc_images, reconstruct_negative_bins(x[chosen], phi), atol=1e-5, rtol=0)
    assert bank.settings["counts"] == {0: 2, 1: 2, 2: 2, 3: 2}
    assert bank.settings["estimator"] == "exact" and bank.settings["image_shape"] == [1, 8, 8]
    assert bank.settings["library_version"] == freqplug.__version__
    assert torch.equal(bank.player_map, attribution.player_map.player_map)


def test_nfc_on_the_embedded_resnet18_and_cifar_images(reference_model, cifar_samples):
    x, y = cifar_samples
    x, y = x[:6], y[:6]
    attribution = ExactFrequencyShapley(reference_model, radial_band_players(32, 32, 3))
    bank = CSABank.build(reference_model, x, y, per_class=1, attribution=attribution, show_progress=False,
                         model_name="cifar10_resnet18")
    classes = bank.labels.tolist()
    first = torch.tensor([int((y == c).nonzero()[0]) for c in classes])
    phi = ExactFrequencyShapley(reference_model, attribution.player_map)(x[first], y[first])
    torch.testing.assert_close(bank.nfc_images, reconstruct_negative_bins(x[first], phi), atol=1e-5, rtol=0)
    assert bank.settings["model_name"] == "cifar10_resnet18"


def test_default_attribution_is_frequency_shapley_of_true_class_probability(reference_model, cifar_samples):
    fs = pytest.importorskip("freqplug.attributions.frequency_shapley")
    x, y = cifar_samples
    x, y = x[:3], y[:3]
    options = dict(players=("bands", 4), n_samples=4, estimator="antithetic", seed=0)
    bank = CSABank.build(reference_model, x, y, per_class=1, show_progress=False, **options)
    order = torch.tensor([int((y == c).nonzero()[0]) for c in bank.labels.tolist()])
    explainer = fs.FrequencyShapley(lambda z: torch.softmax(reference_model(z), dim=1))
    phi = explainer.attribute(x[order], target=y[order], show_progress=False, **options)
    torch.testing.assert_close(bank.nfc_images, reconstruct_negative_bins(x[order], phi), atol=1e-5, rtol=0)
    assert bank.settings["attribution"].startswith("FrequencyShapley")


def test_augmentation_keeps_shape_range_class_and_follows_the_ramp(data, exact):
    x, y = data
    model, attribution = exact
    bank = CSABank.build(model, x, y, per_class=3, attribution=attribution, show_progress=False)
    x_before = x.clone()
    aug = CSAugment(bank, alpha=0.5, ramp_epochs=10, seed=0)
    out = aug(x, y, epoch=20)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(x, x_before)
    # the drawn NFC images belong to each sample's own class; replay with the same seed
    index = CSAugment(bank, seed=0).draw(y)
    assert torch.equal(bank.labels[index], y)
    torch.testing.assert_close(out, torch.clamp(x + 0.5 * bank.nfc_images[index], 0, 1))
    # ramp s = min(1, epoch / ramp_epochs); epoch 0 leaves the batch as is
    again = CSAugment(bank, alpha=0.5, ramp_epochs=10, seed=0)
    torch.testing.assert_close(again(x, y, epoch=5), torch.clamp(x + 0.25 * bank.nfc_images[index], 0, 1))
    assert torch.equal(CSAugment(bank, seed=1)(x, y, epoch=0), x)
    assert CSAugment(bank, ramp_epochs=77).strength(38.5) == pytest.approx(0.25)
    # over many draws, every NFC image of a class is used
    many = CSAugment(bank, seed=3).draw(torch.zeros(400, dtype=torch.long))
    assert set(many.tolist()) == set((bank.labels == 0).nonzero().flatten().tolist())
    # float64 batches stay float64
    assert aug(x.double(), y, epoch=1).dtype == torch.float64


def test_save_load_round_trip(tmp_path, data, exact):
    x, y = data
    model, attribution = exact
    bank = CSABank.build(model, x, y, per_class=2, attribution=attribution, show_progress=False, model_name="tiny")
    path = bank.save(tmp_path / "bank.pt")
    loaded = CSABank.load(path, image_shape=(1, 8, 8), num_classes=4, players=attribution.player_map)
    assert torch.equal(loaded.nfc_images, bank.nfc_images) and torch.equal(loaded.labels, bank.labels)
    assert loaded.settings == bank.settings and torch.equal(loaded.player_map, bank.player_map)
    assert loaded.settings["model_name"] == "tiny"
    assert [p.name for p in tmp_path.iterdir()] == ["bank.pt"]  # no temporary files left behind


def test_corrupt_truncated_and_mismatched_files_raise(tmp_path, data, exact):
    x, y = data
    model, attribution = exact
    bank = CSABank.build(model, x, y, per_class=2, attribution=attribution, show_progress=False)
    good = bank.save(tmp_path / "bank.pt")
    raw = good.read_bytes()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        CSABank.load(truncated)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all" * 10)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        CSABank.load(garbage)

    # a valid torch file whose tensor bytes were altered fails the checksum
    payload = torch.load(good, weights_only=True)
    payload["nfc_images"] = payload["nfc_images"].clone()
    payload["nfc_images"][0, 0, 0, 0] += 1.0
    tampered = tmp_path / "tampered.pt"
    torch.save(payload, tampered)
    with pytest.raises(ValueError, match="checksum"):
        CSABank.load(tampered)

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a CSABank file"):
        CSABank.load(other)

    payload = torch.load(good, weights_only=True)
    payload["format_version"] = 99
    future = tmp_path / "future.pt"
    torch.save(payload, future)
    with pytest.raises(ValueError, match="format version 99"):
        CSABank.load(future)

    with pytest.raises(ValueError, match=r"built for images \(1, 8, 8\)"):
        CSABank.load(good, image_shape=(3, 32, 32))
    with pytest.raises(ValueError, match="classes up to 3"):
        CSABank.load(good, num_classes=2)
    with pytest.raises(ValueError, match="player partition"):
        CSABank.load(good, players=radial_band_players(8, 8, 2))
    with pytest.raises(FileNotFoundError):
        CSABank.load(tmp_path / "missing.pt")


def test_failed_save_keeps_the_existing_good_file(tmp_path, data, exact, monkeypatch):
    x, y = data
    model, attribution = exact
    bank = CSABank.build(model, x, y, per_class=2, attribution=attribution, show_progress=False)
    path = bank.save(tmp_path / "bank.pt")
    before = path.read_bytes()

    def failing_save(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        bank.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bank.pt"]
    CSABank.load(path)


def test_interrupted_build_resumes_without_recomputing(tmp_path, data, exact):
    x, y = data
    model, attribution = exact
    checkpoint = tmp_path / "build.ckpt"
    kwargs = dict(per_class=3, batch_size=2, show_progress=False)
    reference = CSABank.build(model, x, y, attribution=attribution, **kwargs)  # 12 images, 6 chunks

    flaky = Interrupting(ExactFrequencyShapley(model, attribution.player_map), fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        CSABank.build(model, x, y, attribution=flaky, checkpoint=checkpoint, **kwargs)
    assert checkpoint.exists()

    # a checkpoint from other settings is refused, never silently mixed in
    with pytest.raises(ValueError, match="different inputs or settings"):
        CSABank.build(model, x, y, attribution=flaky, checkpoint=checkpoint, per_class=2, batch_size=2,
                      show_progress=False)

    other_model = tiny_cnn(seed=1)
    with pytest.raises(ValueError, match="different inputs or settings"):
        CSABank.build(other_model, x, y, attribution=flaky, checkpoint=checkpoint, **kwargs)

    resumed_attr = Interrupting(ExactFrequencyShapley(model, attribution.player_map), fail_at=-1)
    resumed = CSABank.build(model, x, y, attribution=resumed_attr, checkpoint=checkpoint, **kwargs)
    assert resumed_attr.calls == 3  # chunks 4..6 only; chunks 1..3 came from the checkpoint
    torch.testing.assert_close(resumed.nfc_images, reference.nfc_images)
    assert torch.equal(resumed.labels, reference.labels)
    assert not checkpoint.exists()  # removed after a successful build


def test_from_loader_takes_the_first_images_of_each_class(data, exact):
    x, y = data
    model, attribution = exact
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5, shuffle=False)
    from_loader = CSABank.from_loader(model, loader, per_class=2, num_classes=4, attribution=attribution,
                                      show_progress=False)
    direct = CSABank.build(model, x, y, per_class=2, attribution=attribution, show_progress=False)
    torch.testing.assert_close(from_loader.nfc_images, direct.nfc_images)
    assert torch.equal(from_loader.labels, direct.labels)


def test_model_mode_and_user_tensors_untouched(data, exact):
    x, y = data
    model, attribution = exact
    model.train()
    x_before, y_before = x.clone(), y.clone()
    CSABank.build(model, x, y, per_class=1, attribution=attribution, show_progress=False)
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert torch.equal(x, x_before) and torch.equal(y, y_before) and x.grad is None
    model.eval()
    CSABank.build(model, x, y, per_class=1, attribution=attribution, show_progress=False)
    assert not model.training
    # per-module modes survive too (e.g. a frozen submodule in eval inside a training model)
    model.train()
    frozen = next(iter(model.children()))
    frozen.eval()
    CSABank.build(model, x, y, per_class=1, attribution=attribution, show_progress=False)
    assert model.training and not frozen.training


def test_bad_inputs_raise_clear_errors(data, exact):
    x, y = data
    model, attribution = exact
    with pytest.raises(ValueError, match="per_class"):
        CSABank.build(model, x, y, per_class=0, attribution=attribution)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CSABank.build(model, x * 3, y, attribution=attribution)
    with pytest.raises(ValueError, match="labels"):
        CSABank.build(model, x, y[:5], attribution=attribution)
    with pytest.raises(ValueError, match="Shapley map of shape"):
        CSABank.build(model, x, y, per_class=1, attribution=lambda a, b: torch.zeros(len(a), 4, 4),
                      show_progress=False)
    with pytest.raises(ValueError, match="class 7 has no images"):
        CSABank.build(model, x, y, classes=[0, 7], attribution=attribution)
    with pytest.raises(ValueError, match="estimator"):
        CSABank.build(model, x, y, estimator="magic")
    bank = CSABank.build(model, x, y, per_class=1, classes=[0, 1], attribution=attribution, show_progress=False)
    with pytest.raises(ValueError, match="alpha"):
        CSAugment(bank, alpha=-1)
    with pytest.raises(TypeError, match="bank"):
        CSAugment("bank.pt")
    aug = CSAugment(bank, seed=0)
    with pytest.raises(ValueError, match=r"classes \[2, 3\]"):
        aug(x, y, epoch=1)
    with pytest.raises(ValueError, match="built for"):
        aug(torch.rand(2, 1, 16, 16), torch.tensor([0, 1]), epoch=1)
    with pytest.raises(ValueError, match="epoch"):
        aug(x[:2], y[:2], epoch=-1)
