"""Concurrent use of one stage store: many trials on one node fetching one artifact (threads and
processes; a local folder, pyarrow's in-memory filesystem and a real S3 API), and the build lock that
covers building only and gives a lapsed lease's build up."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from tests.helpers import s3_uri
from wsss.pipeline import _stage
from wsss.store import StageStore

PARTIES = 6


def _publish(store: StageStore, key: str = "k") -> None:
    with store.build("seed", key) as build:
        for i in range(20):
            (build.path / f"part{i}.bin").write_bytes(bytes([i]) * 50_000)
        build.meta["metrics"] = {"cam_miou": 0.5}


def _remote_stores(kind: str, tmp_path: Path, endpoint: str | None) -> tuple[StageStore, object]:
    """A store that is not a local folder (so lookups download), and how to open it again elsewhere."""
    if kind == "memory":
        fs = pafs._MockFileSystem()
        return StageStore("bucket/store", tmp_path / "cache", filesystem=fs), fs
    assert endpoint is not None
    uri = s3_uri(endpoint, f"store-{tmp_path.name.lower().replace('_', '-')}"[:60])
    return StageStore(uri, tmp_path / "cache"), uri


@pytest.mark.parametrize("kind", ["memory", "s3"])
def test_threads_fetching_one_artifact_share_one_download(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    endpoint = request.getfixturevalue("s3_endpoint") if kind == "s3" else None
    publisher, _ = _remote_stores(kind, tmp_path / "builder", endpoint)
    _publish(publisher)
    fs = publisher.fs
    store = StageStore(
        publisher.location if kind == "s3" else "bucket/store",
        tmp_path / "node",
        filesystem=None if kind == "s3" else fs,
    )
    barrier, results, errors = threading.Barrier(PARTIES), [], []

    def fetch() -> None:
        barrier.wait()
        try:
            results.append(store.lookup("seed", "k"))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(PARTIES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({a.path for a in results}) == 1
    copies = [p for p in (tmp_path / "node" / "store" / "seed").iterdir()]
    assert [p.name for p in copies] == [results[0].path.name]  # one copy, no temporary debris
    assert sum(1 for _ in results[0].path.iterdir()) == 20


def _fetch_in_process(location: str, cache: str, queue: multiprocessing.Queue) -> None:
    try:
        local = str(StageStore(location, cache).lookup("seed", "k").path)  # type: ignore[union-attr]
        queue.put(("ok", local))
    except Exception as exc:
        queue.put(("error", repr(exc)))


def test_processes_fetching_one_artifact_share_one_download(tmp_path: Path, s3_endpoint: str) -> None:
    location = s3_uri(s3_endpoint, "store-processes")
    _publish(StageStore(location, tmp_path / "builder"))
    outcomes = _in_processes(_fetch_in_process, location, str(tmp_path / "node"))
    assert {status for status, _ in outcomes} == {"ok"}, outcomes
    assert len({path for _, path in outcomes}) == 1
    assert [p.name for p in (tmp_path / "node" / "store" / "seed").iterdir()] == [Path(outcomes[0][1]).name]


def _build_in_process(location: str, cache: str, queue: multiprocessing.Queue) -> None:
    try:
        store = StageStore(location, cache)

        def compute(out: Path) -> dict[str, float]:
            (out / "model.pt").write_bytes(b"w" * 1000)
            return {"cam_miou": 0.5}

        outcome = _stage(store, store.lock, store.is_local, "seed", "k", {}, compute)
        queue.put(("ok", str(outcome.cached)))
    except Exception as exc:
        queue.put(("error", repr(exc)))


def test_processes_building_one_key_on_a_local_store_build_it_once(tmp_path: Path) -> None:
    outcomes = _in_processes(_build_in_process, str(tmp_path / "store"), str(tmp_path / "cache"))
    assert sorted(outcomes) == [("ok", "False")] + [("ok", "True")] * 3, outcomes
    attempts = [p for p in (tmp_path / "store" / "seed" / "k").iterdir() if p.is_dir()]
    assert len(attempts) == 1


def _in_processes(target: object, *args: str) -> list[tuple[str, str]]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=target, args=(*args, queue)) for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = [queue.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    return outcomes


class _Lease:
    def __init__(self, held: bool) -> None:
        self._held = held

    def held(self) -> bool:
        return self._held


class _RecordingLock:
    """A build lock that records when it is held, and whose leases may lapse on demand."""

    def __init__(self, leases_held: list[bool], on_enter: object = None) -> None:
        self.leases_held, self.on_enter, self.inside, self.entered = leases_held, on_enter, False, 0

    @contextlib.contextmanager
    def __call__(self, stage: str, key: str) -> Iterator[_Lease]:
        self.entered += 1
        if callable(self.on_enter):
            self.on_enter()
        self.inside = True
        try:
            yield _Lease(self.leases_held.pop(0) if self.leases_held else True)
        finally:
            self.inside = False


class _WatchedStore(StageStore):
    """A remote store that records whether the build lock was held during each download."""

    lock_watch: _RecordingLock | None = None
    downloads_under_lock: list[bool]

    def _download(self, stage, key, remote, manifest):  # type: ignore[no-untyped-def]
        self.downloads_under_lock.append(bool(self.lock_watch and self.lock_watch.inside))
        return super()._download(stage, key, remote, manifest)


def test_an_artifact_published_while_waiting_is_downloaded_after_the_lock(tmp_path: Path) -> None:
    fs = pafs._MockFileSystem()
    store = _WatchedStore("bucket/store", tmp_path / "node", filesystem=fs)
    store.downloads_under_lock = []
    other = StageStore("bucket/store", tmp_path / "other", filesystem=fs)
    lock = _RecordingLock([], on_enter=lambda: _publish(other))  # the other builder finishes meanwhile
    store.lock_watch = lock
    computed = []
    outcome = _stage(store, lock, True, "seed", "k", {}, lambda out: computed.append(out) or {})
    assert outcome.cached and computed == [] and lock.entered == 1
    assert store.downloads_under_lock == [False]


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_a_build_whose_lease_lapsed_is_abandoned_and_the_stage_built_once(kind: str, tmp_path: Path) -> None:
    if kind == "local":
        store = StageStore(tmp_path / "store", tmp_path / "cache")
    else:
        store = StageStore("bucket/store", tmp_path / "cache", filesystem=pafs._MockFileSystem())
    lock = _RecordingLock([False, True])  # the first lease lapses during its build
    builds: list[Path] = []

    def compute(out: Path) -> dict[str, float]:
        builds.append(out)
        (out / "model.pt").write_bytes(b"w" * len(builds))
        return {"cam_miou": float(len(builds))}

    outcome = _stage(store, lock, True, "seed", "k", {}, compute)
    assert len(builds) == 2 and not builds[0].exists()  # the abandoned build left nothing behind
    assert not outcome.cached and outcome.metrics == {"cam_miou": 2.0}
    manifest = store.read_manifest("seed", "k")
    assert manifest is not None and manifest["metrics"] == {"cam_miou": 2.0}
    if kind == "local":
        attempts = [p for p in (tmp_path / "store" / "seed" / "k").iterdir() if p.is_dir()]
        assert [p.name for p in attempts] == [manifest["attempt"]]


def test_a_stage_that_keeps_losing_its_lease_fails_clearly(tmp_path: Path) -> None:
    store = StageStore(tmp_path / "store", tmp_path / "cache")
    lock = _RecordingLock([False, False, False])
    with pytest.raises(Exception, match="could not be built or fetched"):
        _stage(store, lock, True, "seed", "k", {}, lambda out: {})
    assert store.read_manifest("seed", "k") is None
