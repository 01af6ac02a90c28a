"""An interrupted search (Ctrl-C on the driver process) continues with `wsss-tune resume`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.tuner.conftest import write_space
from tuner.results import leaderboard
from tuner.searcher import StageAwareOptunaSearch

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
            "tuner.cli",
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
    before = _attempts(storage / "store")

    resumed = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "resume", *common],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
    current = [r for r in runs if r.data.tags.get("wsss.superseded") != "true"]
    assert len(current) == SAMPLES and {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    superseded = [r for r in runs if r.data.tags.get("wsss.superseded") == "true"]
    assert superseded  # the trials cut off by Ctrl-C ran again under new runs...
    for run in superseded:  # ...and their own runs were not rewritten as FINISHED by the rerun
        assert run.info.status == "KILLED" and run.data.tags["wsss.status"] == "interrupted"
    assert len(leaderboard(client, "resume-test")) == SAMPLES  # one row per trial
    assert len(leaderboard(client, "resume-test", all_attempts=True)) == len(runs)
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    after = _attempts(storage / "store")
    assert all(after[key] == attempts for key, attempts in before.items())  # nothing stored was rebuilt
    searcher = StageAwareOptunaSearch(metric="objective", mode="max", final_iteration=3)
    searcher.restore_from_dir(parent.data.tags["wsss.tune_path"])
    assert len(searcher._ot_study.trials) == SAMPLES  # the sampler carried on where it stopped
