"""A node's cache of downloaded stage artifacts stays under its byte budget, least recently used
copies first, and never loses a copy that a live process holds (a trial reading it, for however long),
whatever its age; a process that ends, however it ends, lets its copies go."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs

from wsss.store import StageStore
from wsss.store.cache import hold, trim


def _copy(root: Path, name: str, size: int, used_ago: float) -> Path:
    path = root / "seed" / name
    path.mkdir(parents=True)
    (path / "model.pt").write_bytes(b"w" * size)
    stamp = time.time() - used_ago
    os.utime(path, (stamp, stamp))
    return path


def test_trim_removes_least_recently_used_first_and_spares_held_ones(tmp_path: Path) -> None:
    old = _copy(tmp_path, "a-old", 1000, used_ago=90_000)
    older = _copy(tmp_path, "b-older", 1000, used_ago=99_000)
    oldest = _copy(tmp_path, "c-oldest", 1000, used_ago=200_000)
    reading = hold(tmp_path, "seed/c-oldest")  # a trial reads the oldest copy, for hours
    assert trim(tmp_path, max_bytes=2500, dry_run=True) == [older] and older.exists()
    assert trim(tmp_path, max_bytes=2500) == [older] and not older.exists()
    assert trim(tmp_path, max_bytes=0) == [old]  # the held copy stays even over budget
    assert oldest.exists()
    reading.close()  # the trial is done with it
    assert trim(tmp_path, max_bytes=0) == [oldest]


def test_a_dead_process_holds_nothing(tmp_path: Path) -> None:
    copy = _copy(tmp_path, "k-1", 1000, used_ago=10)
    script = (
        "import os, sys; from pathlib import Path; from wsss.store.cache import hold; "
        "hold(Path(sys.argv[1]), 'seed/k-1'); print('held', flush=True); os._exit(0)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.wait(timeout=60)  # killed or crashed alike: the kernel drops its lock
    assert trim(tmp_path, max_bytes=0) == [copy]


def test_a_store_holds_the_copies_it_handed_out_until_released(tmp_path: Path) -> None:
    fs = pafs._MockFileSystem()
    builder = StageStore("bucket/store", tmp_path / "cache", filesystem=fs)
    for key in ("k1", "k2"):
        with builder.build("seed", key) as build:
            (build.path / "model.pt").write_bytes(b"w" * 1000)
    assert builder.trim_cache(max_bytes=0) == []  # the builder still holds what it built
    builder.release_copies()
    for copy in (tmp_path / "cache" / "store" / "seed").iterdir():
        os.utime(copy, (time.time() - 90_000, time.time() - 90_000))
    reader = StageStore("bucket/store", tmp_path / "cache", filesystem=fs)  # a later trial
    reader.lookup("seed", "k1")  # used again now, and held: the other one goes first
    removed = StageStore("bucket/store", tmp_path / "cache", filesystem=fs).trim_cache(max_bytes=0)
    assert [p.name.split("-")[0] for p in removed] == ["k2"]
    assert reader.lookup("seed", "k1") is not None and reader.lookup("seed", "k2") is not None  # again
