"""The report as a registry of stage records: a new stage is one record; the exported names,
presets, descriptions and sharded list are computed from the registry; the layering has no cycle."""

import ast
import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_cnn
from helpers.report import TOY_ROW, registered, toy_stage

import freqplug.report as report
from freqplug.report import profile, stages

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPORT_DIR = Path(report.__file__).parent


@pytest.fixture
def small(cifar_samples):
    x, y = cifar_samples[0][:4], cifar_samples[1][:4]
    return tiny_cnn(num_classes=10, seed=0, dtype=torch.float32), x, y


def test_a_registered_stage_appears_with_its_table_and_plot_and_goes_away(small, tmp_path):
    model, x, y = small
    before = report.STAGES
    with registered(toy_stage()):
        assert report.STAGES == before + ("toy_stage",)
        assert report.DESCRIPTIONS["toy_stage"] == "A toy stage registered by a test."
        assert report.PRESETS["fast"]["toy_stage"] == {"scale": 1.0}
        result = profile(model, x, y, out=tmp_path, preset="fast", stages=["clean_accuracy", "toy_stage"],
                         overrides={"toy_stage": {"scale": 2.0}}, quiet=True)
        with torch.no_grad():
            expected = 2.0 * float(model(x).mean())
        assert result["model"]["toy_stage"]["mean_logit"] == pytest.approx(expected)
        markdown = (tmp_path / "report.md").read_text()
        html = (tmp_path / "report.html").read_text()
        assert "## Toy stage title" in markdown and TOY_ROW in markdown and "](toy_stage.png)" in markdown
        assert '<h2 id="toy_stage">Toy stage title</h2>' in html and TOY_ROW in html
        assert (tmp_path / "toy_stage.png").read_bytes().startswith(PNG_MAGIC)
        assert json.loads((tmp_path / "metrics.json").read_text())["models"]["model"]["toy_stage"] == {
            "mean_logit": pytest.approx(expected)}
    assert report.STAGES == before and "toy_stage" not in report.PRESETS["fast"]
    with pytest.raises(ValueError, match="toy_stage"):
        profile(model, x, y, out=None, stages=["toy_stage"], quiet=True)


def test_exports_are_computed_from_the_records():
    records = stages.registered()
    assert report.STAGES == tuple(r.name for r in records) == stages.BUILTIN_STAGES
    assert report.SHARDED_STAGES == tuple(r.name for r in records if r.sharded)
    # issue 13: every stage with per-example work is split across ranks (the spectra of x_adv need no model)
    assert set(report.SHARDED_STAGES) == set(report.STAGES) - {"perturbation_spectrum"}
    assert report.DESCRIPTIONS == {r.name: r.description for r in records}
    for preset in stages.PRESET_NAMES:
        assert {k: v for k, v in report.PRESETS[preset].items() if k in report.STAGES} == {
            r.name: dict(r.presets[preset]) for r in records}
    # The old layout of PRESETS (common keys next to the stage dicts) still reads the same way.
    assert report.PRESETS["fast"]["batch_size"] == 128 and report.PRESETS["fast"]["eps"] == pytest.approx(8 / 255)
    assert report.PRESETS["fast"]["masked_noise"]["pgd_steps"] == 5
    report.PRESETS["fast"]["band_shapley"]["num_bands"] = 99  # a caller's copy, not the registry
    assert report.PRESETS["fast"]["band_shapley"]["num_bands"] == 4
    assert isinstance(report.SCHEMA_VERSION, int)


@pytest.mark.parametrize("changes, message", [
    ({"name": "clean_accuracy"}, "already taken"),
    ({"name": "not an identifier"}, "identifier"),
    ({"presets": {"fast": {}}}, "presets"),
    ({"depends_on": ("no_such_stage",)}, "no_such_stage"),
])
def test_register_refuses_bad_records(changes, message):
    with pytest.raises(ValueError, match=message):
        stages.register(toy_stage(**changes))
    assert "not an identifier" not in stages.stage_names()


def test_a_stage_depending_on_an_unselected_stage_is_skipped_and_cannot_outlive_it(small):
    model, x, y = small
    with registered(toy_stage("toy_base")), registered(toy_stage("toy_user", depends_on=("toy_base",))):
        with pytest.raises(ValueError, match="toy_user"):
            stages.unregister("toy_base")
        result = profile(model, x, y, out=None, stages=["toy_user"], quiet=True)
        assert result["model"]["toy_user"] == {"skipped": "needs the toy_base stage"}
        both = profile(model, x, y, out=None, stages=["toy_base", "toy_user"], quiet=True)
        assert "mean_logit" in both["model"]["toy_user"]


def test_a_stage_result_that_the_cache_could_not_load_safely_is_refused(small, tmp_path):
    import numpy as np

    model, x, y = small

    def numpy_result(ctx):
        return {"metrics": {"value": np.float64(1.0)}, "arrays": {}}

    with registered(toy_stage(run=numpy_result)):
        with pytest.raises(TypeError, match="toy_stage.*float64"):
            profile(model, x, y, out=tmp_path, stages=["toy_stage"], quiet=True)


def _input_gradient_norm(ctx):
    # Written the way a stage author would: no torch.enable_grad() of its own.
    x = ctx.x.to(ctx.device).clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(ctx.model(x).logsumexp(1).sum(), x)
    return {"metrics": {"grad_norm": float(gradient.norm())}, "arrays": {}}


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_a_stage_that_needs_grad_gets_it_under_no_grad(small, mode):
    model, x, y = small
    with registered(toy_stage(run=_input_gradient_norm, needs_grad=True, plot=None)):
        reference = profile(model, x, y, out=None, stages=["toy_stage"], quiet=True)["model"]["toy_stage"]
        with mode():
            inside = profile(model, x, y, out=None, stages=["toy_stage"], quiet=True)["model"]["toy_stage"]
    assert inside == reference and reference["grad_norm"] > 0


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.add(node.module or "")
            found.update(alias.name for alias in node.names if not node.module)
    return found


def test_layering_has_no_cycle_and_no_name_lookup():
    # render and stages never import the orchestrator; plots imports neither; profile imports render lazily.
    assert "profile" not in _imports(REPORT_DIR / "render.py")
    assert "profile" not in _imports(REPORT_DIR / "stages.py") and "render" not in _imports(REPORT_DIR / "stages.py")
    assert _imports(REPORT_DIR / "plots.py") == set()
    for path in REPORT_DIR.glob("*.py"):
        assert "globals()" not in path.read_text(), path.name


# ------------------------------------------------------------------------------------------ cost per stage
def _toy_cost(settings, n_images, image_shape, num_classes):
    return {"evaluations": n_images, "exact": True, "images": n_images}  # _run_toy: one forward of every image


def test_every_builtin_stage_has_a_cost_and_a_registered_cost_is_what_profile_counts(small):
    assert all(callable(stages.get_stage(name).cost) for name in stages.BUILTIN_STAGES)
    model, x, y = small
    with registered(toy_stage(cost=_toy_cost)):
        result = profile(model, x, y, out=None, preset="fast", stages=["clean_accuracy", "toy_stage"], quiet=True)
        estimate = report.estimate_cost("fast", n_images=4, stages=["clean_accuracy", "toy_stage"])
    timing = result.metrics["timing"]["model"]
    assert {s: timing[s]["evaluations"] for s in timing} == {s: r["evaluations"] for s, r in estimate.rows.items()}
    assert estimate.total == 8 and estimate.exact


def test_register_refuses_a_cost_that_is_not_callable():
    with pytest.raises(TypeError, match="stage.cost"):
        stages.register(toy_stage(cost=12))
    assert "toy_stage" not in stages.stage_names()


def test_estimate_cost_counts_designs_and_splits_sharded_stages_by_units():
    # band Shapley with 3 bands is exact: 2^3 coalitions per image; clean accuracy one forward per image
    estimate = report.estimate_cost("fast", n_images=20, stages=["clean_accuracy", "band_shapley"],
                                    overrides={"band_shapley": {"num_bands": 3}}, world_size=3)
    assert estimate.rows["band_shapley"]["evaluations"] == 2 ** 3 * 20
    # shard_size 1 (fast): image i on rank i % 3, so ranks hold 7, 7 and 6 images
    assert estimate.rows["clean_accuracy"]["per_rank"] == [7, 7, 6]
    assert estimate.rows["band_shapley"]["per_rank"] == [56, 56, 48]
    table = estimate.format()
    assert "band_shapley" in table and "160" in table and "3 process(es)" in table
    # an attack's count is a bound; an ImageNet-sized run costs more occlusions (more DCT rings)
    assert not report.estimate_cost("fast", n_images=4, stages=["autoattack"]).rows["autoattack"]["exact"]
    small_rings = report.estimate_cost("gpu", n_images=4, stages=["occluded_frequency"]).total
    large_rings = report.estimate_cost("gpu", n_images=4, image_shape=(3, 224, 224), num_classes=1000,
                                       stages=["occluded_frequency"]).total
    assert large_rings > small_rings > 4


@pytest.mark.parametrize("kwargs, error, message", [
    ({"stages": ["no_such_stage"]}, ValueError, "stages"),
    ({"n_images": 0}, ValueError, "n_images"),
    ({"image_shape": (32, 32)}, ValueError, "image_shape"),
    ({"preset": "huge"}, ValueError, "preset"),
    ({"overrides": {"band_shapley": {"bands": 3}}}, ValueError, "bands"),
])
def test_estimate_cost_refuses_bad_arguments_naming_them(kwargs, error, message):
    with pytest.raises(error, match=message):
        report.estimate_cost(**kwargs)


def test_estimate_cost_refuses_a_stage_without_a_cost():
    with registered(toy_stage()), pytest.raises(ValueError, match="toy_stage"):
        report.estimate_cost("fast", n_images=4, stages=["toy_stage"])


def test_estimate_follows_the_units_each_stage_cuts():
    from freqplug.report import estimate_cost

    # units of 4 images on 2 ranks: 8 images split 4 + 4, 4 images all on rank 0 -- but the Shapley stages run one
    # image per unit whatever shard_size, and AutoAttack's input checks (7 forwards of a batch) land on unit 0's rank
    settings = {"shard_size": 4, "frequency_shapley": {"n_images": 4}, "autoattack": {"n_iter": 1}}
    estimate = estimate_cost("fast", n_images=8, overrides=settings, world_size=2,
                             stages=["clean_accuracy", "frequency_shapley", "autoattack"])
    assert estimate.rows["clean_accuracy"]["per_rank"] == [4, 4]
    half = estimate.rows["frequency_shapley"]["evaluations"] // 2
    assert estimate.rows["frequency_shapley"]["per_rank"] == [half, half]
    rank0, rank1 = estimate.rows["autoattack"]["per_rank"]
    assert rank0 == rank1 + 7 * 4  # 7 forwards of unit 0 (4 images)
