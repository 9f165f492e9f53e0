"""Independent oracles for the corruption tests: imagecorruptions called directly (with the per-image seeding
freqplug documents), numpy's FFT for the radial energy, and a RobustBench-layout CIFAR-10-C folder."""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import torch


def imagecorruptions_direct(x: torch.Tensor, corruption: str, severity: int, seed: int = 0) -> torch.Tensor:
    """imagecorruptions.corrupt on round(255 x) per image, numpy seeded with the documented words
    [seed low, seed high, index low, index high, crc32(name), severity]; (N, 3, H, W) float32 on the 1/255 grid."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import imagecorruptions
    images = (x.double().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    state = np.random.get_state()
    out = []
    try:
        for i, image in enumerate(images):
            np.random.seed([seed, 0, i, 0, zlib.crc32(corruption.encode()), severity])
            out.append(imagecorruptions.corrupt(image, severity=severity, corruption_name=corruption))
    finally:
        np.random.set_state(state)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


def quantized(x: torch.Tensor) -> torch.Tensor:
    return (x.double().clamp(0, 1) * 255).round().float() / 255


def radial_energy_numpy(noise: torch.Tensor) -> np.ndarray:
    """Mean over images and channels of |DFT|^2 (orthonormal) averaged over rings of rounded radius."""
    a = noise.double().numpy()
    h, w = a.shape[-2:]
    power = (np.abs(np.fft.fft2(a, norm="ortho")) ** 2).reshape(-1, h, w).mean(0)
    fy, fx = np.meshgrid(np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w, indexing="ij")
    ring = np.rint(np.sqrt(fy ** 2 + fx ** 2)).astype(int).ravel()
    return np.bincount(ring, weights=power.ravel()) / np.bincount(ring)


def write_cifar_c_folder(root: Path, images_per_severity: dict, labels: np.ndarray, folder: str = "CIFAR-10-C"):
    """``root/folder/<corruption>.npy`` ((5 N, H, W, 3) uint8, severities 1..5 stacked) and labels.npy (5 N)."""
    target = Path(root) / folder
    target.mkdir(parents=True, exist_ok=True)
    for name, per_severity in images_per_severity.items():
        stacked = np.concatenate([(t.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
                                  for t in per_severity])
        np.save(target / f"{name}.npy", stacked)
    np.save(target / "labels.npy", np.tile(np.asarray(labels, dtype=np.int64), 5))
    return target
