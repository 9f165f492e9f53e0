"""A zoo run (issue 13): ``freqplug profile --models-file``, lazily loaded models, resuming a killed run,
``--distribute models`` under torchrun, and the refusals of bad zoo arguments."""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import time
import weakref

import pytest
import torch
from helpers import tiny_cnn
from helpers.zoo import ARGS, SPECS, command, env, run, run_here, slug, write_zoo

from freqplug.cli import main
from freqplug.report import profile


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The tiny zoo's folder and the metrics.json of an uninterrupted single-process run (in this process)."""
    folder = write_zoo(tmp_path_factory.mktemp("zoo"))
    return folder, run_here(folder, "whole")


def _cache_files(out):
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted((out / "cache").rglob("*.pt"))}


@pytest.mark.slow
def test_a_killed_zoo_run_resumes_and_recomputes_nothing_finished(zoo):
    folder, whole = zoo
    out = folder / "killed"
    stall = folder / "stall"
    stall.write_text("")
    # "stalling" (the 2nd model) finishes clean_accuracy, then waits in frequency_bias until it is killed.
    process = subprocess.Popen(command(*ARGS, "--out", "killed"), cwd=folder, env=env(ZOO_STALL=str(stall)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = out / "cache" / slug(SPECS[1]) / "clean_accuracy.pt"
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists() and process.poll() is None, process.stderr.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    process.stderr.close()
    stall.unlink()
    assert not (out / "metrics.json").exists()
    assert (out / "models" / slug(SPECS[0]) / "metrics.json").exists()  # the finished model's report is there
    finished = _cache_files(out)
    assert sorted(finished) == sorted([f"cache/{slug(SPECS[0])}/clean_accuracy.pt",
                                       f"cache/{slug(SPECS[0])}/frequency_bias.pt",
                                       f"cache/{slug(SPECS[1])}/clean_accuracy.pt"])

    resumed = run_here(folder, "killed")  # the restart
    cached = {(name, stage) for name, timing in resumed["timing"].items() for stage, entry in timing.items()
              if entry["cached"]}
    assert cached == {(SPECS[0], "clean_accuracy"), (SPECS[0], "frequency_bias"), (SPECS[1], "clean_accuracy")}
    after = _cache_files(out)
    assert {path: after[path] for path in finished} == finished  # nothing finished was rewritten
    assert len(after) == 4
    assert resumed["models"] == whole["models"]
    assert list(resumed["models"]) == list(SPECS)
    for spec in SPECS:  # one report per model, with that model's numbers
        single = json.loads((out / "models" / slug(spec) / "metrics.json").read_text())
        assert list(single["models"]) == [spec] and single["models"][spec] == whole["models"][spec]
        assert (out / "models" / slug(spec) / "report.html").exists()


@pytest.mark.slow
def test_distribute_models_under_torchrun_gives_each_model_to_one_rank(zoo):
    folder, whole = zoo
    split = run(folder, "split", "--distribute", "models", processes=2, FREQPLUG_DIST_BACKEND="gloo")
    assert split["models"] == whole["models"]
    assert split["provenance"]["world_size"] == 2 and split["provenance"]["distribute"] == "models"
    # model 0 on group 0 (rank 0), model 1 on group 1 (rank 1); every evaluation of a model on its rank
    assert split["provenance"]["ranks"] == {SPECS[0]: [0], SPECS[1]: [1]}
    for spec in SPECS:
        for stage, entry in split["timing"][spec].items():
            assert not entry["cached"]
            assert entry["evaluations_per_rank"] == whole["timing"][spec][stage]["evaluations_per_rank"]
            assert len(entry["evaluations_per_rank"]) == 1 and entry["evaluations"] > 0
        single = json.loads((folder / "split" / "models" / slug(spec) / "metrics.json").read_text())
        assert single["models"][spec] == whole["models"][spec]


@pytest.mark.parametrize("text, extra, message", [
    (None, [], "--models-file 'zoo.txt' is not a file"),
    ("# nothing\n\n", [], "--models-file 'zoo.txt' lists no model"),
    ("embedded\n\n# twice\nembedded\n", [], "--models-file 'zoo.txt' line 4: model 'embedded' is already given "
                                            "(--models-file 'zoo.txt' line 1)"),
    ("embedded\n", ["--model", "embedded"], "--models-file 'zoo.txt' line 1: model 'embedded' is already given "
                                            "(--model 'embedded')"),
    ("embedded\n", ["--distribute", "models", "--ranks-per-model", "2"],
     "--ranks-per-model 2 must divide the number of processes (1)"),
    ("embedded\n", ["--ranks-per-model", "1"], "--ranks-per-model applies to --distribute models"),
])
def test_bad_zoo_arguments_are_one_line_errors(tmp_path, monkeypatch, capsys, text, extra, message):
    monkeypatch.chdir(tmp_path)
    if text is not None:
        (tmp_path / "zoo.txt").write_text(text)
    code = main(["profile", "--models-file", "zoo.txt", *extra, "--only", "clean_accuracy", "--out", "out"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("freqplug profile: error: " + message), err
    assert not (tmp_path / "out" / "cache").exists()


def test_a_bad_spec_in_the_models_file_is_refused_before_any_profiling(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zoo.txt").write_text("embedded\nno_such_module:build\n")
    assert main(["profile", "--models-file", "zoo.txt", "--only", "clean_accuracy", "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("freqplug profile: error: --models-file 'zoo.txt' line 2: ") and err.count("\n") == 1
    assert not (tmp_path / "out" / "cache").exists()


def test_lazy_models_are_loaded_one_at_a_time_and_released(cifar_samples):
    x, y = cifar_samples
    x, y = x[:4], y[:4]
    alive = []  # weak references to every model built so far
    seen_alive = []

    def loader(seed):
        def load():
            gc.collect()
            seen_alive.append(sum(ref() is not None for ref in alive))
            model = tiny_cnn(num_classes=10, seed=seed, dtype=torch.float32)
            alive.append(weakref.ref(model))
            return model
        return load

    lazy = profile({"a": loader(0), "b": loader(1)}, x, y, out=None, preset="fast", stages=["clean_accuracy"],
                   quiet=True)
    assert seen_alive == [0, 0]  # when b is loaded, a is gone
    gc.collect()
    assert all(ref() is None for ref in alive)
    eager = profile({"a": tiny_cnn(num_classes=10, seed=0, dtype=torch.float32),
                     "b": tiny_cnn(num_classes=10, seed=1, dtype=torch.float32)}, x, y, out=None, preset="fast",
                    stages=["clean_accuracy"], quiet=True)
    assert lazy.metrics["models"] == eager.metrics["models"]


def test_profile_refuses_bad_zoo_arguments(cifar_samples):
    x, y = cifar_samples
    net = tiny_cnn(num_classes=10, dtype=torch.float32)
    kwargs = dict(out=None, preset="fast", stages=["clean_accuracy"], quiet=True)
    with pytest.raises(TypeError, match=r"`model` 'a' is a loader; it must return a torch.nn.Module, it returned int"):
        profile({"a": lambda: 3}, x, y, **kwargs)
    with pytest.raises(TypeError, match=r"`model` 'a' must be a torch.nn.Module or a zero-argument callable"):
        profile({"a": 3}, x, y, **kwargs)
    with pytest.raises(ValueError, match=r"`model` names 'a/b' and 'a_b' map to the same folder name 'a_b'"):
        profile({"a/b": net, "a_b": net}, x, y, **kwargs)
    with pytest.raises(ValueError, match=r"`distribute`"):
        profile(net, x, y, distribute="gpus", **kwargs)
    with pytest.raises(ValueError, match=r"`ranks_per_model` must divide the number of processes \(1\), got 2"):
        profile(net, x, y, distribute="models", ranks_per_model=2, **kwargs)
    with pytest.raises(ValueError, match=r"`ranks_per_model` \(2\) applies to distribute='models'"):
        profile(net, x, y, ranks_per_model=2, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_device_cuda_under_torchrun_means_this_process_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOCAL_RANK", "1")  # as torchrun sets it for the second process of a node
    code = main(["profile", "--device", "cuda", "--only", "clean_accuracy", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("freqplug profile: error: --device 'cuda:1' is not usable here"), err


def test_cache_dir_is_shared_between_runs_and_model_reports_are_written(tmp_path, cifar_samples):
    x, y = cifar_samples
    x, y = x[:4], y[:4]
    kwargs = dict(preset="fast", stages=["clean_accuracy"], quiet=True, cache_dir=tmp_path / "cache")
    first = profile({"a/1": lambda: tiny_cnn(num_classes=10, dtype=torch.float32)}, x, y, out=None, **kwargs)
    assert (tmp_path / "cache" / "a_1" / "clean_accuracy.pt").exists() and first.cached == {"a/1": []}
    second = profile({"a/1": lambda: tiny_cnn(num_classes=10, dtype=torch.float32)}, x, y, out=tmp_path / "report",
                     model_reports=True, **kwargs)
    assert second.cached == {"a/1": ["clean_accuracy"]} and not (tmp_path / "report" / "cache").exists()
    assert second.metrics["models"] == first.metrics["models"]
    single = json.loads((tmp_path / "report" / "models" / "a_1" / "metrics.json").read_text())
    assert single["models"] == first.metrics["models"] and single["timing"]["a/1"]["clean_accuracy"]["cached"]
