"""ImageNet images preprocessed as each RobustBench model needs, as robustbench's ``benchmark`` does.

Oracles are robustbench 1.1.1's own: ``robustbench.data.get_preprocessing`` (which preprocessing a zoo entry
gets) and its transforms applied by the test to the image files; the folders are ImageFolder / RobustBench
layouts of real ImageNet sample images resized up (non-square, so crops and resizes differ).
"""

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from freqplug.compat import install_autoattack, model_preprocessing
from freqplug.data import class_names, foolbox_data_dir, image_folder, load_data, robustbench_folder
from freqplug.models import LoadedModel
from freqplug.models.loading import data_preprocessing


@pytest.fixture(scope="module")
def rb():
    install_autoattack()
    import robustbench.data
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return robustbench.data, model_dicts, BenchmarkDataset, ThreatModel


@pytest.fixture(scope="module")
def imagenet_files(tmp_path_factory):
    """Two real ImageNet sample images, resized up to 300x360 (W x H), in an ImageFolder layout by wnid."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet_folder")
    wnids = class_names("imagenet")
    files = []
    for source in sorted(foolbox_data_dir().glob("imagenet_0[01]_*")):
        label = int(source.stem.split("_")[-1])
        (root / wnids[label]).mkdir(exist_ok=True)
        with Image.open(source) as image:
            image.convert("RGB").resize((300, 360), Image.BICUBIC).save(root / wnids[label] / "a.png")
        files.append((root / wnids[label] / "a.png", label))
    return root, files


def test_model_preprocessing_is_robustbenchs_choice(rb):
    data, model_dicts, BenchmarkDataset, ThreatModel = rb
    named = 0
    for threat, entries in model_dicts[BenchmarkDataset.imagenet].items():
        for name in entries:
            ours = model_preprocessing(name, "imagenet", threat.value)
            if ours.startswith("timm:"):
                continue  # robustbench builds these from a timm model (large); the name is checked below
            assert data.get_preprocessing(BenchmarkDataset.imagenet, threat, name, None) is data.PREPROCESSINGS[ours]
            named += 1
    assert named > 30
    assert model_preprocessing("Debenedetti2022Light_XCiT-S12", "imagenet") == \
        "timm:debenedetti2022light_xcit_s12_imagenet_linf"
    assert model_preprocessing("Wong2020Fast", "cifar10") is None  # CIFAR: ToTensor, as stored
    with pytest.raises(ValueError, match="did you mean"):
        model_preprocessing("Wong2020Fats", "imagenet")


@pytest.mark.parametrize("name, size", [("Crop288", 288), ("BicubicRes256Crop224", 224), ("Res224", 224),
                                        ("Res256Crop224", 224)])
def test_image_folder_applies_robustbenchs_transform(rb, imagenet_files, name, size):
    from PIL import Image

    data = rb[0]
    root, files = imagenet_files
    found = load_data(root, dataset="imagenet", preprocessing=name)
    assert found.x.shape == (2, 3, size, size) and found.source["preprocessing"] == name
    by_label = {label: i for i, label in enumerate(found.y.tolist())}
    for path, label in files:
        with Image.open(path) as image:
            expected = data.PREPROCESSINGS[name](image.convert("RGB"))
        assert torch.allclose(found.x[by_label[label]], expected, atol=1e-6)


@pytest.mark.slow  # robustbench builds the (random) XCiT-S12 to read its config
def test_timm_entry_preprocessing_is_robustbenchs(rb, imagenet_files):
    from PIL import Image

    data = rb[0]
    root, files = imagenet_files
    name = model_preprocessing("Debenedetti2022Light_XCiT-S12", "imagenet")
    found = image_folder(root, dataset="imagenet", preprocessing=name)
    oracle = data.get_preprocessing(rb[2].imagenet, rb[3].Linf, "Debenedetti2022Light_XCiT-S12", None)
    by_label = {label: i for i, label in enumerate(found.y.tolist())}
    for path, label in files:
        with Image.open(path) as image:
            assert torch.allclose(found.x[by_label[label]], oracle(image.convert("RGB")), atol=1e-6)
    with pytest.raises(ValueError, match="timm knows no model 'resnet_nope'"):
        image_folder(root, dataset="imagenet", preprocessing="timm:resnet_nope")


def test_the_preprocessings_differ_and_default_is_res256crop224(imagenet_files):
    root, _ = imagenet_files
    default = image_folder(root, dataset="imagenet").x
    assert torch.equal(default, image_folder(root, dataset="imagenet", preprocessing="Res256Crop224").x)
    bicubic = image_folder(root, dataset="imagenet", preprocessing="BicubicRes256Crop224").x
    assert default.shape == bicubic.shape and not torch.allclose(default, bicubic, atol=1e-3)


def test_preprocessing_argument_checks(imagenet_files, tmp_path):
    root, _ = imagenet_files
    with pytest.raises(ValueError, match="`preprocessing` must be None, one of RobustBench's"):
        image_folder(root, dataset="imagenet", preprocessing="Crop300")
    with pytest.raises(ValueError, match="pass `size` or `preprocessing`, not both"):
        image_folder(root, dataset="imagenet", size=64, preprocessing="Crop288")
    with pytest.raises(ValueError, match="must return images in \\[0, 1\\]"):
        image_folder(root, dataset="imagenet", preprocessing=lambda image: torch.full((3, 4, 4), 2.0))
    with pytest.raises(TypeError, match="must return a floating \\(C, H, W\\) tensor"):
        image_folder(root, dataset="imagenet", preprocessing=lambda image: image)
    with pytest.raises(ValueError, match="sample images are used as stored"):
        load_data(None, dataset="imagenet", preprocessing="Crop288")
    with pytest.raises(ValueError, match="applies to RobustBench's ImageNet folder"):
        robustbench_folder(tmp_path, dataset="cifar10", preprocessing="Crop288")


def test_robustbench_imagenet_folder_with_the_models_preprocessing(rb, imagenet_files, tmp_path):
    from robustbench.loaders import CustomImageFolder

    data = rb[0]
    val = tmp_path / "val"
    for wnid in class_names("imagenet"):  # RobustBench's own loader needs every class folder
        (val / wnid).mkdir(parents=True)
    ids_file = Path(importlib.util.find_spec("robustbench").origin).parent / "helper_files" / (
        "imagenet_test_image_ids.txt")
    first = ids_file.read_text().split()[:2]
    for entry, (path, _) in zip(first, imagenet_files[1], strict=True):
        shutil.copy(path, val / entry)
    found = robustbench_folder(tmp_path, dataset="imagenet", n=2, preprocessing="Crop288")
    oracle = CustomImageFolder(str(val), data.PREPROCESSINGS["Crop288"])
    for i in range(2):
        x_rb, y_rb, _ = oracle[i]
        assert torch.equal(found.x[i], x_rb) and int(found.y[i]) == y_rb


def _loaded(name, preprocessing):
    source = {"kind": "robustbench", "spec": name}
    if preprocessing is not None:
        source["preprocessing"] = preprocessing
    return LoadedModel(name, nn.Identity(), source)


def test_data_preprocessing_of_the_loaded_models():
    crop = _loaded("Wong2020Fast", "Crop288")
    embedded = LoadedModel("embedded", nn.Identity(), {"kind": "embedded"})
    assert data_preprocessing([crop, embedded], "imagenet") == "Crop288"
    assert data_preprocessing([embedded], "imagenet") is None
    assert data_preprocessing([crop], "cifar10") is None
    with pytest.raises(ValueError, match="preprocess ImageNet images differently.*profile them separately"):
        data_preprocessing([crop, _loaded("Salman2020Do_R18", "Res256Crop224")], "imagenet")


def test_cli_reads_imagenet_files_with_the_models_preprocessing(imagenet_files):
    from freqplug.cli import _load_data, build_parser

    root, _ = imagenet_files
    args = build_parser().parse_args(["profile", "--dataset", "imagenet", "--data-dir", str(root)])
    data = _load_data(args, {"Wong2020Fast": _loaded("Wong2020Fast", "Crop288")})
    assert data.x.shape[-2:] == (288, 288) and data.source["preprocessing"] == "Crop288"
    assert _load_data(args, {})[0].shape[-2:] == (224, 224)
