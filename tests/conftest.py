"""Shared fixtures: a tiny synthetic VOC-layout dataset and a pipeline config small enough for seconds."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wsss.config import PipelineConfig
from wsss.config_load import load_config
from wsss.data.synth import SynthSpec, generate

# Every stage trains one short epoch on 48 px crops of 64 px images with the tiny timm test backbone.
TINY = [
    "seed.train.epochs=1",
    "seed.train.batch_size=4",
    "seed.train.crop_size=48",
    "seed.train.resize_long=[48,64]",
    "seed.scales=[1.0,0.5]",
    "refine.train.epochs=1",
    "refine.train.batch_size=4",
    "refine.train.crop_size=48",
    "refine.train.resize_long=[48,64]",
    "refine.logt=2",
    "segment.train.epochs=1",
    "segment.train.batch_size=4",
    "segment.train.crop_size=48",
    "segment.train.resize_long=[48,64]",
    "segment.aspp_rates=[2,4]",
    "runtime.progress=false",
    "runtime.threads=1",
]
TINY_SPEC = SynthSpec(train=12, val=6, size=64, classes=3, seed=7)


def tiny_config(*extra: str) -> PipelineConfig:
    return load_config(None, [*TINY, *extra])


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


def s3_uri(endpoint: str, path: str) -> str:
    """An s3:// URI on the moto server that pyarrow (and so the stage store and Ray Tune) can open."""
    return f"s3://{path}?endpoint_override={endpoint}&scheme=http&region=us-east-1&allow_bucket_creation=true"


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
