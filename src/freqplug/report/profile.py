"""``freqplug.profile``: one call that measures a model's frequency robustness and writes a report.

Every measure is a *stage* that composes an existing freqplug function (nothing is re-implemented):

==========================  ==============================================================  ======
stage                       what it calls                                                   seed
==========================  ==============================================================  ======
``clean_accuracy``          the model itself                                                 -
``autoattack``              :class:`freqplug.eval.AutoAttackRunner`                          -
``perturbation_spectrum``   :func:`freqplug.eval.perturbation_spectrum` on AutoAttack's x_adv 001/004
``masked_noise``            :func:`freqplug.masked_noise_table` (PGD, PFC/NFC via Shapley)   000
``band_shapley``            :meth:`freqplug.SpectralBandShapley.importance` (SID, SRS)       004
``frequency_shapley``       :class:`freqplug.FrequencyShapley` + radial/PFC/NFC helpers      000
``frequency_bias``          :func:`freqplug.spectral.frequency_bias` of input Jacobians      003
``hf_attack``               :class:`freqplug.HFAttack`                                       002
``occluded_frequency``      :meth:`freqplug.OccludedFrequency.class_average_scores`          001
==========================  ==============================================================  ======

Finished stages are cached in ``<out>/cache/<model>/<stage>.pt`` together with a key (stage
settings, data and weights fingerprints); a rerun reuses them unless ``force=True``.

Under ``torch.distributed`` (``torchrun``) the per-example stages ``clean_accuracy``,
``frequency_bias`` and ``hf_attack`` are sharded across ranks (image k on rank k % world) and
gathered; ``band_shapley`` shards itself inside :meth:`SpectralBandShapley.importance`. The other
stages run on rank 0, which alone reads and writes the cache and the report.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._validation import check_choice, check_images, check_labels
from .._version import __version__
from .. import _distributed as _dist

SCHEMA_VERSION = 1

STAGES = (
    "clean_accuracy",
    "autoattack",
    "perturbation_spectrum",
    "masked_noise",
    "band_shapley",
    "frequency_shapley",
    "frequency_bias",
    "hf_attack",
    "occluded_frequency",
)

#: Stages whose per-example work is sharded across ranks under torch.distributed.
SHARDED_STAGES = ("clean_accuracy", "frequency_bias", "hf_attack", "band_shapley")

#: Settings of every preset. "fast": CI and a first look (~1 min on 2 CPU cores, embedded model,
#: 20 images); "default": a few minutes on 2 cores; "gpu": AutoAttack 'standard' and larger budgets.
PRESETS: Dict[str, Dict[str, Any]] = {
    "fast": {
        "batch_size": 128,
        "eps": 8 / 255, "norm": "Linf",
        "autoattack": {"version": "custom", "attacks": ["apgd-ce"], "n_iter": 5, "n_restarts": 1},
        "masked_noise": {"n_images": 10, "pgd_steps": 5, "players": 4, "n_samples": 2},
        "band_shapley": {"num_bands": 4},
        "frequency_shapley": {"n_images": 4, "players": 8, "n_samples": 2},
        "hf_attack": {"step": 2.0},
        "occluded_frequency": {"ring_width": 4},
    },
    "default": {
        "batch_size": 256,
        "eps": 8 / 255, "norm": "Linf",
        "autoattack": {"version": "custom", "attacks": ["apgd-ce", "apgd-t"], "n_iter": 20, "n_restarts": 1,
                       "n_target_classes": 3},
        "masked_noise": {"n_images": None, "pgd_steps": 10, "players": 8, "n_samples": 4},
        "band_shapley": {"num_bands": 8},
        "frequency_shapley": {"n_images": 8, "players": 8, "n_samples": 4},
        "hf_attack": {"step": 1.0},
        "occluded_frequency": {"ring_width": 1},
    },
    "gpu": {
        "batch_size": 512,
        "eps": 8 / 255, "norm": "Linf",
        "autoattack": {"version": "standard"},
        "masked_noise": {"n_images": None, "pgd_steps": 20, "players": 16, "n_samples": 8},
        "band_shapley": {"num_bands": 8},
        "frequency_shapley": {"n_images": 20, "players": 16, "n_samples": 16},
        "hf_attack": {"step": 1.0},
        "occluded_frequency": {"ring_width": 1},
    },
}


@dataclass
class ProfileResult:
    """What :func:`profile` measured.

    Attributes:
        metrics: the content of ``metrics.json``: ``{"schema_version", "freqplug_version", "preset",
            "settings", "n_examples", "stages", "models": {model: {stage: {...}}}}``.
        arrays: ``{model: {stage: {name: tensor}}}``, the curves and maps behind the plots.
        out_dir: where the report was written (None when ``out=None``).
        files: written files, by kind (``"report.md"``, ``"report.html"``, ``"metrics.json"``, plots).
        cached: ``{model: [stages reused from the cache]}``.
    """

    metrics: Dict[str, Any]
    arrays: Dict[str, Dict[str, Dict[str, torch.Tensor]]]
    out_dir: Optional[Path] = None
    files: Dict[str, Path] = field(default_factory=dict)
    cached: Dict[str, List[str]] = field(default_factory=dict)

    def __getitem__(self, model: str) -> Dict[str, Any]:
        return self.metrics["models"][model]


# ------------------------------------------------------------------------------------------ helpers
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[s:s + batch_size].to(device)).argmax(1).cpu()
                          for s in range(0, x.shape[0], batch_size)]) if x.shape[0] else torch.zeros(0, dtype=torch.long)


def input_jacobians(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128,
                    device: Optional[torch.device] = None) -> torch.Tensor:
    """Input gradients J_k = d CE(f(x_k), y_k) / d x_k, (N, C, H, W) (seed 003 eq. 3).

    Per-example loss (sum reduction), so J_k does not depend on which other images share its batch.
    The model's mode, ``requires_grad`` flags and ``.grad`` are left as they were.
    """
    device = device or next(model.parameters()).device
    flags = [(p, p.requires_grad) for p in model.parameters()]
    grads = [(p, p.grad) for p in model.parameters()]
    out = []
    try:
        for p, _ in flags:
            p.requires_grad_(False)  # only the input gradient is wanted
        for s in range(0, x.shape[0], batch_size):
            xb = x[s:s + batch_size].to(device).detach().clone().requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[s:s + batch_size].to(device), reduction="sum")
            out.append(torch.autograd.grad(loss, xb)[0].detach().cpu())
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for p, grad in grads:
            p.grad = grad
    return torch.cat(out) if out else torch.zeros_like(x)


def _fingerprint(tensors: Sequence[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _model_fingerprint(model: nn.Module) -> str:
    state = [v.float() for v in model.state_dict().values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return _fingerprint([torch.stack([s.double().sum() for s in state])]) if state else type(model).__name__


def _nan_to_none(value):
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _tolist(t: torch.Tensor):
    return _nan_to_none(t.detach().cpu().double().tolist())


class _Modes:
    """Restore train/eval mode of every module (the model is the user's)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc):
        for m, training in self.modes:
            m.training = training


# ------------------------------------------------------------------------------------------ stages
# Each stage: fn(ctx) -> {"metrics": json-able dict, "arrays": {name: tensor}}.
def _stage_clean_accuracy(ctx):
    idx = _dist.shard_indices(ctx.n)
    pred = _predict(ctx.model, ctx.x[idx], ctx.batch_size, ctx.device)
    pred = _dist.gather_per_example(idx, pred, ctx.n)
    if pred is None:
        return None
    correct = pred == ctx.y
    return {"metrics": {"accuracy": correct.double().mean().item(), "n_correct": int(correct.sum())},
            "arrays": {"predictions": pred}}


def _stage_autoattack(ctx):
    from ..eval import AutoAttackRunner

    settings = dict(ctx.settings["autoattack"])
    runner = AutoAttackRunner(ctx.model, norm=ctx.settings["norm"], eps=ctx.settings["eps"], seed=ctx.seed,
                              device=ctx.device, show_progress=ctx.show_progress, **settings)
    result = runner.run(ctx.x, ctx.y, batch_size=ctx.batch_size)
    return {"metrics": {"clean_accuracy": result.clean_accuracy, "robust_accuracy": result.robust_accuracy,
                        "robust_accuracy_by_attack": dict(result.robust_accuracy_by_attack),
                        "attacks": list(result.attacks), "version": result.version, "norm": result.norm,
                        "eps": result.eps, "backend": result.backend},
            "arrays": {"x_adv": result.x_adv.detach().cpu(), "robust": result.robust.cpu()}}


def _stage_perturbation_spectrum(ctx):
    from ..eval import perturbation_spectrum

    aa = ctx.done.get("autoattack")
    if aa is None:
        return {"metrics": {"skipped": "needs the autoattack stage"}, "arrays": {}}
    rct, snr = perturbation_spectrum(ctx.x, aa["arrays"]["x_adv"].to(ctx.x.dtype))
    if rct is None:
        return {"metrics": {"n_perturbed": 0}, "arrays": {}}
    n_perturbed = int(((aa["arrays"]["x_adv"] - ctx.x).flatten(1).abs().amax(1) > 0).sum())
    snr_db = 10 * torch.log10(snr)
    h = rct.shape[0]
    low = rct[: h // 4, : h // 4].mean().item()  # top-left quarter of the DCT: the lowest frequencies
    high = rct[h // 2:, h // 2:].mean().item()
    return {"metrics": {"n_perturbed": n_perturbed, "rct_mean": rct.mean().item(), "rct_low_quarter": low,
                        "rct_high_half": high, "snr_db": _tolist(snr_db)},
            "arrays": {"rct": rct, "snr": snr, "snr_db": snr_db}}


def _stage_masked_noise(ctx):
    import torchattacks

    from ..attacks import masked_noise_table

    s = ctx.settings["masked_noise"]
    eps = ctx.settings["eps"]
    pgd = torchattacks.PGD(ctx.model, eps=eps, alpha=eps / 4, steps=s["pgd_steps"], random_start=True)
    k = ctx.n if s["n_images"] is None else min(s["n_images"], ctx.n)
    torch.manual_seed(ctx.seed)  # PGD's random start
    table = masked_noise_table(ctx.model, pgd, ctx.x[:k], ctx.y[:k], batch_size=ctx.batch_size,
                               shapley={"players": s["players"], "n_samples": s["n_samples"], "seed": ctx.seed})
    return {"metrics": {"error_rate": table, "n_images": k}, "arrays": {}}


def _stage_band_shapley(ctx):
    from ..attributions import SpectralBandShapley

    s = ctx.settings["band_shapley"]
    result = SpectralBandShapley(ctx.model, num_bands=s["num_bands"]).importance(
        (ctx.x.to(ctx.device), ctx.y.to(ctx.device)), batch_size=ctx.batch_size, seed=ctx.seed,
        show_progress=ctx.show_progress)
    if not _dist.is_writer():
        return None
    return {"metrics": {"psi": _tolist(result.values), "stderr": _tolist(result.stderr), "sid": _tolist(result.sid),
                        "srs": float(result.srs), "distinguishable": bool(result.distinguishable),
                        "p_value": _nan_to_none(float(result.p_value)), "message": str(result.message),
                        "num_bands": s["num_bands"]},
            "arrays": {"psi": result.values.cpu(), "sid": result.sid.cpu(), "stderr": result.stderr.cpu()}}


def _stage_frequency_shapley(ctx):
    from ..attributions import FrequencyShapley, centered_attributions, radial_average, reconstruct_from_mask

    s = ctx.settings["frequency_shapley"]
    k = min(s["n_images"], ctx.n)
    model = ctx.model
    x, y = ctx.x[:k].to(ctx.device), ctx.y[:k].to(ctx.device)
    with _Modes(model):
        fs = FrequencyShapley(lambda z: torch.softmax(model(z), dim=1))  # seed 000's game: class probability
        result = fs.attribute(x, target=y, players=s["players"], n_samples=s["n_samples"], seed=ctx.seed,
                              perturbations_per_eval=ctx.batch_size, show_progress=ctx.show_progress,
                              return_result=True)
    attributions = result.attributions.cpu()
    mean_map = centered_attributions(attributions.mean(0))
    radial = radial_average(attributions.mean(0))
    m = min(k, 4)
    pfc = reconstruct_from_mask(ctx.x[:m], result.positive_mask()[:m].cpu())
    nfc = reconstruct_from_mask(ctx.x[:m], result.negative_mask()[:m].cpu())
    return {"metrics": {"n_images": k, "players": s["players"], "n_samples": s["n_samples"],
                        "radial_mean": _tolist(radial), "positive_fraction": (attributions > 0).double().mean().item(),
                        "negative_fraction": (attributions < 0).double().mean().item(),
                        "max_abs_efficiency_gap": result.efficiency_gap.abs().max().item(),
                        "n_evaluations": int(result.n_evaluations)},
            "arrays": {"mean_map": mean_map, "radial": radial, "images": ctx.x[:m].clone(), "pfc": pfc, "nfc": nfc}}


def _stage_frequency_bias(ctx):
    from ..spectral import centered_fft2, frequency_bias

    idx = _dist.shard_indices(ctx.n)
    jac = input_jacobians(ctx.model, ctx.x[idx], ctx.y[idx], ctx.batch_size, ctx.device)
    jac = _dist.gather_per_example(idx, jac, ctx.n)
    if jac is None:
        return None
    spectrum = centered_fft2(jac).abs().mean(dim=(0, 1))  # for display only
    return {"metrics": {"b_low": float(frequency_bias(jac))}, "arrays": {"jacobian_spectrum": spectrum}}


def _stage_hf_attack(ctx):
    from ..attacks import HFAttack

    s = ctx.settings["hf_attack"]
    idx = _dist.shard_indices(ctx.n)
    radius = torch.full((len(idx),), float("nan"), dtype=torch.float64)
    if len(idx):
        attack = HFAttack(ctx.model, step=s["step"], batch_size=ctx.batch_size)
        attack(ctx.x[idx].to(ctx.device), ctx.y[idx].to(ctx.device))
        radius = attack.found_radius.detach().cpu().double()
    radius = _dist.gather_per_example(idx, radius, ctx.n)
    if radius is None:
        return None
    success = ~torch.isnan(radius)
    return {"metrics": {"success_rate": success.double().mean().item(),
                        "mean_radius": radius[success].mean().item() if bool(success.any()) else None,
                        "min_radius": ctx.x.shape[-1] / 4, "step": s["step"]},
            "arrays": {"found_radius": radius}}


def ring_groups(height: int, width: int, ring_width: int = 1) -> torch.Tensor:
    """DCT group map (H, W): l_inf rings ``max(u, v) // ring_width`` (seed 001's rings, merged by ``ring_width``)."""
    u = torch.arange(height)[:, None].expand(height, width)
    v = torch.arange(width)[None, :].expand(height, width)
    return torch.maximum(u, v) // ring_width


def _stage_occluded_frequency(ctx):
    from ..attributions import OccludedFrequency

    num_classes = ctx.num_classes
    with _Modes(ctx.model):
        of = OccludedFrequency(ctx.model, groups=ring_groups(*ctx.x.shape[-2:],
                                                             ctx.settings["occluded_frequency"]["ring_width"]))
        means, counts = of.class_average_scores((ctx.x.to(ctx.device), ctx.y.to(ctx.device)), num_classes=num_classes,
                                                batch_size=ctx.batch_size, perturbations_per_eval=32,
                                                seed=ctx.seed, show_progress=ctx.show_progress)
    means, counts = means.cpu(), counts.cpu()
    present = counts > 0
    overall = (means[present] * counts[present, None]).sum(0) / counts[present].sum()
    return {"metrics": {"class_means": _tolist(means), "class_counts": counts.tolist(), "mean": _tolist(overall),
                        "ring_width": ctx.settings["occluded_frequency"]["ring_width"]},
            "arrays": {"class_means": means, "mean": overall}}


_STAGE_FUNCTIONS = {name: globals()[f"_stage_{name}"] for name in STAGES}

DESCRIPTIONS = {
    "clean_accuracy": "Accuracy on the unperturbed images.",
    "autoattack": "Robust accuracy under AutoAttack in the preset's configuration.",
    "perturbation_spectrum": "Where AutoAttack's perturbations put their energy in frequency (RCT, seed 001; "
                             "spectral SNR, seed 004).",
    "masked_noise": "Error rates under PGD noise restricted to low/high frequencies and to the positive/negative "
                    "Shapley components (seed 000 Fig. 6).",
    "band_shapley": "Spectral importance distribution over frequency bands and the spectral robustness score "
                    "(I-ASIDE, seed 004).",
    "frequency_shapley": "Mean frequency Shapley values, their radial profile and PFC/NFC reconstructions (seed 000).",
    "frequency_bias": "Low-frequency bias B_low of the input Jacobians of the cross-entropy (seed 003).",
    "hf_attack": "Success rate and radius of the HF attack: the largest low-pass image the model gets wrong "
                 "(seed 002).",
    "occluded_frequency": "Logit drop from occluding each DCT frequency ring, averaged per class (seed 001).",
}


@dataclass
class _Context:
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    settings: Dict[str, Any]
    device: torch.device
    seed: int
    show_progress: bool
    num_classes: int
    done: Dict[str, Any]

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def batch_size(self) -> int:
        return self.settings["batch_size"]


def _stage_settings(stage: str, settings: Mapping[str, Any]) -> Dict[str, Any]:
    common = {k: settings[k] for k in ("eps", "norm")}
    own = settings.get(stage, {})
    if stage == "perturbation_spectrum":
        own = settings["autoattack"]
    return {"common": common, "own": own}


def profile(model: Union[nn.Module, Mapping[str, nn.Module]], x: torch.Tensor, y: torch.Tensor, *,
            out: Optional[Union[str, Path]] = "freqplug-report", preset: str = "default",
            stages: Optional[Sequence[str]] = None, skip: Sequence[str] = (), overrides: Optional[Mapping] = None,
            device: Optional[Union[str, torch.device]] = None, num_classes: Optional[int] = None,
            force: bool = False, quiet: bool = False, seed: int = 0, dpi: int = 80) -> ProfileResult:
    """Profile the frequency robustness of one or several models and write a report.

    Args:
        model: a classifier on images in [0, 1] returning logits (N, K), or ``{name: model}`` for a
            side-by-side comparison.
        x: images (N, C, H, W) in [0, 1]; y: labels (N,).
        out: output folder (``report.md``, ``report.html``, ``metrics.json``, PNG plots, ``cache/``);
            ``None`` computes without writing (and without cache).
        preset: ``"fast"``, ``"default"`` or ``"gpu"`` (see :data:`PRESETS`).
        stages: stages to run (default: all of :data:`STAGES`); ``skip``: stages to leave out.
        overrides: ``{key: value}`` merged into the preset (e.g. ``{"band_shapley": {"num_bands": 6}}``).
        device: where the model runs (default: its parameters' device).
        num_classes: classes of the model (default: inferred from one forward pass).
        force: recompute every stage even when a cached result matches.
        quiet: no progress bars.
        seed: seed of every random draw (attack starts, Shapley permutations).
        dpi: resolution of the PNG plots.

    Returns:
        :class:`ProfileResult`.
    """
    check_choice(preset, "preset", tuple(PRESETS))
    check_images(x, "x")
    check_labels(y, "y", x.shape[0])
    models = dict(model) if isinstance(model, Mapping) else {"model": model}
    if not models:
        raise ValueError("`model` must be a module or a non-empty mapping {name: module}")
    for name, m in models.items():
        if not isinstance(m, nn.Module):
            raise TypeError(f"`model` {name!r} must be a torch.nn.Module, got {type(m).__name__}")
    selected = list(STAGES if stages is None else stages)
    for stage in list(selected) + list(skip):
        check_choice(stage, "stages", STAGES)
    selected = [s for s in STAGES if s in selected and s not in skip]
    settings = copy.deepcopy(PRESETS[preset])
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(settings.get(key), dict):
            settings[key].update(value)
        else:
            settings[key] = value
    show_progress = not quiet and _dist.is_writer()
    writer = _dist.is_writer()
    out_dir = None if out is None else Path(out)
    if out_dir is not None and writer:
        out_dir.mkdir(parents=True, exist_ok=True)
    x, y = x.detach().cpu(), y.detach().cpu()
    data_key = _fingerprint([x, y])

    from tqdm.auto import tqdm

    overall = tqdm(total=len(models) * len(selected), desc="freqplug profile", disable=not show_progress,
                   position=0)
    metrics: Dict[str, Any] = {"schema_version": SCHEMA_VERSION, "freqplug_version": __version__, "preset": preset,
                               "settings": settings, "n_examples": int(x.shape[0]), "stages": selected,
                               "models": {}}
    arrays: Dict[str, Dict[str, Dict[str, torch.Tensor]]] = {}
    cached: Dict[str, List[str]] = {}
    try:
        for name, m in models.items():
            dev = torch.device(device) if device is not None else next(m.parameters()).device
            if num_classes is None:
                with _Modes(m), torch.no_grad():
                    k = int(m(x[:1].to(dev)).shape[1])
            else:
                k = num_classes
            ctx = _Context(model=m, x=x, y=y, settings=settings, device=dev, seed=seed,
                           show_progress=show_progress, num_classes=k, done={})
            model_key = _model_fingerprint(m)
            metrics["models"][name] = {}
            arrays[name] = {}
            cached[name] = []
            cache_dir = None if out_dir is None else out_dir / "cache" / _slug(name)
            for stage in selected:
                overall.set_postfix_str(f"{name}: {stage}")
                key = hashlib.sha256(json.dumps({"stage": stage, "settings": _stage_settings(stage, settings),
                                                 "data": data_key, "model": model_key, "seed": seed,
                                                 "version": SCHEMA_VERSION}, sort_keys=True,
                                                default=str).encode()).hexdigest()
                path = None if cache_dir is None else cache_dir / f"{stage}.pt"
                hit = None
                if writer and path is not None and not force and path.is_file():
                    try:
                        stored = torch.load(path, weights_only=False)
                        hit = stored if stored.get("key") == key else None
                    except Exception:  # a truncated cache file (interrupted write) is recomputed
                        hit = None
                use_cache = _dist.broadcast_flag(hit is not None)
                if use_cache:
                    result = hit["result"] if writer else None
                    cached[name].append(stage)
                elif writer or stage in SHARDED_STAGES:
                    with _Modes(m):
                        result = _STAGE_FUNCTIONS[stage](ctx)
                    if writer and path is not None:
                        cache_dir.mkdir(parents=True, exist_ok=True)
                        tmp = path.with_suffix(".tmp")
                        torch.save({"key": key, "result": result}, tmp)
                        os.replace(tmp, path)  # atomic: an interrupted run never leaves a half file
                else:
                    result = None
                if writer:
                    ctx.done[stage] = result
                    metrics["models"][name][stage] = result["metrics"]
                    arrays[name][stage] = result["arrays"]
                overall.update(1)
    finally:
        overall.close()
    _dist.barrier()
    result = ProfileResult(metrics=metrics, arrays=arrays, out_dir=out_dir, cached=cached)
    if writer and out_dir is not None:
        from .render import write_report

        result.files = write_report(result, out_dir, dpi=dpi)
    return result


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"
