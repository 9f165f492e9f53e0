"""Render a :class:`~freqplug.report.ProfileResult`: ``report.md``, a self-contained ``report.html``
(plots embedded as base64 PNG data URIs, no external resource), ``metrics.json`` and PNG plots.

Plots use matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend change).
With several models, curves are overlaid and maps are drawn side by side.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from .profile import DESCRIPTIONS

TITLES = {
    "clean_accuracy": "Clean accuracy",
    "autoattack": "AutoAttack robust accuracy",
    "perturbation_spectrum": "Spectra of the AutoAttack perturbations (RCT, spectral SNR)",
    "masked_noise": "Masked-noise error table",
    "band_shapley": "Spectral importance distribution and SRS",
    "frequency_shapley": "Frequency Shapley values",
    "frequency_bias": "Frequency bias B_low of the input Jacobians",
    "hf_attack": "HF attack",
    "occluded_frequency": "Occluded-frequency class averages",
}


def _figure(ncols: int = 1, nrows: int = 1, width: float = 3.6, height: float = 3.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(nrows, ncols, squeeze=False)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


# ------------------------------------------------------------------------------------ per-stage content
def _rows(stage: str, metrics: Dict[str, Any]) -> List[Tuple[str, Any]]:
    """(label, value) rows of a stage's table, one value per model."""
    if "skipped" in metrics:
        return [("skipped", metrics["skipped"])]
    if stage == "clean_accuracy":
        return [("accuracy", metrics["accuracy"]), ("correct", metrics["n_correct"])]
    if stage == "autoattack":
        rows = [("clean accuracy", metrics["clean_accuracy"]), ("robust accuracy", metrics["robust_accuracy"])]
        rows += [(f"robust after {a}", v) for a, v in metrics["robust_accuracy_by_attack"].items() if a != "clean"]
        rows += [("attacks", ", ".join(metrics["attacks"])), ("threat model", f"{metrics['norm']} eps={metrics['eps']:.4g}"),
                 ("backend", metrics["backend"])]
        return rows
    if stage == "perturbation_spectrum":
        if not metrics.get("n_perturbed"):
            return [("perturbed images", 0)]
        return [("perturbed images", metrics["n_perturbed"]), ("mean RCT", metrics["rct_mean"]),
                ("mean RCT, lowest quarter", metrics["rct_low_quarter"]),
                ("mean RCT, high half", metrics["rct_high_half"]),
                ("SNR at r=1 (dB)", metrics["snr_db"][1] if len(metrics["snr_db"]) > 1 else None),
                ("SNR at r_max (dB)", metrics["snr_db"][-1])]
    if stage == "masked_noise":
        return [("images", metrics["n_images"])] + [(f"error on {k}", v) for k, v in metrics["error_rate"].items()]
    if stage == "band_shapley":
        return [("SRS", metrics["srs"]), ("bands", metrics["num_bands"]),
                ("SID", " ".join(f"{v:.3f}" for v in metrics["sid"])),
                ("psi", " ".join(f"{v:.3g}" for v in metrics["psi"])),
                ("equal-psi test p", metrics["p_value"]), ("distinguishable from noise", metrics["distinguishable"])]
    if stage == "frequency_shapley":
        return [("images", metrics["n_images"]), ("players (patch grid)", metrics["players"]),
                ("permutations", metrics["n_samples"]), ("positive bins", metrics["positive_fraction"]),
                ("negative bins", metrics["negative_fraction"]), ("max |efficiency gap|", metrics["max_abs_efficiency_gap"])]
    if stage == "frequency_bias":
        return [("B_low", metrics["b_low"])]
    if stage == "hf_attack":
        return [("success rate", metrics["success_rate"]), ("mean radius of success (bins)", metrics["mean_radius"]),
                ("smallest radius tried", metrics["min_radius"])]
    if stage == "occluded_frequency":
        mean = [v for v in metrics["mean"] if v is not None]
        top = max(range(len(mean)), key=lambda i: mean[i]) if mean else None
        return [("ring width (DCT bins)", metrics["ring_width"]), ("ring with the largest mean drop", top), ("largest mean drop", max(mean) if mean else None),
                ("classes", sum(1 for c in metrics["class_counts"] if c))]
    return []


def _plot(stage: str, result, dpi: int, path: Path) -> Optional[Path]:
    names = [n for n in result.arrays if stage in result.arrays[n]
             and (result.arrays[n][stage] or stage in ("autoattack", "masked_noise"))
             and "skipped" not in result.metrics["models"][n][stage]]
    if not names:
        return None
    arrays = {n: result.arrays[n][stage] for n in names}
    metrics = {n: result.metrics["models"][n][stage] for n in names}
    if stage == "autoattack":
        figure, axes = _figure()
        ax = axes[0, 0]
        width = 0.8 / len(names)
        for i, n in enumerate(names):
            ax.bar([j + i * width for j in range(2)], [metrics[n]["clean_accuracy"], metrics[n]["robust_accuracy"]],
                   width=width, label=n)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(2)], ["clean", "robust"])
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    elif stage == "perturbation_spectrum":
        figure, axes = _figure(len(names) + 1)
        for ax, n in zip(axes[0], names):
            image = ax.imshow(arrays[n]["rct"].clamp_min(1e-6).log10().numpy(), cmap="viridis")
            ax.set_title(f"log10 RCT: {n}", fontsize=8)
            ax.set_xlabel("DCT column (low -> high)")
            figure.colorbar(image, ax=ax, shrink=0.8)
        ax = axes[0, -1]
        for n in names:
            ax.plot(arrays[n]["snr_db"].numpy(), marker="o", markersize=2, label=n)
        ax.set_xlabel("radius (DFT bins)")
        ax.set_ylabel("ESD(x) / ESD(delta) [dB]")
        ax.set_title("spectral SNR", fontsize=8)
        ax.legend(fontsize=7)
    elif stage == "masked_noise":
        figure, axes = _figure(width=5.0)
        ax = axes[0, 0]
        keys = list(metrics[names[0]]["error_rate"])
        width = 0.8 / len(names)
        for i, n in enumerate(names):
            ax.bar([j + i * width for j in range(len(keys))], [metrics[n]["error_rate"][k] for k in keys],
                   width=width, label=n)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], [k.replace("x+delta", "x+δ") for k in keys],
                      fontsize=7, rotation=20)
        ax.set_ylim(0, 1)
        ax.set_ylabel("error rate")
        ax.legend(fontsize=7)
    elif stage == "band_shapley":
        figure, axes = _figure(2)
        for n in names:
            bands = range(len(arrays[n]["sid"]))
            axes[0, 0].plot(bands, arrays[n]["sid"].numpy(), marker="o", label=n)
            axes[0, 1].errorbar(bands, arrays[n]["psi"].numpy(), yerr=arrays[n]["stderr"].numpy(), marker="o",
                                capsize=2, label=n)
        axes[0, 0].set_title("SID (min-shifted, L1-normalized)", fontsize=8)
        axes[0, 1].set_title("band Shapley value ψ ± stderr", fontsize=8)
        for ax in axes[0]:
            ax.set_xlabel("band (low -> high)")
            ax.legend(fontsize=7)
    elif stage == "frequency_shapley":
        m = arrays[names[0]]["images"].shape[0]
        figure, axes = _figure(max(len(names) + 1, m), 1 + 3 * len(names), width=2.0, height=2.0)
        for ax in axes.flat:
            ax.axis("off")
        for i, n in enumerate(names):
            ax = axes[0, i]
            ax.axis("on")
            limit = float(arrays[n]["mean_map"].abs().max()) or 1.0
            ax.imshow(arrays[n]["mean_map"].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"mean φ (centered): {n}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        ax = axes[0, len(names)]
        ax.axis("on")
        for n in names:
            ax.plot(arrays[n]["radial"].numpy(), label=n)
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_title("radial average of φ", fontsize=7)
        ax.set_xlabel("radius (bins)", fontsize=7)
        ax.legend(fontsize=6)
        for i, n in enumerate(names):
            for j in range(arrays[n]["images"].shape[0]):
                for r, (label, images) in enumerate((("image", arrays[n]["images"]), ("PFC", arrays[n]["pfc"]),
                                                     ("NFC", arrays[n]["nfc"]))):
                    ax = axes[1 + 3 * i + r, j]
                    picture = images[j]
                    if label != "image":  # signed components: stretch to [0, 1] for display
                        picture = (picture - picture.min()) / (picture.max() - picture.min()).clamp_min(1e-12)
                    ax.imshow(picture.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(),
                              cmap="gray" if picture.shape[0] == 1 else None)
                    ax.set_title(f"{label} {j}" + (f" ({n})" if len(names) > 1 else ""), fontsize=7)
    elif stage == "frequency_bias":
        figure, axes = _figure(len(names))
        for ax, n in zip(axes[0], names):
            image = ax.imshow(arrays[n]["jacobian_spectrum"].clamp_min(1e-12).log10().numpy(), cmap="magma")
            ax.set_title(f"log10 |DFT(J)| (centered): {n}\nB_low = {metrics[n]['b_low']:.3g}", fontsize=8)
            figure.colorbar(image, ax=ax, shrink=0.8)
    elif stage == "hf_attack":
        figure, axes = _figure()
        ax = axes[0, 0]
        for n in names:
            radius = arrays[n]["found_radius"]
            radius = radius[~torch.isnan(radius)]
            if radius.numel():
                ax.hist(radius.numpy(), bins=12, alpha=0.6, label=f"{n} ({metrics[n]['success_rate']:.0%} success)")
        ax.set_xlabel("radius of the successful low-pass image (bins)")
        ax.set_ylabel("images")
        ax.legend(fontsize=7)
    elif stage == "occluded_frequency":
        figure, axes = _figure(len(names) + 1)
        ax = axes[0, 0]
        for n in names:
            ax.plot(arrays[n]["mean"].numpy(), marker="o", markersize=2, label=n)
        ax.set_xlabel("DCT ring max(u, v) // ring width (low -> high)")
        ax.set_ylabel("true-class logit drop")
        ax.legend(fontsize=7)
        for ax, n in zip(axes[0, 1:], names):
            image = ax.imshow(arrays[n]["class_means"].nan_to_num(0.0).numpy(), aspect="auto", cmap="viridis")
            ax.set_title(f"per class: {n}", fontsize=8)
            ax.set_xlabel("ring")
            ax.set_ylabel("class")
            figure.colorbar(image, ax=ax, shrink=0.8)
    else:
        return None
    figure.savefig(path, dpi=dpi)
    return path


# ------------------------------------------------------------------------------------ documents
COMPARISON = [
    ("clean accuracy", "clean_accuracy", lambda m: m["accuracy"]),
    ("robust accuracy (AutoAttack)", "autoattack", lambda m: m["robust_accuracy"]),
    ("error on x+δ_high", "masked_noise", lambda m: m["error_rate"].get("x+delta_high")),
    ("SRS", "band_shapley", lambda m: m["srs"]),
    ("B_low", "frequency_bias", lambda m: m["b_low"]),
    ("HF attack success", "hf_attack", lambda m: m["success_rate"]),
]


def _tables(result) -> Tuple[List[str], Dict[str, Tuple[List[str], List[List[str]]]]]:
    names = list(result.metrics["models"])
    tables = {}
    for stage in result.metrics["stages"]:
        per_model = {n: _rows(stage, result.metrics["models"][n][stage]) for n in names}
        labels = [label for label, _ in per_model[names[0]]]
        body = [[label] + [_fmt(dict(per_model[n]).get(label)) for n in names] for label in labels]
        tables[stage] = (["measure"] + names, body)
    return names, tables


def _comparison(result) -> Optional[Tuple[List[str], List[List[str]]]]:
    names = list(result.metrics["models"])
    if len(names) < 2:
        return None
    body = []
    for label, stage, get in COMPARISON:
        if stage in result.metrics["stages"]:
            body.append([label] + [_fmt(_safe(get, result.metrics["models"][n][stage])) for n in names])
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
    plots = {}
    for stage in result.metrics["stages"]:
        path = _plot(stage, result, dpi, out_dir / f"{stage}.png")
        if path is not None:
            plots[stage] = path
            files[path.name] = path
    names, tables = _tables(result)
    comparison = _comparison(result)
    header = (f"freqplug {result.metrics['freqplug_version']} · preset {result.metrics['preset']} · "
              f"{result.metrics['n_examples']} images · models: {', '.join(names)}")

    md = ["# freqplug frequency-robustness profile", "", header, ""]
    if comparison:
        md += ["## Comparison", "", *_md_table(*comparison), ""]
    for stage in result.metrics["stages"]:
        md += [f"## {TITLES[stage]}", "", DESCRIPTIONS[stage], "", *_md_table(*tables[stage]), ""]
        if stage in plots:
            md += [f"![{TITLES[stage]}]({plots[stage].name})", ""]
    (out_dir / "report.md").write_text("\n".join(md))
    files["report.md"] = out_dir / "report.md"

    body = [f"<h1>freqplug frequency-robustness profile</h1>", f"<p>{html.escape(header)}</p>"]
    if comparison:
        body += ["<h2>Comparison</h2>", _html_table(*comparison)]
    for stage in result.metrics["stages"]:
        body += [f'<h2 id="{stage}">{html.escape(TITLES[stage])}</h2>', f"<p>{html.escape(DESCRIPTIONS[stage])}</p>",
                 _html_table(*tables[stage])]
        if stage in plots:
            data = base64.b64encode(plots[stage].read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(TITLES[stage])}" src="data:image/png;base64,{data}">')
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>freqplug profile</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
            "img{max-width:100%}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    (out_dir / "report.html").write_text(page)
    files["report.html"] = out_dir / "report.html"
    return files


def _md_table(head: List[str], body: List[List[str]]) -> List[str]:
    esc = lambda s: str(s).replace("|", "\\|")
    return ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(map(esc, row)) + " |" for row in body]


def _html_table(head: List[str], body: List[List[str]]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{cells}</tr>{rows}</table>"
