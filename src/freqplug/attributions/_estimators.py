"""Shapley value estimators for batched games, and the registry that names them.

An estimator turns a budget into a *design*: a list of K coalitions (index 0 is the empty
coalition, index 1 the grand coalition) that every image's game is evaluated on, and a
reduction from the K values of each image to Shapley values with standard errors. The
coalitions are produced lazily, chunk by chunk, so memory stays bounded by the chunk size
whatever the budget. Every image is evaluated on the same coalitions, which lets the
caller batch rows of several images and several permutations into one forward call.

Every caller (FrequencyShapley, SpectralBandShapley's sampled mode, CSA banks) goes through
:data:`REGISTRY` (:func:`design_size`, :func:`make_design`, :func:`resolve_estimator`): one place
says what an estimator costs and builds its design.

Estimators (Chen2022 eq. 5 is the quantity; the paper samples it with plain permutations). The
budget ``n_samples`` and the model evaluations K per image (``n_samples`` rounded up to even except
for ``permutation``):

``permutation``
    Monte-Carlo permutation sampling (Castro et al. 2009; Chen2022 §4.1; Captum's
    ShapleyValueSampling). ``n_samples`` permutations, ``K = 2 + n_samples * (P - 1)``.
``antithetic``
    Permutations in pairs (pi, reversed pi), shap's PermutationExplainer design. Exact for games whose
    interactions have order <= 2. ``n_samples`` permutations, ``K = 2 + n_samples * (P - 1)``.
``kernel``
    Paired KernelSHAP (Lundberg & Lee 2017; Covert & Lee 2021): ``n_samples`` coalitions drawn
    from the Shapley kernel, each with its complement, solved by least squares under the
    efficiency constraint; standard errors by bootstrap over the pairs. ``K = 2 + n_samples``.
``owen``
    Stratified antithetic Owen sampling (Okhrati & Lipani 2021): phi_i is the integral over
    q in [0, 1] of E[v(S + i) - v(S - i)] with S ~ Bernoulli(q)^P (Owen's multilinear extension).
    ``n_samples`` coalitions S on a stratified grid of q, each paired with its complement
    (q -> 1 - q), and every single-player toggle of each: ``K = 2 + n_samples * (P + 1)``.
    The efficiency gap is spread over the players in proportion to their sampling variance.
``tree``
    Regression-adjusted estimator with a tree-ensemble surrogate (:class:`TreeDesign`; Witter, Liu &
    Musco 2025 for the regression adjustment): ``n_samples`` coalitions in pairs (S, its complement) with |S|
    uniform on 1..P-1 and S uniform given its size, ``K = 2 + n_samples``; gradient-boosted trees
    (XGBoost, extra ``freqplug[shapley]``) fitted per image on the coalitions, their Shapley values
    computed exactly from the leaves (:mod:`._tree_shapley`), plus a cross-fitted Monte-Carlo
    correction of the residual game. Exactly efficient. Needs ``K >= 2P`` (below, every regression
    estimator is unreliable).
``auto`` (resolved by :func:`resolve_estimator`, FrequencyShapley's default)
    ``n_samples`` keeps the permutation meaning: the call spends ``K = 2 + n_samples * (P - 1)``
    evaluations per image (n_samples rounded up to even), exactly what ``antithetic`` spends, and
    uses ``tree`` on those K coalitions when ``P >= 8`` and ``K >= 2P`` (where it wins: 9-30x lower
    MSE than shap's PermutationExplainer at 2P-10P evaluations on the bench's digits 64-player game), else
    ``antithetic``. Without XGBoost it falls back to ``antithetic`` with a one-line warning naming
    the extra.

Each permutation-type sample satisfies efficiency exactly: its P marginal contributions
telescope to v(N) - v(empty).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import numpy as np
import torch

from .._optional import available
from .._validation import check_choice, check_positive_int

#: ``kernel`` solves a P x P system and holds its (n_samples, P) design in memory (and as float64 in
#: the solve): above this many players use a permutation estimator or fewer players.
KERNEL_MAX_PLAYERS = 1024
#: Bound on n_samples x P for ``kernel`` (8 x 1024 x 1024: 8 MB of coalitions, 64 MB as float64).
KERNEL_MAX_DESIGN_ENTRIES = 8 * 1024 * 1024
#: ``auto`` uses ``tree`` from this many players on (and K >= 2P evaluations per image).
TREE_MIN_PLAYERS = 8


@dataclass(frozen=True)
class EstimatorSpec:
    """One registry entry.

    Attributes:
        name: the ``estimator=`` string.
        size: ``size(num_players, n_samples)`` -> coalitions K per image (checks the design is admissible).
        build: ``build(num_players, n_samples, generator)`` -> the :class:`Design`.
        default_n_samples: ``default_n_samples(num_players)`` -> the budget when none is given.
        unit: what ``n_samples`` counts (for messages and docs).
        extensible: whether the design can grow (:meth:`Design.extend`, used by ``target_stderr``).
    """

    name: str
    size: Callable[[int, int], int]
    build: Callable[[int, int, torch.Generator], "Design"]
    default_n_samples: Callable[[int], int]
    unit: str
    extensible: bool = False


def _even(n: int) -> int:
    return n + n % 2


def _check_players(num_players: int) -> int:
    if num_players < 1:
        raise ValueError("the game needs at least one player")
    return num_players


def _permutation_size(p: int, n: int) -> int:
    return 2 + n * (_check_players(p) - 1)


def _antithetic_size(p: int, n: int) -> int:
    return 2 + _even(n) * (_check_players(p) - 1)


def _kernel_size(p: int, n: int) -> int:
    n = _even(n)
    if _check_players(p) > KERNEL_MAX_PLAYERS:
        raise ValueError(
            f"estimator='kernel' is limited to {KERNEL_MAX_PLAYERS} players (it solves a P x P system over an "
            f"(n_samples, P) design held in memory), got {p}; use estimator='antithetic' or fewer players "
            "(e.g. players=16)"
        )
    if n * p > KERNEL_MAX_DESIGN_ENTRIES:
        raise ValueError(
            f"estimator='kernel' with {p} players and n_samples={n} needs a {n} x {p} design, "
            f"more than {KERNEL_MAX_DESIGN_ENTRIES:,} entries; lower n_samples or use estimator='antithetic'"
        )
    return 2 + n


def _owen_size(p: int, n: int) -> int:
    return 2 + _even(n) * (_check_players(p) + 1)


def _tree_size(p: int, n: int) -> int:
    n = _even(n)
    if _check_players(p) < 2:
        raise ValueError("estimator='tree' needs at least 2 players; use estimator='permutation'")
    minimum = TreeDesign.min_samples(p)
    if n < minimum:
        raise ValueError(
            f"estimator='tree' with {p} players needs n_samples >= {minimum} coalitions (2 + n_samples >= 2P model "
            f"evaluations per image, and {TreeDesign.MIN_PAIRS} pairs; below 2P every regression estimator is "
            f"unreliable), got {n}; raise n_samples or use estimator='antithetic'"
        )
    return 2 + n


#: The estimators by name. ``auto`` is not an entry: :func:`resolve_estimator` maps it to one.
REGISTRY: Dict[str, EstimatorSpec] = {}


def _register(spec: EstimatorSpec) -> None:
    REGISTRY[spec.name] = spec


ESTIMATORS = ("antithetic", "permutation", "kernel", "owen", "tree")
#: What ``estimator=`` accepts in FrequencyShapley (the registry plus ``auto``).
ESTIMATOR_CHOICES = ("auto",) + ESTIMATORS


def design_size(estimator: str, num_players: int, n_samples: int) -> int:
    """Coalitions K per image of a design, computed without building it; refuses designs too big to hold.

    ``2 + n_samples * (P - 1)`` for the permutation estimators, ``2 + n_samples`` for ``kernel`` and
    ``tree``, ``2 + n_samples * (P + 1)`` for ``owen`` (n_samples rounded up to even except for
    ``permutation``). Every image of a call is evaluated on these K coalitions: N images cost N x K
    model evaluations. Call it before :func:`make_design` so that budget checks happen before any allocation.
    """
    check_choice(estimator, "estimator", ESTIMATORS)
    check_positive_int(n_samples, "n_samples")
    return REGISTRY[estimator].size(num_players, n_samples)


def make_design(estimator: str, num_players: int, n_samples: int, generator: torch.Generator) -> "Design":
    """The design of ``estimator`` for P players and budget ``n_samples`` (checked by :func:`design_size`)."""
    design_size(estimator, num_players, n_samples)
    return REGISTRY[estimator].build(num_players, n_samples, generator)


def make_deduplicated_design(estimator: str, num_players: int, n_samples: int,
                             generator: torch.Generator) -> "DeduplicatedPermutationDesign":
    """A permutation design with every distinct prefix coalition evaluated once (for games with few players,
    e.g. SpectralBandShapley's bands): ``estimator`` must be ``"antithetic"`` (the only registry entry with a
    deduplicated form); ``n_samples`` permutations rounded up to even, as for :func:`make_design`. At most
    :func:`design_size` coalitions (``2 + n_samples (P - 1)``), fewer when permutations share prefixes."""
    check_choice(estimator, "estimator", ("antithetic",))
    design_size(estimator, num_players, n_samples)
    return DeduplicatedPermutationDesign(num_players, _even(n_samples) // 2, generator)


def default_n_samples(estimator: str, num_players: int) -> int:
    """The budget ``n_samples`` an estimator uses when none is given (``auto``: 10 permutations' worth)."""
    if estimator == "auto":
        return 10
    check_choice(estimator, "estimator", ESTIMATORS)
    return REGISTRY[estimator].default_n_samples(num_players)


def resolve_estimator(estimator: str, num_players: int, n_samples: int, *, warn_stacklevel: int = 2
                      ) -> Tuple[str, int]:
    """``(estimator, n_samples)`` to build: the given pair, or what ``auto`` stands for.

    ``auto`` with ``n_samples`` permutations' worth of evaluations, ``K = 2 + even(n_samples) * (P - 1)``
    per image: ``("tree", K - 2)`` when P >= :data:`TREE_MIN_PLAYERS`, ``K >= 2P`` and XGBoost is installed
    (same K, so the same cost), else ``("antithetic", n_samples)``. A missing XGBoost gives one warning
    line naming the extra ``freqplug[shapley]``.
    """
    check_choice(estimator, "estimator", ESTIMATOR_CHOICES)
    check_positive_int(n_samples, "n_samples")
    if estimator != "auto":
        return estimator, n_samples
    k = _antithetic_size(num_players, n_samples)
    if num_players < TREE_MIN_PLAYERS or k < 2 * num_players or k - 2 < TreeDesign.min_samples(num_players):
        return "antithetic", n_samples
    if not available("xgboost"):
        warnings.warn("FrequencyShapley estimator='auto': XGBoost is not installed, using estimator='antithetic' "
                      "(about 4x more evaluations for the same error); install it with: pip install "
                      "\"freqplug[shapley]\"", UserWarning, stacklevel=warn_stacklevel + 1)
        return "antithetic", n_samples
    return "tree", k - 2


@dataclass
class Estimate:
    values: torch.Tensor  # (N, P) float64 Shapley values
    stderr: torch.Tensor  # (N, P) float64 standard errors (NaN when not estimable)
    num_samples: int  # independent samples the standard error rests on


class Design:
    """Coalitions K (index 0 empty, 1 full) and the reduction of their values to Shapley values."""

    num_players: int
    num_coalitions: int

    def nbytes(self) -> int:
        """Bytes held by the design's tensors (its set-up memory)."""
        return sum(t.numel() * t.element_size() for t in vars(self).values() if isinstance(t, torch.Tensor))

    def coalitions(self, index: torch.Tensor) -> torch.Tensor:
        """Boolean coalitions (R, P) for coalition indices (R,) in [0, num_coalitions)."""
        raise NotImplementedError

    def estimate(self, values: torch.Tensor) -> Estimate:
        """Shapley values from the game values (N, K) at every coalition."""
        raise NotImplementedError

    def extend(self, n_more: int, generator: torch.Generator) -> None:
        """Append ``n_more`` samples (same unit as ``n_samples``) after the existing coalitions, whose
        indices do not change: only coalitions ``old num_coalitions ..`` need evaluating."""
        raise ValueError(f"{type(self).__name__} cannot grow; `target_stderr` needs estimator 'tree', "
                         "'antithetic' or 'permutation'")


class PermutationDesign(Design):
    """Coalitions: 0 = empty, 1 = all, then for permutation j and prefix length k = 1..P-1
    the index ``2 + j * (P - 1) + k - 1`` holds the first k players of permutation j."""

    def __init__(self, num_players: int, n_samples: int, generator: torch.Generator, *, antithetic: bool):
        self.num_players = p = num_players
        self.antithetic = antithetic
        if antithetic:
            n_samples += n_samples % 2
        self.n_samples = n_samples
        num_draws = n_samples // 2 if antithetic else n_samples
        # ranks[j, i] = position of player i in permutation j
        ranks = torch.argsort(torch.rand(num_draws, p, generator=generator), dim=1).argsort(dim=1)
        if antithetic:
            ranks = torch.stack([ranks, p - 1 - ranks], dim=1).reshape(n_samples, p)
        self.ranks = ranks
        self.num_coalitions = 2 + n_samples * (p - 1)

    def extend(self, n_more: int, generator: torch.Generator) -> None:
        more = PermutationDesign(self.num_players, n_more, generator, antithetic=self.antithetic)
        self.ranks = torch.cat([self.ranks, more.ranks])
        self.n_samples += more.n_samples
        self.num_coalitions = 2 + self.n_samples * (self.num_players - 1)

    def coalitions(self, index: torch.Tensor) -> torch.Tensor:
        p = self.num_players
        offset = (index - 2).clamp_min(0)
        permutation = offset // max(p - 1, 1)
        prefix = offset % max(p - 1, 1) + 1
        ranks = self.ranks.to(index.device)[permutation.clamp(max=self.n_samples - 1)]
        chosen = ranks < prefix[:, None]
        chosen[index == 0] = False
        chosen[index == 1] = True
        return chosen

    def estimate(self, values: torch.Tensor) -> Estimate:
        n, p, m = values.shape[0], self.num_players, self.n_samples
        values = values.to(torch.float64)
        empty, full = values[:, :1], values[:, 1:2]
        inner = values[:, 2:].reshape(n, m, p - 1)
        prefix_values = torch.cat([empty[:, None, :].expand(n, m, 1), inner, full[:, None, :].expand(n, m, 1)], dim=2)
        marginal_by_position = prefix_values[:, :, 1:] - prefix_values[:, :, :-1]  # (N, m, P)
        samples = torch.gather(marginal_by_position, 2, self.ranks.to(values.device)[None].expand(n, m, p))
        if self.antithetic:
            samples = samples.reshape(n, m // 2, 2, p).mean(dim=2)
        return _mean_and_stderr(samples)


def _mean_and_stderr(samples: torch.Tensor) -> Estimate:
    count = samples.shape[1]
    mean = samples.mean(dim=1)
    if count > 1:
        stderr = samples.std(dim=1, unbiased=True) / math.sqrt(count)
    else:
        stderr = torch.full_like(mean, float("nan"))
    return Estimate(mean, stderr, count)


class KernelDesign(Design):
    """Paired KernelSHAP. Coalitions: 0 = empty, 1 = all, then pairs (S_j, complement of S_j)."""

    #: Below this many coalitions per player the constrained least squares is too
    #: ill-conditioned to trust (its error blows up near 2 coalitions per player).
    MIN_SAMPLES_PER_PLAYER = 4
    BOOTSTRAP = 32

    def __init__(self, num_players: int, n_samples: int, generator: torch.Generator):
        p = self.num_players = num_players
        if p < 2:
            raise ValueError("estimator='kernel' needs at least 2 players; use 'permutation'")
        minimum = self.MIN_SAMPLES_PER_PLAYER * p
        if n_samples < minimum:
            raise ValueError(
                f"estimator='kernel' with {p} players needs n_samples >= {minimum} coalitions "
                f"({self.MIN_SAMPLES_PER_PLAYER} per player; near 2 per player the regression blows up), "
                f"got {n_samples}; raise n_samples or use estimator='antithetic'"
            )
        n_samples += n_samples % 2
        self.n_samples = n_samples
        self.generator = generator
        sizes = torch.arange(1, p, dtype=torch.float64)
        size_probability = 1.0 / (sizes * (p - sizes))  # Shapley kernel summed over subsets of each size
        half = n_samples // 2
        draw_sizes = torch.multinomial(size_probability / size_probability.sum(), half, replacement=True,
                                       generator=generator) + 1
        order = torch.argsort(torch.rand(half, p, generator=generator), dim=1)
        ranks = order.argsort(dim=1)
        chosen = ranks < draw_sizes[:, None]
        self.z = torch.stack([chosen, ~chosen], dim=1).reshape(n_samples, p)
        self.num_coalitions = 2 + n_samples

    def coalitions(self, index: torch.Tensor) -> torch.Tensor:
        z = self.z.to(index.device)
        chosen = z[(index - 2).clamp(0, self.n_samples - 1)]
        chosen[index == 0] = False
        chosen[index == 1] = True
        return chosen

    def _solve(self, z: torch.Tensor, targets: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """argmin ||z phi - targets||^2 s.t. sum(phi) = total, for each image (columns of targets)."""
        a = z.T @ z
        a = a + torch.eye(a.shape[0], dtype=a.dtype) * (1e-10 * a.diagonal().mean())
        b = z.T @ targets  # (P, N)
        a_inv_b = torch.linalg.solve(a, b)
        a_inv_1 = torch.linalg.solve(a, torch.ones(a.shape[0], 1, dtype=a.dtype))
        nu = (a_inv_b.sum(0) - total) / a_inv_1.sum()
        return (a_inv_b - a_inv_1 * nu).T  # (N, P)

    def estimate(self, values: torch.Tensor) -> Estimate:
        values = values.to(torch.float64).cpu()
        empty, full = values[:, 0], values[:, 1]
        targets = (values[:, 2:] - empty[:, None]).T  # (m, N)
        z = self.z.to(torch.float64)
        phi = self._solve(z, targets, full - empty)
        # bootstrap over the (S, complement) pairs for standard errors
        pairs = self.n_samples // 2
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
        boot = []
        for _ in range(self.BOOTSTRAP):
            pick = torch.randint(0, pairs, (pairs,), generator=generator)
            rows = torch.stack([2 * pick, 2 * pick + 1], dim=1).reshape(-1)
            boot.append(self._solve(z[rows], targets[rows], full - empty))
        stderr = torch.stack(boot).std(dim=0, unbiased=True)
        return Estimate(phi, stderr, pairs)


class OwenDesign(Design):
    """Coalitions: 0 = empty, 1 = all, then for sample s the index ``2 + s * (P + 1)`` holds S_s and
    ``2 + s * (P + 1) + 1 + i`` holds S_s with player i toggled; samples come in (S, complement) pairs."""

    def __init__(self, num_players: int, n_samples: int, generator: torch.Generator):
        p = self.num_players = num_players
        n_samples += n_samples % 2
        self.n_samples = n_samples
        pairs = n_samples // 2
        # one q per stratum [k/K, (k+1)/K) of [0, 1], jittered inside it
        jitter = torch.rand(pairs, generator=generator, dtype=torch.float64)
        q = (torch.arange(pairs, dtype=torch.float64) + jitter) / pairs
        chosen = torch.rand(pairs, p, generator=generator, dtype=torch.float64) < q[:, None]
        self.base = torch.stack([chosen, ~chosen], dim=1).reshape(n_samples, p)
        self.num_coalitions = 2 + n_samples * (p + 1)

    def coalitions(self, index: torch.Tensor) -> torch.Tensor:
        p = self.num_players
        offset = (index - 2).clamp_min(0)
        sample, position = offset // (p + 1), offset % (p + 1)
        chosen = self.base.to(index.device)[sample.clamp(max=self.n_samples - 1)].clone()
        toggle = position > 0
        rows = toggle.nonzero().squeeze(1)
        chosen[rows, position[rows] - 1] ^= True
        chosen[index == 0] = False
        chosen[index == 1] = True
        return chosen

    def estimate(self, values: torch.Tensor) -> Estimate:
        n, p, m = values.shape[0], self.num_players, self.n_samples
        values = values.to(torch.float64)
        empty, full = values[:, 0], values[:, 1]
        grid = values[:, 2:].reshape(n, m, p + 1)
        base, toggled = grid[:, :, :1], grid[:, :, 1:]
        inside = self.base.to(values.device)[None]  # (1, m, P): player i in S_s
        marginals = torch.where(inside, base - toggled, toggled - base)  # v(S + i) - v(S - i)
        samples = marginals.reshape(n, m // 2, 2, p).mean(dim=2)  # antithetic pair averages
        estimate = _mean_and_stderr(samples)
        # spread the efficiency gap in proportion to each player's sampling variance
        gap = (full - empty) - estimate.values.sum(dim=1)
        variance = estimate.stderr.nan_to_num(0.0) ** 2
        total = variance.sum(dim=1, keepdim=True)
        share = torch.where(total > 0, variance / torch.where(total > 0, total, torch.ones_like(total)),
                            torch.full_like(variance, 1.0 / p))
        return Estimate(estimate.values + share * gap[:, None], estimate.stderr, estimate.num_samples)


class TreeDesign(Design):
    """The ``tree`` estimator: paired coalitions, a boosted-tree surrogate per image, a cross-fitted correction.

    Coalitions: 0 = empty, 1 = all, then pairs ``2 + 2j`` = S_j, ``3 + 2j`` = its complement, with |S_j|
    uniform on 1..P-1 and S_j uniform given its size (the same coalitions for every image).

    Reduction, per image, all in float64 (Witter, Liu & Musco 2025, regression-adjusted Monte Carlo):

    * surrogate estimate: trees f fitted on all K coalitions (:func:`._tree_shapley.fit_surrogate`),
      ``phi_surr = phi(f) + (r(N) - r(empty)) / P`` with r = v - f and phi(f) exact from the leaves;
    * unbiased estimate U: 2-fold cross-fitting over the pairs; for fold k, trees f_k fitted on the
      other fold (plus empty and all), and ``U_k = phi(f_k) + (r_k(N) - r_k(empty)) / P + mean over the
      fold's pairs of (u(S) + u(complement of S)) / 2`` with the importance-weighted residual sample
      ``u_i(S) = (P - 1) r_k(S) ([i in S] / |S| - [i not in S] / (P - |S|))`` (unbiased for the
      Shapley value of r_k under this size distribution); U is the mean of the U_k and its variance
      ``Var(U)`` comes from the spread of the pair samples within each fold;
    * the estimate: ``phi_surr + lam (U - phi_surr)`` with
      ``lam = clip(1 - sum Var(U) / ||U - phi_surr||^2, 0, 1)``: the low-variance surrogate estimate
      while the two agree within noise, the unbiased one as the budget grows.

    Every term is exactly efficient (``sum u(S) = 0``; ``sum phi(f) = f(N) - f(empty)``), so
    ``sum(phi) = v(N) - v(empty)`` to float64 rounding. The standard errors are ``sqrt(Var(U))``, those of
    the unbiased estimate: conservative for the blend (on the bench's digits 64-player game they were
    1.3-2x the actual error). Three tree fits per image (full, two folds): about 0.4 s CPU each
    with the exact leaf values at 320 coalitions and 64 players.
    """

    MIN_PAIRS = 4
    FOLDS = 2

    @classmethod
    def min_samples(cls, num_players: int) -> int:
        """Smallest admissible ``n_samples``: K = 2 + n_samples >= 2P, and MIN_PAIRS pairs."""
        return max(2 * num_players - 2, 2 * cls.MIN_PAIRS)

    def __init__(self, num_players: int, n_samples: int, generator: torch.Generator):
        self.num_players = num_players
        _tree_size(num_players, n_samples)
        self.z = torch.zeros(0, num_players, dtype=torch.bool)
        self.n_samples = 0
        self.fit_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        self.extend(n_samples, generator)

    def extend(self, n_more: int, generator: torch.Generator) -> None:
        p = self.num_players
        pairs = _even(n_more) // 2
        sizes = torch.randint(1, p, (pairs,), generator=generator)
        ranks = torch.argsort(torch.rand(pairs, p, generator=generator), dim=1).argsort(dim=1)
        chosen = ranks < sizes[:, None]
        self.z = torch.cat([self.z, torch.stack([chosen, ~chosen], dim=1).reshape(2 * pairs, p)])
        self.n_samples = self.z.shape[0]
        self.num_coalitions = 2 + self.n_samples

    def coalitions(self, index: torch.Tensor) -> torch.Tensor:
        chosen = self.z.to(index.device)[(index - 2).clamp(0, self.n_samples - 1)]
        chosen[index == 0] = False
        chosen[index == 1] = True
        return chosen

    def all_coalitions(self) -> np.ndarray:
        """(K, P) bool: every coalition of the design in index order."""
        p = self.num_players
        return torch.cat([torch.zeros(1, p, dtype=torch.bool), torch.ones(1, p, dtype=torch.bool), self.z]).numpy()

    def estimate(self, values: torch.Tensor) -> Estimate:
        parts = self.estimate_parts(values)
        return Estimate(parts["values"], parts["stderr"], self.n_samples // 2)

    def estimate_parts(self, values: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The estimate's ingredients per image, float64 (N, P): ``surrogate`` (phi_surr), ``unbiased`` (U),
        ``stderr`` (sqrt Var(U)), ``values`` (the blend), and ``blend`` (N,) (lam)."""
        values = values.to(torch.float64).cpu().numpy()
        z = self.all_coalitions()
        parts = [self._estimate_one(z, row) for row in values]
        names = ("values", "stderr", "surrogate", "unbiased", "blend")
        return {name: torch.from_numpy(np.stack([np.asarray(part[k]) for part in parts]))
                for k, name in enumerate(names)}

    def _estimate_one(self, z: np.ndarray, v: np.ndarray) -> Tuple[np.ndarray, ...]:
        from ._tree_shapley import fit_surrogate

        p, pairs = self.num_players, self.n_samples // 2
        surrogate = fit_surrogate(z, v, self.fit_seed)
        residual_ends = v[:2] - surrogate.predict(z[:2])
        phi_surrogate = surrogate.shapley() + (residual_ends[1] - residual_ends[0]) / p

        fold = np.arange(pairs) % self.FOLDS
        first, second = z[2::2], z[3::2]  # S_j and its complement
        estimates, variances = [], []
        for k in range(self.FOLDS):
            held = np.nonzero(fold == k)[0]
            train = np.concatenate([[0, 1], 2 + 2 * np.nonzero(fold != k)[0], 3 + 2 * np.nonzero(fold != k)[0]])
            model = fit_surrogate(z[train], v[train], self.fit_seed)
            residual = v - model.predict(z)
            samples = 0.5 * (_residual_samples(first[held], residual[2::2][held], p)
                             + _residual_samples(second[held], residual[3::2][held], p))  # (pairs in fold, P)
            estimates.append(model.shapley() + (residual[1] - residual[0]) / p + samples.mean(0))
            variances.append(samples.var(0, ddof=1) / len(held))
        unbiased = np.mean(estimates, axis=0)
        variance = np.sum(variances, axis=0) / self.FOLDS**2
        difference = unbiased - phi_surrogate
        distance = float(difference @ difference)
        lam = float(np.clip(1.0 - variance.sum() / distance, 0.0, 1.0)) if distance > 0 else 0.0
        return phi_surrogate + lam * difference, np.sqrt(variance), phi_surrogate, unbiased, lam


def _residual_samples(coalitions: np.ndarray, residual: np.ndarray, p: int) -> np.ndarray:
    """Unbiased one-coalition estimates (R, P) of the Shapley values of the residual game (minus its ends)."""
    size = coalitions.sum(1, keepdims=True).astype(np.float64)
    inside = coalitions.astype(np.float64)
    return (p - 1) * residual[:, None] * (inside / size - (1.0 - inside) / (p - size))


def exact_design_values(num_players: int) -> torch.Tensor:
    """All 2^P coalitions (2^P, P) in binary order: row c holds the bits of c (player i <-> bit i)."""
    if num_players > 20:
        raise ValueError("exact enumeration is limited to 20 players")
    codes = torch.arange(2**num_players)
    return (codes[:, None] >> torch.arange(num_players)) & 1 == 1


def exact_shapley_weights(num_players: int) -> torch.Tensor:
    """Matrix W (2^P, P), float64, with phi = v @ W for the values v (..., 2^P) of all coalitions.

    ``W[S, i] = (|S|-1)! (P-|S|)! / P!`` if i is in S and ``-|S|! (P-|S|-1)! / P!`` otherwise
    (Chen2022 eq. 5, Luo2024 eq. 3): every column sums to 0, so a constant added to v (such as
    v(empty)) does not change phi.
    """
    p = num_players
    table = exact_design_values(p)
    size = table.sum(1)
    weight = torch.tensor([math.factorial(s) * math.factorial(p - s - 1) / math.factorial(p) for s in range(p)],
                          dtype=torch.float64)
    with_i = weight[(size - 1).clamp(min=0)][:, None].expand(-1, p)
    without_i = weight[size.clamp(max=p - 1)][:, None].expand(-1, p)
    return torch.where(table, with_i, -without_i)


def exact_shapley(values: torch.Tensor, num_players: int) -> torch.Tensor:
    """Exact Shapley values (..., P) from game values (..., 2^P) on :func:`exact_design_values`."""
    return values.to(torch.float64) @ exact_shapley_weights(num_players).to(values.device)


def antithetic_permutations(num_players: int, num_pairs: int, generator: torch.Generator) -> torch.Tensor:
    """(2 * num_pairs, P) permutations: each random permutation followed by its reverse."""
    forward = torch.stack([torch.randperm(num_players, generator=generator) for _ in range(num_pairs)])
    return torch.stack([forward, forward.flip(-1)], dim=1).reshape(2 * num_pairs, num_players)


class DeduplicatedPermutationDesign:
    """Antithetic permutation sampling with every distinct prefix coalition evaluated once.

    Built on :func:`antithetic_permutations` (each permutation followed by its reverse). The prefix
    coalitions (empty ... full) of all permutations are coded as integers and deduplicated, so a
    game with few players (I-ASIDE's M bands, Luo2024) evaluates each coalition once however many
    permutations share it. ``coalitions`` (U, P) are the distinct coalitions in increasing code order;
    :meth:`estimate` maps the values (N, U) to per-example Shapley values (N, P), the per-pair
    estimates (N, pairs, P) (for sampling standard errors) and ``v(all) - v(empty)`` (N,). Every
    permutation's marginals telescope to ``v(all) - v(empty)``, so the estimate is efficient.
    """

    def __init__(self, num_players: int, num_pairs: int, generator: torch.Generator):
        if num_players > 62:
            raise ValueError(f"at most 62 players (coalitions are coded in int64), got {num_players}")
        check_positive_int(num_pairs, "num_pairs")
        self.num_players = p = num_players
        self.permutations = antithetic_permutations(p, num_pairs, generator)  # (R, P)
        bits = torch.ones((), dtype=torch.long) << self.permutations
        prefixes = torch.cat([bits.new_zeros(bits.shape[0], 1), bits.cumsum(1)], dim=1)  # (R, P+1)
        codes, position = torch.unique(prefixes.reshape(-1), return_inverse=True)
        self.position = position.reshape(prefixes.shape)
        self.coalitions = ((codes[:, None] >> torch.arange(p)) & 1).bool()  # (U, P)
        self.num_coalitions = int(codes.numel())
        self._empty_at, self._full_at = int(self.position[0, 0]), int(self.position[0, -1])

    def estimate(self, values: torch.Tensor):
        """(per-example values (N, P), per-pair estimates (N, pairs, P), v(all) - v(empty) (N,))."""
        p = self.num_players
        steps = values[:, self.position]  # (N, R, P+1)
        gains = steps[:, :, 1:] - steps[:, :, :-1]  # marginal of the player added at each step
        marginals = torch.zeros_like(gains).scatter_(2, self.permutations[None].expand_as(gains), gains)
        pairs = marginals.reshape(values.shape[0], -1, 2, p).mean(2)  # antithetic pair averages
        return pairs.mean(1), pairs, values[:, self._full_at] - values[:, self._empty_at]


_register(EstimatorSpec("antithetic", _antithetic_size,
                        lambda p, n, g: PermutationDesign(p, n, g, antithetic=True), lambda p: 10,
                        "permutations", extensible=True))
_register(EstimatorSpec("permutation", _permutation_size,
                        lambda p, n, g: PermutationDesign(p, n, g, antithetic=False), lambda p: 10,
                        "permutations", extensible=True))
_register(EstimatorSpec("kernel", _kernel_size, lambda p, n, g: KernelDesign(p, n, g), lambda p: 8 * p,
                        "coalitions"))
_register(EstimatorSpec("owen", _owen_size, lambda p, n, g: OwenDesign(p, n, g), lambda p: 10, "coalitions"))
_register(EstimatorSpec("tree", _tree_size, lambda p, n, g: TreeDesign(p, n, g), lambda p: 10 * (p - 1),
                        "coalitions", extensible=True))
assert tuple(REGISTRY) == ESTIMATORS
