"""Benchmark SpectralBandShapley.importance on the embedded CIFAR-10 ResNet-18.

Prints (1) model rows evaluated vs 2^M * K (must be 1.00: no repeated work) and (2) the
throughput of the dataset-level method (model rows per second, coalition filtering included)
divided by the bare forward throughput of the model at its best batch size (target >= 0.9).
The two are timed alternately in one process (best of ``--repeats``) so load drift hits both.

    python bench/spectral_band_shapley.py [--bands 6] [--images 8] [--repeats 2]
"""

import argparse
import time

import torch

from freqplug.attributions.spectral_band_shapley import SpectralBandShapley
from freqplug.data import sample_images
from freqplug.models import cifar10_resnet18


class Counting(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, images):
        self.rows += images.shape[0]
        return self.model(images)


def bare_rate(model, images, batch_size):
    """Images per second of model(images) in batches of batch_size (no_grad, like the method)."""
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            model(images[i:i + batch_size])
    return images.shape[0] / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bands", type=int, default=6)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[32, 64, 128, 256])
    args = parser.parse_args()

    model = cifar10_resnet18()
    x, y = sample_images("cifar10")
    x, y = x[: args.images], y[: args.images]
    rows = 2 ** args.bands * x.shape[0]
    probe = torch.rand(rows, *x.shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(probe[:8])  # warm-up

    rates = {b: max(bare_rate(model, probe[: 4 * b], b) for _ in range(args.repeats)) for b in args.batch_sizes}
    best = max(rates, key=rates.get)
    print("bare forward images/s by batch size: " + ", ".join(f"{b}: {r:.1f}" for b, r in rates.items()))

    counting = Counting(model)
    method = SpectralBandShapley(counting, args.bands)
    best_bare, best_method = 0.0, 0.0
    for _ in range(args.repeats):
        best_bare = max(best_bare, bare_rate(model, probe, best))
        counting.rows = 0
        start = time.perf_counter()
        result = method.importance((x, y), internal_batch_size=best, show_progress=False)
        best_method = max(best_method, counting.rows / (time.perf_counter() - start))
        assert counting.rows == result.rows_evaluated
    print(f"M={args.bands}, K={x.shape[0]} images, batch size {best}")
    print(f"rows evaluated / (2^M * K) = {counting.rows} / {rows} = {counting.rows / rows:.2f}")
    print(f"importance rows/s = {best_method:.1f}; bare forward images/s = {best_bare:.1f}; "
          f"ratio = {best_method / best_bare:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
