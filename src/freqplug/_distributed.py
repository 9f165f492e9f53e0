"""torch.distributed at ground level: shard per-example work, gather or sum it across ranks.

Without an initialized process group every helper is the single-process identity, so the same
code path runs in both settings and gives the same numbers. Used by the report (``freqplug
profile`` under torchrun) and by dataset-level attributions (``SpectralBandShapley.importance``).
"""

from __future__ import annotations

import os
from typing import List, Optional

import torch


def active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


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
    if not active():
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


def all_reduce_sums(*sums: Optional[torch.Tensor]) -> List[Optional[torch.Tensor]]:
    """Sum float64 accumulators across ranks (identity without torch.distributed); None entries stay None."""
    if not active():
        return list(sums)
    present = [s for s in sums if s is not None]
    flat = torch.cat([s.reshape(-1) for s in present])
    backend = torch.distributed.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    flat = flat.to(device)
    torch.distributed.all_reduce(flat)
    flat = flat.cpu()
    out: List[Optional[torch.Tensor]] = []
    start = 0
    for s in sums:
        if s is None:
            out.append(None)
            continue
        out.append(flat[start:start + s.numel()].reshape(s.shape))
        start += s.numel()
    return out


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. "this stage is cached, skip it")."""
    if not active():
        return flag
    box = [flag]
    torch.distributed.broadcast_object_list(box, src=0)
    return bool(box[0])


def barrier() -> None:
    if active():
        torch.distributed.barrier()


def init_from_env() -> bool:
    """Initialize the default process group when launched by torchrun (WORLD_SIZE > 1). Returns True if so."""
    if active() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() and os.environ.get("FREQPLUG_DIST_BACKEND") != "gloo" else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return True
