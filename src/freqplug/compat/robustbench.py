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
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import torch
from torch import nn

__all__ = ["CheckpointNotFoundError", "benchmark", "checkpoint_paths", "load_model", "model_names",
           "model_preprocessing"]

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


def model_preprocessing(model_name: str, dataset: str = "imagenet", threat_model: str = "Linf") -> Optional[str]:
    """The image preprocessing RobustBench's ``benchmark`` uses for a model-zoo entry (no network, no weights).

    ``robustbench.data.get_preprocessing`` without an explicit ``preprocessing``: CIFAR images are used
    as stored (None, ToTensor); ImageNet entries registered in timm (XCiT) use timm's config of the model
    (returned as ``"timm:<timm name>"``); the others their ``'preprocessing'`` entry in the model zoo
    (``'Res256Crop224'``, ``'Crop288'``, ``'BicubicRes256Crop224'``, ...). Pass the result as
    ``preprocessing=`` to :func:`freqplug.data.load_data` / ``image_folder`` / ``robustbench_folder``.

    Args:
        model_name: model-zoo name.
        dataset: ``"cifar10"``, ``"cifar100"`` or ``"imagenet"``.
        threat_model: ``"Linf"``, ``"L2"``, ``"corruptions"`` or ``"corruptions_3d"``.

    Returns:
        A name in :data:`freqplug.data.ROBUSTBENCH_PREPROCESSINGS`, ``"timm:<name>"``, or None (CIFAR).
    """
    _robustbench()
    import timm

    dataset_, zoo_threat = _enums(dataset, threat_model)
    threat_ = type(zoo_threat)(threat_model)
    if dataset_.value != "imagenet":
        _zoo_entry(model_name, dataset_, zoo_threat)  # checks the name
        return None
    timm_name = _timm_name(model_name, dataset_, threat_) if isinstance(model_name, str) else ""
    if timm_name and timm.is_model(timm_name):
        return f"timm:{timm_name}"
    return _zoo_entry(model_name, dataset_, zoo_threat)["preprocessing"]


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


def _timm_name(model_name: str, dataset_, threat_) -> str:
    """The timm name robustbench's ``load_model`` tries first (its weights come through timm, not model_dir)."""
    return f"{model_name.lower().replace('-', '_')}_{dataset_.value.lower()}_{threat_.value.lower()}"


def _builds_pretrained(model_name: str, dataset_) -> bool:
    """RobustBench returns ImageNet ``Standard*`` models as built (torchvision weights), never reading model_dir."""
    return dataset_.value == "imagenet" and "Standard" in model_name


def _torch_hub_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` (torchvision's and timm's weights) keeps ``url``."""
    import torch.hub
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _hub_message(model_name, dataset_, threat_, path: Path, url: str, reason: str) -> str:
    return (
        f"RobustBench model {model_name!r} ({dataset_.value}, {threat_.value}) loads its weights from torch's hub "
        f"cache, and {path} {reason}. Put the file there (the exact path torch.hub reads; its folder is "
        f"torch.hub.get_dir()/checkpoints, set by $TORCH_HOME), e.g. downloaded from {url} on a machine with "
        f"network access, then call load_model again."
    )


@contextmanager
def _torch_hub_downloads(allowed: bool, model_name, dataset_, threat_) -> Iterator[None]:
    """Offline (``allowed=False``): torch.hub refuses to download, naming the file it looked for.

    torchvision and timm fetch weights through ``torch.hub.load_state_dict_from_url``, which reads
    ``torch.hub.get_dir()/checkpoints/<file>`` and downloads only when that file is missing; the download
    is replaced for the duration of the call (not thread-safe with concurrent downloads elsewhere).
    """
    if allowed:
        yield
        return
    import torch.hub

    real = torch.hub.download_url_to_file

    def refuse(url, dst, *args, **kwargs):
        raise CheckpointNotFoundError(_hub_message(model_name, dataset_, threat_, Path(dst), url,
                                                   "is missing and downloads are off (offline mode)"))

    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = real


def _load_timm_entry(model_name, model_dir, dataset_, threat_, custom_checkpoint, download: bool) -> nn.Module:
    """A RobustBench entry registered in timm (XCiT, DeiT, AlexNet): weights from timm's pretrained source."""
    import robustbench.utils as rb_utils
    from timm.models import get_pretrained_cfg

    timm_name = _timm_name(model_name, dataset_, threat_)
    cfg = get_pretrained_cfg(timm_name)
    url = getattr(cfg, "url", None) or ""
    if not download:
        if getattr(cfg, "hf_hub_id", None):
            # timm prefers the Hugging Face hub when an id is set; its client may call the network even
            # with a cached file unless HF_HUB_OFFLINE is set before it is imported.
            raise CheckpointNotFoundError(
                f"RobustBench model {model_name!r} is the timm model {timm_name!r}, whose weights come from the "
                f"Hugging Face hub ({cfg.hf_hub_id}); freqplug cannot load it with download=False. Run "
                f"timm.create_model({timm_name!r}, pretrained=True) once with network access, then start Python "
                f"with HF_HUB_OFFLINE=1 and call load_model with download=True.")
        if url:
            path = _torch_hub_file(url)
            if not path.is_file():
                raise CheckpointNotFoundError(_hub_message(model_name, dataset_, threat_, path, url,
                                                           "is missing and downloads are off (offline mode)"))
    try:
        with _torch_hub_downloads(download, model_name, dataset_, threat_):
            return rb_utils.load_model(model_name, model_dir=model_dir, dataset=dataset_.value,
                                       threat_model=threat_.value, custom_checkpoint=custom_checkpoint)
    except CheckpointNotFoundError:
        raise
    except Exception as error:  # network failures surface as many exception types
        where = f"torch's hub cache {_torch_hub_file(url)}" if url else "timm's pretrained source"
        raise CheckpointNotFoundError(
            f"RobustBench model {model_name!r} is the timm model {timm_name!r}, whose weights are read from {where}, "
            f"and loading failed ({type(error).__name__}: {error}). Get them once with network access "
            f"(timm.create_model({timm_name!r}, pretrained=True)) or put the file there; with it in place, "
            f"load_model(..., download=False) makes no network call."
        ) from error


def load_model(model_name: str, model_dir: Union[str, Path] = "./models", dataset: str = "cifar10",
               threat_model: str = "Linf", custom_checkpoint: str = "", norm: Optional[str] = None, *,
               download: Optional[bool] = None) -> nn.Module:
    """``robustbench.utils.load_model`` that works offline and says what to do when it cannot.

    Loads ``model_name`` of the RobustBench model zoo from
    ``model_dir/<dataset>/<threat_model>/<model_name>.pt`` (RobustBench's layout). When the
    file is there nothing is downloaded. When it is missing:

    * ``download=False`` (or the environment variable ``FREQPLUG_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``
      with ``download=None``): raise :class:`CheckpointNotFoundError` naming the exact file robustbench
      reads and the folder to put it in, without any network call;
    * otherwise robustbench downloads it; if that fails (no network), the same error is raised
      from the download error.

    Where robustbench reads the weights: ``model_dir/<dataset>/<threat_model>/<model_name>.pt`` (ensembles
    ``<model_name>.pt_m0.pt``, ...; see :func:`checkpoint_paths`) for most entries; torch's hub cache
    ``torch.hub.get_dir()/checkpoints/<file of the url>`` for the entries registered in timm (XCiT, DeiT,
    AlexNet: ``timm.is_model(<name>_<dataset>_<threat_model>)``) and for ImageNet ``Standard_R50``
    (torchvision's ResNet-50 weights); these never read ``model_dir``. Offline, a weights file that
    an architecture would fetch while it is built is refused the same way.

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

    if isinstance(model_name, str) and timm.is_model(_timm_name(model_name, dataset_, threat_)):
        return _load_timm_entry(model_name, model_dir, dataset_, threat_, custom_checkpoint, download)

    paths, ids = checkpoint_paths(model_name, model_dir, dataset_.value, threat_.value)
    if _builds_pretrained(model_name, dataset_):
        paths, ids = [], []  # robustbench never reads model_dir for these
    missing = [p for p in paths if not p.is_file()]
    if missing and not download:
        raise CheckpointNotFoundError(_missing_message(model_name, dataset_, threat_, missing, ids,
                                                       "downloads are off (offline mode)"))
    existed = {p: p.exists() for p in paths}
    try:
        # Some architectures load pretrained weights while they are built (ImageNet `Standard_R50`:
        # torchvision's resnet50(pretrained=True)) from torch's hub cache; offline, a missing one is refused.
        with _torch_hub_downloads(download, model_name, dataset_, threat_):
            return rb_utils.load_model(model_name, model_dir=model_dir, dataset=dataset_.value,
                                       threat_model=threat_.value, custom_checkpoint=custom_checkpoint)
    except CheckpointNotFoundError:
        raise
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


def benchmark(model: nn.Module, n_examples: int = 10000, dataset: str = "cifar10", threat_model: str = "Linf",
              to_disk: bool = False, model_name: Optional[str] = None, data_dir: Union[str, Path] = "./data",
              corruptions_data_dir: Optional[str] = None, device=None, batch_size: int = 32,
              eps: Optional[float] = None, log_path: Optional[str] = None, preprocessing=None,
              aa_state_path: Optional[Union[str, Path]] = None, *, backend: Optional[str] = None):
    """``robustbench.eval.benchmark`` (same arguments, same order), resumable with every AutoAttack backend.

    For the Linf and L2 threat models this is robustbench's benchmark step by step (its
    ``get_preprocessing``, ``load_clean_dataset``, ``clean_accuracy`` and ``update_json``, the same
    printed lines) with AutoAttack version 'standard' run by :class:`freqplug.eval.AutoAttackRunner`
    on ``backend``. Robust accuracy (Croce & Hein 2020) = mean over the ``n_examples`` points of
    ``1[f(x_i) = y_i and f(x_adv_i) = y_i for every attack]``; with ``aa_state_path`` it is read from the
    state file, as robustbench does. Corruption threat models are passed to robustbench unchanged.

    Why not robustbench's own function: with the official AutoAttack package installed,
    ``robustbench.eval.benchmark(..., aa_state_path=...)`` computes ``mean()`` of the bool flags
    the official ``EvaluationState.from_disk`` returns (a RuntimeError), and the official state file
    stores the attack set as a Python repr that its own ``from_disk`` never matches, so a resume
    always fails. freqplug's state file has the same format and reads both forms.

    Differences from robustbench: a CIFAR ``data_dir`` already in RobustBench's layout
    (``cifar-10-batches-py/test_batch``, ``cifar-100-python/test``) is read offline by
    :func:`freqplug.data.robustbench_folder` (the same tensors; robustbench's loader checks the
    archive's md5 sums and downloads when they differ); ``device`` defaults to the CPU and the
    model is moved there, as robustbench does.

    Cost: AutoAttack 'standard' spends up to about 7.9e3 model evaluations per point on a 10-class
    dataset (APGD-CE 103, APGD-T 919, FAB-T 1837, Square 5003; the runner prints its estimate first),
    fewer as points are broken; resuming from a state file skips the attacks already run.

    Args:
        model: classifier on images in [0, 1] (eval mode, as robustbench warns).
        n_examples: first ``n_examples`` test images.
        dataset: ``"cifar10"``, ``"cifar100"`` or ``"imagenet"``.
        threat_model: ``"Linf"``, ``"L2"``, ``"corruptions"`` or ``"corruptions_3d"``.
        to_disk: write the result into robustbench's model-info json (needs ``model_name``).
        model_name: model-zoo name (ImageNet preprocessing, ``to_disk``).
        data_dir: robustbench's data folder.
        corruptions_data_dir: folder of the corrupted datasets (corruption threat models).
        device: torch device (default CPU).
        batch_size: points per batch.
        eps: attack radius (required for Linf and L2).
        log_path: AutoAttack's log file.
        preprocessing: robustbench preprocessing name or callable (ImageNet).
        aa_state_path: resumable state file: created when absent, resumed when present.
        backend: ``"autoattack"`` (the official package), ``"pyautoattack"``, ``"torchattacks"``, or
            ``None``/``"auto"`` (the first available, in that order).

    Returns:
        ``(clean_accuracy, robust_accuracy)`` as floats in [0, 1].
    """
    _robustbench()
    import robustbench.eval
    from robustbench.data import get_preprocessing, load_clean_dataset
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import clean_accuracy, update_json

    from ..eval.autoattack_runner import BACKENDS, EvaluationState
    from .autoattack import AutoAttack

    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if backend is not None and backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"`backend` must be None, 'auto' or one of {list(BACKENDS)}, got {backend!r}")
    dataset_, _ = _enums(dataset, threat_model)  # checks both names
    threat_ = ThreatModel(threat_model)  # the 3D corruptions stay themselves here (not the zoo folder)
    if threat_ not in (ThreatModel.Linf, ThreatModel.L2):
        if backend is not None:
            raise ValueError(f"`backend` applies to the Linf and L2 threat models (AutoAttack), not to "
                             f"{threat_.value!r}")
        return robustbench.eval.benchmark(
            model, n_examples=n_examples, dataset=dataset_.value, threat_model=threat_.value, to_disk=to_disk,
            model_name=model_name, data_dir=data_dir, corruptions_data_dir=corruptions_data_dir, device=device,
            batch_size=batch_size, eps=eps, log_path=log_path, preprocessing=preprocessing,
            aa_state_path=aa_state_path)
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 1:
        raise ValueError(f"`n_examples` must be a positive int, got {n_examples!r}")
    if eps is None:
        raise ValueError("If the threat model is L2 or Linf, `eps` must be specified.")  # robustbench's message
    if to_disk and model_name is None:
        raise ValueError("If `to_disk` is True, `model_name` should be specified.")
    if aa_state_path is not None and not isinstance(aa_state_path, (str, Path)):
        raise TypeError(f"`aa_state_path` must be a str, a pathlib.Path or None, got {type(aa_state_path).__name__}")
    if model.training:
        warnings.warn(Warning("The given model is *not* in eval mode."))

    device = device or torch.device("cpu")
    model = model.to(device)
    if (dataset_ != BenchmarkDataset.imagenet and preprocessing is None
            and _cifar_layout(Path(data_dir), dataset_.value)):
        from ..data import robustbench_folder

        found = robustbench_folder(data_dir, dataset=dataset_.value, n=n_examples)
        x, y = found.x, found.y
    else:
        prepr = get_preprocessing(dataset_, threat_, model_name, preprocessing)
        x, y = load_clean_dataset(dataset_, n_examples, str(data_dir), prepr)
    accuracy = clean_accuracy(model, x, y, batch_size=batch_size, device=device)
    print(f"Clean accuracy: {accuracy:.2%}")

    adversary = AutoAttack(model, norm=threat_.value, eps=eps, version="standard", device=device,
                           log_path=log_path, backend=backend or "auto")
    state_path = None if aa_state_path is None else Path(aa_state_path)
    x_adv = adversary.run_standard_evaluation(x, y, bs=batch_size, state_path=state_path)
    if state_path is None:
        adv_accuracy = clean_accuracy(model, x_adv, y, batch_size=batch_size, device=device)
    else:
        flags = EvaluationState.from_disk(state_path).robust_flags
        adv_accuracy = flags.float().mean().item()  # robustbench's bool .mean() is the crash this fixes
    print(f"Adversarial accuracy: {adv_accuracy:.2%}")
    if to_disk:
        update_json(dataset_, threat_, model_name, accuracy, adv_accuracy, eps, {})
    return accuracy, adv_accuracy


def _cifar_layout(data_dir: Path, dataset: str) -> bool:
    sub, name = {"cifar10": ("cifar-10-batches-py", "test_batch"), "cifar100": ("cifar-100-python", "test")}[dataset]
    return (data_dir / sub / name).is_file()
