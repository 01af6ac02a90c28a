"""Leaderboard ranking on plain rows (the MLflow-backed path is covered in test_search.py)."""

from __future__ import annotations

from typing import Any

import pytest

import wsss
from tuner.tracking.results import latest_attempts, rank_rows


def _row(
    trial: str, method: str, start: int, objective: float | None = None, **stage: float
) -> dict[str, Any]:
    return {
        "trial": trial,
        "method": method,
        "objective": objective,
        "cam_miou_best": stage.get("cam"),
        "pseudo_miou": stage.get("pseudo"),
        "val_miou": objective,
        "short_val_miou": stage.get("short"),
        "status": "finished" if objective is not None else "pruned",
        "rung": "-",
        "compute_seconds": 1.0,
        "compute_seconds_without_reuse": 1.0,
        "stages_reused": "-",
        "space": method,
        "attempt": 1,
        "superseded": False,
        "run_id": trial,
        "_mode": "max",
        "_start": start,
        "_trial": ("search", trial),
    }


ROWS = [
    _row("seed-only-good", "cam", 1, cam=0.60),
    _row("refined", "mixup", 2, cam=0.50, pseudo=0.40),
    _row("finished-low", "cam", 3, 0.30, cam=0.5, pseudo=0.5),
    _row("seed-only-bad", "mixup", 4, cam=0.40),
    _row("finished-high", "fmix", 5, 0.45, cam=0.5, pseudo=0.5),
    _row("refined-better", "cam", 6, cam=0.45, pseudo=0.55),
    _row("failed-at-once", "fmix", 7),
    # A staged search's configuration stopped on the short DeepLab rung: furthest of the unfinished.
    _row("short-rung", "seam", 8, cam=0.2, pseudo=0.3, short=0.1),
]


def test_finished_by_objective_then_unfinished_by_progress_and_last_stage() -> None:
    order = [r["trial"] for r in rank_rows(ROWS)]
    assert order == [
        "finished-high",
        "finished-low",
        "short-rung",
        "refined-better",  # reached refine, pseudo 0.55
        "refined",  # reached refine, pseudo 0.40: ahead of any seed-only trial whatever its CAM
        "seed-only-good",
        "seed-only-bad",
        "failed-at-once",
    ]
    assert [r["rank"] for r in rank_rows(ROWS)] == list(range(1, len(ROWS) + 1))


def test_mode_min_reverses_only_the_finished_objective() -> None:
    rows = [{**r, "_mode": "min"} for r in ROWS]
    order = [r["trial"] for r in rank_rows(rows)]
    assert order[:3] == ["finished-low", "finished-high", "short-rung"]


def test_by_method_ranks_within_each_method_and_top_cuts_each_group() -> None:
    ranked = rank_rows(ROWS, top=2, by="method")
    assert [(r["method"], r["rank"], r["trial"]) for r in ranked] == [
        ("cam", 1, "finished-low"),
        ("cam", 2, "refined-better"),
        ("fmix", 1, "finished-high"),
        ("fmix", 2, "failed-at-once"),
        ("mixup", 1, "refined"),
        ("mixup", 2, "seed-only-bad"),
        ("seam", 1, "short-rung"),
    ]
    assert all(not k.startswith("_") for r in ranked for k in r)


def test_unknown_grouping_is_a_config_error() -> None:
    with pytest.raises(wsss.ConfigError, match="--by trial"):
        rank_rows(ROWS, by="trial")


def test_one_row_per_trial_its_latest_attempt() -> None:
    first = {**_row("t1", "cam", 1), "status": "failed", "superseded": True, "run_id": "r1"}
    second = {**_row("t1", "cam", 5, 0.4), "attempt": 2, "run_id": "r2"}
    # A superseded run is never the current one, even with a later start (clock skew between nodes).
    skewed = {**_row("t2", "cam", 9), "superseded": True, "run_id": "r3"}
    current = {**_row("t2", "cam", 8, 0.3), "attempt": 2, "run_id": "r4"}
    other_search = {**_row("t1", "cam", 2, 0.2), "_trial": ("another search", "t1"), "run_id": "r5"}
    rows = latest_attempts([first, second, skewed, current, other_search])
    assert sorted(r["run_id"] for r in rows) == ["r2", "r4", "r5"]
