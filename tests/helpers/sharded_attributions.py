"""Run the attribution stages' run functions (frequency_shapley, classwise, occluded_frequency, corruptions) on a
tiny float64 CNN in 1 process or several gloo processes, and return their metrics and evaluations per rank."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.multiprocessing as mp

from .distributed import free_port
from .nets import tiny_cnn

#: Tiny settings per stage (unit size 2 over 5 images: units of 2, 2, 1 images).
SETTINGS: Dict[str, Any] = {
    "batch_size": 4, "shard_size": 2, "eps": 8 / 255, "norm": "Linf",
    "frequency_shapley": {"n_images": 5, "players": 4, "n_samples": 2, "estimator": "antithetic"},
    "classwise": {"n_images": None, "players": 4, "n_samples": 2},
    "occluded_frequency": {"ring_width": 8},
    "corruptions": {"n_images": None, "corruptions": ["gaussian_noise", "defocus_blur"], "severities": [3]},
}


def images(n: int = 5):
    from freqplug.data import sample_images

    x, y = sample_images("cifar10")
    return x[:n].double(), y[:n] % 4  # the tiny CNN has 4 classes


def run_stages(stages: List[str]) -> Dict[str, Any]:
    """``{stage: metrics}`` on the writer (None elsewhere), ``{"evaluations": {stage: rows}}`` on every rank."""
    from freqplug import _distributed
    from freqplug.report import stages as registry

    model = tiny_cnn()
    rows = [0]
    model.register_forward_pre_hook(lambda module, inputs: rows.__setitem__(0, rows[0] + inputs[0].shape[0]))
    x, y = images()
    out: Dict[str, Any] = {"metrics": {}, "evaluations": {}, "seconds": {}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the worker processes: float sums may depend on the thread count
    try:
        for name in stages:
            ctx = registry.StageContext(model=model, x=x, y=y, settings=SETTINGS, device=torch.device("cpu"), seed=3,
                                        show_progress=False, num_classes=4, done={}, stage=name)
            before, started = rows[0], time.perf_counter()
            result = _distributed.run_collectively(lambda: registry.get_stage(name).run(ctx))
            out["seconds"][name] = time.perf_counter() - started
            out["evaluations"][name] = rows[0] - before
            out["metrics"][name] = None if result is None else result["metrics"]
    finally:
        torch.set_num_threads(threads)
    return out


def _worker(rank: int, world: int, port: int, out: str, stages: List[str]) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        Path(out, f"rank{rank}.json").write_text(json.dumps(run_stages(stages)))
    finally:
        dist.destroy_process_group()


def stage_runs(out: Path, world: int, stages: List[str]) -> List[Dict[str, Any]]:
    """The :func:`run_stages` output of every rank, in rank order (world 1: this process)."""
    if world == 1:
        return [json.loads(json.dumps(run_stages(stages)))]  # through JSON, as the ranks' results are
    Path(out).mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(world, free_port(), str(out), stages), nprocs=world, join=True)
    return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]
