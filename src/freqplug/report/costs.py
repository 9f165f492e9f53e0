"""What a profile costs before it runs: model evaluations per stage, per rank.

One *model evaluation* is one input row through the model's forward (what :func:`freqplug.report.profile`
counts per stage with a forward pre-hook and records as ``timing[model][stage]["evaluations"]``); attack
steps also run a backward, which costs about twice a forward.

Every stage record has a ``cost(settings, n_images, image_shape, num_classes) -> {"evaluations": int,
"exact": bool, "images": int}`` function, defined here by composing the counts the measured functions
document themselves (:func:`freqplug.attributions._estimators.design_size`,
:meth:`freqplug.OccludedFrequency.num_evaluations`, :meth:`freqplug.SpectralBandShapley.num_evaluations`,
:meth:`freqplug.HFAttack.candidate_radii`, :meth:`freqplug.eval.AutoAttackRunner.evaluation_estimate`, ...).
``exact`` is True when the count does not depend on the model (a fixed design); attacks stop early on
broken points, so theirs is an upper bound (``exact=False``). ``images`` is the number of images the
stage's per-example work runs on (what is split across ranks). :func:`estimate_cost` adds them up.
Nothing here loads weights or runs a model: the stages' objects are built on a stand-in module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .._validation import check_choice, check_positive_int

Cost = Dict[str, Any]


class _StandIn(nn.Module):
    """A module to build attack/attribution objects on when only their budgets are read (never called). It has a
    first convolution, as the image classifiers the report is for: the robustness_curve stage adds Wang2020b's D2
    defense (low-passed first-layer kernels) only for models with a Conv2d."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(in_channels, 1, 3)

    def forward(self, x):  # pragma: no cover - a cost estimate never runs the model
        raise RuntimeError("the cost estimate's stand-in model must not be evaluated")


def _subset(setting: Optional[int], n_images: int) -> int:
    """Images a stage with an ``n_images`` setting (None = all) runs on."""
    return n_images if setting is None else min(int(setting), n_images)


def _units(n: int, unit_size: int) -> List[int]:
    """Sizes of the units (:func:`freqplug._distributed.units`) of n images."""
    from .. import _distributed as _dist

    return [len(indices) for _, indices in _dist.units(n, unit_size)]


def _frequency_shapley_rows(players_spec, n_samples: int, image_shape: Sequence[int], estimator: str = "auto") -> int:
    """Coalitions per image FrequencyShapley evaluates (its own players, estimator resolution and design size)."""
    import warnings

    from ..attributions import FrequencyShapley
    from ..attributions._estimators import design_size, resolve_estimator

    players = FrequencyShapley(lambda z: z).players(image_shape[-2], image_shape[-1], players_spec).num_players
    with warnings.catch_warnings():  # the run warns once about a missing XGBoost; an estimate need not
        warnings.simplefilter("ignore")
        estimator, n_samples = resolve_estimator(estimator, players, n_samples)
    return design_size(estimator, players, n_samples)


# ------------------------------------------------------------------------------------------ per stage
def cost_clean_accuracy(settings, n_images, image_shape, num_classes) -> Cost:
    """One forward per image."""
    return {"evaluations": n_images, "exact": True, "images": n_images}


def cost_autoattack(settings, n_images, image_shape, num_classes) -> Cost:
    """Upper bound, per run of :meth:`freqplug.eval.AutoAttackRunner.run` (one per unit of ``shard_size`` images
    when the stage is split in units, else one): the output-width forward of one image, AutoAttack's checks
    (7 forwards of the first batch), the clean forward and :meth:`AutoAttackRunner.evaluation_estimate` (every
    point attacked by every attack, as if none broke)."""
    from ..eval import AutoAttackRunner

    runner = AutoAttackRunner(_StandIn(num_classes), norm=settings["norm"], eps=settings["eps"],
                              **dict(settings.get("autoattack", {})))
    per_point = sum(runner.evaluation_estimate(1, num_classes).values())
    batch_size = settings["batch_size"]
    total = 0
    for size in _units(n_images, settings["shard_size"]):
        total += 1 + 7 * min(batch_size, size) + size + size * per_point
    return {"evaluations": total, "exact": False, "images": n_images}


def cost_perturbation_spectrum(settings, n_images, image_shape, num_classes) -> Cost:
    """No model evaluation: spectra of AutoAttack's perturbations."""
    return {"evaluations": 0, "exact": True, "images": 0}


def cost_masked_noise(settings, n_images, image_shape, num_classes) -> Cost:
    """:func:`freqplug.eval.masked_noise_table`'s documented cost: 1 + PGD (``pgd_steps`` forward+backward per
    image) + ``k (2 + 4 masks)`` + the PFC/NFC frequency Shapley design; 0 under L1 (no PGD in torchattacks)."""
    own = settings["masked_noise"]
    if settings["norm"] not in ("Linf", "L2"):
        return {"evaluations": 0, "exact": True, "images": 0}
    k = _subset(own["n_images"], n_images)
    shapley = _frequency_shapley_rows(own["players"], own["n_samples"], image_shape)
    return {"evaluations": 1 + k * own["pgd_steps"] + k * (2 + 4) + k * shapley, "exact": True, "images": k}


def cost_band_shapley(settings, n_images, image_shape, num_classes) -> Cost:
    """:meth:`freqplug.SpectralBandShapley.num_evaluations` (2^M per image when exact, a fixed design else)."""
    from ..attributions import SpectralBandShapley

    own = settings["band_shapley"]
    band = SpectralBandShapley(_StandIn(num_classes), num_bands=own["num_bands"])
    return {"evaluations": band.num_evaluations(n_images), "exact": True, "images": n_images}


def cost_frequency_shapley(settings, n_images, image_shape, num_classes) -> Cost:
    """k images x the design size of the resolved estimator (:func:`~freqplug.attributions._estimators.design_size`)."""
    own = settings["frequency_shapley"]
    k = _subset(own["n_images"], n_images)
    rows = _frequency_shapley_rows(own["players"], own["n_samples"], image_shape, own.get("estimator", "auto"))
    return {"evaluations": k * rows, "exact": True, "images": k}


def cost_frequency_bias(settings, n_images, image_shape, num_classes) -> Cost:
    """One forward + backward per image (the input Jacobian)."""
    return {"evaluations": n_images, "exact": True, "images": n_images}


def cost_hf_attack(settings, n_images, image_shape, num_classes) -> Cost:
    """Upper bound: the clean prediction of every image, then for every (correctly classified) image the HF
    attack's clean forward and one forward per candidate radius (:meth:`freqplug.HFAttack.candidate_radii`; the
    scan stops at the first success)."""
    from ..attacks import HFAttack

    attack = HFAttack(_StandIn(num_classes), step=settings["hf_attack"]["step"], batch_size=settings["batch_size"])
    radii = len(attack.candidate_radii(image_shape[-2], image_shape[-1]))
    return {"evaluations": n_images * (1 + 1 + radii), "exact": False, "images": n_images}


def cost_occluded_frequency(settings, n_images, image_shape, num_classes) -> Cost:
    """:meth:`freqplug.OccludedFrequency.num_evaluations` with the stage's merged rings: N (1 + rings)."""
    from ..attributions import OccludedFrequency
    from ..spectral import dct_band_groups

    height, width = image_shape[-2:]
    rings = dct_band_groups(height, width, kind="ring").player_map // settings["occluded_frequency"]["ring_width"]
    evaluations = OccludedFrequency(_StandIn(num_classes), groups=rings).num_evaluations(n_images, height, width)
    return {"evaluations": evaluations, "exact": True, "images": n_images}


def cost_robustness_curve(settings, n_images, image_shape, num_classes) -> Cost:
    """Upper bound from the stage's own attacks and defenses (built on a stand-in model) and the per-attack run
    cost :func:`freqplug.eval.curves._attack_forwards` uses for its budget check: every point evaluates every
    model (undefended + defenses) once, FGSM is run once for the whole grid, the other attacks once per eps."""
    from ..eval.curves import _attack_forwards, _is_plain_fgsm
    from .stages import _curve_attacks, _curve_defenses

    own = settings["robustness_curve"]
    k = _subset(own["n_images"], n_images)
    ctx = _estimate_context(settings, "robustness_curve", k, image_shape, num_classes)
    attacks = _curve_attacks(ctx)
    if not attacks:
        return {"evaluations": 0, "exact": True, "images": 0}
    num_models = 1 + len(_curve_defenses(ctx))
    positive = [f for f in own["eps_fractions"] if f > 0]
    total = num_models * k
    for attack in attacks.values():
        run = _attack_forwards(attack, k, image_shape[-2], image_shape[-1])
        if not hasattr(attack, "eps"):
            total += run + num_models * k
        elif _is_plain_fgsm(attack):
            total += run + num_models * k * len(positive)
        else:
            total += len(positive) * (run + num_models * k)
    return {"evaluations": total, "exact": False, "images": k}


def cost_classwise(settings, n_images, image_shape, num_classes) -> Cost:
    """k images x the frequency Shapley design size (as the frequency_shapley stage)."""
    own = settings["classwise"]
    k = _subset(own["n_images"], n_images)
    return {"evaluations": k * _frequency_shapley_rows(own["players"], own["n_samples"], image_shape),
            "exact": True, "images": k}


def cost_corruptions(settings, n_images, image_shape, num_classes) -> Cost:
    """:func:`freqplug.eval.corruption_robustness`'s count, k (1 + corruptions x severities), plus its output-width
    check (one forward of one image); 0 when the stage is skipped (imagecorruptions missing, images below 32x32 or
    not 1/3 channels)."""
    from .._optional import available

    own = settings["corruptions"]
    c, height, width = image_shape
    if not available("imagecorruptions") or height < 32 or width < 32 or c not in (1, 3):
        return {"evaluations": 0, "exact": True, "images": 0}
    k = _subset(own["n_images"], n_images)
    return {"evaluations": 1 + k * (1 + len(own["corruptions"]) * len(own["severities"])), "exact": True,
            "images": k}


def _estimate_context(settings, stage: str, n: int, image_shape, num_classes):
    """A StageContext on a stand-in model and a zero-stride image batch (no memory for n images)."""
    from .stages import StageContext

    x = torch.zeros((1,) + tuple(image_shape)).expand((n,) + tuple(image_shape))
    return StageContext(model=_StandIn(num_classes, image_shape[0]), x=x, y=torch.zeros(n, dtype=torch.long),
                        settings=dict(settings), device=torch.device("cpu"), seed=0, show_progress=False,
                        num_classes=num_classes, done={}, stage=stage)


# ------------------------------------------------------------------------------------------ the table
@dataclass
class CostEstimate:
    """Model evaluations a profile will spend, per stage and per rank.

    Attributes:
        rows: ``{stage: {"evaluations": int, "exact": bool, "sharded": bool, "per_rank": [int, ...]}}`` in report
            order. ``exact`` False: an upper bound (attacks stop early). ``per_rank`` splits a sharded stage's
            count by the images each rank gets (units of ``shard_size``, unit u on rank u % world_size); a stage
            that is not sharded runs on rank 0.
        preset, n_images, image_shape, num_classes, world_size: what was estimated.
    """

    rows: Dict[str, Dict[str, Any]]
    preset: str
    n_images: int
    image_shape: Tuple[int, int, int]
    num_classes: int
    world_size: int
    settings: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def total(self) -> int:
        """Evaluations of all stages (per model)."""
        return sum(row["evaluations"] for row in self.rows.values())

    @property
    def exact(self) -> bool:
        return all(row["exact"] for row in self.rows.values())

    def to_dict(self) -> Dict[str, Any]:
        return {"preset": self.preset, "n_images": self.n_images, "image_shape": list(self.image_shape),
                "num_classes": self.num_classes, "world_size": self.world_size, "total": self.total,
                "stages": {name: dict(row) for name, row in self.rows.items()}}

    def format(self) -> str:
        """A plain-text table: stage, evaluations (``<=`` for upper bounds), the busiest rank's share."""
        shape = "x".join(str(s) for s in self.image_shape)
        lines = [f"cost estimate: preset {self.preset}, {self.n_images} images of {shape}, {self.num_classes} "
                 f"classes, {self.world_size} process(es); one evaluation = one image through the model's forward",
                 f"{'stage':<24}{'evaluations':>18}{'busiest rank':>16}  sharded"]
        for name, row in self.rows.items():
            bound = "" if row["exact"] else "<= "
            lines.append(f"{name:<24}{bound + format(row['evaluations'], ','):>18}"
                         f"{format(max(row['per_rank']), ','):>16}  {'yes' if row['sharded'] else 'no'}")
        bound = "" if self.exact else "<= "
        busiest = max(sum(row["per_rank"][r] for row in self.rows.values()) for r in range(self.world_size))
        lines.append(f"{'total per model':<24}{bound + format(self.total, ','):>18}{format(busiest, ','):>16}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _split(evaluations: int, images: int, unit_size: int, world_size: int) -> List[int]:
    """A sharded stage's evaluations per rank, in proportion to the images of its units on each rank (the
    remainder of the rounding goes to rank 0)."""
    if images <= 0 or world_size == 1:
        return [evaluations] + [0] * (world_size - 1)
    held = [0] * world_size
    for u, size in enumerate(_units(images, unit_size)):
        held[u % world_size] += size
    shares = [evaluations * h // images for h in held]
    shares[0] += evaluations - sum(shares)
    return shares


def estimate_cost(preset: str = "default", n_images: int = 10_000, image_shape: Sequence[int] = (3, 32, 32),
                  num_classes: int = 10, stages: Optional[Sequence[str]] = None, overrides: Optional[Mapping] = None,
                  world_size: int = 1, *, threat_model: str = "Linf", eps: Optional[float] = None,
                  skip: Sequence[str] = ()) -> CostEstimate:
    """Model evaluations :func:`freqplug.report.profile` will spend on one model, before running it.

    Nothing is loaded or run: each stage's ``cost`` composes the counts the measured functions document
    (e.g. ``N (1 + rings)`` for occluded frequency, ``N x design_size`` for frequency Shapley, AutoAttack's
    per-attack bound). Multiply by the number of models for a zoo.

    Args:
        preset: ``"fast"``, ``"default"`` or ``"gpu"``.
        n_images: N, the images given to ``profile`` (e.g. 10,000 for the CIFAR-10 test set).
        image_shape: (C, H, W) of one image.
        num_classes: K, the model's output width (AutoAttack's targeted attacks and FAB depend on it).
        stages: stages to estimate (default: every registered one); ``skip``: stages to leave out.
        overrides: as :func:`freqplug.report.profile`'s (``{stage: {setting: value}}`` or common settings).
        world_size: processes under torchrun; the per-rank column splits sharded stages by their units.
        threat_model, eps: as :func:`freqplug.report.profile`'s.

    Returns:
        :class:`CostEstimate` (``.rows``, ``.total``, ``.format()``).

    Raises:
        ValueError: an unknown preset/stage/setting, or a selected stage registered without a ``cost``.
    """
    from . import stages as _stages
    from .profile import _resolve_threat_model, _settings

    check_choice(preset, "preset", tuple(_stages.PRESET_NAMES))
    n_images = check_positive_int(n_images, "n_images")
    num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
    world_size = check_positive_int(world_size, "world_size")
    if isinstance(image_shape, (str, bytes)) or not hasattr(image_shape, "__len__") or len(image_shape) != 3:
        raise ValueError(f"`image_shape` must be (C, H, W), got {image_shape!r}")
    image_shape = tuple(check_positive_int(s, "image_shape") for s in image_shape)
    overrides = dict(overrides or {})
    norm, eps, _ = _resolve_threat_model(threat_model, eps, overrides)
    settings = _settings(preset, overrides, norm, eps)
    known = _stages.stage_names()
    selected = list(known if stages is None else stages)
    for stage in list(selected) + list(skip):
        check_choice(stage, "stages", known)
    rows: Dict[str, Dict[str, Any]] = {}
    for name in [s for s in known if s in selected and s not in skip]:
        record = _stages.get_stage(name)
        if record.cost is None:
            raise ValueError(f"stage {name!r} has no `cost` function; register it with cost=... to estimate it")
        cost = record.cost(settings, n_images, image_shape, num_classes)
        evaluations, images = int(cost["evaluations"]), int(cost.get("images", n_images))
        per_rank = _split(evaluations, images, settings["shard_size"], world_size) if record.sharded else \
            [evaluations] + [0] * (world_size - 1)
        rows[name] = {"evaluations": evaluations, "exact": bool(cost["exact"]), "sharded": record.sharded,
                      "per_rank": per_rank}
    return CostEstimate(rows=rows, preset=preset, n_images=n_images, image_shape=image_shape,
                        num_classes=num_classes, world_size=world_size, settings=settings)
