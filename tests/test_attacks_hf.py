"""HFAttack (seed 002 §3.4) on the embedded CIFAR-10 ResNet-18 and its 20 sample images."""

import math

import pytest
import torch
import torchattacks
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from freqplug.attacks import HFAttack
from freqplug.spectral import low_high_split

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)
SCAN = dict(min_radius=8.0, step=2.0)  # 8 radii from 22.6 down to 8.6 on 32x32


class ForwardCounter:
    """Counts forward calls and images seen by a model (a real forward hook)."""

    def __init__(self, model):
        self.calls, self.rows = 0, 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls += 1
        self.rows += args[0].shape[0]

    def remove(self):
        self.handle.remove()


def lfc(x, radius):
    return low_high_split(x, radius)[0].clamp(0, 1)


@pytest.fixture(scope="module")
def hf_run(reference_model, cifar_samples):
    x, y = cifar_samples
    attack = HFAttack(reference_model, batch_size=200, **SCAN)
    counter = ForwardCounter(reference_model)
    try:
        adv = attack(x, y)
    finally:
        counter.remove()
    return attack, adv, counter


def test_hf_finds_low_pass_adversarials_for_part_of_the_images(hf_run, reference_model, cifar_samples):
    x, y = cifar_samples
    attack, adv, _ = hf_run
    success = attack.success
    assert 0 < int(success.sum()) < x.shape[0], "the attack should fool the model on part of the 20 images"
    with torch.no_grad():
        predictions = reference_model(adv).argmax(1)
    assert torch.equal(predictions != y, success)
    for i in torch.nonzero(success).flatten().tolist():
        radius = float(attack.found_radius[i])
        assert radius >= 8.0 and any(math.isclose(radius, float(r)) for r in attack.radii)
        # The returned image is the (clipped) low-frequency component at the reported radius.
        torch.testing.assert_close(adv[i:i + 1], lfc(x[i:i + 1], radius), rtol=0, atol=1e-6)
    failed = ~success
    assert torch.equal(adv[failed], x[failed]), "failed images are returned unchanged"
    assert torch.isnan(attack.found_radius[failed]).all()


def test_hf_returns_the_largest_fooling_radius(hf_run, reference_model, cifar_samples):
    x, y = cifar_samples
    attack, _, _ = hf_run
    rows, labels = [], []
    for i in torch.nonzero(attack.success).flatten().tolist():
        for radius in attack.radii[attack.radii > attack.found_radius[i]].tolist():
            rows.append(lfc(x[i:i + 1], radius))
            labels.append(y[i])
    with torch.no_grad():
        predictions = reference_model(torch.cat(rows)).argmax(1)
    assert torch.equal(predictions, torch.stack(labels)), "every larger radius must still be classified correctly"


def test_hf_counts_its_model_evaluations(hf_run, cifar_samples):
    attack, _, counter = hf_run
    assert int(attack.num_evaluations.sum()) == counter.rows
    assert attack.num_forward_calls == counter.calls
    assert counter.calls <= 2, "20 images x 8 radii with batch_size=200 need at most 2 forward calls"
    assert (attack.num_evaluations >= 1).all() and (attack.num_evaluations <= len(attack.radii)).all()


def test_sequential_scan_agrees_and_stops_at_the_first_success(hf_run, reference_model, cifar_samples):
    x, y = cifar_samples
    batched, adv_batched, _ = hf_run
    picks = [2, 3]  # one success and one failure in the batched run with this scan
    sequential = HFAttack(reference_model, batch_size=1, **SCAN)
    counter = ForwardCounter(reference_model)
    try:
        adv = sequential(x[picks], y[picks])
    finally:
        counter.remove()
    assert sequential.success.tolist() == [True, False]
    assert torch.equal(sequential.success, batched.success[picks])
    torch.testing.assert_close(sequential.found_radius, batched.found_radius[picks], equal_nan=True)
    torch.testing.assert_close(adv, adv_batched[picks], rtol=0, atol=1e-6)
    # One radius per call: exactly (index of the found radius + 1) evaluations, or all radii.
    expected = []
    for ok, radius in zip(sequential.success.tolist(), sequential.found_radius.tolist()):
        expected.append(int(torch.nonzero(sequential.radii == radius)[0]) + 1 if ok else len(sequential.radii))
    assert sequential.num_evaluations.tolist() == expected
    assert counter.calls == counter.rows == sum(expected)


def test_targeted_by_label(reference_model, cifar_samples):
    x, y = cifar_samples
    picks = [0, 1, 2, 5, 6, 9]
    attack = HFAttack(reference_model, batch_size=64, **SCAN)
    attack.set_mode_targeted_by_label(quiet=True)
    with torch.no_grad():
        # Target = what the most low-passed candidate is classified as, so some targets are reachable.
        targets = reference_model(lfc(x[picks], float(attack.candidate_radii(32, 32)[-1]))).argmax(1)
    keep = targets != y[picks]
    picks = [p for p, k in zip(picks, keep.tolist()) if k]
    targets = targets[keep]
    adv = attack(x[picks], targets)
    with torch.no_grad():
        predictions = reference_model(adv).argmax(1)
    assert attack.success.any()
    assert torch.equal(predictions[attack.success], targets[attack.success])
    assert torch.equal(adv[~attack.success], x[picks][~attack.success])


@pytest.mark.parametrize("mode", ["random", "least_likely"])
def test_targeted_random_and_least_likely(reference_model, cifar_samples, mode):
    x, y = cifar_samples
    x, y = x[:3], y[:3]
    attack = HFAttack(reference_model, min_radius=12.0, step=3.0)
    getattr(attack, f"set_mode_targeted_{mode}")(quiet=True)
    torch.manual_seed(0)
    counter = ForwardCounter(reference_model)
    try:
        adv = attack(x, y)
    finally:
        counter.remove()
    # The targets cost one forward of the clean images, on top of the scan.
    assert counter.rows == int(attack.num_evaluations.sum()) + x.shape[0]
    assert adv.min() >= 0 and adv.max() <= 1
    if attack.success.any():
        with torch.no_grad():
            assert not torch.equal(reference_model(adv[attack.success]).argmax(1), y[attack.success])


def test_normalization_round_trip(reference_model, cifar_samples):
    x, y = cifar_samples
    x, y = x[[0, 1, 3]], y[[0, 1, 3]]
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)

    class ExpectsNormalized(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, z):
            return self.model(z * std + mean)

    plain = HFAttack(reference_model, **SCAN)
    expected = plain(x, y)
    normalized = HFAttack(ExpectsNormalized(reference_model), **SCAN)
    normalized.set_normalization_used(mean=CIFAR_MEAN, std=CIFAR_STD)
    out = normalized((x - mean) / std, y)
    torch.testing.assert_close(out * std + mean, expected, rtol=0, atol=1e-5)
    assert torch.equal(normalized.success, plain.success)


def test_range_dtype_inputs_and_model_untouched(reference_model, cifar_samples):
    x, y = cifar_samples
    x64 = x[:2].double()
    before = x64.clone()
    grads = [p.requires_grad for p in reference_model.parameters()]
    attack = HFAttack(reference_model, min_radius=14.0, step=4.0)
    adv = attack(x64, y[:2])
    assert adv.dtype == torch.float64 and adv.device == x64.device
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(x64, before)
    assert [p.requires_grad for p in reference_model.parameters()] == grads
    assert all(p.grad is None for p in reference_model.parameters())
    assert not reference_model.training


def test_training_mode_setting_is_restored(reference_model, cifar_samples):
    x, y = cifar_samples
    attack = HFAttack(reference_model, min_radius=16.0, step=4.0)
    attack.set_model_training_mode(model_training=True, batchnorm_training=False)
    stats = [b.clone() for b in reference_model.buffers()]
    attack(x[:2], y[:2])
    assert not any(m.training for m in reference_model.modules()), "an eval-mode model must stay in eval mode"
    assert all(torch.equal(a, b) for a, b in zip(stats, reference_model.buffers()))


def test_clean_accuracy_not_below_robust_accuracy_and_save(reference_model, cifar_samples, tmp_path):
    # torchattacks' own check (its tests assert clean_acc >= robust_acc), through Attack.save().
    x, y = cifar_samples
    loader = DataLoader(TensorDataset(x[:4], y[:4]), batch_size=2)
    attack = HFAttack(reference_model, min_radius=10.0, step=3.0)
    path = tmp_path / "hf.pt"
    robust_acc, _, _ = attack.save(loader, save_path=str(path), verbose=False, return_verbose=True)
    with torch.no_grad():
        clean_acc = 100 * float((reference_model(x[:4]).argmax(1) == y[:4]).float().mean())
    assert clean_acc >= robust_acc
    saved = torch.load(path)
    assert saved["adv_inputs"].shape == x[:4].shape
    assert saved["adv_inputs"].min() >= 0 and saved["adv_inputs"].max() <= 1


def test_inside_multiattack(reference_model, cifar_samples):
    x, y = cifar_samples
    x, y = x[:3], y[:3]
    hf = HFAttack(reference_model, **SCAN)
    multi = torchattacks.MultiAttack([hf, torchattacks.FGSM(reference_model, eps=2 / 255)])
    adv = multi(x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        multi_wrong = reference_model(adv).argmax(1) != y
    assert multi_wrong.sum() >= hf.success.sum()


def test_bad_arguments(reference_model, cifar_samples):
    x, y = cifar_samples
    with pytest.raises(ValueError, match="step"):
        HFAttack(reference_model, step=0)
    with pytest.raises(TypeError, match="batch_size"):
        HFAttack(reference_model, batch_size=2.5)
    with pytest.raises(ValueError, match="min_radius"):
        HFAttack(reference_model, min_radius=-1)
    with pytest.raises(ValueError, match="start_radius"):
        HFAttack(reference_model, min_radius=10, start_radius=5)
    with pytest.raises(ValueError, match="min_radius"):
        HFAttack(reference_model, min_radius=40)(x[:1], y[:1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        HFAttack(reference_model)(x[:1] * 2, y[:1])
    with pytest.raises(ValueError, match="labels"):
        HFAttack(reference_model)(x[:2], y[:1])
    with pytest.raises(ValueError, match="labels"):
        HFAttack(reference_model)(x[:2])
