"""Step-time ratios of the JaFR hooks, measured side by side in one process.

Ratios (medians over interleaved rounds, so machine load hits every variant alike):
  JaFR step / hand-written double-backprop step   target <= 1.05 (no overhead beyond the floor)
  JaFR step / plain step                          (the cost of double backprop itself)
  FGSM+JaFR step / FGSM step                      target <= 1.6 (Chan2022: 1.42x on GPU)
  ... and the same with the cost cuts sub_batch=N/4 and every=2 (averaged over steps)

Models: a small CNN and the embedded CIFAR-10 ResNet-18 (train mode), small batch, CPU.

    .venv/bin/python bench/jafr_step.py [--rounds 5] [--batch 16]
"""

import argparse
import copy
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from freqplug.models import cifar10_resnet18
from freqplug.spectral import frequency_bias
from freqplug.training import JaFRLoss

LAMBDA = 0.001
EPS = 8 / 255


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(128, 10),
    )


def make_steps(model, x, y):
    # lr 0: every step sees the same weights, so all variants do identical work
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    jafr = JaFRLoss(LAMBDA)

    def update(loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def plain():
        update(F.cross_entropy(model(x), y))

    def hand_double_backprop():
        leaf = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(leaf), y)
        (jac,) = torch.autograd.grad(loss, leaf, create_graph=True)
        update(loss - LAMBDA * frequency_bias(jac))

    def jafr_step():
        update(jafr(model, x, y).loss)

    generator = torch.Generator().manual_seed(0)

    def fgsm():
        start = torch.clamp(x + (2 * torch.rand(x.shape, generator=generator) - 1) * EPS, 0, 1).requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(start), y), start)
        x_adv = torch.clamp(x + torch.clamp(start.detach() - x + 1.25 * EPS * grad.sign(), -EPS, EPS), 0, 1)
        update(F.cross_entropy(model(x_adv), y))

    def fgsm_jafr():
        update(jafr.fgsm_step(model, x, y, epsilon=EPS, generator=generator).loss)

    # the documented cost cuts: penalty on a quarter of the batch, or every 2nd step
    jafr_sub = JaFRLoss(LAMBDA, sub_batch=max(1, x.shape[0] // 4))
    jafr_every2 = JaFRLoss(LAMBDA, every=2)

    def fgsm_jafr_sub():
        update(jafr_sub.fgsm_step(model, x, y, epsilon=EPS, generator=generator).loss)

    def fgsm_jafr_every2_pair():  # two steps (one with, one without the penalty); timed per step below
        for _ in range(2):
            update(jafr_every2.fgsm_step(model, x, y, epsilon=EPS, generator=generator).loss)

    return {"plain": plain, "hand_double_backprop": hand_double_backprop, "jafr": jafr_step,
            "fgsm": fgsm, "fgsm_jafr": fgsm_jafr, "fgsm_jafr_sub": fgsm_jafr_sub,
            "fgsm_jafr_every2": fgsm_jafr_every2_pair}


def measure(steps, rounds, steps_per_round):
    times = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        step()
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(steps_per_round):
                step()
            times[name].append((time.perf_counter() - start) / steps_per_round)
    medians = {name: statistics.median(values) for name, values in times.items()}
    medians["fgsm_jafr_every2"] /= 2  # that variant runs two steps per call
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    models = {"small CNN": (small_cnn().train(), 5),
              "ResNet-18 (embedded)": (copy.deepcopy(cifar10_resnet18()).train(), 1)}
    rows = []
    for name, (model, per_round) in models.items():
        t = measure(make_steps(model, x, y), args.rounds, per_round)
        rows.append((name, t))
    print(f"JaFR step-time ratios, batch {args.batch}, 3x32x32, CPU ({torch.get_num_threads()} threads), "
          f"median of {args.rounds} interleaved rounds")
    header = (f"{'model':<22}{'plain':>8}{'hand-DB':>9}{'JaFR':>8}{'FGSM':>8}{'FGSM+JaFR':>11}"
              f"{'JaFR/hand':>11}{'JaFR/plain':>12}{'FGSM+JaFR/FGSM':>16}{'sub N/4':>9}{'every 2':>9}")
    print(header + "   (times in ms per step; last two: FGSM+JaFR/FGSM with the cost cuts)")
    for name, t in rows:
        print(f"{name:<22}{1e3 * t['plain']:>8.0f}{1e3 * t['hand_double_backprop']:>9.0f}{1e3 * t['jafr']:>8.0f}"
              f"{1e3 * t['fgsm']:>8.0f}{1e3 * t['fgsm_jafr']:>11.0f}"
              f"{t['jafr'] / t['hand_double_backprop']:>11.3f}{t['jafr'] / t['plain']:>12.2f}"
              f"{t['fgsm_jafr'] / t['fgsm']:>16.2f}{t['fgsm_jafr_sub'] / t['fgsm']:>9.2f}"
              f"{t['fgsm_jafr_every2'] / t['fgsm']:>9.2f}")
    print("targets: JaFR/hand <= 1.05, FGSM+JaFR/FGSM <= 1.6 (paper: 1.42 on GPU)")


if __name__ == "__main__":
    main()
