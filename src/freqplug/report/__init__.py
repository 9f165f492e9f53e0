"""freqplug.report: ``profile(model, x, y, ...)`` measures a model's frequency robustness and writes a
report (``report.md``, self-contained ``report.html``, ``metrics.json``, PNG plots). The command
line is ``freqplug profile``."""

from .profile import DESCRIPTIONS, PRESETS, SCHEMA_VERSION, SHARDED_STAGES, STAGES, ProfileResult, input_jacobians, profile
from .render import write_report

__all__ = ["DESCRIPTIONS", "PRESETS", "SCHEMA_VERSION", "SHARDED_STAGES", "STAGES", "ProfileResult",
           "input_jacobians", "profile", "write_report"]
