"""Helpers the tuner tests share (conftest.py holds only fixtures): a tiny method space whose trials
take a second or two, and an `mlflow server` process on loopback (sqlite backend, served artifacts)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

TINY_FIXED = {
    "seed.train.epochs": 1,
    "seed.train.batch_size": 4,
    "seed.train.crop_size": 48,
    "seed.train.resize_long": [48, 64],
    "seed.scales": [1.0, 0.5],
    "refine.train.epochs": 1,
    "refine.train.batch_size": 4,
    "refine.train.crop_size": 48,
    "refine.train.resize_long": [48, 64],
    "segment.train.epochs": 1,
    "segment.train.batch_size": 4,
    "segment.train.crop_size": 48,
    "segment.train.resize_long": [48, 64],
    "segment.aspp_rates": [2, 4],
}


def write_space(folder: Path, name: str = "tiny", params: dict | None = None, **extra: object) -> Path:
    """A method space with the tiny schedule fixed and a few knobs to search."""
    space = {
        "name": name,
        "method": "cam",
        "metric": "val_miou",
        "mode": "max",
        "fixed": TINY_FIXED,
        "params": params
        if params is not None
        else {"refine.beta": {"float": [4.0, 16.0]}, "refine.logt": {"int": [2, 4]}},
        **extra,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """An `mlflow server` process on 127.0.0.1 (sqlite backend, proxied artifacts) that a test may
    stop and start again on the same port and database, as an operator restarts a tracking server.
    It inherits the environment as it starts (an S3 endpoint for artifacts on moto, say)."""

    def __init__(self, root: Path, artifacts: str | None = None) -> None:
        self.root, self.port = root, _free_port()
        self.artifacts = artifacts or str(root / "artifacts")  # a folder, or s3://... (moto)
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            self.artifacts,
            "--serve-artifacts",
            "--workers",
            "1",
        ]
        with (self.root / "server.log").open("a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.25)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def interrupt_when(search: subprocess.Popen, busy: Callable[[], bool], timeout: float) -> str:
    """Ctrl-C a `wsss-tune search` process once `busy()` says it is where the test wants it (it must
    still be running then); returns its output after it exited with 130, as an interrupted search does."""
    deadline = time.monotonic() + timeout
    while not busy():
        assert search.poll() is None, search.stdout.read() if search.stdout else ""
        assert time.monotonic() < deadline, "the search did not get going"
        time.sleep(0.1)
    search.send_signal(signal.SIGINT)
    out, _ = search.communicate(timeout=120)
    assert search.returncode == 130, out
    return out
