"""freqplug.spectral: the one place where Fourier and DCT work lives.

Frequency grids, partitions into players, masking with baselines, radial filters and
the spectral metrics of the five methods. Attributions, attacks, defenses and training
hooks compose these functions and never re-implement an FFT mask.
"""

from .dct import dct2, dct_matrix, idct2
from .filters import HighPass, LowPass, high_pass, low_high_split, low_pass, radial_mask
from .filters import BANDS, HIGH_BAND_THRESHOLD, LOW_BAND_THRESHOLD, band_mask
from .fourier import check_spectral_mask
from .fourier import (
    centered_fft2,
    centered_ifft2,
    fft2,
    fftshift2,
    frequency_indices,
    frequency_radius,
    ifft2,
    ifftshift2,
    is_conjugate_symmetric,
    mirror_indices,
    radial_bin_index,
)
from .masking import (
    apply_spectral_mask,
    baseline_spectrum,
    coalition_images,
    irfft2,
    iter_coalition_images,
    render_coalitions,
    rfft2,
)
from .metrics import (
    energy_spectral_density,
    frequency_bias,
    radial_profile,
    relative_change_dct,
    spectral_importance_distribution,
    spectral_robustness_score,
    spectral_snr,
)
from .players import (
    Players,
    conjugate_pair_players,
    dct_band_groups,
    make_players,
    patch_grid_players,
    players_from_map,
    radial_band_players,
)
from .dct import apply_dct_mask

__all__ = [
    "HighPass", "LowPass", "Players",
    "apply_spectral_mask", "baseline_spectrum", "centered_fft2", "centered_ifft2", "coalition_images",
    "conjugate_pair_players", "dct2", "dct_band_groups", "dct_matrix", "energy_spectral_density", "fft2",
    "fftshift2", "frequency_bias", "frequency_indices", "frequency_radius", "high_pass", "idct2", "ifft2",
    "ifftshift2", "irfft2", "is_conjugate_symmetric", "iter_coalition_images", "low_high_split", "low_pass",
    "make_players", "mirror_indices", "patch_grid_players", "players_from_map", "radial_band_players",
    "radial_bin_index", "radial_mask", "radial_profile", "relative_change_dct", "render_coalitions", "rfft2",
    "spectral_importance_distribution", "spectral_robustness_score", "spectral_snr",
    "apply_dct_mask",
    "BANDS", "HIGH_BAND_THRESHOLD", "LOW_BAND_THRESHOLD", "band_mask", "check_spectral_mask",
]
