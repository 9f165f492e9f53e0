"""Plot of the report's ``corruptions`` stage: accuracy per corruption against the B_low of its noise
(Chan2022 Table 1 as a picture) and the radial energy profile of every corruption's noise."""

from __future__ import annotations

from .._optional import require

__all__ = ["plot_corruptions"]


def plot_corruptions(view):
    """Left: mean accuracy over severities per corruption (y) against the corruption noise's B_low (x), one
    marker series per model, corruptions named. Right: the noise's energy per radial frequency (log scale), one
    line per corruption (the same for every model: the corruptions depend on the images and the seed only).

    Args:
        view: :class:`freqplug.report.plots.PlotView` of the stage.

    Returns:
        A matplotlib ``Figure`` (Agg), or None when no model has results.
    """
    names = view.with_arrays()
    if not names:
        return None
    figure_module = require("matplotlib.figure", "the corruptions plot of freqplug's report")
    backend = require("matplotlib.backends.backend_agg", "the corruptions plot of freqplug's report")
    figure = figure_module.Figure(figsize=(10.0, 4.0), layout="constrained")
    backend.FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, width_ratios=(3, 2))

    first = view.metrics[names[0]]
    corruptions = list(first["corruptions"])
    b_low = [first["frequency_bias"][c] for c in corruptions]
    for n in names:
        accuracy = [view.metrics[n]["mean_accuracy"][c] for c in corruptions]
        left.scatter(b_low, accuracy, s=18, label=f"{n} (clean {view.metrics[n]['clean_accuracy']:.0%})")
    for c, b in zip(corruptions, b_low):
        left.annotate(c.replace("_", " "), (b, view.metrics[names[0]]["mean_accuracy"][c]), fontsize=6,
                      xytext=(2, 2), textcoords="offset points")
    severities = ", ".join(str(s) for s in first["severities"])
    left.set_xlabel("B_low of the corruption's noise (Chan2022 eq. 10; higher = lower frequency)")
    left.set_ylabel(f"accuracy (mean over severities {severities})")
    left.set_title(f"Accuracy per corruption ({first['n_examples']} images, {first['source']})", fontsize=9)
    left.set_ylim(-0.05, 1.05)
    left.legend(fontsize=7)

    order = sorted(corruptions, key=lambda c: -first["frequency_bias"][c])
    colors = require("matplotlib", "the corruptions plot of freqplug's report").colormaps["viridis"]
    for i, c in enumerate(order):
        profile = view.metrics[names[0]]["radial_profile"][c]
        right.semilogy(range(len(profile)), [max(v, 1e-12) for v in profile], color=colors(i / max(1, len(order) - 1)),
                       linewidth=1, label=c.replace("_", " "))
    right.set_xlabel("radial frequency (DFT bins)")
    right.set_ylabel("noise energy per bin (ESD, Luo2024 eq. 1)")
    right.set_title("Radial energy of corrupted - clean", fontsize=9)
    right.legend(fontsize=5, ncol=2)
    return figure
