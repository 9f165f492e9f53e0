"""freqplug._distributed: units, gathers in example order, groups and the failure protocol, in 1 process and in 3
gloo processes (torch.multiprocessing; no model)."""

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers.distributed import free_port

from freqplug import _distributed as dist


def test_units_cover_the_examples_in_contiguous_blocks():
    assert dist.units(5, 2) == [(0, [0, 1]), (1, [2, 3]), (2, [4])]
    assert dist.units(0, 3) == []
    with pytest.raises(ValueError, match="unit_size"):
        dist.units(4, 0)
    assert dist.unit_seed(0, 1) != dist.unit_seed(1, 0) and dist.unit_seed(3, 2) == dist.unit_seed(3, 2)


def test_single_process_is_the_identity():
    assert not dist.active() and dist.rank() == 0 and dist.world_size() == 1 and dist.is_writer()
    assert dist.map_units(5, 2, lambda u, idx: (u, idx)) == [(0, [0, 1]), (1, [2, 3]), (2, [4])]
    got = dist.map_examples(5, 2, lambda idx: {"twice": 2 * torch.tensor(idx)})
    assert torch.equal(got["twice"], 2 * torch.arange(5))
    with pytest.raises(ZeroDivisionError):  # without torch.distributed the error itself propagates
        dist.run_collectively(lambda: 1 / 0)


def _worker(rank, world, port, out):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    record = {}
    try:
        record["units"] = dist.map_units(5, 1, lambda u, idx: (u, idx, dist.rank()))
        # 2 examples, 3 ranks: rank 2 has no unit and still takes part in every collective
        record["examples"] = dist.map_examples(2, 1, lambda idx: {"square": torch.tensor(idx) ** 2,
                                                                  "rank": torch.full((len(idx),), dist.rank())})
        record["sum"] = dist.all_reduce_sums(torch.tensor([float(rank)], dtype=torch.float64))[0].item()
        record["flag"] = dist.broadcast_flag(rank == 0)
        index, count, group = dist.new_groups(1)
        with dist.use_group(group):  # a group of one: the helpers act as a single process
            record["group"] = (index, count, dist.rank(), dist.world_size(), dist.is_writer(),
                               dist.map_units(3, 1, lambda u, idx: dist.rank()))
        with pytest.raises(ValueError, match="group_size"):
            dist.new_groups(2)
        try:
            dist.run_collectively(lambda: 1 / 0 if rank == 2 else rank)
            record["failure"] = "not raised"
        except dist.RankFailed as error:
            record["failure"] = str(error)
        torch.save(record, Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_three_gloo_processes(tmp_path):
    mp.spawn(_worker, args=(3, free_port(), str(tmp_path)), nprocs=3, join=True)
    records = [torch.load(tmp_path / f"rank{r}.pt") for r in range(3)]
    writer = records[0]
    # units in unit order, unit u computed on rank u % 3
    assert writer["units"] == [(0, [0], 0), (1, [1], 1), (2, [2], 2), (3, [3], 0), (4, [4], 1)]
    assert torch.equal(writer["examples"]["square"], torch.tensor([0, 1]))
    assert torch.equal(writer["examples"]["rank"], torch.tensor([0, 1]))
    for r, record in enumerate(records):
        if r:
            assert record["units"] is None and record["examples"] is None  # results live on the writer
        assert record["sum"] == 3.0 and record["flag"] is True
        assert record["group"] == (r, 3, 0, 1, True, [0, 0, 0])
        assert record["failure"].startswith("1 of 3 rank(s) failed (rank 2: ZeroDivisionError")
