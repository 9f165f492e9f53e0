"""Run ``freqplug.profile`` on the embedded CIFAR-10 ResNet-18 in 1, 2 or 3 gloo processes (torch.multiprocessing)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.multiprocessing as mp

#: Small settings of every stage (the fast preset, cut down; 3 images where a stage takes a subset, so 3 ranks
#: all get work; 6 frequency players, where the antithetic estimator needs no XGBoost fit) so one profile of 6
#: images takes seconds.
SMALL_OVERRIDES: Dict[str, Any] = {
    "autoattack": {"n_iter": 1},
    "masked_noise": {"n_images": 3, "pgd_steps": 1, "players": 3},
    "band_shapley": {"num_bands": 3},
    "frequency_shapley": {"n_images": 3, "players": 3},
    "hf_attack": {"step": 4.0},
    "occluded_frequency": {"ring_width": 8},
    "robustness_curve": {"n_images": 3, "eps_fractions": [1.0], "pgd_steps": 1},
    "classwise": {"n_images": 3, "players": 3},
    "corruptions": {"n_images": 3, "corruptions": ["gaussian_noise", "defocus_blur"]},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample(n: int = 6):
    from freqplug.data import sample_images

    x, y = sample_images("cifar10")
    return x[:n].clone(), y[:n].clone()


def _worker(rank: int, world: int, port: int, out: str, kwargs: Dict[str, Any], fail_rank: Optional[int]):
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        outcome = "ok"
        try:
            run_profile(out, fail_rank=fail_rank, **kwargs)
        except Exception as error:  # recorded for the test: every rank must fail, naming the failed rank
            outcome = f"{type(error).__name__}: {error}"
        Path(out, f"outcome-rank{rank}.txt").write_text(outcome)
    finally:
        dist.destroy_process_group()


def run_profile(out: str, *, n: int = 6, stages=None, fail_rank: Optional[int] = None, **kwargs):
    from freqplug.models import cifar10_resnet18
    from freqplug.report import profile

    x, y = sample(n)
    if fail_rank is not None:
        _register_failing_stage(fail_rank)
    kwargs.setdefault("overrides", SMALL_OVERRIDES)
    return profile({"embedded": cifar10_resnet18()}, x, y, out=out, preset="fast", stages=stages, quiet=True,
                   **kwargs)


def _register_failing_stage(fail_rank: int) -> None:
    from freqplug import _distributed
    from freqplug.report import stages

    def run(ctx):
        def work(indices):
            if _distributed.rank() == fail_rank:
                raise ValueError(f"deliberate failure on rank {fail_rank}")
            return {"pred": ctx.model(ctx.x[indices]).argmax(1)}

        gathered = _distributed.map_examples(ctx.n, ctx.unit_size, work)
        return None if gathered is None else {"metrics": {"n": len(gathered["pred"])}, "arrays": {}}

    if "failing" not in stages.stage_names():
        stages.register(stages.Stage("failing", "Failing", "fails on one rank", {p: {} for p in stages.PRESET_NAMES},
                                     run, lambda m: [], sharded=True))


def profile_metrics(out: Path, world: int, fail_rank: Optional[int] = None, **kwargs) -> Optional[dict]:
    """metrics.json of a profile run in ``world`` processes (1: this process, no torch.distributed)."""
    out = Path(out)
    if world == 1 and fail_rank is None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in the worker processes: float sums may depend on the thread count
        try:
            run_profile(str(out), **kwargs)
        finally:
            torch.set_num_threads(threads)
    else:
        mp.spawn(_worker, args=(world, free_port(), str(out), kwargs, fail_rank), nprocs=world, join=True)
    path = out / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None
