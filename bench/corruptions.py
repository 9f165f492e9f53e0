"""corruption_robustness: wall time against the bare model forwards it needs.

Runs :func:`freqplug.eval.corruption_robustness` on the embedded CIFAR-10 ResNet-18 and its sample images, then
times the bare forwards of the same number of images in the same batch size (``model(x)`` under no_grad, nothing
else), and prints both, the ratio wall / forwards, and where the rest goes (corruption generation with
imagecorruptions, numpy on CPU; the noise spectra). A ratio near 1 means the cost is the model's.

    python bench/corruptions.py [--images 20] [--corruptions all|name,name] [--severities 1,2,3,4,5]
                                [--batch-size 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from freqplug.data import CORRUPTIONS, sample_images
from freqplug.eval import corrupt_images, corruption_robustness
from freqplug.models import cifar10_resnet18


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--corruptions", default="all")
    parser.add_argument("--severities", default="1,2,3,4,5")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    names = CORRUPTIONS if args.corruptions == "all" else tuple(args.corruptions.split(","))
    severities = tuple(int(s) for s in args.severities.split(","))
    model = cifar10_resnet18()
    x, y = sample_images("cifar10")
    x, y = x[: args.images], y[: args.images]
    n = x.shape[0]
    corrupt_images(x[:1], names[0], severities[0])  # warm-up: imports, first-call overheads (not timed)
    with torch.no_grad():
        model(x[:2])

    start = time.perf_counter()
    result = corruption_robustness(model, x, y, names, severities, batch_size=args.batch_size)
    wall = time.perf_counter() - start

    images = result.evaluations
    batch = torch.cat([x] * (images // n + 1))[:images]
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, images, args.batch_size):
            model(batch[i:i + args.batch_size])
    forwards = time.perf_counter() - start

    start = time.perf_counter()
    for name in names:
        for severity in severities:
            corrupt_images(x, name, severity)
    generation = time.perf_counter() - start

    print(f"images {n}, corruptions {len(names)}, severities {len(severities)}, batch size {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"model forwards (images): {images}")
    print(f"corruption_robustness wall time: {wall:.2f} s")
    print(f"bare forwards of {images} images: {forwards:.2f} s")
    print(f"corruption generation alone (imagecorruptions, {n * len(names) * len(severities)} images): "
          f"{generation:.2f} s")
    print(f"ratio wall / bare forwards: {wall / forwards:.2f}")
    print(f"clean accuracy {result.clean_accuracy:.3f}; mean corruption accuracy "
          f"{sum(result.mean_accuracy(c) for c in names) / len(names):.3f}")


if __name__ == "__main__":
    main()
