"""RobustBench from a registry install, with an actionable error when a checkpoint is missing offline.

``robustbench`` 1.1.1 imports the official ``autoattack`` package, which is not on the
package registry; every entry point here first calls
:func:`freqplug.compat.install_autoattack` so that ``import robustbench`` works. robustbench
is imported lazily (it pulls in timm, gdown and requests).

This module was ``freqplug.eval.robustbench`` until 0.x; the old names still resolve there
for one release with a ``DeprecationWarning``.
"""

from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path
from typing import List, Optional, Tuple, Union

from torch import nn

__all__ = ["CheckpointNotFoundError", "benchmark", "checkpoint_paths", "load_model", "model_names"]

#: Environment variables that switch :func:`load_model` to offline mode when set to 1/true.
OFFLINE_ENV = ("FREQPLUG_OFFLINE", "HF_HUB_OFFLINE")


class CheckpointNotFoundError(FileNotFoundError):
    """A RobustBench checkpoint is not on disk and cannot be downloaded (offline)."""


def _robustbench():
    from .autoattack import install_autoattack

    install_autoattack()
    import robustbench.model_zoo  # noqa: F401  (model_dicts)
    import robustbench.utils

    return robustbench


def _enums(dataset, threat_model, threat_name: str = "threat_model"):
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        dataset_ = BenchmarkDataset(dataset)
    except ValueError:
        choices = [d.value for d in BenchmarkDataset]
        raise ValueError(f"`dataset` must be one of {choices}, got {dataset!r}") from None
    try:
        threat_ = ThreatModel(threat_model)
    except ValueError:
        choices = [t.value for t in ThreatModel]
        raise ValueError(f"`{threat_name}` must be one of {choices}, got {threat_model!r}") from None
    # RobustBench keeps the 3D-corruption models in its `corruptions` folder.
    threat_ = ThreatModel(threat_.value.replace("_3d", ""))
    return dataset_, threat_


def model_names(dataset: str = "cifar10", threat_model: str = "Linf") -> List[str]:
    """Names of the RobustBench model zoo for a dataset and threat model (no network)."""
    _robustbench()
    from robustbench.model_zoo import model_dicts

    dataset_, threat_ = _enums(dataset, threat_model)
    return list(model_dicts[dataset_].get(threat_, {}))


def _zoo_entry(model_name: str, dataset_, threat_):
    from robustbench.model_zoo import model_dicts

    if not isinstance(model_name, str) or not model_name:
        raise TypeError(f"`model_name` must be a non-empty str, got {model_name!r}")
    models = model_dicts[dataset_].get(threat_, {})
    if model_name not in models:
        close = difflib.get_close_matches(model_name, list(models), n=3)
        hint = f"; did you mean {close}?" if close else f"; known names: {sorted(models)[:8]}..."
        raise ValueError(
            f"`model_name` {model_name!r} is not in the RobustBench model zoo for dataset "
            f"{dataset_.value!r}, threat model {threat_.value!r}{hint}"
        )
    return models[model_name]


def checkpoint_paths(model_name: str, model_dir: Union[str, Path] = "./models", dataset: str = "cifar10",
                     threat_model: str = "Linf") -> Tuple[List[Path], List[str]]:
    """Where ``robustbench.utils.load_model`` reads a model's checkpoint(s), and their Google Drive ids.

    Returns:
        ``(paths, gdrive_ids)``: ``model_dir/<dataset>/<threat_model>/<model_name>.pt`` (ensembles:
        ``<model_name>.pt_m0.pt``, ``_m1.pt``, ...), absolute, and the matching download ids.
    """
    _robustbench()
    dataset_, threat_ = _enums(dataset, threat_model)
    entry = _zoo_entry(model_name, dataset_, threat_)
    folder = (Path(model_dir) / dataset_.value / threat_.value).resolve()
    base = folder / f"{model_name}.pt"
    ids = entry.get("gdrive_id")
    if isinstance(ids, list):
        return [Path(f"{base}_m{i}.pt") for i in range(len(ids))], list(ids)
    return [base], [ids]


def _offline_from_env() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes") for name in OFFLINE_ENV)


def _missing_message(model_name, dataset_, threat_, missing: List[Path], ids: List[str], reason: str) -> str:
    folder = missing[0].parent
    files = ", ".join(p.name for p in missing)
    links = ", ".join(f"https://drive.google.com/uc?id={i}" for i in ids if i)
    return (
        f"RobustBench checkpoint of {model_name!r} ({dataset_.value}, {threat_.value}) not found and {reason}.\n"
        f"Put the file(s) {files} into the folder {folder}\n"
        f"(expected path: {missing[0]}). Get it on a machine with network access with "
        f"`robustbench.utils.load_model({model_name!r}, model_dir=..., dataset={dataset_.value!r}, "
        f"threat_model={threat_.value!r})` and copy the .pt file over"
        + (f", or download it from {links}" if links else "")
        + ". Then call load_model again with the same model_dir."
    )


def load_model(model_name: str, model_dir: Union[str, Path] = "./models", dataset: str = "cifar10",
               threat_model: str = "Linf", custom_checkpoint: str = "", norm: Optional[str] = None, *,
               download: Optional[bool] = None) -> nn.Module:
    """``robustbench.utils.load_model`` that works offline and says what to do when it cannot.

    Loads ``model_name`` of the RobustBench model zoo from
    ``model_dir/<dataset>/<threat_model>/<model_name>.pt`` (RobustBench's layout). When the
    file is there nothing is downloaded. When it is missing:

    * ``download=False`` (or the environment variable ``FREQPLUG_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``
      with ``download=None``): raise :class:`CheckpointNotFoundError` naming the file and the
      folder to put it in, without touching the network;
    * otherwise robustbench downloads it; if that fails (no network), the same error is raised
      from the download error.

    Args:
        model_name: name in the model zoo (see :func:`model_names`).
        model_dir: base folder of checkpoints (RobustBench default ``./models``).
        dataset: ``"cifar10"``, ``"cifar100"`` or ``"imagenet"``.
        threat_model: ``"Linf"``, ``"L2"``, ``"corruptions"`` or ``"corruptions_3d"``.
        download: see above; ``None`` = download unless an offline variable is set.
        custom_checkpoint: passed to robustbench (timm models only).
        norm: deprecated alias of ``threat_model`` that overrides it, as in RobustBench (warns
            ``DeprecationWarning``).

    Returns:
        The model in eval mode, taking images in [0, 1].
    """
    _robustbench()
    import robustbench.utils as rb_utils
    import timm

    if norm is not None:
        # RobustBench's own rule: a given `norm` overrides `threat_model`, with this warning.
        warnings.warn("`norm` has been deprecated and will be removed in a future version.", DeprecationWarning,
                      stacklevel=2)
        threat_model = norm
    dataset_, threat_ = _enums(dataset, threat_model, "threat_model" if norm is None else "norm")
    if download is None:
        download = not _offline_from_env()
    elif not isinstance(download, bool):
        raise TypeError(f"`download` must be a bool or None, got {type(download).__name__}")
    if not isinstance(model_dir, (str, Path)):
        raise TypeError(f"`model_dir` must be a str or pathlib.Path, got {type(model_dir).__name__}")

    timm_name = f"{model_name.lower().replace('-', '_')}_{dataset_.value.lower()}_{threat_.value.lower()}" \
        if isinstance(model_name, str) else ""
    if isinstance(model_name, str) and timm.is_model(timm_name):
        # Weights come from the Hugging Face hub through timm (its cache, not model_dir).
        try:
            return rb_utils.load_model(model_name, model_dir=model_dir, dataset=dataset_.value,
                                       threat_model=threat_.value, custom_checkpoint=custom_checkpoint)
        except Exception as error:  # network failures surface as many exception types
            raise CheckpointNotFoundError(
                f"RobustBench model {model_name!r} is the timm model {timm_name!r}, whose weights are downloaded "
                f"from the Hugging Face hub into its cache, and loading failed ({type(error).__name__}: {error}). "
                f"Download it once with network access (timm.create_model({timm_name!r}, pretrained=True)) "
                f"so that it is in the Hugging Face cache, then set HF_HUB_OFFLINE=1."
            ) from error

    paths, ids = checkpoint_paths(model_name, model_dir, dataset_.value, threat_.value)
    missing = [p for p in paths if not p.is_file()]
    if missing and not download:
        raise CheckpointNotFoundError(_missing_message(model_name, dataset_, threat_, missing, ids,
                                                       "downloads are off (offline mode)"))
    existed = {p: p.exists() for p in paths}
    try:
        return rb_utils.load_model(model_name, model_dir=model_dir, dataset=dataset_.value,
                                   threat_model=threat_.value, custom_checkpoint=custom_checkpoint)
    except Exception as error:
        still_missing = [p for p in paths if not p.is_file() or (not existed[p] and p.stat().st_size == 0)]
        if not missing:
            raise  # the checkpoint was there: a genuine loading error, not a download problem
        for path in still_missing:  # drop empty files a failed download may leave behind
            if path.is_file() and not existed[path] and path.stat().st_size == 0:
                path.unlink()
        raise CheckpointNotFoundError(_missing_message(
            model_name, dataset_, threat_, missing, ids,
            f"could not be downloaded ({type(error).__name__}: {error})")) from error


def benchmark(model: nn.Module, **kwargs):
    """``robustbench.eval.benchmark`` with the AutoAttack compatibility layer installed.

    Same arguments and return value ``(clean_accuracy, robust_accuracy)``. Note that
    RobustBench's CIFAR loaders always download the dataset; its ImageNet loader reads
    ``data_dir/val/<wnid>/<file>`` for the 5000 files listed in
    ``robustbench/helper_files/imagenet_test_image_ids.txt`` and never downloads.
    """
    _robustbench()
    import robustbench.eval

    return robustbench.eval.benchmark(model, **kwargs)
