"""`freqplug` command line: parse-time validation, order of the checks, one-line errors, what is passed to
freqplug.profile. Loading itself is tested in test_cli_loaders.py."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.cli import write_class_folders, write_module

import freqplug
from freqplug.cli import build_parser, main, profile_arguments
from freqplug.data import CIFAR10_CLASSES, load_data
from freqplug.models import THREAT_MODELS, load_model_spec
from freqplug.report import STAGES

PROFILE_HAS_NEW_KEYWORDS = {"threat_model", "eps", "metadata"} <= set(inspect.signature(freqplug.profile).parameters)
needs_profile_keywords = pytest.mark.skipif(
    not PROFILE_HAS_NEW_KEYWORDS,
    reason="freqplug.profile(threat_model=, eps=, metadata=) comes from the report branch")


def _run(args, capsys):
    """main([...]) -> (exit code, stderr); argparse's own errors exit through SystemExit."""
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip()


def _parse(*args):
    return build_parser().parse_args(["profile", *args])


@pytest.mark.parametrize("args, expected", [
    (["--threat-model", "L3"], "argument --threat-model: invalid choice: 'L3'"),
    (["--threat-model", "linf"], "invalid choice: 'linf'"),
    (["--seed", "1.7"], "argument --seed: must be a non-negative integer, got '1.7'"),
    (["--seed", "-1"], "argument --seed: must be a non-negative integer"),
    (["--seed", str(2**63)], "argument --seed: must be a non-negative integer below 2**63"),
    (["--eps", "0"], "argument --eps: must be a positive finite number"),
    (["--eps", "nan"], "argument --eps: must be a positive finite number"),
    (["--eps", "inf"], "argument --eps: must be a positive finite number"),
    (["--eps", "-0.5"], "argument --eps: must be a positive finite number"),
    (["--eps", "8/0"], "argument --eps: must be a positive number"),
    (["--eps", "eight"], "argument --eps: must be a positive number"),
    (["--n-examples", "0"], "argument --n-examples: must be a positive integer"),
    (["--n-examples", "2.5"], "argument --n-examples: must be a positive integer"),
    (["--dataset", "cifar11"], "unknown --dataset 'cifar11'"),
    (["--only", "clean_acc"], "argument --only: invalid choice: 'clean_acc'"),
    (["--skip", "nope"], "argument --skip: invalid choice: 'nope'"),
])
def test_bad_values_are_refused_at_parse_time_in_one_line(args, expected, tmp_path, capsys):
    code, err = _run(["profile", "--out", str(tmp_path / "out"), *args], capsys)
    assert code == 2
    assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything happened


def test_eps_with_a_corruptions_threat_model_is_refused(tmp_path, capsys):
    code, err = _run(["profile", "--threat-model", "corruptions", "--eps", "0.1", "--out", str(tmp_path / "o")],
                     capsys)
    assert code == 2 and err == ("freqplug profile: error: --eps applies to the Linf and L2 threat models, not to "
                                 "'corruptions'")


def test_smoke_radii_are_checked():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["smoke", "--radii", "8", "nan"])
    assert build_parser().parse_args(["smoke", "--radii", "8", "4.5"]).radii == [8.0, 4.5]


def test_good_values_are_parsed():
    args = _parse("--threat-model", "L2", "--eps", "8/255", "--seed", "3", "--n-examples", "7")
    assert (args.threat_model, args.eps, args.seed, args.n_examples) == ("L2", 8 / 255, 3, 7)
    assert _parse("--eps", "0.5").eps == 0.5
    defaults = _parse()
    assert (defaults.threat_model, defaults.eps, defaults.seed) == ("Linf", None, 0)


def test_choices_come_from_the_registries():
    parser = build_parser()
    profile = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "profile")[1]
    actions = {a.dest: a for a in profile._actions}
    assert tuple(actions["only"].choices) == tuple(STAGES) == tuple(actions["skip"].choices)
    assert tuple(actions["threat_model"].choices) == THREAT_MODELS
    from freqplug.cli import _STAGES  # the old name, kept: now read from the report's registry

    assert _STAGES == tuple(STAGES)


def test_out_is_checked_before_any_model_or_data_is_loaded(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "model-was-built"
    write_module(tmp_path, "cli_nets_marker", f"""
        import pathlib

        import torch


        def build():
            pathlib.Path({str(marker)!r}).write_text("built")
            return torch.nn.Linear(2, 2)
        """)
    (tmp_path / "a-file").write_text("not a folder")
    data_dir = tmp_path / "data"
    write_class_folders(data_dir, torch.rand(1, 3, 8, 8), torch.tensor([0]), names=CIFAR10_CLASSES)
    (data_dir / "airplane" / "000.png").write_bytes(b"corrupt")  # would fail loudly if read first
    code, err = _run(["profile", "--model", "cli_nets_marker:build", "--data-dir", str(data_dir),
                      "--out", str(tmp_path / "a-file" / "report")], capsys)
    assert code == 2 and "cannot write the report" in err and len(err.splitlines()) == 1
    assert not marker.exists()
    sys.modules.pop("cli_nets_marker", None)


def test_corrupt_image_in_data_dir_is_one_line_naming_the_file(tmp_path, capsys, cifar_samples):
    x, y = cifar_samples
    write_class_folders(tmp_path / "data", x[:3], y[:3], names=CIFAR10_CLASSES)
    (tmp_path / "data" / "cat" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code, err = _run(["profile", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("freqplug profile: error: cannot read image file") and "bad.jpg" in err


def test_unknown_class_folder_is_one_line_listing_the_expected_names(tmp_path, capsys, cifar_samples):
    x, y = cifar_samples
    write_class_folders(tmp_path / "data", x[:2], torch.tensor([0, 1]), names=["airplane", "kitty"])
    code, err = _run(["profile", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "['kitty'] are not classes of dataset 'cifar10'; expected airplane, automobile, bird" in err
    (tmp_path / "classes.json").write_text(json.dumps({"airplane": 0, "kitty": 3}))
    args = _parse("--data-dir", str(tmp_path / "data"), "--classes", str(tmp_path / "classes.json"))
    from freqplug.cli import _load_data

    assert _load_data(args).source["class_to_index"] == {"airplane": 0, "kitty": 3}
    (tmp_path / "classes.txt").write_text("airplane\nkitty\n")
    args = _parse("--data-dir", str(tmp_path / "data"), "--classes", str(tmp_path / "classes.txt"))
    assert _load_data(args).source["class_to_index"] == {"airplane": 0, "kitty": 1}
    code, err = _run(["profile", "--data-dir", str(tmp_path / "data"), "--classes", str(tmp_path / "nope.json"),
                      "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "--classes" in err and "is not a file" in err


def test_profile_arguments_carry_threat_model_eps_and_the_sources(tmp_path, cifar_samples):
    x, y = cifar_samples
    write_class_folders(tmp_path / "data", x, y, names=CIFAR10_CLASSES)
    args = _parse("--data-dir", str(tmp_path / "data"), "--threat-model", "L2", "--eps", "0.25", "--seed", "4",
                  "--only", "clean_accuracy", "--out", str(tmp_path / "out"))
    data = load_data(args.data_dir, dataset="cifar10")
    models = {"embedded": load_model_spec("embedded")}
    kwargs = profile_arguments(args, models, data)
    assert kwargs["threat_model"] == "L2" and kwargs["eps"] == 0.25 and kwargs["seed"] == 4
    assert kwargs["stages"] == ["clean_accuracy"] and kwargs["out"] == tmp_path / "out"
    assert kwargs["model"] == {"embedded": models["embedded"].model}
    assert torch.equal(kwargs["x"], data.x) and torch.equal(kwargs["y"], data.y)
    metadata = json.loads(json.dumps(kwargs["metadata"]))  # JSON-able as it is
    assert metadata["data"]["kind"] == "image_folder" and metadata["data"]["class_to_index"]["cat"] == 3
    assert metadata["models"]["embedded"]["kind"] == "embedded"
    # every keyword is one freqplug.profile takes (threat_model/eps/metadata once the report branch is in)
    known = set(inspect.signature(freqplug.profile).parameters) | {"threat_model", "eps", "metadata"}
    assert set(kwargs) <= known


def _entry_script(folder: Path) -> Path:
    """A console-script stand-in: sys.path[0] is the script's folder, NOT the current folder (as for the
    `freqplug` command that pip installs), unlike `python -m freqplug`."""
    script = folder / "bin" / "freqplug_entry.py"
    script.parent.mkdir()
    script.write_text("import sys\nfrom freqplug.cli import main\nsys.exit(main())\n")
    return script


@pytest.mark.slow
def test_module_callable_from_the_current_folder_under_the_console_script(tmp_path):
    write_module(tmp_path, "mynets", """
        import torch


        def build_model():
            return torch.nn.Linear(3, 2)
        """)
    env = dict(os.environ, PYTHONPATH=str(Path(freqplug.__file__).parents[1]), FREQPLUG_OFFLINE="1",
               OMP_NUM_THREADS="1")
    # Given twice: both specs are imported and built, then the duplicate stops the run before any profiling.
    done = subprocess.run([sys.executable, str(_entry_script(tmp_path)), "profile", "--model", "mynets:build_model",
                           "--model", "mynets:build_model", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and done.stderr.strip() == (
        "freqplug profile: error: --model 'mynets:build_model' is given twice"), done.stderr


@needs_profile_keywords
def test_end_to_end_named_folders_give_the_true_accuracy_and_record_the_mapping(tmp_path, cifar_samples, capsys):
    x, y = cifar_samples
    write_class_folders(tmp_path / "data", x, y, names=CIFAR10_CLASSES)
    out = tmp_path / "out"
    assert main(["profile", "--preset", "fast", "--only", "clean_accuracy", "--data-dir", str(tmp_path / "data"),
                 "--threat-model", "L2", "--eps", "0.5", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["embedded"]["clean_accuracy"]["accuracy"] == 1.0  # 0.20 with positional labels
    assert metrics["metadata"]["data"]["class_to_index"] == {
        name: i for i, name in enumerate(CIFAR10_CLASSES) if i in y.tolist()}
    assert metrics["metadata"]["models"]["embedded"]["kind"] == "embedded"


def test_off_a_terminal_profile_logs_one_line_per_stage_and_no_progress_bars(tmp_path, capsys):
    import logging

    handlers = list(logging.getLogger("freqplug").handlers)
    code, err = _run(["profile", "--only", "clean_accuracy", "--only", "frequency_bias", "--n-examples", "4",
                      "--preset", "fast", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("freqplug profile: model")]
    assert [line.split("stage ")[1].split(":")[0] for line in lines] == ["clean_accuracy", "frequency_bias"], err
    assert logging.getLogger("freqplug").handlers == handlers  # the command's handler is gone afterwards
    code, err = _run(["profile", "--only", "clean_accuracy", "--n-examples", "4", "--preset", "fast", "--force",
                      "--quiet", "--out", str(tmp_path / "out")], capsys)
    assert code == 0 and "stage clean_accuracy" not in err, err
