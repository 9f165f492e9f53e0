"""HF attack (Wang2020b §3.4) on the embedded CIFAR-10 ResNet-18: success rate versus radius.

Runs HFAttack once on the 20 embedded CIFAR-10 images (radii 22.6 .. min-radius, step 1) and
prints, for every radius r, the fraction of images fooled by a low-pass image of radius >= r
(the success rate of an attack stopped at r), the evaluations spent, and saves sample images
(clean | returned low-pass image) to ``<out>/hf_attack_samples.png``.

    python examples/hf_attack.py [out_dir] [--min-radius 4] [--step 1]
"""

from __future__ import annotations

import argparse
import os

import torch

from freqplug.attacks import HFAttack
from freqplug.data import CIFAR10_CLASSES, sample_images
from freqplug.models import cifar10_resnet18


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="./freqplug-examples/")
    parser.add_argument("--min-radius", type=float, default=4.0)
    parser.add_argument("--step", type=float, default=1.0)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    model = cifar10_resnet18()
    x, y = sample_images("cifar10")
    attack = HFAttack(model, min_radius=args.min_radius, step=args.step, batch_size=256)
    adv = attack(x, y)
    n = x.shape[0]
    print(f"HFAttack on {n} CIFAR-10 images: {int(attack.success.sum())} fooled, "
          f"{int(attack.num_evaluations.sum())} model evaluations in {attack.num_forward_calls} forward calls")
    print(f"success rate over the {attack.num_counted} correctly classified images: {100 * attack.success_rate:.0f}%")
    print(f"{'stop radius r':>14}{'success rate':>14}")
    for radius in attack.radii.tolist():
        fooled = int((attack.success & (attack.found_radius >= radius - 1e-9)).sum())
        print(f"{radius:>14.2f}{100 * fooled / n:>13.0f}%")

    with torch.no_grad():
        predictions = model(adv).argmax(1)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = torch.nonzero(attack.success).flatten()[:6].tolist()
    if shown:
        figure = Figure(figsize=(2 * len(shown), 4.4), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(2, len(shown), squeeze=False)
        for column, i in enumerate(shown):
            axes[0, column].imshow(x[i].permute(1, 2, 0).numpy())
            axes[0, column].set_title(CIFAR10_CLASSES[int(y[i])], fontsize=8)
            axes[1, column].imshow(adv[i].permute(1, 2, 0).numpy())
            axes[1, column].set_title(f"r={float(attack.found_radius[i]):.1f}: {CIFAR10_CLASSES[int(predictions[i])]}",
                                      fontsize=8)
            for row in range(2):
                axes[row, column].axis("off")
        path = os.path.join(args.out_dir, "hf_attack_samples.png")
        figure.savefig(path, dpi=100)
        print(f"saved {path}")


if __name__ == "__main__":
    main()
