"""One iterator over labelled image batches, for every dataset-level method."""

from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

import torch

from ._validation import check_labels, check_positive_int


def data_length(data: Any) -> Optional[int]:
    """Number of images in ``data`` when it can be known without iterating (else None)."""
    if isinstance(data, torch.Tensor):
        return int(data.shape[0]) if data.dim() > 0 else None
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return int(data[0].shape[0]) if data[0].dim() > 0 else None
    dataset = getattr(data, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def iter_labelled_batches(data: Any, batch_size: Optional[int] = None, *, name: str = "data",
                          require_labels: bool = True) -> Iterator[Tuple[torch.Tensor, Optional[torch.Tensor], int]]:
    """Yield ``(x, y, offset)`` blocks: images (B, C, H, W), labels (B,) or None, and the index of the
    block's first image in the whole data (so per-image randomness can be keyed on it).

    Args:
        data: a pair ``(x, y)`` of tensors, a tensor ``x`` (labels None), or an iterable / DataLoader of
            ``(x, y)`` batches or of tensors.
        batch_size: split tensor data into blocks of this many images (None: one block). Iterables are
            yielded batch by batch as they come.
        require_labels: raise when a block has no labels.
    """
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    if isinstance(data, torch.Tensor) or (isinstance(data, (tuple, list)) and len(data) == 2
                                          and isinstance(data[0], torch.Tensor)):
        x, y = (data, None) if isinstance(data, torch.Tensor) else data
        if y is not None:
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"`{name}` labels must be a tensor (K,), got {type(y).__name__}")
            check_labels(y, f"{name} labels", x.shape[0] if x.dim() > 0 else 0)
        elif require_labels:
            raise ValueError(f"`{name}` must be a pair (x, y) with labels, got a tensor without labels")
        step = x.shape[0] if batch_size is None else batch_size
        for start in range(0, x.shape[0], max(step, 1)):
            yield x[start:start + step], (None if y is None else y[start:start + step]), start
        return
    if not hasattr(data, "__iter__") or isinstance(data, (str, bytes)):
        raise TypeError(f"`{name}` must be a pair (x, y), a tensor or an iterable/DataLoader of (x, y) batches, "
                        f"got {type(data).__name__}")
    offset = 0
    for batch in data:
        if isinstance(batch, torch.Tensor):
            x, y = batch, None
        elif isinstance(batch, (tuple, list)) and len(batch) >= 1 and isinstance(batch[0], torch.Tensor):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            raise TypeError(f"`{name}` batches must be tensors or (x, y) pairs, got {type(batch).__name__}")
        if y is None and require_labels:
            raise ValueError(f"`{name}` batches must be (x, y) pairs with labels")
        if y is not None:
            check_labels(y, f"{name} labels", x.shape[0])
        yield x, y, offset
        offset += int(x.shape[0])


def image_generator(seed: int, index: int, device="cpu") -> torch.Generator:
    """The generator of image ``index`` of a dataset under ``seed``: per-image random draws
    (Gaussian baselines, replacement partners) then do not depend on batching, order within a
    batch, chunking or which rank handles the image."""
    return torch.Generator(device=device).manual_seed((int(seed) * 1_000_003 + int(index)) % (2**63))
