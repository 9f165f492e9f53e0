"""The report's stage cache: ``<out>/cache/<model>/<stage>.pt``, one file per finished stage.

A cached result is reused only when its key matches, and the key is a content hash of everything the
result depends on: the model's state dict (:func:`freqplug._io.model_digest`: every entry's bytes, so
permuting two rows of a layer is another model), the images and labels (:func:`freqplug._io.digest`),
the stage's settings (and those of the stages it depends on), the seed, and the versions of
freqplug, torch and the metrics schema. Files hold only tensors and JSON-able values and are read
with ``weights_only=True`` (:func:`freqplug._io.safe_load`): opening a cache folder never unpickles
arbitrary objects. Writes are atomic (:func:`freqplug._io.atomic_save`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from .._io import atomic_save, digest, safe_load
from .._version import __version__

#: Version of the cache file layout (``{"format", "key", "result"}``).
CACHE_FORMAT = 2


def cache_key(*, stage: str, settings: Mapping[str, Any], data_digest: str, model_digest: str, seed: int,
              schema_version: int) -> str:
    """sha256 over everything a stage result depends on (see the module docstring)."""
    return digest({"stage": stage, "settings": settings, "data": data_digest, "model": model_digest, "seed": seed,
                   "schema_version": schema_version, "cache_format": CACHE_FORMAT, "freqplug": __version__,
                   "torch": torch.__version__})


def check_storable(value: Any, where: str) -> None:
    """Refuse (TypeError naming ``where``) anything but tensors, str/int/float/bool/None, lists, tuples and
    dicts with string keys: only those load back with ``weights_only=True``."""
    # Exact types: a numpy scalar is a float subclass but does not load back with weights_only=True.
    if value is None or type(value) in (str, bool, int, float) or isinstance(value, torch.Tensor):
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            check_storable(item, f"{where}[{i}]")
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"{where} has a key {key!r} of type {type(key).__name__}; stage results may only "
                                "use string keys")
            check_storable(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}; stage results may hold only tensors, numbers, strings, "
                    "None, lists and dicts (so that the cache can be read without unpickling objects)")


def check_result(result: Any, stage: str) -> Dict[str, Any]:
    """A stage's run function must return ``{"metrics": dict, "arrays": {name: tensor}}``."""
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict) \
            or not isinstance(result.get("arrays"), dict):
        keys = f" with keys {sorted(result)}" if isinstance(result, dict) else ""
        raise TypeError(f"stage {stage!r} must return {{'metrics': dict, 'arrays': dict}}, got "
                        f"{type(result).__name__}{keys}")
    for name, array in result["arrays"].items():
        if not isinstance(array, torch.Tensor):
            raise TypeError(f"stage {stage!r} returned arrays[{name!r}] of type {type(array).__name__}; "
                            "arrays must be tensors")
    check_storable(result, f"the result of stage {stage!r}")
    return result


class StageCache:
    """Cache of finished stages of one model in ``folder`` (``None``: nothing is read or written)."""

    def __init__(self, folder: Optional[Path]):
        self.folder = None if folder is None else Path(folder)

    def path(self, stage: str) -> Optional[Path]:
        return None if self.folder is None else self.folder / f"{stage}.pt"

    def load(self, stage: str, key: str) -> Optional[Dict[str, Any]]:
        """The stored result of ``stage`` if its key is ``key``; None on a miss.

        A file that cannot be read safely (truncated, corrupt, or holding objects other than tensors and
        plain values, e.g. written by an older freqplug) is a miss and is recomputed, with a warning.
        """
        path = self.path(stage)
        if path is None or not path.is_file():
            return None
        try:
            stored = safe_load(path, "report cache")
        except ValueError as error:
            warnings.warn(f"ignoring the cache file of stage {stage!r}: {error}", RuntimeWarning, stacklevel=3)
            return None
        if stored.get("format") != CACHE_FORMAT or stored.get("key") != key:
            return None
        try:
            return check_result(stored.get("result"), stage)
        except TypeError:
            return None

    def save(self, stage: str, key: str, result: Dict[str, Any]) -> None:
        path = self.path(stage)
        if path is None:
            return
        atomic_save({"format": CACHE_FORMAT, "key": key, "result": check_result(result, stage)}, path)
