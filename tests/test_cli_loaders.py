"""The loaders behind `freqplug profile --model/--data-dir`, used from Python: freqplug.models.load_model_spec and
freqplug.data.load_data / image_folder / robustbench_folder, on real files built from the embedded samples."""

import importlib.util
import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_cnn
from helpers.cli import write_cifar_batch, write_class_folders, write_module

from freqplug.data import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    FASHION_MNIST_CLASSES,
    class_names,
    image_folder,
    load_data,
    robustbench_folder,
    sample_images,
)
from freqplug.models import THREAT_MODELS, cifar10_resnet18, load_model_spec


def _accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# ------------------------------------------------------------------------------------------- image folders
@pytest.mark.slow
def test_named_class_folders_with_missing_classes_keep_their_labels(tmp_path, reference_model, cifar_samples,
                                                                     no_network):
    # The 20 samples have no bird (2) and no deer (4): labelling folders by sorted position shifted every later
    # class (cat became 2, ...), accuracy 0.20 instead of 1.00 on the same images and model.
    x, y = cifar_samples
    assert 2 not in y.tolist() and 4 not in y.tolist()
    write_class_folders(tmp_path, x, y, names=CIFAR10_CLASSES)
    found = image_folder(tmp_path, dataset="cifar10")
    order = [int(f.split("/")[-1][:3]) for f in found.files]  # the sample index is in the file name
    assert torch.equal(found.y, y[order])
    assert torch.equal(found.x, x[order])  # PNG round trip of 8-bit images is exact
    assert found.class_to_index == {name: i for i, name in enumerate(CIFAR10_CLASSES) if i in y.tolist()}
    assert _accuracy(reference_model, found.x, found.y) == 1.0
    positional = torch.tensor([sorted(found.class_to_index).index(CIFAR10_CLASSES[label]) for label in found.y])
    assert _accuracy(reference_model, found.x, positional) <= 0.25  # what the old labelling reported


def test_numeric_folders_map_to_their_number(tmp_path, cifar_samples):
    x, y = cifar_samples
    write_class_folders(tmp_path, x, y)  # folders "0", "1", "3", ...: numbers, with gaps
    found = image_folder(tmp_path, dataset="cifar10")
    assert found.class_to_index == {str(c): c for c in sorted(set(y.tolist()))}
    order = [int(f.split("/")[-1][:3]) for f in found.files]
    assert torch.equal(found.y, y[order])


def test_round_robin_order_covers_the_classes(tmp_path, cifar_samples):
    x, y = cifar_samples
    write_class_folders(tmp_path, x, y, names=CIFAR10_CLASSES)
    found = image_folder(tmp_path, dataset="cifar10", n=8)
    assert found.y.tolist() == sorted(set(y.tolist()))  # one image of each of the 8 classes, in label order
    assert found.x.shape == (8, 3, 32, 32)


def test_names_are_matched_without_case_or_separators(tmp_path, cifar_samples):
    x, y = cifar_samples[0][:2], torch.tensor([1, 19])
    write_class_folders(tmp_path, x, y, names={1: "Aquarium Fish", 19: "CATTLE"})
    found = image_folder(tmp_path, dataset="cifar100")
    assert found.class_to_index == {"Aquarium Fish": 1, "CATTLE": 19}


@pytest.mark.parametrize("folders, message", [
    (["airplane", "kitty"], r"\['kitty'\] are not classes of dataset 'cifar10'; expected airplane, automobile, bird"),
    (["airplane", "3"], r"\['3'\] are not classes"),  # names mixed with a number: refused, not guessed
    (["cat", "Cat"], "both name class 3"),
    (["3", "03"], "both name class 3"),
    (["10"], r"outside the 10 classes"),
])
def test_unknown_or_ambiguous_folders_are_refused(tmp_path, cifar_samples, folders, message):
    x = cifar_samples[0]
    write_class_folders(tmp_path, x[:len(folders)], torch.arange(len(folders)), names=folders)
    with pytest.raises(ValueError, match=message):
        image_folder(tmp_path, dataset="cifar10")


def test_named_folders_without_a_dataset_need_a_mapping(tmp_path, cifar_samples):
    x, y = cifar_samples
    write_class_folders(tmp_path, x[:2], torch.tensor([0, 1]), names=["good", "bad"])
    with pytest.raises(ValueError, match="pass `dataset`.*or an explicit `classes`"):
        image_folder(tmp_path)
    found = image_folder(tmp_path, classes={"good": 7, "bad": 2})
    assert sorted(found.y.tolist()) == [2, 7] and found.class_to_index == {"bad": 2, "good": 7}
    assert image_folder(tmp_path, classes=["bad", "good"]).class_to_index == {"bad": 0, "good": 1}
    with pytest.raises(ValueError, match=r"\['good'\] are not in `classes`"):
        image_folder(tmp_path, classes={"bad": 1})
    with pytest.raises(ValueError, match="outside the 10 classes"):
        image_folder(tmp_path, dataset="cifar10", classes={"bad": 1, "good": 10})
    with pytest.raises(ValueError, match="non-negative int labels"):
        image_folder(tmp_path, classes={"bad": 1, "good": 1.5})
    with pytest.raises(TypeError, match="`classes` must be a mapping"):
        image_folder(tmp_path, classes="bad,good")


def test_corrupt_or_truncated_image_is_named(tmp_path, cifar_samples):
    x, y = cifar_samples
    write_class_folders(tmp_path, x[:3], torch.tensor([0, 1, 3]), names=CIFAR10_CLASSES)
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match=r"cannot read image file '.*broken\.png'"):
        image_folder(tmp_path, dataset="cifar10")
    (tmp_path / "cat" / "broken.png").unlink()
    good = (tmp_path / "cat" / "002.png").read_bytes()
    (tmp_path / "cat" / "002.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"cannot read image file '.*002\.png'"):
        image_folder(tmp_path, dataset="cifar10")


def test_other_files_and_empty_folders_are_skipped_and_sizes_must_agree(tmp_path, cifar_samples):
    from PIL import Image

    x, y = cifar_samples
    write_class_folders(tmp_path, x[:2], torch.tensor([0, 1]), names=CIFAR10_CLASSES)
    (tmp_path / "airplane" / "notes.txt").write_text("not an image")
    (tmp_path / "airplane" / ".hidden.png").write_bytes(b"junk")
    (tmp_path / "empty").mkdir()
    assert image_folder(tmp_path, dataset="cifar10").x.shape == (2, 3, 32, 32)
    Image.new("RGB", (40, 30)).save(tmp_path / "airplane" / "big.png")
    assert image_folder(tmp_path, dataset="cifar10").x.shape == (3, 3, 32, 32)  # the dataset size: resized
    with pytest.raises(ValueError, match=r"is 40x30 but .* is 32x32; pass `size`"):
        image_folder(tmp_path, classes=["airplane", "automobile"])
    assert image_folder(tmp_path, classes=["airplane", "automobile"], size=16).x.shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="no class sub-folders with images"):
        image_folder(tmp_path / "empty")


def test_grey_datasets_read_one_channel(tmp_path, no_network):
    x, y = sample_images("mnist")
    write_class_folders(tmp_path, x, y)
    found = image_folder(tmp_path, dataset="mnist")
    order = [int(f.split("/")[-1][:3]) for f in found.files]
    assert found.x.shape == (20, 1, 28, 28) and torch.equal(found.x, x[order]) and torch.equal(found.y, y[order])


@pytest.mark.slow
def test_imagenet_default_preprocessing_is_robustbench_res256crop224(tmp_path):
    from PIL import Image
    from torchvision import transforms

    from freqplug.data import foolbox_data_dir

    wnids = class_names("imagenet")
    source = sorted(foolbox_data_dir().glob("imagenet_00_*"))[0]
    label = int(source.stem.split("_")[-1])
    (tmp_path / wnids[label]).mkdir()
    with Image.open(source) as image:
        image.crop((0, 0, 512, 300)).save(tmp_path / wnids[label] / "a.png")  # not square: crop matters
    found = image_folder(tmp_path, dataset="imagenet")
    robustbench_prepr = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    with Image.open(tmp_path / wnids[label] / "a.png") as image:
        expected = robustbench_prepr(image.convert("RGB"))
    assert found.y.tolist() == [label] and found.x.shape == (1, 3, 224, 224)
    assert torch.equal(found.x[0], expected)  # torchvision resizes PIL images with PIL's bilinear resampler too


# ------------------------------------------------------------------------------------------- class lists
def test_class_lists_agree_with_independent_sources():
    from torchvision.datasets import FashionMNIST

    from freqplug.data.folders import _normalise

    assert [_normalise(c) for c in FashionMNIST.classes] == list(FASHION_MNIST_CLASSES)
    # CIFAR-100's fine label names are in alphabetical order in the official meta file.
    assert len(CIFAR100_CLASSES) == 100 == len(set(CIFAR100_CLASSES)) and list(CIFAR100_CLASSES) == sorted(
        CIFAR100_CLASSES)
    assert (CIFAR100_CLASSES[0], CIFAR100_CLASSES[19], CIFAR100_CLASSES[99]) == ("apple", "cattle", "worm")
    wnids = class_names("imagenet")
    timm_dir = Path(importlib.util.find_spec("timm").submodule_search_locations[0])
    assert list(wnids) == (timm_dir / "data" / "_info" / "imagenet_synsets.txt").read_text().split()
    with pytest.raises(ValueError, match="`dataset` must be one of"):
        class_names("svhn")


def test_threat_models_are_robustbenchs():
    from freqplug.compat import install_autoattack

    install_autoattack()
    from robustbench.model_zoo.enums import ThreatModel

    assert THREAT_MODELS == tuple(t.value for t in ThreatModel)


# ------------------------------------------------------------------------------------------- RobustBench folder
class _TorchvisionCifar:
    """torchvision's own CIFAR reader, with its md5 check of the official archive off (our file is built from the
    sample images), through RobustBench's own batching: the oracle of robustbench_folder."""

    @staticmethod
    def load(root, dataset, n):
        from robustbench.data import _load_dataset
        from torchvision import datasets, transforms

        base = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[dataset]
        unchecked = type("Unchecked", (base,), {"_check_integrity": lambda self: True,
                                                "_load_meta": lambda self: setattr(self, "classes", [])})
        return _load_dataset(unchecked(root=str(root), train=False, transform=transforms.ToTensor(), download=False), n)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_robustbench_cifar_folder_reads_like_robustbench(tmp_path, dataset, cifar_samples, reference_model,
                                                          no_network):
    from freqplug.compat import install_autoattack

    install_autoattack()
    x, y = cifar_samples if dataset == "cifar10" else sample_images("cifar100")
    write_cifar_batch(tmp_path, x, y, dataset)
    found = robustbench_folder(tmp_path, dataset=dataset, n=15)
    x_rb, y_rb = _TorchvisionCifar.load(tmp_path, dataset, 15)
    assert torch.equal(found.x, x_rb) and torch.equal(found.y, y_rb)
    assert torch.equal(found.x, x[:15]) and torch.equal(found.y, y[:15])
    loaded = load_data(tmp_path, dataset=dataset, n=15)  # the layout is recognised
    assert loaded.source["kind"] == "robustbench_folder" and torch.equal(loaded.x, x[:15])
    if dataset == "cifar10":
        assert _accuracy(reference_model, loaded.x, loaded.y) == 1.0


@pytest.mark.slow
def test_robustbench_imagenet_folder_reads_like_robustbench(tmp_path, no_network):
    import shutil

    from freqplug.compat import install_autoattack
    from freqplug.data import foolbox_data_dir

    install_autoattack()
    from robustbench.data import PREPROCESSINGS
    from robustbench.loaders import CustomImageFolder

    val = tmp_path / "val"
    for wnid in class_names("imagenet"):  # RobustBench's own loader needs every class folder
        (val / wnid).mkdir(parents=True)
    ids_file = Path(importlib.util.find_spec("robustbench").submodule_search_locations[0]) / "helper_files" / (
        "imagenet_test_image_ids.txt")
    first = ids_file.read_text().split()[:2]
    for entry, source in zip(first, sorted(foolbox_data_dir().glob("imagenet_0[01]_*")), strict=True):
        shutil.copy(source, val / entry)
    found = robustbench_folder(tmp_path, dataset="imagenet", n=2)
    oracle = CustomImageFolder(str(val), PREPROCESSINGS["Res256Crop224"])
    for i in range(2):
        x_rb, y_rb, _ = oracle[i]
        assert torch.equal(found.x[i], x_rb) and int(found.y[i]) == y_rb
    assert found.y.tolist() == [class_names("imagenet").index(e.split("/")[0]) for e in first]
    assert load_data(tmp_path, dataset="imagenet", n=2).source["kind"] == "robustbench_folder"
    with pytest.raises(ValueError, match="ImageNet test image .* is missing"):
        robustbench_folder(tmp_path, dataset="imagenet", n=3)


def test_robustbench_folder_refuses_code_in_the_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(ValueError, match="cannot read .*test_batch.* as a cifar10 batch file"):
        robustbench_folder(tmp_path, dataset="cifar10")
    assert not marker.exists()
    with pytest.raises(ValueError, match="has no cifar-100-python/test"):
        robustbench_folder(tmp_path, dataset="cifar100")


def test_robustbench_folder_checks_the_archives_class_names(tmp_path, cifar_samples):
    x, y = cifar_samples
    write_cifar_batch(tmp_path, x, y, names=[f"c{i}" for i in range(10)])
    with pytest.raises(ValueError, match=r"lists the classes \['c0'.*not a RobustBench cifar10 folder"):
        robustbench_folder(tmp_path, dataset="cifar10")


def test_load_data_sources(tmp_path, cifar_samples):
    x, y = cifar_samples
    loaded = load_data(dataset="cifar10", n=5)
    assert torch.equal(loaded.x, x[:5]) and torch.equal(loaded.y, y[:5])
    assert loaded.source == {"kind": "sample_images", "dataset": "cifar10", "path": None, "n_examples": 5,
                             "available": 20}
    write_class_folders(tmp_path, x, y, names=CIFAR10_CLASSES)
    loaded = load_data(tmp_path, dataset="cifar10")
    assert loaded.source["kind"] == "image_folder" and loaded.source["n_examples"] == 20
    assert loaded.source["class_to_index"]["cat"] == 3
    json.dumps(loaded.source)
    for bad, message in [(dict(n=0), "`n` must be a positive int"), (dict(n=2.0), "`n` must be a positive int"),
                         (dict(dataset="svhn"), "`dataset` must be one of")]:
        with pytest.raises(ValueError, match=message):
            load_data(tmp_path, **{"dataset": "cifar10", **bad})
    with pytest.raises(ValueError, match="is not a folder"):
        load_data(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no class sub-folders with images .*, and not RobustBench's cifar10 layout "
                                         r"\(cifar-10-batches-py/test_batch\)"):
        load_data(tmp_path / "flat")


# ------------------------------------------------------------------------------------------- model specs
def test_embedded_spec(reference_model, cifar_samples, no_network):
    x = cifar_samples[0][:4]
    loaded = load_model_spec("embedded")
    assert loaded.name == "embedded" and loaded.source["kind"] == "embedded" and not loaded.model.training
    with torch.no_grad():
        assert torch.equal(loaded.model(x), reference_model(x))
    with pytest.raises(ValueError, match="`dataset` must be 'cifar10'"):
        load_model_spec("embedded", dataset="cifar100")
    with pytest.raises(ValueError, match="`threat_model` must be one of RobustBench's"):
        load_model_spec("embedded", threat_model="L3")
    with pytest.raises(TypeError, match="`spec` must be a non-empty str"):
        load_model_spec("")


def test_file_specs(tmp_path):
    model = tiny_cnn(num_classes=10, dtype=torch.float32).eval()
    x = torch.rand(2, 3, 16, 16)
    torch.jit.save(torch.jit.trace(model, x), tmp_path / "scripted.pt")
    torch.save(model, tmp_path / "pickled.pt")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with torch.no_grad():
        expected = model(x)
        for name, kind in [("scripted", "torchscript"), ("pickled", "pickled_module")]:
            loaded = load_model_spec(str(tmp_path / f"{name}.pt"))
            assert loaded.name == name and loaded.source["kind"] == kind
            assert torch.allclose(loaded.model(x), expected)
    with pytest.raises(ValueError, match="holds a OrderedDict, not a torch.nn.Module; a state_dict needs its"):
        load_model_spec(str(tmp_path / "weights.pt"))
    with pytest.raises(ValueError, match="cannot load model file .*junk.pt"):
        load_model_spec(str(tmp_path / "junk.pt"))


@pytest.fixture
def bare_cwd(tmp_path, monkeypatch):
    """tmp_path as the current folder, which is NOT on sys.path (as under the `freqplug` console script)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("cli_nets")]:
        del sys.modules[name]


def test_module_callable_is_importable_from_the_current_folder(bare_cwd):
    write_module(bare_cwd, "cli_nets_helper", "WIDTH = 5\n")
    write_module(bare_cwd, "cli_nets", """
        import torch
        from cli_nets_helper import WIDTH  # a sibling module: the folder is importable while loading


        def build_model():
            return torch.nn.Linear(WIDTH, 3)


        class Factory:
            @staticmethod
            def small():
                return torch.nn.Linear(2, 2)


        instance = torch.nn.Linear(4, 4)
        not_a_model = 3


        def returns_list():
            return [1]


        def broken():
            raise RuntimeError("weights missing")
        """)
    path_before = list(sys.path)
    loaded = load_model_spec("cli_nets:build_model")
    assert isinstance(loaded.model, torch.nn.Linear) and loaded.model.in_features == 5
    assert loaded.source == {"kind": "callable", "spec": "cli_nets:build_model",
                             "file": str(bare_cwd / "cli_nets.py")}
    assert sys.path == path_before  # the folder was on sys.path only while importing
    assert load_model_spec("cli_nets:Factory.small").model.in_features == 2
    assert load_model_spec("cli_nets:instance").model.in_features == 4
    assert load_model_spec("cli_nets.py:build_model").model.in_features == 5
    for spec, error, message in [
        ("cli_nets:buld_model", ValueError, "has no attribute 'buld_model' .did you mean build_model"),
        ("cli_nets:not_a_model", TypeError, "is a int, not a callable"),
        ("cli_nets:returns_list", TypeError, r"returned a list, not a torch.nn.Module"),
        ("cli_nets:broken", ValueError, "calling broken.. raised RuntimeError: weights missing"),
        ("cli_nets_missing:build", ValueError, "no module named 'cli_nets_missing' in the current folder"),
        ("missing.py:build", ValueError, "no file"),
    ]:
        with pytest.raises(error, match=message):
            load_model_spec(spec)


def test_pickled_module_whose_class_lives_in_the_current_folder(bare_cwd):
    write_module(bare_cwd, "cli_nets_pickled", """
        import torch


        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(3, 2)

            def forward(self, x):
                return self.linear(x)
        """)
    sys.path.insert(0, str(bare_cwd))
    try:
        import cli_nets_pickled

        torch.save(cli_nets_pickled.Net(), bare_cwd / "net.pt")
    finally:
        sys.path.remove(str(bare_cwd))
        del sys.modules["cli_nets_pickled"]
    loaded = load_model_spec("net.pt")
    assert type(loaded.model).__name__ == "Net" and loaded.source["kind"] == "pickled_module"


def test_module_with_a_missing_dependency_says_so(bare_cwd):
    write_module(bare_cwd, "cli_nets_dep", "import cli_nets_not_installed\n")
    with pytest.raises(ValueError, match="importing 'cli_nets_dep' failed: ModuleNotFoundError.*cli_nets_not_"):
        load_model_spec("cli_nets_dep:build")


def test_robustbench_specs_offline(tmp_path, monkeypatch, no_network):
    from freqplug.compat import CheckpointNotFoundError

    monkeypatch.setenv("FREQPLUG_OFFLINE", "1")
    with pytest.raises(ValueError, match="unknown model 'Standrd'.*did you mean Standard"):
        load_model_spec("Standrd", model_dir=tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="Standard"):
        load_model_spec("Standard", model_dir=tmp_path)
    with pytest.raises(ValueError, match="RobustBench has no models for dataset 'mnist'"):
        load_model_spec("Standard", dataset="mnist")


def test_robustbench_api_is_found_where_it_lives():
    from freqplug import compat
    from freqplug import eval as eval_
    from freqplug.models.loading import _robustbench_api

    moved = hasattr(compat, "load_model") and hasattr(compat, "model_names")
    assert _robustbench_api() is (compat if moved else eval_)


def test_device_argument_moves_the_model():
    model = load_model_spec("embedded", device="meta").model
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_loaders_leave_the_global_rng_alone(tmp_path, cifar_samples):
    x, y = cifar_samples
    write_class_folders(tmp_path, x[:4], y[:4], names=CIFAR10_CLASSES)
    write_module(tmp_path, "cli_nets_seeding", """
        import torch


        def build():
            torch.manual_seed(123)
            return torch.nn.Linear(2, 2)
        """)
    state = torch.get_rng_state()
    image_folder(tmp_path, dataset="cifar10")
    load_model_spec("embedded")
    cifar10_resnet18()
    load_model_spec(str(tmp_path / "cli_nets_seeding.py") + ":build")
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cli_reads_a_robustbench_cifar_folder_as_robustbenchs_own_loader(tmp_path, dataset, monkeypatch, no_network):
    """`freqplug profile --data-dir DIR --dataset D` on RobustBench's CIFAR layout gives exactly what robustbench's
    own `load_clean_dataset(dataset, n, data_dir, prepr)` gives. The folder is built from the sample images, so the
    md5 sums of the official archive cannot match: torchvision's checksum is the one thing switched off (else
    its `download=True` would go to the network); reading and decoding are robustbench's and torchvision's."""
    import torchvision.datasets.cifar

    from freqplug.cli import _load_data, build_parser
    from freqplug.compat import install_autoattack

    install_autoattack()
    from robustbench.data import PREPROCESSINGS, load_clean_dataset
    from robustbench.model_zoo.enums import BenchmarkDataset

    x, y = sample_images(dataset)
    write_cifar_batch(tmp_path, x, y, dataset)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    x_rb, y_rb = load_clean_dataset(BenchmarkDataset(dataset), 15, str(tmp_path), PREPROCESSINGS[None])
    args = build_parser().parse_args(["profile", "--data-dir", str(tmp_path), "--dataset", dataset,
                                      "--n-examples", "15"])
    data = _load_data(args, {})
    assert data.source["kind"] == "robustbench_folder" and data.source["n_examples"] == 15
    assert torch.equal(data.x, x_rb) and torch.equal(data.y, y_rb)
    assert torch.equal(data.x, x[:15]) and torch.equal(data.y, y[:15])
