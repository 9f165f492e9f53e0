"""Images from folders: class sub-folders labelled by NAME, RobustBench's dataset folders, one entry point.

This is the loader behind ``freqplug profile --data-dir`` and the same functions serve Python users,
so a report made from Python reads the same images with the same labels as the command line.

Labels come from the class folder NAMES mapped to the dataset's class list (CIFAR-10/100 names,
ImageNet wnids, Fashion-MNIST names, MNIST digits), never from the folders' sorted position: a folder
with ``airplane/`` and ``cat/`` but no ``automobile/`` must still label cats 3, not 1.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["IMAGE_EXTENSIONS", "ROBUSTBENCH_PREPROCESSINGS", "ImageFolderData", "LoadedData", "class_names",
           "image_folder", "load_data", "robustbench_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff", ".gif")

#: The ten CIFAR-10 class names, in label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: CIFAR-100 fine labels in label order (the alphabetical order of ``meta['fine_label_names']``).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)

#: Fashion-MNIST labels in label order (torchvision's ``FashionMNIST.classes``).
FASHION_MNIST_CLASSES = ("t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                         "ankle_boot")

MNIST_CLASSES = tuple(str(i) for i in range(10))

#: Image mode and default size per dataset (ImageNet: RobustBench's Res256Crop224 unless ``size`` is given).
_MODE = {"mnist": "L", "fashion_mnist": "L"}
_SIZE = {"cifar10": 32, "cifar100": 32, "mnist": 28, "fashion_mnist": 28, "imagenet": 224}


def _package_file(package: str, *parts: str) -> Optional[Path]:
    """A data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    return path if path.is_file() else None


def _imagenet_wnids() -> Tuple[str, ...]:
    rb_map = _package_file("robustbench", "helper_files", "imagenet_class_to_id_map.json")
    if rb_map is not None:
        index = json.loads(rb_map.read_text())
        return tuple(sorted(index, key=index.__getitem__))
    synsets = _package_file("timm", "data", "_info", "imagenet_synsets.txt")
    if synsets is not None:
        return tuple(line.strip() for line in synsets.read_text().splitlines() if line.strip())
    raise ModuleNotFoundError("the ImageNet class list (wnids) ships with robustbench or timm; install one of them "
                              "(`pip install robustbench`) or pass an explicit `classes=` mapping")


def class_names(dataset: str) -> Tuple[str, ...]:
    """Class names of a dataset in label order (ImageNet: the 1000 wnids ``n01440764``, ...).

    Args:
        dataset: ``"cifar10"``, ``"cifar100"``, ``"imagenet"``, ``"mnist"`` or ``"fashion_mnist"``.

    Returns:
        Tuple of names; name ``i`` is label ``i``.
    """
    tables = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES, "mnist": MNIST_CLASSES,
              "fashion_mnist": FASHION_MNIST_CLASSES}
    if dataset == "imagenet":
        return _imagenet_wnids()
    if dataset not in tables:
        raise ValueError(f"`dataset` must be one of {sorted([*tables, 'imagenet'])}, got {dataset!r}")
    return tables[dataset]


def _normalise(name: str) -> str:
    """Case and separators do not matter: 'Aquarium Fish', 'aquarium-fish' and 'aquarium_fish' are one name."""
    return "".join("_" if c in " -/" else c for c in name.strip().lower())


def _expected_text(names: Sequence[str]) -> str:
    if len(names) > 20:
        return f"{len(names)} names such as {', '.join(names[:5])}, ... (or the numbers 0..{len(names) - 1})"
    return f"{', '.join(names)} (or the numbers 0..{len(names) - 1})"


def _check_classes_argument(classes, dataset: Optional[str]) -> Dict[str, int]:
    if isinstance(classes, Mapping):
        mapping = {}
        for key, value in classes.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"`classes` must map folder names to non-negative int labels, got {key!r}: "
                                 f"{value!r}")
            mapping[str(key)] = int(value)
    elif isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        if len(set(classes)) != len(classes):
            raise ValueError("`classes` (a list of class names, label = position) repeats a name")
        mapping = {name: index for index, name in enumerate(classes)}
    else:
        raise TypeError(f"`classes` must be a mapping {{folder name: label}} or a list of class names, got "
                        f"{type(classes).__name__}")
    if dataset is not None:
        k = len(class_names(dataset))
        bad = {name: label for name, label in mapping.items() if label >= k}
        if bad:
            raise ValueError(f"`classes` maps {bad} outside the {k} classes of dataset {dataset!r}")
    return mapping


def _class_labels(folders: Sequence[str], dataset: Optional[str], classes) -> Dict[str, int]:
    """Map each class folder name to its label (see :func:`image_folder`)."""
    if classes is not None:
        mapping = _check_classes_argument(classes, dataset)
        unknown = [f for f in folders if f not in mapping]
        if unknown:
            raise ValueError(f"class folder(s) {unknown} are not in `classes`; it maps {sorted(mapping)}")
        return {f: mapping[f] for f in folders}
    names = class_names(dataset) if dataset is not None else None
    if all(f.isdigit() for f in folders):
        labels = {f: int(f) for f in folders}
        if names is not None:
            bad = [f for f, label in labels.items() if label >= len(names)]
            if bad:
                raise ValueError(f"numeric class folder(s) {bad} are outside the {len(names)} classes of dataset "
                                 f"{dataset!r}")
    elif names is None:
        raise ValueError(f"class folders {list(folders)[:8]} have names, not numbers: pass `dataset` (to map them "
                         "to its class list) or an explicit `classes` mapping {folder name: label}")
    else:
        lookup = {_normalise(n): i for i, n in enumerate(names)}
        labels, unknown = {}, []
        for f in folders:
            if f.isdigit():
                unknown.append(f)  # a number among names: position or name? refuse rather than guess
            elif _normalise(f) in lookup:
                labels[f] = lookup[_normalise(f)]
            else:
                unknown.append(f)
        if unknown:
            raise ValueError(f"class folder name(s) {unknown} are not classes of dataset {dataset!r}; expected "
                             f"{_expected_text(names)}, all names or all numbers; or pass an explicit `classes` "
                             "mapping {folder name: label}")
    seen: Dict[int, str] = {}
    for f, label in labels.items():
        if label in seen:
            raise ValueError(f"class folders {seen[label]!r} and {f!r} both name class {label}; keep one (or pass "
                             "an explicit `classes` mapping)")
        seen[label] = f
    return labels


def _res256crop224(image):
    """RobustBench's ImageNet preprocessing 'Res256Crop224' (torchvision Resize(256) + CenterCrop(224)) in PIL."""
    from PIL import Image

    width, height = image.size
    if width <= height:
        new_w, new_h = 256, int(256 * height / width)
    else:
        new_w, new_h = int(256 * width / height), 256
    image = image.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - 224) / 2.0)), int(round((new_w - 224) / 2.0))
    return image.crop((left, top, left + 224, top + 224))


#: RobustBench's named image preprocessings (``robustbench.data.PREPROCESSINGS``), one per model-zoo entry.
ROBUSTBENCH_PREPROCESSINGS = ("Res256Crop224", "Crop288", "Res224", "BicubicRes256Crop224")


def _preprocessing_transform(preprocessing) -> Optional[Callable]:
    """The callable (PIL image -> (C, H, W) tensor in [0, 1]) a ``preprocessing`` argument names.

    None and 'Res256Crop224' give None (freqplug's PIL implementation of RobustBench's default, exact, no
    torchvision needed). The other RobustBench names are built as ``robustbench.data.PREPROCESSINGS`` builds
    them, and ``"timm:<name>"`` as ``robustbench.data.get_timm_model_preprocessing`` does (resize the shorter
    side to ``floor(input size / crop_pct)`` with the model's interpolation, centre crop, ToTensor), from
    timm's config of the model (the tests compare both with robustbench's own transforms).
    """
    if preprocessing is None or preprocessing == "Res256Crop224":
        return None
    if callable(preprocessing):
        return preprocessing
    if not isinstance(preprocessing, str) or not (preprocessing in ROBUSTBENCH_PREPROCESSINGS
                                                  or preprocessing.startswith("timm:")):
        raise ValueError(f"`preprocessing` must be None, one of RobustBench's {list(ROBUSTBENCH_PREPROCESSINGS)}, "
                         f"'timm:<model name>' or a callable (PIL image -> (C, H, W) tensor), got {preprocessing!r}")
    from .._optional import require

    transforms = require("torchvision.transforms", f"preprocessing={preprocessing!r}")
    mode = transforms.InterpolationMode
    if preprocessing == "Crop288":
        return transforms.Compose([transforms.CenterCrop(288), transforms.ToTensor()])
    if preprocessing == "Res224":
        return transforms.Compose([transforms.Resize([224, 224]), transforms.ToTensor()])
    if preprocessing == "BicubicRes256Crop224":
        return transforms.Compose([transforms.Resize(256, interpolation=mode("bicubic")), transforms.CenterCrop(224),
                                   transforms.ToTensor()])
    name = preprocessing[len("timm:"):]
    try:
        from timm.models import get_pretrained_cfg, is_model
    except ImportError as error:
        raise ImportError(f"preprocessing={preprocessing!r} needs timm, which is not installed here ({error}); "
                          "install it with: pip install \"freqplug[robustbench]\"") from error
    if not is_model(name):
        raise ValueError(f"`preprocessing` {preprocessing!r}: timm knows no model {name!r} (RobustBench registers its "
                         "entries in timm when robustbench is imported; take the name from "
                         "freqplug.compat.model_preprocessing)")
    cfg = get_pretrained_cfg(name)
    size = int(cfg.input_size[1])
    return transforms.Compose([transforms.Resize(int(math.floor(size / cfg.crop_pct)),
                                                 interpolation=mode(cfg.interpolation)),
                               transforms.CenterCrop(size), transforms.ToTensor()])


def _read_image(path: Path, mode: str, size: Optional[int], imagenet_default: bool,
                transform: Optional[Callable] = None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = opened.convert(mode)
        if transform is None and imagenet_default:
            image = _res256crop224(image)
        elif transform is None and size is not None and image.size != (size, size):
            image = image.resize((size, size))
        array = np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image file {str(path)!r} ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:200]}); remove or replace it") from None
    if transform is not None:  # outside the try: a faulty preprocessing is not the file's fault
        return _transformed(transform(image), path)
    return array[..., None] if array.ndim == 2 else array


def _transformed(out, path: Path) -> np.ndarray:
    """A preprocessing's output, checked: a finite (C, H, W) floating tensor in [0, 1] -> (H, W, C) array."""
    if not isinstance(out, torch.Tensor) or out.ndim != 3 or not out.is_floating_point():
        what = f"{type(out).__name__} of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else \
            type(out).__name__
        raise TypeError(f"`preprocessing` must return a floating (C, H, W) tensor, got a {what} for {str(path)!r}")
    if not bool(torch.isfinite(out).all()) or float(out.min()) < 0 or float(out.max()) > 1:
        raise ValueError(f"`preprocessing` must return images in [0, 1] (no normalisation: RobustBench models "
                         f"normalise inside), got values in [{float(out.min()):.3g}, {float(out.max()):.3g}] for "
                         f"{str(path)!r}")
    return out.detach().to(torch.float32).permute(1, 2, 0).cpu().numpy()


class _NoClassFolders(ValueError):
    """A folder without class sub-folders of images (load_data then also names RobustBench's layout)."""


class ImageFolderData(NamedTuple):
    """Images read by :func:`image_folder` or :func:`robustbench_folder`.

    Attributes:
        x: images (N, C, H, W) in [0, 1].
        y: labels (N,) int64.
        class_to_index: ``{class folder name: label}`` actually used (record it with the results).
        files: the file of each image, in the order of ``x`` (for :func:`robustbench_folder` on CIFAR:
            ``"<batch file>#<row>"``).
    """

    x: torch.Tensor
    y: torch.Tensor
    class_to_index: Dict[str, int]
    files: List[str]


def image_folder(folder: Union[str, Path], *, dataset: Optional[str] = None,
                 classes: Optional[Union[Mapping[str, int], Sequence[str]]] = None, n: Optional[int] = None,
                 size: Optional[int] = None, dtype: torch.dtype = torch.float32,
                 preprocessing: Optional[Union[str, Callable]] = None) -> ImageFolderData:
    """Images in class sub-folders (``folder/<class>/<image>``), labelled by the folder NAMES.

    Labels: with ``classes`` (a ``{folder name: label}`` mapping, or a list of names whose position is
    the label), exactly that mapping, every folder must be in it. Otherwise folders named by numbers
    get their number, and folders named by class names get the index of that name in
    :func:`class_names` ``(dataset)`` (case, spaces and hyphens ignored; ImageNet: wnids). Never the
    folder's sorted position. Unknown names, names mixed with numbers and two folders naming one class
    are refused with the list of expected names.

    Order: a round robin over the classes (in label order), files sorted by name within a class, so
    the first ``n`` images cover the classes evenly. Files with other extensions than
    :data:`IMAGE_EXTENSIONS` and hidden files are skipped; an image file that cannot be decoded raises.

    Args:
        folder: the folder holding one sub-folder per class.
        dataset: ``"cifar10"``, ``"cifar100"``, ``"imagenet"``, ``"mnist"`` or ``"fashion_mnist"``: its
            class list, channels (MNIST sets: 1, grey) and default size (32, 32, 224, 28, 28).
        classes: explicit mapping, see above.
        n: read at most this many images (default: all).
        size: resize every image to ``size x size`` (PIL's default resampling). Default: the dataset's
            size; ImageNet by RobustBench's 'Res256Crop224' (resize the shorter side to 256, bilinear,
            centre crop 224); without a dataset the images are kept as they are and must agree in size.
        dtype: floating dtype of ``x``.
        preprocessing: instead of ``size``, a RobustBench preprocessing (one of
            :data:`ROBUSTBENCH_PREPROCESSINGS`, or ``"timm:<name>"`` for a timm-registered model-zoo entry; see
            :func:`freqplug.compat.model_preprocessing`) or a callable PIL image -> (C, H, W) tensor in [0, 1].
            ImageNet models of RobustBench's zoo are evaluated with their own (e.g. 'Crop288').

    Returns:
        :class:`ImageFolderData` ``(x, y, class_to_index, files)``; ``x`` (N, C, H, W) in [0, 1].

    Raises:
        ValueError: no class sub-folders or no images, unknown or ambiguous class names (listing the expected
            names), a corrupt image file (naming it), images of different sizes without ``size``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"`folder` {str(folder)!r} is not a folder")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"`n` must be a positive int or None, got {n!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"`size` must be a positive int or None, got {size!r}")
    if dataset is not None:
        class_names(dataset)  # checks the name
    if preprocessing is not None and size is not None:
        raise ValueError(f"pass `size` or `preprocessing`, not both (got size={size!r}, "
                         f"preprocessing={preprocessing!r})")
    transform = _preprocessing_transform(preprocessing)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files_of = {d.name: sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")
                               and f.suffix.lower() in IMAGE_EXTENSIONS) for d in class_dirs}
    class_dirs = [d for d in class_dirs if files_of[d.name]]
    if not class_dirs:
        raise _NoClassFolders(f"`folder` {str(folder)!r} has no class sub-folders with images "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
    labels = _class_labels([d.name for d in class_dirs], dataset, classes)
    order = sorted(labels, key=lambda name: (labels[name], name))
    items: List[Tuple[Path, int]] = []
    for rank in range(max(len(files_of[name]) for name in order)):
        items += [(files_of[name][rank], labels[name]) for name in order if rank < len(files_of[name])]
    items = items[:n] if n is not None else items
    mode = _MODE.get(dataset, "RGB")
    imagenet_default = size is None and (dataset == "imagenet" or preprocessing == "Res256Crop224")
    if size is None and dataset is not None and not imagenet_default:
        size = _SIZE[dataset]
    arrays = []
    for path, _ in items:
        array = _read_image(path, mode, size, imagenet_default, transform)
        if arrays and array.shape != arrays[0].shape:
            raise ValueError(f"image {str(path)!r} is {array.shape[1]}x{array.shape[0]} but {str(items[0][0])!r} is "
                             f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; pass `size` (or `dataset`) to resize them")
        arrays.append(array)
    x = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy()).to(dtype)
    y = torch.tensor([label for _, label in items], dtype=torch.long)
    return ImageFolderData(x, y, dict(sorted(labels.items(), key=lambda kv: kv[1])), [str(p) for p, _ in items])


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle CIFAR batch files (dicts of lists and numpy arrays) without running other code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
                ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


_ROBUSTBENCH_FILES = {"cifar10": ("cifar-10-batches-py", "test_batch", "labels"),
                      "cifar100": ("cifar-100-python", "test", "fine_labels")}
_ROBUSTBENCH_META = {"cifar10": ("batches.meta", "label_names"), "cifar100": ("meta", "fine_label_names")}


def _unpickle_arrays(path: Path) -> Dict[str, Any]:
    with open(path, "rb") as handle:
        entry = _ArrayUnpickler(handle, encoding="latin1").load()
    if not isinstance(entry, dict):
        raise pickle.UnpicklingError(f"expected a dict, got {type(entry).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _robustbench_layout(data_dir: Path, dataset: str) -> Optional[Path]:
    """The file/folder RobustBench's loader reads under ``data_dir``, if present."""
    if dataset in _ROBUSTBENCH_FILES:
        sub, name, _ = _ROBUSTBENCH_FILES[dataset]
        path = data_dir / sub / name
        return path if path.is_file() else None
    if dataset == "imagenet":
        return data_dir / "val" if (data_dir / "val").is_dir() else None
    return None


def robustbench_folder(data_dir: Union[str, Path], *, dataset: str, n: Optional[int] = None,
                       dtype: torch.dtype = torch.float32,
                       preprocessing: Optional[Union[str, Callable]] = None) -> ImageFolderData:
    """The test images RobustBench's ``load_clean_dataset`` reads from ``data_dir``, offline.

    CIFAR-10: ``data_dir/cifar-10-batches-py/test_batch``; CIFAR-100: ``data_dir/cifar-100-python/test``
    (the python pickle format of the official archives, decoded as torchvision does: the first ``n``
    rows, pixel / 255, no checksum, no download). ImageNet: ``data_dir/val/<wnid>/<file>`` for the 5000
    files RobustBench lists in ``robustbench/helper_files/imagenet_test_image_ids.txt``, in that order,
    with ``preprocessing`` (default RobustBench's 'Res256Crop224'; pass the model's own, see
    :func:`freqplug.compat.model_preprocessing`, as RobustBench's ``benchmark`` does).

    Args:
        data_dir: the folder passed to RobustBench as ``data_dir``.
        dataset: ``"cifar10"``, ``"cifar100"`` or ``"imagenet"``.
        n: first ``n`` images (default: all; ImageNet at most 5000).
        dtype: floating dtype of ``x``.
        preprocessing: ImageNet only: see :func:`image_folder` (CIFAR batches are read as stored, as
            RobustBench's ToTensor does).

    Returns:
        :class:`ImageFolderData`; ``class_to_index`` maps the dataset's class names to labels.
    """
    data_dir = Path(data_dir)
    if dataset not in ("cifar10", "cifar100", "imagenet"):
        raise ValueError(f"`dataset` must be 'cifar10', 'cifar100' or 'imagenet' for a RobustBench folder, got "
                         f"{dataset!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"`n` must be a positive int or None, got {n!r}")
    if preprocessing is not None and dataset != "imagenet":
        raise ValueError(f"`preprocessing` applies to RobustBench's ImageNet folder (image files); {dataset} test "
                         f"batches are read as stored (RobustBench's ToTensor), got preprocessing={preprocessing!r}")
    transform = _preprocessing_transform(preprocessing)
    path = _robustbench_layout(data_dir, dataset)
    names = class_names(dataset)
    if path is None:
        expected = ("val/<wnid>/<file>" if dataset == "imagenet"
                    else "/".join(_ROBUSTBENCH_FILES[dataset][:2]))
        raise ValueError(f"`data_dir` {str(data_dir)!r} has no {expected} (RobustBench's {dataset} layout)")
    if dataset == "imagenet":
        ids_file = _package_file("robustbench", "helper_files", "imagenet_test_image_ids.txt")
        if ids_file is None:
            raise ModuleNotFoundError("reading RobustBench's ImageNet folder needs the robustbench package (its list "
                                      "of the 5000 test images); install it or use `image_folder`")
        ids = [line.strip() for line in ids_file.read_text().splitlines() if line.strip()][:n]
        index = {wnid: i for i, wnid in enumerate(names)}
        arrays, labels, files = [], [], []
        for entry in ids:
            file = path / entry
            if not file.is_file():
                raise ValueError(f"RobustBench's ImageNet test image {entry!r} is missing: expected {str(file)!r}")
            arrays.append(_read_image(file, "RGB", None, True, transform))
            labels.append(index[entry.split("/")[0]])
            files.append(str(file))
        x = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy()).to(dtype)
        return ImageFolderData(x, torch.tensor(labels, dtype=torch.long), dict(index), files)
    label_key = _ROBUSTBENCH_FILES[dataset][2]
    meta_name, names_key = _ROBUSTBENCH_META[dataset]
    meta = path.parent / meta_name
    if meta.is_file():  # the archive's own class names must be the list the labels are read against
        try:
            stored = [n.decode() if isinstance(n, bytes) else str(n) for n in _unpickle_arrays(meta)[names_key]]
        except Exception as error:
            raise ValueError(f"cannot read the class names of {str(meta)!r} "
                             f"({type(error).__name__}: {error})") from None
        if [_normalise(n) for n in stored] != [_normalise(n) for n in names]:
            raise ValueError(f"{str(meta)!r} lists the classes {stored[:5]}..., not {dataset}'s {list(names[:5])}...: "
                             f"not a RobustBench {dataset} folder")
    try:
        entry = _unpickle_arrays(path)
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except Exception as error:
        raise ValueError(f"cannot read {str(path)!r} as a {dataset} batch file (python pickle format of the "
                         f"official archive: {type(error).__name__}: {' '.join(str(error).split())[:200]})") from None
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() >= len(names))):
        raise ValueError(f"{str(path)!r}: {labels.shape[0]} labels for {data.shape[0]} images, or labels outside "
                         f"0..{len(names) - 1}")
    data, labels = data[:n], labels[:n]
    x = (torch.from_numpy(data.copy()).to(torch.float32) / 255).to(dtype)
    return ImageFolderData(x, torch.from_numpy(labels.copy()), {name: i for i, name in enumerate(names)},
                           [f"{path}#{row}" for row in range(data.shape[0])])


class LoadedData(NamedTuple):
    """Images and labels from :func:`load_data`, with a JSON-able record of where they came from.

    Attributes:
        x: images (N, C, H, W) in [0, 1]; y: labels (N,) int64.
        source: ``{"kind": "sample_images" | "image_folder" | "robustbench_folder", "dataset", "path",
            "n_examples", "class_to_index"}`` (record it with the results, e.g. metrics.json).
    """

    x: torch.Tensor
    y: torch.Tensor
    source: Dict[str, Any]


def load_data(data_dir: Optional[Union[str, Path]] = None, *, dataset: str = "cifar10", n: Optional[int] = None,
              classes: Optional[Union[Mapping[str, int], Sequence[str]]] = None,
              dtype: torch.dtype = torch.float32, preprocessing: Optional[Union[str, Callable]] = None) -> LoadedData:
    """The images ``freqplug profile --data-dir DIR --dataset D --n-examples N`` reads, for Python users.

    ``data_dir=None``: the 20 embedded sample images of the dataset (:func:`freqplug.data.sample_images`,
    the first ``n``). A folder in RobustBench's layout (see :func:`robustbench_folder`): its test images.
    Otherwise a folder of class sub-folders (see :func:`image_folder`, labels by folder NAME).

    Args:
        data_dir: see above.
        dataset: one of ``"cifar10"``, ``"cifar100"``, ``"imagenet"``, ``"mnist"``, ``"fashion_mnist"``.
        n: number of images (default: all sample images; 100 from ``data_dir``).
        classes: explicit ``{folder name: label}`` mapping for class sub-folders.
        dtype: floating dtype of ``x``.
        preprocessing: how image files are turned into tensors (see :func:`image_folder`): a RobustBench
            name, ``"timm:<name>"`` or a callable; ``freqplug profile`` passes the RobustBench model's own
            (:func:`freqplug.models.loading.data_preprocessing`). The sample images and CIFAR batch files are used as
            stored (CIFAR: RobustBench's ToTensor); ``preprocessing`` must then be None.

    Returns:
        :class:`LoadedData` ``(x, y, source)``.
    """
    from . import sample_images

    if dataset not in _SIZE:
        raise ValueError(f"`dataset` must be one of {sorted(_SIZE)}, got {dataset!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"`n` must be a positive int or None, got {n!r}")
    if data_dir is None:
        if classes is not None:
            raise ValueError("`classes` applies to class sub-folders of `data_dir`; the sample images are labelled")
        if preprocessing is not None:
            raise ValueError(f"`preprocessing` applies to image files in `data_dir`; the embedded sample images are "
                             f"used as stored, got preprocessing={preprocessing!r}")
        x, y = sample_images(dataset, dtype=dtype)
        return LoadedData(x[:n], y[:n], {"kind": "sample_images", "dataset": dataset, "path": None,
                                         "n_examples": int(x[:n].shape[0]), "available": int(x.shape[0])})
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"`data_dir` {str(data_dir)!r} is not a folder")
    n = 100 if n is None else n
    if classes is None and _robustbench_layout(data_dir, dataset) is not None:
        found = robustbench_folder(data_dir, dataset=dataset, n=n, dtype=dtype, preprocessing=preprocessing)
        kind = "robustbench_folder"
    else:
        try:
            found = image_folder(data_dir, dataset=dataset, classes=classes, n=n, dtype=dtype,
                                 preprocessing=preprocessing)
            kind = "image_folder"
        except _NoClassFolders as error:
            layout = {"cifar10": "cifar-10-batches-py/test_batch", "cifar100": "cifar-100-python/test",
                      "imagenet": "val/<wnid>/<file>"}.get(dataset)
            if layout is None:
                raise
            raise ValueError(f"{error}, and not RobustBench's {dataset} layout ({layout})") from None
    source = {"kind": kind, "dataset": dataset, "path": str(data_dir.resolve()),
              "n_examples": int(found.x.shape[0]), "class_to_index": found.class_to_index}
    if preprocessing is not None or dataset == "imagenet":
        source["preprocessing"] = ("callable" if callable(preprocessing)
                                   else preprocessing or ("Res256Crop224" if dataset == "imagenet" else None))
    return LoadedData(found.x, found.y, source)
