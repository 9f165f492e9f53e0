"""torch.distributed at ground level: shard per-example work, gather or sum it across ranks.

Without an initialized process group every helper is the single-process identity, so the same
code path runs in both settings and gives the same numbers. Used by the report (``freqplug
profile`` under torchrun) and by dataset-level attributions (``SpectralBandShapley.importance``).

How N examples are split over the ranks, independently of the number of ranks by construction:
the examples are cut into contiguous *units* of ``unit_size`` examples, unit u goes to rank
``u % world_size`` and is processed alone (:func:`map_units`; :func:`map_examples` when the result is one
tensor row per example), with its own seed (:func:`unit_seed`) when it draws random numbers (attack random
starts). A single process runs the same units in the same order, so the numbers equal those of any world
size bitwise (the same batches, the same draws), and the writer combines unit results in unit order.

Every collective first exchanges each rank's status (:func:`synchronize`): when one rank fails, every rank
raises :class:`RankFailed` naming it instead of waiting forever in a collective the failed rank never joins.

A *group* (:func:`use_group`) restricts all helpers to a subgroup of the ranks (``freqplug profile
--distribute models``: each group profiles whole models, its rank 0 writes them).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

#: The process group the helpers use (None: the default group), set by :func:`use_group`.
_GROUP: List[Any] = [None]


class RankFailed(RuntimeError):
    """Raised on every rank when one rank of the group failed (the message names the rank and its error)."""


def active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _group():
    return _GROUP[-1]


def rank() -> int:
    return torch.distributed.get_rank(group=_group()) if active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size(group=_group()) if active() else 1


def is_writer() -> bool:
    """Rank 0 of the current group (or a single process): the one that reads/writes the cache and the report."""
    return rank() == 0


@contextlib.contextmanager
def use_group(group) -> Iterator[None]:
    """Run the block with every helper restricted to ``group`` (a ``torch.distributed`` process group this rank
    belongs to; None: the default group). ``rank()``/``world_size()`` are then the rank in and size of it."""
    _GROUP.append(group)
    try:
        yield
    finally:
        _GROUP.pop()


def _global_rank(group_rank: int) -> int:
    group = _group()
    if group is None:
        return group_rank
    return torch.distributed.get_global_rank(group, group_rank)


def group_ranks() -> List[int]:
    """The global ranks of the current group, in group-rank order (single process: ``[0]``)."""
    return [_global_rank(r) for r in range(world_size())]


# ------------------------------------------------------------------------------------------ failure protocol
def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def synchronize(error: Optional[BaseException] = None) -> None:
    """Exchange every rank's status; raise :class:`RankFailed` on every rank if any rank passes an ``error``.

    Every collective of this module starts with this exchange, so a rank that fails calls
    ``synchronize(error)`` (as :func:`run_collectively` does) and meets the others at their next collective.
    """
    if not active():
        if error is not None:
            raise error
        return
    status = [None] * world_size()
    torch.distributed.all_gather_object(status, None if error is None else _describe(error), group=_group())
    failed = [(r, s) for r, s in enumerate(status) if s is not None]
    if failed:
        names = "; ".join(f"rank {_global_rank(r)}: {s}" for r, s in failed)
        raise RankFailed(f"{len(failed)} of {len(status)} rank(s) failed ({names})") from error


def run_collectively(fn: Callable[[], Any]) -> Any:
    """``fn()`` on this rank, then a status exchange: if any rank failed, every rank raises :class:`RankFailed`
    (a rank whose own call raised chains its error). Wrap every unit of work that contains collectives."""
    try:
        result = fn()
    except RankFailed:
        raise  # the status exchange already happened inside fn
    except Exception as error:  # noqa: BLE001 (any failure must reach the other ranks)
        synchronize(error)
        raise  # not reached: synchronize raises
    synchronize(None)
    return result


# ------------------------------------------------------------------------------------------ sharding
def units(n: int, unit_size: int) -> List[Tuple[int, List[int]]]:
    """All units ``(u, indices)`` of N examples: contiguous blocks of ``unit_size`` (the last one shorter)."""
    if unit_size < 1:
        raise ValueError(f"`unit_size` must be a positive int, got {unit_size}")
    return [(u, list(range(start, min(start + unit_size, n)))) for u, start in enumerate(range(0, n, unit_size))]


def unit_seed(seed: int, unit: int) -> int:
    """The seed of unit ``unit`` of a run seeded with ``seed`` (as :func:`freqplug._batches.image_generator`)."""
    return (int(seed) * 1_000_003 + int(unit)) % (2**63)


def gather_to_writer(value: Any) -> Optional[List[Any]]:
    """Every rank's ``value`` (picklable, tensors on CPU), as a list in rank order on the writer; None elsewhere
    (single process: ``[value]``). Starts with the status exchange of :func:`synchronize`."""
    if not active():
        return [value]
    synchronize(None)
    group = _group()
    out = [None] * world_size() if is_writer() else None
    torch.distributed.gather_object(value, out, dst=_global_rank(0), group=group)
    return out


def map_units(n: int, unit_size: int, fn: Callable[[int, List[int]], Any]) -> Optional[List[Any]]:
    """Work on contiguous units of examples, split across ranks: ``fn(u, indices)`` for this rank's units.

    Unit u (examples ``u*unit_size ...``) runs on rank ``u % world_size``; ``fn`` should seed its random draws
    with :func:`unit_seed` so that a unit's result does not depend on the number of ranks.

    Returns:
        On the writer the list of ``fn`` results in unit order (single process: the same list); None elsewhere.
    """
    mine = units(n, unit_size)[rank()::world_size()]
    local = run_collectively(lambda: [(u, fn(u, indices)) for u, indices in mine])
    parts = gather_to_writer(local)
    if parts is None:
        return None
    results = sorted((item for part in parts for item in part), key=lambda item: item[0])
    if [u for u, _ in results] != [u for u, _ in units(n, unit_size)]:
        raise RuntimeError("distributed gather lost units: ranks disagree on the data")
    return [value for _, value in results]


def map_examples(n: int, unit_size: int,
                 fn: Callable[[List[int]], Dict[str, torch.Tensor]]) -> Optional[Dict[str, torch.Tensor]]:
    """Per-example work on the units of :func:`map_units`: ``fn(indices)`` once per unit of this rank.

    Each unit is one call, so a single process makes exactly the calls (the same batches) the ranks make
    together and the results are bitwise those of one process.

    Args:
        n: number of examples; unit_size: examples per unit (and at most per call of ``fn``).
        fn: ``fn(indices) -> {name: tensor with len(indices) rows}``.

    Returns:
        On the writer ``{name: tensor (n, ...)}`` in example order (CPU); None on the other ranks.
    """
    parts = map_units(n, unit_size, lambda u, indices: {k: v.detach().cpu() for k, v in fn(indices).items()})
    if parts is None:
        return None
    if not parts:
        raise ValueError("`n` must be positive: there are no examples to map")
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


def all_reduce_sums(*sums: Optional[torch.Tensor]) -> List[Optional[torch.Tensor]]:
    """Sum float64 accumulators across ranks (identity without torch.distributed); None entries stay None."""
    if not active():
        return list(sums)
    synchronize(None)
    present = [s for s in sums if s is not None]
    flat = torch.cat([s.reshape(-1) for s in present])
    backend = torch.distributed.get_backend(_group())
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    flat = flat.to(device)
    torch.distributed.all_reduce(flat, group=_group())
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


def broadcast_object(value: Any) -> Any:
    """The writer's ``value`` on every rank (picklable)."""
    if not active():
        return value
    synchronize(None)
    box = [value]
    torch.distributed.broadcast_object_list(box, src=_global_rank(0), group=_group())
    return box[0]


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. "this stage is cached, skip it")."""
    return bool(broadcast_object(bool(flag)))


def barrier() -> None:
    if active():
        synchronize(None)


def new_groups(group_size: int) -> Tuple[int, int, Any]:
    """Split the default group into consecutive groups of ``group_size`` ranks.

    Every rank must call it (``torch.distributed.new_group`` is collective). Returns ``(group index, number of
    groups, this rank's group)``; without torch.distributed ``(0, 1, None)``.
    """
    if not active():
        return 0, 1, None
    world, me = torch.distributed.get_world_size(), torch.distributed.get_rank()
    if group_size < 1 or world % group_size:
        raise ValueError(f"`group_size` must divide the number of processes ({world}), got {group_size}")
    mine = None
    for start in range(0, world, group_size):
        group = torch.distributed.new_group(list(range(start, start + group_size)))
        if start <= me < start + group_size:
            mine = group
    return me // group_size, world // group_size, mine


def local_device(device: Optional[str]) -> Optional[str]:
    """``"cuda"`` means this process's GPU under torchrun (``cuda:$LOCAL_RANK``); other values are unchanged."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def init_from_env() -> bool:
    """Initialize the default process group when launched by torchrun (WORLD_SIZE > 1). Returns True if so.

    Backend: NCCL when CUDA is available (each process then uses GPU ``LOCAL_RANK``), gloo otherwise or when
    ``FREQPLUG_DIST_BACKEND=gloo``.
    """
    if active() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() and os.environ.get("FREQPLUG_DIST_BACKEND") != "gloo" else "gloo"
    if backend == "nccl":  # object collectives run on the current CUDA device: one GPU per process
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend=backend)
    return True


def sum_ordered(values: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum in the given order (float64), so a reduction over units does not depend on which rank held which."""
    total = torch.zeros_like(values[0], dtype=torch.float64)
    for v in values:
        total = total + v.double()
    return total
