"""Attribution methods over frequencies, with Captum's conventions."""

from .frequency_shapley import (
    FrequencyShapley,
    FrequencyShapleyResult,
    centered_attributions,
    negative_frequency_mask,
    positive_frequency_mask,
    radial_average,
    reconstruct_from_mask,
)

__all__ = [
    "FrequencyShapley",
    "FrequencyShapleyResult",
    "centered_attributions",
    "negative_frequency_mask",
    "positive_frequency_mask",
    "radial_average",
    "reconstruct_from_mask",
]
