"""Every profile stage sharded under torch.distributed: 2 and 3 gloo processes give the metrics.json of one
process, every rank does part of every stage's model evaluations, and a failing rank stops every rank."""

import math

import pytest
from helpers.distributed import SMALL_OVERRIDES, profile_metrics

from freqplug.report import STAGES, estimate_cost

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return profile_metrics(tmp_path_factory.mktemp("single"), 1)


def _assert_same(a, b, where):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same(u, v, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        # per-example work is bitwise equal; sums over examples may be reordered (band Shapley's all-reduce)
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("world", [2, 3])
def test_every_stage_sharded_equals_one_process(single, tmp_path, world):
    sharded = profile_metrics(tmp_path, world)
    assert sharded["provenance"]["world_size"] == world
    assert set(sharded["models"]["embedded"]) == set(STAGES)
    _assert_same(single["models"]["embedded"], sharded["models"]["embedded"], "models.embedded")
    for stage in STAGES:
        one = single["timing"]["embedded"][stage]
        many = sharded["timing"]["embedded"][stage]
        assert one["evaluations_per_rank"] == [one["evaluations"]]
        if stage == "perturbation_spectrum":  # no model evaluations: the spectra of the gathered x_adv
            assert one["evaluations"] == 0 and many["evaluations"] == 0
            continue
        assert one["evaluations"] > 0, stage
        # the same work, split: every rank evaluated the model
        assert many["evaluations"] == one["evaluations"], stage
        assert len(many["evaluations_per_rank"]) == world and min(many["evaluations_per_rank"]) > 0, (stage, many)
    # the cost estimate knows which rank does what: exact per rank for fixed designs, a bound per rank for attacks
    estimate = estimate_cost("fast", n_images=6, image_shape=(3, 32, 32), num_classes=10, overrides=SMALL_OVERRIDES,
                             world_size=world)
    for stage, row in estimate.rows.items():
        counted = sharded["timing"]["embedded"][stage]["evaluations_per_rank"]
        counted = counted + [0] * (world - len(counted))  # a stage run on rank 0 only lists one rank
        if row["exact"]:
            assert counted == row["per_rank"], (stage, counted, row)
        else:
            assert all(c <= e for c, e in zip(counted, row["per_rank"])), (stage, counted, row)


def test_a_failing_rank_stops_every_rank(tmp_path):
    profile_metrics(tmp_path, 3, fail_rank=1, stages=["clean_accuracy", "failing"])
    outcomes = [(tmp_path / f"outcome-rank{r}.txt").read_text() for r in range(3)]
    for outcome in outcomes:
        assert outcome.startswith("RankFailed") and "rank 1: ValueError: deliberate failure on rank 1" in outcome
    assert not (tmp_path / "metrics.json").exists()
