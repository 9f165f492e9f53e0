"""CIFAR-10-C / CIFAR-100-C read from a RobustBench-layout folder, offline.

Layout (what RobustBench's ``robustbench.data.load_cifar10c``/``load_cifar100c`` read, Hendrycks & Dietterich
2019): ``<data_dir>/CIFAR-10-C/<corruption>.npy`` (``CIFAR-100-C`` for CIFAR-100), each an array
(5 * N, 32, 32, 3) uint8 holding the N test images corrupted at severity 1, then 2, ..., 5 (N = 10000 in the
published files), and ``labels.npy`` (5 * N or N labels; the published file repeats the N test labels 5 times).

RobustBench's loader assumes exactly 10000 images per severity, ``np.load``s the whole file (all five
severities) for every call and downloads the data set when the folder is missing; :func:`load_corrupted_cifar`
reads the same images with the same conversion (``uint8 / 255``, HWC -> CHW, first images first), memory-maps
the file, accepts any N and never touches the network. The test suite checks it against RobustBench's loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

from .._validation import check_choice

__all__ = ["CORRUPTED_CIFAR_FOLDERS", "CORRUPTIONS", "COMMON_CORRUPTIONS", "VALIDATION_CORRUPTIONS",
           "corrupted_cifar_path", "corrupted_cifar_size", "load_corrupted_cifar"]

#: The 15 corruptions of CIFAR-10-C/ImageNet-C's benchmark (Hendrycks & Dietterich 2019), in imagecorruptions'
#: order (``imagecorruptions.get_corruption_names('common')``).
COMMON_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                      "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                      "jpeg_compression")
#: The 4 extra ("validation") corruptions of CIFAR-10-C (``get_corruption_names('validation')``).
VALIDATION_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
#: All 19 corruptions of CIFAR-10-C / CIFAR-100-C (Chan2022 Table 1 reports all 19).
CORRUPTIONS = COMMON_CORRUPTIONS + VALIDATION_CORRUPTIONS

#: dataset -> folder name inside ``data_dir`` (RobustBench's ``CORRUPTIONS_DIR_NAMES``).
CORRUPTED_CIFAR_FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}

_SEVERITIES = 5


def corrupted_cifar_path(data_dir: Union[str, Path], dataset: str = "cifar10") -> Path:
    """The ``CIFAR-10-C`` (or ``CIFAR-100-C``) folder inside ``data_dir``; refuses a missing one (no download)."""
    check_choice(dataset, "dataset", tuple(CORRUPTED_CIFAR_FOLDERS))
    if not isinstance(data_dir, (str, Path)):
        raise TypeError(f"`data_dir` must be a path (str or pathlib.Path), got {type(data_dir).__name__}")
    root = Path(data_dir) / CORRUPTED_CIFAR_FOLDERS[dataset]
    if not root.is_dir():
        folder = CORRUPTED_CIFAR_FOLDERS[dataset]
        raise ValueError(f"`data_dir` {str(data_dir)!r} has no {folder}/ folder (RobustBench's layout: "
                         f"<data_dir>/{folder}/<corruption>.npy and labels.npy); freqplug never downloads it")
    return root


def _open(root: Path, corruption: str) -> np.ndarray:
    path = root / f"{corruption}.npy"
    if not path.is_file():
        raise ValueError(f"`corruptions` names {corruption!r} but {path} does not exist")
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ValueError(f"{path} is not a readable .npy array ({error})") from error
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] % _SEVERITIES:
        raise ValueError(f"{path} must hold (5 * N, H, W, 3) uint8 images (5 severities stacked), got shape "
                         f"{images.shape} and dtype {images.dtype}")
    return images


def corrupted_cifar_size(data_dir: Union[str, Path], corruption: str = "gaussian_noise",
                         dataset: str = "cifar10") -> int:
    """N, the number of images per severity in ``<data_dir>/CIFAR-10-C/<corruption>.npy`` (10000 when complete)."""
    return _open(corrupted_cifar_path(data_dir, dataset), corruption).shape[0] // _SEVERITIES


def load_corrupted_cifar(data_dir: Union[str, Path], corruption: str, severity: int, *, dataset: str = "cifar10",
                         n_examples: Optional[int] = None, start: int = 0,
                         dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images ``start .. start + n_examples - 1`` of one corruption and severity of CIFAR-10-C / CIFAR-100-C.

    The i-th image is the i-th CIFAR test image corrupted (Hendrycks & Dietterich 2019), as RobustBench's
    ``load_cifar10c(n_examples, severity, data_dir, corruptions=[corruption])`` returns it (no shuffling).

    Args:
        data_dir: the folder that holds ``CIFAR-10-C/`` (``CIFAR-100-C/``), as passed to RobustBench.
        corruption: file name without ``.npy``, e.g. ``"fog"`` (see :data:`CORRUPTIONS`).
        severity: 1..5.
        dataset: ``"cifar10"`` or ``"cifar100"``.
        n_examples: how many images (default: all N from ``start``).
        start: index of the first image.
        dtype: floating dtype of the images.

    Returns:
        ``(x, y)``: images (n, C, H, W) in [0, 1] (``uint8 / 255``) and labels (n,) int64.
    """
    root = corrupted_cifar_path(data_dir, dataset)
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"`severity` must be an int in 1..5, got {severity!r}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"`start` must be a non-negative int, got {start!r}")
    images = _open(root, corruption)
    per_severity = images.shape[0] // _SEVERITIES
    if n_examples is None:
        n_examples = per_severity - start
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 1:
        raise ValueError(f"`n_examples` must be a positive int or None, got {n_examples!r}")
    if start + n_examples > per_severity:
        raise ValueError(f"`n_examples` {n_examples} from `start` {start} exceeds the {per_severity} images per "
                         f"severity of {root / (corruption + '.npy')}")
    labels = _labels(root, per_severity)
    offset = (int(severity) - 1) * per_severity + start
    block = np.array(images[offset:offset + n_examples])  # a writable copy of the memory-mapped rows
    x = torch.from_numpy(block).permute(0, 3, 1, 2).to(dtype) / 255
    y = torch.from_numpy(np.array(labels[start:start + n_examples], dtype=np.int64))
    return x.contiguous(), y


def _labels(root: Path, per_severity: int) -> np.ndarray:
    path = root / "labels.npy"
    if not path.is_file():
        raise ValueError(f"{path} is missing (RobustBench's layout has labels.npy beside the corruption files)")
    labels = np.load(path, mmap_mode="r", allow_pickle=False)
    if labels.ndim != 1 or labels.shape[0] not in (per_severity, _SEVERITIES * per_severity) \
            or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path} must hold {per_severity} or {_SEVERITIES * per_severity} integer labels (one per "
                         f"image of a severity, or repeated for the 5 severities), got shape {labels.shape} and dtype "
                         f"{labels.dtype}")
    return labels
