"""What a profile costs before it runs: model evaluations per stage, per rank.

One *model evaluation* is one input row through the model's forward (what :func:`freqplug.report.profile`
counts per stage with a forward pre-hook and records as ``timing[model][stage]["evaluations"]``); attack
steps also run a backward, which costs about twice a forward.

Every stage record has a ``cost(settings, n_images, image_shape, num_classes) -> {"evaluations": int, "exact":
bool, "images": int}`` function (optionally also ``"per_unit"``: the evaluations of each unit, when they are not
proportional to its images, or ``"unit_size"`` when the stage cuts its units otherwise than ``shard_size``),
defined here by composing the counts the measured functions document themselves
(:func:`freqplug.attributions._estimators.design_size`, :meth:`freqplug.OccludedFrequency.num_evaluations`,
:meth:`freqplug.SpectralBandShapley.num_evaluations`, :meth:`freqplug.HFAttack.candidate_radii`,
:meth:`freqplug.eval.AutoAttackRunner.evaluation_estimate`, ...; the robustness_curve stage's is next to it in
:mod:`freqplug.report.stages`, as it builds the stage's own attacks). ``exact`` is True when the count does not
depend on the model (a fixed design); attacks stop early on broken points, so theirs is an upper bound
(``exact=False``). ``images`` is the number of images the stage's per-example work runs on (what is split across
ranks). :func:`freqplug.report.estimate_cost` adds them up.
Nothing here loads weights or runs a model: the stages' objects are built on a stand-in module.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch.nn as nn

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
    (7 forwards of the first batch of unit 0), the clean forward and :meth:`AutoAttackRunner.evaluation_estimate` (every
    point attacked by every attack, as if none broke)."""
    from ..eval import AutoAttackRunner

    runner = AutoAttackRunner(_StandIn(num_classes), norm=settings["norm"], eps=settings["eps"],
                              **dict(settings.get("autoattack", {})))
    per_point = sum(runner.evaluation_estimate(1, num_classes).values())
    batch_size = settings["batch_size"]
    per_unit = []
    for u, size in enumerate(_units(n_images, settings["shard_size"])):
        checks = 7 * min(batch_size, size) if u == 0 else 0  # AutoAttack's input checks run on unit 0 only
        per_unit.append(1 + checks + size + size * per_point)
    return {"evaluations": sum(per_unit), "exact": False, "images": n_images, "per_unit": per_unit}


def cost_perturbation_spectrum(settings, n_images, image_shape, num_classes) -> Cost:
    """No model evaluation: spectra of AutoAttack's perturbations."""
    return {"evaluations": 0, "exact": True, "images": 0}


def cost_masked_noise(settings, n_images, image_shape, num_classes) -> Cost:
    """:func:`freqplug.eval.masked_noise_table`'s documented cost, per unit of ``shard_size`` images (the stage runs
    it once per unit): 1 (the output-width check) + PGD (``pgd_steps`` forward+backward per image) + ``k (2 + 4
    masks)`` + the PFC/NFC frequency Shapley design; 0 under L1 (no PGD in torchattacks)."""
    own = settings["masked_noise"]
    if settings["norm"] not in ("Linf", "L2"):
        return {"evaluations": 0, "exact": True, "images": 0}
    k = _subset(own["n_images"], n_images)
    shapley = _frequency_shapley_rows(own["players"], own["n_samples"], image_shape)
    per_unit = [1 + size * (own["pgd_steps"] + 2 + 4 + shapley) for size in _units(k, settings["shard_size"])]
    return {"evaluations": sum(per_unit), "exact": True, "images": k, "per_unit": per_unit}


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
    return {"evaluations": k * rows, "exact": True, "images": k, "unit_size": 1}  # one image per unit


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


def cost_classwise(settings, n_images, image_shape, num_classes) -> Cost:
    """k images x the frequency Shapley design size (as the frequency_shapley stage)."""
    own = settings["classwise"]
    k = _subset(own["n_images"], n_images)
    return {"evaluations": k * _frequency_shapley_rows(own["players"], own["n_samples"], image_shape),
            "exact": True, "images": k, "unit_size": 1}  # one image per unit, as frequency_shapley


def cost_corruptions(settings, n_images, image_shape, num_classes) -> Cost:
    """:func:`freqplug.eval.corruption_robustness`'s count, k (1 + corruptions x severities), plus its output-width
    check (one forward of one image) per unit of ``shard_size`` images; 0 when the stage is skipped
    (imagecorruptions missing, images below 32x32 or not 1/3 channels)."""
    from .._optional import available

    own = settings["corruptions"]
    c, height, width = image_shape
    if not available("imagecorruptions") or height < 32 or width < 32 or c not in (1, 3):
        return {"evaluations": 0, "exact": True, "images": 0}
    k = _subset(own["n_images"], n_images)
    per_image = 1 + len(own["corruptions"]) * len(own["severities"])
    per_unit = [1 + size * per_image for size in _units(k, settings["shard_size"])]
    return {"evaluations": sum(per_unit), "exact": True, "images": k, "per_unit": per_unit}
