"""Helpers of the CLI and loader tests: real image folders and RobustBench data folders built from the
embedded sample images, and importable model modules written to a folder."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W, C) uint8 (exact for images that came from 8-bit files)."""
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_class_folders(root: Path, x: torch.Tensor, y: torch.Tensor, names: Optional[Sequence[str]] = None,
                        suffix: str = ".png") -> Path:
    """Write image i as ``root/<names[y_i]>/<i:03d><suffix>`` (``names=None``: the label as folder name)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(to_uint8(x), y.tolist(), strict=True)):
        folder = root / (str(label) if names is None else names[label])
        folder.mkdir(exist_ok=True)
        array = image[..., 0] if image.shape[-1] == 1 else image
        Image.fromarray(array).save(folder / f"{index:03d}{suffix}")
    return root


def write_cifar_batch(root: Path, x: torch.Tensor, y: torch.Tensor, dataset: str = "cifar10",
                      names: Optional[Sequence[str]] = None) -> Path:
    """RobustBench's CIFAR data folder: ``root/cifar-10-batches-py/test_batch`` (or CIFAR-100's ``test``) in the
    python pickle format of the official archives (dict with ``data`` (N, 3072) uint8 rows of R, G, B planes), and
    the meta file with the class names (``names``, default the dataset's)."""
    from freqplug.data import class_names

    sub, name, key, meta, names_key = {
        "cifar10": ("cifar-10-batches-py", "test_batch", "labels", "batches.meta", "label_names"),
        "cifar100": ("cifar-100-python", "test", "fine_labels", "meta", "fine_label_names")}[dataset]
    folder = root / sub
    folder.mkdir(parents=True, exist_ok=True)
    rows = (x * 255).round().to(torch.uint8).reshape(x.shape[0], -1).numpy()
    entry = {"batch_label": "testing batch 1 of 1", key: y.tolist(), "data": rows,
             "filenames": [f"sample_{i}.png" for i in range(x.shape[0])]}
    with open(folder / name, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)
    with open(folder / meta, "wb") as handle:
        pickle.dump({names_key: list(class_names(dataset) if names is None else names)}, handle, protocol=2)
    return root


def write_module(folder: Path, name: str, body: str) -> Path:
    """Write ``folder/<name>.py`` with the dedented ``body``."""
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path
