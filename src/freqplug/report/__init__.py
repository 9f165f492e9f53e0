"""freqplug.report: ``profile(model, x, y, ...)`` measures a model's frequency robustness and writes a
report (``report.md``, self-contained ``report.html``, ``metrics.json``, PNG plots). The command
line is ``freqplug profile``.

The stages are records in a registry (:mod:`freqplug.report.stages`); ``STAGES``, ``PRESETS``,
``DESCRIPTIONS`` and ``SHARDED_STAGES`` are computed from it each time they are read, so a stage
added with :func:`freqplug.report.stages.register` appears in all of them.
"""

import sys

# Eager on purpose: ``profile`` is both a submodule and the function exported here, and a lazy name would be
# shadowed by the submodule once anything imported it. ``import freqplug`` stays lazy (it does not import report).
from . import stages
from .comparison import CorrelationRow, CrossModelCorrelation, cross_model_correlation, profile_measures
from .estimate import CostEstimate, estimate_cost
from .profile import SCHEMA_VERSION, ProfileResult, input_jacobians, profile
from .render import write_report
from .stages import Stage, StageContext

__all__ = ["DESCRIPTIONS", "PRESETS", "SCHEMA_VERSION", "SHARDED_STAGES", "STAGES", "CorrelationRow",
           "CostEstimate", "CrossModelCorrelation", "ProfileResult", "Stage", "StageContext", "cross_model_correlation",
           "estimate_cost", "input_jacobians", "profile", "profile_measures", "stages", "write_report"]


def __getattr__(name: str):
    # Computed from the registry on every read (PEP 562): never a second, drifting list of stages.
    if name == "STAGES":
        return stages.stage_names()
    if name == "SHARDED_STAGES":
        return stages.sharded_stage_names()
    if name == "PRESETS":
        return {preset: stages.preset_settings(preset) for preset in stages.PRESET_NAMES}
    if name == "DESCRIPTIONS":
        return {stage.name: stage.description for stage in stages.registered()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    # The computed names above are listed too, so that dir() and tab completion show the whole public API.
    return sorted(set(vars(sys.modules[__name__])) | set(__all__))
