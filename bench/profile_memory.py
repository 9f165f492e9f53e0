"""Peak memory of every freqplug.profile stage at 224x224 with an ImageNet-sized model: is it bounded by the batch?

Each (stage, n images, batch_size) runs in a fresh subprocess: an ImageNet ResNet-18 (torchvision's architecture,
random weights, 1000 classes; nothing is downloaded) on n of the 20 embedded ImageNet sample images (224x224),
``freqplug.profile(..., stages=[dependencies..., stage], overrides=TINY)`` with tiny budgets (the memory of a
stage depends on its batches, not on how many steps it takes) and ``shard_size = batch_size`` (a unit of the
distributed split is at most one batch). MB below are MiB. The stage's ``run`` is wrapped to read the RSS just
before it and the RSS high-water mark (VmHWM, reset through /proc/self/clear_refs) right after it: their
difference is the memory the stage itself added (Linux only).

Printed per stage: that peak for each (n, batch_size) pair, then the growth per extra image at fixed batch_size
(the data of one image is 3*224*224*4 B = 0.57 MiB; a stage keeping k copies of its inputs/outputs adds about
k * 0.57 MiB per image) and the growth from a larger batch at fixed n. A stage growing by more than --flag image
copies per image is listed at the end: its memory grows with n beyond the data.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/profile_memory.py [--pairs 2x2,6x2,6x6] [--only STAGE ...]
        [--threads 1]

With the default pairs this makes about 2,000 forward passes of ResNet-18 at 224x224: a few minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: Budgets small enough to run at 224x224 on CPU; every stage still builds its full batches.
TINY = {
    "autoattack": {"version": "custom", "attacks": ["apgd-ce"], "n_iter": 1, "n_restarts": 1},
    "masked_noise": {"n_images": None, "pgd_steps": 1, "players": 2, "n_samples": 2},
    "band_shapley": {"num_bands": 2},
    "frequency_shapley": {"n_images": 10**6, "players": 2, "n_samples": 2},
    "hf_attack": {"step": 100.0},
    "occluded_frequency": {"ring_width": 128},
    "robustness_curve": {"n_images": None, "eps_fractions": [1.0], "pgd_steps": 1, "hf_step": 100.0},
    "classwise": {"n_images": None, "players": 2, "n_samples": 2},
    "corruptions": {"n_images": None, "corruptions": ["gaussian_noise"], "severities": [1]},
}
IMAGE_MB = 3 * 224 * 224 * 4 / 2**20


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(stage: str, n: int, batch_size: int, threads: int) -> None:
    """One measurement; prints a JSON line {"peak_mb", "base_mb", "seconds", "evaluations"}."""
    import torch
    import torchvision

    from freqplug.data import sample_images
    from freqplug.report import profile, stages

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000).eval()
    x, y = sample_images("imagenet")
    x, y = x[:n].clone(), y[:n].clone()
    measured = {}
    record = stages.get_stage(stage)

    def run(ctx):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = _status_kb("VmRSS")
        started = time.perf_counter()
        result = record.run(ctx)
        measured.update(peak_mb=(_status_kb("VmHWM") - base) / 1024, base_mb=base / 1024,
                        seconds=time.perf_counter() - started)
        return result

    stages._REGISTRY[stage] = dataclasses.replace(record, run=run)
    overrides = {"batch_size": batch_size, "shard_size": batch_size}  # units no larger than a batch
    overrides.update({k: v for k, v in TINY.items() if k in (stage,) + tuple(record.depends_on)})
    result = profile({"resnet18": model}, x, y, out=None, preset="fast", stages=list(record.depends_on) + [stage],
                     overrides=overrides, quiet=True, num_classes=1000)
    measured["evaluations"] = result.metrics["timing"]["resnet18"][stage]["evaluations"]
    print(json.dumps(measured))


def measure(stage: str, n: int, batch_size: int, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, __file__, "--child", stage, str(n), str(batch_size), str(threads)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="2x2,6x2,6x6", help="n_images x batch_size pairs (default: %(default)s)")
    parser.add_argument("--only", action="append", default=None, metavar="STAGE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flag", type=float, default=10.0,
                        help="flag a stage growing by more than this many image copies per extra image")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stage, n, batch_size, threads = args.child
        child(stage, int(n), int(batch_size), int(threads))
        return
    from freqplug.report import STAGES

    pairs = [tuple(int(v) for v in p.split("x")) for p in args.pairs.split(",")]
    names = args.only or list(STAGES)
    print(f"peak RSS added by each stage (MB), ImageNet ResNet-18 (random weights), 224x224; one image = "
          f"{IMAGE_MB:.2f} MB; pairs n x batch_size")
    header = f"{'stage':<24}" + "".join(f"{f'{n}x{b}':>16}" for n, b in pairs) + f"{'MB per image':>14}" + \
        f"{'batch growth':>14}"
    print(header + "\n" + "-" * len(header))
    flagged = []
    for stage in names:
        results = {pair: measure(stage, *pair, args.threads) for pair in pairs}
        cells = []
        for pair in pairs:
            r = results[pair]
            cells.append("error" if "error" in r else f"{r['peak_mb']:.0f} ({r['evaluations']} ev)")
        # growth with n at the same batch size, and with batch size at the same n
        per_image = batch_growth = None
        for a in pairs:
            for b in pairs:
                if "error" in results[a] or "error" in results[b]:
                    continue
                if a[1] == b[1] and b[0] > a[0] and per_image is None:
                    per_image = (results[b]["peak_mb"] - results[a]["peak_mb"]) / (b[0] - a[0])
                if a[0] == b[0] and b[1] > a[1] and batch_growth is None:
                    batch_growth = results[b]["peak_mb"] - results[a]["peak_mb"]
        if per_image is not None and per_image > args.flag * IMAGE_MB:
            flagged.append(f"{stage}: +{per_image:.1f} MB per image ({per_image / IMAGE_MB:.0f} image copies)")
        print(f"{stage:<24}" + "".join(f"{c:>16}" for c in cells)
              + f"{'-' if per_image is None else f'{per_image:.1f}':>14}"
              + f"{'-' if batch_growth is None else f'{batch_growth:+.0f}':>14}")
        for pair, r in results.items():
            if "error" in r:
                print(f"  {stage} {pair[0]}x{pair[1]}: {r['error']}")
    if flagged:
        print(f"stages whose memory grows with n by more than {args.flag:g} image copies per image:")
        for line in flagged:
            print("  " + line)
    else:
        print(f"no stage grows by more than {args.flag:g} image copies per extra image at a fixed batch size")


if __name__ == "__main__":
    main()
