"""Embedded real sample images (shipped by the foolbox package, never downloaded), and the loaders of
image folders that ``freqplug profile --data-dir`` uses (:func:`load_data`, :func:`image_folder`,
:func:`robustbench_folder`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from .._lazy import attach, names_from

# The folder loaders are imported on first use (PEP 562).
_LAZY = names_from({
    ".folders": ["CIFAR10_CLASSES", "CIFAR100_CLASSES", "FASHION_MNIST_CLASSES", "ROBUSTBENCH_PREPROCESSINGS",
                 "ImageFolderData", "LoadedData", "class_names", "image_folder", "load_data", "robustbench_folder"],
    ".corruptions": ["CORRUPTED_CIFAR_FOLDERS", "CORRUPTIONS", "corrupted_cifar_path", "corrupted_cifar_size",
                     "load_corrupted_cifar"],
})
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = ["CIFAR10_CLASSES", "CIFAR100_CLASSES", "CORRUPTED_CIFAR_FOLDERS", "CORRUPTIONS", "DATASETS",
           "FASHION_MNIST_CLASSES", "ROBUSTBENCH_PREPROCESSINGS", "ImageFolderData", "LoadedData", "class_names",
           "corrupted_cifar_path", "corrupted_cifar_size", "digits", "foolbox_data_dir", "image_folder",
           "load_corrupted_cifar", "load_data",
           "robustbench_folder", "sample_images"]

#: dataset name -> (file prefix, image extension)
DATASETS = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "mnist": "mnist",
    "fashion_mnist": "fashionMNIST",
    "imagenet": "imagenet",
}


def foolbox_data_dir() -> Path:
    """Folder of foolbox's sample images (``foolbox/data``), found without importing foolbox."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "freqplug.data.sample_images needs the `foolbox` package, which ships the sample images; "
            "install it with `pip install foolbox` (or `pip install freqplug[data]`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"foolbox is installed but its sample image folder is missing: {path}")
    return path


def sample_images(dataset: str = "cifar10", *, size: Optional[int] = None,
                  dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """The 20 real test images of a dataset that foolbox ships, with their labels.

    Provenance: ``foolbox/data/<dataset>_<index>_<label>.<ext>`` in the installed foolbox
    package (20 images each of the CIFAR-10, CIFAR-100, MNIST, Fashion-MNIST and ImageNet
    test sets; the label is the class index in the file name).

    Args:
        dataset: ``"cifar10"`` (default), ``"cifar100"``, ``"mnist"``, ``"fashion_mnist"`` or
            ``"imagenet"``.
        size: resize to ``size x size`` (PIL's default resampling). ImageNet images come in
            various sizes and are resized to 224x224 unless ``size`` is given, as
            ``foolbox.utils.samples`` does.
        dtype: floating dtype of the images.

    Returns:
        ``(x, y)``: images (20, C, H, W) in [0, 1] (C = 1 for MNIST and Fashion-MNIST, 3 otherwise)
        and labels (20,) int64, in file-index order.
    """
    if dataset not in DATASETS:
        raise ValueError(f"`dataset` must be one of {sorted(DATASETS)}, got {dataset!r}")
    from PIL import Image

    if size is None and dataset == "imagenet":
        size = 224
    folder = foolbox_data_dir()
    prefix = DATASETS[dataset]
    images, labels = [], []
    for index in range(20):
        matches = sorted(folder.glob(f"{prefix}_{index:02d}_*"))
        if not matches:
            raise FileNotFoundError(f"sample image {prefix}_{index:02d}_* is missing from {folder}")
        path = matches[0]
        with Image.open(path) as image:
            if size is not None:
                image = image.resize((size, size))
            array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[..., None]
        images.append(torch.from_numpy(array.transpose(2, 0, 1).copy()))
        labels.append(int(path.stem.split("_")[-1]))
    return torch.stack(images).to(dtype), torch.tensor(labels, dtype=torch.long)


def digits(size: int = 32, *, dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 real handwritten digits, upsampled: the small real data set of the benches.

    Provenance: ``sklearn.datasets.load_digits`` (the UCI optical digits, 8x8 grey images shipped
    inside scikit-learn; no download). Pixel values 0..16 are scaled to [0, 1] and upsampled
    bilinearly to ``size x size``.

    Returns:
        ``(x, y)``: images (1797, 1, size, size) in [0, 1] and labels (1797,) int64 in 0..9.
    """
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as error:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "freqplug.data.digits needs scikit-learn, which ships the digits; install it with "
            "`pip install scikit-learn` (or `pip install freqplug[bench]`)"
        ) from error
    import torch.nn.functional as F

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    return x.to(dtype), torch.tensor(data.target, dtype=torch.long)
