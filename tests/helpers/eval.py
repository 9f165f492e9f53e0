"""Test helpers of the AutoAttack runner: models that trip AutoAttack's checks, an exact robustness
oracle for linear classifiers, and the official AutoAttack package on ``sys.path``."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from .nets import linear_model

#: Where the official AutoAttack (github.com/fra31/auto-attack, git-only) is unpacked: the project's
#: ``shared/third_party`` folder beside the checkout (CI's layout), else the developers' one;
#: override with FREQPLUG_OFFICIAL_AUTOATTACK.
_CANDIDATES = [Path(__file__).resolve().parents[3] / "shared" / "third_party" / "auto-attack",
               Path("/work/shared/third_party/auto-attack")]
OFFICIAL_AUTOATTACK_DIR = Path(os.environ.get(
    "FREQPLUG_OFFICIAL_AUTOATTACK", next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])))
_AUTOATTACK_MODULES = ("autoattack", "autoattack.autoattack", "autoattack.state")


def cifar_linear_model(num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A float32 linear classifier on 3x32x32 images: gradient attacks work on it and its exact
    robustness radius is known (:func:`linf_radius`)."""
    return linear_model(3, 32, 32, num_classes=num_classes, seed=seed, dtype=torch.float32)


def linf_radius(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Exact smallest Linf perturbation that changes a linear classifier's decision from ``y``
    (ignoring the [0, 1] box): ``min_{j != y} (z_y - z_j) / ||w_y - w_j||_1`` (Hoelder).

    A point with radius > eps cannot be misclassified by any perturbation of Linf norm <= eps.

    Args:
        model: ``nn.Sequential(Flatten, Linear)`` as made by :func:`cifar_linear_model`.
        x: (N, C, H, W) images; y: (N,) labels (the model's own predictions, so margins are >= 0).

    Returns:
        (N,) float64 radii.
    """
    linear = model[1]
    weight, bias = linear.weight.detach().double(), linear.bias.detach().double()
    z = x.flatten(1).double() @ weight.T + bias
    radii = []
    for i in range(x.shape[0]):
        yi = int(y[i])
        others = [j for j in range(weight.shape[0]) if j != yi]
        margins = z[i, yi] - z[i, others]
        norms = (weight[yi] - weight[others]).abs().sum(dim=1)
        radii.append(float((margins / norms).min()))
    return torch.tensor(radii, dtype=torch.float64)


class SoftmaxOutput(nn.Module):
    """A model that returns probabilities instead of logits (AutoAttack's checks must flag it)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), dim=1)


class NoisyInput(nn.Module):
    """A randomized defence: Gaussian noise on the input at every call."""

    def __init__(self, model: nn.Module, std: float = 0.05):
        super().__init__()
        self.model, self.std = model, std

    def forward(self, x):
        return self.model(x + self.std * torch.randn_like(x))


class GradientStepAtInference(nn.Module):
    """A dynamic defence: one gradient step on the input inside the forward pass."""

    def __init__(self, model: nn.Module, step: float = 1e-3):
        super().__init__()
        self.model, self.step = model, step

    def forward(self, x):
        with torch.enable_grad():
            probe = x.detach().requires_grad_(True)
            energy = self.model(probe).logsumexp(dim=1).sum()
            (grad,) = torch.autograd.grad(energy, probe)
        return self.model(x + self.step * grad.sign())


class QuantizedInput(nn.Module):
    """Input quantization: the gradient is zero everywhere (APGD's zero-gradient check fires)."""

    def __init__(self, model: nn.Module, levels: int = 8):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * self.levels) / self.levels)


class NaNOffInputs(nn.Module):
    """Finite logits on the given clean images, NaN on anything else (e.g. adversarial examples)."""

    def __init__(self, model: nn.Module, clean: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("clean", clean.flatten(1).clone())

    def forward(self, x):
        out = self.model(x)
        known = (x.flatten(1)[:, None, :] == self.clean[None]).all(dim=2).any(dim=1)
        return torch.where(known[:, None], out, torch.full_like(out, float("nan")))


def _autoattack_modules() -> dict:
    return {name: module for name, module in sys.modules.items()
            if name == "autoattack" or name.startswith("autoattack.")}


def official_autoattack_installed() -> bool:
    """True when the official package is installed (importable without :data:`OFFICIAL_AUTOATTACK_DIR`),
    whatever freqplug's shim has registered in ``sys.modules``."""
    saved = _autoattack_modules()
    for name in saved:
        del sys.modules[name]
    try:
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("autoattack")
        return spec is not None and spec.origin is not None
    finally:
        for name in _autoattack_modules():
            del sys.modules[name]
        sys.modules.update(saved)


@contextlib.contextmanager
def official_autoattack():
    """Make ``import autoattack`` give the official package: the installed one (CI installs it from the
    shared folder), else the unpacked folder :data:`OFFICIAL_AUTOATTACK_DIR` put on ``sys.path``.

    freqplug's shim (registered by the RobustBench tests when the package is absent) is taken out of
    ``sys.modules`` for the block and put back afterwards. Skips the test, saying why, when neither is there.
    """
    installed = official_autoattack_installed()
    folder = OFFICIAL_AUTOATTACK_DIR
    if not installed and not (folder / "autoattack" / "checks.py").is_file():
        pytest.skip(f"official AutoAttack is neither installed nor found at {folder} (git-only package: "
                    f"pip install {folder}, or set FREQPLUG_OFFICIAL_AUTOATTACK to a clone of "
                    "github.com/fra31/auto-attack)")
    saved = _autoattack_modules()
    for name in saved:
        del sys.modules[name]
    if not installed:
        sys.path.insert(0, str(folder))
    try:
        import autoattack

        assert not getattr(autoattack, "__freqplug_shim__", False)
        if not installed:
            assert Path(autoattack.__file__).resolve().is_relative_to(folder.resolve())
        yield autoattack
    finally:
        if not installed:
            sys.path.remove(str(folder))
        for name in _autoattack_modules():
            del sys.modules[name]
        sys.modules.update(saved)


#: Source run in a fresh interpreter in which ``import autoattack`` fails as if the official package
#: were not installed (a meta-path finder refuses it), whatever the environment holds.
BLOCK_OFFICIAL_AUTOATTACK = """
import sys


class _BlockAutoattack:
    def find_spec(self, name, path=None, target=None):
        if name == "autoattack" or name.startswith("autoattack."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _BlockAutoattack())
"""
