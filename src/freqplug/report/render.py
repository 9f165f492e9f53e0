"""Render a :class:`~freqplug.report.ProfileResult`: ``report.md``, a self-contained ``report.html``
(plots embedded as base64 PNG data URIs, no external resource), ``metrics.json`` and PNG plots.

Every section comes from a stage record (:mod:`freqplug.report.stages`): its title, description,
table rows, plot and comparison rows; this module only lays them out.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import comparison as _correlation
from . import stages as _stages
from .plots import PlotView


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _rows(stage: _stages.Stage, metrics: Dict[str, Any]) -> List[Tuple[str, Any]]:
    """(label, value) rows of a stage's table for one model."""
    if "skipped" in metrics:
        return [("skipped", metrics["skipped"])]
    return list(stage.rows(metrics))


def _plot(stage: _stages.Stage, result, dpi: int, path: Path) -> Optional[Path]:
    if stage.plot is None:
        return None
    names = [n for n in result.metrics["models"] if stage.name in result.metrics["models"][n]
             and "skipped" not in result.metrics["models"][n][stage.name]]
    if not names:
        return None
    view = PlotView(names=names, metrics={n: result.metrics["models"][n][stage.name] for n in names},
                    arrays={n: result.arrays.get(n, {}).get(stage.name, {}) for n in names},
                    settings=result.metrics.get("settings", {}))
    figure = stage.plot(view)
    if figure is None:
        return None
    figure.savefig(path, dpi=dpi)
    return path


# ------------------------------------------------------------------------------------ documents
def _tables(result) -> Tuple[List[str], Dict[str, Tuple[List[str], List[List[str]]]]]:
    names = list(result.metrics["models"])
    tables = {}
    for name in result.metrics["stages"]:
        stage = _stages.get_stage(name)
        per_model = {n: _rows(stage, result.metrics["models"][n][name]) for n in names}
        labels = []
        for n in names:  # union of the labels, in first-seen order (a model may have skipped the stage)
            labels += [label for label, _ in per_model[n] if label not in labels]
        body = [[label] + [_fmt(dict(per_model[n]).get(label)) for n in names] for label in labels]
        tables[name] = (["measure"] + names, body)
    return names, tables


def _comparison(result) -> Optional[Tuple[List[str], List[List[str]]]]:
    names = list(result.metrics["models"])
    if len(names) < 2:
        return None
    body = []
    settings = result.metrics.get("settings", {})
    for name in result.metrics["stages"]:
        for label, get in _stages.get_stage(name).comparison:
            label = label(settings) if callable(label) else label
            body.append([label] + [_fmt(_safe(get, result.metrics["models"][n][name])) for n in names])
    return ["measure"] + names, body


def _safe(get, metrics):
    try:
        return get(metrics)
    except (KeyError, TypeError):
        return None


def write_report(result, out_dir: Path, *, dpi: int = 80) -> Dict[str, Path]:
    """Write ``metrics.json``, one PNG per stage that has a plot, ``report.md`` and ``report.html``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: Dict[str, Path] = {}
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(result.metrics, indent=2, default=str, allow_nan=False))
    files["metrics.json"] = metrics_path
    records = [_stages.get_stage(name) for name in result.metrics["stages"]]
    settings = result.metrics.get("settings", {})
    titles = {stage.name: stage.heading(settings) for stage in records}
    plots = {}
    for stage in records:
        path = _plot(stage, result, dpi, out_dir / f"{stage.name}.png")
        if path is not None:
            plots[stage.name] = path
            files[path.name] = path
    names, tables = _tables(result)
    comparison = _comparison(result)
    header = (f"freqplug {result.metrics['freqplug_version']} · preset {result.metrics['preset']} · "
              f"{result.metrics['n_examples']} images · models: {', '.join(names)}")
    threat = result.metrics.get("threat_model")
    if threat:
        header += (f" · threat model {threat['norm']}, eps={_stages.format_eps(threat['eps'], threat['norm'])}"
                   + (" (RobustBench's default)" if threat.get("eps_is_robustbench_default") else ""))

    md = ["# freqplug frequency-robustness profile", "", header, ""]
    correlation_md, correlation_html, correlation_files = comparison_section(result, out_dir, dpi=dpi)
    files.update(correlation_files)
    if comparison:
        md += ["## Comparison", "", *_md_table(*comparison), "", *correlation_md]
    for stage in records:
        md += [f"## {titles[stage.name]}", "", stage.description, "", *_md_table(*tables[stage.name]), ""]
        if stage.name in plots:
            md += [f"![{titles[stage.name]}]({plots[stage.name].name})", ""]
    footer = _footer(result.metrics)
    if footer:
        md += ["## Reproducibility", "", *[f"- {label}: {value}" for label, value in footer["lines"]], ""]
        if footer["timing"]:
            md += [_TIMING_NOTE, "", *_md_table(*footer["timing"]), ""]
        md += ["Exact settings:", "", "```json", footer["settings"], "```", ""]
    (out_dir / "report.md").write_text("\n".join(md))
    files["report.md"] = out_dir / "report.md"

    body = ["<h1>freqplug frequency-robustness profile</h1>", f"<p>{html.escape(header)}</p>"]
    if comparison:
        body += ["<h2>Comparison</h2>", _html_table(*comparison), *correlation_html]
    for stage in records:
        title = html.escape(titles[stage.name])
        body += [f'<h2 id="{stage.name}">{title}</h2>', f"<p>{html.escape(stage.description)}</p>",
                 _html_table(*tables[stage.name])]
        if stage.name in plots:
            data = base64.b64encode(plots[stage.name].read_bytes()).decode("ascii")
            body.append(f'<img alt="{title}" src="data:image/png;base64,{data}">')
    if footer:
        items = "".join(f"<li>{html.escape(label)}: {html.escape(str(value))}</li>" for label, value in footer["lines"])
        body += ['<footer id="reproducibility"><h2>Reproducibility</h2>', f"<ul>{items}</ul>"]
        if footer["timing"]:
            body += [f"<p>{_TIMING_NOTE}</p>", _html_table(*footer["timing"])]
        body += [f"<details><summary>Exact settings</summary><pre>{html.escape(footer['settings'])}</pre></details>",
                 "</footer>"]
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>freqplug profile</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
            "img{max-width:100%}footer{margin-top:2em;border-top:1px solid #ccc;font-size:0.9em}"
            "pre{white-space:pre-wrap;font-size:0.85em}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    (out_dir / "report.html").write_text(page)
    files["report.html"] = out_dir / "report.html"
    return files


_TIMING_NOTE = "Wall time per stage (seconds; c = read from the cache, timed when it was computed):"

#: What the AutoAttack backend names of :class:`freqplug.eval.AutoAttackRunner` stand for.
_BACKEND_NAMES = {"autoattack": "the official fra31/auto-attack package", "pyautoattack": "pyautoattack",
                  "torchattacks": "torchattacks' AutoAttack"}


def _footer(metrics: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """What the report's footer shows: seed, versions, backend, device, dtype, wall times and exact settings.

    None for metrics written before these were recorded (schema < 3).
    """
    provenance = metrics.get("provenance")
    if provenance is None:
        return None
    versions = provenance.get("versions", {})
    installed = " · ".join(f"{package} {version}" for package, version in versions.items() if version is not None)
    missing = [package for package, version in versions.items() if version is None]
    names = list(metrics["models"])

    def per_model(values: Dict[str, Any]) -> str:
        if not values:
            return "n/a"
        if len(names) == 1:
            return str(next(iter(values.values())))
        return ", ".join(f"{n}: {v}" for n, v in values.items())

    backends = {n: f"{b} ({_BACKEND_NAMES.get(b, b)} {versions.get(b) or ''})".replace(" )", ")")
                for n, b in provenance.get("autoattack_backend", {}).items()}
    lines = [("seed", metrics.get("seed")), ("preset", metrics.get("preset")), ("images", metrics.get("n_examples")),
             ("versions", installed + (f" (not installed: {', '.join(missing)})" if missing else "")),
             ("AutoAttack backend", per_model(backends)
              if "autoattack" in metrics.get("stages", ()) else "not run"),
             ("device", per_model(provenance.get("device", {}))), ("dtype", per_model(provenance.get("dtype", {}))),
             ("torch threads", provenance.get("torch_threads")), ("processes", provenance.get("world_size")),
             ("platform", provenance.get("platform"))]
    timing = metrics.get("timing", {})
    table = None
    if timing:  # a cached stage shows the wall time of the run that computed it
        rows = []
        for stage in metrics["stages"]:
            row = [stage]
            for n in names:
                entry = timing.get(n, {}).get(stage)
                row.append("n/a" if entry is None else f"{entry['seconds']:.2f}" + (" c" if entry["cached"] else ""))
            rows.append(row)
        total = ["total"] + [f"{sum(e['seconds'] for e in timing.get(n, {}).values()):.2f}" for n in names]
        table = (["stage"] + names, rows + [total])
    settings = json.dumps(metrics.get("settings", {}), indent=1, sort_keys=True, default=str)
    return {"lines": lines, "timing": table, "settings": settings}


def _md_table(head: List[str], body: List[List[str]]) -> List[str]:
    def esc(cell) -> str:
        return str(cell).replace("|", "\\|")

    return ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(map(esc, row)) + " |" for row in body]


def _html_table(head: List[str], body: List[List[str]]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{cells}</tr>{rows}</table>"


def comparison_section(result, out_dir: Optional[Path] = None, *, dpi: int = 80
                       ) -> Tuple[List[str], List[str], Dict[str, Path]]:
    """The report's cross-model correlation block (markdown lines, HTML parts, written files).

    With one model there is no block; with fewer than 3 models the block says so; otherwise a table of
    the correlations and, when ``out_dir`` is given, the scatter plot ``cross_model_correlation.png``.
    """
    names = list(result.metrics["models"])
    if len(names) < 2:
        return [], [], {}
    title = "Cross-model correlation"
    intro = ("Pearson's r and Spearman's ρ (two-sided p in parentheses) across the profiled models between "
             "each frequency measure and robustness (Luo2024 Figs. 8-11; B_low: Chan2022; HF attack: Wang2020b). "
             "n models is small: read the signs, not the p-values.")
    if len(names) < _correlation.MIN_MODELS:
        note = f"n/a, need >= {_correlation.MIN_MODELS} models (this run has {len(names)})."
        return [f"### {title}", "", note, ""], [f"<h3>{title}</h3>", f"<p>{html.escape(note)}</p>"], {}
    correlation = _correlation.cross_model_correlation(result)
    if not correlation.rows:
        note = "n/a: no pair of a frequency measure and a robustness measure was run for these models."
        return [f"### {title}", "", note, ""], [f"<h3>{title}</h3>", f"<p>{html.escape(note)}</p>"], {}
    table = correlation.table()
    md = [f"### {title}", "", intro, "", *_md_table(*table), ""]
    parts = [f"<h3>{title}</h3>", f"<p>{html.escape(intro)}</p>", _html_table(*table)]
    files: Dict[str, Path] = {}
    if out_dir is not None:
        figure = correlation.plot()
        if figure is not None:
            path = Path(out_dir) / "cross_model_correlation.png"
            figure.savefig(path, dpi=dpi)
            files[path.name] = path
            md += [f"![{title}]({path.name})", ""]
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f'<img alt="{title}" src="data:image/png;base64,{data}">')
    return md, parts, files
