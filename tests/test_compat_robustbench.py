"""The autoattack compatibility layer and RobustBench from a registry install, offline.

Real robustbench 1.1.1 code throughout: its ``import``, ``eval.benchmark`` (ImageNet loader
on a folder built here from foolbox's 20 real ImageNet images), ``utils.load_model`` on a
model-zoo architecture saved here, and the ``autoattack`` calls it makes.
"""

import ast
import importlib
import importlib.util
import json
import shutil
import sys
import warnings
from pathlib import Path

import helpers
import pytest
from helpers.eval import BLOCK_OFFICIAL_AUTOATTACK, official_autoattack_installed
import torch
from torch import nn

import freqplug
import freqplug.compat
import freqplug.eval
from freqplug.compat import (
    CheckpointNotFoundError,
    checkpoint_paths,
    install_autoattack,
    is_shim,
    load_model,
)


@pytest.fixture(scope="module")
def robustbench():
    install_autoattack()
    return importlib.import_module("robustbench")


def tiny_cnn():
    return helpers.tiny_cnn(num_classes=10, dtype=torch.float32)


def test_install_is_idempotent_and_makes_robustbench_importable(robustbench):
    """Either state: with the official package installed it is what robustbench imports (never shadowed);
    without it, freqplug's shim (the subprocess test below covers that state whatever is installed)."""
    first = install_autoattack()
    assert install_autoattack() is first is sys.modules["autoattack"]
    assert is_shim(first) is (not official_autoattack_installed())
    import robustbench.eval as rb_eval
    from autoattack import AutoAttack
    from autoattack.state import EvaluationState

    assert rb_eval.AutoAttack is AutoAttack and rb_eval.EvaluationState is EvaluationState
    assert callable(robustbench.benchmark) and callable(robustbench.load_model)


def test_a_real_autoattack_install_is_not_shadowed(tmp_path, monkeypatch):
    saved = {name: module for name, module in sys.modules.items()
             if name == "autoattack" or name.startswith("autoattack.")}
    package = tmp_path / "site" / "autoattack"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("OFFICIAL = True\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in saved:  # the shim or the official package, put back below
        del sys.modules[name]
    try:
        importlib.invalidate_caches()
        module = install_autoattack()
        assert getattr(module, "OFFICIAL", False) and not is_shim(module)
        assert install_autoattack() is module  # idempotent with a real install too
        assert not freqplug.compat.uninstall_autoattack()  # never removes a real install
    finally:
        for name in [n for n in sys.modules if n == "autoattack" or n.startswith("autoattack.")]:
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.mark.slow
def test_official_api_calls_behave_as_documented(robustbench, cifar_samples, tmp_path, capsys):
    """The shim's classes themselves (what `import autoattack` gives when the official package is absent)."""
    from freqplug.compat.autoattack import AutoAttack, _shim_state_class

    EvaluationState = _shim_state_class()

    model = tiny_cnn()
    x = cifar_samples[0][:8]
    with torch.no_grad():
        y = model(x).argmax(1)
    with pytest.raises(ValueError, match="attacks_to_run will be overridden"):
        AutoAttack(model, norm="Linf", eps=2 / 255, version="standard", attacks_to_run=["apgd-ce"])
    log_path = tmp_path / "log.txt"
    adversary = AutoAttack(model, norm="Linf", eps=2 / 255, version="custom", attacks_to_run=["apgd-ce"],
                           device="cpu", log_path=str(log_path), seed=0)
    assert adversary.apgd.n_restarts == 5  # the official default of a custom run, on pyautoattack's object
    adversary.apgd.n_restarts = 1  # official users tune the attack objects like this
    adversary.apgd.n_iter = 4
    # Without return_labels: one tensor (robustbench relies on it).
    x_adv = adversary.run_standard_evaluation(x, y, bs=5)
    assert isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape
    assert "robust accuracy" in capsys.readouterr().out  # verbose=True prints, as officially
    assert "initial accuracy" in log_path.read_text()
    # With return_labels: (x_adv, y_adv), y_adv the predictions on x_adv.
    x_adv2, y_adv = adversary.run_standard_evaluation(x, y, bs=5, return_labels=True)
    assert torch.equal(x_adv2, x_adv)
    with torch.no_grad():
        assert torch.equal(y_adv, model(x_adv).argmax(1))
    # state_path as robustbench passes it; robustbench then reads robust_flags back.
    state_path = tmp_path / "state.json"
    adversary.run_standard_evaluation(x, y, bs=5, state_path=state_path)
    assert torch.equal(EvaluationState.from_disk(state_path).robust_flags.bool(), adversary.last_result.robust)
    individual = adversary.run_standard_evaluation_individual(x, y, bs=8)
    assert list(individual) == ["apgd-ce"] and isinstance(individual["apgd-ce"], torch.Tensor)
    labelled = adversary.run_standard_evaluation_individual(x, y, bs=8, return_labels=True)
    assert isinstance(labelled["apgd-ce"], tuple) and len(labelled["apgd-ce"]) == 2
    assert adversary.clean_accuracy(x, y, bs=8) == 1.0
    with pytest.raises(NotImplementedError, match="is_tf_model"):
        AutoAttack(model, is_tf_model=True)
    adversary.attacks_to_run = ["pgd"]
    with pytest.raises(ValueError, match="Attack not supported"):
        adversary.run_standard_evaluation(x, y)


def _template_classifier(x, y, num_classes=1000, pool=8):
    """Small real classifier (pool -> linear) whose weight rows are the centred, normalised pooled
    images of their class: by Cauchy-Schwarz it classifies each of these images as its label."""
    features = nn.functional.adaptive_avg_pool2d(x, pool).flatten(1)
    mean = features.mean(0)
    rows = features - mean
    linear = nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[y] = rows / rows.norm(dim=1, keepdim=True)
        linear.bias.copy_(-(linear.weight @ mean))
    return nn.Sequential(nn.AdaptiveAvgPool2d(pool), nn.Flatten(), linear).eval()


_UNCHANGED_BENCHMARK = """
import inspect, json, socket, sys
import torch
from torch import nn

real_connect = socket.socket.connect


def connect(sock, address):  # no network; RobustBench's DataLoader workers talk over Unix sockets
    if sock.family == socket.AF_UNIX:
        return real_connect(sock, address)
    raise AssertionError(f"network access attempted: {address!r}")


socket.socket.connect = connect
from freqplug.compat import install_autoattack, is_shim

assert is_shim(install_autoattack())  # the official package is blocked: freqplug's stand-in
import robustbench.data, robustbench.eval
from torchvision import transforms

data_dir, state_path = sys.argv[1], sys.argv[2]
{template}
preprocessing = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
x, y = robustbench.data.load_imagenet(20, data_dir, preprocessing)
model = _template_classifier(x, y)
from freqplug.eval import AutoAttackRunner, available_backends

assert "autoattack" not in available_backends()  # the shim is not the official backend
try:
    AutoAttackRunner(model, backend="autoattack")
except ImportError as error:
    assert "git+https://github.com/fra31/auto-attack" in str(error), error
else:
    raise AssertionError("backend='autoattack' ran without the official package")
run = dict(n_examples=20, dataset="imagenet", threat_model="Linf", data_dir=data_dir, device=torch.device("cpu"),
           batch_size=20, eps=0.5, preprocessing=preprocessing, aa_state_path=state_path)
first = robustbench.eval.benchmark(model, **run)
second = robustbench.eval.benchmark(model, **run)  # resumed from the state file
print("RESULT", json.dumps([y.tolist(), first, second]))
"""


def _imagenet_folder(root):
    """RobustBench's ImageNet layout with foolbox's 20 real ImageNet images as the first 20 listed files."""
    from PIL import Image

    from freqplug.data import foolbox_data_dir

    package = Path(importlib.util.find_spec("robustbench").origin).parent
    wnid_to_index = json.loads((package / "helper_files" / "imagenet_class_to_id_map.json").read_text())
    listed = (package / "helper_files" / "imagenet_test_image_ids.txt").read_text().split()
    # RobustBench's ImageNet loader reads data_dir/val/<wnid>/<file> for the files of its fixed
    # list, in list order, and labels them by folder: every wnid folder must exist.
    val = root / "val"
    for wnid in wnid_to_index:
        (val / wnid).mkdir(parents=True)
    sources = sorted(foolbox_data_dir().glob("imagenet_*"))[:20]
    for source, relative in zip(sources, listed[:20], strict=True):
        Image.open(source).convert("RGB").save(val / relative, format="JPEG", quality=95)
    return [wnid_to_index[r.split("/")[0]] for r in listed[:20]]


@pytest.mark.slow
def test_unchanged_robustbench_benchmark_runs_on_the_shim_offline(tmp_path):
    """robustbench.eval.benchmark, unchanged, with freqplug's stand-in for the official package (blocked in a
    fresh interpreter, whatever is installed), on an ImageNet folder of 20 real images, no network, resumed."""
    import inspect
    import os
    import subprocess
    import textwrap

    labels = _imagenet_folder(tmp_path / "data")
    state_path = tmp_path / "aa_state.json"
    script = BLOCK_OFFICIAL_AUTOATTACK + textwrap.dedent(_UNCHANGED_BENCHMARK).replace(
        "{template}", inspect.getsource(_template_classifier))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(Path(freqplug.__file__).parents[1]),
                                                                   os.environ.get("PYTHONPATH", "")] if p)}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "data"), str(state_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    y, first, second = json.loads(done.stdout.split("RESULT", 1)[1])
    assert y == labels  # the shipped map
    # The template model is robust at small eps (then APGD-T, FAB-T and Square would all run,
    # minutes on CPU); at this eps APGD-CE breaks every point and, as in the official cascade,
    # the remaining attacks of the standard version are skipped.
    assert first == [1.0, 0.0] and second == first
    state = json.loads(state_path.read_text())
    assert state["_run_attacks"] == ["apgd-ce"] and not any(state["_robust_flags"])


@pytest.mark.slow
def test_load_model_from_local_checkpoint_offline(robustbench, tmp_path, no_network):
    import robustbench.utils
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    architecture = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]["Wong2020Fast"]["model"]
    torch.manual_seed(0)
    reference = architecture().eval()
    folder = tmp_path / "models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / "Wong2020Fast.pt")
    paths, _ = checkpoint_paths("Wong2020Fast", tmp_path / "models", "cifar10", "Linf")
    assert paths == [(folder / "Wong2020Fast.pt").resolve()]

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ours = load_model("Wong2020Fast", model_dir=tmp_path / "models", dataset="cifar10", threat_model="Linf",
                      download=False)
    theirs = robustbench.utils.load_model("Wong2020Fast", model_dir=str(tmp_path / "models"), dataset="cifar10",
                                          threat_model="Linf")
    assert not ours.training
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x)) and torch.equal(theirs(x), reference(x))


def test_missing_checkpoint_offline_gives_actionable_error(robustbench, tmp_path, no_network):
    folder = (tmp_path / "models" / "cifar10" / "Linf").resolve()
    # download=False: no network attempt at all (no_network would raise AssertionError).
    with pytest.raises(CheckpointNotFoundError) as info:
        load_model("Wong2020Fast", model_dir=tmp_path / "models", download=False)
    message = str(info.value)
    assert "Wong2020Fast.pt" in message and str(folder) in message and "offline" in message
    # download=True with the network unreachable: robustbench's download fails, same advice.
    with pytest.raises(CheckpointNotFoundError) as info:
        load_model("Wong2020Fast", model_dir=tmp_path / "models", download=True)
    assert str(folder / "Wong2020Fast.pt") in str(info.value) and "could not be downloaded" in str(info.value)
    assert not (folder / "Wong2020Fast.pt").exists()  # no empty file left behind


def test_offline_environment_variable(robustbench, tmp_path, no_network, monkeypatch):
    monkeypatch.setenv("FREQPLUG_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError, match="offline"):
        load_model("Wong2020Fast", model_dir=tmp_path / "models")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(model_name="Wong2020Fats"), ValueError, "did you mean \\['Wong2020Fast'\\]"),
    (dict(model_name="Wong2020Fast", dataset="cifar11"), ValueError, "`dataset` must be one of"),
    (dict(model_name="Wong2020Fast", threat_model="L3"), ValueError, "`threat_model` must be one of"),
    (dict(model_name="Wong2020Fast", download="no"), TypeError, "`download`"),
    (dict(model_name="Wong2020Fast", model_dir=3), TypeError, "`model_dir`"),
])
def test_load_model_bad_arguments(robustbench, tmp_path, no_network, kwargs, error, match):
    with pytest.raises(error, match=match):
        load_model(**kwargs)
    shutil.rmtree(tmp_path, ignore_errors=True)


MOVED = ("CheckpointNotFoundError", "benchmark", "checkpoint_paths", "load_model", "model_names")


@pytest.mark.parametrize("name", MOVED)
def test_old_eval_names_still_work_with_a_deprecation_warning(name):
    with pytest.warns(DeprecationWarning, match=f"freqplug.compat.{name}"):
        old = getattr(freqplug.eval, name)
    assert old is getattr(freqplug.compat, name)
    from freqplug.eval import robustbench as old_module

    with pytest.warns(DeprecationWarning, match="moved to freqplug.compat"):
        assert getattr(old_module, name) is getattr(freqplug.compat, name)
    with pytest.raises(AttributeError, match="no attribute 'load_modle'"):
        freqplug.eval.load_modle  # noqa: B018


def test_new_names_do_not_warn_and_eval_exports_none_of_the_moved_ones():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from freqplug.compat import benchmark, model_names  # noqa: F401
    assert not set(MOVED) & set(freqplug.eval.__all__)  # `from freqplug.eval import *` must not warn
    assert set(MOVED) <= set(freqplug.compat.__all__)


def test_eval_never_imports_compat_at_module_level():
    """Layering: compat -> eval only. A module-level import of compat anywhere in freqplug/eval fails."""
    folder = Path(freqplug.eval.__file__).parent
    offenders = []
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: imports inside functions are lazy
            if isinstance(node, ast.ImportFrom):
                target = ("." * node.level) + (node.module or "")
                if "compat" in target or any("compat" in alias.name for alias in node.names):
                    offenders.append(f"{path.name}: from {target} import ...")
            elif isinstance(node, ast.Import) and any("compat" in alias.name for alias in node.names):
                offenders.append(f"{path.name}: import {[a.name for a in node.names]}")
    assert not offenders


def test_load_model_keeps_robustbench_signature_and_norm_deprecation(robustbench, tmp_path, no_network):
    import inspect

    import robustbench.utils

    ours = list(inspect.signature(load_model).parameters)
    theirs = list(inspect.signature(robustbench.utils.load_model).parameters)
    assert ours[:len(theirs)] == theirs  # same positional order, extras keyword-only after
    # norm= overrides threat_model, with RobustBench's DeprecationWarning (the L2 folder is searched).
    with pytest.warns(DeprecationWarning, match="`norm` has been deprecated"), \
            pytest.raises(CheckpointNotFoundError, match="L2"):
        load_model("Augustin2020Adversarial", tmp_path / "models", "cifar10", "Linf", "", "L2", download=False)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="`norm` must be one of"):
        load_model("Wong2020Fast", tmp_path / "models", norm="L3", download=False)
