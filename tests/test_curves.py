"""freqplug.eval.robustness_curve: every point against torchattacks run by hand, exact oracles, resume, refusals."""

import math

import numpy as np
import pytest
import torch
import torchattacks
from helpers import CountingModel, NaNModel, assert_model_unchanged, linear_model, snapshot_model

from freqplug.attacks import HFAttack
from freqplug.defenses import LowPassFilter
from freqplug.eval import point_seed, robustness_curve
from freqplug.eval.curves import auc_normalised


def _images(n=24, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)
    return x


def _net(seed=0):
    """A 4-class linear model on 8x8 images: small, and FGSM/PGD/HF change its predictions at small budgets."""
    return linear_model(3, 8, 8, num_classes=4, seed=seed)


def _labelled(model, x, flip_every=5):
    """Labels = the model's predictions, with every ``flip_every``-th changed (some clean errors)."""
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::flip_every] = (y[::flip_every] + 1) % 4
    return y


def _robust(model, x, y, adv):
    with torch.no_grad():
        return float(((model(x).argmax(1) == y) & (model(adv).argmax(1) == y)).double().mean())


def test_points_match_torchattacks_by_hand_and_attacks_are_restored():
    model = _net()
    x = _images()
    y = _labelled(model, x)
    eps_user, alpha_user = 0.05, 0.0125
    attacks = {"FGSM": torchattacks.FGSM(model, eps=eps_user),
               "PGD": torchattacks.PGD(model, eps=eps_user, alpha=alpha_user, steps=3, random_start=True)}
    grid = [0.005, 0.01, 0.05]
    before = snapshot_model(model)
    rng_state = torch.get_rng_state()
    result = robustness_curve(model, attacks, grid, x, y, batch_size=10, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the user's random stream is untouched
    assert_model_unchanged(model, before)
    assert attacks["PGD"].eps == eps_user and attacks["PGD"].alpha == alpha_user and attacks["FGSM"].eps == eps_user

    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).double().mean())
    assert result.eps.tolist() == [0.0] + grid
    for name in attacks:
        assert result.accuracy[name][0] == clean
    for e, got_fgsm, got_pgd in zip(grid, result.accuracy["FGSM"][1:], result.accuracy["PGD"][1:]):
        fgsm = torchattacks.FGSM(model, eps=e)
        adv = torch.cat([fgsm(x[s:s + 10], y[s:s + 10]) for s in range(0, len(x), 10)])
        assert float(got_fgsm) == _robust(model, x, y, adv)
        pgd = torchattacks.PGD(model, eps=e, alpha=alpha_user * e / eps_user, steps=3, random_start=True)
        torch.manual_seed(point_seed(3, "PGD", e))
        adv = torch.cat([pgd(x[s:s + 10], y[s:s + 10]) for s in range(0, len(x), 10)])
        assert float(got_pgd) == _robust(model, x, y, adv)
    # the curve falls: a real attack at eps 0.05 on this net breaks some images
    assert result.accuracy["PGD"][-1] < clean
    assert result.auc["PGD"] == pytest.approx(np.trapezoid(result.accuracy["PGD"].numpy(), result.eps.numpy()) / 0.05)
    # same call, same curve (the grid as a numpy array or a tensor, too)
    again = robustness_curve(model, attacks, np.array(grid), x, y, batch_size=10, seed=3)
    assert torch.equal(again.accuracy["PGD"], result.accuracy["PGD"])


def test_fgsm_on_a_two_class_linear_model_matches_a_numpy_oracle_and_never_rises():
    model = linear_model(3, 6, 6, num_classes=2, seed=1)
    x = _images(40, 6, seed=2)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::7] = 1 - y[::7]
    grid = [0.005, 0.01, 0.02, 0.04, 0.08, 0.16]
    result = robustness_curve(model, {"FGSM": torchattacks.FGSM(model)}, grid, x, y)

    w = model[1].weight.detach().numpy()
    b = model[1].bias.detach().numpy()
    xs = x.reshape(len(x), -1).numpy()
    yn = y.numpy()
    d = w[yn] - w[1 - yn]  # margin direction of each image: f_y - f_other
    db = b[yn] - b[1 - yn]
    # CE gradient of a 2-class linear model is (p_y - 1) * d: FGSM moves against sign(d)
    expected = []
    for e in [0.0] + grid:
        adv = np.clip(xs - e * np.sign(d), 0, 1) if e else xs
        clean_ok = (np.einsum("nk,nk->n", d, xs) + db) > 0
        adv_ok = (np.einsum("nk,nk->n", d, adv) + db) > 0
        expected.append((clean_ok & adv_ok).mean())
    np.testing.assert_allclose(result.accuracy["FGSM"].numpy(), expected, atol=0)
    assert bool((result.accuracy["FGSM"].diff() <= 0).all())
    assert result.accuracy["FGSM"][-1] < result.accuracy["FGSM"][0]


def test_defense_curves_evaluate_the_attacks_made_against_the_model():
    model = _net()
    x = _images(16)
    y = _labelled(model, x)
    d1 = LowPassFilter(model, 2.5)
    result = robustness_curve(model, {"FGSM": torchattacks.FGSM(model)}, [0.01, 0.05], x, y,
                              defenses={"D1 r=2.5": d1})
    for e, got in zip([0.01, 0.05], result.defended["D1 r=2.5"]["FGSM"][1:]):
        adv = torchattacks.FGSM(model, eps=e)(x, y)  # made against the undefended model
        assert float(got) == _robust(d1, x, y, adv)
    with torch.no_grad():
        assert result.clean_accuracy["D1 r=2.5"] == float((d1(x).argmax(1) == y).double().mean())
    assert set(result.defended_auc["D1 r=2.5"]) == {"FGSM"}
    labels = {(a, m) for a, m, _ in result.curves()}
    assert labels == {("FGSM", "model"), ("FGSM", "D1 r=2.5")}


def test_hf_attack_radius_curve_equals_separate_runs_and_its_eps_curve_uses_the_distance():
    model = _net()
    x = _images(12)
    y = _labelled(model, x)
    hf = HFAttack(model, min_radius=1.0, step=0.5)
    result = robustness_curve(model, {"HF": hf}, [0.1, 0.3, 1.0], x, y, batch_size=5)
    assert result.kinds["HF"] == "minimum-norm"
    curve = result.hf_radius["HF"]
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
    for k in (0, len(curve["radius"]) // 2, len(curve["radius"]) - 1):
        r = float(curve["radius"][k])
        separate = HFAttack(model, min_radius=r, step=0.5)
        separate(x, y)
        assert float(curve["accuracy"][k]) == float((clean_ok & ~separate.success).double().mean())
        assert float(curve["success_rate"][k]) == pytest.approx(separate.success_rate)
    # Linf budget: an image counts as broken once the HF image (which fooled the model) is within eps
    full = HFAttack(model, min_radius=1.0, step=0.5)
    adv = full(x, y)
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    distance = (adv - x).flatten(1).abs().amax(1)
    for e, got in zip([0.1, 0.3, 1.0], result.accuracy["HF"][1:]):
        assert float(got) == float((clean_ok & ~(fooled & (distance <= e))).double().mean())


def test_resume_skips_finished_points_and_refuses_a_state_from_other_inputs(tmp_path):
    counted = CountingModel(_net())
    x = _images(10)
    y = _labelled(counted, x)
    path = tmp_path / "curve.pt"

    def attacks():
        return {"PGD": torchattacks.PGD(counted, eps=0.02, alpha=0.01, steps=2)}

    first = robustness_curve(counted, attacks(), [0.01, 0.02], x, y, resume=path)
    assert path.is_file()
    counted.rows = 0
    longer = robustness_curve(counted, attacks(), [0.01, 0.02, 0.04], x, y, resume=path)
    # only the new point ran: 2 PGD steps + 1 evaluation forward of the 10 images
    assert counted.rows == 3 * 10
    assert longer.n_evaluations == 3 * 10
    assert torch.equal(longer.accuracy["PGD"][:3], first.accuracy["PGD"])
    assert ("PGD", 0.01) in longer.resumed_points
    fresh = robustness_curve(counted, attacks(), [0.01, 0.02, 0.04], x, y)
    assert torch.equal(fresh.accuracy["PGD"], longer.accuracy["PGD"])

    counted.rows = 0
    with pytest.raises(ValueError, match="`resume`.*inputs"):
        robustness_curve(counted, attacks(), [0.01], x.flip(0), y, resume=path)
    with pytest.raises(ValueError, match="`resume`.*seed"):
        robustness_curve(counted, attacks(), [0.01], x, y, resume=path, seed=1)
    with pytest.raises(ValueError, match="`resume`.*attacks"):
        robustness_curve(counted, {"PGD": torchattacks.PGD(counted, eps=0.02, alpha=0.01, steps=3)}, [0.01], x, y,
                         resume=path)
    assert counted.rows == 0
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="corrupt"):
        robustness_curve(counted, attacks(), [0.01], x, y, resume=tmp_path / "junk.pt")


def test_refusals():
    model = _net()
    other = _net(seed=1)
    x = _images(4)
    y = _labelled(model, x)
    fgsm = {"FGSM": torchattacks.FGSM(model)}
    with pytest.raises(TypeError, match="`attacks`"):
        robustness_curve(model, {}, [0.1], x, y)
    with pytest.raises(TypeError, match=r"`attacks\['a'\]`"):
        robustness_curve(model, {"a": model}, [0.1], x, y)
    with pytest.raises(ValueError, match=r"`attacks\['FGSM'\]`.*another model"):
        robustness_curve(model, {"FGSM": torchattacks.FGSM(other)}, [0.1], x, y)
    with pytest.raises(ValueError, match="alpha/eps"):
        robustness_curve(model, {"PGD": torchattacks.PGD(model, eps=0.0, alpha=0.01)}, [0.1], x, y)
    for grid in ([0.2, 0.1], [0.0], [-0.1, 0.1], [0.1, 0.1], [float("nan")]):
        with pytest.raises(ValueError, match="`eps_grid`"):
            robustness_curve(model, fgsm, grid, x, y)
    with pytest.raises(TypeError, match="`eps_grid`"):
        robustness_curve(model, fgsm, 0.1, x, y)
    with pytest.raises(ValueError, match="`y`"):
        robustness_curve(model, fgsm, [0.1], x, torch.full((4,), 4))
    with pytest.raises(ValueError, match="`x`"):
        robustness_curve(model, fgsm, [0.1], x * 255, y)
    with pytest.raises(TypeError, match="`seed`"):
        robustness_curve(model, fgsm, [0.1], x, y, seed=0.5)
    with pytest.raises(ValueError, match="`norm`"):
        robustness_curve(model, fgsm, [0.1], x, y, norm="L1")
    with pytest.raises(ValueError, match="`defenses`"):
        robustness_curve(model, fgsm, [0.1], x, y, defenses={"model": model})
    with pytest.raises(ValueError, match="max_evaluations"):
        robustness_curve(model, fgsm, [0.1, 0.2], x, y, max_evaluations=10)
    nan = NaNModel(model)
    with pytest.raises(ValueError, match="NaN or infinite"):
        robustness_curve(nan, {"FGSM": torchattacks.FGSM(nan)}, [0.1], x, y)


def test_auc_is_the_normalised_trapezoid():
    eps = torch.tensor([0.0, 0.1, 0.3], dtype=torch.float64)
    assert auc_normalised(eps, torch.tensor([1.0, 1.0, 1.0])) == 1.0
    assert auc_normalised(eps, torch.tensor([1.0, 0.5, 0.0])) == pytest.approx((0.1 * 0.75 + 0.2 * 0.25) / 0.3)
    assert math.isclose(auc_normalised(eps, torch.tensor([0.0, 0.0, 0.0])), 0.0)


@pytest.mark.slow
def test_reference_resnet18_fgsm_and_pgd_points(reference_model, cifar_samples):
    x, y = cifar_samples
    x, y = x[:2], y[:2]
    attacks = {"FGSM": torchattacks.FGSM(reference_model, eps=8 / 255),
               "PGD": torchattacks.PGD(reference_model, eps=8 / 255, alpha=2 / 255, steps=1)}
    result = robustness_curve(reference_model, attacks, [8 / 255], x, y, seed=0)
    with torch.no_grad():
        clean = float((reference_model(x).argmax(1) == y).double().mean())
    assert result.clean_accuracy["model"] == clean == float(result.accuracy["PGD"][0]) == 1.0
    pgd = torchattacks.PGD(reference_model, eps=8 / 255, alpha=2 / 255, steps=1)
    torch.manual_seed(point_seed(0, "PGD", 8 / 255))
    assert float(result.accuracy["PGD"][1]) == _robust(reference_model, x, y, pgd(x, y))
    assert result.accuracy["FGSM"][1] < 1.0  # 8/255 breaks the standard model (FGSM exactness: the linear tests)


def test_an_attack_that_repairs_misclassified_images_does_not_raise_robust_accuracy():
    model = _net()
    x = _images(20)
    y = _labelled(model, x, flip_every=2)  # half the images misclassified
    repair = torchattacks.PGD(model, eps=0.05, alpha=0.02, steps=3)
    repair.set_mode_targeted_by_function(target_map_function=lambda images, labels: labels)  # towards the truth
    result = robustness_curve(model, {"repair": repair}, [0.05], x, y)
    adv = repair(x, y)
    with torch.no_grad():
        assert float((model(adv).argmax(1) == y).double().mean()) > result.accuracy["repair"][0]  # it does repair
    assert float(result.accuracy["repair"][1]) == float(result.accuracy["repair"][0])  # but counts clean-correct only


def test_plots_of_a_result_have_titles_labels_and_legends():
    from freqplug.report.plots_curves import plot_robustness_curve

    model = _net()
    x = _images(6)
    y = _labelled(model, x)
    result = robustness_curve(model, {"FGSM": torchattacks.FGSM(model), "HF": HFAttack(model, min_radius=2.0)},
                              [0.01, 0.05], x, y, defenses={"D1": LowPassFilter(model, 2.5)})
    for source in (result, result.to_dict()):
        figure = plot_robustness_curve(source)
        curves_ax, hf_ax = figure.axes
        assert curves_ax.get_xlabel().startswith("Linf budget") and curves_ax.get_ylabel() == "robust accuracy"
        labels = curves_ax.get_legend_handles_labels()[1]
        assert any(label.startswith("FGSM + D1") for label in labels) and len(labels) == 4
        assert hf_ax.get_title() == "HF attack against radius"
        assert figure.get_suptitle().startswith("Robustness curves")


@pytest.mark.slow
def test_report_stages_run_render_and_pair_two_models(cifar_samples, tmp_path):
    import json

    from freqplug.report import profile, stages
    from freqplug.report.plots_curves import classwise_pair

    x, y = cifar_samples[0][:4], cifar_samples[1][:4]
    models = {f"tiny{s}": linear_model(3, 32, 32, num_classes=10, seed=s, dtype=torch.float32) for s in (0, 1)}
    result = profile(models, x, y, out=tmp_path, preset="fast", stages=["autoattack", "robustness_curve", "classwise"],
                     quiet=True)
    assert {"robustness_curve", "classwise"} <= set(stages.BUILTIN_STAGES)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["models"]
    curve = metrics["tiny0"]["robustness_curve"]
    assert curve["eps"][0] == 0 and set(curve["accuracy"]) == {"FGSM", "PGD", "HF"}
    assert set(curve["defended"]) == {"D1 r=12"}  # a model without Conv2d gets no D2
    assert curve["accuracy"]["PGD"][0] == metrics["tiny0"]["autoattack"]["clean_accuracy"]
    classwise = metrics["tiny0"]["classwise"]
    assert classwise["n_images"] == 4 and len(classwise["hfc_abs"]) == 10
    assert classwise["overall_robust"] == metrics["tiny0"]["autoattack"]["robust_accuracy"]
    pair = classwise_pair({n: result.metrics["models"][n]["classwise"] for n in models})
    if pair is not None:
        assert {pair["standard"], pair["robust"]} == set(models)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Robustness curves" in markdown and "## Class-wise frequency analysis" in markdown
    assert (tmp_path / "robustness_curve.png").is_file() and (tmp_path / "classwise.png").is_file()


def test_to_dict_is_json_when_no_image_is_classified_correctly():
    import json

    model = _net()
    x = _images(4)
    with torch.no_grad():
        y = (model(x).argmax(1) + 1) % 4  # every image wrong: HF success rate undefined
    result = robustness_curve(model, {"HF": HFAttack(model, min_radius=2.0)}, [0.5], x, y)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["accuracy"]["HF"] == [0.0, 0.0] and data["hf_radius"]["HF"]["success_rate"][0] is None


def test_an_attack_named_clean_does_not_collide_with_the_clean_point(tmp_path):
    model = _net()
    x = _images(6)
    y = _labelled(model, x)
    attacks = {"clean": HFAttack(model, min_radius=2.0)}
    first = robustness_curve(model, attacks, [0.5], x, y, resume=tmp_path / "s.pt")
    again = robustness_curve(model, attacks, [0.5], x, y, resume=tmp_path / "s.pt")
    assert torch.equal(first.accuracy["clean"], again.accuracy["clean"])
    assert again.resumed_points == [("clean", 0.0), ("clean", None)] and again.n_evaluations == 0
