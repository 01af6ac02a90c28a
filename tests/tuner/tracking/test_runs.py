"""The tracking database as searches meet it: two searches starting at once on a new database (MLflow
migrates a new sqlite file's schema on first use, and two migrations at once break one of them)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

# Each process waits for the same start time, then opens the database and creates the experiment.
_START_A_SEARCH = """
import sys, time
from pathlib import Path
from tuner.tracking.runs import ensure_experiment, tracking_database
uri, start = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
with tracking_database(uri) as client:
    print(ensure_experiment(client, "together", Path(sys.argv[3])))
"""


def test_two_searches_of_one_new_experiment_started_together(tmp_path: Path) -> None:
    """Without the lock the second process failed every time (3 of 3: "duplicate column name")."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.time() + 6  # both interpreters have imported MLflow by then
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _START_A_SEARCH, uri, str(start), str(tmp_path / "artifacts")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=180) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in results]
    ids = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(ids) == 1  # one experiment, created once
