"""``freqplug smoke``: the spectral core on the embedded model and images.

Prints the clean accuracy of the pretrained CIFAR-10 ResNet-18 on the 20 CIFAR-10 sample
images, its accuracy on their low- and high-frequency components (Wang2020b), the
frequency bias B_low of its input Jacobians (Chan2022) and the radial energy profile of
the images (Luo2024).
"""

from __future__ import annotations

import time
from typing import Sequence, TextIO

import torch
import torch.nn.functional as F

from .._model import accuracy
from ..data import sample_images
from ..models import cifar10_resnet18
from ..spectral import energy_spectral_density, frequency_bias, low_high_split


def run_smoke(radii: Sequence[float] = (16, 12, 10, 8, 6, 4), out: TextIO = None) -> dict:
    start = time.perf_counter()
    model = cifar10_resnet18()
    x, y = sample_images("cifar10")
    clean = accuracy(model, x, y)
    rows = []
    for radius in radii:
        low, high = low_high_split(x, radius)
        rows.append((radius, accuracy(model, low, y), accuracy(model, high, y)))
    x_grad = x.clone().requires_grad_(True)
    (jacobian,) = torch.autograd.grad(F.cross_entropy(model(x_grad), y), x_grad)
    bias = frequency_bias(jacobian).item()
    esd = energy_spectral_density(x).mean(dim=(0, 1))
    result = {"clean_accuracy": clean, "split_accuracy": rows, "frequency_bias": bias,
              "esd": esd.tolist(), "seconds": time.perf_counter() - start}
    if out is not None:
        print("freqplug smoke run: CIFAR-10 ResNet-18 (pyautoattack) on 20 CIFAR-10 images (foolbox)", file=out)
        print(f"clean accuracy: {clean:.2f}", file=out)
        print("radius  acc(low, r < radius)  acc(high, r >= radius)", file=out)
        for radius, low_acc, high_acc in rows:
            print(f"{radius:6g}  {low_acc:20.2f}  {high_acc:21.2f}", file=out)
        print(f"frequency bias B_low of the input Jacobians: {bias:.3f}", file=out)
        print("energy spectral density (dB) at radius 0, 4, 8, 12, 16: "
              + ", ".join(f"{10 * torch.log10(esd[r]).item():.1f}" for r in (0, 4, 8, 12, 16)), file=out)
        print(f"done in {result['seconds']:.1f} s", file=out)
    return result
