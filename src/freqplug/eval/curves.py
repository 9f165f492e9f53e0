"""Robustness curves: accuracy against the perturbation budget, per attack and per defense (Wang2020b Figs. 2-4).

:func:`robustness_curve` runs every torchattacks attack of a dict at every eps of a grid and reports the
robust accuracy at each point and the normalised area under each curve. Two kinds of attacks are handled:

* **eps attacks** (FGSM, PGD, APGD, ...: anything with an ``eps`` attribute): the attack is run at every eps
  of the grid (its ``eps``, and ``alpha`` when it has one, are set for the run and restored afterwards);
* **minimum-norm attacks** (:class:`~freqplug.HFAttack`, C&W, DeepFool, ...: no ``eps`` attribute): the attack
  is run once and an image counts as broken at budget eps when the attack fooled the model with a
  perturbation of norm (``norm``) at most eps, as Wang2020b measure HF and C&W in Fig. 4 (Foolbox style).
  For :class:`~freqplug.HFAttack` the result also holds its accuracy against the smallest radius allowed
  (:attr:`RobustnessCurve.hf_radius`), read off the same run.

Defenses (``defenses``, e.g. Wang2020b's D1 :class:`~freqplug.defenses.LowPassFilter` and D2
:func:`~freqplug.defenses.low_pass_kernels`) get their own curves under the *same* adversarial examples,
made against ``model``: the transfer setting of Wang2020b Figs. 2-3 ("we first attack the trained models ...
then improve the model with D1 or D2, and test the improved models over the generated adversarial examples").
Attacking a defended model itself is another experiment: build the attacks on the defended model and pass
it as ``model``.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

from .._io import atomic_save, digest, model_digest, safe_load
from .._model import model_device_dtype, predict, preserved_model_state
from .._optional import require
from .._validation import check_budget, check_choice, check_images, check_labels, check_positive_int, check_seed

__all__ = ["NORMS", "RobustnessCurve", "point_seed", "robustness_curve"]

logger = logging.getLogger("freqplug.eval")

#: Norms for the perturbation size of minimum-norm attacks.
NORMS = ("Linf", "L2")

#: Version tag of the resume file; a file with another tag is refused.
STATE_FORMAT = "freqplug.robustness_curve/1"

#: Key of the clean point in the resume file (attack names are non-empty, so it cannot collide).
CLEAN_POINT = ""

#: Name of the undefended model among the evaluated models.
UNDEFENDED = "model"


@dataclass
class RobustnessCurve:
    """What :func:`robustness_curve` measured.

    Attributes:
        eps: (E,) float64, the budgets, ascending, ``eps[0] == 0``.
        accuracy: ``{attack: (E,) float64}`` robust accuracy of ``model`` at every eps (``accuracy[a][0]`` is
            the clean accuracy): the fraction of images classified correctly both clean and attacked.
        auc: ``{attack: float}`` normalised area under the accuracy curve, ``trapz(accuracy, eps) /
            (eps[-1] - eps[0])``, in [0, 1]: the mean accuracy over the budget range (a model the attack
            cannot hurt scores its clean accuracy).
        defended: ``{defense: {attack: (E,)}}`` the same for every defense, under the adversarial examples made
            against ``model``.
        defended_auc: ``{defense: {attack: float}}``.
        clean_accuracy: ``{"model" or defense: float}``.
        kinds: ``{attack: "eps" or "minimum-norm"}``.
        hf_radius: ``{attack: {"radius": (R,), "accuracy": (R,), "success_rate": (R,)}}`` for every
            :class:`~freqplug.HFAttack`: accuracy of ``model`` when the attack may low-pass down to ``radius``
            (descending radii, bins), and the attack's success rate over the correctly classified images
            (``HFAttack.success_rate`` of a run with ``min_radius=radius``).
        norm: the norm of minimum-norm perturbation sizes.
        n_images: N.
        seed: the seed.
        n_evaluations: model evaluations (images forwarded, forward+backward counted once) this call spent,
            resumed points excluded; the attacks' own forwards are estimated (see :func:`robustness_curve`).
        resumed_points: (attack, eps) points read from the resume file instead of run (``("clean", 0.0)`` for the
            clean point, eps None for a minimum-norm attack's single run).
    """

    eps: torch.Tensor
    accuracy: Dict[str, torch.Tensor]
    auc: Dict[str, float]
    defended: Dict[str, Dict[str, torch.Tensor]]
    defended_auc: Dict[str, Dict[str, float]]
    clean_accuracy: Dict[str, float]
    kinds: Dict[str, str]
    hf_radius: Dict[str, Dict[str, torch.Tensor]]
    norm: str
    n_images: int
    seed: int
    n_evaluations: int
    resumed_points: List[Tuple[str, Optional[float]]] = field(default_factory=list)
    #: Per image, what the curves are means of (not in :meth:`to_dict`): ``{attack: (M, E, N) bool}``, image
    #: n classified correctly clean and at eps_j by evaluated model m (model first, then the defenses).
    correct: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: ``{HF attack: (N,) float64}`` radius at which it succeeded (NaN: no success), for :attr:`hf_radius`.
    hf_found_radius: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def curves(self) -> List[Tuple[str, str, torch.Tensor]]:
        """``[(attack, evaluated model, accuracy (E,))]``: the undefended curves, then each defense's."""
        out = [(a, UNDEFENDED, acc) for a, acc in self.accuracy.items()]
        for defense, per_attack in self.defended.items():
            out += [(a, defense, acc) for a, acc in per_attack.items()]
        return out

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able copy (lists of floats)."""
        return {
            "eps": self.eps.tolist(),
            "accuracy": {a: v.tolist() for a, v in self.accuracy.items()},
            "auc": dict(self.auc),
            "defended": {d: {a: v.tolist() for a, v in c.items()} for d, c in self.defended.items()},
            "defended_auc": {d: dict(c) for d, c in self.defended_auc.items()},
            "clean_accuracy": dict(self.clean_accuracy),
            "kinds": dict(self.kinds),
            "hf_radius": {a: {k: _json_floats(v) for k, v in c.items()} for a, c in self.hf_radius.items()},
            "norm": self.norm,
            "n_images": self.n_images,
            "seed": self.seed,
            "n_evaluations": self.n_evaluations,
            "resumed_points": [list(p) for p in self.resumed_points],
        }


def _json_floats(values: torch.Tensor) -> List[Optional[float]]:
    """A list of floats with NaN as None (JSON has no NaN)."""
    return [None if v != v else v for v in values.double().tolist()]


def point_seed(seed: int, attack: str, eps: float) -> int:
    """The global-RNG seed :func:`robustness_curve` sets before running ``attack`` at ``eps``.

    Keyed on (seed, attack name, eps value), so a point's random start does not depend on the grid's other
    points or on the order they run in. To reproduce a point by hand::

        torch.manual_seed(point_seed(seed, "PGD", 8 / 255)); attack.eps = 8 / 255; adv = attack(x, y)
    """
    check_seed(seed, allow_none=False)
    return int(digest("robustness_curve.point_seed", seed, str(attack), float(eps))[:15], 16)


def auc_normalised(eps: torch.Tensor, accuracy: torch.Tensor) -> float:
    """``trapz(accuracy, eps) / (eps[-1] - eps[0])`` (the mean accuracy over the budget range)."""
    span = float(eps[-1] - eps[0])
    return float(torch.trapezoid(accuracy.double(), eps.double()) / span)


# ---------------------------------------------------------------------------------------------- checks
def _check_grid(eps_grid) -> torch.Tensor:
    if isinstance(eps_grid, torch.Tensor):
        eps_grid = eps_grid.detach().cpu().double().reshape(-1).tolist()
    elif type(eps_grid).__module__ == "numpy" and hasattr(eps_grid, "tolist"):  # a numpy array (e.g. linspace)
        eps_grid = eps_grid.reshape(-1).tolist()
    if isinstance(eps_grid, (str, bytes)) or not isinstance(eps_grid, Sequence):
        raise TypeError(f"`eps_grid` must be a sequence of numbers (or a 1-D tensor), got {type(eps_grid).__name__}")
    values = []
    for i, e in enumerate(eps_grid):
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
            raise ValueError(f"`eps_grid` must hold finite numbers >= 0, got {e!r} at position {i}")
        values.append(float(e))
    if not any(v > 0 for v in values):
        raise ValueError(f"`eps_grid` must hold at least one eps > 0, got {values}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"`eps_grid` must be strictly increasing (no repeats), got {values}")
    if values[0] != 0.0:  # the clean point, measured once for every attack
        values = [0.0] + values
    return torch.tensor(values, dtype=torch.float64)


def _check_attacks(attacks, model) -> Dict[str, Any]:
    torchattacks = require("torchattacks", "robustness_curve")
    if not isinstance(attacks, Mapping) or not attacks:
        raise TypeError(f"`attacks` must be a non-empty dict name -> torchattacks attack, got "
                        f"{type(attacks).__name__}{' (empty)' if isinstance(attacks, Mapping) else ''}")
    for name, attack in attacks.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"`attacks` keys must be non-empty strings (the curves' names), got {name!r}")
        if not isinstance(attack, torchattacks.attack.Attack):
            raise TypeError(f"`attacks[{name!r}]` must be a torchattacks attack, got {type(attack).__name__}")
        if attack.model is not model:
            raise ValueError(f"`attacks[{name!r}]` ({type(attack).__name__}) was built on another model "
                             f"({type(attack.model).__name__}) than `model`; build every attack on `model` "
                             "(defended models go in `defenses`)")
        if hasattr(attack, "eps"):
            eps = getattr(attack, "eps")
            if isinstance(eps, bool) or not isinstance(eps, (int, float)):
                raise TypeError(f"`attacks[{name!r}].eps` must be a number, got {type(eps).__name__}")
            alpha = getattr(attack, "alpha", None)
            if alpha is not None and not eps > 0:
                raise ValueError(f"`attacks[{name!r}]` has eps={eps}: its alpha/eps ratio (kept along the grid) "
                                 "is undefined; build it with the eps > 0 its alpha was chosen for")
    return dict(attacks)


def _check_defenses(defenses) -> Dict[str, Callable]:
    if defenses is None:
        return {}
    if not isinstance(defenses, Mapping):
        raise TypeError(f"`defenses` must be a dict name -> defended model (or None), got {type(defenses).__name__}")
    for name, defended in defenses.items():
        if not isinstance(name, str) or not name or name == UNDEFENDED:
            raise ValueError(f"`defenses` keys must be non-empty strings other than {UNDEFENDED!r}, got {name!r}")
        if not callable(defended):
            raise TypeError(f"`defenses[{name!r}]` must be a model (callable), got {type(defended).__name__}")
    return dict(defenses)


def _attack_config(attack) -> Dict[str, Any]:
    """The attack's class, mode and plain settings (its identity in the resume file)."""
    config = {"class": f"{type(attack).__module__}.{type(attack).__qualname__}",
              "mode": getattr(attack, "attack_mode", None)}
    for key, value in sorted(vars(attack).items()):
        if key.startswith("_") or key in ("model", "attack", "device", "supported_mode"):
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            config[key] = value
    return config


def _attack_forwards(attack, n: int, height: int, width: int) -> int:
    """Model evaluations of one run of ``attack`` on n images (an estimate for attacks freqplug does not own)."""
    from ..attacks import HFAttack

    if isinstance(attack, HFAttack):
        return n * (1 + len(attack.candidate_radii(height, width)))
    steps = max(int(getattr(attack, "steps", 1) or 1), int(getattr(attack, "n_queries", 1) or 1))
    restarts = int(getattr(attack, "n_restarts", 1) or 1)
    targets = int(getattr(attack, "n_target_classes", 1) or 1)
    return n * steps * restarts * targets


def _is_plain_fgsm(attack) -> bool:
    torchattacks = require("torchattacks", "robustness_curve")
    return type(attack) is torchattacks.FGSM and attack.attack_mode == "default"


def _distances(adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (adv.detach().cpu().double() - x.detach().cpu().double()).flatten(1)
    return delta.abs().amax(dim=1) if norm == "Linf" else delta.norm(dim=1)


# ---------------------------------------------------------------------------------------------- resume file
class _State:
    """The resume file: finished points, keyed on the content they were measured on."""

    def __init__(self, path, key: Dict[str, str]):
        self.path = None if path is None else Path(path)
        self.key = key
        self.points: Dict[str, Dict[str, torch.Tensor]] = {}
        if self.path is not None and self.path.exists():
            data = safe_load(self.path, "`resume` (robustness_curve state)")
            if data.get("format") != STATE_FORMAT:
                raise ValueError(f"`resume` file {str(self.path)!r} is not a robustness_curve state "
                                 f"(format {data.get('format')!r}, expected {STATE_FORMAT!r})")
            stored = data.get("key", {})
            differ = sorted(k for k in set(key) | set(stored) if key.get(k) != stored.get(k))
            if differ:
                raise ValueError(f"`resume` file {str(self.path)!r} was made for other {', '.join(differ)} than this "
                                 "call's; its points would be wrong here. Pass another path (or delete the file)")
            self.points = dict(data.get("points", {}))

    @staticmethod
    def point_key(attack: str, eps: Optional[float]) -> str:
        return json.dumps([attack, eps])

    def get(self, attack: str, eps: Optional[float]) -> Optional[Dict[str, torch.Tensor]]:
        return self.points.get(self.point_key(attack, eps))

    def put(self, attack: str, eps: Optional[float], value: Dict[str, torch.Tensor]) -> None:
        self.points[self.point_key(attack, eps)] = value
        if self.path is not None:  # after every point: an interrupted run loses at most one point
            atomic_save({"format": STATE_FORMAT, "key": self.key, "points": self.points}, self.path)


# ---------------------------------------------------------------------------------------------- main entry
def curve_evaluations(attacks: Mapping[str, Any], num_models: int, positive_eps: Sequence[float], n: int, height: int,
                      width: int, todo: Callable[[str, Optional[float]], bool] = lambda name, eps: True) -> int:
    """Upper bound on the model evaluations of :func:`robustness_curve` (its budget check; the report's cost
    estimate): every point evaluates every model (undefended + defenses) on the n images once, plain FGSM is run
    once for the whole grid, an attack without ``eps`` (HF) once, the others once per eps > 0; ``todo(name, eps)``
    says which points are still to compute (a resumed run skips the others)."""
    cost = num_models * n if todo(CLEAN_POINT, None) else 0
    for name, attack in attacks.items():
        run = _attack_forwards(attack, n, height, width)
        if not hasattr(attack, "eps"):
            cost += (run + num_models * n) if todo(name, None) else 0
            continue
        missing = [e for e in positive_eps if todo(name, e)]
        if _is_plain_fgsm(attack):
            cost += (run + num_models * n * len(missing)) if missing else 0
        else:
            cost += len(missing) * (run + num_models * n)
    return cost


def robustness_curve(model, attacks: Mapping[str, Any], eps_grid, x: torch.Tensor, y: torch.Tensor, *,
                     defenses: Optional[Mapping[str, Callable]] = None, norm: str = "Linf", batch_size: int = 256,
                     seed: int = 0, resume=None, show_progress: bool = False,
                     max_evaluations: Optional[float] = None) -> RobustnessCurve:
    """Robust accuracy against the perturbation budget for every attack (and defense): Wang2020b Figs. 2-4.

    For an eps attack at budget eps > 0 the attack runs on all N images (in chunks of ``batch_size``) with
    ``attack.eps = eps``; if the attack has an ``alpha`` (PGD's step size) it is set to
    ``alpha * eps / eps_user``, keeping the step-size-to-budget ratio the user chose (so a 10-step PGD with
    ``alpha = eps / 4`` stays that along the grid). Both are restored afterwards, also on error. The
    point's accuracy is the fraction of images every evaluated model classifies correctly both clean and
    attacked (robust accuracy as RobustBench counts it: an attack that "repairs" a misclassified image
    does not raise it). eps 0 is the clean accuracy, measured once (no attack runs).

    Minimum-norm attacks (no ``eps`` attribute: :class:`~freqplug.HFAttack`, ``torchattacks.CW``, ...) run
    once; image i counts as broken at eps when the evaluated model is wrong on its adversarial example and
    ``||adv_i - x_i||_norm <= eps``. Make sure such an attack's norm matches the grid's (``norm``).

    Batching: torchattacks' ``FGSM`` (untargeted) is one gradient for the whole grid: the curve reuses the
    attack's output at eps = 1 (``clamp(x + 1 * sign(g), 0, 1)``, whose sign is ``sign(g)`` wherever a
    step can move the pixel), so FGSM costs one forward/backward per image for the whole grid and its
    points are evaluated in pooled forward calls of ``batch_size`` images. Other attacks run once per eps.

    Seeding: torchattacks draws random starts and random targets from torch's global RNG; every point runs
    in a fork of it seeded with :func:`point_seed` ``(seed, name, eps)``, so the same call gives the same
    curve, a point does not depend on the other points of the grid, and the user's random stream is left
    as it was.

    Resuming: with ``resume`` a path, every finished point (its per-image correctness) is written to that
    file (atomically) as soon as it is measured, and the points already in it are read instead of run. The
    file is keyed on digests of ``x``, ``y``, the model's and the defenses' weights, the attacks' settings,
    ``seed``, ``norm`` and ``batch_size`` (random starts depend on the chunking); a file made with any of
    them different is refused. The grid is not part of the key: extending a grid reuses its points.

    Args:
        model: classifier (N, C, H, W) in [0, 1] -> logits (N, K); evaluated in eval mode, its train flags,
            ``requires_grad`` and ``.grad`` restored afterwards.
        attacks: ``{name: attack}``, torchattacks attacks built on ``model``.
        eps_grid: budgets, strictly increasing, >= 0 (0 is prepended when missing), in the attacks' units
            (e.g. Linf on [0, 1] images: 8/255).
        x: images (N, C, H, W) in [0, 1]. y: labels (N,) in [0, K).
        defenses: ``{name: defended model}``, evaluated on the adversarial examples made against ``model``
            (e.g. ``{"D1 r=12": LowPassFilter(model, 12), "D2 r=2": low_pass_kernels(model, 2)}``).
        norm: ``"Linf"`` or ``"L2"``: how minimum-norm perturbations are measured.
        batch_size: images per attack call and per evaluation forward.
        seed: non-negative int (see Seeding).
        resume: None, or the path of the state file (created when missing).
        show_progress: tqdm bar over the (attack, eps) points.
        max_evaluations: refuse calls above this many model evaluations (default
            :data:`~freqplug._validation.DEFAULT_MAX_EVALUATIONS`); ``float("inf")`` lifts it.

    Returns:
        :class:`RobustnessCurve`.

    Cost, in model evaluations (images forwarded; an attack step's forward+backward counts once), with
    M = 1 + len(defenses) evaluated models and E the grid's eps > 0: ``M * N`` for the clean point; per eps
    attack ``E * (A + M * N)`` with ``A = N * steps * n_restarts`` (1 step for FGSM, which runs once
    for the whole grid); per minimum-norm attack ``A + M * N`` (HFAttack: ``A = N * (1 + radii)``). The
    total is logged and checked against ``max_evaluations`` before anything runs; resumed points cost
    nothing.
    """
    from ..attacks import HFAttack

    check_images(x, "x")
    check_labels(y, "y", x.shape[0])
    check_choice(norm, "norm", NORMS)
    check_positive_int(batch_size, "batch_size")
    check_seed(seed, allow_none=False)
    if not callable(model):
        raise TypeError(f"`model` must be a model (callable), got {type(model).__name__}")
    attacks = _check_attacks(attacks, model)
    defenses = _check_defenses(defenses)
    eps = _check_grid(eps_grid)
    n, _, height, width = x.shape
    evaluators = {UNDEFENDED: model, **defenses}
    num_models = len(evaluators)
    positive = [float(e) for e in eps[1:]]

    # The resume file's key hashes every weight: only computed when there is a file (the report calls this
    # once per unit of images, where hashing a large model each time would cost more than the unit).
    key = {} if resume is None else {
        "inputs": digest(x), "labels": digest(y), "model": model_digest(model),
        "defenses": digest({d: model_digest(m) for d, m in defenses.items()}),
        "attacks": digest({a: _attack_config(att) for a, att in attacks.items()}),
        "seed": str(seed), "norm": norm, "batch_size": str(batch_size)}
    state = _State(resume, key)

    def todo(name, point_eps):
        return state.get(name, point_eps) is None

    cost = curve_evaluations(attacks, num_models, positive, n, height, width, todo)
    check_budget(cost, max_evaluations, f"robustness_curve ({len(attacks)} attack(s), {len(positive)} eps > 0, "
                                        f"{num_models} evaluated model(s), {n} image(s))",
                 hint="use fewer images, a shorter grid, fewer attack steps or fewer defenses")
    logger.info("robustness_curve: about %d model evaluations", cost)

    device, _ = model_device_dtype(model, x.device)
    resumed: List[Tuple[str, Optional[float]]] = []
    num_points = 1 + sum(len(positive) if hasattr(a, "eps") else 1 for a in attacks.values())
    bar = tqdm(total=num_points, desc="robustness_curve", unit="point", disable=not show_progress)

    def correct_on(images: torch.Tensor) -> torch.Tensor:
        """(M, rows) bool: every evaluated model right on ``images`` (labels tiled to the rows)."""
        labels = y.cpu().repeat(images.shape[0] // n)
        return torch.stack([predict(m, images, batch_size=batch_size, labels=labels, labels_name="y",
                                    name="model" if d == UNDEFENDED else f"defenses[{d!r}]") == labels
                            for d, m in evaluators.items()])

    hf_found: Dict[str, torch.Tensor] = {}

    def run_attack(attack, point_eps: Optional[float], name: str) -> torch.Tensor:
        """The attack's output on all images, in chunks, under the point's seed (in a fork of the global RNG)."""
        out, found = [], []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(point_seed(seed, name, -1.0 if point_eps is None else point_eps))
            for start in range(0, n, batch_size):
                out.append(attack(x[start:start + batch_size], y[start:start + batch_size]).detach().cpu())
                if isinstance(attack, HFAttack):  # per-call results: collect them chunk by chunk
                    found.append(attack.found_radius.detach().cpu().double())
        if found:
            hf_found[name] = torch.cat(found)
        return torch.cat(out).to(device=x.device, dtype=x.dtype)

    with ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[device] if device.type == "cuda" else []))
        for m in evaluators.values():
            stack.enter_context(preserved_model_state(m, eval_mode=True, freeze=True))
        stack.callback(bar.close)
        spent = 0

        clean = state.get(CLEAN_POINT, None)
        if clean is None:
            clean = {"correct": correct_on(x)}
            spent += num_models * n
            state.put(CLEAN_POINT, None, clean)
        else:
            resumed.append(("clean", 0.0))
        clean_correct = clean["correct"]  # (M, N)
        bar.update(1)

        flags: Dict[str, torch.Tensor] = {}  # attack -> (M, E, N) correct clean and at each eps
        hf_points: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        kinds: Dict[str, str] = {}
        for name, attack in attacks.items():
            accuracy = torch.empty(num_models, len(eps), n, dtype=torch.bool)
            accuracy[:, 0] = clean_correct
            if not hasattr(attack, "eps"):
                kinds[name] = "minimum-norm"
                point = state.get(name, None)
                if point is None:
                    adv = run_attack(attack, None, name)
                    point = {"distance": _distances(adv, x, norm), "correct": correct_on(adv)}
                    if isinstance(attack, HFAttack):
                        point["found_radius"] = hf_found[name]
                        point["radii"] = attack.radii.detach().cpu().double()
                    spent += _attack_forwards(attack, n, height, width) + num_models * n
                    state.put(name, None, point)
                else:
                    resumed.append((name, None))
                broken = ~point["correct"]  # (M, N)
                for j, e in enumerate(positive, start=1):
                    fooled = broken & (point["distance"] <= e)[None]
                    accuracy[:, j] = clean_correct & ~fooled
                if "found_radius" in point:
                    hf_points[name] = (point["radii"], point["found_radius"])
                bar.update(1)
            else:
                kinds[name] = "eps"
                missing = [e for e in positive if todo(name, e)]
                if missing and _is_plain_fgsm(attack):
                    spent += _fgsm_points(attack, name, missing, x, y, n, run_attack, correct_on, state)
                for j, e in enumerate(positive, start=1):
                    point = state.get(name, e)
                    if point is None:
                        point = {"correct": correct_on(_at_eps(attack, e, lambda: run_attack(attack, e, name)))}
                        spent += _attack_forwards(attack, n, height, width) + num_models * n
                        state.put(name, e, point)
                    elif e not in missing:
                        resumed.append((name, e))
                    accuracy[:, j] = clean_correct & point["correct"]
                    bar.update(1)
            flags[name] = accuracy

    return _curve_from_flags(eps, list(evaluators), flags, hf_points, kinds, norm=norm, seed=seed,
                             n_evaluations=spent, resumed_points=resumed)


def _curve_from_flags(eps: torch.Tensor, names: List[str], flags: Dict[str, torch.Tensor],
                      hf_points: Dict[str, Tuple[torch.Tensor, torch.Tensor]], kinds: Dict[str, str], *, norm: str,
                      seed: int, n_evaluations: int, resumed_points) -> RobustnessCurve:
    """The curves as means over images of per-image flags (the one place accuracies and AUCs are computed).

    Args:
        eps: (E,) grid; names: evaluated models, ``"model"`` first; flags: ``{attack: (M, E, N) bool}``;
        hf_points: ``{HF attack: (radii (R,), found radius (N,))}``; the rest as :class:`RobustnessCurve`.
    """
    per_point = {a: f.double().mean(dim=2) for a, f in flags.items()}  # (M, E) accuracy
    clean_correct = next(iter(flags.values()))[:, 0]  # (M, N), the same for every attack
    return RobustnessCurve(
        eps=eps,
        accuracy={a: acc[0] for a, acc in per_point.items()},
        auc={a: auc_normalised(eps, acc[0]) for a, acc in per_point.items()},
        defended={d: {a: acc[i] for a, acc in per_point.items()} for i, d in enumerate(names) if i},
        defended_auc={d: {a: auc_normalised(eps, acc[i]) for a, acc in per_point.items()}
                      for i, d in enumerate(names) if i},
        clean_accuracy={d: float(clean_correct[i].double().mean()) for i, d in enumerate(names)},
        kinds=kinds, hf_radius={a: _hf_radius_curve(r, found, clean_correct[0]) for a, (r, found) in hf_points.items()},
        norm=norm, n_images=clean_correct.shape[1], seed=seed, n_evaluations=n_evaluations,
        resumed_points=list(resumed_points), correct=flags,
        hf_found_radius={a: found for a, (_, found) in hf_points.items()})


def _concatenate_curves(parts: Sequence[RobustnessCurve], *, seed: int) -> RobustnessCurve:
    """One :class:`RobustnessCurve` for the images of all ``parts`` (runs on consecutive blocks of one data set
    with the same attacks, defenses, grid and norm), in the given order.

    Accuracies, AUCs and the HF radius curves are recomputed from the concatenated per-image flags (never
    averaged over parts of unequal size), so they equal a single run whose attacks drew the parts' random
    numbers. ``n_evaluations`` is the parts' sum; ``seed`` is recorded as the combined run's seed (the parts
    were seeded from it, e.g. with :func:`freqplug._distributed.unit_seed`).

    Raises:
        ValueError: no parts, or parts of different evaluations (grid, attacks, evaluated models, norm, HF radii).
    """
    parts = list(parts)
    if not parts:
        raise ValueError("`parts` must hold at least one RobustnessCurve, got none")
    first = parts[0]
    for i, part in enumerate(parts):
        if not isinstance(part, RobustnessCurve):
            raise TypeError(f"`parts[{i}]` must be a RobustnessCurve, got {type(part).__name__}")
        if not part.correct:
            raise ValueError(f"`parts[{i}]` has no per-image flags (`correct`); it was not made by robustness_curve")
        for what, value, expected in (("eps grid", part.eps.tolist(), first.eps.tolist()),
                                      ("attacks", part.kinds, first.kinds), ("norm", part.norm, first.norm),
                                      ("evaluated models", list(part.clean_accuracy), list(first.clean_accuracy))):
            if value != expected:
                raise ValueError(f"`parts[{i}]` comes from another evaluation: its {what} is {value!r}, "
                                 f"parts[0]'s is {expected!r}")
        for a in part.hf_radius:
            if not torch.equal(part.hf_radius[a]["radius"], first.hf_radius[a]["radius"]):
                raise ValueError(f"`parts[{i}]` scanned other radii with {a!r} than parts[0]")
    flags = {a: torch.cat([part.correct[a] for part in parts], dim=2) for a in first.correct}
    hf_points = {a: (first.hf_radius[a]["radius"], torch.cat([part.hf_found_radius[a] for part in parts]))
                 for a in first.hf_radius}
    resumed: List[Tuple[str, Optional[float]]] = []
    for part in parts:
        resumed += [p for p in part.resumed_points if p not in resumed]
    return _curve_from_flags(first.eps, list(first.clean_accuracy), flags, hf_points, dict(first.kinds),
                             norm=first.norm, seed=seed, n_evaluations=sum(p.n_evaluations for p in parts),
                             resumed_points=resumed)


def _at_eps(attack, eps: float, run: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``run()`` with ``attack.eps = eps`` (and alpha scaled by eps / eps_user); both restored afterwards."""
    user_eps = attack.eps
    has_alpha = getattr(attack, "alpha", None) is not None
    user_alpha = attack.alpha if has_alpha else None
    try:
        attack.eps = eps
        if has_alpha:
            attack.alpha = user_alpha * eps / user_eps
        return run()
    finally:
        attack.eps = user_eps
        if has_alpha:
            attack.alpha = user_alpha


def _fgsm_points(attack, name, missing, x, y, n, run_attack, correct_on, state) -> int:
    """Every missing FGSM point from one gradient: ``clamp(x + eps * sign(g), 0, 1)`` for each eps.

    torchattacks' FGSM at eps = 1 returns ``clamp(x + sign(g), 0, 1)``; ``sign(out - x)`` equals ``sign(g)``
    wherever a step moves the pixel and is 0 only where ``x + eps * sign(g)`` clamps back to ``x`` for every
    eps > 0, so ``clamp(x + eps * sign(out - x), 0, 1)`` is FGSM at eps, bit for bit.
    """
    direction = torch.sign(_at_eps(attack, 1.0, lambda: run_attack(attack, None, name)) - x)
    adv = torch.cat([torch.clamp(x + e * direction, min=0, max=1) for e in missing])
    correct = correct_on(adv)  # pooled: one pass of len(missing) * N images
    for k, e in enumerate(missing):
        state.put(name, e, {"correct": correct[:, k * n:(k + 1) * n].clone()})
    return n + correct.shape[0] * correct.shape[1]


def _hf_radius_curve(radii: torch.Tensor, found_radius: torch.Tensor, clean_correct: torch.Tensor
                     ) -> Dict[str, torch.Tensor]:
    """Accuracy of HF restricted to radii >= r, for every scanned r (Wang2020b §3.4's stopping radius).

    HF scans radii from the largest down and stops at the first success, so with ``min_radius = r`` it
    succeeds exactly on the images whose found radius is >= r: one run gives the whole curve.
    """
    success = ~torch.isnan(found_radius)
    reached = success[None] & (found_radius[None].nan_to_num(-1.0) >= radii[:, None])  # (R, N)
    accuracy = (clean_correct[None] & ~reached).double().mean(dim=1)
    counted = clean_correct.double().sum()  # success over the correctly classified images, as HFAttack.success_rate
    success = (reached & clean_correct[None]).double().sum(dim=1) / counted if counted > 0 else \
        torch.full_like(accuracy, float("nan"))
    return {"radius": radii.clone(), "accuracy": accuracy, "success_rate": success}
