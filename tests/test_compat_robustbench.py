"""The autoattack compatibility layer and RobustBench from a registry install, offline.

Real robustbench 1.1.1 code throughout: its ``import``, ``eval.benchmark`` (ImageNet loader
on a folder built here from foolbox's 20 real ImageNet images), ``utils.load_model`` on a
model-zoo architecture saved here, and the ``autoattack`` calls it makes.
"""

import ast
import importlib
import json
import shutil
import socket
import sys
import warnings
from pathlib import Path

import helpers
import pytest
import torch
from torch import nn

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


@pytest.fixture
def no_internet(monkeypatch):
    """Like conftest's ``no_network`` but lets local AF_UNIX sockets through: RobustBench's ImageNet
    loader uses 4 DataLoader workers, which pass tensors between processes over Unix sockets."""
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address)
        raise AssertionError(f"network access attempted: {address!r}")

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


def tiny_cnn():
    return helpers.tiny_cnn(num_classes=10, dtype=torch.float32)


def test_install_is_idempotent_and_makes_robustbench_importable(robustbench):
    first = install_autoattack()
    assert install_autoattack() is first is sys.modules["autoattack"] and is_shim(first)
    import robustbench.eval as rb_eval
    from autoattack import AutoAttack
    from autoattack.state import EvaluationState

    assert rb_eval.AutoAttack is AutoAttack and rb_eval.EvaluationState is EvaluationState
    assert callable(robustbench.benchmark) and callable(robustbench.load_model)


def test_a_real_autoattack_install_is_not_shadowed(tmp_path, monkeypatch):
    saved = {name: sys.modules[name] for name in ("autoattack", "autoattack.state", "autoattack.autoattack")
             if name in sys.modules}
    package = tmp_path / "site" / "autoattack"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("OFFICIAL = True\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    try:
        assert freqplug.compat.uninstall_autoattack()
        importlib.invalidate_caches()
        module = install_autoattack()
        assert getattr(module, "OFFICIAL", False) and not is_shim(module)
        assert install_autoattack() is module  # idempotent with a real install too
        assert not freqplug.compat.uninstall_autoattack()  # never removes a real install
    finally:
        for name in ("autoattack", "autoattack.state", "autoattack.autoattack"):
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@pytest.mark.slow
def test_official_api_calls_behave_as_documented(robustbench, cifar_samples, tmp_path, capsys):
    from autoattack import AutoAttack
    from autoattack.state import EvaluationState

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


@pytest.mark.slow
def test_robustbench_benchmark_end_to_end_offline(robustbench, tmp_path, no_internet):
    """robustbench.eval.benchmark, unchanged, on an ImageNet folder of 20 real images, no network."""
    import robustbench.data
    from PIL import Image
    from torchvision import transforms

    from freqplug.data import foolbox_data_dir

    package = sys.modules["robustbench"].__file__.rsplit("/", 1)[0]
    with open(f"{package}/helper_files/imagenet_class_to_id_map.json") as handle:
        wnid_to_index = json.load(handle)
    with open(f"{package}/helper_files/imagenet_test_image_ids.txt") as handle:
        listed = [line.strip() for line in handle if line.strip()]
    # RobustBench's ImageNet loader reads data_dir/val/<wnid>/<file> for the files of its fixed
    # list, in list order, and labels them by folder: every wnid folder must exist, and the first
    # n listed files are the n examples. Put foolbox's 20 ImageNet images there.
    val = tmp_path / "data" / "val"
    for wnid in wnid_to_index:
        (val / wnid).mkdir(parents=True)
    sources = sorted(foolbox_data_dir().glob("imagenet_*"))[:20]
    for source, relative in zip(sources, listed[:20]):
        Image.open(source).convert("RGB").save(val / relative, format="JPEG", quality=95)

    preprocessing = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
    x, y = robustbench.data.load_imagenet(20, str(tmp_path / "data"), preprocessing)
    assert y.tolist() == [wnid_to_index[r.split("/")[0]] for r in listed[:20]]  # the shipped map
    model = _template_classifier(x, y)

    state_path = tmp_path / "aa_state.json"
    EPS = 0.5
    clean, robust = robustbench.eval.benchmark(
        model, n_examples=20, dataset="imagenet", threat_model="Linf", data_dir=str(tmp_path / "data"),
        device=torch.device("cpu"), batch_size=20, eps=EPS, preprocessing=preprocessing,
        aa_state_path=state_path)
    assert clean == 1.0
    # The template model is robust at small eps (then APGD-T, FAB-T and Square would all run,
    # minutes on CPU); at this eps APGD-CE breaks every point and, as in the official cascade,
    # the remaining attacks of the standard version are skipped.
    assert robust == 0.0
    state = json.loads(state_path.read_text())
    assert state["_run_attacks"] == ["apgd-ce"] and not any(state["_robust_flags"])
    # Resuming through robustbench: attacks already run are skipped, same answer.
    assert robustbench.eval.benchmark(
        model, n_examples=20, dataset="imagenet", threat_model="Linf", data_dir=str(tmp_path / "data"),
        device=torch.device("cpu"), batch_size=20, eps=EPS, preprocessing=preprocessing,
        aa_state_path=state_path) == (clean, robust)


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
