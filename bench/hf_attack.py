"""HFAttack: batched radius scan versus one radius per forward call.

Runs both on the embedded CIFAR-10 ResNet-18 and its 20 sample images, in one process, side by
side, and prints model calls, model evaluations (images forwarded) and wall time per image, and
the ratios. Both scans return the same images (checked).

    python bench/hf_attack.py [--images 20] [--step 1] [--min-radius 8] [--batch-size 256] [--repeats 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from freqplug.attacks import HFAttack
from freqplug.data import sample_images
from freqplug.models import cifar10_resnet18


class CallCounter:
    def __init__(self, model):
        self.calls = 0
        self.rows = 0
        model.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls += 1
        self.rows += args[0].shape[0]


def run(attack, counter, x, y, repeats):
    best = float("inf")
    for _ in range(repeats):
        counter.calls = counter.rows = 0
        start = time.perf_counter()
        adv = attack(x, y)
        best = min(best, time.perf_counter() - start)
    return adv, best, counter.calls, counter.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--step", type=float, default=1.0)
    parser.add_argument("--min-radius", type=float, default=8.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    model = cifar10_resnet18()
    x, y = sample_images("cifar10")
    x, y = x[: args.images], y[: args.images]
    counter = CallCounter(model)
    n = x.shape[0]

    batched = HFAttack(model, min_radius=args.min_radius, step=args.step, batch_size=args.batch_size)
    sequential = HFAttack(model, min_radius=args.min_radius, step=args.step, batch_size=1)
    # Warm-up (allocator, first-call overheads) on one image, not timed.
    batched(x[:1], y[:1])

    adv_b, time_b, calls_b, rows_b = run(batched, counter, x, y, args.repeats)
    adv_s, time_s, calls_s, rows_s = run(sequential, counter, x, y, args.repeats)
    same = torch.equal(batched.success, sequential.success) and torch.allclose(adv_b, adv_s, atol=1e-6)

    print(f"HFAttack on {n} CIFAR-10 images, {len(batched.radii)} radii "
          f"({float(batched.radii[0]):.2f} .. {float(batched.radii[-1]):.2f}, step {args.step}), "
          f"torch threads {torch.get_num_threads()}")
    print(f"success: {int(batched.success.sum())}/{n}; same result in both scans: {same}")
    print(f"{'scan':<28}{'calls/image':>12}{'evals/image':>12}{'ms/image':>10}")
    print(f"{'batched (batch_size=%d)' % args.batch_size:<28}{calls_b / n:>12.2f}{rows_b / n:>12.2f}"
          f"{1000 * time_b / n:>10.1f}")
    print(f"{'one radius per call':<28}{calls_s / n:>12.2f}{rows_s / n:>12.2f}{1000 * time_s / n:>10.1f}")
    print(f"ratios one-per-call / batched: calls x{calls_s / calls_b:.1f}, evaluations x{rows_s / rows_b:.2f}, "
          f"wall time x{time_s / time_b:.2f}")
    if not same:
        raise SystemExit("the two scans disagree")


if __name__ == "__main__":
    main()
