"""The report a researcher can cite: every registered stage's figure is labelled (titles, axis labels,
labelled colorbars, legends for several series, no empty panel), metrics.json and the footer record seed,
versions, backend, device, dtype, wall times and settings, and a run whose stderr is not a terminal logs
one line per stage instead of drawing progress bars."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re

import pytest
import torch
from helpers import linear_model, tiny_cnn

from freqplug.report import profile, stages
from freqplug.report.plots import PlotView
from freqplug.report.render import write_report

pytest.importorskip("matplotlib")

#: The smallest settings that still run every built-in stage for real.
TINY = {"autoattack": {"n_iter": 2}, "masked_noise": {"n_images": 3, "pgd_steps": 2, "players": 2, "n_samples": 2},
        "band_shapley": {"num_bands": 2}, "frequency_shapley": {"n_images": 2, "players": 4, "n_samples": 2},
        "hf_attack": {"step": 4.0}, "occluded_frequency": {"ring_width": 8}}


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _logged():
    handler, logger = _Records(), logging.getLogger("freqplug.report")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def tiny_report(cifar_samples, tmp_path_factory):
    """Two tiny networks through every stage on 4 CIFAR-10 images, stderr a StringIO (not a terminal)."""
    x = cifar_samples[0][:4]
    # "a": a linear model, which APGD breaks in 2 iterations (so the perturbation spectrum has something to show)
    models = {"a": linear_model(3, 32, 32, num_classes=10, dtype=torch.float32),
              "b": tiny_cnn(num_classes=10, seed=1, dtype=torch.float32)}
    with torch.no_grad():  # labels the untrained net "a" gets right, so the attacks have something to perturb
        y = models["a"](x).argmax(1)
    stderr = io.StringIO()
    with _logged() as messages, contextlib.redirect_stderr(stderr):
        result = profile(models, x, y, out=None, preset="fast", overrides=TINY, seed=3)
    # The documents with two cheap plots only: rendering every figure to PNG costs more than all the stages.
    out = tmp_path_factory.mktemp("tiny-report")
    write_report(type(result)(metrics=dict(result.metrics, stages=["clean_accuracy", "autoattack"]),
                              arrays=result.arrays), out, dpi=30)
    return {"result": result, "out": out, "stderr": stderr.getvalue(), "log": messages, "y": y, "x": x}


def _is_photo(ax) -> bool:
    return bool(ax.images) and ax.images[0].get_array().ndim == 3


def _check_figure(figure, stage: str):
    colorbar_axes = {image.colorbar.ax for ax in figure.axes for image in ax.images if image.colorbar is not None}
    panels = [ax for ax in figure.axes if ax not in colorbar_axes]
    assert panels, f"{stage}: no panel"
    for ax in panels:
        where = f"{stage} panel {ax.get_title()!r}"
        assert ax.get_title(), f"{stage}: a panel without a title"
        assert ax.has_data() or ax.texts, f"{where} is empty"
        if _is_photo(ax):  # image, PFC, NFC: pictures, titled
            continue
        assert ax.get_xlabel() and ax.get_ylabel(), f"{where} lacks an axis label"
        for image in ax.images:
            assert image.colorbar is not None and image.colorbar.ax.get_ylabel(), f"{where}: heatmap without a " \
                                                                                   "labelled colorbar"
        series = [line for line in ax.get_lines() if not line.get_label().startswith("_")] + \
            [c for c in ax.containers if not str(c.get_label()).startswith("_")]
        if len(series) > 1:
            assert ax.get_legend() is not None, f"{where} has {len(series)} series and no legend"


def test_every_registered_stage_plot_is_labelled(tiny_report):
    result = tiny_report["result"]
    drawn = []
    for stage in stages.registered():
        if stage.plot is None or stage.name not in result.metrics["stages"]:
            continue
        names = [n for n in result.metrics["models"] if "skipped" not in result.metrics["models"][n][stage.name]]
        view = PlotView(names=names, metrics={n: result.metrics["models"][n][stage.name] for n in names},
                        arrays={n: result.arrays[n][stage.name] for n in names}, settings=result.metrics["settings"])
        figure = stage.plot(view)
        assert figure is not None, stage.name
        _check_figure(figure, stage.name)
        drawn.append(stage.name)
    assert set(drawn) == {s.name for s in stages.registered() if s.plot is not None}


def test_metrics_json_records_what_a_reader_needs_to_reproduce_the_run(tiny_report):
    metrics = json.loads((tiny_report["out"] / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(tiny_report["result"].metrics, default=str)) | {"stages": metrics["stages"]}
    metrics["stages"] = tiny_report["result"].metrics["stages"]
    assert metrics["schema_version"] == 3 and metrics["seed"] == 3
    assert metrics["settings"]["masked_noise"] == {"n_images": 3, "pgd_steps": 2, "players": 2, "n_samples": 2}
    provenance = metrics["provenance"]
    versions = provenance["versions"]
    import captum
    import torchattacks

    import freqplug

    assert versions["freqplug"] == freqplug.__version__ and versions["torch"] == torch.__version__
    assert versions["captum"] == captum.__version__ and versions["torchattacks"] == torchattacks.__version__
    assert {"robustbench", "autoattack", "pyautoattack", "python"} <= set(versions)
    backends = {n: metrics["models"][n]["autoattack"]["backend"] for n in ("a", "b")}
    assert provenance["autoattack_backend"] == backends and all(backends.values())
    assert provenance["device"] == {"a": "cpu", "b": "cpu"} and provenance["dtype"] == {"a": "float32", "b": "float32"}
    for name in ("a", "b"):
        assert list(metrics["timing"][name]) == metrics["stages"]
        assert all(entry["seconds"] >= 0 and entry["cached"] is False for entry in metrics["timing"][name].values())
    html = (tiny_report["out"] / "report.html").read_text()
    markdown = (tiny_report["out"] / "report.md").read_text()
    footer = html[html.index('<footer id="reproducibility">'):]
    for text in ("seed: 3", f"captum {captum.__version__}", f"AutoAttack backend: a: {backends['a']}",
                 "device: a: cpu, b: cpu", "dtype: a: float32", "Exact settings", "pgd_steps"):
        assert text in footer, text
        assert text.replace("Exact settings", "Exact settings:") in markdown, text
    assert "<td>autoattack</td>" in footer and "<td>total</td>" in footer


def test_a_cached_rerun_says_so_in_the_timing(tiny_report, tmp_path):
    x, y = tiny_report["x"], tiny_report["y"]
    models = {"a": linear_model(3, 32, 32, num_classes=10, dtype=torch.float32)}
    first = profile(models, x, y, out=tmp_path, preset="fast", stages=["clean_accuracy"], quiet=True)
    rerun = profile(models, x, y, out=tmp_path, preset="fast", stages=["clean_accuracy"], quiet=True)
    assert first.metrics["timing"]["a"]["clean_accuracy"]["cached"] is False
    assert rerun.metrics["timing"]["a"]["clean_accuracy"]["cached"] is True
    # a cached stage reports the wall time of the run that computed it
    assert rerun.metrics["timing"]["a"]["clean_accuracy"]["seconds"] == \
        first.metrics["timing"]["a"]["clean_accuracy"]["seconds"]
    assert re.search(r"\| clean_accuracy \| [0-9.]+ c \|", (tmp_path / "report.md").read_text())


def test_no_progress_bar_in_a_log_file_one_line_per_stage_instead(tiny_report):
    assert "\r" not in tiny_report["stderr"]
    stage_lines = [m for m in tiny_report["log"] if m.startswith("freqplug profile: model ")]
    expected = [f"model {n}, stage {s}:" for n in ("a", "b") for s in tiny_report["result"].metrics["stages"]]
    assert len(stage_lines) == len(expected)
    assert all(e in line for e, line in zip(expected, stage_lines))


def test_forced_progress_bars_draw_even_without_a_terminal(cifar_samples):
    # the check above can fail: the same redirected stderr receives carriage returns when bars are forced
    x, y = cifar_samples[0][:2], cifar_samples[1][:2]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        profile(tiny_cnn(num_classes=10, dtype=torch.float32), x, y, out=None, stages=["clean_accuracy"],
                progress=True)
    assert "\r" in stderr.getvalue()
    with pytest.raises(TypeError, match="`progress`"):
        profile(tiny_cnn(num_classes=10, dtype=torch.float32), x, y, out=None, stages=["clean_accuracy"],
                progress="yes")


def test_old_metrics_without_provenance_still_render(tiny_report, tmp_path):
    result = tiny_report["result"]
    old = dict(result.metrics, stages=["clean_accuracy", "masked_noise"])
    for key in ("provenance", "timing", "seed"):
        old.pop(key)
    files = write_report(type(result)(metrics=old, arrays=result.arrays), tmp_path, dpi=30)
    assert "reproducibility" not in files["report.html"].read_text()

