"""A zoo run: one process versus ``torchrun --nproc_per_node P`` with ``--distribute images`` and ``models``.

Profiles a zoo of CIFAR-10 ResNet-18s (random weights, one seed each: the architecture of the embedded model)
with ``freqplug profile --models-file`` on the embedded sample images, and prints the wall time of each run,
its ratio to the single-process run, and the model evaluations each rank made (summed over models and stages,
from metrics.json). Every run checks that its per-model metrics equal the single-process run's.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/zoo_distribute.py [--models 4] [--images 8] [--processes 2]
        [--stages clean_accuracy frequency_bias hf_attack] [--preset fast]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

NETS = '''
import torch

from freqplug.models.resnet import CifarResNet


def resnet18(seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CifarResNet([2, 2, 2, 2]).eval()
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--stages", nargs="+", default=["clean_accuracy", "frequency_bias", "hf_attack"])
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="freqplug-zoo-bench-"))
    (folder / "zoo.txt").write_text("".join(f"zoo_nets:resnet18_{seed}\n" for seed in range(args.models)))
    (folder / "zoo_nets.py").write_text(NETS + "".join(
        f"\n\ndef resnet18_{seed}():\n    return resnet18({seed})\n" for seed in range(args.models)))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""), FREQPLUG_OFFLINE="1",
               OMP_NUM_THREADS="1", FREQPLUG_DIST_BACKEND="gloo")
    common = ["profile", "--models-file", "zoo.txt", "--preset", args.preset, "--n-examples", str(args.images),
              "--quiet", *[a for stage in args.stages for a in ("--only", stage)]]
    runs = [("1 process", [sys.executable, "-m", "freqplug"], [])]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(args.processes), "-m", "freqplug"]
    runs += [(f"{args.processes} processes, --distribute {mode}", torchrun, ["--distribute", mode])
             for mode in ("images", "models")]
    print(f"{args.models} models (ResNet-18), {args.images} images, preset {args.preset}, stages "
          f"{' '.join(args.stages)}; {os.cpu_count()} cores")
    reference = None
    baseline = None
    for i, (label, launcher, extra) in enumerate(runs):
        out = f"out{i}"
        started = time.perf_counter()
        done = subprocess.run(launcher + common + ["--out", out] + extra, cwd=folder, env=env, capture_output=True,
                              text=True)
        seconds = time.perf_counter() - started
        if done.returncode:
            sys.exit(f"{label} failed:\n{done.stderr[-3000:]}")
        metrics = json.loads((folder / out / "metrics.json").read_text())
        if reference is None:
            reference, baseline = metrics["models"], seconds
        same = metrics["models"] == reference
        per_rank: Counter = Counter()
        for name, timing in metrics["timing"].items():
            ranks = metrics["provenance"]["ranks"][name]
            for entry in timing.values():
                for rank, count in zip(ranks, entry["evaluations_per_rank"] or []):
                    per_rank[rank] += count
        print(f"{label:36s} {seconds:7.1f} s  ratio {seconds / baseline:4.2f}  evaluations per rank "
              f"{dict(sorted(per_rank.items()))}  metrics equal: {same}")


if __name__ == "__main__":
    main()
