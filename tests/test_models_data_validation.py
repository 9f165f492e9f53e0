import subprocess
import sys

import pytest
import torch

from freqplug import _validation as v
from freqplug.data import CIFAR10_CLASSES, sample_images
from freqplug.models import cifar10_resnet18


def test_reference_model_classifies_cifar_samples_offline(no_network, capsys):
    model = cifar10_resnet18()
    x, y = sample_images("cifar10")
    assert not model.training
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert y.tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    with capsys.disabled():
        print(f"\n[reference] CIFAR-10 ResNet-18 accuracy on the 20 foolbox CIFAR-10 images: {accuracy:.2f}")
    assert accuracy >= 0.9
    assert len(CIFAR10_CLASSES) == 10


@pytest.mark.parametrize("dataset,shape", [("mnist", (20, 1, 28, 28)), ("fashion_mnist", (20, 1, 28, 28)),
                                           ("cifar100", (20, 3, 32, 32)), ("imagenet", (20, 3, 224, 224))])
def test_other_sample_sets(dataset, shape, no_network):
    x, y = sample_images(dataset)
    assert x.shape == shape and y.shape == (20,)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert int(y.max()) < (1000 if dataset == "imagenet" else 100)


def test_sample_images_options_and_errors():
    x, _ = sample_images("imagenet", size=64, dtype=torch.float64)
    assert x.shape == (20, 3, 64, 64) and x.dtype == torch.float64
    with pytest.raises(ValueError, match="dataset"):
        sample_images("svhn")


def test_validation_messages():
    good = torch.rand(2, 3, 8, 8)
    assert v.check_images(good) is good
    with pytest.raises(TypeError, match="`inputs` must be a torch.Tensor"):
        v.check_images([1, 2])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*\(3, 8, 8\)"):
        v.check_images(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="floating"):
        v.check_images(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
    nan = good.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        v.check_images(nan)
    with pytest.raises(ValueError, match=r"\[0, 1\].*got values in"):
        v.check_images(good * 255)
    with pytest.raises(ValueError, match="batch size 3.*batch size 2"):
        v.check_labels(torch.zeros(3, dtype=torch.long), "target", 2)
    with pytest.raises(ValueError, match=r"\[0, 10\).*12"):
        v.check_labels(torch.tensor([1, 12]), "target", 2, num_classes=10)
    with pytest.raises(TypeError, match="integer"):
        v.check_labels(torch.tensor([1.0, 2.0]), "target", 2)
    with pytest.raises(ValueError, match="chunk"):
        v.check_positive_int(0, "chunk_size")


@pytest.mark.slow
def test_smoke_command_runs():
    out = subprocess.run([sys.executable, "-m", "freqplug", "smoke", "--radii", "16", "8"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "clean accuracy: 1.00" in out.stdout
    assert "frequency bias B_low" in out.stdout
