"""Smoke run of examples/paper_claims.py with tiny settings: every claim gets a row, the table is written,
and the same seeds give the same measurements."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = ["--seeds", "0", "1", "--epochs", "1", "--train-size", "128", "--n-eval", "16", "--n-shapley", "6",
        "--n-corrupt", "8", "--bands", "4"]


def _load_example():
    sys.path.insert(0, str(EXAMPLES))  # the example imports its neighbour _common.py
    try:
        spec = importlib.util.spec_from_file_location("paper_claims_example", EXAMPLES / "paper_claims.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(EXAMPLES))


@pytest.mark.slow
def test_paper_claims_tiny_run_writes_every_claim(tmp_path, no_network):
    example = _load_example()
    import torch

    threads = torch.get_num_threads()
    with torch.random.fork_rng():  # the example seeds the global RNG (it is a script); keep the suite's stream
        rows, per_seed = example.main(TINY + ["--out", str(tmp_path / "claims.md")])
    torch.set_num_threads(threads)  # the example pins one thread for reproducible numbers; give the suite its own
    text = (tmp_path / "claims.md").read_text()
    raw = json.loads((tmp_path / "claims.json").read_text())
    assert raw["arguments"]["seeds"] == [0, 1] and len(raw["per_seed"]) == 2
    papers = {paper.split()[0] for _, paper, _, _ in rows}
    assert papers == {"Chen2022", "Wang2020a", "Wang2020b", "Chan2022", "Luo2024"}
    assert len(rows) == 14
    for claim, paper, measured, holds in rows:
        assert holds in ("yes", "no", "not measured") or re.fullmatch(r"unclear \(1/2 seeds\)", holds), (claim, holds)
        assert f"| {claim} | {paper} |" in text
    assert "(2/2 seeds)" in text or "(1/2 seeds)" in text or "(0/2 seeds)" in text
    assert re.search(r"\d\.\d{3} ± \d\.\d{3}", text)  # error bars over the two seeds
    for m in per_seed:  # every measure is a real number in its range
        for kind in ("standard", "adversarial", "JaFR", "random init", "label noise", "D1", "D2"):
            assert 0.0 <= m[kind]["clean"] <= 1.0 and 0.0 <= m[kind]["pgd"] <= 1.0
        assert sum(m["standard"]["sid"]) == pytest.approx(1.0)
    # The verdict rule on the JaFR row: every seed -> yes, seeds disagree -> unclear, mean the other way -> no.
    import argparse

    args = argparse.Namespace(bands=4, label_noise=0.4, d1_radius=4.0, d2_radius=1.2, seeds=[0, 1])
    for shifts, verdict in (((1.0, 1.0), "yes"), ((1.0, -0.5), "unclear (1/2 seeds)"), ((1.0, -2.0), "no"),
                            ((-1.0, -1.0), "no")):
        edited = [{**m, "JaFR": {**m["JaFR"], "b_low": m["standard"]["b_low"] + d}} for m, d in zip(per_seed, shifts)]
        row = next(r for r in example.claims(edited, args) if r[0].startswith("JaFR raises"))
        assert row[3] == verdict, (shifts, row)
    # Same seeds, same numbers: rerun one seed and compare with the first run's seed 0.
    with torch.random.fork_rng():
        _, again = example.main(TINY[:2] + TINY[3:] + ["--out", str(tmp_path / "again.md")])
    torch.set_num_threads(threads)
    first, second = dict(per_seed[0]), dict(again[0])
    first.pop("train seconds"), second.pop("train seconds")
    assert first == second
