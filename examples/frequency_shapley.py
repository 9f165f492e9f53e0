"""Frequency Shapley values of the embedded CIFAR-10 ResNet-18 (Chen2022, Figs. 2-4).

For a few CIFAR-10 sample images: the Shapley value of every frequency patch for the softmax
probability of the true class (the paper's game, 16x16 patch grid), shown as a centered
heatmap; the images rebuilt from the positive (PFC) and negative (NFC) frequency components;
and the average Shapley value per radius. Writes PNGs to out_dir (default ./freqplug-examples/).

Run: .venv/bin/python examples/frequency_shapley.py [out_dir] [--images 4] [--n-samples 8]
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from freqplug import FrequencyShapley
from freqplug.attributions import centered_attributions, radial_average, reconstruct_from_mask
from freqplug.data import CIFAR10_CLASSES, sample_images
from freqplug.models import cifar10_resnet18


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--n-samples", type=int, default=8, help="antithetic permutations per image")
    parser.add_argument("out", nargs="?", type=Path, default=Path("freqplug-examples"),
                        help="output folder (default: %(default)s)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    model = cifar10_resnet18()
    x, y = sample_images("cifar10")
    x, y = x[: args.images], y[: args.images]
    probability = lambda z: torch.softmax(model(z), dim=1)  # the paper's game output
    result = FrequencyShapley(probability).attribute(
        x, target=y, players=16, n_samples=args.n_samples, seed=0,
        show_progress=True, return_result=True)
    print(f"{result.n_evaluations} model evaluations, {result.players.num_players} players per image, "
          f"max |efficiency gap| {result.efficiency_gap.abs().max():.2e}, "
          f"mean relative standard error {(result.stderr.norm(dim=1) / result.values.norm(dim=1)).mean():.3f}")

    mean_colour = x.mean(dim=(-2, -1), keepdim=True)  # DC, added back for display only
    pfc = (reconstruct_from_mask(x, result.positive_mask()) + mean_colour).clamp(0, 1)
    nfc = (reconstruct_from_mask(x, result.negative_mask()) + mean_colour).clamp(0, 1)
    heat = centered_attributions(result.attributions)
    fig, axes = plt.subplots(len(x), 4, figsize=(10, 2.5 * len(x)), squeeze=False)
    for i in range(len(x)):
        bound = float(heat[i].abs().max())
        panels = [(x[i].permute(1, 2, 0), f"{CIFAR10_CLASSES[int(y[i])]}"), (pfc[i].permute(1, 2, 0), "PFC"),
                  (nfc[i].permute(1, 2, 0), "NFC")]
        for ax, (image, title) in zip(axes[i], panels):
            ax.imshow(image.numpy())
            ax.set_title(title)
            ax.axis("off")
        shown = axes[i][3].imshow(heat[i].numpy(), cmap="coolwarm", vmin=-bound, vmax=bound)
        axes[i][3].set_title("Shapley (centered)")
        axes[i][3].axis("off")
        fig.colorbar(shown, ax=axes[i][3], fraction=0.046)
    fig.tight_layout()
    fig.savefig(args.out / "frequency_shapley_images.png", dpi=100)

    curve = radial_average(result.attributions)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i in range(len(x)):
        ax.plot(curve[i].numpy(), alpha=0.4, label=CIFAR10_CLASSES[int(y[i])])
    ax.plot(curve.mean(0).numpy(), color="black", linewidth=2, label="mean")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("radius (bins from DC)")
    ax.set_ylabel("average Shapley value per bin")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "frequency_shapley_radial.png", dpi=100)
    print(f"wrote {args.out / 'frequency_shapley_images.png'} and {args.out / 'frequency_shapley_radial.png'}")


if __name__ == "__main__":
    main()
