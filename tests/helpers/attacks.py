"""Test helpers of the attacks area: independent oracles (numpy FFT, the HF radius scan written out
step by step) and a model that expects normalized inputs."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)


class ExpectsNormalized(nn.Module):
    """Wraps a model on [0, 1] images into one that expects ``(x - mean) / std`` (torchattacks' normalization)."""

    def __init__(self, model: nn.Module, mean=CIFAR_MEAN, std=CIFAR_STD):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, z):
        return self.model(z * self.std.to(z.dtype) + self.mean.to(z.dtype))


def normalize(x, mean=CIFAR_MEAN, std=CIFAR_STD):
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def denormalize(z, mean=CIFAR_MEAN, std=CIFAR_STD):
    return z * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)


def numpy_masked_delta(x: torch.Tensor, x_adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``real(ifft2(mask * fft2(x_adv - x)))`` with numpy's FFT (Chen2022 eq. 11), float64."""
    delta = (x_adv.double() - x.double()).numpy()
    m = mask.double().numpy()
    if m.ndim == 3:
        m = m[:, None]
    return torch.from_numpy(np.real(np.fft.ifft2(np.fft.fft2(delta, axes=(-2, -1)) * m, axes=(-2, -1))))


def numpy_masked(x: torch.Tensor, x_adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``clip(x + real(ifft2(mask * fft2(x_adv - x))), 0, 1)`` with numpy's FFT (Chen2022 eq. 11), float64."""
    return (x.double() + numpy_masked_delta(x, x_adv, mask)).clamp(0.0, 1.0)


def numpy_band(height: int, width: int, band: str, low: float = 0.4, high: float = 0.6) -> torch.Tensor:
    """Chen2022 eq. 12 band from numpy's fftfreq: r < low * r_max ("low") or r > high * r_max ("high")."""
    r = _radius(height, width)
    r = r / r.max()
    return torch.from_numpy(r < low if band == "low" else r > high)


def scan_radii_by_walking(height: int, width: int, start: float, stop: float, step: float) -> list:
    """The HF radius scan written out: walk every step, keep the first radius of each distinct mask.

    Only for steps that give few candidates (it walks ``(start - stop) / step`` radii).
    """
    r = _radius(height, width)
    radii, previous = [], None
    for k in range(int(math.floor((start - stop) / step + 1e-9)) + 1):
        radius = start - k * step
        kept = int((r < radius).sum())
        if kept != previous:
            radii.append(radius)
            previous = kept
    return radii


def _radius(height: int, width: int) -> np.ndarray:
    # Signed integer frequencies of the fft2 layout (numpy's fftfreq order), exact.
    fy = (np.arange(height) + height // 2) % height - height // 2
    fx = (np.arange(width) + width // 2) % width - width // 2
    return np.sqrt(fy[:, None].astype(float) ** 2 + fx[None, :].astype(float) ** 2)
