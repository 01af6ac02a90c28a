"""`wsss-tune db wait`: a cluster's head waits for its tracking server, and a server that died at start
fails the head's start with the server's own log instead of going unnoticed behind `nohup`."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tuner.cli.main import main


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_running_server_answers(mlflow_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "wait", "--uri", mlflow_server, "--timeout", "30"]) == 0
    assert f"the MLflow server at {mlflow_server} answered after" in capsys.readouterr().out


def test_a_dead_server_fails_loudly_with_its_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "mlflow.log"
    log.write_text("starting\nmlflow.exceptions.MlflowException: Detected out-of-date database schema\n")
    url = f"http://127.0.0.1:{_closed_port()}"
    assert main(["db", "wait", "--uri", url, "--timeout", "1.5", "--log", str(log)]) == 1
    err = capsys.readouterr().err
    assert f"wsss-tune: error: the MLflow server at {url} did not answer {url}/health in 1.5 s" in err
    assert "wsss-tune: error: Detected out-of-date database schema" not in err  # the log's own lines:
    assert f"wsss-tune: error: the last lines of {log}:" in err
    assert "wsss-tune: error: mlflow.exceptions.MlflowException: Detected out-of-date database schema" in err


def test_the_uri_comes_from_the_environment(
    mlflow_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert main(["db", "wait", "--timeout", "30"]) == 0
