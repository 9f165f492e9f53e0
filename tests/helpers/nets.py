"""Tiny real networks for tests (seeded, CPU, float64-capable)."""

import torch
from torch import nn


def tiny_cnn(in_channels: int = 3, num_classes: int = 4, seed: int = 0, dtype=torch.float64) -> nn.Module:
    # Seeded initialization in a forked RNG: building a test network must not reseed the caller's stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(in_channels, 6, 3, padding=1), nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes),
        )
    return model.to(dtype).eval()


def linear_model(channels: int, height: int, width: int, num_classes: int = 3, seed: int = 0,
                 dtype=torch.float64) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, num_classes))
    return model.to(dtype).eval()
