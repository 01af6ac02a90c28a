"""The tracking database outlives its head: backed up to an object store (a real S3 API) while a
server could be writing it, restored on a "new head", and the leaderboard is back."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from tests.helpers import s3_uri
from tuner.cli.main import main as tune_main
from tuner.tracking.results import leaderboard

pytestmark = pytest.mark.ray  # starts a Ray cluster (or a Tune run on one); not in the fast lane


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


@pytest.mark.parametrize(
    ("backup", "why"),
    [
        (lambda p: p.write_bytes(b""), "an empty file"),
        (lambda p: sqlite3.connect(p).execute("CREATE TABLE notes (t TEXT)").connection.commit(), "MLflow's"),
    ],
    ids=["0-byte", "foreign sqlite"],
)
def test_restore_with_force_never_replaces_a_database_with_what_is_not_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backup: Callable[[Path], object], why: str
) -> None:
    head = tmp_path / "head" / "mlflow.db"
    head.parent.mkdir()
    _experiment(head)
    before = head.read_bytes()
    (tmp_path / "bucket").mkdir()
    backup(tmp_path / "bucket" / "mlflow.db")
    args = ["db", "restore", "--db", str(head), "--remote", str(tmp_path / "bucket" / "mlflow.db"), "--force"]
    capsys.readouterr()
    assert tune_main(args) == 2
    err = capsys.readouterr().err
    assert "not an MLflow database" in err and why in err and "nothing restored" in err
    assert head.read_bytes() == before and [p.name for p in head.parent.iterdir()] == ["mlflow.db"]


def test_restore_into_a_read_only_folder_is_a_fault_of_the_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], read_only: Callable[[Path], Path]
) -> None:
    source = tmp_path / "old" / "mlflow.db"
    source.parent.mkdir()
    _experiment(source)
    (tmp_path / "bucket").mkdir()
    assert (
        tune_main(["db", "backup", "--db", str(source), "--remote", str(tmp_path / "bucket" / "m.db")]) == 0
    )
    target = read_only(tmp_path / "bucket") / "restored.db"  # the head's folder, read-only
    capsys.readouterr()
    assert (
        tune_main(["db", "restore", "--db", str(target), "--remote", str(tmp_path / "bucket" / "m.db")]) == 1
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("wsss-tune: error: ") == 1
    assert f"{target}: cannot restore the backup" in err and "Read-only file system" in err


def test_a_backup_never_overwrites_a_file_that_is_not_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "mlflow.db"
    _experiment(db)
    notes = tmp_path / "notes.txt"
    notes.write_text("a week of lab notes")
    capsys.readouterr()
    assert tune_main(["db", "backup", "--db", str(db), "--remote", str(notes)]) == 2
    assert "holds a file that is not a sqlite backup; not overwriting it" in capsys.readouterr().err
    assert notes.read_text() == "a week of lab notes"
    remote = tmp_path / "backup.db"
    assert tune_main(["db", "backup", "--db", str(db), "--remote", str(remote)]) == 0
    assert tune_main(["db", "backup", "--db", str(db), "--remote", str(remote)]) == 0  # replaces its own
