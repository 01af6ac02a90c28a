"""One store fixture over every backend: a local folder, pyarrow's in-memory filesystem (an object
store without a server) and a real S3 API (moto's server). A store test that takes `store` runs on
each, so a backend difference fails the test that shows it."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from tests.helpers import s3_uri
from wsss.store import StageStore

BACKENDS = ("local", "memory", "s3")


def open_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> StageStore:
    if kind == "local":
        return StageStore(tmp_path / "store", cache_dir=tmp_path / "cache-local")
    if kind == "memory":
        memory = pafs._MockFileSystem()
        return StageStore("bucket/prefix", cache_dir=tmp_path / "cache-mem", filesystem=memory)
    bucket = f"store-{tmp_path.name.lower().replace('_', '-')}"[:60].rstrip("-")
    return StageStore(s3_uri(request.getfixturevalue("s3_endpoint"), bucket), cache_dir=tmp_path / "cache-s3")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StageStore:
    return open_store(request.param, tmp_path, request)
