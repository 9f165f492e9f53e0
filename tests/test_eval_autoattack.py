"""AutoAttackRunner: backends agree, the cascade is faithful, state/logs work, bad input fails clearly.

Real attacks only (pyautoattack's and torchattacks' APGD); the cheap 'custom' APGD-CE
configuration keeps each test to seconds on a CPU. No full standard run here (on the
embedded ResNet-18 it takes minutes on 2 shared cores).
"""

import json

import pytest
import torch
from torch import nn

from freqplug.eval import (
    AutoAttackResult,
    AutoAttackRunner,
    EvaluationState,
    available_backends,
    evaluate_frequency_robustness,
    frequency_band_masks,
    perturbation_spectrum,
)

CHEAP = dict(version="custom", attacks=["apgd-ce"], n_iter=5, n_restarts=1)


def tiny_cnn(seed=0):
    """A small real CNN (random weights) for tests of the cascade mechanics."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, 10)).eval()


@pytest.fixture(scope="module")
def tiny_setup(cifar_samples):
    x = cifar_samples[0][:12]
    model = tiny_cnn()
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the tiny model gets right, so every point is attacked
    return model, x, y


@pytest.fixture(scope="module")
def resnet_results(reference_model, cifar_samples):
    """APGD-CE (5 iterations, 1 restart) at eps = 0.5/255 on 10 CIFAR-10 images, both registry backends."""
    x, y = cifar_samples[0][:10], cifar_samples[1][:10]
    return x, y, {b: AutoAttackRunner(reference_model, eps=0.5 / 255, backend=b, **CHEAP).run(x, y, batch_size=10)
                  for b in ("pyautoattack", "torchattacks")}


def test_backends_give_the_same_robust_accuracy(resnet_results, reference_model):
    x, y, results = resnet_results
    py, ta = results["pyautoattack"], results["torchattacks"]
    assert py.clean_accuracy == ta.clean_accuracy == 1.0
    # Same attack, same settings: equal within noise (1 point of 10); measured: 0.8 and 0.8.
    assert abs(py.robust_accuracy - ta.robust_accuracy) <= 0.1
    assert 0.0 < py.robust_accuracy < 1.0  # the comparison is not trivial
    for result in (py, ta):
        assert isinstance(result, AutoAttackResult) and result.attacks == ("apgd-ce",)
        delta = result.x_adv - x
        assert float(delta.abs().max()) <= 0.5 / 255 + 1e-6
        assert float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1
        with torch.no_grad():
            assert torch.equal(result.y_pred, reference_model(result.x_adv).argmax(1))
        assert torch.equal(result.robust, result.y_pred == y)
        for robust, by in zip(result.robust.tolist(), result.broken_by):
            assert (by is None) == robust and by in (None, "apgd-ce")
        # The official log dict: clean accuracy, then robust accuracy after each attack.
        assert result.robust_accuracy_by_attack == {"clean": 1.0, "apgd-ce": result.robust_accuracy}


def test_frequency_evaluation_on_autoattack_perturbations(resnet_results, reference_model):
    x, y, results = resnet_results
    result = results["pyautoattack"]
    h, w = x.shape[-2:]
    everything = torch.ones(h, w, dtype=torch.bool)
    freq = evaluate_frequency_robustness(
        reference_model, x, y, attack_result=result,
        masks={"all": everything, "none": lambda xs, ys: torch.zeros(xs.shape[0], h, w, dtype=torch.bool)})
    assert set(freq.accuracy) == {"clean", "full", "low", "high", "all", "none"}
    assert freq.accuracy["full"] == pytest.approx(result.robust_accuracy)
    assert torch.equal(freq.correct["all"], freq.correct["full"])  # masking with all ones keeps delta
    assert torch.equal(freq.correct["none"], freq.correct["clean"])
    assert float(freq.perturbation_linf["none"].max()) == 0.0
    bands = frequency_band_masks(h, w)
    assert not (bands["low"] & bands["high"]).any() and bands["low"][0, 0] and not bands["high"][0, 0]
    assert freq.rct.shape == (h, w) and freq.snr.dim() == 1
    rct, snr = perturbation_spectrum(x, result.x_adv)
    assert torch.allclose(rct, freq.rct) and torch.allclose(snr, freq.snr)
    with pytest.raises(ValueError, match="conjugate-symmetric"):
        asymmetric = torch.zeros(h, w, dtype=torch.bool)
        asymmetric[1, 2] = True
        evaluate_frequency_robustness(reference_model, x, y, attack_result=result, masks={"pfc": asymmetric})
    with pytest.raises(ValueError, match="shape"):
        evaluate_frequency_robustness(reference_model, x, y, attack_result=result,
                                      masks={"pfc": torch.ones(3, h, w, dtype=torch.bool)})


def test_same_seed_same_result_and_caller_state_untouched(tiny_setup):
    model, x, y = tiny_setup
    model.train()
    model[0].weight.requires_grad_(True)
    model[4].bias.requires_grad_(False)
    x_before = x.clone()
    rng_before = torch.random.get_rng_state()
    try:
        first = AutoAttackRunner(model, eps=4 / 255, seed=3, backend="pyautoattack", **CHEAP).run(x, y, batch_size=5)
        second = AutoAttackRunner(model, eps=4 / 255, seed=3, backend="pyautoattack", **CHEAP).run(x, y, batch_size=5)
        assert model.training
        assert model[0].weight.requires_grad and not model[4].bias.requires_grad
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(x, x_before)
        assert torch.equal(torch.random.get_rng_state(), rng_before)
    finally:
        model.eval()
        model[4].bias.requires_grad_(True)
    assert torch.equal(first.x_adv, second.x_adv) and torch.equal(first.robust, second.robust)
    assert first.x_adv.dtype == x.dtype and first.x_adv.device == x.device


def test_cascade_state_file_resume_and_log(tiny_setup, tmp_path):
    model, x, y = tiny_setup
    state_path = tmp_path / "aa_state.json"
    log_path = tmp_path / "aa.log"
    runner = AutoAttackRunner(model, eps=2 / 255, version="custom", attacks=["apgd-ce", "apgd-dlr"], n_iter=4,
                              n_restarts=1, backend="torchattacks", log_path=str(log_path))
    result = runner.run(x, y, batch_size=5, state_path=str(state_path))
    assert list(result.robust_accuracy_by_attack) == ["clean", "apgd-ce", "apgd-dlr"]
    # Each attack ran on the points the earlier ones left robust; the log says so.
    log = log_path.read_text()
    assert "initial accuracy: 100.00%" in log and "robust accuracy after APGD-DLR" in log
    # The state file has the official format: pyautoattack's EvaluationState reads it.
    from pyautoattack.state import EvaluationState as OfficialState

    official = OfficialState.from_disk(state_path)
    assert torch.equal(official.robust_flags, result.robust)
    assert json.loads(state_path.read_text())["_run_attacks"] == ["apgd-ce", "apgd-dlr"]
    # Resuming skips the attacks already run and keeps their robust flags.
    resumed = runner.run(x, y, batch_size=5, state_path=state_path)
    assert torch.equal(resumed.robust, result.robust)
    broken = ~result.robust
    assert all(resumed.broken_by[i] == "restored" for i in torch.nonzero(broken).flatten().tolist())
    assert torch.equal(resumed.x_adv, x)  # official: only adversarials of the current run are returned
    with pytest.raises(ValueError, match="different set of attacks|wrong state file"):
        AutoAttackRunner(model, eps=2 / 255, backend="torchattacks", **CHEAP).run(x, y, state_path=state_path)
    assert EvaluationState.from_disk(state_path).run_attacks == {"apgd-ce", "apgd-dlr"}


def test_run_individual(tiny_setup):
    model, x, y = tiny_setup
    runner = AutoAttackRunner(model, eps=2 / 255, version="custom", attacks=["apgd-ce", "square"], n_iter=3,
                              n_restarts=1, n_queries=20, backend="pyautoattack")
    results = runner.run_individual(x, y, batch_size=12)
    assert list(results) == ["apgd-ce", "square"]
    for name, result in results.items():
        assert result.attacks == (name,)
        assert bool((result.robust <= result.clean_correct).all())
        assert set(result.broken_by) <= {None, "clean", name}


def test_backend_selection():
    backends = available_backends()
    assert "pyautoattack" in backends and "torchattacks" in backends
    model = tiny_cnn()
    assert AutoAttackRunner(model).backend_name == backends[0]
    if "autoattack" not in backends:
        with pytest.raises(ImportError, match="git\\+https://github.com/fra31/auto-attack"):
            AutoAttackRunner(model, backend="autoattack")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(norm="L3"), ValueError, "`norm`"),
    (dict(eps=0), ValueError, "`eps`"),
    (dict(eps="8/255"), TypeError, "`eps`"),
    (dict(version="fast"), ValueError, "`version`"),
    (dict(version="standard", attacks=["apgd-ce"]), ValueError, "only used with version='custom'"),
    (dict(version="custom"), ValueError, "needs `attacks`"),
    (dict(version="custom", attacks=["pgd"]), ValueError, "`attacks`"),
    (dict(version="custom", attacks=["apgd-ce", "apgd-ce"]), ValueError, "repeat"),
    (dict(backend="foolbox"), ValueError, "`backend`"),
    (dict(norm="L1", backend="torchattacks"), ValueError, "Linf' and 'L2' only"),
    (dict(n_iter=0), ValueError, "`n_iter`"),
    (dict(seed=1.5), TypeError, "`seed`"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AutoAttackRunner(tiny_cnn(), **kwargs)
    with pytest.raises(TypeError, match="`model`"):
        AutoAttackRunner(lambda t: t)


def test_bad_run_arguments(tiny_setup, tmp_path):
    model, x, y = tiny_setup
    runner = AutoAttackRunner(model, backend="torchattacks", **CHEAP)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        runner.run(x * 255, y)
    with pytest.raises(ValueError, match="`y`"):
        runner.run(x, y[:3])
    with pytest.raises(TypeError, match="`y`"):
        runner.run(x, y.float())
    with pytest.raises(ValueError, match="`batch_size`"):
        runner.run(x, y, batch_size=0)
    with pytest.raises(ValueError, match="logits"):
        runner.run(x, torch.full_like(y, 10))
    with pytest.raises(FileNotFoundError, match="state_path"):
        runner.run(x, y, state_path=tmp_path / "missing_folder" / "state.json")
