"""Attribution methods over frequencies, with Captum's conventions."""

from ._base import FrequencyAttribution
from .frequency_shapley import (
    FrequencyShapley,
    FrequencyShapleyResult,
    centered_attributions,
    negative_frequency_mask,
    positive_frequency_mask,
    radial_average,
    reconstruct_from_mask,
)
from .occluded_frequency import OccludedFrequency, plot_group_scores
from .spectral_band_shapley import BandImportance, SpectralBandShapley

__all__ = [
    "BandImportance",
    "FrequencyAttribution",
    "OccludedFrequency",
    "SpectralBandShapley",
    "plot_group_scores",
    "FrequencyShapley",
    "FrequencyShapleyResult",
    "centered_attributions",
    "negative_frequency_mask",
    "positive_frequency_mask",
    "radial_average",
    "reconstruct_from_mask",
]
