"""Occluded Frequency on the embedded CIFAR-10 ResNet-18 (Wang2020a Fig. 4 and Fig. 1).

Fig. 4: per-ring logit drops for one correctly classified image, with the images whose lowest
rings and top-scoring rings are occluded. Fig. 1 ("attribution shift"): scores of the true
class averaged per class over the 20 embedded samples, for the pretrained model and a random copy.

    python examples/occluded_frequency.py [out_dir] [--groups ring|diagonal] [--baseline zero|gaussian|replacement]
"""

import argparse
import os

import matplotlib
import numpy
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from freqplug.attributions.occluded_frequency import OccludedFrequency, plot_group_scores
from freqplug.data import sample_images
from freqplug.models import cifar10_resnet18, resnet18_cifar
from freqplug.spectral import apply_dct_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="./freqplug-examples/")
    parser.add_argument("--groups", default="ring", choices=["ring", "diagonal"])
    parser.add_argument("--baseline", default="zero", choices=["zero", "gaussian", "replacement"])
    parser.add_argument("--image", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    x, y = sample_images("cifar10")
    model = cifar10_resnet18()
    of = OccludedFrequency(model, groups=args.groups)

    # Fig. 4: one image.
    image, label = x[args.image:args.image + 1], y[args.image:args.image + 1]
    scores = of.player_values(image, args.baseline, target=label, perturbations_per_eval=16, show_progress=True)[0]
    print(f"image {args.image} (class {int(label)}): logit drop per {args.groups} group, low -> high")
    print("  " + " ".join(f"{s:.2f}" for s in scores.tolist()))
    top = scores.argsort(descending=True)[:3].tolist()
    print(f"  top-3 groups: {top}")
    figure = Figure(figsize=(9, 5))
    FigureCanvasAgg(figure)
    plot_group_scores(scores, ax=figure.add_subplot(2, 1, 1),
                      title=f"Occluded Frequency ({args.groups}, {args.baseline} baseline), class {int(label)}")
    players = of.players(32, 32)
    shown = [("clean", None)] + [(f"group {k} off", k) for k in (0, 1, 2)] + \
        [(f"top{i + 1}: {k} off", k) for i, k in enumerate(top)]
    for i, (title, group) in enumerate(shown):
        ax = figure.add_subplot(2, len(shown), len(shown) + i + 1)
        picture = image if group is None else apply_dct_mask(image, players.player_map == group, keep=False)
        ax.imshow(picture[0].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    figure.tight_layout()
    path_bars = os.path.join(args.out_dir, "occluded_frequency_fig4.png")
    figure.savefig(path_bars, dpi=100)

    # Fig. 1: attribution shift, class averages over the samples, pretrained vs random copy.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        copies = {"pretrained": model, "random init": resnet18_cifar().eval()}
    figure = Figure(figsize=(10, 3.5))
    FigureCanvasAgg(figure)
    for i, (name, net) in enumerate(copies.items()):
        means, counts = OccludedFrequency(net, groups=args.groups).class_average_scores(
            (x, y), num_classes=10, baselines=args.baseline, perturbations_per_eval=16)
        share_low = means[counts > 0, :4].abs().sum(1) / means[counts > 0].abs().sum(1)
        print(f"{name}: per-class mean scores (classes with images: {(counts > 0).sum().item()}); "
              f"share of the 4 lowest rings in sum |score|: {share_low.mean():.2f}")
        ax = figure.add_subplot(1, 2, i + 1)
        # classes without images are NaN: drawn gray, not as a zero score
        limit = float(means[counts > 0].abs().max())
        colormap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="lightgray")
        picture = ax.imshow(numpy.ma.masked_invalid(means.numpy()), aspect="auto", cmap=colormap, vmin=-limit,
                            vmax=limit)
        ax.set_xlabel(f"{args.groups} group (low → high)")
        ax.set_ylabel("class")
        ax.set_title(f"{name}: mean logit drop per class", fontsize=9)
        figure.colorbar(picture, ax=ax)
    figure.tight_layout()
    path_shift = os.path.join(args.out_dir, "occluded_frequency_class_average.png")
    figure.savefig(path_shift, dpi=100)
    print(f"wrote {path_bars} and {path_shift}")


if __name__ == "__main__":
    main()
