"""load_model(..., download=False) for the RobustBench entries whose weights do not live in model_dir.

timm-registered entries (XCiT) and ImageNet ``Standard_R50`` (torchvision's ResNet-50) read their weights from
torch's hub cache (``$TORCH_HOME/hub/checkpoints/<file of the url>``). Offline, a missing file is refused naming
that exact path, with the network blocked (``no_network``); a file put there (random weights of the real
architecture, saved in the layout torch.hub reads) is loaded by robustbench's own code without a network call.
"""

import pytest
import torch

from freqplug.compat import CheckpointNotFoundError, install_autoattack, load_model

XCIT = ("Debenedetti2022Light_XCiT-S12", "cifar10", "debenedetti2022light_xcit_s12_cifar10_linf",
        "debenedetti2022light-xcit-s-cifar10-linf.pth.tar")


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache (torch.hub.get_dir() follows $TORCH_HOME)."""
    install_autoattack()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")
    return tmp_path / "torch" / "hub" / "checkpoints"


def _outputs(model, seed=0):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


@pytest.mark.slow
def test_timm_entry_offline(torch_home, tmp_path, no_network):
    import timm

    name, dataset, timm_name, file = XCIT
    expected = torch_home / file
    with pytest.raises(CheckpointNotFoundError) as info:
        load_model(name, tmp_path / "models", dataset, "Linf", download=False)
    assert str(expected) in str(info.value) and "offline" in str(info.value)
    assert str(tmp_path / "models") not in str(info.value)  # robustbench never reads model_dir for it

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = timm.create_model(timm_name, pretrained=False, num_classes=10).eval()
    expected.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), expected)
    model = load_model(name, tmp_path / "models", dataset, "Linf", download=False)
    assert not model.training and torch.equal(_outputs(model), _outputs(reference))


@pytest.mark.slow
def test_imagenet_standard_offline(torch_home, tmp_path, no_network):
    from torchvision.models import ResNet50_Weights, resnet50

    expected = torch_home / ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    with pytest.raises(CheckpointNotFoundError) as info:
        load_model("Standard_R50", tmp_path / "models", "imagenet", download=False)
    assert str(expected) in str(info.value) and "offline" in str(info.value)
    assert not (tmp_path / "models").exists()  # no advice about (or folder in) model_dir

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = resnet50().eval()
    expected.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), expected)
    model = load_model("Standard_R50", tmp_path / "models", "imagenet", download=False)
    assert not model.training
    # RobustBench wraps it with ImageNet normalisation: the same network behind (x - mean) / std.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x), reference((x - mean) / std), atol=1e-5)
