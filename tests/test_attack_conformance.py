"""torchattacks conformance of freqplug's attacks (one module, parametrised over the attacks).

Every attack in ATTACKS must behave like a torchattacks attack (the conventions of torchattacks'
own tests and of ``torchattacks.attack.Attack``): modes (default, targeted by function / random /
least-likely / label), normalization round-trip (``set_normalization_used``), ``save()`` and
``Attack.load()``, ``MultiAttack``, output range, dtype and device, model and inputs untouched;
and freqplug's checks (labels and targets inside the model's output width, non-finite logits).
A new attack joins by one line in ATTACKS.

The model is a tiny real CNN in float64 (fast, and free of float32 gradient-sign flips that would
make two mathematically equal runs of a gradient attack differ).
"""

import pytest
import torch
import torchattacks
from torch.utils.data import DataLoader, TensorDataset
from torchattacks.attack import Attack

from freqplug.attacks import FrequencyMaskedAttack, HFAttack
from helpers import NaNModel, assert_model_unchanged, snapshot_model, tiny_cnn
from helpers.attacks import CIFAR_MEAN, CIFAR_STD, ExpectsNormalized, denormalize, normalize

EPS = 8 / 255
NUM_CLASSES = 10


def _pgd(model):
    return torchattacks.PGD(model, eps=EPS, alpha=2 / 255, steps=3, random_start=False)


def _fgsm(model):
    return torchattacks.FGSM(model, eps=EPS)


def _bim(model):
    return torchattacks.BIM(model, eps=EPS, alpha=2 / 255, steps=3)


#: name -> factory(model) of a freqplug attack. All deterministic (no random start), so two runs agree.
ATTACKS = {
    "HFAttack": lambda model: HFAttack(model, min_radius=4.0, step=2.0),
    "FMA(PGD, low)": lambda model: FrequencyMaskedAttack(_pgd(model), "low"),
    "FMA(FGSM, high)": lambda model: FrequencyMaskedAttack(_fgsm(model), "high"),
    "FMA(BIM, ones)": lambda model: FrequencyMaskedAttack(_bim(model), torch.ones(32, 32, dtype=torch.bool)),
}
TARGETED = ["by_function", "random", "least_likely", "by_label"]


@pytest.fixture(scope="module")
def setup(cifar_samples):
    model = tiny_cnn(num_classes=NUM_CLASSES, dtype=torch.float64)
    x = cifar_samples[0][:6].double()  # the model's dtype, so torchattacks' own save()/MultiAttack can call it
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the model gets right, so every image is attacked
    return model, x, y


def _set_mode(attack, mode, y):
    if mode == "by_function":
        attack.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % NUM_CLASSES, quiet=True)
    elif mode == "by_label":
        attack.set_mode_targeted_by_label(quiet=True)
        return (y + 1) % NUM_CLASSES
    else:
        getattr(attack, f"set_mode_targeted_{mode}")(quiet=True)
    return y


@pytest.mark.parametrize("name", ATTACKS)
def test_default_mode_contract(setup, name):
    model, x, y = setup
    before, snapshot = x.clone(), snapshot_model(model)
    attack = ATTACKS[name](model)
    adv = attack(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert torch.equal(x, before)
    assert_model_unchanged(model, snapshot)
    assert attack.clean_correct.all() and torch.equal(attack.clean_predictions, y)
    # Deterministic: a second call gives the same images.
    torch.testing.assert_close(ATTACKS[name](model)(x, y), adv, rtol=0, atol=0)
    # Float32 inputs come back as float32 (the attack runs the model in its own dtype).
    assert attack(x.float(), y).dtype == torch.float32


@pytest.mark.parametrize("mode", TARGETED)
@pytest.mark.parametrize("name", ATTACKS)
def test_targeted_modes_run_and_keep_the_contract(setup, name, mode):
    model, x, y = setup
    attack = ATTACKS[name](model)
    labels = _set_mode(attack, mode, y)
    assert attack.targeted
    torch.manual_seed(0)
    adv = attack(x, labels)
    assert adv.shape == x.shape and float(adv.min()) >= 0 and float(adv.max()) <= 1
    if isinstance(attack, FrequencyMaskedAttack):
        assert attack.base_attack.targeted and attack.base_attack.attack_mode == attack.attack_mode


@pytest.mark.parametrize("name", ATTACKS)
def test_labels_and_targets_outside_the_model_width_raise(setup, name):
    model, x, y = setup
    with pytest.raises(ValueError, match=r"`labels`.*\[0, 10\)"):
        ATTACKS[name](model)(x[:4], torch.tensor([10, 11, 12, 13]))
    by_label = ATTACKS[name](model)
    by_label.set_mode_targeted_by_label(quiet=True)
    with pytest.raises(ValueError, match=r"`labels` \(target classes"):
        by_label(x[:2], torch.tensor([1, NUM_CLASSES]))
    by_function = ATTACKS[name](model)
    by_function.set_mode_targeted_by_function(lambda images, labels: labels + NUM_CLASSES, quiet=True)
    with pytest.raises(ValueError, match=r"`targets`.*\[0, 10\)"):
        by_function(x[:2], y[:2])


@pytest.mark.parametrize("name", ATTACKS)
def test_nan_logits_raise(setup, name):
    model, x, y = setup
    with pytest.raises(ValueError, match="NaN"):
        ATTACKS[name](NaNModel(model))(x[:2], y[:2])


@pytest.mark.parametrize("name", ATTACKS)
def test_normalization_round_trip(setup, name):
    model, x, y = setup
    expected = ATTACKS[name](model)(x, y)
    attack = ATTACKS[name](ExpectsNormalized(model))
    attack.set_normalization_used(mean=CIFAR_MEAN, std=CIFAR_STD)
    out = attack(normalize(x), y)
    torch.testing.assert_close(denormalize(out), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ATTACKS)
def test_save_and_load(setup, name, tmp_path):
    model, x, y = setup
    attack = ATTACKS[name](model)
    path = tmp_path / "adv.pt"
    robust_acc, _, _ = attack.save(DataLoader(TensorDataset(x, y), batch_size=4), save_path=str(path),
                                   verbose=False, return_verbose=True, save_clean_inputs=True)
    direct = ATTACKS[name](model)(x, y)
    loaded = list(Attack.load(str(path), batch_size=len(x), load_clean_inputs=True))
    (adv, labels, clean), = loaded
    torch.testing.assert_close(adv, direct, rtol=0, atol=0)
    assert torch.equal(labels, y) and torch.equal(clean, x)
    with torch.no_grad():
        assert robust_acc == pytest.approx(100 * float((model(direct).argmax(1) == y).double().mean()))


@pytest.mark.parametrize("name", ATTACKS)
def test_inside_multiattack(setup, name):
    model, x, y = setup
    attack = ATTACKS[name](model)
    multi = torchattacks.MultiAttack([attack, torchattacks.FGSM(model, eps=2 / 255)])
    adv = multi(x, y)
    assert adv.shape == x.shape and float(adv.min()) >= 0 and float(adv.max()) <= 1
    alone = ATTACKS[name](model)(x, y)
    with torch.no_grad():
        multi_wrong = model(adv).argmax(1) != y
        alone_wrong = model(alone).argmax(1) != y
    assert bool((multi_wrong | ~alone_wrong).all()), "MultiAttack keeps every image the first attack broke"


@pytest.mark.parametrize("name", ATTACKS)
def test_works_under_no_grad(setup, name):
    model, x, y = setup
    expected = ATTACKS[name](model)(x, y)
    with torch.no_grad():
        torch.testing.assert_close(ATTACKS[name](model)(x, y), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ATTACKS)
def test_training_mode_setting_restores_every_module(setup, name):
    model, x, y = setup
    snapshot = snapshot_model(model)
    attack = ATTACKS[name](model)
    attack.set_model_training_mode(model_training=True)
    attack(x[:2], y[:2])
    assert_model_unchanged(model, snapshot)
    assert not any(m.training for m in model.modules())


# ------------------------------------------------------------------ wrapping in every state
def _states(model):
    """A torchattacks PGD in each state a user can leave it in before wrapping it."""
    def normalized():
        atk = _pgd(ExpectsNormalized(model))
        atk.set_normalization_used(mean=CIFAR_MEAN, std=CIFAR_STD)  # 3 channels: used to crash the wrapper
        return atk

    def targeted(mode):
        def make():
            atk = _pgd(model)
            _set_mode(atk, mode, None)
            return atk
        return make

    def training():
        atk = _pgd(model)
        atk.set_model_training_mode(model_training=True, batchnorm_training=False, dropout_training=True)
        return atk

    states = {"default": lambda: _pgd(model), "normalized": normalized, "training": training}
    states.update({f"targeted-{mode}": targeted(mode) for mode in ("by_function", "random", "least_likely")})
    states["targeted-by_label"] = lambda: (lambda a: (a.set_mode_targeted_by_label(quiet=True), a)[1])(_pgd(model))
    states["least-likely-k2"] = lambda: (lambda a: (a.set_mode_targeted_least_likely(kth_min=2, quiet=True), a)[1])(
        _pgd(model))
    return states


@pytest.mark.parametrize("state", ["default", "normalized", "training", "targeted-by_function", "targeted-random",
                                   "targeted-least_likely", "targeted-by_label", "least-likely-k2"])
def test_wrapping_adopts_the_base_attack_in_every_state(setup, state):
    model, x, y = setup
    base = _states(model)[state]()
    wrapper = FrequencyMaskedAttack(base, torch.ones(32, 32, dtype=torch.bool))
    for key in ("attack_mode", "targeted", "_normalization_applied", "_model_training", "_batchnorm_training",
                "_dropout_training", "device"):
        assert getattr(wrapper, key) == getattr(base, key), key
    assert (wrapper.normalization_used is None) == (base.normalization_used is None)
    if base.normalization_used is not None:
        assert all(torch.equal(wrapper.normalization_used[k], base.normalization_used[k]) for k in ("mean", "std"))
    if state == "least-likely-k2":
        assert wrapper._kth_min == 2
    # An all-ones mask keeps the whole perturbation: the wrapper returns what the base attack returns.
    inputs = normalize(x) if state == "normalized" else x
    labels = (y + 1) % NUM_CLASSES if state == "targeted-by_label" else y
    torch.manual_seed(0)
    expected = _states(model)[state]()(inputs, labels)
    torch.manual_seed(0)
    torch.testing.assert_close(wrapper(inputs, labels), expected, rtol=0, atol=1e-6)
