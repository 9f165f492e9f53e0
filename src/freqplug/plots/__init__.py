"""freqplug.plots: figures of frequency attributions (matplotlib, the ``report`` extra, imported on use)."""

from .frequency_attr import visualize_frequency_attr

__all__ = ["visualize_frequency_attr"]
