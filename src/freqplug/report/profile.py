"""``freqplug.profile``: one call that measures a model's frequency robustness and writes a report.

This module only orchestrates: the stages (what each one runs, its settings per preset, its table
and plot) are records in :mod:`freqplug.report.stages`, the cache is :mod:`freqplug.report.cache`,
and :mod:`freqplug.report.render` writes the documents.

Finished stages are cached in ``<out>/cache/<model>/<stage>.pt`` under a content-hash key (model
state dict, data, settings, seed, versions); a rerun reuses them unless ``force=True``.

Under ``torch.distributed`` (``torchrun``) the sharded stages (``Stage.sharded``) run on every rank and are
gathered; the other stages run on rank 0, which alone reads and writes the cache and the report. A zoo of
models is profiled one model at a time (lazily loaded models are released when done); ``distribute="models"``
gives whole models to groups of ranks instead of sharding each model over all of them.

Progress bars are drawn only when stderr is a terminal (or ``progress=True``); every finished stage is
logged as one INFO line on the ``freqplug.report`` logger (model, stage, wall time), which is what a log
file should get instead of carriage-return redraws.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import logging
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from .. import _distributed as _dist
from .._io import digest, model_digest
from .._model import model_device_dtype, num_classes_of, preserved_model_state
from .._validation import check_choice, check_images, check_labels, check_number, check_positive_int, check_seed
from .._version import __version__
from . import stages as _stages
from .cache import StageCache, cache_key, check_result
from .stages import DEFAULT_EPS, input_jacobians  # noqa: F401  (input_jacobians: re-exported)

#: Version of the metrics.json layout. 2: ``threat_model`` and ``metadata`` entries; hf_attack's
#: ``success_rate`` counts correctly classified images only (with ``n_correct``/``n_success``).
#: 3: ``seed``, ``provenance`` (library versions, AutoAttack backend, device, dtype) and ``timing``
#: (wall time per stage).
SCHEMA_VERSION = 3

logger = logging.getLogger("freqplug.report")

#: Distributions whose versions metrics.json records (None when not installed).
RECORDED_PACKAGES = ("freqplug", "torch", "captum", "numpy", "torchattacks", "robustbench", "autoattack",
                     "pyautoattack", "matplotlib", "scipy")


@dataclass
class ProfileResult:
    """What :func:`profile` measured.

    Attributes:
        metrics: the content of ``metrics.json``: ``{"schema_version", "freqplug_version", "preset",
            "settings", "threat_model", "metadata", "n_examples", "stages", "models": {model: {stage: {...}}}}``.
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


def _resolve_threat_model(threat_model: str, eps: Optional[float], overrides: Mapping) -> tuple:
    """(norm, eps, eps_is_default) from the keywords and the deprecated ``overrides`` keys."""
    norm_given = "norm" in overrides
    eps_given = "eps" in overrides
    if norm_given or eps_given:
        warnings.warn("profile(overrides={'norm'/'eps': ...}) is deprecated; pass threat_model=... and eps=... "
                      "(the threat model now drives every attack stage)", DeprecationWarning, stacklevel=3)
    if norm_given:
        legacy = overrides["norm"]
        check_choice(legacy, "overrides['norm']", tuple(DEFAULT_EPS))
        if threat_model != "Linf" and threat_model != legacy:
            raise ValueError(f"`threat_model` is {threat_model!r} but `overrides['norm']` is {legacy!r}; "
                             "pass only threat_model")
        threat_model = legacy
    if eps_given:
        if eps is not None and eps != overrides["eps"]:
            raise ValueError(f"`eps` is {eps!r} but `overrides['eps']` is {overrides['eps']!r}; pass only eps")
        eps = overrides["eps"]
    check_choice(threat_model, "threat_model", tuple(DEFAULT_EPS))
    if eps is None:
        return threat_model, DEFAULT_EPS[threat_model], True
    eps = check_number(eps, "eps", minimum=0.0, strict_minimum=True)
    return threat_model, float(eps), False


def _settings(preset: str, overrides: Mapping, norm: str, eps: float) -> Dict[str, Any]:
    """The preset's settings with ``overrides`` merged; an unknown stage or setting raises, naming it."""
    settings = _stages.preset_settings(preset)
    common = tuple(_stages.COMMON_SETTINGS[preset])
    for key, value in overrides.items():
        if key in ("eps", "norm"):
            continue  # resolved by _resolve_threat_model
        if key in common:
            settings[key] = value
            continue
        if key not in _stages.stage_names():
            raise ValueError(f"`overrides` has an unknown key {key!r}; expected a stage "
                             f"({', '.join(_stages.stage_names())}) or a common setting ({', '.join(common)})")
        if not isinstance(value, Mapping):
            raise TypeError(f"`overrides[{key!r}]` must be a dict of settings of stage {key!r}, "
                            f"got {type(value).__name__}")
        allowed = _stages.get_stage(key).allowed_settings()
        for setting in value:
            if setting not in allowed:
                raise ValueError(f"`overrides[{key!r}]` has an unknown setting {setting!r}; stage {key!r} takes "
                                 f"{', '.join(allowed) if allowed else 'no settings'}")
        settings[key].update(copy.deepcopy(dict(value)))
    settings["batch_size"] = check_positive_int(settings["batch_size"], "overrides['batch_size']")
    settings["shard_size"] = check_positive_int(settings["shard_size"], "overrides['shard_size']")
    settings["norm"], settings["eps"] = norm, eps
    return settings


def _check_metadata(metadata) -> Dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"`metadata` must be a JSON-able dict, got {type(metadata).__name__}")
    try:
        text = json.dumps(dict(metadata), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`metadata` must be JSON-able (strings, finite numbers, bools, None, lists, dicts): "
                        f"{error}") from None
    restored = json.loads(text)
    if restored != dict(metadata):  # tuples or non-string keys would not be recorded verbatim
        raise ValueError("`metadata` must be recorded verbatim in metrics.json: use lists (not tuples) and string "
                         "keys")
    return restored


def library_versions() -> Dict[str, Optional[str]]:
    """Installed versions of :data:`RECORDED_PACKAGES` and Python, read from the package metadata (nothing is
    imported); the running freqplug and torch report their own ``__version__``."""
    from importlib import metadata

    versions: Dict[str, Optional[str]] = {}
    for package in RECORDED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["freqplug"], versions["torch"] = __version__, torch.__version__
    versions["python"] = platform.python_version()
    return versions


def progress_enabled(quiet: bool, progress: Optional[bool]) -> bool:
    """Whether to draw tqdm bars: never when ``quiet``; ``progress`` forces them on/off; by default only when
    stderr is a terminal (a log file would fill with carriage-return redraws)."""
    if quiet:
        return False
    if progress is not None:
        return bool(progress)
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def _stage_key_settings(stage: _stages.Stage, settings: Mapping[str, Any]) -> Dict[str, Any]:
    """Settings a stage's result depends on: common ones, its own and those of its dependencies."""
    keys = {"batch_size": settings["batch_size"], "shard_size": settings["shard_size"], "norm": settings["norm"],
            "eps": settings["eps"]}
    for name in (stage.name,) + tuple(stage.depends_on):
        keys[name] = settings.get(name, {})
    return keys


#: A model :func:`profile` takes: a module, or a zero-argument callable returning one (loaded when its turn comes).
ModelEntry = Union[nn.Module, Callable[[], nn.Module]]

#: How ``distribute=`` spreads the work of several processes (``torchrun``) over a zoo of models.
DISTRIBUTE_MODES = ("images", "models")


def profile(model: Union[nn.Module, Mapping[str, ModelEntry]], x: torch.Tensor, y: torch.Tensor, *,
            out: Optional[Union[str, Path]] = "freqplug-report", preset: str = "default",
            stages: Optional[Sequence[str]] = None, skip: Sequence[str] = (), overrides: Optional[Mapping] = None,
            device: Optional[Union[str, torch.device]] = None, num_classes: Optional[int] = None,
            force: bool = False, quiet: bool = False, seed: int = 0, dpi: int = 80,
            threat_model: str = "Linf", eps: Optional[float] = None,
            metadata: Optional[Mapping[str, Any]] = None, progress: Optional[bool] = None,
            cache_dir: Optional[Union[str, Path]] = None, model_reports: bool = False,
            distribute: str = "images", ranks_per_model: int = 1) -> ProfileResult:
    """Profile the frequency robustness of one or several models and write a report.

    Cost: every selected stage runs once per model; the budgets are the preset's (see :data:`PRESETS`;
    "fast" is about a minute on 2 CPU cores for the embedded CIFAR-10 model and 20 images). The global
    RNG, the models' modes, ``requires_grad`` and ``.grad`` and the inputs are left as they were; the
    call works under ``torch.no_grad()``.

    A zoo (many models) is profiled one model at a time: give ``{name: loader}`` with zero-argument callables
    that return the module, and each model is loaded when its turn comes and released when its stages are done,
    so only one is ever in memory. Finished stages are cached (``cache_dir``), so a killed run restarted with the
    same arguments recomputes nothing that finished, model by model and stage by stage.

    Under ``torch.distributed`` (``torchrun``), ``distribute="images"`` shards every model's examples over all
    processes (lowest latency per model; every process holds the model being profiled);
    ``distribute="models"`` splits the processes into groups of ``ranks_per_model`` consecutive ranks, group g
    profiles models g, g + groups, ... whole (sharded within the group, whose rank 0 writes that model's cache
    and report), and global rank 0 then writes the comparison report (fewer collectives: faster when there are
    at least as many models as groups).

    Args:
        model: a classifier on images in [0, 1] returning logits (N, K), or ``{name: model}`` for a
            side-by-side comparison, where each value is an ``nn.Module`` or a zero-argument callable returning
            one (loaded lazily, released afterwards). Names must stay distinct as folder names (``_slug``).
        x: images (N, C, H, W) in [0, 1]; y: labels (N,) in [0, K).
        out: output folder (``report.md``, ``report.html``, ``metrics.json``, PNG plots, ``cache/``);
            ``None`` computes without writing (and without cache unless ``cache_dir`` is given).
        preset: ``"fast"``, ``"default"`` or ``"gpu"`` (see :data:`PRESETS`).
        stages: stages to run (default: all of :data:`STAGES`); ``skip``: stages to leave out.
        overrides: ``{stage: {setting: value}}`` or ``{"batch_size": n}`` merged into the preset (e.g.
            ``{"band_shapley": {"num_bands": 6}}``); an unknown stage or setting raises ``ValueError``.
            ``"eps"``/``"norm"`` keys are deprecated: use ``threat_model``/``eps``.
        device: where the model runs (default: its parameters' device). ``"cuda"`` under torchrun means this
            process's GPU, ``cuda:$LOCAL_RANK``.
        num_classes: classes of the model (default: the output width of one forward pass; checked against it).
        force: recompute every stage even when a cached result matches.
        quiet: no progress bars.
        progress: ``None`` (default): progress bars only when stderr is a terminal; otherwise (a log file,
            CI) one INFO line per stage (model, stage, wall time) on the ``freqplug.report`` logger.
            ``True``/``False`` force the bars on/off (``quiet`` wins). The per-stage lines are always logged.
        seed: seed of every random draw (attack starts, Shapley permutations); a non-negative int.
        dpi: resolution of the PNG plots.
        threat_model: ``"Linf"``, ``"L2"`` or ``"L1"``: the norm of every attack stage (AutoAttack, the
            perturbation spectrum of its x_adv, masked-noise PGD; torchattacks has no L1 PGD, so the
            masked-noise stage is reported as skipped under L1).
        eps: perturbation budget; default RobustBench's for the threat model (Linf 8/255, L2 0.5, L1 12).
        metadata: a JSON-able dict recorded verbatim under ``metrics["metadata"]`` (e.g. the class-folder
            mapping of the data).
        cache_dir: the stage cache folder, ``<cache_dir>/<model>/<stage>.pt`` (default ``<out>/cache``); several
            runs (a zoo's comparison report and per-model reports) may share it.
        model_reports: also write one report per model into ``<out>/models/<model>/`` as soon as the model is done.
        distribute: ``"images"`` (default) or ``"models"``, see above; the same numbers either way.
        ranks_per_model: processes per group for ``distribute="models"``; must divide the number of processes.

    Returns:
        :class:`ProfileResult` (complete on the writing rank, global rank 0). ``metrics`` (and metrics.json)
        record what a reader needs to reproduce and cite the run: ``seed``, ``settings`` (the exact settings of
        every stage), ``provenance`` (library versions, the AutoAttack backend each model used, device and dtype
        of each model, torch threads, platform, ``distribute`` and the global ``ranks`` that profiled each model)
        and ``timing``: per model and stage ``{"seconds": wall time of the computation (for a cached stage, of
        the run that computed it), "cached": bool, "this_run_seconds": float, "evaluations",
        "evaluations_per_rank"}``.
    """
    check_choice(preset, "preset", tuple(_stages.PRESET_NAMES))
    check_images(x, "x")
    check_labels(y, "y", x.shape[0])
    seed = check_seed(seed, "seed", allow_none=False)
    overrides = dict(overrides or {})
    norm, eps, eps_is_default = _resolve_threat_model(threat_model, eps, overrides)
    settings = _settings(preset, overrides, norm, eps)
    metadata = _check_metadata(metadata)
    if num_classes is not None:
        check_positive_int(num_classes, "num_classes")
    entries = _model_entries(model)
    known = _stages.stage_names()
    selected = list(known if stages is None else stages)
    for stage in list(selected) + list(skip):
        check_choice(stage, "stages", known)
    selected = [s for s in known if s in selected and s not in skip]
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be None, True or False, got {type(progress).__name__}")
    if not isinstance(model_reports, bool):
        raise TypeError(f"`model_reports` must be True or False, got {type(model_reports).__name__}")
    check_choice(distribute, "distribute", DISTRIBUTE_MODES)
    ranks_per_model = check_positive_int(ranks_per_model, "ranks_per_model")
    processes = torch.distributed.get_world_size() if _dist.active() else 1
    if distribute == "images" and ranks_per_model != 1:
        raise ValueError(f"`ranks_per_model` ({ranks_per_model}) applies to distribute='models'; with "
                         "distribute='images' every model is sharded over all processes")
    if processes % ranks_per_model:
        raise ValueError(f"`ranks_per_model` must divide the number of processes ({processes}), got "
                         f"{ranks_per_model}")
    if device is not None and str(device) == "cuda":
        device = _dist.local_device("cuda")  # under torchrun: this process's GPU
    show_progress = progress_enabled(quiet, progress) and _dist.is_writer()
    writer = _dist.is_writer()
    out_dir = None if out is None else Path(out)
    cache_root = Path(cache_dir) if cache_dir is not None else (None if out_dir is None else out_dir / "cache")
    if out_dir is not None and writer:
        out_dir.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False):  # plain tensors even when called under inference_mode
        x, y = x.detach().cpu().clone(), y.detach().cpu().clone()
    data_digest = digest(x, y)

    from tqdm.auto import tqdm

    base: Dict[str, Any] = {"schema_version": SCHEMA_VERSION, "freqplug_version": __version__, "preset": preset,
                            "settings": settings,
                            "threat_model": {"norm": norm, "eps": eps, "eps_is_robustbench_default": eps_is_default,
                                             "attack": _stages.attack_configuration(settings)["description"]},
                            "metadata": metadata, "n_examples": int(x.shape[0]), "stages": selected,
                            "seed": seed,
                            "provenance": {"versions": library_versions(), "autoattack_backend": {},
                                           "device": {}, "dtype": {}, "torch_threads": torch.get_num_threads(),
                                           "platform": platform.platform(),
                                           "world_size": processes, "distribute": distribute,
                                           "ranks_per_model": ranks_per_model if distribute == "models" else None,
                                           "ranks": {}},
                            "timing": {}, "models": {}}
    eager = [m for m in entries.values() if isinstance(m, nn.Module)]
    cuda_devices = sorted({p.device for m in eager for p in m.parameters() if p.device.type == "cuda"}, key=str)
    if device is not None and torch.device(device).type == "cuda":
        cuda_devices = sorted(set(cuda_devices) | {torch.device(device)}, key=str)
    if distribute == "models" and _dist.active():
        group_index, n_groups, group = _dist.new_groups(ranks_per_model)  # collective: every rank calls it
    else:
        group_index, n_groups, group = 0, 1, None
    mine = [name for i, name in enumerate(entries) if i % n_groups == group_index]
    overall = tqdm(total=len(mine) * len(selected), desc="freqplug profile", disable=not show_progress,
                   position=0)
    caller_grad = torch.is_grad_enabled()  # inference_mode(False) below turns grad on; stages get the caller's

    def run_model(name: str) -> Optional[Dict[str, Any]]:
        """Load (if lazy), profile and release one model in the current group; its part on the group's writer."""
        group_writer = _dist.is_writer()
        ranks = _dist.group_ranks()
        # a loader failing on one rank (a checkpoint missing on one node) stops every rank of the group
        m = _dist.run_collectively(lambda: _materialize(name, entries[name]))
        lazy = m is not entries[name]
        dev = torch.device(device) if device is not None else next(m.parameters()).device
        try:
            # a lazily loaded model may sit on a GPU the outer fork did not cover
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" and dev not in cuda_devices else []):
                return _profile_model(name, m, dev, group_writer, ranks)
        finally:
            del m
            if lazy:  # release the model now: a zoo never holds two
                gc.collect()
                if dev.type == "cuda":
                    torch.cuda.empty_cache()

    def _profile_model(name, m, dev, group_writer, ranks):
        def output_width() -> int:
            with preserved_model_state(m, eval_mode=True):
                k = num_classes_of(m, x[:1].to(dev), labels=y, labels_name="y", name=f"model {name!r}")
            if num_classes is not None and num_classes != k:
                raise ValueError(f"`num_classes` is {num_classes} but model {name!r} returns {k} logits")
            return k

        k = _dist.run_collectively(output_width)
        ctx = _stages.StageContext(model=m, x=x, y=y, settings=settings, device=dev, seed=seed,
                                   show_progress=show_progress, num_classes=k, done={})
        model_key = model_digest(m)
        part: Dict[str, Any] = {
            "metrics": {}, "arrays": {}, "timing": {}, "cached": [], "backend": None, "ranks": ranks,
            "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
            "dtype": str(model_device_dtype(m)[1]).replace("torch.", "")}
        cache = StageCache(None if cache_root is None or not group_writer else cache_root / _slug(name))
        for stage_name in selected:
            overall.set_postfix_str(f"{name}: {stage_name}")
            started = time.perf_counter()
            result = _run_stage(_stages.get_stage(stage_name), ctx, m, cache, part["cached"], force,
                                _stage_key_settings(_stages.get_stage(stage_name), settings),
                                data_digest, model_key, seed, group_writer, caller_grad)
            seconds = time.perf_counter() - started
            if group_writer:
                ctx.done[stage_name] = result
                part["metrics"][stage_name] = result["metrics"]
                part["arrays"][stage_name] = result["arrays"]
                from_cache = stage_name in part["cached"]
                computed = result.get("wall_time_s")
                per_rank = result.get("evaluations_per_rank")
                part["timing"][stage_name] = {
                    "seconds": computed if isinstance(computed, float) else round(seconds, 3),
                    "cached": from_cache, "this_run_seconds": round(seconds, 3),
                    "evaluations": sum(per_rank) if per_rank is not None else None,
                    "evaluations_per_rank": per_rank}
                if stage_name == "autoattack" and "backend" in result["metrics"]:
                    part["backend"] = result["metrics"]["backend"]
                logger.info("freqplug profile: model %s, stage %s: %.1f s%s", name, stage_name, seconds,
                            " (cached)" if from_cache else (" (skipped)" if "skipped" in result["metrics"] else ""))
            overall.update(1)
        if not group_writer:
            return None
        if model_reports and out_dir is not None:
            from .render import write_report

            metrics, arrays, cached = _assemble(base, {name: part})
            write_report(ProfileResult(metrics=metrics, arrays=arrays, cached=cached),
                         out_dir / "models" / _slug(name), dpi=dpi)
        return part

    # Stages seed the global RNG (attack random starts): fork it so the user's random stream is unchanged.
    local: Dict[str, Any] = {}
    with torch.random.fork_rng(devices=cuda_devices), torch.inference_mode(False):
        try:
            try:
                with _dist.use_group(group):
                    for name in mine:
                        part = run_model(name)
                        if part is not None:
                            local[name] = part
            except Exception as error:  # noqa: BLE001 (the other groups must not wait for this one)
                if n_groups > 1:
                    _dist.synchronize(error)
                raise
        finally:
            overall.close()
    if n_groups > 1:  # every group writer's models to global rank 0
        gathered = _dist.gather_to_writer(local)
        local = {} if gathered is None else {k: v for d in gathered for k, v in d.items()}
    _dist.barrier()
    parts = {name: local[name] for name in entries if name in local} if writer else {}
    metrics, arrays, cached = _assemble(base, parts)
    result = ProfileResult(metrics=metrics, arrays=arrays, out_dir=out_dir, cached=cached)
    if writer and out_dir is not None:
        from .render import write_report

        result.files = write_report(result, out_dir, dpi=dpi)
    return result


def _model_entries(model) -> Dict[str, ModelEntry]:
    """``{name: module or loader}`` from :func:`profile`'s ``model``, checked (names distinct as folder names)."""
    if isinstance(model, nn.Module):
        return {"model": model}
    if not isinstance(model, Mapping):
        raise TypeError(f"`model` must be a torch.nn.Module or a mapping {{name: module or zero-argument callable "
                        f"returning one}}, got {type(model).__name__}")
    entries = dict(model)
    if not entries:
        raise ValueError("`model` must be a module or a non-empty mapping {name: module}")
    folders: Dict[str, str] = {}
    for name, entry in entries.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"`model` names must be non-empty str, got {name!r}")
        if not isinstance(entry, nn.Module) and not callable(entry):
            raise TypeError(f"`model` {name!r} must be a torch.nn.Module or a zero-argument callable returning one, "
                            f"got {type(entry).__name__}")
        folder = _slug(name)
        if folder in folders:  # they would share a cache folder and a per-model report
            raise ValueError(f"`model` names {folders[folder]!r} and {name!r} map to the same folder name "
                             f"{folder!r} (cache and report); rename one")
        folders[folder] = name
    return entries


def _materialize(name: str, entry: ModelEntry) -> nn.Module:
    """The module of a model entry: itself, or what its loader returns (checked)."""
    if isinstance(entry, nn.Module):
        return entry
    module = entry()
    if not isinstance(module, nn.Module):
        raise TypeError(f"`model` {name!r} is a loader; it must return a torch.nn.Module, it returned "
                        f"{type(module).__name__}")
    return module


def _assemble(base: Dict[str, Any], parts: Mapping[str, Dict[str, Any]]):
    """(metrics, arrays, cached) of a report over ``parts`` (one per model, from :func:`profile`)."""
    metrics = copy.deepcopy(base)
    provenance = metrics["provenance"]
    for name, part in parts.items():
        metrics["models"][name] = part["metrics"]
        metrics["timing"][name] = part["timing"]
        provenance["device"][name] = part["device"]
        provenance["dtype"][name] = part["dtype"]
        provenance["ranks"][name] = part["ranks"]
        if part["backend"] is not None:
            provenance["autoattack_backend"][name] = part["backend"]
    return metrics, {n: p["arrays"] for n, p in parts.items()}, {n: list(p["cached"]) for n, p in parts.items()}


def _run_stage(stage: _stages.Stage, ctx: _stages.StageContext, model: nn.Module, cache: StageCache,
               cached: List[str], force: bool, key_settings, data_digest: str, model_key: str, seed: int,
               writer: bool, caller_grad: bool) -> Optional[Dict[str, Any]]:
    """One stage of one model: from the cache, skipped (a dependency was not run) or computed.

    A sharded stage runs on every rank of the group; the others on the writer only. Any rank failing makes
    every rank raise :class:`freqplug._distributed.RankFailed` (no rank is left waiting in a collective).
    The model evaluations (rows of input the model gets) of every rank travel with the result as
    ``evaluations_per_rank``.
    """
    missing = [d for d in stage.depends_on if d not in ctx.done] if writer else []
    if _dist.broadcast_flag(bool(missing)):
        return {"metrics": {"skipped": f"needs the {', '.join(missing)} stage"}, "arrays": {}} if writer else None
    key = cache_key(stage=stage.name, settings=key_settings, data_digest=data_digest, model_digest=model_key,
                    seed=seed, schema_version=SCHEMA_VERSION)
    hit = _dist.run_collectively(lambda: cache.load(stage.name, key) if writer and not force else None)
    if _dist.broadcast_flag(hit is not None):
        cached.append(stage.name)
        return hit if writer else None
    ctx.stage = stage.name
    started = time.perf_counter()
    runs_here = writer or stage.sharded

    def compute():
        if not runs_here:
            return None, 0
        # Gradients where the stage needs them (attacks, input gradients), the caller's grad mode elsewhere.
        with preserved_model_state(model, eval_mode=True), torch.set_grad_enabled(stage.needs_grad or caller_grad), \
                counting_evaluations(model) as count:
            result = stage.run(ctx)
        if writer and result is None:
            raise TypeError(f"stage {stage.name!r} returned None on the writing rank")
        if result is not None:
            check_result(result, stage.name)
        return result, count[0]

    # every rank passes the same collectives, whether or not the stage runs on it
    result, evaluations = _dist.run_collectively(compute)
    per_rank = _dist.gather_to_writer(evaluations)
    if writer:
        # the compute time and cost travel with the result, so a cached rerun still reports them
        result["wall_time_s"] = round(time.perf_counter() - started, 3)
        result["evaluations_per_rank"] = [int(e) for e in per_rank] if stage.sharded else [int(per_rank[0])]
    _dist.run_collectively(lambda: cache.save(stage.name, key, result) if writer else None)
    return result if writer else None


@contextlib.contextmanager
def counting_evaluations(model: nn.Module):
    """Count the model evaluations (input rows of every forward call of ``model``, copies made inside the block
    included) while the block runs; yields a one-element list holding the count."""
    count = [0]

    def hook(module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
            count[0] += int(args[0].shape[0])

    handle = model.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"
