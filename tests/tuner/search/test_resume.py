"""A search on S3 as a cluster runs one (issue 25 item 6): the stage store and Tune's state under
`--storage s3://...`, MLflow's artifacts proxied by its server into the bucket, all on a real S3 API
(moto's server). Interrupted (Ctrl-C on the driver), it continues with `wsss-tune resume` on a "new
head": another working folder, the space file gone, the tracking database backed up to the bucket
and restored under a new tracking server, as cluster.yaml's head does.

The S3 endpoint reaches pyarrow (store, Tune) and boto3 (MLflow, the backup) the way AWS's own
settings do, through AWS_ENDPOINT_URL_S3: no code path here knows it talks to moto.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from mlflow.tracking import MlflowClient

from tests.tuner.helpers import MlflowServer, interrupt_when, write_space
from tuner.search.searcher import StageAwareOptunaSearch
from tuner.tracking.results import leaderboard

pytestmark = pytest.mark.ray  # starts a Ray cluster (or a Tune run on one); not in the fast lane

SAMPLES = 6
BUCKET = "resume-bucket"


def _trial_states(uri: str) -> tuple[int, int]:
    """(ended, running) trial runs so far."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("resume-test")
    if experiment is None:
        return 0, 0
    runs = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
    running = sum(r.info.status == "RUNNING" for r in runs)
    return len(runs) - running, running


def _listing(fs: pafs.FileSystem, root: str) -> list[str]:
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(f.path.removeprefix(root + "/") for f in found if f.type == pafs.FileType.File)


def _attempts(fs: pafs.FileSystem) -> dict[str, set[str]]:
    """Stored stage attempts: `<stage>/<key>` -> its attempt folders (from their manifests' files)."""
    out: dict[str, set[str]] = {}
    for path in _listing(fs, f"{BUCKET}/wsss/store"):
        parts = path.split("/")
        if len(parts) >= 4:  # <stage>/<key>/<attempt>/<file>
            out.setdefault(f"{parts[0]}/{parts[1]}", set()).add(parts[2])
    return out


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuner.cli.main", *args]


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> pafs.FileSystem:
    """The bucket, and the S3 endpoint in this process's environment (servers and Ray inherit it)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{s3_endpoint}")
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint, scheme="http", region="us-east-1")
    pafs.S3FileSystem(
        endpoint_override=s3_endpoint, scheme="http", region="us-east-1", allow_bucket_creation=True
    ).create_dir(BUCKET)
    return fs


def test_a_search_on_s3_resumes_on_a_new_head_without_recomputing_stored_stages(
    s3: pafs.FileSystem, tiny_data_dir: Path, tmp_path: Path
) -> None:
    space = write_space(tmp_path, "resume", params={"refine.beta": {"float": [4.0, 16.0]}})
    storage = f"s3://{BUCKET}/wsss"
    head = MlflowServer(tmp_path / "head", artifacts=f"{storage}/mlflow")
    (tmp_path / "head").mkdir()
    head.start()
    env = {**os.environ, "WSSS_CACHE_DIR": str(tmp_path / "cache"), "MLFLOW_TRACKING_URI": head.url}
    try:
        search = subprocess.Popen(
            _cli(
                "search",
                str(space),
                *("--samples", str(SAMPLES), "--data", str(tiny_data_dir), "--reduction-factor", "100"),
                *("--experiment", "resume-test", "--storage", storage),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        # Ctrl-C while a trial runs, two having ended.
        out = interrupt_when(search, lambda: (s := _trial_states(head.url))[0] >= 2 and s[1] > 0, 240)
        assert "continue with `wsss-tune resume --experiment" in out
        client = MlflowClient(head.url)
        experiment = client.get_experiment_by_name("resume-test")
        parent = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'search'")[0]
        assert parent.info.status == "KILLED"
        assert 2 <= _trial_states(head.url)[0] < SAMPLES
        backup = f"{storage}/mlflow.db"
        saved = subprocess.run(
            _cli("db", "backup", "--db", str(head.root / "mlflow.db"), "--remote", backup),
            capture_output=True,
            text=True,
            env=env,
        )
        assert saved.returncode == 0, saved.stderr
    finally:
        head.stop()

    # A new head: another folder, the space file gone, the database restored from the bucket.
    space.unlink()
    before = _attempts(s3)
    assert before  # stages built before the Ctrl-C, in the bucket
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    restored = subprocess.run(
        _cli("db", "restore", "--db", str(elsewhere / "mlflow.db"), "--remote", backup),
        capture_output=True,
        text=True,
        env=env,
    )
    assert restored.returncode == 0, restored.stderr
    new_head = MlflowServer(elsewhere, artifacts=f"{storage}/mlflow")
    new_head.start()
    try:
        resumed = subprocess.run(
            _cli("resume", "--experiment", "resume-test", "--storage", storage),
            capture_output=True,
            text=True,
            env={**env, "MLFLOW_TRACKING_URI": new_head.url},
            cwd=elsewhere,
            timeout=400,
        )
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        client = MlflowClient(new_head.url)
        runs = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
        assert len(runs) == SAMPLES and {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
        rerun = [r for r in runs if r.data.tags["wsss.attempt"] != "1"]
        assert rerun  # the trials cut off by Ctrl-C ran again, continuing their own runs
        assert all(r.data.tags["wsss.status"] in ("finished", "pruned") for r in rerun)
        assert len(leaderboard(client, "resume-test")) == SAMPLES  # one row per trial
        resumed_parent = client.get_run(parent.info.run_id)
        assert resumed_parent.info.status == "FINISHED"
        name = json.loads(resumed_parent.data.tags["wsss.options"])["name"]
        tune_path = resumed_parent.data.tags["wsss.tune_path"]
        assert tune_path == f"{storage}/tune/{name}"
        # Every trial's config and stage reports went through the server into the bucket.
        artifacts = _listing(s3, f"{BUCKET}/wsss/mlflow")
        assert sum(p.endswith("/config.yaml") for p in artifacts) == SAMPLES
    finally:
        new_head.stop()
    after = _attempts(s3)
    assert all(after[key] == attempts for key, attempts in before.items())  # nothing stored was rebuilt
    local = tmp_path / "tune-state"
    pafs.copy_files(tune_path.removeprefix("s3://"), str(local), source_filesystem=s3)
    searcher = StageAwareOptunaSearch(metric="objective", mode="max", final_iteration=3)
    searcher.restore_from_dir(str(local))
    assert len(searcher._ot_study.trials) == SAMPLES  # the sampler carried on where it stopped
