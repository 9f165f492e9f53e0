"""robustness_curve: wall time against the bare model forwards (and backwards) it needs.

Runs :func:`freqplug.eval.robustness_curve` on the embedded CIFAR-10 ResNet-18 and its sample images (FGSM,
PGD, the HF attack; D1 as a defense), records every model call it makes (batch size, and whether a gradient
was taken), then replays exactly those calls on the same model with random inputs: a forward for an
evaluation call, a forward plus ``backward`` of the summed output for an attack step. The ratio
``wall time / replay time`` is the overhead of everything that is not a model pass (masks, FFTs, bookkeeping);
1.0 means the curve costs only its forwards.

    python bench/robustness_curve.py [--images 8] [--eps 1 2 4 8] [--pgd-steps 5] [--hf-step 2] [--no-hf]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchattacks

from freqplug.attacks import HFAttack
from freqplug.data import sample_images
from freqplug.defenses import LowPassFilter
from freqplug.eval import robustness_curve
from freqplug.models import cifar10_resnet18


class CallRecorder:
    """Forward hook: (batch size, grad enabled) of every call of the model."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls.append((int(args[0].shape[0]), torch.is_grad_enabled() and args[0].requires_grad))


def replay(model, calls, shape) -> float:
    """Time the recorded calls on random inputs: forward (no grad), or forward + backward to the input."""
    start = time.perf_counter()
    for rows, with_grad in calls:
        x = torch.rand(rows, *shape)
        if with_grad:
            x.requires_grad_(True)
            torch.autograd.grad(model(x).sum(), x)
        else:
            with torch.no_grad():
                model(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--eps", type=float, nargs="+", default=[1, 2, 4, 8], help="grid in 1/255 units")
    parser.add_argument("--pgd-steps", type=int, default=5)
    parser.add_argument("--hf-step", type=float, default=2.0)
    parser.add_argument("--no-hf", action="store_true")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    model = cifar10_resnet18().eval()
    x, y = sample_images("cifar10")
    x, y = x[: args.images], y[: args.images]
    eps = [e / 255 for e in args.eps]
    attacks = {"FGSM": torchattacks.FGSM(model, eps=eps[-1]),
               "PGD": torchattacks.PGD(model, eps=eps[-1], alpha=eps[-1] / 4, steps=args.pgd_steps)}
    if not args.no_hf:
        attacks["HF"] = HFAttack(model, step=args.hf_step, batch_size=args.batch_size)
    defenses = {"D1 r=12": LowPassFilter(model, 12.0)}

    # warm-up (allocator, first-call overheads), not timed
    with torch.no_grad():
        model(x[:2])
    recorder = CallRecorder(model)
    start = time.perf_counter()
    result = robustness_curve(model, attacks, eps, x, y, defenses=defenses, batch_size=args.batch_size)
    wall = time.perf_counter() - start
    recorder.handle.remove()
    bare = replay(model, recorder.calls, tuple(x.shape[1:]))

    rows = sum(r for r, _ in recorder.calls)
    print(f"images={len(x)} eps={args.eps}/255 attacks={list(attacks)} defenses={list(defenses)}")
    print(f"model calls={len(recorder.calls)} rows={rows} (with gradient: "
          f"{sum(1 for _, g in recorder.calls if g)} calls) estimate in result={result.n_evaluations}")
    print(f"wall time {wall:.2f} s, bare forwards/backwards {bare:.2f} s, ratio {wall / bare:.2f}")
    for attack, accuracy in result.accuracy.items():
        print(f"  {attack:5s} accuracy {[round(float(a), 3) for a in accuracy]} AUC {result.auc[attack]:.3f}")


if __name__ == "__main__":
    main()
