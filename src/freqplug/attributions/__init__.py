"""Attribution methods over frequencies, with Captum's conventions.

Names are imported on first use (PEP 562), so that ``import freqplug.attributions`` is cheap until one is read.
"""

from .._lazy import attach, names_from

_LAZY = names_from({
    "._base": ["FrequencyAttribution"],
    ".frequency_shapley": ["FrequencyShapley", "FrequencyShapleyResult", "centered_attributions",
                           "negative_frequency_mask", "positive_frequency_mask", "radial_average",
                           "reconstruct_from_mask"],
    ".occluded_frequency": ["OccludedFrequency", "plot_group_scores"],
    ".spectral_band_shapley": ["BandImportance", "SpectralBandShapley"],
})

__getattr__, __dir__ = attach(__name__, _LAZY)

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
