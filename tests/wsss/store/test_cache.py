"""A node's cache of downloaded stage artifacts stays under its byte budget, least recently used
copies first, and never loses a copy that was used in the last `grace` seconds."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow.fs as pafs

from wsss.store import StageStore
from wsss.store.cache import trim


def _copy(root: Path, name: str, size: int, used_ago: float) -> Path:
    path = root / "seed" / name
    path.mkdir(parents=True)
    (path / "model.pt").write_bytes(b"w" * size)
    stamp = time.time() - used_ago
    os.utime(path, (stamp, stamp))
    return path


def test_trim_removes_least_recently_used_first_and_spares_recent_ones(tmp_path: Path) -> None:
    old = _copy(tmp_path, "a-old", 1000, used_ago=90_000)
    older = _copy(tmp_path, "b-older", 1000, used_ago=99_000)
    recent = _copy(tmp_path, "c-recent", 1000, used_ago=10)
    assert trim(tmp_path, max_bytes=2500, dry_run=True) == [older] and older.exists()
    assert trim(tmp_path, max_bytes=2500) == [older] and not older.exists()
    assert trim(tmp_path, max_bytes=0) == [old]  # the recent copy stays even over budget
    assert recent.exists() and trim(tmp_path, max_bytes=0, grace=0) == [recent]


def test_a_lookup_marks_its_copy_as_used(tmp_path: Path) -> None:
    fs = pafs._MockFileSystem()
    store = StageStore("bucket/store", tmp_path / "cache", filesystem=fs)
    for key in ("k1", "k2"):
        with store.build("seed", key) as build:
            (build.path / "model.pt").write_bytes(b"w" * 1000)
    copies = sorted((tmp_path / "cache" / "store" / "seed").iterdir())
    for copy in copies:
        os.utime(copy, (time.time() - 90_000, time.time() - 90_000))
    store.lookup("seed", "k1")  # used again now: the other one goes first
    removed = store.trim_cache(max_bytes=1500)
    assert [p.name.split("-")[0] for p in removed] == ["k2"]
    assert store.lookup("seed", "k1") is not None
