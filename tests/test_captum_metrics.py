"""How freqplug's frequency attributions meet Captum's metrics (README, "Captum's infidelity and sensitivity_max").

- ``captum.metrics.sensitivity_max`` works as is: it calls ``FrequencyShapley.attribute`` on noisy inputs (the
  input range tolerates the noise) with the same ``seed``, so only the input noise moves the explanation.
- ``captum.metrics.infidelity`` needs its perturbation in the attribution's space: Captum scores
  ``sum(attribution * perturbation)``, so a pixel-space perturbation against a frequency map is refused (shape)
  or meaningless. With a frequency-space perturbation (remove random players, report the removed bins as the
  "perturbation") and the map spread as a per-bin density, it measures what it should: 0 for an additive game.

Oracles: a linear model, whose frequency Shapley values are exactly ``w . x_p`` per player (numpy FFT).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.metrics import infidelity, sensitivity_max
from helpers import linear_model

import freqplug
from freqplug.spectral import apply_spectral_mask

C, H, W = 3, 4, 4


@pytest.fixture(scope="module")
def linear_case():
    model = linear_model(C, H, W, num_classes=3, seed=1)  # float64
    x = torch.rand(2, C, H, W, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return model, x, torch.tensor([0, 2])


def _numpy_pair_values(weights: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Exact frequency Shapley map of the linear game x -> w . x with "pairs" players: w . IDFT(pair mask * DFT(x))."""
    spectrum = np.fft.fft2(image)
    out = np.zeros((H, W))
    for u in range(H):
        for v in range(W):
            if (u, v) == (0, 0):
                continue  # DC is always present: no player
            mask = np.zeros((H, W))
            mask[u, v] = mask[-u % H, -v % W] = 1
            out[u, v] = (weights * np.fft.ifft2(spectrum * mask).real).sum()
    return out


def test_sensitivity_max_runs_frequency_shapley_on_noisy_inputs(linear_case):
    model, x, y = linear_case
    weights = model[1].weight.detach().reshape(3, C, H, W).numpy()
    pattern = torch.linspace(-1, 1, C * H * W, dtype=torch.float64).reshape(1, C, H, W)
    explain = freqplug.FrequencyShapley(model).attribute

    def shift(inputs, radius):  # a deterministic perturbation, so the value has an exact oracle
        return inputs + radius * pattern  # Captum passes a single input as a tensor

    got = sensitivity_max(explain, x, perturb_func=shift, perturb_radius=0.05, n_perturb_samples=2, target=y,
                          players="pairs", n_samples=2, estimator="antithetic", seed=0)
    # linear game: phi(x + d) - phi(x) = phi(d); sensitivity = ||phi(d)||_F / ||phi(x)||_F
    for i in range(2):
        phi_x = _numpy_pair_values(weights[int(y[i])], x[i].numpy())
        phi_d = _numpy_pair_values(weights[int(y[i])], 0.05 * pattern[0].numpy())
        assert float(got[i]) == pytest.approx(np.linalg.norm(phi_d) / np.linalg.norm(phi_x), rel=1e-9)
    # Captum's own uniform noise works too (inputs up to 0.5 outside [0, 1] are explained as given)
    default = sensitivity_max(explain, x, perturb_radius=0.02, n_perturb_samples=2, target=y, n_samples=2, seed=0)
    assert default.shape == (2,) and bool(torch.isfinite(default).all()) and bool((default > 0).all())


def _removal_perturbation(players, generator):
    """Captum perturb_func in frequency space: remove a random half of the players; the "perturbation" is the
    removed-bin indicator (N, C, H, W) that Captum multiplies with the attribution density."""
    player_map = players.player_map

    def perturb(inputs):
        n = inputs.shape[0]
        removed_players = torch.rand(n, players.num_players, generator=generator) < 0.5
        removed = torch.zeros(n, H, W, dtype=torch.bool)
        present = player_map >= 0
        removed[:, present] = removed_players[:, player_map[present]]
        perturbed = apply_spectral_mask(inputs, ~removed)  # removed bins become 0 (the zero baseline)
        return removed[:, None].expand(n, C, H, W).to(inputs.dtype), perturbed

    return perturb


def test_infidelity_with_a_frequency_space_perturbation_is_zero_for_an_additive_game(linear_case):
    model, x, y = linear_case
    explainer = freqplug.FrequencyShapley(model)
    # Permutation sampling is exact on an additive game (the tree surrogate is not at 2P coalitions).
    result = explainer.attribute(x, target=y, players="pairs", n_samples=2, estimator="antithetic", return_result=True)
    np.testing.assert_allclose(result.attributions[0].numpy(),
                               _numpy_pair_values(model[1].weight.detach().reshape(3, C, H, W)[0].numpy(),
                                                  x[0].numpy()), atol=1e-12)
    # every bin holds its player's value: spread it over the player's bins and the channels (a density)
    player_map = result.players.player_map
    bins = torch.bincount(player_map[player_map >= 0]).to(torch.float64)
    size = torch.where(player_map >= 0, bins[player_map.clamp_min(0)], torch.ones(()))
    density = (result.attributions / size / C)[:, None].expand(-1, C, -1, -1)
    generator = torch.Generator().manual_seed(0)
    score = infidelity(model, _removal_perturbation(result.players, generator), x, density, target=y,
                       n_perturb_samples=8)
    assert float(score.abs().max()) < 1e-20
    # the check can fail: a density that counts each pair twice is caught
    wrong = infidelity(model, _removal_perturbation(result.players, torch.Generator().manual_seed(0)), x,
                       density * size, target=y, n_perturb_samples=8)
    assert float(wrong.min()) > 1e-6


def test_infidelity_with_captums_pixel_perturbations_does_not_fit_a_frequency_map(linear_case):
    model, x, y = linear_case
    attr = freqplug.FrequencyShapley(model).attribute(x, target=y, players="pairs", n_samples=2, estimator="antithetic")

    def pixel_noise(inputs):
        noise = 0.01 * torch.randn(inputs.shape, generator=torch.Generator().manual_seed(1), dtype=inputs.dtype)
        return noise, inputs - noise

    with pytest.raises(AssertionError, match="matching shapes"):  # (N, H, W) map vs (N, C, H, W) images
        infidelity(model, pixel_noise, x, attr, target=y)
    # Forcing the shape gives a number, but it multiplies frequency scores with pixel noise at the same index:
    # even the exact attribution of a linear game is not recognised (compare the 0 of the frequency version).
    forced = infidelity(model, pixel_noise, x, attr[:, None].expand(-1, C, -1, -1) / C, target=y, n_perturb_samples=4)
    assert float(forced.min()) > 1e-8
