"""`freqplug profile`: the CLI end to end on the embedded model (fast preset), agreement of
metrics.json with the library functions, bad arguments, the stage cache and the torchrun run."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from freqplug.cli import main
from freqplug.report import PRESETS, SHARDED_STAGES, STAGES, input_jacobians

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = PRESETS["fast"]
#: Images of the CLI runs below (the first 6 of the 20 embedded samples: a third of the cost of all 20).
N_IMAGES = 6


@pytest.fixture(scope="module")
def fast_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "fast"
    assert main(["profile", "--preset", "fast", "--n-examples", str(N_IMAGES), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_report_has_every_section_plot_and_metric(fast_report):
    metrics = json.loads((fast_report / "metrics.json").read_text())
    assert metrics["schema_version"] == 3 and metrics["preset"] == "fast" and metrics["n_examples"] == N_IMAGES
    assert metrics["threat_model"]["norm"] == "Linf" and metrics["threat_model"]["eps"] == 8 / 255
    assert metrics["stages"] == list(STAGES)
    from freqplug.cli import _STAGES

    assert _STAGES == STAGES  # the CLI's --skip/--only choices
    assert set(metrics["models"]["embedded"]) == set(STAGES)
    markdown = (fast_report / "report.md").read_text()
    html = (fast_report / "report.html").read_text()
    from freqplug.report.stages import get_stage

    assert "AutoAttack robust accuracy" not in markdown  # the fast preset runs a cut-down APGD
    for stage in STAGES:
        assert f"## {get_stage(stage).heading(metrics['settings'])}" in markdown
        assert f'<h2 id="{stage}">' in html
    plots = sorted(fast_report.glob("*.png"))
    assert {p.stem for p in plots} == set(STAGES) - {"clean_accuracy"}
    for plot in plots:
        data = plot.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000
        assert f"]({plot.name})" in markdown
    # Self-contained HTML: every image is a data URI, no external src/href of any kind.
    assert html.count('src="data:image/png;base64,') == len(plots)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html, re.I)
    assert "<link" not in html and "<script" not in html


@pytest.mark.slow
def test_metrics_agree_with_library_functions(fast_report, reference_model, cifar_samples):
    from freqplug import HFAttack, SpectralBandShapley
    from freqplug.eval import AutoAttackRunner, perturbation_spectrum
    from freqplug.spectral import frequency_bias

    model, (x, y) = reference_model, (cifar_samples[0][:N_IMAGES], cifar_samples[1][:N_IMAGES])
    got = json.loads((fast_report / "metrics.json").read_text())["models"]["embedded"]
    with torch.no_grad():
        assert got["clean_accuracy"]["accuracy"] == (model(x).argmax(1) == y).double().mean().item()

    band = SpectralBandShapley(model, num_bands=FAST["band_shapley"]["num_bands"]).importance(
        (x, y), internal_batch_size=FAST["batch_size"], seed=0, show_progress=False)
    assert got["band_shapley"]["srs"] == pytest.approx(float(band.srs), abs=1e-9)
    assert got["band_shapley"]["psi"] == pytest.approx(band.values.tolist(), abs=1e-9)
    assert got["band_shapley"]["distinguishable"] == bool(band.distinguishable)

    jacobian = input_jacobians(model, x, y)
    direct = x.clone().requires_grad_(True)
    (direct_grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(direct), y, reduction="sum"), direct)
    assert torch.allclose(jacobian, direct_grad, atol=1e-6)
    assert got["frequency_bias"]["b_low"] == pytest.approx(float(frequency_bias(direct_grad)), rel=1e-5)

    hf = HFAttack(model, step=FAST["hf_attack"]["step"], batch_size=FAST["batch_size"])
    hf(x, y)
    assert got["hf_attack"]["n_correct"] == N_IMAGES  # all correct: success over correct images = over all images
    assert got["hf_attack"]["success_rate"] == pytest.approx(hf.success.double().mean().item())
    assert got["hf_attack"]["mean_radius"] == pytest.approx(hf.found_radius[hf.success].mean().item())

    # The fast preset attacks image by image (shard_size 1), each with its unit's seed.
    from freqplug._distributed import unit_seed

    assert FAST["shard_size"] == 1
    units = [AutoAttackRunner(model, norm="Linf", eps=FAST["eps"], seed=unit_seed(0, i), **FAST["autoattack"]).run(
        x[i:i + 1], y[i:i + 1], batch_size=FAST["batch_size"], input_checks=i == 0) for i in range(x.shape[0])]
    robust = torch.cat([u.robust for u in units])
    assert got["autoattack"]["robust_accuracy"] == robust.double().mean().item()
    _, snr = perturbation_spectrum(x, torch.cat([u.x_adv for u in units]))
    assert got["perturbation_spectrum"]["snr_db"] == pytest.approx((10 * torch.log10(snr)).tolist(), rel=1e-5)


def test_python_api_leaves_the_model_as_it_was(cifar_samples):
    from freqplug.models import cifar10_resnet18
    from freqplug.report import profile

    model = cifar10_resnet18().train()
    model.linear.weight.requires_grad_(False)
    grad = torch.ones_like(model.conv1.weight)
    model.conv1.weight.grad = grad
    x, y = cifar_samples[0][:4], cifar_samples[1][:4]
    x_before = x.clone()
    result = profile({"a": model}, x, y, out=None, stages=["clean_accuracy", "frequency_bias"], quiet=True)
    assert result["a"]["clean_accuracy"]["accuracy"] == 1.0 and result.files == {}
    assert model.training and all(m.training for m in model.modules())
    assert not model.linear.weight.requires_grad and model.conv1.weight.requires_grad
    assert model.conv1.weight.grad is grad and model.linear.bias.grad is None
    assert torch.equal(x, x_before)


@pytest.mark.slow
def test_rerun_reuses_every_cached_stage(fast_report, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(fast_report, out)
    cache_files = sorted((out / "cache" / "embedded").glob("*.pt"))
    assert [p.stem for p in cache_files] == sorted(STAGES)
    before = {p: p.stat().st_mtime_ns for p in cache_files}
    metrics_before = json.loads((out / "metrics.json").read_text())
    assert main(["profile", "--preset", "fast", "--n-examples", str(N_IMAGES), "--out", str(out)]) == 0
    assert f"{len(STAGES)} stage(s) reused from the cache" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in cache_files} == before
    metrics_after = json.loads((out / "metrics.json").read_text())
    timing_before, timing_after = metrics_before.pop("timing")["embedded"], metrics_after.pop("timing")["embedded"]
    assert metrics_after == metrics_before
    # every stage read from the cache, timed as when it was computed
    assert {s: (t["seconds"], t["cached"]) for s, t in timing_after.items()} == \
        {s: (t["seconds"], True) for s, t in timing_before.items()}
    # --force recomputes (checked on the cheapest stage); a different preset misses the cache.
    assert main(["profile", "--preset", "fast", "--n-examples", str(N_IMAGES), "--out", str(out), "--only",
                 "clean_accuracy", "--force", "--quiet"]) == 0
    assert (out / "cache" / "embedded" / "clean_accuracy.pt").stat().st_mtime_ns != before[
        out / "cache" / "embedded" / "clean_accuracy.pt"]


@pytest.mark.parametrize("args, expected", [
    (["--model", "Standrd"], "unknown model 'Standrd'"),
    (["--model", "Standard", "--model-dir", "{tmp}/models"], "not found"),
    (["--dataset", "cifar11"], "unknown --dataset 'cifar11'"),
    (["--out", "{tmp}/a-file/report"], "cannot write the report"),
    (["--preset", "slow"], "invalid choice: 'slow'"),
])
def test_bad_arguments_exit_with_one_line(args, expected, tmp_path, capsys, monkeypatch, no_network):
    monkeypatch.setenv("FREQPLUG_OFFLINE", "1")
    (tmp_path / "a-file").write_text("not a folder")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    try:
        code = main(["profile", "--out", str(tmp_path / "out"), "--quiet", *args])
    except SystemExit as exit_:  # argparse's own errors (bad --preset choice)
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_argument_as_a_real_process(tmp_path):
    env = dict(os.environ, FREQPLUG_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "freqplug", "profile", "--dataset", "cifar11", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "Traceback" not in done.stderr
    assert "unknown --dataset" in done.stderr


def _free_port() -> int:
    # A fixed port collides with any other run of this test on the machine.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_equals_single_process(fast_report, tmp_path):
    # The command line under torchrun; every stage's equality under 2 and 3 processes is
    # tests/test_profile_distributed.py (in-process spawn, smaller settings).
    out = tmp_path / "dist"
    checked = ("clean_accuracy", "frequency_bias", "hf_attack")
    assert set(checked) <= set(SHARDED_STAGES)
    only = [a for stage in checked for a in ("--only", stage)]
    env = dict(os.environ, OMP_NUM_THREADS="1", FREQPLUG_DIST_BACKEND="gloo")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), "-m", "freqplug", "profile", "--preset", "fast",
                           "--n-examples", str(N_IMAGES), "--quiet", "--out", str(out), *only],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    single = json.loads((fast_report / "metrics.json").read_text())["models"]["embedded"]
    sharded = json.loads((out / "metrics.json").read_text())["models"]["embedded"]
    assert set(sharded) == set(checked)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["provenance"]["world_size"] == 2
    for stage in checked:
        assert min(metrics["timing"]["embedded"][stage]["evaluations_per_rank"]) > 0, stage
        for key, value in single[stage].items():
            if isinstance(value, (str, bool)) or value is None:
                assert sharded[stage][key] == value, (stage, key)
            else:
                assert sharded[stage][key] == pytest.approx(value, rel=1e-5, abs=1e-9), (stage, key)


@pytest.mark.slow
def test_several_models_get_a_comparison_table_and_overlaid_curves(cifar_samples, tmp_path):
    from helpers import tiny_cnn

    from freqplug.report import profile

    x, y = cifar_samples[0][:4], cifar_samples[1][:4]
    models = {f"tiny{seed}": tiny_cnn(num_classes=10, seed=seed, dtype=torch.float32) for seed in (0, 1)}
    cheap = {stage: {"players": 3} for stage in ("masked_noise", "frequency_shapley", "classwise")}  # no XGBoost fit
    result = profile(models, x, y, out=tmp_path, preset="fast", quiet=True, overrides=cheap)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Comparison" in markdown and "| measure | tiny0 | tiny1 |" in markdown
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["models"]) == {"tiny0", "tiny1"}
    assert metrics["models"]["tiny0"]["band_shapley"]["psi"] != metrics["models"]["tiny1"]["band_shapley"]["psi"]
    for stage in STAGES:
        assert stage in result.metrics["models"]["tiny1"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in tmp_path.glob("*.png"))


@pytest.mark.slow
def test_estimated_cost_matches_the_counted_evaluations(fast_report):
    """The forward hook of profile() counted every stage's model evaluations: an exact estimate equals the count,
    an upper bound (attacks stop early) is not below it."""
    from freqplug.report import estimate_cost

    timing = json.loads((fast_report / "metrics.json").read_text())["timing"]["embedded"]
    estimate = estimate_cost("fast", n_images=N_IMAGES, image_shape=(3, 32, 32), num_classes=10)
    assert set(estimate.rows) == set(STAGES)
    for stage, row in estimate.rows.items():
        counted = timing[stage]["evaluations"]
        if row["exact"]:
            assert counted == row["evaluations"], stage
        else:
            assert 0 < counted <= row["evaluations"], stage


def test_profile_estimate_prints_the_cost_table_without_loading_anything(capsys, monkeypatch):
    import freqplug.cli as cli

    def no_loading(*args, **kwargs):
        raise AssertionError("--estimate must not load a model or data")

    monkeypatch.setattr(cli, "_load_models", no_loading)
    monkeypatch.setattr(cli, "_load_data", no_loading)
    assert main(["profile", "--estimate", "--preset", "gpu", "--dataset", "imagenet", "--n-examples", "5000",
                 "--only", "clean_accuracy", "--only", "occluded_frequency"]) == 0
    out = capsys.readouterr().out
    assert "5000 images of 3x224x224, 1000 classes" in out
    assert re.search(r"clean_accuracy\s+5,000\s", out)
    assert "autoattack" not in out and "total per model" in out


@pytest.mark.parametrize("shard_size, busiest", [(None, 2), ("4", 4)])
def test_shard_size_option_sets_the_units(shard_size, busiest, capsys, monkeypatch):
    from freqplug.cli import build_parser, profile_arguments

    monkeypatch.setenv("WORLD_SIZE", "2")
    extra = [] if shard_size is None else ["--shard-size", shard_size]
    assert main(["profile", "--estimate", "--preset", "fast", "--n-examples", "4", "--only", "clean_accuracy",
                 *extra]) == 0
    # 4 images on 2 processes: units of 1 (the fast preset) split 2 + 2, one unit of 4 lands on one rank
    assert re.search(rf"clean_accuracy\s+4\s+{busiest}\s", capsys.readouterr().out)
    args = build_parser().parse_args(["profile", *extra])
    kwargs = profile_arguments(args, {}, type("Data", (), {"x": None, "y": None, "source": None})())
    assert kwargs["overrides"] == (None if shard_size is None else {"shard_size": 4})


def test_estimate_counts_the_models_of_a_models_file(tmp_path, capsys):
    zoo = tmp_path / "zoo.txt"
    zoo.write_text("# three models\nembedded\nStandard\n\nWong2020Fast\n")
    assert main(["profile", "--estimate", "--preset", "fast", "--only", "clean_accuracy", "--models-file",
                 str(zoo)]) == 0
    assert "3 models: 60 model evaluations" in capsys.readouterr().out  # 20 sample images x 3 models
    assert main(["profile", "--estimate", "--models-file", str(tmp_path / "missing.txt")]) == 2
    assert "--models-file" in capsys.readouterr().err
