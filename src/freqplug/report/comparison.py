"""Cross-model correlation: do the frequency measures of several models predict their robustness?

Luo2024 (Figs. 8-11) correlates the spectral robustness score (SRS) of many models with their
robust accuracy and their accuracy under common corruptions; the same question applies to the
frequency bias B_low of the input Jacobians (Chan2022) and to the HF attack's success rate
(Wang2020b). With several models in one :func:`freqplug.profile` run, this module takes each
model's measures from the run's metrics, computes Pearson's r and Spearman's rho (scipy) over the
models with the number of models n, and draws one scatter plot per pair with the models' names.

No model is evaluated here: the cost is that of the profile run that produced the metrics.
A correlation over fewer than 3 models is not computed (two points always lie on a line); it is
reported as ``"n/a, need >= 3 models"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

#: Minimum number of models a correlation is computed over.
MIN_MODELS = 3


def _finite_or_none(value) -> Optional[float]:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _mean_over_corruptions(metrics: Mapping[str, Any]):
    """The corruptions stage's accuracy averaged over its corruptions (each already averaged over severities)."""
    per_corruption = metrics.get("mean_accuracy")
    if not isinstance(per_corruption, Mapping) or not per_corruption:
        return None
    values = [_finite_or_none(v) for v in per_corruption.values()]
    return None if any(v is None for v in values) else sum(values) / len(values)


#: measure -> (stage, get(stage metrics) -> number or None). A stage that did not run, was skipped or
#: has no value leaves the measure out for that model.
MEASURES: Dict[str, Tuple[str, Callable[[Mapping[str, Any]], Any]]] = {
    "clean accuracy": ("clean_accuracy", lambda m: m.get("accuracy")),
    "robust accuracy": ("autoattack", lambda m: m.get("robust_accuracy")),
    # the "corruptions" stage (freqplug.eval.corruption_robustness): {"mean_accuracy": {corruption: accuracy}}
    "corruption accuracy": ("corruptions", _mean_over_corruptions),
    "SRS": ("band_shapley", lambda m: m.get("srs")),
    "B_low": ("frequency_bias", lambda m: m.get("b_low")),
    "HF attack success": ("hf_attack", lambda m: m.get("success_rate")),
}

#: The pairs of Luo2024 Figs. 8-11 (SRS) and the same for B_low and the HF attack: (x, y) measures.
DEFAULT_PAIRS: Tuple[Tuple[str, str], ...] = (
    ("SRS", "robust accuracy"), ("SRS", "corruption accuracy"),
    ("B_low", "robust accuracy"), ("B_low", "corruption accuracy"),
    ("HF attack success", "robust accuracy"), ("HF attack success", "corruption accuracy"),
)


@dataclass
class CorrelationRow:
    """The correlation of one pair of measures over the models that have both.

    Attributes:
        x, y: measure names. models: the models used (those with both values), in input order;
        n: their number. pearson, spearman: the coefficients (None when not computed, see ``note``);
        pearson_p, spearman_p: scipy's two-sided p-values. note: why a coefficient is missing ("" if none).
    """

    x: str
    y: str
    models: List[str]
    x_values: List[float]
    y_values: List[float]
    pearson: Optional[float] = None
    pearson_p: Optional[float] = None
    spearman: Optional[float] = None
    spearman_p: Optional[float] = None
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.models)

    def to_dict(self) -> Dict[str, Any]:
        return {"x": self.x, "y": self.y, "n": self.n, "models": list(self.models), "x_values": list(self.x_values),
                "y_values": list(self.y_values), "pearson": self.pearson, "pearson_p": self.pearson_p,
                "spearman": self.spearman, "spearman_p": self.spearman_p, "note": self.note}


@dataclass
class CrossModelCorrelation:
    """Correlations between per-model measures (see :func:`cross_model_correlation`).

    Attributes:
        measures: ``{model: {measure: value}}`` the correlations were computed from.
        rows: one :class:`CorrelationRow` per pair, in the order the pairs were given.
    """

    measures: Dict[str, Dict[str, float]]
    rows: List[CorrelationRow] = field(default_factory=list)

    def __getitem__(self, pair: Tuple[str, str]) -> CorrelationRow:
        for row in self.rows:
            if (row.x, row.y) == tuple(pair):
                return row
        raise KeyError(f"no correlation for pair {pair!r}; have {[(r.x, r.y) for r in self.rows]}")

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able: ``{"measures": ..., "correlations": [row.to_dict(), ...]}``."""
        return {"measures": {m: dict(v) for m, v in self.measures.items()},
                "correlations": [row.to_dict() for row in self.rows]}

    def table(self) -> Tuple[List[str], List[List[str]]]:
        """(header, body) of the report's table: pair, n, Pearson r (p), Spearman rho (p)."""
        head = ["measure x", "measure y", "n models", "Pearson r (p)", "Spearman ρ (p)"]
        body = []
        for row in self.rows:
            if row.pearson is None:
                body.append([row.x, row.y, str(row.n), row.note, row.note])
            else:
                body.append([row.x, row.y, str(row.n), f"{row.pearson:+.3f} ({row.pearson_p:.2g})",
                             f"{row.spearman:+.3f} ({row.spearman_p:.2g})"])
        return head, body

    def plot(self):
        """One scatter plot per pair with at least one model, points labelled with the model names.

        Returns:
            a matplotlib ``Figure`` (object API, Agg canvas; no pyplot), or None when no pair has a model.
        """
        from .._optional import require

        require("matplotlib", "the cross-model correlation plot")
        from .plots import new_figure

        rows = [row for row in self.rows if row.n]
        if not rows:
            return None
        ncols = min(3, len(rows))  # 3 per line: 6 pairs (corruptions run) stay readable
        nrows = -(-len(rows) // ncols)
        figure, axes = new_figure(ncols=ncols, nrows=nrows, width=3.4, height=3.0)
        for ax in axes.flat[len(rows):]:
            ax.set_visible(False)
        for ax, row in zip(axes.flat, rows):
            ax.scatter(row.x_values, row.y_values)
            labels: Dict[Tuple[float, float], List[str]] = {}
            for name, a, b in zip(row.models, row.x_values, row.y_values):
                labels.setdefault((a, b), []).append(name)  # models on the same point share one label
            for (a, b), point_names in labels.items():
                ax.annotate(", ".join(point_names), (a, b), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel(row.x)
            ax.set_ylabel(row.y)
            if row.pearson is None:
                ax.set_title(row.note, fontsize=8)
            else:
                ax.set_title(f"Pearson r={row.pearson:+.2f}, Spearman rho={row.spearman:+.2f}, n={row.n}", fontsize=8)
        return figure


def profile_measures(result) -> Dict[str, Dict[str, float]]:
    """Each model's measures from a profile run: ``{model: {measure: value}}`` (see :data:`MEASURES`).

    A measure whose stage was not run, was skipped or has no value (e.g. HF attack success with no
    correctly classified image) is absent for that model.

    Args:
        result: a :class:`~freqplug.report.ProfileResult` or the content of its ``metrics.json``.
    """
    metrics = getattr(result, "metrics", result)
    if not isinstance(metrics, Mapping) or not isinstance(metrics.get("models"), Mapping):
        raise TypeError(f"`result` must be a freqplug.report.ProfileResult or its metrics.json dict (with a "
                        f"'models' entry), got {type(result).__name__}")
    out: Dict[str, Dict[str, float]] = {}
    for model, stages in metrics["models"].items():
        out[model] = {}
        for measure, (stage, get) in MEASURES.items():
            entry = stages.get(stage)
            if not isinstance(entry, Mapping) or "skipped" in entry:
                continue
            value = _finite_or_none(get(entry))
            if value is not None:
                out[model][measure] = value
    return out


def _check_measures(measures) -> Dict[str, Dict[str, float]]:
    if hasattr(measures, "metrics") or (isinstance(measures, Mapping) and "schema_version" in measures):
        return profile_measures(measures)
    if not isinstance(measures, Mapping):
        raise TypeError(f"`measures` must be {{model: {{measure: value}}}}, a ProfileResult or its metrics.json "
                        f"dict, got {type(measures).__name__}")
    out = {}
    for model, values in measures.items():
        if not isinstance(model, str):
            raise TypeError(f"`measures` keys must be model names (str), got {type(model).__name__}")
        if not isinstance(values, Mapping):
            raise TypeError(f"`measures[{model!r}]` must be a dict {{measure: value}}, got {type(values).__name__}")
        out[model] = {}
        for measure, value in values.items():
            if value is None:
                continue  # not measured for this model
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"`measures[{model!r}][{measure!r}]` must be a number or None, "
                                f"got {type(value).__name__}")
            if not math.isfinite(float(value)):
                raise ValueError(f"`measures[{model!r}][{measure!r}]` must be finite, got {value}")
            out[model][measure] = float(value)
    return out


def cross_model_correlation(measures, pairs: Optional[Sequence[Tuple[str, str]]] = None, *,
                            min_models: int = MIN_MODELS) -> CrossModelCorrelation:
    """Pearson's r and Spearman's rho between per-model measures, across models (Luo2024 Figs. 8-11).

    For each pair (x, y) the models that have both measures are used; with n of them,
    r = cov(x, y) / (std(x) std(y)) and rho is r of the ranks (ties get their mean rank), both with
    scipy's two-sided p-value (``scipy.stats.pearsonr``/``spearmanr``). Evaluates no model.

    Args:
        measures: ``{model: {measure: value}}`` (None = not measured), a
            :class:`~freqplug.report.ProfileResult` or its ``metrics.json`` dict (then
            :func:`profile_measures` extracts SRS, robust/corruption accuracy, B_low, HF attack success).
        pairs: (x, y) measure names; default :data:`DEFAULT_PAIRS`, leaving out pairs with a measure no
            model has (e.g. corruption accuracy when that stage did not run). A pair given explicitly must
            name measures at least one model has.
        min_models: fewest models a correlation is computed over (at least 3); below, the row says
            ``"n/a, need >= 3 models"``.

    Returns:
        :class:`CrossModelCorrelation`. A pair where one measure is the same for every model has no
        correlation (note ``"n/a, <measure> is the same for every model"``).
    """
    from .._validation import check_positive_int

    min_models = check_positive_int(min_models, "min_models")
    if min_models < 3:
        raise ValueError(f"`min_models` must be >= 3 (two points always lie on a line), got {min_models}")
    values = _check_measures(measures)
    present = {m for v in values.values() for m in v}
    if pairs is None:
        pairs = [p for p in DEFAULT_PAIRS if p[0] in present and p[1] in present]
    else:
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
            raise TypeError(f"`pairs` must be a sequence of (x, y) measure names, got {type(pairs).__name__}")
        for pair in pairs:
            if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"`pairs` must hold (x, y) pairs of measure names, got {pair!r}")
            for measure in pair:
                if measure not in present:
                    raise ValueError(f"`pairs` names the measure {measure!r}, which no model has; measures "
                                     f"present: {', '.join(sorted(present)) or 'none'}")
    stats = require_scipy_stats()
    rows = []
    for x_name, y_name in pairs:
        models = [m for m, v in values.items() if x_name in v and y_name in v]
        row = CorrelationRow(x_name, y_name, models, [values[m][x_name] for m in models],
                             [values[m][y_name] for m in models])
        if row.n < min_models:
            row.note = f"n/a, need >= {min_models} models (have {row.n})"
        elif len(set(row.x_values)) == 1 or len(set(row.y_values)) == 1:
            constant = x_name if len(set(row.x_values)) == 1 else y_name
            row.note = f"n/a, {constant} is the same for every model"
        else:
            pearson = stats.pearsonr(row.x_values, row.y_values)
            spearman = stats.spearmanr(row.x_values, row.y_values)
            row.pearson, row.pearson_p = float(pearson[0]), float(pearson[1])
            row.spearman, row.spearman_p = float(spearman[0]), float(spearman[1])
        rows.append(row)
    return CrossModelCorrelation(measures=values, rows=rows)


def require_scipy_stats():
    from .._optional import require

    return require("scipy.stats", "the cross-model correlation")
