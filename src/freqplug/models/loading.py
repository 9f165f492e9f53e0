"""Load a model from a spec string: the one loader behind ``freqplug profile --model`` and Python.

A spec is one of

* ``"embedded"``: the pretrained CIFAR-10 ResNet-18 of :func:`freqplug.models.cifar10_resnet18`;
* a path to a file: a TorchScript archive (``torch.jit.save``) or a pickled ``nn.Module``
  (``torch.save(model)``; unpickling runs code from the file, so load only files you trust);
* ``"module:callable"`` (also ``"module:Class.attribute"`` and ``"path/to/file.py:callable"``): the
  callable is called without arguments and returns the model (an ``nn.Module`` instead of a
  callable is used as it is). The module is importable from the current folder, as with
  ``python -m``;
* a RobustBench model-zoo name (``"Standard"``, ``"Wong2020Fast"``, ...), loaded from
  ``model_dir/<dataset>/<threat_model>/<name>.pt`` by freqplug's RobustBench wrapper.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, NamedTuple, Optional, Union

import torch
from torch import nn

__all__ = ["DATASETS", "THREAT_MODELS", "LoadedModel", "data_preprocessing", "load_model_spec"]

#: Datasets of the model and data loaders (RobustBench's three plus the two 28x28 grey sets).
DATASETS = ("cifar10", "cifar100", "imagenet", "mnist", "fashion_mnist")

#: RobustBench's threat models (``robustbench.model_zoo.enums.ThreatModel``; a test keeps them equal).
#: Listed here so that ``freqplug --help`` need not import robustbench.
THREAT_MODELS = ("Linf", "L2", "corruptions", "corruptions_3d")


class LoadedModel(NamedTuple):
    """A model loaded by :func:`load_model_spec`.

    Attributes:
        name: short name for the report (``"embedded"``, the file stem, the spec, the zoo name).
        model: the ``nn.Module`` in eval mode.
        source: JSON-able record of where it came from (``{"kind", "spec", ...}``), for metrics.json.
    """

    name: str
    model: nn.Module
    source: Dict[str, Any]


def load_model_spec(spec: str, *, dataset: str = "cifar10", threat_model: str = "Linf",
                    model_dir: Union[str, Path] = "./models",
                    device: Optional[Union[str, torch.device]] = None) -> LoadedModel:
    """Load the model a spec string names (see the module docstring for the forms).

    The forms are tried in this order: ``"embedded"``, an existing file, ``module:callable`` (a spec
    with a colon), a RobustBench name. Nothing is downloaded unless the spec is a RobustBench name whose
    checkpoint is missing and downloads are allowed (``FREQPLUG_OFFLINE=1`` forbids them).

    Args:
        spec: the model spec.
        dataset: dataset the model classifies, one of :data:`DATASETS` (selects the RobustBench zoo;
            the embedded model needs ``"cifar10"``).
        threat_model: RobustBench threat model, one of :data:`THREAT_MODELS` (selects the zoo).
        model_dir: RobustBench checkpoint folder.
        device: move the model there (default: leave it where it was loaded, the CPU for files).

    Returns:
        :class:`LoadedModel` ``(name, model, source)``, the model in eval mode. torch's global (CPU) RNG is
        left as it was.

    Raises:
        ValueError: an unknown spec, a file that holds no module, a missing checkpoint offline
            (:class:`freqplug.eval.CheckpointNotFoundError`, a ``FileNotFoundError``), an import that fails.
        TypeError: ``spec`` is not a non-empty str, or the callable returns something else than a module.
    """
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise TypeError(f"`spec` must be a non-empty str (a model spec), got {spec!r}")
    spec = str(spec)
    if dataset not in DATASETS:
        raise ValueError(f"`dataset` must be one of {list(DATASETS)}, got {dataset!r}")
    if threat_model not in THREAT_MODELS:
        raise ValueError(f"`threat_model` must be one of RobustBench's threat models {list(THREAT_MODELS)}, "
                         f"got {threat_model!r}")
    # Building a model draws random initial weights (and a user's factory may seed): the caller's RNG stays as is.
    with torch.random.fork_rng(devices=[]):
        if spec == "embedded":
            loaded = _embedded(dataset)
        elif Path(spec).is_file():
            loaded = _from_file(Path(spec))
        elif ":" in spec:
            loaded = _from_callable(spec)
        else:
            loaded = _from_robustbench(spec, dataset, threat_model, model_dir)
    if device is not None:
        loaded.model.to(device)
    return loaded


def _embedded(dataset: str) -> LoadedModel:
    if dataset != "cifar10":
        raise ValueError(f"the embedded model is a CIFAR-10 classifier; `dataset` must be 'cifar10' for it, got "
                         f"{dataset!r} (or pass another model spec)")
    from . import cifar10_resnet18, pyautoattack_checkpoint_path

    return LoadedModel("embedded", cifar10_resnet18(),
                       {"kind": "embedded", "spec": "embedded", "checkpoint": str(pyautoattack_checkpoint_path())})


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _from_file(path: Path) -> LoadedModel:
    try:
        model = torch.jit.load(str(path), map_location="cpu")
        kind = "torchscript"
    except Exception:  # not a TorchScript archive: a pickled module (the user's own file)
        try:
            with _current_folder_importable():  # the pickled class may live in a module of the current folder
                model = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as error:
            raise ValueError(f"`spec`: cannot load model file {str(path)!r} as TorchScript or as a pickled "
                             f"torch.nn.Module ({type(error).__name__}: {_one_line(error)[:300]})") from None
        kind = "pickled_module"
    if not isinstance(model, nn.Module):
        hint = ("; a state_dict needs its architecture: pass 'my_module:build_model' (a callable returning the "
                "model with its weights loaded)") if isinstance(model, dict) else ""
        raise ValueError(f"`spec`: model file {str(path)!r} holds a {type(model).__name__}, not a "
                         f"torch.nn.Module{hint}")
    return LoadedModel(path.stem, model.eval(), {"kind": kind, "spec": str(path), "path": str(path.resolve())})


@contextmanager
def _current_folder_importable() -> Iterator[None]:
    """Put the current folder first on sys.path while importing, as ``python -m`` does."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _import_module(module_name: str, spec: str):
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"`spec` {spec!r}: no file {str(path.resolve())!r}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        with _current_folder_importable():
            module_spec.loader.exec_module(module)
        return module
    try:
        with _current_folder_importable():
            return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.split(".")[0] == error.name.split(".")[0]:
            raise ValueError(f"`spec` {spec!r}: no module named {module_name!r} in the current folder "
                             f"{os.getcwd()!r} or on sys.path (expected module:callable, e.g. "
                             "mynets:build_model for mynets.py in the current folder)") from None
        raise ValueError(f"`spec` {spec!r}: importing {module_name!r} failed: {type(error).__name__}: "
                         f"{_one_line(error)}") from error


def _from_callable(spec: str) -> LoadedModel:
    module_name, _, attribute = spec.rpartition(":")
    if not module_name or not attribute:
        raise ValueError(f"`spec` {spec!r} is not 'embedded', an existing file, or module:callable")
    module = _import_module(module_name, spec)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            close = difflib.get_close_matches(attribute, public, n=3)
            raise ValueError(f"`spec` {spec!r}: module {module_name!r} has no attribute {attribute!r}"
                             + (f" (did you mean {', '.join(close)}?)" if close else ""))
        target = getattr(target, part)
    if isinstance(target, nn.Module):
        model = target
    elif callable(target):
        try:
            with _current_folder_importable():
                model = target()
        except Exception as error:
            raise ValueError(f"`spec` {spec!r}: calling {attribute}() raised {type(error).__name__}: "
                             f"{_one_line(error)[:300]}") from error
    else:
        raise TypeError(f"`spec` {spec!r}: {attribute!r} is a {type(target).__name__}, not a callable or an "
                        "nn.Module")
    if not isinstance(model, nn.Module):
        raise TypeError(f"`spec` {spec!r}: {attribute}() returned a {type(model).__name__}, not a torch.nn.Module")
    source = {"kind": "callable", "spec": spec}
    origin = getattr(module, "__file__", None)
    if origin:
        source["file"] = str(Path(origin).resolve())
    return LoadedModel(spec, model.eval(), source)


def _robustbench_api():
    """RobustBench loading lives in freqplug.compat after the layering change, in freqplug.eval before it."""
    from .. import compat

    if hasattr(compat, "load_model") and hasattr(compat, "model_names"):
        return compat
    from .. import eval as eval_

    return eval_


def _from_robustbench(spec: str, dataset: str, threat_model: str, model_dir) -> LoadedModel:
    if dataset not in ("cifar10", "cifar100", "imagenet"):
        raise ValueError(f"`spec` {spec!r} is not 'embedded', an existing file, or module:callable, and RobustBench "
                         f"has no models for dataset {dataset!r}")
    api = _robustbench_api()
    known = api.model_names(dataset, threat_model)
    if spec not in known:
        close = difflib.get_close_matches(spec, known, n=3)
        raise ValueError(f"unknown model {spec!r}: not 'embedded', an existing file, module:callable, or a "
                         f"RobustBench model for dataset {dataset} and threat model {threat_model}"
                         + (f" (did you mean {', '.join(close)}?)" if close else ""))
    model = api.load_model(spec, model_dir=model_dir, dataset=dataset, threat_model=threat_model)
    source = {"kind": "robustbench", "spec": spec, "dataset": dataset, "threat_model": threat_model,
              "model_dir": str(Path(model_dir).resolve())}
    if hasattr(api, "model_preprocessing"):
        source["preprocessing"] = api.model_preprocessing(spec, dataset, threat_model)
    return LoadedModel(spec, model.eval(), source)


def data_preprocessing(models: Iterable[LoadedModel], dataset: str) -> Optional[str]:
    """The image preprocessing the loaded models need, as RobustBench's ``benchmark`` picks it.

    ImageNet models of RobustBench's zoo are evaluated on images preprocessed their own way
    (``source["preprocessing"]``, from :func:`freqplug.compat.model_preprocessing`: 'Crop288',
    'BicubicRes256Crop224', a timm config, ...); other models state none and take the default
    ('Res256Crop224'). One image tensor serves every model of a profile, so models that state
    different preprocessings are refused.

    Args:
        models: :class:`LoadedModel` items from :func:`load_model_spec`.
        dataset: the dataset of the images.

    Returns:
        The preprocessing to pass to :func:`freqplug.data.load_data` (None: the dataset's default).

    Raises:
        ValueError: two models state different preprocessings.
    """
    if dataset != "imagenet":
        return None
    stated = {item.name: item.source.get("preprocessing") for item in models}
    stated = {name: value for name, value in stated.items() if value is not None}
    if len(set(stated.values())) > 1:
        raise ValueError(f"the models preprocess ImageNet images differently ({stated}), but one profile uses one "
                         "image tensor for every model: profile them separately")
    return next(iter(stated.values()), None)
