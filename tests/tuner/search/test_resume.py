"""An interrupted search (Ctrl-C on the driver process) continues with `wsss-tune resume`, on a "new
head": from a copy of its storage folder and MLflow database in another directory, with the original
folder and the space file gone, and the new tracking URI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.tuner.helpers import write_space
from tuner.search.searcher import StageAwareOptunaSearch
from tuner.tracking.results import leaderboard

pytestmark = pytest.mark.ray  # starts a Ray cluster (or a Tune run on one); not in the fast lane

SAMPLES = 6


def _trial_states(uri: str) -> tuple[int, int]:
    """(ended, running) trial runs so far."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("resume-test")
    if experiment is None:
        return 0, 0
    runs = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
    running = sum(r.info.status == "RUNNING" for r in runs)
    return len(runs) - running, running


def _attempts(store: Path) -> dict[str, list[str]]:
    return {
        f"{stage.name}/{key.name}": sorted(p.name for p in key.iterdir() if p.is_dir())
        for stage in store.iterdir()
        if stage.is_dir()  # not the store's marker file
        for key in stage.iterdir()
        if key.is_dir()
    }


def test_interrupted_search_resumes_without_recomputing_stored_stages(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    space = write_space(tmp_path, "resume", params={"refine.beta": {"float": [4.0, 16.0]}})
    storage = tmp_path / "storage"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "WSSS_CACHE_DIR": str(tmp_path / "cache"), "MLFLOW_TRACKING_URI": uri}
    common = ["--experiment", "resume-test", "--storage", str(storage)]
    search = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuner.cli.main",
            "search",
            str(space),
            "--samples",
            str(SAMPLES),
            "--data",
            str(tiny_data_dir),
            "--reduction-factor",
            "100",
            *common,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 240
    while (states := _trial_states(uri))[0] < 2 or states[1] == 0:  # Ctrl-C while a trial runs
        assert search.poll() is None, search.stdout.read() if search.stdout else ""
        assert time.monotonic() < deadline, "the search did not get going"
        time.sleep(0.1)
    search.send_signal(signal.SIGINT)
    out, _ = search.communicate(timeout=120)
    assert search.returncode == 130, out
    assert "continue with `wsss-tune resume --experiment" in out
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("resume-test")
    parent = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'search'")[0]
    assert parent.info.status == "KILLED"
    ended_before = _trial_states(uri)[0]
    assert 2 <= ended_before < SAMPLES

    # A new head: the storage folder and the database copied elsewhere, the old ones and the space gone.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(storage, elsewhere / "storage")
    shutil.copy(tmp_path / "mlflow.db", elsewhere / "mlflow.db")
    shutil.rmtree(storage)
    space.unlink()
    before = _attempts(elsewhere / "storage" / "store")
    new_uri = f"sqlite:///{elsewhere / 'mlflow.db'}"
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner.cli.main",
            "resume",
            "--experiment",
            "resume-test",
            "--storage",
            "storage",
        ],
        capture_output=True,
        text=True,
        env={**env, "MLFLOW_TRACKING_URI": new_uri},
        cwd=elsewhere,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert client.get_run(parent.info.run_id).info.status == "KILLED"  # the old database was left alone
    client = MlflowClient(new_uri)
    runs = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
    assert len(runs) == SAMPLES and {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    rerun = [r for r in runs if r.data.tags["wsss.attempt"] != "1"]
    assert rerun  # the trials cut off by Ctrl-C ran again, continuing their own runs
    assert all(r.data.tags["wsss.status"] in ("finished", "pruned") for r in rerun)
    assert len(leaderboard(client, "resume-test")) == SAMPLES  # one row per trial
    resumed_parent = client.get_run(parent.info.run_id)
    assert resumed_parent.info.status == "FINISHED"
    assert resumed_parent.data.tags["wsss.tune_path"] == str(
        elsewhere / "storage" / "tune" / _name(resumed_parent)
    )
    after = _attempts(elsewhere / "storage" / "store")
    assert all(after[key] == attempts for key, attempts in before.items())  # nothing stored was rebuilt
    searcher = StageAwareOptunaSearch(metric="objective", mode="max", final_iteration=3)
    searcher.restore_from_dir(resumed_parent.data.tags["wsss.tune_path"])
    assert len(searcher._ot_study.trials) == SAMPLES  # the sampler carried on where it stopped


def _name(parent: object) -> str:
    return json.loads(parent.data.tags["wsss.options"])["name"]  # type: ignore[attr-defined]
