"""AutoAttackRunner: backends agree, the cascade is faithful, state/logs work, AutoAttack's shipped
checks run on every backend, bad input and bad model outputs fail clearly.

Real attacks only (the official package when its folder is there, pyautoattack's and torchattacks'
APGD/Square); the cheap 'custom' configurations keep each test to seconds on a CPU. The cascade
tests use a linear classifier whose exact Linf robustness radius is known (``linf_radius``), so
"which points can an attack break" has an independent answer. No full standard run here (on the
embedded ResNet-18 it takes minutes on 2 shared cores).
"""

import json
import sys
import warnings

import pytest
import torch
from helpers import (
    CountingModel,
    NaNModel,
    assert_model_unchanged,
    snapshot_model,
    tiny_cnn,
)
from helpers.eval import (
    GradientStepAtInference,
    NaNOffInputs,
    NoisyInput,
    QuantizedInput,
    SoftmaxOutput,
    cifar_linear_model,
    linf_radius,
    official_autoattack,
)

from freqplug.eval import (
    AutoAttackCheckWarning,
    AutoAttackResult,
    AutoAttackRunner,
    EvaluationState,
    available_backends,
    evaluate_frequency_robustness,
    perturbation_spectrum,
)
from freqplug.spectral import band_mask

CHEAP = dict(version="custom", attacks=["apgd-ce"], n_iter=5, n_restarts=1)
REGISTRY_BACKENDS = ("pyautoattack", "torchattacks")


def small_cnn():
    """A small real CNN (random weights, float32, 10 classes) for tests of the run mechanics."""
    return tiny_cnn(num_classes=10, dtype=torch.float32)


@pytest.fixture(scope="module")
def tiny_setup(cifar_samples):
    x = cifar_samples[0][:12]
    model = small_cnn()
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the tiny model gets right, so every point is attacked
    return model, x, y


@pytest.fixture(scope="module")
def linear_setup(cifar_samples):
    """A linear classifier, 12 images labelled with its predictions, their exact Linf radii and
    eps = the median radius (about half the points breakable, half provably robust)."""
    x = cifar_samples[0][:12]
    model = cifar_linear_model()
    with torch.no_grad():
        y = model(x).argmax(1)
    radius = linf_radius(model, x, y)
    eps = float(radius.median())
    assert 0 < eps < 8 / 255 and (radius < 0.9 * eps).sum() >= 4 and (radius > eps).sum() >= 4
    return model, x, y, radius, eps


@pytest.fixture(params=["autoattack", "pyautoattack", "torchattacks"])
def any_backend(request):
    """Every backend; the official one from its unpacked folder (skipped, saying why, when absent)."""
    if request.param == "autoattack":
        with official_autoattack():
            assert "autoattack" in available_backends()
            yield "autoattack"
    else:
        yield request.param


#: Radius of the backend-agreement runs on the embedded ResNet-18 (its first 4 sample images: 2 robust, 2 not).
RESNET_EPS = 1 / 255


@pytest.fixture(scope="module")
def resnet_results(reference_model, cifar_samples):
    """APGD-CE (5 iterations, 1 restart) at eps = 1/255 on 4 CIFAR-10 images, on every backend available (the
    official package when installed or unpacked; the agreement test says when it is not)."""
    x, y = cifar_samples[0][:4], cifar_samples[1][:4]

    def run(backend):
        return AutoAttackRunner(reference_model, eps=RESNET_EPS, backend=backend, **CHEAP).run(x, y, batch_size=4)

    results = {b: run(b) for b in REGISTRY_BACKENDS}
    try:
        with official_autoattack():
            results["autoattack"] = run("autoattack")
    except pytest.skip.Exception as reason:
        results["autoattack"] = reason  # skipped by the test that needs it
    return x, y, results


def assert_broken_points_are_adversarial(model, x, y, result, eps):
    """Independent of the runner's bookkeeping: every point reported broken by an attack has an
    x_adv within eps that the model misclassifies; every other point's x_adv is x."""
    with torch.no_grad():
        predictions = model(result.x_adv).argmax(1)
    for i, by in enumerate(result.broken_by):
        if by in (None, "clean", "restored"):
            assert torch.equal(result.x_adv[i], x[i])
        else:
            assert float((result.x_adv[i] - x[i]).abs().max()) <= eps + 1e-6
            assert 0 <= float(result.x_adv[i].min()) and float(result.x_adv[i].max()) <= 1
            assert predictions[i] != y[i] and result.y_pred[i] == predictions[i]


@pytest.mark.slow  # the module fixture runs APGD on the ResNet-18 three times
def test_backends_give_the_same_robust_accuracy(resnet_results, reference_model):
    x, y, results = resnet_results
    py, ta = results["pyautoattack"], results["torchattacks"]
    assert py.clean_accuracy == ta.clean_accuracy == 1.0
    # Same attack, same settings: the same points survive (measured: the first two of four).
    assert torch.equal(py.robust, ta.robust) and py.robust.tolist() == [True, True, False, False]
    for result in (py, ta):
        assert isinstance(result, AutoAttackResult) and result.attacks == ("apgd-ce",)
        delta = result.x_adv - x
        assert float(delta.abs().max()) <= RESNET_EPS + 1e-6
        assert float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1
        with torch.no_grad():
            assert torch.equal(result.y_pred, reference_model(result.x_adv).argmax(1))
        assert torch.equal(result.robust, result.y_pred == y)
        for robust, by in zip(result.robust.tolist(), result.broken_by):
            assert (by is None) == robust and by in (None, "apgd-ce")
        # The official log dict: clean accuracy, then robust accuracy after each attack.
        assert result.robust_accuracy_by_attack == {"clean": 1.0, "apgd-ce": result.robust_accuracy}


@pytest.mark.slow  # the module fixture runs APGD on the ResNet-18 three times
def test_official_backend_agrees_on_the_embedded_model(resnet_results, reference_model):
    x, y, results = resnet_results
    official = results["autoattack"]
    if isinstance(official, BaseException):
        pytest.skip(str(official))
    assert official.backend == "autoattack" and official.clean_accuracy == 1.0
    for other in ("pyautoattack", "torchattacks"):
        assert torch.equal(official.robust, results[other].robust)
        assert official.broken_by == results[other].broken_by
    assert float((official.x_adv - x).abs().max()) <= RESNET_EPS + 1e-6
    with torch.no_grad():
        assert torch.equal(official.y_pred, reference_model(official.x_adv).argmax(1))


@pytest.mark.slow  # the module fixture runs APGD on the ResNet-18 three times
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
    bands = {kind: band_mask(h, w, kind) for kind in ("low", "high")}
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


def test_same_seed_same_result_and_caller_state_untouched(cifar_samples):
    x = cifar_samples[0][:8]
    model = cifar_linear_model()
    with torch.no_grad():
        y = model(x).argmax(1)
    model.train()
    model[1].bias.requires_grad_(False)
    model[1].weight.grad = torch.ones_like(model[1].weight)  # a caller's gradient must survive
    model[0].eval()  # per-module modes must come back as they were, not all-train
    before = snapshot_model(model)
    x_before = x.clone()
    rng_before = torch.random.get_rng_state()
    runs = [AutoAttackRunner(model, eps=1 / 255, seed=3, backend="pyautoattack", **CHEAP).run(x, y, batch_size=5)
            for _ in range(2)]
    assert_model_unchanged(model, before)
    assert model.training and not model[0].training
    assert torch.equal(x, x_before)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    first, second = runs
    assert not bool(first.robust.all())  # the attack did something, so equality below means something
    assert torch.equal(first.x_adv, second.x_adv) and torch.equal(first.robust, second.robust)
    assert first.x_adv.dtype == x.dtype and first.x_adv.device == x.device


def test_attacks_break_exactly_the_breakable_points(linear_setup, any_backend):
    """Exact oracle: a point whose Linf radius exceeds eps can never be broken (x_adv outside the
    ball or bookkeeping errors would show), and APGD finds the points well inside the ball
    (an attack that returns its input, or a cascade that never runs it, would not)."""
    model, x, y, radius, eps = linear_setup
    result = AutoAttackRunner(model, eps=eps, backend=any_backend, **CHEAP).run(x, y, batch_size=5)
    assert result.backend == any_backend and result.clean_accuracy == 1.0
    assert bool(result.robust[radius > eps].all())
    assert not bool(result.robust[radius < 0.9 * eps].any())
    assert_broken_points_are_adversarial(model, x, y, result, eps)


def test_cascade_state_file_resume_and_log(linear_setup, tmp_path):
    model, x, y, radius, eps = linear_setup
    state_path = tmp_path / "aa_state.json"
    log_path = tmp_path / "aa.log"
    # Square with a few queries breaks few points; APGD-CE then breaks the rest of the breakable ones.
    runner = AutoAttackRunner(model, eps=eps, version="custom", attacks=["square", "apgd-ce"], n_iter=4,
                              n_restarts=1, n_queries=30, backend="torchattacks", log_path=str(log_path))
    rows = {}
    perturb = runner.backend.perturb

    def counting_perturb(attack, xb, yb):  # the real attack, with the rows it is given counted
        rows[attack] = rows.get(attack, 0) + xb.shape[0]
        return perturb(attack, xb, yb)

    runner.backend.perturb = counting_perturb
    result = runner.run(x, y, batch_size=5, state_path=str(state_path))
    by_square = [i for i, by in enumerate(result.broken_by) if by == "square"]
    by_apgd = [i for i, by in enumerate(result.broken_by) if by == "apgd-ce"]
    assert len(by_square) >= 1 and len(by_apgd) >= 1
    # Each attack ran on exactly the points the earlier ones left robust.
    assert rows == {"square": 12, "apgd-ce": 12 - len(by_square)}
    accuracies = result.robust_accuracy_by_attack
    assert list(accuracies) == ["clean", "square", "apgd-ce"]
    assert accuracies == pytest.approx({"clean": 1.0, "square": 1 - len(by_square) / 12,
                                        "apgd-ce": 1 - (len(by_square) + len(by_apgd)) / 12})
    assert not bool(result.robust[radius < 0.9 * eps].any()) and bool(result.robust[radius > eps].all())
    assert_broken_points_are_adversarial(model, x, y, result, eps)
    # The log says what ran and what it found.
    log = log_path.read_text()
    assert "initial accuracy: 100.00%" in log
    assert f"robust accuracy after APGD-CE: {accuracies['apgd-ce']:.2%}" in log
    # The state file has the official format: pyautoattack's EvaluationState reads it.
    from pyautoattack.state import EvaluationState as OfficialState

    official = OfficialState.from_disk(state_path)
    assert torch.equal(official.robust_flags, result.robust)
    assert json.loads(state_path.read_text())["_run_attacks"] == ["apgd-ce", "square"]
    # Resuming skips the attacks already run and keeps their robust flags.
    rows.clear()
    resumed = runner.run(x, y, batch_size=5, state_path=state_path)
    assert rows == {}
    assert torch.equal(resumed.robust, result.robust)
    broken = torch.nonzero(~result.robust).flatten().tolist()
    assert broken and all(resumed.broken_by[i] == "restored" for i in broken)
    assert torch.equal(resumed.x_adv, x)  # official: only adversarials of the current run are returned
    with pytest.raises(ValueError, match="wrong state file"):
        AutoAttackRunner(model, eps=eps, backend="torchattacks", **CHEAP).run(x, y, state_path=state_path)
    assert EvaluationState.from_disk(state_path).run_attacks == {"apgd-ce", "square"}


def test_run_individual(linear_setup):
    model, x, y, radius, eps = linear_setup
    runner = AutoAttackRunner(model, eps=eps, version="custom", attacks=["apgd-ce", "apgd-dlr"], n_iter=4,
                              n_restarts=1, backend="pyautoattack")
    results = runner.run_individual(x, y, batch_size=12)
    assert list(results) == ["apgd-ce", "apgd-dlr"]
    for name, result in results.items():
        assert result.attacks == (name,) and set(result.broken_by) <= {None, name}
        # Each attack alone, on every clean-correct point: both break the breakable ones.
        assert not bool(result.robust[radius < 0.9 * eps].any()) and bool(result.robust[radius > eps].all())
        assert_broken_points_are_adversarial(model, x, y, result, eps)
        assert result.robust_accuracy_by_attack == {"clean": 1.0, name: result.robust_accuracy}


BUDGETS = {
    "apgd-ce": dict(n_iter=6, n_restarts=2), "apgd-t": dict(n_iter=5, n_restarts=1, n_target_classes=3),
    "fab": dict(n_iter=4, n_restarts=1), "fab-t": dict(n_iter=4, n_target_classes=2), "square": dict(n_queries=15),
}


@pytest.mark.parametrize("backend", REGISTRY_BACKENDS)
@pytest.mark.parametrize("attack", sorted(BUDGETS))
def test_evaluation_estimate_bounds_the_counted_forward_passes(linear_setup, backend, attack):
    model, x, y, _, _ = linear_setup
    counting = CountingModel(model)
    runner = AutoAttackRunner(counting, eps=1e-4, backend=backend, version="custom", attacks=[attack],
                              **BUDGETS[attack])
    estimate = runner.evaluation_estimate(x.shape[0], num_classes=10)
    spent = {}
    perturb = runner.backend.perturb

    def counted(name, xb, yb):  # the real attack; rows through the model while it runs
        before = counting.rows
        out = perturb(name, xb, yb)
        spent[name] = spent.get(name, 0) + counting.rows - before
        return out

    runner.backend.perturb = counted
    runner.run(x, y, batch_size=12)
    assert 0 < spent[attack] <= estimate[attack]
    if attack != "fab":  # untargeted FAB's bound counts the K backward passes per step, not forwards
        assert estimate[attack] <= 1.25 * spent[attack]  # and it is not a vacuous bound


def test_evaluation_estimate_is_the_same_on_every_backend_and_follows_overrides():
    model = small_cnn()
    for version in ("standard", "plus", "rand"):
        estimates = [AutoAttackRunner(model, version=version, backend=b).evaluation_estimate(1000)
                     for b in REGISTRY_BACKENDS]
        assert estimates[0] == estimates[1]
    standard = AutoAttackRunner(model, backend="pyautoattack").evaluation_estimate(1000)
    assert list(standard) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert 7_000_000 < sum(standard.values()) < 8_000_000  # the figure the docstring quotes
    cheap = AutoAttackRunner(model, backend="torchattacks", **CHEAP).evaluation_estimate(1000)
    assert cheap == {"apgd-ce": 1000 * (1 + 1 * (5 + 2))}
    with pytest.raises(ValueError, match="`num_points`"):
        AutoAttackRunner(model, backend="torchattacks", **CHEAP).evaluation_estimate(0)


# --------------------------------------------------------------------------- AutoAttack's checks
CHECKED_MODELS = {
    "softmax": (SoftmaxOutput, "probability distribution"),
    "randomized": (NoisyInput, "randomized defense"),
    "dynamic": (GradientStepAtInference, "dynamic defense"),
}


@pytest.mark.parametrize("kind", sorted(CHECKED_MODELS))
def test_shipped_checks_flag_the_model_on_every_backend(any_backend, kind, linear_setup, tmp_path):
    model, x, y, _, eps = linear_setup
    wrapper, expected = CHECKED_MODELS[kind]
    log_path = tmp_path / "aa.log"
    runner = AutoAttackRunner(wrapper(model).eval(), eps=eps, backend=any_backend, log_path=log_path, **CHEAP)
    with pytest.warns(AutoAttackCheckWarning, match=expected) as record:
        result = runner.run(x[:6], y[:6], batch_size=6)
    assert any(any_backend in str(w.message) for w in record)
    flagged = [m for m in result.check_warnings if expected in m]
    assert len(flagged) == 1 and "flags_doc.md" in flagged[0]  # the shipped module's own wording
    assert f"Warning: {flagged[0]}" in log_path.read_text()


def test_shipped_checks_stay_quiet_on_a_plain_logit_model(any_backend, linear_setup):
    model, x, y, _, eps = linear_setup
    with warnings.catch_warnings():
        warnings.simplefilter("error", AutoAttackCheckWarning)
        result = AutoAttackRunner(model, eps=eps, backend=any_backend, **CHEAP).run(x[:6], y[:6], batch_size=6)
    assert result.check_warnings == ()


def test_dynamic_check_counts_each_run_afresh_and_keeps_the_tracer(linear_setup):
    model, x, y, _, eps = linear_setup
    dynamic = GradientStepAtInference(model).eval()
    with pytest.warns(AutoAttackCheckWarning, match="dynamic defense"):
        AutoAttackRunner(dynamic, eps=eps, backend="pyautoattack", **CHEAP).run(x[:4], y[:4], batch_size=4)

    def tracer(frame, event, arg):  # a debugger's/coverage tool's tracer: no local tracing
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        # The shipped check's call counter is module-global: the dynamic model above must not flag this one.
        result = AutoAttackRunner(model, eps=eps, backend="pyautoattack", **CHEAP).run(x[:4], y[:4], batch_size=4)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(previous)
    assert result.check_warnings == ()


@pytest.mark.parametrize("backend", ["autoattack", "pyautoattack"])
def test_zero_gradient_check_inside_apgd_is_surfaced(backend, linear_setup):
    model, x, y, _, eps = linear_setup
    context = official_autoattack() if backend == "autoattack" else warnings.catch_warnings()
    with context:
        runner = AutoAttackRunner(QuantizedInput(model).eval(), eps=eps, backend=backend, version="custom",
                                  attacks=["apgd-dlr"], n_iter=2, n_restarts=1)
        with pytest.warns(AutoAttackCheckWarning, match="zero gradient"):
            result = runner.run(x[:4], y[:4], batch_size=4)
    assert any("zero gradient" in m for m in result.check_warnings)


# --------------------------------------------------------------------------- misuse
def test_backend_selection():
    backends = available_backends()
    assert "pyautoattack" in backends and "torchattacks" in backends
    model = small_cnn()
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
    (dict(seed=True), TypeError, "`seed`"),
    (dict(seed=-1), ValueError, "`seed`"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AutoAttackRunner(small_cnn(), **kwargs)
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
    with pytest.raises(FileNotFoundError, match="state_path"):
        runner.run(x, y, state_path=tmp_path / "missing_folder" / "state.json")


@pytest.mark.parametrize("backend", REGISTRY_BACKENDS)
@pytest.mark.parametrize("bad", [10, 13, -1])
def test_labels_outside_the_output_width_are_refused(tiny_setup, backend, bad):
    model, x, y = tiny_setup
    labels = y.clone()
    labels[3] = bad
    counting = CountingModel(model)
    runner = AutoAttackRunner(counting, backend=backend, **CHEAP)
    for call in (lambda: runner.run(x, labels), lambda: runner.run_individual(x, labels),
                 lambda: runner.clean_accuracy(x, labels)):
        with pytest.raises(ValueError, match=r"`y`.*\[0, 10\)" if bad >= 0 else "`y`"):
            call()
    # Refused on the first forward (one image for run/run_individual, the first chunk for
    # clean_accuracy), before any check or attack ran.
    assert counting.rows <= 1 + 1 + x.shape[0]


@pytest.mark.parametrize("backend", REGISTRY_BACKENDS)
def test_non_finite_logits_raise_naming_the_model(tiny_setup, backend):
    model, x, y = tiny_setup
    runner = AutoAttackRunner(NaNModel(model), backend=backend, **CHEAP)
    for call in (lambda: runner.run(x, y), lambda: runner.run_individual(x, y), lambda: runner.clean_accuracy(x, y)):
        with pytest.raises(ValueError, match="NaNModel.*NaN or infinite"):
            call()
    infinite = AutoAttackRunner(NaNModel(model, value=float("inf")), backend=backend, **CHEAP)
    with pytest.raises(ValueError, match="NaN or infinite"):
        infinite.run(x, y)


def test_non_finite_logits_on_adversarial_examples_raise(linear_setup):
    """A model that is finite on the clean images but NaN on the attacked ones: every prediction
    is checked, not only the first forward (NaN argmax would count as 'robust' or 'broken' at random)."""
    model, x, y, _, eps = linear_setup
    runner = AutoAttackRunner(NaNOffInputs(model, x).eval(), eps=eps, backend="torchattacks", **CHEAP)
    assert runner.clean_accuracy(x, y) == 1.0
    with pytest.raises(ValueError, match="NaNOffInputs.*NaN or infinite"):
        runner.run(x, y, batch_size=6)
