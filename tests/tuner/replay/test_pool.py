"""Reading a replay table: snapping proposals to design pipelines, true quality, cost models, and
clear errors for a table that cannot be used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.tuner.replay.conftest import COSTS, SPACES
from tuner.replay.pool import Pool, PoolError


def test_a_design_pipeline_snaps_to_itself_and_a_nudged_one_to_its_nearest(table: Path) -> None:
    pool = Pool(table, SPACES)
    for key in pool.design.pipelines:
        assert pool.snap(pool.design.params(*key)) == key
    params = pool.design.params("mixup-1", "r1", "g0")
    nudged = {**params, "mixup|seed.train.lr": params["mixup|seed.train.lr"] * 1.02}
    assert pool.snap(nudged) == ("mixup-1", "r1", "g0")


def test_a_proposal_never_snaps_to_another_method(table: Path) -> None:
    pool = Pool(table, SPACES)
    params = pool.design.params("cam-2", "r0", "g1")
    assert all(pool.snap({**params, "cam|seed.train.lr": lr})[0].startswith("cam-") for lr in (1e-4, 10.0))


def test_true_quality_averages_the_rng_seeds_every_pipeline_has_and_costs_follow_the_model(
    table: Path, tmp_path: Path
) -> None:
    pool = Pool(table, SPACES)
    lines = [json.loads(line) for line in (table / "rows.jsonl").read_text().splitlines()]
    key = tuple(pool.design.repeats[0][:3])
    reports = {r["rng_seed"]: r["val"]["report"] for r in lines if tuple(r["pipeline"]) == key}
    # Only some pipelines are repeated: every one is ranked on rng_seed 0, the repeats measure noise.
    assert len(reports) == 3 and pool.common_seeds == [0] and pool.rows[key].true == reports[0]
    assert pool.noise[key] and len(pool.noise[key]) == 3
    # Repeated everywhere: the mean over the seeds.
    shutil.copytree(table, tmp_path / "t")
    extra = [
        {**r, "rng_seed": 1, "val": {**r["val"], "report": r["val"]["report"] + 0.1}}
        for r in lines
        if r["rng_seed"] == 0 and tuple(r["pipeline"]) != key
    ]
    with (tmp_path / "t" / "rows.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in extra)
    everywhere = Pool(tmp_path / "t", SPACES)
    assert everywhere.common_seeds == [0, 1]
    assert everywhere.rows[key].true == pytest.approx((reports[0] + reports[1]) / 2)
    other = next(k for k in everywhere.rows if k != key)
    assert everywhere.rows[other].true == pytest.approx(pool.rows[other].true + 0.05)
    # What a real search's held-out score is: rng_seed 0's draw.
    draws = Pool(tmp_path / "t", SPACES, truth="draw")
    assert draws.rows[other].true == pool.rows[other].true and draws.rows[key].true == reports[0]
    # Without the draw a staged search's repeats select with (rng_seed 1): rng_seed 0 alone here.
    fresh = Pool(tmp_path / "t", SPACES, truth="fresh")
    assert fresh.rows[other].true == pool.rows[other].true and fresh.rows[key].true == reports[0]
    assert fresh.draw(key, 1) == (
        next(r["val"]["search"] for r in lines if tuple(r["pipeline"]) == key and r["rng_seed"] == 1),
        COSTS,
    )
    assert pool.draw(other, 1) is None  # recorded at rng_seed 0 only
    with pytest.raises(PoolError, match="truth 'best': choose from mean, draw, fresh"):
        Pool(table, SPACES, truth="best")
    assert pool.pipeline_unit("measured") == pytest.approx(sum(COSTS.values()))
    assert pool.pipeline_unit("voc") == pytest.approx(10.0)
    with pytest.raises(PoolError, match="cost model 'gpu'"):
        pool.stage_cost(key, "seed", "gpu")


def test_unusable_tables_name_the_file_and_line(tmp_path: Path, table: Path) -> None:
    shutil.copytree(table, tmp_path / "t")
    rows = tmp_path / "t" / "rows.jsonl"
    lines = rows.read_text().splitlines()
    rows.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(PoolError, match=r"rows.jsonl: 1 of \d+ pipelines not recorded yet"):
        Pool(tmp_path / "t", SPACES)
    rows.write_text("\n".join([lines[0].replace('"search"', '"other"'), *lines[1:]]) + "\n")
    with pytest.raises(PoolError, match=r"rows.jsonl:1: not a replay row \(KeyError"):
        Pool(tmp_path / "t", SPACES)
    rows.write_text("\n".join([lines[0].replace('"r0"', '"r9"', 1), *lines]) + "\n")
    with pytest.raises(PoolError, match=r"rows.jsonl:1: pipeline .*'r9'.* is not in the design"):
        Pool(tmp_path / "t", SPACES)
    (tmp_path / "t" / "design.json").write_text("[1]")
    with pytest.raises(PoolError, match=r"design.json: .*not a replay design"):
        Pool(tmp_path / "t", SPACES)
