"""Benchmark: FrequencyShapley estimators against Captum and shap on identical frequency games.

Games (real data, real models):
  (a) a small CNN trained in seconds on sklearn's real digits (upsampled to 32x32), 16 players
      (l2 radial bands), exact Shapley values by enumerating all 2^16 coalitions;
  (b) the same CNN with 64 players (conjugate pairs grouped by radius), against a high-budget
      antithetic reference;
  (c) the embedded CIFAR-10 ResNet-18 on the CIFAR-10 sample images, for throughput;
  (d) MSE at equal evaluations against shap's PermutationExplainer at fixed budgets of 2P, 5P and 10P
      evaluations per image, on the digits 64-player game (b) and on the embedded ResNet-18 with 64
      players (conjugate pairs grouped by radius), against a large antithetic reference whose own
      variance (its squared standard errors) is subtracted from both MSEs; the reference's error is
      printed beside; plus the CPU time of the ``tree`` estimator's fits relative to the ResNet-18
      forwards it accompanies at 5P.

The game's output is the softmax probability of the true class (Chen2022's code). For each
estimator of freqplug and for the peers -- Captum ``ShapleyValueSampling`` on a gate-vector forward
over the same players, and shap's ``PermutationExplainer`` on the same gate vector -- it prints
the evaluations needed to reach 5 % relative L2 error (RMS over repeats and images) and the
ratios, then freqplug's evaluations/second divided by the bare forward's images/second.

Run: ``.venv/bin/python bench/frequency_shapley.py`` (``--quick`` for a short smoke run; ``--only mse`` for (d)).
Threads are capped at one (``torch.set_num_threads(1)``; XGBoost runs with ``nthread=1``).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freqplug import FrequencyShapley
from freqplug.attributions._estimators import exact_design_values, exact_shapley
from freqplug.data import digits, sample_images
from freqplug.models import cifar10_resnet18
from freqplug.spectral import (Players, conjugate_pair_players, frequency_radius, radial_band_players,
                               render_coalitions, rfft2)

TARGET_ERROR = 0.05
#: What ``--only issue12`` compares in game (a).
ISSUE12_RUNS = ("freqplug tree", "freqplug antithetic", "shap PermutationExplainer")


# ------------------------------------------------------------------------------ data and model
def digits_data():
    return digits(32)


def train_cnn(x, y, seed=0, epochs=4):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    train = torch.arange(len(x)) % 5 != 0
    xt, yt = x[train], y[train]
    for _ in range(epochs):
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            batch = order[i:i + 64]
            optimizer.zero_grad()
            F.cross_entropy(model(xt[batch]), yt[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x[~train]).argmax(1) == y[~train]).float().mean().item()
    return model, accuracy, ~train


def radius_grouped_pairs(height, width, groups):
    """Conjugate pairs sorted by radius and cut into `groups` players of (nearly) equal size."""
    pairs = conjugate_pair_players(height, width)
    radius = frequency_radius(height, width)
    pair_radius = torch.zeros(pairs.num_players, dtype=torch.float64)
    pair_radius[pairs.player_map[pairs.player_map >= 0]] = radius[pairs.player_map >= 0]  # mirrors share r
    order = torch.argsort(pair_radius, stable=True)
    group_of_pair = torch.empty_like(order)
    group_of_pair[order] = torch.arange(pairs.num_players) * groups // pairs.num_players
    pmap = pairs.player_map
    return Players(torch.where(pmap >= 0, group_of_pair[pmap.clamp_min(0)], -1), name=f"radius_pairs_{groups}")


# ------------------------------------------------------------------------------ the game
class Game:
    """v(S) for one image: an output of its label on the coalition image (zero baseline).

    ``output``: "logprob" (log softmax, I-ASIDE's characteristic function; default), "prob" (softmax
    probability, Chen2022's code; saturates on confident images, which makes games nearly trivial),
    or "logit".
    """

    def __init__(self, model, image, label, players):
        self.model, self.label, self.players = model, int(label), players
        self.image = image[None]
        self.spectrum = rfft2(self.image)
        self.evaluations = 0

    output = "logprob"

    def forward_images(self, z):
        logits = self.model(z)
        if self.output == "prob":
            return torch.softmax(logits, dim=1)
        if self.output == "logprob":
            return torch.log_softmax(logits, dim=1)
        return logits

    def values(self, coalitions: torch.Tensor, chunk=4096) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for start in range(0, len(coalitions), chunk):
                c = coalitions[start:start + chunk]
                index = torch.zeros(len(c), dtype=torch.long)
                images = render_coalitions(self.spectrum, self.players, index, c, None, *self.image.shape[-2:])
                out.append(self.forward_images(images)[:, self.label].double())
        self.evaluations += len(coalitions)
        return torch.cat(out)


def exact_values(game: Game) -> torch.Tensor:
    coalitions = exact_design_values(game.players.num_players)
    v = game.values(coalitions)
    return exact_shapley(v - v[0], game.players.num_players)


# ------------------------------------------------------------------------------ estimators under test
def freqplug_estimate(game: Game, estimator: str, n_samples: int, seed: int):
    fs = FrequencyShapley(game.forward_images)
    result = fs.attribute(game.image, target=game.label, players=game.players, n_samples=n_samples,
                          estimator=estimator, seed=seed, perturbations_per_eval=4096, return_result=True)
    return result.values[0], result.n_evaluations


def captum_estimate(game: Game, n_samples: int, seed: int):
    from captum.attr import ShapleyValueSampling

    p = game.players.num_players
    counter = {"rows": 0}

    def gate_forward(gates):  # gates (B, P) in {0, 1}
        counter["rows"] += gates.shape[0]
        index = torch.zeros(gates.shape[0], dtype=torch.long)
        images = render_coalitions(game.spectrum, game.players, index, gates > 0.5, None, *game.image.shape[-2:])
        return game.forward_images(images)[:, game.label]

    torch.manual_seed(seed)
    svs = ShapleyValueSampling(gate_forward)
    with torch.no_grad():
        phi = svs.attribute(torch.ones(1, p), baselines=torch.zeros(1, p), n_samples=n_samples,
                            perturbations_per_eval=256)
    return phi[0].double(), counter["rows"]


def shap_estimate(game: Game, max_evals: int, seed: int):
    import shap

    p = game.players.num_players
    counter = {"rows": 0}

    def gate_model(gates):
        gates = torch.as_tensor(np.asarray(gates), dtype=torch.float32)
        counter["rows"] += gates.shape[0]
        index = torch.zeros(gates.shape[0], dtype=torch.long)
        with torch.no_grad():
            images = render_coalitions(game.spectrum, game.players, index, gates > 0.5, None, *game.image.shape[-2:])
            return game.forward_images(images)[:, game.label].double().numpy()

    explainer = shap.PermutationExplainer(gate_model, np.zeros((1, p)), seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explanation = explainer(np.ones((1, p)), max_evals=max_evals, silent=True)
    return torch.tensor(explanation.values[0], dtype=torch.float64), counter["rows"]


# ------------------------------------------------------------------------------ error curves
def error_at_budget(run, games, references, budget, repeats):
    squared, evaluations = [], []
    for game, reference in zip(games, references):
        for seed in range(repeats):
            phi, used = run(game, budget, seed)
            squared.append(float(((phi - reference).norm() / reference.norm()) ** 2))
            evaluations.append(used)
    return math.sqrt(sum(squared) / len(squared)), sum(evaluations) / len(evaluations)


def evaluations_to_target(run, games, references, budgets, repeats):
    """Smallest evaluation count reaching TARGET_ERROR, interpolated in log-log between budgets."""
    points = []
    for budget in budgets:
        error, evaluations = error_at_budget(run, games, references, budget, repeats)
        points.append((evaluations, error))
        if error <= TARGET_ERROR:
            break
    if points[-1][1] > TARGET_ERROR:  # extrapolate with error ~ 1/sqrt(evaluations)
        evaluations, error = points[-1]
        return evaluations * (error / TARGET_ERROR) ** 2, points, "extrapolated"
    if len(points) == 1:  # the smallest budget already reaches the target: an upper bound
        return points[0][0], points, "at most"
    (e0, r0), (e1, r1) = points[-2], points[-1]
    slope = (math.log(r1) - math.log(r0)) / (math.log(e1) - math.log(e0))
    return math.exp(math.log(e0) + (math.log(TARGET_ERROR) - math.log(r0)) / slope), points, ""


def report_game(name, games, references, num_players, repeats, quick, only=None):
    p = num_players
    scale = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512] if not quick else [1, 4, 16]
    runs = {  # budgets start at the smallest each estimator accepts
        "freqplug tree": (lambda g, b, s: freqplug_estimate(g, "tree", b, s), [2 * p * k for k in scale]),
        "freqplug antithetic": (lambda g, b, s: freqplug_estimate(g, "antithetic", b, s), [2 * k for k in scale]),
        "freqplug permutation": (lambda g, b, s: freqplug_estimate(g, "permutation", b, s), scale),
        "freqplug kernel": (lambda g, b, s: freqplug_estimate(g, "kernel", b, s), [4 * p * k for k in scale]),
        "freqplug owen": (lambda g, b, s: freqplug_estimate(g, "owen", b, s), [2 * k for k in scale]),
        "captum ShapleyValueSampling": (captum_estimate, scale),
        "shap PermutationExplainer": (shap_estimate, [(2 * p + 1) * k for k in scale]),
    }
    if only:
        runs = {label: run for label, run in runs.items() if label in only}
    needed = {}
    print(f"\n== game {name}: {p} players, {len(games)} images x {repeats} repeats, target {TARGET_ERROR:.0%} "
          "relative L2 error")
    for label, (run, budgets) in runs.items():
        evaluations, points, note = evaluations_to_target(run, games, references, budgets, repeats)
        needed[label] = evaluations
        trail = ", ".join(f"{e:.0f}->{r:.3f}" for e, r in points)
        print(f"  {label:30s} {evaluations:10.0f} evaluations{f' ({note})' if note else ''}   [evals->error: {trail}]")
    best = min((v, k) for k, v in needed.items() if k.startswith("freqplug"))
    print(f"  best freqplug: {best[1]} ({best[0]:.0f})")
    for peer in ("shap PermutationExplainer", "captum ShapleyValueSampling"):
        if peer in needed:
            print(f"  ratio best freqplug / {peer}: {best[0] / needed[peer]:.3f}")
    return needed


def throughput(quick):
    """Evaluations/second of FrequencyShapley over images/second of the bare model, each at its best batch
    size; the two are measured in alternation, several rounds, so that machine load hits both alike."""
    model = cifar10_resnet18()
    x, y = sample_images("cifar10")
    x, y = x[:2], y[:2]
    batch_sizes = (64, 128, 256)
    fs = FrequencyShapley(model)
    best_bare, best_fs = 0.0, 0.0
    for _ in range(2 if quick else 3):
        for batch_size in batch_sizes:
            batch = torch.rand(batch_size, 3, 32, 32)
            with torch.no_grad():
                model(batch)
                start = time.perf_counter()
                for _ in range(3):
                    model(batch)
            best_bare = max(best_bare, 3 * batch_size / (time.perf_counter() - start))
            start = time.perf_counter()
            # Captum's perturbations_per_eval: coalitions per image per call, so a call holds batch_size images
            # (larger than the default 64 on purpose: silence the one-release notice of the changed meaning)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                result = fs.attribute(x, target=y, players=16, n_samples=2,
                                      perturbations_per_eval=batch_size // len(x), seed=0, return_result=True)
            best_fs = max(best_fs, result.n_evaluations / (time.perf_counter() - start))
    print(f"\n== throughput (c): embedded ResNet-18, 16x16 patch grid ({result.players.num_players} players)")
    print(f"  bare forward: {best_bare:.0f} images/s; FrequencyShapley: {best_fs:.0f} evaluations/s; "
          f"ratio {best_fs / best_bare:.3f}")


# ------------------------------------------------------------------------------ (d) MSE at fixed budgets
def reference_with_error(game: Game, permutations: int):
    """A large antithetic run: (values (P,), its variance sum ||stderr||^2, evaluations)."""
    fs = FrequencyShapley(game.forward_images)
    result = fs.attribute(game.image, target=game.label, players=game.players, n_samples=permutations,
                          estimator="antithetic", seed=987654, perturbations_per_eval=1024, return_result=True,
                          max_evaluations=float("inf"))
    return result.values[0].double(), float((result.stderr[0].double() ** 2).sum()), result.n_evaluations


def mse_at_budgets(name, games, repeats, reference_permutations, multiples=(2, 5, 10), antithetic=True):
    """MSE (variance-corrected) of freqplug's tree / antithetic and shap's PermutationExplainer at c x P."""
    p = games[0].players.num_players
    references = [reference_with_error(g, reference_permutations) for g in games]
    ref_var = sum(r[1] for r in references) / len(references)
    ref_norm2 = sum(float(r[0] @ r[0]) for r in references) / len(references)
    print(f"\n== (d) {name}: {p} players, {len(games)} image(s) x {repeats} repeats; reference: antithetic, "
          f"{reference_permutations} permutations ({references[0][2]:,} evaluations per image), its variance "
          f"||SE||^2 = {ref_var:.3g} ({math.sqrt(ref_var / ref_norm2):.1%} relative error) subtracted")
    print(f"  {'budget':>8s} {'tree evals':>10s} {'shap evals':>10s} {'MSE tree':>10s} {'MSE anti':>10s} "
          f"{'MSE shap':>10s} {'tree/shap':>9s} {'anti/shap':>9s}")
    ratios = {}
    for c in multiples:
        budget = c * p
        sq = {"tree": [], "antithetic": [], "shap": []}
        used = {"tree": [], "shap": []}
        for game, (reference, _, _) in zip(games, references):
            for seed in range(repeats):
                phi, n_eval = freqplug_estimate(game, "tree", budget - 2, seed)
                sq["tree"].append(float(((phi - reference) ** 2).sum()))
                used["tree"].append(n_eval)
                # antithetic at (about) the same budget: K = 2 + n (P - 1), n even
                n_perm = max(2, 2 * round((budget - 2) / (2 * (p - 1))))
                if antithetic:
                    phi, _ = freqplug_estimate(game, "antithetic", n_perm, seed)
                    sq["antithetic"].append(float(((phi - reference) ** 2).sum()))
                phi, n_eval = shap_estimate(game, max(budget, 2 * p + 1), seed)  # shap's minimum is 2P + 1
                sq["shap"].append(float(((phi - reference) ** 2).sum()))
                used["shap"].append(n_eval)
        mse = {k: max(sum(v) / len(v) - ref_var, 1e-300) if v else float("nan") for k, v in sq.items()}
        ratios[c] = mse["tree"] / mse["shap"]
        print(f"  {c:>6d}P {np.mean(used['tree']):10.0f} {np.mean(used['shap']):10.0f} {mse['tree']:10.3g} "
              f"{mse['antithetic']:10.3g} {mse['shap']:10.3g} {ratios[c]:9.3f} {mse['antithetic'] / mse['shap']:9.3f}")
    return ratios


def surrogate_cpu_share(game: Game, multiple=5, repeats=2):
    """CPU seconds of the tree estimator's reduction (3 fits + exact leaf values) / CPU seconds of the
    model forwards of the same design, at ``multiple`` x P evaluations."""
    from freqplug.attributions._estimators import make_design

    p = game.players.num_players
    forward_cpu, fit_cpu = 0.0, 0.0
    # Warm-up outside the timing: the first fit pays xgboost's import (about 2.5 s CPU), once per process.
    warm = make_design("tree", p, multiple * p - 2, torch.Generator().manual_seed(12345))
    warm.estimate(torch.randn(1, warm.num_coalitions, dtype=torch.float64))
    for seed in range(repeats):
        design = make_design("tree", p, multiple * p - 2, torch.Generator().manual_seed(seed))
        coalitions = design.coalitions(torch.arange(design.num_coalitions))
        start = time.process_time()
        values = game.values(coalitions)
        forward_cpu += time.process_time() - start
        start = time.process_time()
        design.estimate(values[None])
        fit_cpu += time.process_time() - start
    print(f"  tree estimator CPU at {multiple}P ({multiple * p} evaluations): fits + leaf values "
          f"{fit_cpu / repeats:.2f} s, model forwards {forward_cpu / repeats:.2f} s per image: "
          f"{fit_cpu / forward_cpu:.1%} of the forwards")
    return fit_cpu / forward_cpu


def mse_report(quick, digits_games, repeats, resnet_images=2, resnet_reference=150, digits_reference=4000):
    if digits_games:
        mse_at_budgets("digits CNN", digits_games, repeats, 400 if quick else digits_reference)
    if resnet_images <= 0:
        return
    model = cifar10_resnet18()
    x, y = sample_images("cifar10")
    players_64 = radius_grouped_pairs(32, 32, 64)
    games = [Game(model, x[i], y[i], players_64) for i in range(1 if quick else resnet_images)]
    mse_at_budgets("embedded ResNet-18", games, 2 if quick else repeats, 40 if quick else resnet_reference,
                   antithetic=False)  # the ResNet forwards dominate the bench's time; antithetic ~ shap by design
    surrogate_cpu_share(games[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one image, few repeats (smoke run)")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--output", choices=("logprob", "prob", "logit"), default="logprob",
                        help="which output of the true class is the game (default: %(default)s)")
    parser.add_argument("--resnet-images", type=int, default=2,
                        help="CIFAR images of the ResNet-18 MSE table (0: skip it)")
    parser.add_argument("--digits-reference", type=int, default=4000,
                        help="antithetic permutations of the digits 64-player reference")
    parser.add_argument("--resnet-reference", type=int, default=150,
                        help="antithetic permutations of the ResNet-18 reference (63 evaluations each)")
    parser.add_argument("--only", choices=("games", "throughput", "mse", "issue12", "resnet-mse", "resnet-cpu"),
                        help="run one part only (issue12: game (a) and the MSE table (d))")
    args = parser.parse_args()
    torch.set_num_threads(1)
    Game.output = args.output
    if args.only == "throughput":
        throughput(args.quick)
        return
    if args.only == "resnet-cpu":  # the tree estimator's CPU share of the ResNet-18 forwards at 5P
        x, y = sample_images("cifar10")
        surrogate_cpu_share(Game(cifar10_resnet18(), x[0], y[0], radius_grouped_pairs(32, 32, 64)), repeats=1)
        return
    if args.only == "resnet-mse":  # the ResNet-18 half of (d) alone (it can run beside the digits half)
        mse_report(args.quick, None, args.repeats, max(args.resnet_images, 1), args.resnet_reference)
        return
    torch.manual_seed(0)
    n_images, repeats = (1, 2) if args.quick else (args.images, args.repeats)

    x, y = digits_data()
    model, accuracy, held_out = train_cnn(x, y)
    print(f"digits CNN held-out accuracy: {accuracy:.3f}; game output: {args.output} of the true class; "
          f"images: the first {n_images} held-out digits")
    xs, ys = x[held_out][:n_images], y[held_out][:n_images]

    if args.only != "mse":
        players_16 = radial_band_players(32, 32, 16, metric="l2")
        games_a = [Game(model, xi, yi, players_16) for xi, yi in zip(xs, ys)]
        start = time.perf_counter()
        references_a = [exact_values(g) for g in games_a]
        print(f"game (a) exact values by 2^16 enumeration: {time.perf_counter() - start:.1f} s")
        report_game("(a)", games_a, references_a, 16, repeats, args.quick,
                    only=ISSUE12_RUNS if args.only == "issue12" else None)
    players_64 = radius_grouped_pairs(32, 32, 64)
    games_b = [Game(model, xi, yi, players_64) for xi, yi in zip(xs, ys)]
    if args.only in ("mse", "issue12"):
        mse_report(args.quick, games_b, repeats, args.resnet_images, args.resnet_reference, args.digits_reference)
        return
    reference_samples = 200 if args.quick else 4000
    references_b = [freqplug_estimate(g, "antithetic", reference_samples, 12345)[0] for g in games_b]
    print(f"game (b) reference: antithetic, {reference_samples} permutations per image")
    report_game("(b)", games_b, references_b, 64, repeats, args.quick)
    if args.only != "games":
        mse_report(args.quick, games_b, repeats, args.resnet_images, args.resnet_reference, args.digits_reference)
        throughput(args.quick)


if __name__ == "__main__":
    main()
