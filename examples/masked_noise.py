"""Chen2022 Fig. 6 on the embedded CIFAR-10 ResNet-18: error rates under frequency-masked PGD noise.

Prints the error rate of the model on x, x + delta, x + delta_low, x + delta_high, x + delta_PFC and
x + delta_NFC for PGD (L_inf, eps = 8/255) on the 20 embedded CIFAR-10 images. PFC/NFC come from
frequency Shapley values (softmax probability of the true class, players = symmetrized patch grid).

    python examples/masked_noise.py [--steps 10] [--players 8] [--n-samples 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchattacks

from freqplug.eval import masked_noise_table
from freqplug.data import sample_images
from freqplug.models import cifar10_resnet18


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="PGD steps (alpha = 2/255)")
    parser.add_argument("--players", type=int, default=8,
                        help="g for a g x g patch grid of the spectrum (16 is the paper's code; slower)")
    parser.add_argument("--n-samples", type=int, default=4, help="Shapley permutations per image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)  # PGD's random start
    model = cifar10_resnet18()
    x, y = sample_images("cifar10")
    pgd = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=args.steps, random_start=True)
    start = time.perf_counter()
    table = masked_noise_table(model, pgd, x, y,
                               shapley={"players": args.players, "n_samples": args.n_samples,
                                        "estimator": "antithetic", "seed": args.seed})
    elapsed = time.perf_counter() - start
    print(f"Chen2022 Fig. 6 -- PGD-{args.steps} (eps 8/255), embedded ResNet-18, {x.shape[0]} CIFAR-10 images")
    print(f"masks: low r < 0.4 r_max, high r > 0.6 r_max; PFC/NFC: Shapley on a {args.players}x{args.players} "
          f"patch grid, {args.n_samples} antithetic permutations, seed {args.seed}")
    for name, error in table.items():
        print(f"  {name:<14} error rate {100 * error:6.1f} %")
    print(f"({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
