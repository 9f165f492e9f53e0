"""Helpers for the report tests: a toy stage record and small, fast profile calls."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from freqplug.report import stages

TOY_ROW = "toy mean logit"


def _run_toy(ctx):
    with torch.no_grad():
        logits = ctx.model(ctx.x.to(ctx.device))
    value = float(logits.mean()) * ctx.own["scale"]
    return {"metrics": {"mean_logit": value}, "arrays": {"per_image": logits.mean(1).cpu()}}


def _plot_toy(view):
    figure, axes = stages.plots.new_figure()
    for name in view.names:
        axes[0, 0].plot(view.arrays[name]["per_image"].numpy(), label=name)
    axes[0, 0].legend()
    return figure


def toy_stage(name: str = "toy_stage", run=_run_toy, **changes) -> stages.Stage:
    """A cheap stage record: the mean logit times the ``scale`` setting, with a row and a plot."""
    fields = dict(name=name, title="Toy stage title", description="A toy stage registered by a test.",
                  presets={p: {"scale": 1.0} for p in stages.PRESET_NAMES}, run=run,
                  rows=lambda m: [(TOY_ROW, m["mean_logit"])], plot=_plot_toy)
    fields.update(changes)
    return stages.Stage(**fields)


@contextmanager
def registered(stage: stages.Stage):
    """Register ``stage`` for the duration of the block, and remove it afterwards whatever happens."""
    stages.register(stage)
    try:
        yield stage
    finally:
        stages.unregister(stage.name)
