"""What killed builds leave behind is cleaned up: by the next build of the same key, or by `wsss store
clean`; published artifacts and builds still running are never touched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from tests.helpers import TINY
from wsss.cli import main
from wsss.store import MANIFEST, StageStore
from wsss.store.debris import builder_is_dead, new_attempt_name

# A build that writes a file and then hangs until it is killed.
_HANGING_BUILD = """
import sys, time
import pyarrow.fs as pafs
from wsss.store import StageStore
base, cache, remote = sys.argv[1], sys.argv[2], sys.argv[3] == "remote"
fs = pafs.SubTreeFileSystem(base, pafs.LocalFileSystem()) if remote else None
store = StageStore("store" if remote else base + "/store", cache_dir=cache, filesystem=fs)
with store.build("seed", "k1") as build:
    (build.path / "model.pt").write_bytes(b"half")
    print(build.path, flush=True)
    time.sleep(600)
"""


def _killed_build(tmp_path: Path, remote: bool) -> Path:
    """Start a build in another process and SIGKILL it mid-build; returns its attempt folder."""
    (tmp_path / "store").mkdir(exist_ok=True)
    args = [
        sys.executable,
        "-c",
        _HANGING_BUILD,
        str(tmp_path),
        str(tmp_path / "cache"),
        "remote" if remote else "local",
    ]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    attempt = Path(process.stdout.readline().strip())
    assert attempt.is_dir() and not builder_is_dead(attempt.name)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert builder_is_dead(attempt.name)
    return attempt


def _attempt_dirs(stage_dir: Path) -> list[Path]:
    return [p for key in stage_dir.iterdir() if key.is_dir() for p in key.iterdir() if p.is_dir()]


def _local(tmp_path: Path) -> StageStore:
    return StageStore(tmp_path / "store", cache_dir=tmp_path / "cache")


def _remote(tmp_path: Path) -> StageStore:
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    return StageStore("store", cache_dir=tmp_path / "cache", filesystem=fs)


def _build(store: StageStore, exclusive: bool = False) -> None:
    with store.build("seed", "k1", exclusive=exclusive) as build:
        (build.path / "model.pt").write_bytes(b"done")


@pytest.mark.parametrize("remote", [False, True], ids=["local", "object-store-like"])
def test_next_build_of_the_key_removes_a_killed_attempt(tmp_path: Path, remote: bool) -> None:
    attempt = _killed_build(tmp_path, remote)
    assert attempt.parent.name == "k1" if not remote else attempt.parent.name == "staging"
    store = _remote(tmp_path) if remote else _local(tmp_path)
    _build(store)  # not exclusive: only the dead builder's attempt may go
    assert not attempt.exists()
    published = store.lookup("seed", "k1")
    assert published is not None and (published.path / "model.pt").read_bytes() == b"done"
    key_dir = tmp_path / "store" / "seed" / "k1"
    assert sorted(p.name for p in key_dir.iterdir()) == sorted([MANIFEST, published.manifest["attempt"]])


def test_an_exclusive_build_removes_every_unpublished_attempt(tmp_path: Path) -> None:
    store = _local(tmp_path)
    other_host = tmp_path / "store" / "seed" / "k1" / "20260101T000000Z-abcdef12-4242@another-node"
    other_host.mkdir(parents=True)  # a builder on another node whose lease or lock has gone
    _build(store)
    assert other_host.exists()  # without the lock, another host's attempt may be alive
    store_b = _local(tmp_path)
    with store_b.lock("seed", "k2"):
        (tmp_path / "store" / "seed" / "k2" / other_host.name).mkdir(parents=True)
        with store_b.build("seed", "k2", exclusive=True) as build:
            (build.path / "x").write_text("1")
    assert [p.name for p in (tmp_path / "store" / "seed" / "k2").iterdir() if p.is_dir()] == [
        store_b.lookup("seed", "k2").manifest["attempt"]  # type: ignore[union-attr]
    ]


def test_failed_builds_leave_no_empty_key_folder(tmp_path: Path) -> None:
    store = _local(tmp_path)
    with pytest.raises(RuntimeError), store.build("seed", "k9"):
        raise RuntimeError("boom")
    assert not (tmp_path / "store" / "seed" / "k9").exists()


def test_live_builds_are_left_alone(tmp_path: Path) -> None:
    store = _local(tmp_path)
    with store.build("seed", "k1") as outer:
        (outer.path / "model.pt").write_text("in progress")
        assert store.clean() == []  # this process holds no lock on k1, but its builder is alive
        assert outer.path.is_dir()


def test_store_clean_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    killed = _killed_build(tmp_path, remote=False)
    store = _local(tmp_path)
    _build(store)  # publishes k1 (and removes the debris of its own key)
    killed = _killed_build(tmp_path, remote=False)  # debris beside a published artifact
    (tmp_path / "store" / "refine" / "k2").mkdir(parents=True)  # an empty key folder
    workdir = ["--workdir", str(tmp_path), "--store", str(tmp_path / "store")]
    assert main(["store", "clean", *workdir, "--dry-run"]) == 0
    assert f"would remove {killed}" in capsys.readouterr().out and killed.exists()
    assert main(["store", "clean", *workdir]) == 0
    assert "1 leftover(s)" in capsys.readouterr().out
    assert not killed.exists() and not (tmp_path / "store" / "refine" / "k2").exists()
    assert (store.lookup("seed", "k1").path / "model.pt").read_bytes() == b"done"  # type: ignore[union-attr]


def test_old_unpublished_attempts_on_object_stores(tmp_path: Path) -> None:
    store = _remote(tmp_path)
    old = tmp_path / "store" / "seed" / "k3" / "20200101T000000Z-abcdef12-4242@another-node"
    fresh = tmp_path / "store" / "seed" / "k3" / new_attempt_name().replace(f"{os.getpid()}@", "4242@x")
    for attempt in (old, fresh):
        attempt.mkdir(parents=True)
        (attempt / "f").write_text("1")
    removed = store.clean(older_than=3600)
    assert removed == [f"store/seed/k3/{old.name}"] and fresh.exists()


def test_a_wsss_run_killed_mid_seed_is_rebuilt_without_debris(tiny_data_dir: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "wsss.cli", "-q", "run", "--data", str(tiny_data_dir), "--set", *TINY]
    env = {**os.environ, "WSSS_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seed = tmp_path / "wsss-work" / "store" / "seed"
    deadline = time.monotonic() + 120
    while not (seed.is_dir() and _attempt_dirs(seed)):
        assert process.poll() is None and time.monotonic() < deadline, "the seed stage never started"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    (killed,) = _attempt_dirs(seed)
    again = subprocess.run(
        [*args, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert not summary["stages"]["seed"]["cached"] and not killed.exists()
    key_dir = seed / summary["stages"]["seed"]["key"]
    assert sorted(p.name for p in key_dir.iterdir()) == sorted(
        [MANIFEST, Path(summary["stages"]["seed"]["path"]).name]
    )


def _published_workdir(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A working folder as `wsss run` leaves it: WORKDIR/store with published artifacts, WORKDIR/cache."""
    store = StageStore(tmp_path / "w" / "store", cache_dir=tmp_path / "w" / "cache")
    for stage in ("seed", "refine", "segment"):
        with store.build(stage, f"{stage}-key") as build:
            (build.path / "model.pt").write_bytes(b"weights")
    (tmp_path / "w" / "cache").mkdir(exist_ok=True)
    return tmp_path / "w", sorted((tmp_path / "w").rglob("*"))


@pytest.mark.parametrize("command", ["clean", "gc"])
def test_clean_and_gc_refuse_a_folder_that_is_not_a_store(
    tmp_path: Path, tiny_data_dir: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """`--store WORKDIR` (beside `wsss-tune --storage WORKDIR`) or a dataset: nothing is removed and no
    lock file is left, where the store's own debris rules would have taken the artifacts for attempts."""
    workdir, before = _published_workdir(tmp_path)
    dataset = Path(shutil.copytree(tiny_data_dir, tmp_path / "VOCdevkit"))
    dataset_before = sorted(dataset.rglob("*"))
    extra = ["--older-than-days", "0", "--apply"] if command == "gc" else []
    for folder in (workdir, dataset):
        capsys.readouterr()
        assert main(["store", command, "--store", str(folder), *extra]) == 2
        assert f"{folder}: not a stage store" in capsys.readouterr().err
    assert sorted(workdir.rglob("*")) == before and sorted(dataset.rglob("*")) == dataset_before


def test_clean_takes_only_what_builds_made(tmp_path: Path) -> None:
    store = _local(tmp_path)
    _build(store)
    key = tmp_path / "store" / "seed" / "k1"
    foreign = key / "notes"  # not an attempt's name: not the store's to remove
    foreign.mkdir()
    unlocked = tmp_path / "store" / "seed" / "k5" / "20200101T000000Z-abcdef12-4242@another-node"
    unlocked.mkdir(parents=True)  # a key no build of this store ever locked
    assert store.clean() == []  # without the lock, another node's attempt may be alive
    assert foreign.is_dir() and unlocked.is_dir()
    assert not (tmp_path / "store" / "seed" / "k5.lock").exists()  # looking never creates a lock


def test_a_store_of_an_earlier_version_is_recognised_and_marked(tmp_path: Path) -> None:
    store = _local(tmp_path)
    _build(store)
    (tmp_path / "store" / "wsss-store.json").unlink()  # as stores made before the marker
    reopened = _local(tmp_path)
    assert (tmp_path / "store" / "wsss-store.json").is_file()
    assert reopened.lookup("seed", "k1") is not None and reopened.clean() == []
