"""torch.distributed helpers of ``freqplug profile``: shard per-example work, gather it on every rank.

Without an initialized process group every helper is the single-process identity, so the same
code path runs in both settings and gives the same numbers.
"""

from __future__ import annotations

from typing import List, Optional

import torch


def _active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if _active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if _active() else 1


def is_writer() -> bool:
    """Rank 0 (or a single process): the one that reads/writes the cache and the report."""
    return rank() == 0


def shard_indices(n: int) -> List[int]:
    """Indices of the examples this rank handles: k with k % world_size == rank."""
    return list(range(rank(), n, world_size()))


def gather_per_example(indices: List[int], values: torch.Tensor, n: int) -> Optional[torch.Tensor]:
    """Reassemble per-example ``values`` (len(indices), ...) of all ranks into (n, ...) in example order.

    Returns the full tensor on rank 0 and None on the other ranks (single process: the tensor).
    """
    if not _active():
        return values
    gathered = [None] * world_size()
    torch.distributed.all_gather_object(gathered, (indices, values.cpu()))
    if not is_writer():
        return None
    parts = [(i, v) for idx, vals in gathered for i, v in zip(idx, vals)]
    parts.sort(key=lambda item: item[0])
    if [i for i, _ in parts] != list(range(n)):
        raise RuntimeError("distributed gather lost examples: ranks disagree on the data")
    return torch.stack([v for _, v in parts]) if parts else values


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. "this stage is cached, skip it")."""
    if not _active():
        return flag
    box = [flag]
    torch.distributed.broadcast_object_list(box, src=0)
    return bool(box[0])


def barrier() -> None:
    if _active():
        torch.distributed.barrier()


def init_from_env() -> bool:
    """Initialize the default process group when launched by torchrun (WORLD_SIZE > 1). Returns True if so."""
    import os

    if _active() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() and os.environ.get("FREQPLUG_DIST_BACKEND") != "gloo" else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return True
