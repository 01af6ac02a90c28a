"""`wsss-tune report` on a staged search, the parts below the CLI: each rung's rank correlation with the
next (an upstream standing for its children's mean), and the searcher state read back from Tune's
experiment folder: the latest session's, JSON only, a missing or damaged one refused by name. The
whole command on a real staged search: tests/tuner/search/test_staged_search.py."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

import wsss
from tests.helpers import s3_uri
from tuner.tracking.staged_report import _searcher_state, rung_fidelity


def test_rungs_are_ranked_against_the_next_and_an_upstream_against_its_childrens_mean() -> None:
    records: list[dict[str, float]] = [
        {"0": 0.1, "1": 0.2, "2": 0.3, "3": 0.4},  # cam
        {"0": 0.5, "1": 0.6, "2": 0.7, "3": 0.65},  # pseudo: upstream 3 falls behind 2
        {"4": 0.30, "5": 0.50, "6": 0.20, "7": 0.40},  # short: children of 0, 1, 2, 3
        {"4": 0.31},  # full: one pair is no correlation
        {},
    ]
    parents = [None, None, None, None, 0, 1, 2, 3]
    fidelity = rung_fidelity(records, parents)
    assert fidelity["rung_fidelity_cam_pseudo"] == pytest.approx(0.8)  # one swapped pair of four
    assert fidelity["rung_fidelity_cam_pseudo_pairs"] == 4
    # pseudo ranks upstreams 0 < 1 < 3 < 2, their children's short values 2 < 0 < 3 < 1
    assert fidelity["rung_fidelity_pseudo_short"] == pytest.approx(-0.4)
    assert "rung_fidelity_short_full" not in fidelity and "rung_fidelity_full_repeat" not in fidelity
    records[2]["8"] = 0.9  # a second child of upstream 0: the upstream now stands for their mean 0.6
    parents.append(0)
    # short now falls as pseudo rises: 0.6, 0.5, 0.4, 0.2 against 0.5, 0.6, 0.65, 0.7
    assert rung_fidelity(records, parents)["rung_fidelity_pseudo_short"] == pytest.approx(-1.0)


def test_the_latest_sessions_state_is_read_and_a_missing_or_damaged_one_refused(tmp_path: Path) -> None:
    folder = tmp_path / "storage" / "tune" / "search-1"
    with pytest.raises(
        wsss.ConfigError, match=r"no saved state of staged search search-1 under .*tune/search-1"
    ):
        _searcher_state("search-1", [str(tmp_path / "storage")], "exp")
    folder.mkdir(parents=True)
    (folder / "searcher-state-2026-12-07_10-00-00.pkl").write_text(json.dumps({"session": 1}))
    (folder / "searcher-state-2026-12-07_11-30-00.pkl").write_text(json.dumps({"session": 2}))
    (folder / "experiment_state-2026-12-07_11-30-00.json").write_text("{}")  # Tune's, not the searcher's
    assert _searcher_state("search-1", [str(tmp_path / "elsewhere"), str(tmp_path / "storage")], "exp") == {
        "session": 2
    }
    # a pickle (what Ray writes for its own searchers) is data, never unpickled
    (folder / "searcher-state-2026-12-07_12-00-00.pkl").write_bytes(b"\x80\x04\x95\x10\x00cos\nsystem\n")
    with pytest.raises(wsss.ConfigError, match=r"searcher-state-2026-12-07_12-00-00.pkl: not a staged"):
        _searcher_state("search-1", [str(tmp_path / "storage")], "exp")


def test_a_state_in_an_s3_storage_is_read_from_the_bucket(s3_endpoint: str) -> None:
    storage = s3_uri(s3_endpoint, "staged-report/storage")
    fs, root = pafs.FileSystem.from_uri(storage)
    fs.create_dir(f"{root}/tune/search-2")
    with fs.open_output_stream(f"{root}/tune/search-2/searcher-state-2026-12-07_09-00-00.pkl") as out:
        out.write(json.dumps({"planner": "from the bucket"}).encode())
    assert _searcher_state("search-2", [storage], "exp") == {"planner": "from the bucket"}
