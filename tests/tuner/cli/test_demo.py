"""`wsss-tune demo` start to finish, shrunk to a tiny dataset; the full-size demo is measured separately."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tuner.cli.demo import DEMO_SPACE
from tuner.spaces.space import load_search

pytestmark = pytest.mark.ray  # starts a Ray cluster (or a Tune run on one); not in the fast lane


def test_demo_space_shares_seed_configs() -> None:
    """Six trials over two seed configurations: at least two trials must share one."""
    space = load_search([DEMO_SPACE]).spaces[0]
    seed_params = [p for p in space.params if p.key.startswith("seed.")]
    assert len(seed_params) == 1 and len(seed_params[0].distribution.choices) == 2


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "WSSS_CACHE_DIR": str(tmp_path / "cache"), "MLFLOW_TRACKING_URI": ""}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner.cli.main",
            "demo",
            "--workdir",
            str(tmp_path / "demo"),
            "--samples",
            "3",
            "--train",
            "12",
            "--val",
            "6",
            "--size",
            "64",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "wsss-demo: " in result.stdout and "stage compute:" in result.stdout
    link = "in MLflow's UI: http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning&"
    assert link in result.stdout
    assert "(after `mlflow ui --backend-store-uri sqlite:////" in result.stdout
    best = yaml.safe_load((tmp_path / "demo" / "best.yaml").read_text())
    assert best["provenance"]["experiment"] == "wsss-demo" and best["seed"]["method"] == "cam"
    assert (tmp_path / "demo" / "mlflow.db").is_file() and (
        tmp_path / "demo" / "demo-data" / "synth.json"
    ).is_file()
