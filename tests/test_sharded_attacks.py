"""The merge helpers behind the sharded attack stages of the report (issue 13): runs on consecutive units of a
data set, concatenated, equal a single run that drew the same random numbers.

Oracles: AutoAttack's attacks reseed at every attack call, so a run with ``batch_size=1`` attacks every point
alone with the same seed, whatever the parts; FGSM and the HF attack are deterministic per image; PGD's points
are rerun by hand with torchattacks under :func:`freqplug.eval.point_seed`. Tiny linear models only.
"""

import pytest
import torch
import torchattacks
from torch import nn
from helpers import CountingModel, linear_model
from helpers.eval import cifar_linear_model, linf_radius

from freqplug.attacks import HFAttack
from freqplug.defenses import LowPassFilter
from freqplug.eval import AutoAttackRunner, masked_noise_table, point_seed, robustness_curve
from freqplug.eval.autoattack_runner import _concatenate_results
from freqplug.eval.curves import _concatenate_curves, auc_normalised
from freqplug.eval.frequency import _error_rates
from freqplug.eval.masked_noise import _masked_noise_correct

TWO_ATTACKS = dict(version="custom", attacks=["apgd-ce", "apgd-dlr"], n_iter=4, n_restarts=1)
SIZES = (1, 3, 2, 4)  # uneven parts: an average of per-part rates would differ from the overall rate


def _split(n, sizes=SIZES):
    bounds, start = [], 0
    for size in sizes:
        bounds.append(list(range(start, min(start + size, n))))
        start += size
    assert start >= n
    return [b for b in bounds if b]


@pytest.fixture(scope="module")
def linear_points(cifar_samples):
    """A linear CIFAR classifier, 10 images, labels = its predictions with two flipped (clean errors), and eps =
    the median exact Linf radius (some points breakable, some provably robust)."""
    x = cifar_samples[0][:10]
    model = cifar_linear_model()
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = float(linf_radius(model, x, y).median())
    y[[1, 6]] = (y[[1, 6]] + 1) % 10
    return model, x, y, eps


def test_concatenated_autoattack_units_equal_one_run_point_by_point(linear_points):
    model, x, y, eps = linear_points
    whole = AutoAttackRunner(model, eps=eps, seed=5, backend="pyautoattack", **TWO_ATTACKS).run(x, y, batch_size=1)
    parts = [AutoAttackRunner(model, eps=eps, seed=5, backend="pyautoattack", **TWO_ATTACKS).run(
        x[idx], y[idx], batch_size=1, input_checks=i == 0) for i, idx in enumerate(_split(len(x)))]
    merged = _concatenate_results(parts)
    # the data has clean errors, broken points and robust points, so every bookkeeping path is exercised
    assert "clean" in whole.broken_by and None in whole.broken_by and "apgd-ce" in whole.broken_by
    assert merged.broken_by == whole.broken_by
    assert torch.equal(merged.robust, whole.robust) and torch.equal(merged.clean_correct, whole.clean_correct)
    assert torch.equal(merged.x_adv, whole.x_adv) and torch.equal(merged.y_pred, whole.y_pred)
    assert merged.robust_accuracy_by_attack == whole.robust_accuracy_by_attack
    assert merged.robust_accuracy == whole.robust_accuracy and merged.attacks == whole.attacks


def test_concatenation_stops_where_a_single_run_stops_and_refuses_mixed_runs(linear_points):
    model, x, y, eps = linear_points
    wrong = (y + 1) % 10  # every point misclassified clean: a single run attacks nothing
    whole = AutoAttackRunner(model, eps=eps, backend="torchattacks", **TWO_ATTACKS).run(x[:4], wrong[:4])
    parts = [AutoAttackRunner(model, eps=eps, backend="torchattacks", **TWO_ATTACKS).run(x[i:i + 2], wrong[i:i + 2])
             for i in (0, 2)]
    assert whole.robust_accuracy_by_attack == {"clean": 0.0}
    assert _concatenate_results(parts).robust_accuracy_by_attack == whole.robust_accuracy_by_attack
    other = AutoAttackRunner(model, eps=2 * eps, backend="torchattacks", **TWO_ATTACKS).run(x[:2], y[:2])
    with pytest.raises(ValueError, match="eps"):
        _concatenate_results([parts[0], other])
    with pytest.raises(ValueError, match="at least one"):
        _concatenate_results([])


def test_input_checks_false_skips_the_seven_check_forwards(linear_points):
    model, x, y, eps = linear_points
    rows = []
    for checks in (True, False):
        counting = CountingModel(model)
        AutoAttackRunner(counting, eps=eps, backend="pyautoattack", **TWO_ATTACKS).run(
            x[:3], y[:3], batch_size=3, input_checks=checks)
        rows.append(counting.rows)
    assert rows[0] - rows[1] == 7 * 3
    with pytest.raises(TypeError, match="`input_checks`"):
        AutoAttackRunner(model, eps=eps, backend="pyautoattack", **TWO_ATTACKS).run(x[:2], y[:2], input_checks=1)


def _curve_setup():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 3, 8, 8, generator=g, dtype=torch.float64)
    model = linear_model(3, 8, 8, num_classes=4, seed=0)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::4] = (y[::4] + 1) % 4
    return model, x, y


def test_concatenated_curves_equal_one_run_for_deterministic_attacks():
    model, x, y = _curve_setup()
    attacks = {"FGSM": torchattacks.FGSM(model, eps=0.05), "HF": HFAttack(model, step=2.0)}
    kwargs = dict(defenses={"D1": LowPassFilter(model, 3.0)}, batch_size=4)
    grid = [0.005, 0.01, 0.02]
    whole = robustness_curve(model, attacks, grid, x, y, seed=0, **kwargs)
    parts = [robustness_curve(model, attacks, grid, x[idx], y[idx], seed=u, **kwargs)
             for u, idx in enumerate(_split(len(x)))]
    merged = _concatenate_curves(parts, seed=7)
    assert 0 < merged.accuracy["FGSM"][-1] < merged.accuracy["FGSM"][0] < 1  # the curves move: a real check
    assert merged.hf_radius["HF"]["accuracy"][-1] < merged.hf_radius["HF"]["accuracy"][0]
    for name in attacks:
        assert torch.equal(merged.accuracy[name], whole.accuracy[name]) and merged.auc == whole.auc
        assert torch.equal(merged.defended["D1"][name], whole.defended["D1"][name])
    assert merged.defended_auc == whole.defended_auc and merged.clean_accuracy == whole.clean_accuracy
    for key in ("radius", "accuracy", "success_rate"):
        assert torch.equal(merged.hf_radius["HF"][key], whole.hf_radius["HF"][key])
    assert merged.n_images == 10 and merged.seed == 7
    assert merged.n_evaluations == sum(p.n_evaluations for p in parts)
    with pytest.raises(ValueError, match="eps grid"):
        _concatenate_curves([parts[0], robustness_curve(model, attacks, grid[:2], x[:2], y[:2], **kwargs)], seed=0)


def _one_pixel_model():
    """Class 0 iff pixel (0, 0, 0) > 0.5: near that threshold PGD's random start alone decides the outcome."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0, 0], model[1].weight[1, 0] = 1.0, -1.0
        model[1].bias.copy_(torch.tensor([-0.5, 0.5]))
    return model


def test_concatenated_pgd_curves_recount_the_units_own_random_starts():
    model = _one_pixel_model()
    x = torch.full((10, 3, 8, 8), 0.3, dtype=torch.float64)
    x[:, 0, 0, 0] = 0.5 + 0.01 * torch.arange(1, 11, dtype=torch.float64)  # all class 0, margins 0.01 ... 0.1
    y = torch.zeros(10, dtype=torch.long)
    pgd = torchattacks.PGD(model, eps=0.12, alpha=1e-6, steps=1, random_start=True)
    units = _split(len(x))
    parts = [robustness_curve(model, {"PGD": pgd}, [0.12], x[idx], y[idx], seed=100 + u, batch_size=4)
             for u, idx in enumerate(units)]
    merged = _concatenate_curves(parts, seed=0)
    robust = []
    for u, idx in enumerate(units):  # by hand: the point's seed, the attack on the unit's images
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(point_seed(100 + u, "PGD", 0.12))
            adv = pgd(x[idx], y[idx])
        with torch.no_grad():
            robust.append((model(x[idx]).argmax(1) == y[idx]) & (model(adv).argmax(1) == y[idx]))
    robust = torch.cat(robust)
    assert 0 < int(robust.sum()) < 9  # the random starts matter here (another seed gives other flags)
    assert torch.equal(merged.correct["PGD"][0, -1], robust)
    assert merged.accuracy["PGD"][-1] == robust.double().mean() and merged.accuracy["PGD"][0] == 1.0
    assert merged.auc["PGD"] == auc_normalised(merged.eps, merged.accuracy["PGD"])


def test_masked_noise_flags_give_the_table_and_recount_over_units():
    model, x, y = _curve_setup()
    pgd = torchattacks.PGD(model, eps=0.05, alpha=0.02, steps=2, random_start=False)  # deterministic per image
    masks = ("low", "high")
    table = masked_noise_table(model, pgd, x, y, masks=masks, batch_size=4)
    flags = [_masked_noise_correct(model, pgd, x[idx], y[idx], masks=masks, batch_size=4) for idx in _split(len(x))]
    merged = _error_rates({k: torch.cat([f[k] for f in flags]) for k in flags[0]})
    assert list(merged) == ["x", "x+delta", "x+delta_low", "x+delta_high"] and merged == table
    assert 0 < table["x+delta"] < 1 and table["x"] < table["x+delta"]
