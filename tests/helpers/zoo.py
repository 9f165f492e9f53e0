"""A tiny model zoo for ``freqplug profile --models-file`` tests (issue 13): specs in a folder, run as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import freqplug

#: module:callable specs of the zoo, in the order of zoo.txt; "stalling" waits while the file ZOO_STALL exists
#: whenever its input needs gradients (so a run can be caught mid-zoo and killed). Two models: the comparison
#: report's cross-model correlation (and its scipy import) needs three.
SPECS = ("zoo_nets:first", "zoo_nets:stalling")

#: Two stages: one without gradients (finishes even while "stalling" waits) and one with.
ARGS = ["profile", "--models-file", "zoo.txt", "--preset", "fast", "--n-examples", "4", "--only", "clean_accuracy",
        "--only", "frequency_bias", "--quiet"]

NETS = '''
import os
import time

import torch
from torch import nn


def _net(seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10)).eval()


class Stalling(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _net(2)

    def forward(self, x):
        while x.requires_grad and os.path.exists(os.environ.get("ZOO_STALL", "/nonexistent/stall")):
            time.sleep(0.05)
        return self.net(x)


def first():
    return _net(0)


def stalling():
    return Stalling()
'''


def write_zoo(folder: Path) -> Path:
    """zoo_nets.py and zoo.txt (with a comment and a blank line) in ``folder``."""
    folder = Path(folder)
    (folder / "zoo_nets.py").write_text(textwrap.dedent(NETS))
    (folder / "zoo.txt").write_text("# a tiny zoo\n" + SPECS[0] + "\n\n  " + "\n".join(SPECS[1:]) + "  \n")
    return folder


def env(**extra: str) -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(Path(freqplug.__file__).parents[1]), FREQPLUG_OFFLINE="1",
                OMP_NUM_THREADS="1", **extra)


def command(*args: str, processes: int = 1) -> List[str]:
    if processes == 1:
        return [sys.executable, "-m", "freqplug", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "freqplug", *args]


def run(folder: Path, out: str, *extra: str, processes: int = 1, **environment: str) -> dict:
    """Run the zoo profile to completion; its metrics.json."""
    done = subprocess.run(command(*ARGS, "--out", out, *extra, processes=processes), cwd=folder,
                          capture_output=True, text=True, env=env(**environment), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((Path(folder) / out / "metrics.json").read_text())


def run_here(folder: Path, out: str, *extra: str) -> dict:
    """Run the zoo profile in this process (``freqplug.cli.main``, one torch thread as the subprocesses); its
    metrics.json."""
    import torch

    from freqplug.cli import main

    cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(folder)
    torch.set_num_threads(1)
    try:
        assert main([*ARGS, "--out", out, *extra]) == 0
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
        sys.modules.pop("zoo_nets", None)  # imported from the folder by the module:callable specs
    return json.loads((Path(folder) / out / "metrics.json").read_text())


def slug(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)
