"""The tracking database outlives its head: backed up to an object store (a real S3 API) while a
server could be writing it, restored on a "new head", and the leaderboard is back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from tests.conftest import s3_uri
from tuner.cli import main as tune_main
from tuner.results import leaderboard


def _experiment(db: Path) -> None:
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.create_experiment("durable", artifact_location=(db.parent / "a").as_uri())
    parent = client.create_run(experiment, tags={"wsss.role": "search", "wsss.metric": "val_miou"})
    client.log_batch(parent.info.run_id, params=[Param("mode", "max")])
    for i in range(3):
        tags = {"wsss.role": "trial", "mlflow.parentRunId": parent.info.run_id, "wsss.trial_id": f"t{i}"}
        run = client.create_run(experiment, run_name=f"trial_{i}", tags=tags)
        client.log_batch(run.info.run_id, metrics=[Metric("val_miou", 0.1 * i, 0, 3)])
        client.set_terminated(run.info.run_id, "FINISHED")


def test_backup_then_restore_on_a_new_head_brings_the_leaderboard_back(
    tmp_path: Path, s3_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old_head, new_head = tmp_path / "old-head" / "mlflow.db", tmp_path / "new-head" / "mlflow.db"
    old_head.parent.mkdir()
    _experiment(old_head)
    remote = s3_uri(s3_endpoint, "durable/wsss/mlflow.db")
    with sqlite3.connect(old_head):  # another connection open (the server) does not stop a backup
        assert tune_main(["db", "backup", "--db", str(old_head), "--remote", remote]) == 0
    old_head.unlink()  # `ray down`: the head's disk is gone

    assert tune_main(["db", "restore", "--db", str(new_head), "--remote", remote]) == 0
    rows = leaderboard(MlflowClient(f"sqlite:///{new_head}"), "durable")
    assert [r["trial"] for r in rows] == ["trial_2", "trial_1", "trial_0"]
    capsys.readouterr()
    assert tune_main(["db", "restore", "--db", str(new_head), "--remote", remote]) == 2  # never clobbers
    assert "already there; pass --force" in capsys.readouterr().err
    assert tune_main(["db", "restore", "--db", str(new_head), "--remote", remote, "--force"]) == 0


def test_first_start_without_a_backup_and_bad_inputs(
    tmp_path: Path, s3_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = s3_uri(s3_endpoint, "durable/empty/mlflow.db")
    db = tmp_path / "mlflow.db"
    assert tune_main(["db", "restore", "--db", str(db), "--remote", remote, "--missing-ok"]) == 0
    assert not db.exists() and "no backup at" in capsys.readouterr().out
    assert tune_main(["db", "restore", "--db", str(db), "--remote", remote]) == 2
    assert "no such backup" in capsys.readouterr().err
    assert tune_main(["db", "backup", "--db", str(db), "--remote", remote]) == 2
    assert "no such MLflow database" in capsys.readouterr().err
    db.write_text("not a database")
    assert tune_main(["db", "backup", "--db", str(db), "--remote", remote]) == 2
    assert "cannot read it as a sqlite database" in capsys.readouterr().err
