"""Embedded reference models (loaded from registry packages, never from the network) and the model-spec
loader that ``freqplug profile --model`` uses (:func:`load_model_spec`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from .._lazy import attach, names_from
from .resnet import CifarResNet, resnet18_cifar

# The model-spec loader is imported on first use (PEP 562).
_LAZY = names_from({".loading": ["THREAT_MODELS", "LoadedModel", "data_preprocessing", "load_model_spec"]})
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = ["CifarResNet", "LoadedModel", "THREAT_MODELS", "cifar10_resnet18", "data_preprocessing", "load_model_spec",
           "pyautoattack_checkpoint_path", "resnet18_cifar"]


def pyautoattack_checkpoint_path() -> Path:
    """Path of ``pyautoattack/examples/model_test.pt`` in the installed pyautoattack package."""
    spec = importlib.util.find_spec("pyautoattack")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "freqplug.models.cifar10_resnet18 needs the `pyautoattack` package, which ships the checkpoint; "
            "install it with `pip install pyautoattack`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "examples" / "model_test.pt"
    if not path.is_file():
        raise FileNotFoundError(f"pyautoattack is installed but its checkpoint is missing: {path}")
    return path


def cifar10_resnet18() -> CifarResNet:
    """The pretrained CIFAR-10 ResNet-18 that pyautoattack ships, in eval mode on the CPU.

    Provenance: ``pyautoattack/examples/model_test.pt`` (the test model of the AutoAttack
    repository, a standard, non-robust CIFAR-10 ResNet-18; architecture in
    ``pyautoattack/examples/resnet.py``, reproduced by :class:`CifarResNet`). Inputs are
    images in [0, 1] of shape (N, 3, 32, 32) with no normalization; outputs are 10 logits
    in CIFAR-10 class order. Loading reads the installed package only, never the network, and leaves
    torch's global RNG as it was.
    """
    state = torch.load(pyautoattack_checkpoint_path(), map_location="cpu", weights_only=True)
    with torch.random.fork_rng(devices=[]):  # the throw-away initial weights must not draw from the user's RNG
        model = resnet18_cifar(num_classes=10)
    model.load_state_dict(state)
    return model.eval()
