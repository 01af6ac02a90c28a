"""`wsss-tune` as a user runs it (the search commands themselves are exercised in test_search/test_resume)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_SPACES = Path(__file__).resolve().parents[3] / "search_spaces"


def test_cli_spaces_check(tmp_path: Path) -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner.cli.main",
            "spaces",
            "check",
            *map(str, sorted(REPO_SPACES.glob("*.yaml"))),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and "0 problem(s)" in ok.stdout, ok.stderr
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump({"method": "cam", "params": {"refine.beta": {"float": [4, 2]}}})
    )
    bad = subprocess.run(
        [sys.executable, "-m", "tuner.cli.main", "spaces", "check", str(tmp_path / "bad.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "1 problem(s)" in bad.stdout
    assert f"{tmp_path / 'bad.yaml'}: refine.beta: low 4 must be below high 2" in bad.stderr


def test_cli_spaces_check_on_a_preset_shows_its_values(tmp_path: Path) -> None:
    """`spaces check --config voc12` prints what each range samples on the preset; a range that
    cannot give the preset's own value is reported, and fails the check with --strict."""

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tuner.cli.main", "spaces", "check", "--config", "voc12", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    ok = check(*map(str, sorted(REPO_SPACES.glob("*.yaml"))))
    assert ok.returncode == 0 and "0 problem(s), 0 range(s) excluding the base value" in ok.stdout, ok.stderr
    lines = ok.stdout.splitlines()
    assert any(
        "seed.train.lr" in x and "log-uniform [0.02, 0.4]" in x and "x[0.2, 4.0] of 0.1" in x for x in lines
    )
    assert any("segment.train.lr" in x and "[6.25e-05, 0.000625]" in x for x in lines)
    old = tmp_path / "segment.yaml"
    old.write_text(yaml.safe_dump({"params": {"segment.train.lr": {"float": [0.005, 0.05], "log": True}}}))
    lenient, strict = check(str(old)), check("--strict", str(old))
    assert lenient.returncode == 0 and strict.returncode == 1
    assert (
        "segment.train.lr: float log-uniform [0.005, 0.05] cannot give the base config's value"
        in strict.stderr
    )
    bad = check("--config", "nosuch", str(old))
    assert bad.returncode == 2 and "nosuch: no such config file or preset" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_reading_commands_do_not_create_databases(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner.cli.main",
            "leaderboard",
            "--experiment",
            "x",
            "--storage",
            str(tmp_path / "none"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    assert (
        result.returncode == 2 and "no MLflow database" in result.stderr and "Traceback" not in result.stderr
    )
    assert not (tmp_path / "none").exists()


def test_bad_base_config_fails_before_ray_starts(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("seed:\n  train:\n    lrr: 0.1\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner.cli.main",
            "search",
            str(REPO_SPACES / "cam.yaml"),
            "--samples",
            "1",
            "--experiment",
            "x",
            "--config",
            str(tmp_path / "base.yaml"),
            "--storage",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "base.yaml: seed.train.lrr: unknown key; did you mean 'seed.train.lr'?" in result.stderr


def test_a_tracking_server_out_of_reach_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reading commands against a server that is down: the machine's fault, exit 1, no traceback."""
    from tuner.cli.main import main

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    capsys.readouterr()
    assert main(["leaderboard", "--experiment", "x", "--tracking-uri", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("wsss-tune: error: MLflow: API request to") == 1, err
