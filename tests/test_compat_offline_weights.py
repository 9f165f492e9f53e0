"""load_model(..., download=False) for the RobustBench entries whose weights do not live in model_dir.

timm-registered entries (XCiT) and ImageNet ``Standard_R50`` (torchvision's ResNet-50) read their weights from
torch's hub cache (``$TORCH_HOME/hub/checkpoints/<file of the url>``). Offline, a missing file is refused naming
that exact path, with the network blocked (``no_network``); a file put there (random weights of the real
architecture, saved in the layout torch.hub reads) is loaded by robustbench's own code without a network call.
"""

import pytest
import torch

from freqplug.compat import CheckpointNotFoundError, install_autoattack, load_model
from freqplug.models import load_model_spec

XCIT = ("Debenedetti2022Light_XCiT-S12", "cifar10", "debenedetti2022light_xcit_s12_cifar10_linf",
        "debenedetti2022light-xcit-s-cifar10-linf.pth.tar")


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache (torch.hub.get_dir() follows $TORCH_HOME)."""
    install_autoattack()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.mark.slow
def test_timm_entry_offline(torch_home, tmp_path, no_network):
    import timm

    name, dataset, timm_name, file = XCIT
    expected = torch_home / file
    with pytest.raises(CheckpointNotFoundError) as info:
        load_model(name, tmp_path / "models", dataset, "Linf", download=False)
    assert str(expected) in str(info.value) and "offline" in str(info.value)
    assert str(tmp_path / "models") not in str(info.value)  # robustbench never reads model_dir for it

    # The file holds the weights of the patch-16 XCiT that robustbench then adapts to 32x32 inputs (patch 4)
    # and wraps with normalisation: random weights of that architecture, as its checkpoint layout.
    from timm.models import xcit

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        weights = xcit._create_xcit(timm_name, pretrained=False, patch_size=16, embed_dim=384, depth=12, num_heads=8,
                                    eta=1.0, tokens_norm=True, num_classes=10).state_dict()
    expected.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, expected)
    model = load_model(name, tmp_path / "models", dataset, "Linf", download=False)
    assert not model.training and model(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    loaded = model.state_dict()
    for key in ("blocks.0.attn.qkv.weight", "blocks.11.mlp.fc2.weight", "cls_attn_blocks.1.attn.q.weight",
                "head.weight", "head.bias"):  # layers the patch adaptation leaves alone
        assert torch.equal(loaded[f"model.{key}"], weights[key])
    assert timm.is_model(timm_name)


@pytest.mark.slow
def test_imagenet_standard_offline(torch_home, tmp_path, no_network, monkeypatch):
    from torchvision.models import ResNet50_Weights, resnet50

    expected = torch_home / ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    with pytest.raises(CheckpointNotFoundError) as info:
        load_model("Standard_R50", tmp_path / "models", "imagenet", download=False)
    assert str(expected) in str(info.value) and "offline" in str(info.value)
    assert not (tmp_path / "models").exists()  # no advice about (or folder in) model_dir

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = resnet50().eval()
    expected.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), expected)
    # Through the command line's loader, offline by the environment variable: the model and its preprocessing.
    monkeypatch.setenv("FREQPLUG_OFFLINE", "1")
    loaded = load_model_spec("Standard_R50", dataset="imagenet", model_dir=tmp_path / "models")
    assert loaded.source["preprocessing"] == "Res256Crop224" and loaded.source["kind"] == "robustbench"
    model = loaded.model
    assert not model.training
    # RobustBench wraps it with ImageNet normalisation: the same network behind (x - mean) / std.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x), reference((x - mean) / std), atol=1e-5)
