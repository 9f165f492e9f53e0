"""Shapley value estimators for batched games.

An estimator turns a budget into a *design*: a list of K coalitions (index 0 is the empty
coalition, index 1 the grand coalition) that every image's game is evaluated on, and a
reduction from the K values of each image to Shapley values with standard errors. The
coalitions are produced lazily, chunk by chunk, so memory stays bounded by the chunk size
whatever the budget. Every image is evaluated on the same coalitions, which lets the
caller batch rows of several images and several permutations into one forward call.

Estimators (Chen2022 eq. 5 is the quantity; the paper samples it with plain permutations):

``permutation``
    Monte-Carlo permutation sampling (Castro et al. 2009; Chen2022 §4.1; Captum's
    ShapleyValueSampling). ``n_samples`` permutations, ``2 + n_samples * (P - 1)`` evaluations.
``antithetic``
    Permutations in pairs (pi, reversed pi). Exact for games whose interactions have order
    <= 2, which frequency games nearly are. ``n_samples`` permutations (rounded up to even).
``kernel``
    Paired KernelSHAP (Lundberg & Lee 2017; Covert & Lee 2021): ``n_samples`` coalitions drawn
    from the Shapley kernel, each with its complement, solved by least squares under the
    efficiency constraint; standard errors by bootstrap over the pairs.
``owen``
    Stratified antithetic Owen sampling (Okhrati & Lipani 2021): phi_i is the integral over
    q in [0, 1] of E[v(S + i) - v(S - i)] with S ~ Bernoulli(q)^P (Owen's multilinear extension).
    ``n_samples`` coalitions S on a stratified grid of q, each paired with its complement
    (q -> 1 - q), and every single-player toggle of each: ``2 + n_samples * (P + 1)``
    evaluations. Exact for interactions of order <= 2 like ``antithetic``; stratifying q removes
    the variance due to coalition size. The efficiency gap is then spread over the players in
    proportion to their sampling variance, so the result is efficient too.

Each permutation-type sample satisfies efficiency exactly: its P marginal contributions
telescope to v(N) - v(empty).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._validation import check_choice, check_positive_int

ESTIMATORS = ("antithetic", "permutation", "kernel", "owen")

#: ``kernel`` solves a P x P system and holds its (n_samples, P) design in memory (and as float64 in
#: the solve): above this many players use a permutation estimator or fewer players.
KERNEL_MAX_PLAYERS = 1024
#: Bound on n_samples x P for ``kernel`` (8 x 1024 x 1024: 8 MB of coalitions, 64 MB as float64).
KERNEL_MAX_DESIGN_ENTRIES = 8 * 1024 * 1024


def design_size(estimator: str, num_players: int, n_samples: int) -> int:
    """Coalitions K per image of a design, computed without building it; refuses designs too big to hold.

    ``2 + n_samples * (P - 1)`` for the permutation estimators, ``2 + n_samples`` for ``kernel`` and
    ``2 + n_samples * (P + 1)`` for ``owen`` (n_samples rounded up to even except for ``permutation``).
    Call it before :func:`make_design` so that budget checks happen before any allocation.
    """
    check_choice(estimator, "estimator", ESTIMATORS)
    check_positive_int(n_samples, "n_samples")
    p = num_players
    if p < 1:
        raise ValueError("the game needs at least one player")
    if estimator != "permutation":
        n_samples += n_samples % 2
    if estimator == "kernel":
        if p > KERNEL_MAX_PLAYERS:
            raise ValueError(
                f"estimator='kernel' is limited to {KERNEL_MAX_PLAYERS} players (it solves a P x P system over an "
                f"(n_samples, P) design held in memory), got {p}; use estimator='antithetic' or fewer players "
                "(e.g. players=16)"
            )
        if n_samples * p > KERNEL_MAX_DESIGN_ENTRIES:
            raise ValueError(
                f"estimator='kernel' with {p} players and n_samples={n_samples} needs a {n_samples} x {p} design, "
                f"more than {KERNEL_MAX_DESIGN_ENTRIES:,} entries; lower n_samples or use estimator='antithetic'"
            )
        return 2 + n_samples
    if estimator == "owen":
        return 2 + n_samples * (p + 1)
    return 2 + n_samples * (p - 1)


def make_design(estimator: str, num_players: int, n_samples: int, generator: torch.Generator) -> "Design":
    design_size(estimator, num_players, n_samples)
    if estimator == "kernel":
        return KernelDesign(num_players, n_samples, generator)
    if estimator == "owen":
        return OwenDesign(num_players, n_samples, generator)
    return PermutationDesign(num_players, n_samples, generator, antithetic=estimator == "antithetic")


@dataclass
class Estimate:
    values: torch.Tensor  # (N, P) float64 Shapley values
    stderr: torch.Tensor  # (N, P) float64 standard errors (NaN when not estimable)
    num_samples: int  # independent samples the standard error rests on


class Design:
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
