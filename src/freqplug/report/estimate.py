"""``freqplug.report.estimate_cost``: the model evaluations a profile will spend, per stage and per rank, before it
runs (the stages' ``cost`` functions, :mod:`freqplug.report.costs`, added up and split across ranks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import _distributed as _dist
from .._validation import check_choice, check_positive_int
from . import stages as _stages
from .profile import _resolve_threat_model, _settings


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
    for u, indices in _dist.units(images, unit_size):
        held[u % world_size] += len(indices)
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
        if not record.sharded:
            per_rank = [evaluations] + [0] * (world_size - 1)
        elif "per_unit" in cost:  # unit u runs on rank u % world_size
            per_rank = [sum(cost["per_unit"][r::world_size]) for r in range(world_size)]
        else:
            per_rank = _split(evaluations, images, int(cost.get("unit_size", settings["shard_size"])), world_size)
        rows[name] = {"evaluations": evaluations, "exact": bool(cost["exact"]), "sharded": record.sharded,
                      "per_rank": per_rank}
    return CostEstimate(rows=rows, preset=preset, n_images=n_images, image_shape=image_shape,
                        num_classes=num_classes, world_size=world_size, settings=settings)
