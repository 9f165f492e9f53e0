"""freqplug.profile under torch.distributed: wall time per stage with 1 and 2 processes, evaluations per rank.

Runs the profile (default: the fast preset on the embedded CIFAR-10 ResNet-18 and its 20 sample images) once in
one process and once in 2 gloo processes on this machine (torch threads 1 per process; the runs are one after the
other, so each gets the cores alone), then prints per stage: the wall time with 1 process, with 2, their ratio
(ideal 0.5 for a sharded stage when each process has a core of its own; 1 for a stage that runs on rank 0 only),
the model evaluations each rank made (counted by profile()'s forward hook: a sharded stage must split them
evenly) and what :func:`freqplug.report.estimate_cost` predicts per rank. Nothing is cached (``force=True``).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/profile_distributed.py [--images 20] [--preset fast]
        [--world 2] [--only STAGE ...]

On a 2-core machine shared with other work the ratio is bounded by the free cores; the evaluation counts are exact
whatever the load. A stage still running the whole batch on every rank shows evaluations [N, N] instead of
[N/2, N/2] and a ratio near 1 (or above, from the extra gather).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _profile(out: Path, images: int, preset: str, stages):
    from freqplug.data import sample_images
    from freqplug.models import cifar10_resnet18
    from freqplug.report import profile

    x, y = sample_images("cifar10")
    started = time.perf_counter()
    result = profile({"embedded": cifar10_resnet18()}, x[:images], y[:images], out=None, preset=preset,
                     stages=stages, quiet=True, force=True)
    wall = time.perf_counter() - started
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:  # the writer holds the metrics
        out.write_text(json.dumps({"timing": result.metrics["timing"]["embedded"], "wall": wall}))


def _worker(rank: int, world: int, port: int, out: str, images: int, preset: str, stages) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        _profile(Path(out), images, preset, stages)
    finally:
        dist.destroy_process_group()


def _single(rank: int, out: str, images: int, preset: str, stages) -> None:
    torch.set_num_threads(1)
    _profile(Path(out), images, preset, stages)


def run(world: int, images: int, preset: str, stages, folder: Path) -> dict:
    out = folder / f"world{world}.json"
    if world == 1:  # a fresh process as well, so that both runs start from the same (cold) state
        mp.spawn(_single, args=(str(out), images, preset, stages), nprocs=1, join=True)
    else:
        mp.spawn(_worker, args=(world, _free_port(), str(out), images, preset, stages), nprocs=world, join=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--preset", default="fast", choices=("fast", "default", "gpu"))
    parser.add_argument("--world", type=int, default=2, help="processes of the distributed run (default: 2)")
    parser.add_argument("--only", action="append", default=None, metavar="STAGE", help="stages (default: all)")
    args = parser.parse_args()
    from freqplug.report import estimate_cost

    print(f"freqplug profile, preset {args.preset}, embedded ResNet-18, {args.images} images; 1 vs {args.world} "
          f"gloo processes, 1 torch thread each, {os.cpu_count()} cores on this machine")
    with tempfile.TemporaryDirectory() as folder:
        one = run(1, args.images, args.preset, args.only, Path(folder))
        many = run(args.world, args.images, args.preset, args.only, Path(folder))
    estimate = estimate_cost(args.preset, n_images=args.images, stages=args.only, world_size=args.world)
    header = (f"{'stage':<24}{'1 proc s':>9}{f'{args.world} procs s':>11}{'ratio':>7}  "
              f"{'evaluations per rank (counted)':<32}{'estimate per rank':<26}split")
    print(header)
    print("-" * len(header))
    uneven = []
    for stage, timing in many["timing"].items():
        t1, tn = one["timing"][stage]["this_run_seconds"], timing["this_run_seconds"]
        counted = timing["evaluations_per_rank"] or []
        row = estimate.rows.get(stage)
        predicted = row["per_rank"] if row else []
        bound = "" if row is None or row["exact"] else "<="
        # split: the ranks together make the single process's evaluations, none more than 15 % (+2) above an
        # equal share (a last, shorter unit); duplicated: every rank repeats (part of) the whole work
        single = one["timing"][stage]["evaluations"] or 0
        if not sum(counted):
            split = "-"
        elif sum(counted) > single:
            split = "duplicated"
        elif len(counted) > 1 and max(counted) > 1.15 * sum(counted) / len(counted) + 2:
            split = "uneven"
        else:
            split = "yes"
        if split in ("duplicated", "uneven"):
            uneven.append(f"{stage} ({split})")
        ratio = f"{tn / t1:.2f}" if t1 > 0.05 else "-"
        print(f"{stage:<24}{t1:>9.2f}{tn:>11.2f}{ratio:>7}  {str(counted):<32}{bound + str(predicted):<26}"
              f"{split}")
    print(f"{'whole profile':<24}{one['wall']:>9.2f}{many['wall']:>11.2f}{many['wall'] / one['wall']:>7.2f}")
    total_1 = sum(t["evaluations"] or 0 for t in one["timing"].values())
    total_n = sum(t["evaluations"] or 0 for t in many["timing"].values())
    print(f"evaluations, all ranks: {total_1:,} with 1 process, {total_n:,} with {args.world} (equal when no stage "
          "duplicates work)")
    if uneven:
        print(f"stages whose evaluations do not split evenly across ranks: {', '.join(uneven)}")
    else:
        print("every stage's evaluations split evenly across the ranks")


if __name__ == "__main__":
    main()
