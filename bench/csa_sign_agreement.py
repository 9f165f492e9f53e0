"""How stable are CSA's NFC masks across seeds? (Chen2022 §5, eq. 13; issue 14 item 6)

For a few real CIFAR-10 images and the embedded ResNet-18, two independent runs ("seed A", "seed B")
of the CSA game (softmax probability of the true class, FrequencyShapley, antithetic permutations)
are accumulated in rounds of ``--round`` permutations; after every round the script prints, for the
permutations spent so far:

* ``agree``: fraction of the 1023 non-DC bins on which the two NFC masks (phi < 0) agree (0.5 is chance);
* ``undetermined``: mean fraction of players with |phi| < 2 stderr (the stop rule of ``CSABank.build``).

Small by default (the machine is shared); run:

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/csa_sign_agreement.py --images 2 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from freqplug.attributions.frequency_shapley import FrequencyShapley
from freqplug.data import sample_images
from freqplug.models import cifar10_resnet18
from freqplug.spectral import make_players
from freqplug.training.csa import combine_estimates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--round", type=int, default=10, help="antithetic permutations per round")
    parser.add_argument("--players", type=int, default=16)
    parser.add_argument("--out", default=None, help="also write the per-round numbers as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = cifar10_resnet18()
    x, y = sample_images("cifar10")
    x, y = x[:args.images], y[:args.images]
    players = make_players(args.players, 32, 32, require_fixed_dc=True)
    explainer = FrequencyShapley(lambda z: torch.softmax(model(z), dim=1))
    state = {"A": [None] * args.images, "B": [None] * args.images}
    rows = []
    start = time.time()
    for r in range(args.rounds):
        for run, base in (("A", 0), ("B", 10_000)):
            for i in range(args.images):
                result = explainer.attribute(x[i:i + 1], target=y[i:i + 1], n_samples=args.round,
                                             perturbations_per_eval=256, players=players, estimator="antithetic",
                                             seed=base + 100 * i + r, return_result=True)
                new = (result.values[0].double(), result.stderr[0].double(), result.num_samples)
                state[run][i] = new if state[run][i] is None else combine_estimates(state[run][i], new)
        agree, undetermined = [], []
        for i in range(args.images):
            masks = []
            for run in ("A", "B"):
                values, stderr, _ = state[run][i]
                masks.append(players.expand(values[None])[0] < 0)
                undetermined.append(float((values.abs() < 2 * stderr).double().mean()))
            same = (masks[0] == masks[1]).flatten()[1:]  # DC (index 0) is never a player
            agree.append(float(same.double().mean()))
        row = {"permutations": (r + 1) * args.round, "agree": sum(agree) / len(agree),
               "undetermined": sum(undetermined) / len(undetermined), "seconds": round(time.time() - start)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "w") as handle:
                json.dump(rows, handle)


if __name__ == "__main__":
    main()
