"""A trial that runs again (a resumed search reruns its errored trials) gets a new MLflow run; the runs
of earlier attempts keep their status, the leaderboard shows one row per trial, and every listed row
exports. Also: a search-space error raised in a trial reaches MLflow whole, after crossing Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import wsss
from tests.tuner.conftest import write_space
from tuner.results import export_config, leaderboard

SAMPLES = 3


def _trial_runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], "tags.`wsss.role` = 'trial'")


def test_space_edited_mid_search_then_fixed_and_resumed(tiny_data_dir: Path, tmp_path: Path) -> None:
    space = write_space(tmp_path, "edited", params={"refine.beta": {"float": [4.0, 16.0]}})
    good = space.read_text()
    storage, uri = tmp_path / "storage", f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "WSSS_CACHE_DIR": str(tmp_path / "cache"), "MLFLOW_TRACKING_URI": uri}
    common = ["--experiment", "attempts", "--storage", str(storage)]
    command = [sys.executable, "-m", "tuner.cli", "search", str(space), "--samples", str(SAMPLES)]
    command += ["--data", str(tiny_data_dir), "--reduction-factor", "100", *common]
    search = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    client = MlflowClient(uri)
    deadline = time.monotonic() + 240
    while not _trial_runs(client, "attempts"):  # one trial at a time: the next one starts after this one
        assert search.poll() is None, search.stdout.read() if search.stdout else ""
        assert time.monotonic() < deadline, "the search did not get going"
        time.sleep(0.1)
    # The user breaks the space file while the first trial runs: the trials after it re-read it.
    space.write_text(good.replace("refine.beta", "refine.betta"))
    out, _ = search.communicate(timeout=300)
    assert search.returncode == 0, out  # the first trial finished
    runs = _trial_runs(client, "attempts")
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(runs) == SAMPLES and len(failed) == SAMPLES - 1
    for run in failed:  # the SpaceError crossed Ray whole, and was recorded by the worker itself
        assert (
            run.data.tags["wsss.error"]
            == f"{space}: refine.betta: not a config field (see `wsss config show`)"
        )

    space.write_text(good)
    resumed = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "resume", *common],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = {r.info.run_id: r for r in _trial_runs(client, "attempts")}
    assert len(runs) == SAMPLES + len(failed)
    for old in failed:  # history is kept: still FAILED, marked superseded by the rerun
        now = runs[old.info.run_id]
        assert now.info.status == "FAILED" and now.data.tags["wsss.status"] == "failed"
        assert (
            now.data.tags["wsss.superseded"] == "true"
            and now.data.tags["wsss.error"] == old.data.tags["wsss.error"]
        )
        successor = runs[now.data.tags["wsss.superseded_by"]]
        assert successor.info.status == "FINISHED" and successor.data.tags["wsss.attempt"] == "2"
        assert successor.data.tags["wsss.trial_id"] == now.data.tags["wsss.trial_id"]

    rows = leaderboard(client, "attempts")
    assert len(rows) == SAMPLES and {r["status"] for r in rows} == {"finished"}
    every = leaderboard(client, "attempts", all_attempts=True)
    assert len(every) == len(runs) and sum(r["superseded"] for r in every) == len(failed)
    for row in rows:  # every listed row exports, and the export runs as-is
        out_file = tmp_path / f"{row['run_id']}.yaml"
        provenance = export_config(client, "attempts", 1, out_file, run_id=row["run_id"])
        assert provenance["run_id"] == row["run_id"] and wsss.load_config(out_file).refine.beta > 0
    with pytest.raises(wsss.ConfigError, match=r"no config\.yaml to export; the trial ended before"):
        export_config(client, "attempts", 1, tmp_path / "x.yaml", run_id=failed[0].info.run_id)
    assert not (tmp_path / "x.yaml").exists()
