"""Test helpers of the training hooks (CSA, JaFR): an exact CSA game and an interrupting wrapper."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from freqplug.spectral import coalition_images

from . import exact_shapley_oracle

__all__ = ["ExactFrequencyShapley", "Interrupting", "NaNAfterFirstCall", "dc_only", "reconstruct_negative_bins"]


class ExactFrequencyShapley:
    """Exact Shapley values (all 2^P coalitions, enumerated by ``exact_shapley_oracle``) of the true-class
    softmax probability over a small conjugate-closed partition; returns the (N, H, W) fft2-layout map in
    which every bin carries its player's value and DC (always present) carries 0."""

    def __init__(self, model, players):
        self.model, self.player_map, self.calls = model, players, 0
        self.settings = {"players": players.name, "estimator": "exact", "game": "softmax probability of y"}
        p = players.num_players
        self.coalitions = torch.tensor(list(itertools.product([0, 1], repeat=p)), dtype=torch.bool)
        self.__qualname__ = "ExactFrequencyShapley"

    def values(self, inputs, target):
        """(N, P) float64 exact Shapley values."""
        p = self.player_map.num_players
        images = coalition_images(inputs, self.player_map, self.coalitions)  # (N, K, C, H, W)
        n, k = images.shape[:2]
        with torch.no_grad():
            probs = torch.softmax(self.model(images.flatten(0, 1)), dim=1).reshape(n, k, -1)
        value = probs.gather(2, target.reshape(n, 1, 1).expand(n, k, 1)).squeeze(2).double()
        index = {tuple(c.tolist()): i for i, c in enumerate(self.coalitions.int())}
        rows = []
        for image in range(n):
            def game(coalition, image=image):
                key = tuple(1 if j in coalition else 0 for j in range(p))
                return float(value[image, index[key]])
            rows.append(exact_shapley_oracle(game, p))
        return torch.tensor(rows, dtype=torch.float64)

    def __call__(self, inputs, target):
        self.calls += 1
        return self.player_map.expand(self.values(inputs, target).float())


class Interrupting:
    """Wraps an attribution and raises KeyboardInterrupt on call number ``fail_at``."""

    def __init__(self, inner, fail_at):
        self.inner, self.fail_at, self.calls = inner, fail_at, 0
        self.settings, self.player_map = inner.settings, inner.player_map
        self.__qualname__ = "ExactFrequencyShapley"

    def __call__(self, inputs, target):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        return self.inner(inputs, target)


def reconstruct_negative_bins(x, phi):
    """Full complex reference: keep the bins with phi < 0 (not DC), inverse fft2, real part."""
    mask = (phi < 0).clone()
    mask[:, 0, 0] = False
    spectrum = torch.fft.fft2(x.double()) * mask[:, None]
    image = torch.fft.ifft2(spectrum)
    assert float(image.imag.abs().max()) < 1e-10  # the mask is conjugate-symmetric
    return image.real.float()


def dc_only(x):
    """The empty coalition of a zero-baseline frequency game: only DC kept, i.e. each channel's mean colour."""
    return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).contiguous()


class NaNAfterFirstCall(nn.Module):
    """A real network whose outputs are NaN from its second forward call on (fine on the first)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.model(x)
        return out if self.calls == 1 else out + float("nan")
