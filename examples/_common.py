"""Scaffolding shared by examples/train_jafr.py and examples/train_csa.py: the digits split and the small CNN."""

import torch
import torch.nn as nn

from freqplug.data import digits as digits_images


def digits(size=16, seed=0):
    """sklearn's 1797 real digits at ``size`` x ``size``: (train (1200), held-out (597)) pairs of (x, y)."""
    x, y = digits_images(size)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return (x[perm[:1200]], y[perm[:1200]]), (x[perm[1200:]], y[perm[1200:]])


def small_cnn(seed=0):
    """Three conv layers and a linear head for (N, 1, 16, 16) digits -> 10 logits."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4, 10),
    )
