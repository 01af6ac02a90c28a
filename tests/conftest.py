"""Shared fixtures: tiny synthetic VOC-layout datasets, a moto S3 server, read-only folders (the helpers
they use, and that tests import, are in tests/helpers.py)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import TINY_SPEC
from wsss.data.synth import SynthSpec, generate


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention synthetic dataset shared by the session; copy it before changing it."""
    return generate(TINY_SPEC, tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture
def bad_input_workspace(
    tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    """(a copy of the tiny dataset to break, an empty scratch folder), with the working directory in
    tmp_path so that default work folders land there too: the bad-input catalogues' workspace."""
    monkeypatch.chdir(tmp_path)
    data = Path(shutil.copytree(tiny_data_dir, tmp_path / "data"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return data, scratch


@pytest.fixture(scope="session")
def varied_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Non-square images of varied sizes."""
    spec = SynthSpec(train=10, val=5, size=72, classes=3, seed=11, size_jitter=0.4)
    return generate(spec, tmp_path_factory.mktemp("data") / "varied")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API on loopback (moto's server, in a thread): `host:port` for pyarrow's S3 URIs.

    Its credentials are dummies, set in this process's environment so that child processes (Ray
    workers, trials in subprocesses) inherit them, as nodes of a cluster get them from their role.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], Path]]:
    """Makes folders read-only for the test: a read-only bind mount when the tests run as root (root
    ignores file modes, as on CI), else the write bits removed. Skips where neither can be done."""
    undo: list[Callable[[], object]] = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
            for path, mode in modes.items():
                path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
            undo.append(lambda: [path.chmod(mode) for path, mode in modes.items()])
            return folder
        mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"no read-only folder: cannot bind-mount ({mounted.stderr.decode().strip()})")
        undo.append(lambda: subprocess.run(["umount", str(folder)], check=True))
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        return folder

    yield make
    for step in reversed(undo):
        step()
