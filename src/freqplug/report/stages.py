"""The report's stages: one :class:`Stage` record per measure, kept in an ordered registry.

A stage composes existing freqplug functions (nothing is re-implemented):

=========================  =======================================================================  ==================
stage                      what it calls                                                            paper
=========================  =======================================================================  ==================
``clean_accuracy``         :func:`freqplug._model.predict`                                          -
``autoattack``             :class:`freqplug.eval.AutoAttackRunner`                                  -
``perturbation_spectrum``  :func:`freqplug.eval.perturbation_spectrum` on AutoAttack's x_adv        Wang2020a, Luo2024
``masked_noise``           :func:`freqplug.masked_noise_table` (PGD, PFC/NFC via Shapley)           Chen2022
``band_shapley``           :meth:`freqplug.SpectralBandShapley.importance` (SID, SRS)               Luo2024
``frequency_shapley``      :class:`freqplug.FrequencyShapley` + radial/PFC/NFC helpers              Chen2022
``frequency_bias``         :func:`freqplug.spectral.frequency_bias` of input Jacobians              Chan2022
``hf_attack``              :class:`freqplug.HFAttack`                                               Wang2020b
``occluded_frequency``     :meth:`freqplug.OccludedFrequency.player_values`, class means            Wang2020a
``robustness_curve``       :func:`freqplug.eval.robustness_curve` (FGSM/PGD/HF, D1/D2 defenses)     Wang2020b
``classwise``              :func:`freqplug.eval.classwise_hfc_shapley` (per-class abs(phi) of HFC)  Chen2022
``corruptions``            :func:`freqplug.eval.corruption_robustness` (imagecorruptions)           Chan2022, Luo2024
=========================  =======================================================================  ==================

Everything the report knows about a stage is in its record: name, title, description, settings
per preset, the run function, the table rows, the plot, whether it is sharded under
torch.distributed and which stages it needs. :mod:`freqplug.report.profile` orchestrates the
records, :mod:`freqplug.report.render` draws them; adding a stage is one :func:`register` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import _distributed as _dist
from .._model import predict, preserved_model_state
from . import costs, plots

#: Preset names, in the order the documentation lists them.
PRESET_NAMES = ("fast", "default", "gpu")

#: Settings shared by all stages, per preset. ``eps``/``norm`` are the Linf defaults kept for
#: backward compatibility; :func:`freqplug.profile`'s ``threat_model``/``eps`` keywords set them.
#: ``shard_size`` is the number of images per *unit* of work (the Shapley stages use one image per unit): units
#: are split across ranks under torch.distributed and each draws its random numbers from its own seed
#: (:func:`freqplug._distributed.map_units`), so the numbers do not depend on the number of processes.
COMMON_SETTINGS: Dict[str, Dict[str, Any]] = {
    "fast": {"batch_size": 128, "shard_size": 1, "eps": 8 / 255, "norm": "Linf"},
    "default": {"batch_size": 256, "shard_size": 16, "eps": 8 / 255, "norm": "Linf"},
    "gpu": {"batch_size": 512, "shard_size": 128, "eps": 8 / 255, "norm": "Linf"},
}

#: RobustBench's eps per threat model (CIFAR-10 leaderboards: Linf 8/255, L2 0.5; L1 12 as in
#: Croce & Hein's APGD-L1 evaluation, which the L1 leaderboard uses).
DEFAULT_EPS = {"Linf": 8 / 255, "L2": 0.5, "L1": 12.0}


# ------------------------------------------------------------------------------------------ records
@dataclass
class StageContext:
    """What a stage's run function gets.

    Attributes:
        model: the model (in eval mode, its state restored afterwards by the orchestrator).
        x: images (N, C, H, W) in [0, 1] on CPU; y: labels (N,) on CPU, checked against ``num_classes``.
        settings: the run's settings (common keys and one dict per stage); ``own`` is this stage's.
        device: where the model runs. seed: the run's seed. num_classes: the model's output width K.
            The orchestrator forks the global RNG around every stage, so a stage may seed it.
        done: ``{stage: result}`` of the stages already run for this model (dependencies included).
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    settings: Dict[str, Any]
    device: torch.device
    seed: int
    show_progress: bool
    num_classes: int
    done: Dict[str, Any]
    stage: str = ""

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def batch_size(self) -> int:
        return self.settings["batch_size"]

    @property
    def unit_size(self) -> int:
        """Images per unit of :func:`freqplug._distributed.map_units` (the ``shard_size`` setting)."""
        return self.settings["shard_size"]

    @property
    def own(self) -> Dict[str, Any]:
        return self.settings.get(self.stage, {})


Rows = List[Tuple[str, Any]]


@dataclass(frozen=True)
class Stage:
    """One report stage.

    Attributes:
        name: identifier (cache file, ``--only``/``--skip``, metrics.json key, HTML anchor).
        title: section title, or a function of the run's settings returning it (when the title must say
            which configuration ran).
        description: one paragraph under the title.
        presets: ``{preset: {setting: value}}`` for every preset of :data:`PRESET_NAMES`.
        run: ``run(ctx: StageContext) -> {"metrics": JSON-able dict, "arrays": {name: tensor}}``; None on
            ranks that do not hold the gathered result of a sharded stage.
        rows: ``rows(metrics) -> [(label, value)]``, the stage's table (one value per model).
        plot: ``plot(view: plots.PlotView) -> Figure | None``, or None for no plot.
        sharded: its per-example work is split across ranks under torch.distributed (every rank runs it).
        depends_on: stages whose results ``run`` reads from ``ctx.done``; when one is not selected the stage
            is reported as skipped.
        needs_grad: runs under ``torch.enable_grad()`` (attacks, input gradients), so ``profile`` works when
            called under ``torch.no_grad()``.
        options: setting names ``overrides`` may set; default: the keys of ``presets``.
        comparison: ``((label, get), ...)`` rows of the multi-model comparison table; ``label`` is a string or
            a function of the settings, ``get(metrics)`` the value.
        cost: ``cost(settings, n_images, image_shape (C, H, W), num_classes) -> {"evaluations": int, "exact": bool,
            "images": int}``: the model evaluations (input rows through the model) the stage spends on one model,
            exact for a fixed design, an upper bound (``exact=False``) where attacks stop early; ``images`` is how
            many images its per-example work runs on. Read by :func:`freqplug.report.estimate_cost`; None: unknown.
    """

    name: str
    title: Union[str, Callable[[Mapping[str, Any]], str]]
    description: str
    presets: Mapping[str, Mapping[str, Any]]
    run: Callable[[StageContext], Optional[Dict[str, Any]]]
    rows: Callable[[Mapping[str, Any]], Rows]
    plot: Optional[Callable[[plots.PlotView], Any]] = None
    sharded: bool = False
    depends_on: Tuple[str, ...] = ()
    needs_grad: bool = False
    options: Optional[Tuple[str, ...]] = None
    comparison: Tuple[Tuple[Any, Callable[[Mapping[str, Any]], Any]], ...] = field(default=())
    cost: Optional[Callable[..., Dict[str, Any]]] = None

    def heading(self, settings: Mapping[str, Any]) -> str:
        """The section title for a run with these settings."""
        return self.title(settings) if callable(self.title) else self.title

    def allowed_settings(self) -> Tuple[str, ...]:
        if self.options is not None:
            return tuple(self.options)
        keys: List[str] = []
        for preset in self.presets.values():
            keys += [k for k in preset if k not in keys]
        return tuple(keys)


_REGISTRY: Dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add a stage record at the end of the report (after the built-in stages).

    Raises:
        TypeError / ValueError: ``stage`` is not a :class:`Stage`, its name is taken or not an identifier,
            its presets do not cover :data:`PRESET_NAMES`, or it depends on an unknown or later stage.
    """
    if not isinstance(stage, Stage):
        raise TypeError(f"`stage` must be a freqplug.report.stages.Stage, got {type(stage).__name__}")
    if not isinstance(stage.name, str) or not stage.name.isidentifier():
        raise ValueError(f"`stage.name` must be an identifier (it names files and anchors), got {stage.name!r}")
    if stage.name in _REGISTRY or stage.name in COMMON_SETTINGS["fast"]:
        raise ValueError(f"`stage.name` {stage.name!r} is already taken")
    if set(stage.presets) != set(PRESET_NAMES):
        raise ValueError(f"`stage.presets` must have settings for exactly the presets {list(PRESET_NAMES)}, "
                         f"got {sorted(stage.presets)}")
    for dependency in stage.depends_on:
        if dependency not in _REGISTRY:
            raise ValueError(f"`stage.depends_on` names {dependency!r}, which is not a registered stage "
                             f"(register dependencies first; known: {', '.join(_REGISTRY)})")
    for name in ("run", "rows"):
        if not callable(getattr(stage, name)):
            raise TypeError(f"`stage.{name}` must be callable")
    if stage.cost is not None and not callable(stage.cost):
        raise TypeError(f"`stage.cost` must be None or callable, got {type(stage.cost).__name__}")
    _REGISTRY[stage.name] = stage
    return stage


def unregister(name: str) -> Stage:
    """Remove a registered stage (refused while another stage depends on it); returns its record."""
    if name not in _REGISTRY:
        raise ValueError(f"`name` {name!r} is not a registered stage; known: {', '.join(_REGISTRY)}")
    users = [s.name for s in _REGISTRY.values() if name in s.depends_on]
    if users:
        raise ValueError(f"stage {name!r} cannot be removed: {', '.join(users)} depend(s) on it")
    return _REGISTRY.pop(name)


def get_stage(name: str) -> Stage:
    """The record of a registered stage."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def registered() -> Tuple[Stage, ...]:
    """Every registered record, in report order."""
    return tuple(_REGISTRY.values())


def stage_names() -> Tuple[str, ...]:
    """Names of the registered stages, in report order (``freqplug.report.STAGES``)."""
    return tuple(_REGISTRY)


def sharded_stage_names() -> Tuple[str, ...]:
    return tuple(s.name for s in _REGISTRY.values() if s.sharded)


def preset_settings(preset: str) -> Dict[str, Any]:
    """Full settings of a preset: the common ones and one dict per registered stage (fresh copies)."""
    import copy

    settings = copy.deepcopy(COMMON_SETTINGS[preset])
    for stage in _REGISTRY.values():
        settings[stage.name] = copy.deepcopy(dict(stage.presets[preset]))
    return settings


# ------------------------------------------------------------------------------------------ helpers
def _nan_to_none(value):
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _tolist(t: torch.Tensor):
    return _nan_to_none(t.detach().cpu().double().tolist())


def format_eps(eps: float, norm: str) -> str:
    """``8/255`` for Linf budgets on the 1/255 grid, else ``%g``."""
    steps = eps * 255
    if norm == "Linf" and abs(steps - round(steps)) < 1e-9 and round(steps) > 0:
        return f"{round(steps)}/255"
    return f"{eps:g}"


def input_jacobians(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128,
                    device: Optional[torch.device] = None) -> torch.Tensor:
    """Input gradients J_k = d CE(f(x_k), y_k) / d x_k (Chan2022 eq. 3).

    Per-example loss (sum reduction), so J_k does not depend on which other images share its batch.
    The model's modes, ``requires_grad`` flags and ``.grad`` are left as they were; works under
    ``torch.no_grad()``.

    Args:
        model: classifier returning logits (B, K).
        x: images (N, C, H, W); y: labels (N,).
        batch_size: images per forward/backward call.
        device: where the model runs (default: its parameters' device).

    Returns:
        (N, C, H, W) gradients on CPU, dtype of the model's output.
    """
    device = device or next(model.parameters()).device
    out = []
    with preserved_model_state(model, freeze=True), torch.enable_grad():  # only the input gradient is wanted
        for s in range(0, x.shape[0], batch_size):
            xb = x[s:s + batch_size].to(device).detach().clone().requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[s:s + batch_size].to(device), reduction="sum")
            out.append(torch.autograd.grad(loss, xb)[0].detach().cpu())
    return torch.cat(out) if out else torch.zeros_like(x)


# ------------------------------------------------------------------------------------------ clean accuracy
def _run_clean_accuracy(ctx: StageContext):
    gathered = _dist.map_examples(ctx.n, ctx.unit_size, lambda idx: {
        "pred": predict(ctx.model, ctx.x[idx], batch_size=ctx.batch_size, device=ctx.device)})
    if gathered is None:
        return None
    pred = gathered["pred"]
    correct = pred == ctx.y
    return {"metrics": {"accuracy": correct.double().mean().item(), "n_correct": int(correct.sum())},
            "arrays": {"predictions": pred}}


def _rows_clean_accuracy(m) -> Rows:
    return [("accuracy", m["accuracy"]), ("correct", m["n_correct"])]


# ------------------------------------------------------------------------------------------ autoattack
def attack_configuration(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """Exactly which adversarial evaluation the ``autoattack`` stage runs with these settings.

    Returns:
        ``{"norm", "eps", "version", "attacks", "n_iter", "n_restarts", "standard", "description"}``;
        ``standard`` is True only for AutoAttack's ``version="standard"`` (the RobustBench protocol);
        ``description`` is the sentence the report's title uses.
    """
    from ..eval.autoattack_runner import VERSIONS

    own = dict(settings.get("autoattack", {}))
    norm, eps = settings["norm"], settings["eps"]
    version = own.get("version", "standard")
    attacks = list(own.get("attacks") or VERSIONS.get(version, ()))
    budget = format_eps(eps, norm)
    if version == "standard":
        description = f"the AutoAttack standard evaluation ({', '.join(a.upper() for a in attacks)}; {norm}, " \
                      f"eps={budget})"
    else:
        details = []
        if own.get("n_iter") is not None:
            details.append(f"{own['n_iter']} iteration{'s' if own['n_iter'] != 1 else ''}")
        if own.get("n_restarts") is not None:
            details.append(f"{own['n_restarts']} restart{'s' if own['n_restarts'] != 1 else ''}")
        if own.get("n_target_classes") is not None:
            details.append(f"{own['n_target_classes']} target classes")
        what = ", ".join(a.upper() for a in attacks) if version == "custom" else f"AutoAttack '{version}'"
        description = (f"{what} ({'; '.join(details + [f'{norm}, eps={budget}'])}), "
                       "not the AutoAttack standard evaluation")
    return {"norm": norm, "eps": eps, "version": version, "attacks": attacks, "n_iter": own.get("n_iter"),
            "n_restarts": own.get("n_restarts"), "standard": version == "standard", "description": description}


def _title_autoattack(settings) -> str:
    return "Robust accuracy under " + attack_configuration(settings)["description"]


def _run_autoattack(ctx: StageContext):
    """AutoAttack per unit of ``shard_size`` images (:func:`freqplug._distributed.map_units`).

    Unit u is attacked alone by an :class:`~freqplug.eval.AutoAttackRunner` seeded with
    ``unit_seed(seed, u)`` (every attack's random start), so its result does not depend on the number of
    processes. AutoAttack's input sanity checks run once, on unit 0 (they cost 7 forwards of a batch; the
    after-cascade Square check is free and runs per unit). Each unit also spends one forward of one image to
    check the model's output width. The writer concatenates the units in order
    (:func:`freqplug.eval.autoattack_runner._concatenate_results`): robust accuracy after each attack is
    recounted from ``broken_by`` over all images, check warnings are the union in order.
    """
    from ..eval import AutoAttackRunner
    from ..eval.autoattack_runner import _concatenate_results

    def attack(u, idx):
        runner = AutoAttackRunner(ctx.model, norm=ctx.settings["norm"], eps=ctx.settings["eps"],
                                  seed=_dist.unit_seed(ctx.seed, u), device=ctx.device,
                                  show_progress=ctx.show_progress, **ctx.own)
        part = runner.run(ctx.x[idx], ctx.y[idx], batch_size=ctx.batch_size, input_checks=u == 0)
        part.x_adv, part.y_pred = part.x_adv.detach().cpu(), part.y_pred.cpu()  # gathered through pickling
        return part

    parts = _dist.map_units(ctx.n, ctx.unit_size, attack)
    if parts is None:
        return None
    result = _concatenate_results(parts)
    configuration = attack_configuration(ctx.settings)
    return {"metrics": {"clean_accuracy": result.clean_accuracy, "robust_accuracy": result.robust_accuracy,
                        "robust_accuracy_by_attack": dict(result.robust_accuracy_by_attack),
                        "attacks": list(result.attacks), "version": result.version, "norm": result.norm,
                        "eps": result.eps, "backend": result.backend,
                        "configuration": configuration["description"],
                        "standard_evaluation": configuration["standard"],
                        "check_warnings": list(result.check_warnings)},
            "arrays": {"x_adv": result.x_adv.detach().cpu(), "robust": result.robust.cpu(),
                       "y_pred": result.y_pred.cpu()}}


def _rows_autoattack(m) -> Rows:
    rows = [("clean accuracy", m["clean_accuracy"]), ("robust accuracy", m["robust_accuracy"])]
    rows += [(f"robust after {a}", v) for a, v in m["robust_accuracy_by_attack"].items() if a != "clean"]
    rows += [("attacks", ", ".join(m["attacks"])), ("version", m["version"]),
             ("threat model", f"{m['norm']} eps={format_eps(m['eps'], m['norm'])}"), ("backend", m["backend"])]
    if "configuration" in m:
        rows.append(("AutoAttack standard evaluation", "yes" if m["standard_evaluation"] else "no"))
    return rows


def _comparison_label_autoattack(settings) -> str:
    configuration = attack_configuration(settings)
    return "robust accuracy (AutoAttack standard)" if configuration["standard"] else \
        f"robust accuracy ({', '.join(a.upper() for a in configuration['attacks'])}, not standard AutoAttack)"


# ------------------------------------------------------------------------------------------ perturbation spectrum
def _run_perturbation_spectrum(ctx: StageContext):
    """RCT and spectral SNR of AutoAttack's perturbations, on the writer only (not sharded, on purpose).

    It makes no model evaluation (two FFTs/DCTs of N images), and its input, the gathered ``x_adv`` of the
    autoattack stage, exists on the writer alone (``ctx.done``); sharding would first send every rank
    the images it then sends back as spectra sums, for a cost the writer pays in well under a second.
    """
    from ..eval import perturbation_spectrum

    x_adv = ctx.done["autoattack"]["arrays"]["x_adv"]
    rct, snr = perturbation_spectrum(ctx.x, x_adv.to(ctx.x.dtype))
    if rct is None:
        return {"metrics": {"n_perturbed": 0}, "arrays": {}}
    n_perturbed = int(((x_adv - ctx.x).flatten(1).abs().amax(1) > 0).sum())
    snr_db = 10 * torch.log10(snr)
    h = rct.shape[0]
    low = rct[: h // 4, : h // 4].mean().item()  # top-left quarter of the DCT: the lowest frequencies
    high = rct[h // 2:, h // 2:].mean().item()
    return {"metrics": {"n_perturbed": n_perturbed, "rct_mean": rct.mean().item(), "rct_low_quarter": low,
                        "rct_high_half": high, "snr_db": _tolist(snr_db)},
            "arrays": {"rct": rct, "snr": snr, "snr_db": snr_db}}


def _rows_perturbation_spectrum(m) -> Rows:
    if not m.get("n_perturbed"):
        return [("perturbed images", 0)]
    return [("perturbed images", m["n_perturbed"]), ("mean RCT", m["rct_mean"]),
            ("mean RCT, lowest quarter", m["rct_low_quarter"]), ("mean RCT, high half", m["rct_high_half"]),
            ("SNR at r=1 (dB)", m["snr_db"][1] if len(m["snr_db"]) > 1 else None),
            ("SNR at r_max (dB)", m["snr_db"][-1])]


# ------------------------------------------------------------------------------------------ masked noise
def _run_masked_noise(ctx: StageContext):
    """Chen2022 Fig. 6's table per unit of ``shard_size`` images (:func:`freqplug._distributed.map_examples`).

    Unit u's PGD random start is drawn after ``torch.manual_seed(unit_seed(seed, u))`` (in a fork of the global
    RNG); the error rates are recounted on the writer from every image's correctness flags.
    """
    import torchattacks

    from ..eval.frequency import _error_rates
    from ..eval.masked_noise import _masked_noise_correct

    s, eps, norm = ctx.own, ctx.settings["eps"], ctx.settings["norm"]
    if norm == "Linf":
        pgd = torchattacks.PGD(ctx.model, eps=eps, alpha=eps / 4, steps=s["pgd_steps"], random_start=True)
    elif norm == "L2":
        pgd = torchattacks.PGDL2(ctx.model, eps=eps, alpha=eps / 4, steps=s["pgd_steps"], random_start=True)
    else:  # torchattacks has no L1 PGD; an Linf table would be reported under the wrong threat model
        return {"metrics": {"skipped": f"no PGD for threat model {norm} in torchattacks"}, "arrays": {}}
    k = ctx.n if s["n_images"] is None else min(s["n_images"], ctx.n)
    devices = [ctx.device] if torch.device(ctx.device).type == "cuda" else []

    def unit(u, idx):
        # PGD's random start draws from the global RNG: seeded per unit inside a fork (profile() also forks the
        # global RNG around all stages), so a unit's draws do not depend on the ranks and the user's stream is
        # untouched. The PFC/NFC Shapley masks are per image, estimated with the run's seed.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(_dist.unit_seed(ctx.seed, u))
            return _masked_noise_correct(ctx.model, pgd, ctx.x[idx], ctx.y[idx], batch_size=ctx.batch_size,
                                         shapley={"players": s["players"], "n_samples": s["n_samples"],
                                                  "seed": ctx.seed})

    gathered = _dist.map_examples(k, ctx.unit_size, lambda idx: unit(idx[0] // ctx.unit_size, idx))
    if gathered is None:
        return None
    table = _error_rates(gathered)  # error rates of all k images, recounted from the per-image flags
    return {"metrics": {"error_rate": table, "n_images": k, "attack": f"PGD ({norm}, eps={format_eps(eps, norm)}, "
                                                                       f"{s['pgd_steps']} steps, random start)"},
            "arrays": {}}


def _rows_masked_noise(m) -> Rows:
    rows = [("images", m["n_images"])]
    if "attack" in m:
        rows.append(("noise", m["attack"]))
    return rows + [(f"error on {k}", v) for k, v in m["error_rate"].items()]


# ------------------------------------------------------------------------------------------ band shapley
def _run_band_shapley(ctx: StageContext):
    from ..attributions import SpectralBandShapley

    s = ctx.own
    result = SpectralBandShapley(ctx.model, num_bands=s["num_bands"]).importance(
        (ctx.x.to(ctx.device), ctx.y.to(ctx.device)), internal_batch_size=ctx.batch_size, seed=ctx.seed,
        show_progress=ctx.show_progress)
    if not _dist.is_writer():
        return None
    return {"metrics": {"psi": _tolist(result.values), "stderr": _tolist(result.stderr), "sid": _tolist(result.sid),
                        "srs": float(result.srs), "distinguishable": bool(result.distinguishable),
                        "p_value": _nan_to_none(float(result.p_value)), "message": str(result.message),
                        "num_bands": s["num_bands"]},
            "arrays": {"psi": result.values.cpu(), "sid": result.sid.cpu(), "stderr": result.stderr.cpu()}}


def _rows_band_shapley(m) -> Rows:
    return [("SRS", m["srs"]), ("bands", m["num_bands"]), ("SID", " ".join(f"{v:.3f}" for v in m["sid"])),
            ("psi", " ".join(f"{v:.3g}" for v in m["psi"])), ("equal-psi test p", m["p_value"]),
            ("distinguishable from noise", m["distinguishable"])]


# ------------------------------------------------------------------------------------------ frequency shapley
def _sharded_frequency_shapley(ctx: StageContext, k: int, **options):
    """Chen2022's frequency Shapley values of the first ``k`` images, split across ranks by units.

    Each unit is one ``FrequencyShapley.attribute`` call on one image (``first_index`` = its dataset index); an
    image's values do not depend on the other images of the call, so the writer's concatenation is the result
    of one call on all ``k`` images (bitwise equal for any number of ranks). One image per unit, whatever
    ``shard_size``: a game costs ``n_samples * (P - 1)`` evaluations in forward calls of about 64 masked
    images however many images share the call, so finer units cost nothing and balance the ranks (the
    ``gpu`` preset's 20 images in units of 128 would all run on rank 0).

    Returns:
        The combined :class:`~freqplug.attributions.FrequencyShapleyResult` (tensors on CPU) on the writer;
        None on the other ranks.
    """
    from ..attributions import FrequencyShapley
    from ..attributions.frequency_shapley import _PER_IMAGE_FIELDS, _concatenate_results

    model = ctx.model
    fs = FrequencyShapley(lambda z: torch.softmax(model(z), dim=1))  # Chen2022's game: class probability

    def unit(u, indices):
        result = fs.attribute(ctx.x[indices].to(ctx.device), target=ctx.y[indices].to(ctx.device), seed=ctx.seed,
                              show_progress=ctx.show_progress, return_result=True, first_index=indices[0],
                              **options)
        for key in _PER_IMAGE_FIELDS:  # picklable, device-free for the gather
            value = getattr(result, key)
            setattr(result, key, None if value is None else value.detach().cpu())
        result.players = None  # the same partition in every unit: not sent k times (put back on the writer)
        return result

    parts = _dist.map_units(k, 1, unit)
    if parts is None:
        return None
    players = fs.players(*ctx.x.shape[-2:], options.get("players"))
    for part in parts:
        part.players = players
    return _concatenate_results(parts)


def _run_frequency_shapley(ctx: StageContext):
    from ..attributions import centered_attributions, radial_average, reconstruct_from_mask

    s = ctx.own
    k = min(s["n_images"], ctx.n)
    result = _sharded_frequency_shapley(ctx, k, players=s["players"], n_samples=s["n_samples"],
                                        estimator=s.get("estimator", "auto"))
    if result is None:
        return None
    attributions = result.attributions.cpu()
    mean_map = centered_attributions(attributions.mean(0))
    radial = radial_average(attributions.mean(0))
    m = min(k, 4)
    # only components whose sign the sampling error cannot flip (|phi| > 2 SE) are PFC / NFC
    pfc = reconstruct_from_mask(ctx.x[:m], result.positive_mask(determined_only=True)[:m].cpu())
    nfc = reconstruct_from_mask(ctx.x[:m], result.negative_mask(determined_only=True)[:m].cpu())
    relative_stderr = result.relative_stderr.double().cpu()
    return {"metrics": {"n_images": k, "players": s["players"], "n_samples": s["n_samples"],
                        "radial_mean": _tolist(radial), "positive_fraction": (attributions > 0).double().mean().item(),
                        "negative_fraction": (attributions < 0).double().mean().item(),
                        "max_abs_efficiency_gap": result.efficiency_gap.abs().max().item(),
                        "n_evaluations": int(result.n_evaluations), "estimator": result.estimator,
                        "sign_determined_fraction": result.sign_determined.double().mean().item(),
                        "median_relative_stderr": (relative_stderr.nanmedian().item()
                                                   if bool(torch.isfinite(relative_stderr).any()) else None)},
            "arrays": {"mean_map": mean_map, "radial": radial, "images": ctx.x[:m].clone(), "pfc": pfc, "nfc": nfc}}


def _rows_frequency_shapley(m) -> Rows:
    return [("images", m["n_images"]), ("players (patch grid)", m["players"]),
            ("n_samples (budget in antithetic permutations)", m["n_samples"]),
            ("positive bins", m["positive_fraction"]), ("negative bins", m["negative_fraction"]),
            ("max |efficiency gap|", m["max_abs_efficiency_gap"])] + [
        (label, m[key]) for label, key in (("estimator", "estimator"),
                                           ("sign determined (|phi| > 2 SE)", "sign_determined_fraction"),
                                           ("median relative SE", "median_relative_stderr")) if key in m]


# ------------------------------------------------------------------------------------------ frequency bias
def _run_frequency_bias(ctx: StageContext):
    from ..spectral import centered_fft2, frequency_bias

    gathered = _dist.map_examples(ctx.n, ctx.unit_size, lambda idx: {"jacobian": input_jacobians(
        ctx.model, ctx.x[idx], ctx.y[idx], ctx.batch_size, ctx.device)})
    if gathered is None:
        return None
    jac = gathered["jacobian"]
    spectrum = centered_fft2(jac).abs().mean(dim=(0, 1))  # for display only
    return {"metrics": {"b_low": float(frequency_bias(jac))}, "arrays": {"jacobian_spectrum": spectrum}}


# ------------------------------------------------------------------------------------------ HF attack
def _run_hf_attack(ctx: StageContext):
    from ..attacks import HFAttack

    s = ctx.own

    def attack(idx):
        # Success counts only images the model classifies correctly (as robust accuracy does): a wrong
        # clean prediction is no success of the attack (Wang2020b).
        clean = predict(ctx.model, ctx.x[idx], batch_size=ctx.batch_size, device=ctx.device)
        correct = clean == ctx.y[idx]
        radius = torch.full((len(idx),), float("nan"), dtype=torch.float64)
        if bool(correct.any()):
            hf = HFAttack(ctx.model, step=s["step"], batch_size=ctx.batch_size)
            hf(ctx.x[idx][correct].to(ctx.device), ctx.y[idx][correct].to(ctx.device))
            radius[correct] = hf.found_radius.detach().cpu().double()
        return {"radius": radius, "correct": correct}

    gathered = _dist.map_examples(ctx.n, ctx.unit_size, attack)
    if gathered is None:
        return None
    radius, correct = gathered["radius"], gathered["correct"]
    success = ~torch.isnan(radius)
    n_correct, n_success = int(correct.sum()), int(success.sum())
    return {"metrics": {"success_rate": n_success / n_correct if n_correct else None, "n_correct": n_correct,
                        "n_success": n_success,
                        "mean_radius": radius[success].mean().item() if n_success else None,
                        "min_radius": ctx.x.shape[-1] / 4, "step": s["step"]},
            "arrays": {"found_radius": radius, "attacked": correct}}


def _rows_hf_attack(m) -> Rows:
    return [("success rate (of correctly classified images)", m["success_rate"]),
            ("correctly classified images attacked", m.get("n_correct")), ("successes", m.get("n_success")),
            ("mean radius of success (bins)", m["mean_radius"]), ("smallest radius tried", m["min_radius"])]


# ------------------------------------------------------------------------------------------ occluded frequency
def _run_occluded_frequency(ctx: StageContext):
    from ..attributions import OccludedFrequency
    from ..attributions.occluded_frequency import _class_means
    from ..spectral import dct_band_groups

    ring_width = ctx.own["ring_width"]
    rings = dct_band_groups(*ctx.x.shape[-2:], kind="ring").player_map // ring_width  # Wang2020a's rings, merged
    of = OccludedFrequency(ctx.model, groups=rings)
    # per unit the per-image scores (baselines keyed on the dataset index: first_index), class means on the writer
    gathered = _dist.map_examples(ctx.n, ctx.unit_size, lambda idx: {"scores": of.player_values(
        ctx.x[idx].to(ctx.device), "zero", target=ctx.y[idx].to(ctx.device), perturbations_per_eval=32,
        seed=ctx.seed, max_evaluations=float("inf"), first_index=idx[0])})
    if gathered is None:
        return None
    means, counts = _class_means(gathered["scores"], ctx.y, ctx.num_classes)  # NaN rows: classes without images
    present = counts > 0
    overall = (means[present] * counts[present, None]).sum(0) / counts[present].sum()
    return {"metrics": {"class_means": _tolist(means), "class_counts": counts.tolist(), "mean": _tolist(overall),
                        "ring_width": ring_width},
            "arrays": {"class_means": means, "mean": overall}}


def _rows_occluded_frequency(m) -> Rows:
    mean = [v for v in m["mean"] if v is not None]
    top = max(range(len(mean)), key=lambda i: mean[i]) if mean else None
    return [("ring width (DCT bins)", m["ring_width"]), ("ring with the largest mean drop", top),
            ("largest mean drop", max(mean) if mean else None),
            ("classes", sum(1 for c in m["class_counts"] if c)),
            ("classes without images (not drawn)", sum(1 for c in m["class_counts"] if not c))]


# ------------------------------------------------------------------------------------------ the built-in records
_AUTOATTACK_OPTIONS = ("version", "attacks", "backend", "n_iter", "n_restarts", "n_queries", "n_target_classes")

for _stage in (
    Stage("clean_accuracy", "Clean accuracy", "Accuracy on the unperturbed images.",
          {p: {} for p in PRESET_NAMES}, _run_clean_accuracy, _rows_clean_accuracy, sharded=True,
          cost=costs.cost_clean_accuracy,
          comparison=(("clean accuracy", lambda m: m["accuracy"]),)),
    Stage("autoattack", _title_autoattack,
          "Robust accuracy under the adversarial evaluation named in the title (threat model and eps as given to "
          "profile(); RobustBench's leaderboards use the AutoAttack standard evaluation on the full test set).",
          {"fast": {"version": "custom", "attacks": ["apgd-ce"], "n_iter": 5, "n_restarts": 1},
           "default": {"version": "custom", "attacks": ["apgd-ce", "apgd-t"], "n_iter": 20, "n_restarts": 1,
                       "n_target_classes": 3},
           "gpu": {"version": "standard"}},
          _run_autoattack, _rows_autoattack, plots.plot_autoattack, needs_grad=True, sharded=True,
          options=_AUTOATTACK_OPTIONS, cost=costs.cost_autoattack,
          comparison=((_comparison_label_autoattack, lambda m: m["robust_accuracy"]),)),
    Stage("perturbation_spectrum", "Spectra of the adversarial perturbations (RCT, spectral SNR)",
          "Where the perturbations of the autoattack stage put their energy in frequency (RCT, Wang2020a; "
          "spectral SNR, Luo2024).",
          {p: {} for p in PRESET_NAMES}, _run_perturbation_spectrum, _rows_perturbation_spectrum,
          plots.plot_perturbation_spectrum, depends_on=("autoattack",),
          cost=costs.cost_perturbation_spectrum),
    Stage("masked_noise", "Masked-noise error table",
          "Error rates under PGD noise (in the run's threat model) restricted to low/high frequencies and to the "
          "positive/negative Shapley components (Chen2022 Fig. 6).",
          {"fast": {"n_images": 10, "pgd_steps": 5, "players": 4, "n_samples": 2},
           "default": {"n_images": None, "pgd_steps": 10, "players": 8, "n_samples": 4},
           "gpu": {"n_images": None, "pgd_steps": 20, "players": 16, "n_samples": 8}},
          _run_masked_noise, _rows_masked_noise, plots.plot_masked_noise, needs_grad=True, sharded=True,
          cost=costs.cost_masked_noise,
          comparison=(("error on x+δ_high", lambda m: m["error_rate"].get("x+delta_high")),)),
    Stage("band_shapley", "Spectral importance distribution and SRS",
          "Spectral importance distribution over frequency bands and the spectral robustness score "
          "(I-ASIDE, Luo2024).",
          {"fast": {"num_bands": 4}, "default": {"num_bands": 8}, "gpu": {"num_bands": 8}},
          _run_band_shapley, _rows_band_shapley, plots.plot_band_shapley, sharded=True,
          cost=costs.cost_band_shapley,
          comparison=(("SRS", lambda m: m["srs"]),)),
    Stage("frequency_shapley", "Frequency Shapley values",
          "Mean frequency Shapley values, their radial profile and PFC/NFC reconstructions (Chen2022).",
          {"fast": {"n_images": 4, "players": 8, "n_samples": 2},
           "default": {"n_images": 8, "players": 8, "n_samples": 4},
           "gpu": {"n_images": 20, "players": 16, "n_samples": 16}},
          _run_frequency_shapley, _rows_frequency_shapley, plots.plot_frequency_shapley, sharded=True,
          cost=costs.cost_frequency_shapley),
    Stage("frequency_bias", "Frequency bias B_low of the input Jacobians",
          "Low-frequency bias B_low of the input Jacobians of the cross-entropy (Chan2022).",
          {p: {} for p in PRESET_NAMES}, _run_frequency_bias, lambda m: [("B_low", m["b_low"])],
          plots.plot_frequency_bias, sharded=True, needs_grad=True, comparison=(("B_low", lambda m: m["b_low"]),),
          cost=costs.cost_frequency_bias),
    Stage("hf_attack", "HF attack",
          "Success rate and radius of the HF attack on the correctly classified images: the largest low-pass image "
          "the model gets wrong (Wang2020b).",
          {"fast": {"step": 2.0}, "default": {"step": 1.0}, "gpu": {"step": 1.0}},
          _run_hf_attack, _rows_hf_attack, plots.plot_hf_attack, sharded=True, cost=costs.cost_hf_attack,
          comparison=(("HF attack success (correctly classified)", lambda m: m["success_rate"]),)),
    Stage("occluded_frequency", "Occluded-frequency class averages",
          "Logit drop from occluding each DCT frequency ring, averaged per class (Wang2020a); classes without "
          "images have no average and are left blank.",
          {"fast": {"ring_width": 4}, "default": {"ring_width": 1}, "gpu": {"ring_width": 1}},
          _run_occluded_frequency, _rows_occluded_frequency, plots.plot_occluded_frequency, sharded=True,
          cost=costs.cost_occluded_frequency),
):
    register(_stage)
del _stage


# --- curves (issue 16 items 2 and 3: robustness curves, class-wise frequency analysis) ----------------------
def _curve_attacks(ctx: StageContext):
    """The stage's attacks in the run's threat model: FGSM and PGD for Linf, PGD-L2 for L2, plus HF."""
    import torchattacks

    from ..attacks import HFAttack

    s, eps, norm = ctx.own, ctx.settings["eps"], ctx.settings["norm"]
    attacks = {}
    if norm == "Linf":
        attacks["FGSM"] = torchattacks.FGSM(ctx.model, eps=eps)
        attacks["PGD"] = torchattacks.PGD(ctx.model, eps=eps, alpha=eps / 4, steps=s["pgd_steps"], random_start=True)
    elif norm == "L2":
        attacks["PGD-L2"] = torchattacks.PGDL2(ctx.model, eps=eps, alpha=eps / 4, steps=s["pgd_steps"],
                                               random_start=True)
    if s.get("hf_step") and norm in ("Linf", "L2"):
        attacks["HF"] = HFAttack(ctx.model, step=s["hf_step"], batch_size=ctx.batch_size)
    return attacks


def _curve_defenses(ctx: StageContext):
    """Wang2020b's D1 (input low-pass) and D2 (low-passed first-layer kernels, when the model has a Conv2d)."""
    from ..defenses import LowPassFilter, low_pass_kernels

    s = ctx.own
    defenses = {}
    if s.get("d1_radius"):
        defenses[f"D1 r={s['d1_radius']:g}"] = LowPassFilter(ctx.model, s["d1_radius"])
    if s.get("d2_radius") and any(isinstance(m, nn.Conv2d) for m in ctx.model.modules()):
        defenses[f"D2 r={s['d2_radius']:g}"] = low_pass_kernels(ctx.model, s["d2_radius"])
    return defenses


def _run_robustness_curve(ctx: StageContext):
    """Robustness curves per unit of ``shard_size`` images (:func:`freqplug._distributed.map_units`).

    Unit u runs :func:`freqplug.eval.robustness_curve` with seed ``unit_seed(seed, u)`` (each point's random
    start then comes from ``point_seed(unit_seed(seed, u), attack, eps)``); the writer concatenates the units'
    per-image flags and recomputes accuracies, AUCs and the HF radius curves from them
    (:func:`freqplug.eval.curves._concatenate_curves`); ``seed`` in the metrics is the run's.
    """
    from ..eval import robustness_curve
    from ..eval.curves import _concatenate_curves

    s, eps = ctx.own, ctx.settings["eps"]
    attacks = _curve_attacks(ctx)
    if not attacks:
        return {"metrics": {"skipped": f"no attack for threat model {ctx.settings['norm']} in torchattacks"},
                "arrays": {}}
    k = ctx.n if s["n_images"] is None else min(s["n_images"], ctx.n)
    grid = [eps * f for f in s["eps_fractions"]]
    defenses = _curve_defenses(ctx)

    def unit(u, idx):
        return robustness_curve(ctx.model, attacks, grid, ctx.x[idx].to(ctx.device), ctx.y[idx].to(ctx.device),
                                defenses=defenses, norm=ctx.settings["norm"], batch_size=ctx.batch_size,
                                seed=_dist.unit_seed(ctx.seed, u), show_progress=ctx.show_progress)

    parts = _dist.map_units(k, ctx.unit_size, unit)
    if parts is None:
        return None
    result = _concatenate_curves(parts, seed=ctx.seed)
    metrics = result.to_dict()
    arrays = {"eps": result.eps}
    for attack, model_name, accuracy in result.curves():
        arrays[f"{attack} | {model_name}"] = accuracy
    return {"metrics": metrics, "arrays": arrays}


def _rows_robustness_curve(m) -> Rows:
    if "skipped" in m:
        return [("skipped", m["skipped"])]
    top = format_eps(m["eps"][-1], m["norm"])
    rows: Rows = [("images", m["n_images"]), ("eps grid", ", ".join(format_eps(e, m["norm"]) for e in m["eps"]))]
    for attack, accuracy in m["accuracy"].items():
        rows += [(f"{attack}: accuracy at eps={top}", accuracy[-1]), (f"{attack}: normalised AUC", m["auc"][attack])]
    for defense, curves in m["defended"].items():
        rows.append((f"{defense}: clean accuracy", m["clean_accuracy"][defense]))
        for attack, accuracy in curves.items():
            rows += [(f"{attack} + {defense}: accuracy at eps={top}", accuracy[-1]),
                     (f"{attack} + {defense}: normalised AUC", m["defended_auc"][defense][attack])]
    for attack, curve in m.get("hf_radius", {}).items():
        rows.append((f"{attack}: accuracy at the smallest radius ({curve['radius'][-1]:.3g} bins)",
                     curve["accuracy"][-1]))
    return rows


def _run_classwise(ctx: StageContext):
    from ..eval import classwise_hfc_shapley, per_class_accuracy, significant_component_ratio

    s = ctx.own
    k = ctx.n if s["n_images"] is None else min(s["n_images"], ctx.n)
    # the Shapley games split across ranks; the class statistics on the writer from the combined result
    result = _sharded_frequency_shapley(ctx, k, players=s["players"], n_samples=s["n_samples"])
    if result is None:
        return None
    robust = overall = None
    autoattack = ctx.done.get("autoattack")
    if autoattack is not None and "robust" in autoattack.get("arrays", {}):
        correct = autoattack["arrays"]["robust"].bool().cpu()
        robust = per_class_accuracy(correct, ctx.y.cpu(), num_classes=ctx.num_classes)
        overall = float(correct.double().mean())
    classwise = classwise_hfc_shapley(result, ctx.y[:k].cpu(), robust_accuracy=robust, num_classes=ctx.num_classes)
    significant = significant_component_ratio(result)
    metrics = classwise.to_dict()
    metrics.update({"n_images": k, "players": s["players"], "n_samples": s["n_samples"], "overall_robust": overall,
                    "significant": significant.to_dict()})
    return {"metrics": metrics, "arrays": {"hfc_abs": classwise.hfc_abs, "pfc_radial": significant.pfc_radial,
                                          "nfc_radial": significant.nfc_radial}}


def _rows_classwise(m) -> Rows:
    present = [v for v in m["hfc_abs"] if v is not None]
    rows: Rows = [("images", m["n_images"]), ("classes with images", len(present)),
                  ("mean |phi_HFC|, largest class", max(present) if present else None),
                  ("mean |phi_HFC|, smallest class", min(present) if present else None)]
    if m.get("robust_accuracy") is not None:
        rows += [("Pearson (|phi_HFC|, own per-class robust accuracy)", m["pearson"]),
                 ("Spearman", m["spearman"]), ("classes in the correlation", m["num_classes"])]
    significant = m["significant"]
    for kind in ("PFC", "NFC"):
        radial = significant[f"{kind.lower()}_radial"]
        rows.append((f"significant {kind} ratio, mean over radii", sum(radial) / len(radial)))
    return rows


def _cost_robustness_curve(settings, n_images, image_shape, num_classes) -> Dict[str, Any]:
    """Upper bound from the stage's own attacks and defenses (built on a stand-in model) and
    :func:`freqplug.eval.curves.curve_evaluations`, the count :func:`~freqplug.eval.robustness_curve` checks its
    budget with."""
    from ..eval.curves import curve_evaluations

    own = settings["robustness_curve"]
    k = costs._subset(own["n_images"], n_images)
    ctx = _cost_context(settings, "robustness_curve", k, image_shape, num_classes)
    attacks = _curve_attacks(ctx)
    if not attacks:
        return {"evaluations": 0, "exact": True, "images": 0}
    positive = [f for f in own["eps_fractions"] if f > 0]
    total = curve_evaluations(attacks, 1 + len(_curve_defenses(ctx)), positive, k, image_shape[-2], image_shape[-1])
    return {"evaluations": total, "exact": False, "images": k}


def _cost_context(settings, stage: str, n: int, image_shape, num_classes):
    """A StageContext on a stand-in model and a zero-stride image batch (no memory for n images)."""
    x = torch.zeros((1,) + tuple(image_shape)).expand((n,) + tuple(image_shape))
    return StageContext(model=costs._StandIn(num_classes, image_shape[0]), x=x, y=torch.zeros(n, dtype=torch.long),
                        settings=dict(settings), device=torch.device("cpu"), seed=0, show_progress=False,
                        num_classes=num_classes, done={}, stage=stage)


def _register_curves_stages() -> None:
    from . import plots_curves

    register(Stage(
        "robustness_curve", "Robustness curves",
        "Robust accuracy against the perturbation budget (fractions of the run's eps) under FGSM, PGD and the HF "
        "attack, for the model and for Wang2020b's low-pass defenses D1 (input) and D2 (first-layer kernels) "
        "evaluated on the same adversarial examples (Wang2020b Figs. 2-4); AUC is the trapezoid area normalised by "
        "the eps range. The HF panel shows its accuracy against the smallest low-pass radius it may use.",
        {"fast": {"n_images": 4, "eps_fractions": [0.5, 1.0], "pgd_steps": 3, "hf_step": 4.0,
                  "d1_radius": 12.0, "d2_radius": 1.2},
         "default": {"n_images": 32, "eps_fractions": [0.125, 0.25, 0.5, 0.75, 1.0], "pgd_steps": 10,
                     "hf_step": 1.0, "d1_radius": 12.0, "d2_radius": 1.2},
         "gpu": {"n_images": None, "eps_fractions": [0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0], "pgd_steps": 20,
                 "hf_step": 1.0, "d1_radius": 12.0, "d2_radius": 1.2}},
        _run_robustness_curve, _rows_robustness_curve, plots_curves.plot_robustness_curve_stage, needs_grad=True,
        sharded=True, cost=_cost_robustness_curve,
        comparison=(("PGD normalised AUC", lambda m: m.get("auc", {}).get("PGD")),)))
    register(Stage(
        "classwise", "Class-wise frequency analysis",
        "Per class, the mean |Shapley value| of the high-frequency components (r > 0.7 r_max) and, when the "
        "autoattack stage ran, the per-class robust accuracy with their correlation; with two models the plot pairs "
        "the least robust model's |phi_HFC| with the most robust model's per-class robust accuracy (Chen2022 "
        "Fig. 5). Also the ratio of significantly large PFC/NFC (|phi| > 20 % of the max at that frequency, Chen2022 "
        "Fig. 7).",
        {"fast": {"n_images": 4, "players": 4, "n_samples": 2},
         "default": {"n_images": 40, "players": 8, "n_samples": 4},
         "gpu": {"n_images": None, "players": 16, "n_samples": 8}},
        _run_classwise, _rows_classwise, plots_curves.plot_classwise_stage, sharded=True, cost=costs.cost_classwise,
        comparison=(("Pearson (|phi_HFC|, per-class robust accuracy)", lambda m: m.get("pearson")),)))


_register_curves_stages()


# --- corruptions (issue 16 item 1: corruption robustness by frequency; Chan2022 Table 1)
def _run_corruptions(ctx: StageContext):
    from .._optional import available
    from ..eval.corruptions import _corruption_robustness

    if not available("imagecorruptions"):
        return {"metrics": {"skipped": 'needs the imagecorruptions package: pip install "freqplug[corruptions]"'},
                "arrays": {}}
    s = ctx.own
    n = ctx.n if s["n_images"] is None else min(ctx.n, s["n_images"])
    if ctx.x.shape[-1] < 32 or ctx.x.shape[-2] < 32 or ctx.x.shape[1] not in (1, 3):
        return {"metrics": {"skipped": "imagecorruptions needs images of at least 32x32 with 1 or 3 channels"},
                "arrays": {}}
    # per unit the corruptions (seeded by dataset index), correct counts and noise spectra; combined on the writer
    result = _corruption_robustness(ctx.model, ctx.x[:n], ctx.y[:n], tuple(s["corruptions"]), tuple(s["severities"]),
                                    batch_size=ctx.batch_size, seed=ctx.seed, baseline=None, data_dir=None,
                                    dataset="cifar10", device=ctx.device, max_evaluations=float("inf"),
                                    show_progress=ctx.show_progress, unit_size=ctx.unit_size)
    if result is None:
        return None
    metrics = result.to_dict()
    order = metrics["order_by_b_low"]
    return {"metrics": metrics,
            "arrays": {"b_low": torch.tensor([result.frequency_bias[c] for c in order], dtype=torch.float64),
                       "accuracy": torch.tensor([result.mean_accuracy(c) for c in order], dtype=torch.float64),
                       "radial_profile": torch.stack([result.radial_profile[c].double() for c in order])}}


def _rows_corruptions(m) -> Rows:
    accuracies = list(m["mean_accuracy"].values())
    rows = [("images", m["n_examples"]), ("severities", ", ".join(str(s) for s in m["severities"])),
            ("clean accuracy", m["clean_accuracy"]),
            ("mean accuracy over the corruptions", sum(accuracies) / len(accuracies))]
    for c in m["order_by_b_low"]:  # Chan2022 Table 1's order: descending B_low of the noise
        rows.append((f"{c} (B_low {m['frequency_bias'][c]:.2f})", m["mean_accuracy"][c]))
    return rows


def _plot_corruptions(view):
    from .plots_corruptions import plot_corruptions

    return plot_corruptions(view)


from ..data.corruptions import CORRUPTIONS as _ALL_CORRUPTIONS  # noqa: E402 (kept in this block for the merge)

register(Stage(
    "corruptions", "Corruption robustness by frequency",
    "Accuracy under the CIFAR-10-C/ImageNet-C corruptions generated by imagecorruptions (ImageNet-C severity "
    "parameters, seeded per image), averaged over the severities, ordered by the low-frequency bias B_low of each "
    "corruption's noise (corrupted - clean) as in Chan2022 Table 1. The fast preset measures 4 corruptions at "
    "severity 3 on 8 images; default 19 corruptions x 5 severities on up to 100 images; gpu on every image.",
    {"fast": {"corruptions": ["gaussian_noise", "jpeg_compression", "defocus_blur", "fog"], "severities": [3],
              "n_images": 8},
     "default": {"corruptions": list(_ALL_CORRUPTIONS), "severities": [1, 2, 3, 4, 5], "n_images": 100},
     "gpu": {"corruptions": list(_ALL_CORRUPTIONS), "severities": [1, 2, 3, 4, 5], "n_images": None}},
    _run_corruptions, _rows_corruptions, _plot_corruptions, sharded=True, cost=costs.cost_corruptions,
    comparison=(("mean accuracy over the corruptions",
                 lambda m: sum(m["mean_accuracy"].values()) / len(m["mean_accuracy"])),)))


#: Names of the built-in stages (the registry may grow at run time; :func:`stage_names` is the live list).
BUILTIN_STAGES = stage_names()
