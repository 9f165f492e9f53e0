"""Files freqplug writes and reads back: atomic saves, loads that never unpickle arbitrary objects,
and content digests (cache keys, checksums, fingerprints of precomputed results)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn


def atomic_save(obj: Any, path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or a full disk mid-write leaves the previous file intact (os.replace is atomic on POSIX
    and Windows for paths on one file system).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def safe_load(path, what: str) -> dict:
    """Load a dict saved by :func:`atomic_save` with ``weights_only=True`` (tensors, numbers, strings,
    lists and dicts only: no arbitrary object is unpickled). A corrupt file raises ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip/pickle/EOF errors all mean the same thing to the user
        raise ValueError(
            f"{what} file {str(path)!r} is corrupt, truncated or holds objects other than tensors and plain "
            f"values, and was not loaded ({type(error).__name__}: {str(error)[:200]})"
        ) from error
    if not isinstance(data, dict):
        raise ValueError(f"{what} file {str(path)!r} does not hold a freqplug {what} (got {type(data).__name__})")
    return data


def digest(*parts: Any) -> str:
    """sha256 (hex) over tensors (shape, dtype and every byte, on CPU) and JSON-able values.

    Two tensors with the same values in another order, shape or dtype give different digests.
    """
    sha = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            tensor = part.detach().cpu().contiguous()
            sha.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
            sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        elif isinstance(part, (list, tuple)) and any(isinstance(p, torch.Tensor) for p in part):
            sha.update(f"seq{len(part)}".encode())
            sha.update(digest(*part).encode())
        else:
            sha.update(json.dumps(part, sort_keys=True, default=str).encode())
    return sha.hexdigest()


def model_digest(model) -> str:
    """Content hash of a model: its class, every state-dict entry's name, shape, dtype and bytes.

    A model that is not an ``nn.Module`` (a plain function) is keyed by its qualified name only.
    """
    if not isinstance(model, nn.Module):
        return digest(getattr(model, "__module__", ""), getattr(model, "__qualname__", type(model).__name__))
    sha = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for key, value in model.state_dict().items():
        sha.update(key.encode())
        if isinstance(value, torch.Tensor):
            sha.update(digest(value).encode())
        else:
            sha.update(json.dumps(value, sort_keys=True, default=str).encode())
    return sha.hexdigest()
