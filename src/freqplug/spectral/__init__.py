"""freqplug.spectral: the one place where Fourier and DCT work lives.

Frequency grids, partitions into players, masking with baselines, radial filters and
the spectral metrics of the five methods. Attributions, attacks, defenses and training
hooks compose these functions and never re-implement an FFT mask.
"""

from .._lazy import attach, names_from

# Names are imported on first use (PEP 562).
_LAZY = names_from({
    ".dct": ["apply_dct_mask", "dct2", "dct_matrix", "idct2"],
    ".filters": ["BANDS", "HIGH_BAND_THRESHOLD", "HighPass", "LOW_BAND_THRESHOLD", "LowPass", "band_mask", "high_pass",
                 "low_high_split", "low_pass", "radial_mask"],
    ".fourier": ["centered_fft2", "centered_ifft2", "check_spectral_mask", "fft2", "fftshift2", "frequency_indices",
                 "frequency_radius", "ifft2", "ifftshift2", "is_conjugate_symmetric", "mirror_indices",
                 "radial_bin_index"],
    ".masking": ["apply_spectral_mask", "baseline_spectrum", "coalition_images", "irfft2", "iter_coalition_images",
                 "render_coalitions", "rfft2"],
    ".metrics": ["energy_spectral_density", "frequency_bias", "frequency_bias_of_magnitude", "radial_profile",
                 "relative_change_dct",
                 "spectral_importance_distribution", "spectral_robustness_score", "spectral_snr"],
    ".players": ["Players", "conjugate_pair_players", "dct_band_groups", "make_players", "patch_grid_players",
                 "players_from_map", "radial_band_players"],
})

__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = [
    "HighPass", "LowPass", "Players",
    "apply_spectral_mask", "baseline_spectrum", "centered_fft2", "centered_ifft2", "coalition_images",
    "conjugate_pair_players", "dct2", "dct_band_groups", "dct_matrix", "energy_spectral_density", "fft2",
    "fftshift2", "frequency_bias", "frequency_bias_of_magnitude",
    "frequency_indices", "frequency_radius", "high_pass", "idct2", "ifft2",
    "ifftshift2", "irfft2", "is_conjugate_symmetric", "iter_coalition_images", "low_high_split", "low_pass",
    "make_players", "mirror_indices", "patch_grid_players", "players_from_map", "radial_band_players",
    "radial_bin_index", "radial_mask", "radial_profile", "relative_change_dct", "render_coalitions", "rfft2",
    "spectral_importance_distribution", "spectral_robustness_score", "spectral_snr",
    "apply_dct_mask",
    "BANDS", "HIGH_BAND_THRESHOLD", "LOW_BAND_THRESHOLD", "band_mask", "check_spectral_mask",
]
