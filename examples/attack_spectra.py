"""Spectra of adversarial perturbations (Wang2020a Fig. 2, Luo2024 Fig. 2) on the embedded ResNet-18.

FGSM, PGD, their high- and low-frequency masked versions and the HF attack, on the 20 embedded
CIFAR-10 images: prints error rates and the spectral SNR per radius, and saves the RCT maps and SNR
curves to ``<out_dir>/attack_spectra.png``.

    python examples/attack_spectra.py [out_dir]      # default ./freqplug-examples/
"""

from __future__ import annotations

import argparse
import os

import torch
import torchattacks

from freqplug.attacks import FrequencyMaskedAttack, HFAttack
from freqplug.eval import attack_spectra, plot_attack_spectra
from freqplug.data import sample_images
from freqplug.models import cifar10_resnet18


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="./freqplug-examples/")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    torch.manual_seed(0)
    model = cifar10_resnet18()
    x, y = sample_images("cifar10")
    pgd = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10)
    attacks = {
        "FGSM": torchattacks.FGSM(model, eps=8 / 255),
        "PGD": pgd,
        "PGD-high": FrequencyMaskedAttack(pgd, "high"),
        "PGD-low": FrequencyMaskedAttack(pgd, "low"),
        "HF": HFAttack(model, min_radius=8.0),
    }
    spectra = attack_spectra(model, attacks, x, y)
    for name, result in spectra.items():
        snr = result["snr_db"]
        print(f"{name:<9} error {100 * result['error_rate']:5.1f} %  Linf {result['linf']:.4f}  "
              f"SNR dB at r=1,8,16,22: " + ", ".join(f"{float(snr[r]):6.1f}" for r in (1, 8, 16, 22)))
    path = os.path.join(args.out_dir, "attack_spectra.png")
    plot_attack_spectra(spectra, path)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
