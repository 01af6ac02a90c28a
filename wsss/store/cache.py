"""A node's local copies of a remote stage store's artifacts: downloaded once per node, safely.

Several trials on one node may want the same artifact at once (threads of one process or separate
processes). Each download holds an fcntl lock on `<cache>/.locks/<entry>.lock` (per open file, so it
excludes threads as well as processes; the kernel releases it if the holder dies), writes into a
private temporary folder and renames it into place, so a reader sees a whole copy or none. The
winner's copy is used by everyone; the others find it under the lock and never download.

A process that uses a copy holds it: a shared fcntl lock on `<cache>/.locks/<entry>.use`, kept for
as long as the StageStore that handed the copy out (the trial) lives, and released by the kernel when
the process ends however it ends. The cache grows with every artifact a node has used; `trim` keeps it
under a byte budget by removing the copies used least recently among those no process holds (a
segment stage reads its pseudo masks for hours, so an age rule could not tell a copy in use).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.fs as pafs

from wsss.errors import StoreError

log = logging.getLogger(__name__)

_LOCKS = ".locks"


def file_sizes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def _intact(folder: Path, files: dict[str, int]) -> bool:
    try:
        return all((folder / name).stat().st_size == size for name, size in files.items())
    except OSError:
        return False


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive fcntl lock on `path` (created if needed): per open file, so it excludes other
    threads as well as other processes, and the kernel releases it when the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _entry_lock(cache_root: Path, name: str) -> contextlib.AbstractContextManager[None]:
    return file_lock(cache_root / _LOCKS / f"{name}.lock")


def hold(cache_root: Path, entry: str) -> IO[str]:
    """A shared hold on the copy `entry` for as long as the returned handle stays open."""
    path = cache_root / _LOCKS / f"{entry.replace('/', '__')}.use"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a")
    fcntl.flock(handle, fcntl.LOCK_SH)
    return handle


@contextlib.contextmanager
def lock_if_free(handle: IO[Any]) -> Iterator[bool]:
    """An exclusive fcntl lock on an open file taken without waiting; yields whether it was free."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        yield False
        return
    try:
        yield True
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _unheld(cache_root: Path, entry: str) -> Iterator[bool]:
    """Whether no process holds `entry`; while the block runs, none can start to."""
    path = cache_root / _LOCKS / f"{entry.replace('/', '__')}.use"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle, lock_if_free(handle) as free:
        yield free


def _touch(path: Path) -> None:
    """Mark a copy as used now (what `trim` orders by)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def download(
    fs: pafs.FileSystem, remote: str, cache_root: Path, entry: str, manifest: dict[str, Any]
) -> Path:
    """The local copy `cache_root/entry` of the artifact folder `remote`, downloading it if needed.

    `entry` is `<stage>/<key>-<attempt>`: a published attempt never changes, so a copy is never stale.
    """
    local = cache_root / entry
    files = manifest.get("files", {})
    if local.is_dir() and _intact(local, files):
        _touch(local)
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    with _entry_lock(cache_root, entry.replace("/", "__")):
        if local.is_dir() and _intact(local, files):  # another trial on this node downloaded it meanwhile
            _touch(local)
            return local
        if local.is_dir():
            log.warning("node copy %s is damaged (a file is missing or resized); downloading it again", local)
            shutil.rmtree(local, ignore_errors=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            pafs.copy_files(
                remote, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
            )
            sizes = file_sizes(tmp)
            if any(sizes.get(f) != size for f, size in manifest.get("files", {}).items()):
                raise StoreError(f"{remote}: artifact files do not match its manifest")
            os.replace(tmp, local)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"{remote}: cannot download artifact ({exc})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return local


def adopt(cache_root: Path, entry: str, built: Path) -> Path:
    """Move a folder this node built and uploaded into the cache as the copy of `entry`."""
    local = cache_root / entry
    local.parent.mkdir(parents=True, exist_ok=True)
    with _entry_lock(cache_root, entry.replace("/", "__")):
        if local.is_dir():
            shutil.rmtree(built, ignore_errors=True)
        else:
            os.replace(built, local)
    return local


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def trim(cache_root: Path, max_bytes: int, dry_run: bool = False) -> list[Path]:
    """Remove the least recently used copies that no process holds until the cache holds at most
    `max_bytes`; returns them. Held copies stay even over budget. Each removal holds the copy's
    download lock, so no download of the same entry is cut in half."""
    copies = (
        [
            p
            for stage in cache_root.iterdir()
            if stage.is_dir() and stage.name != _LOCKS
            for p in stage.iterdir()
            if p.is_dir() and not p.name.startswith(".")
        ]
        if cache_root.is_dir()
        else []
    )
    sized = sorted(((p.stat().st_mtime, _size(p), p) for p in copies), key=lambda t: t[0])
    total = sum(size for _, size, _ in sized)
    removed: list[Path] = []
    for _, size, path in sized:
        if total <= max_bytes:
            break
        entry = f"{path.parent.name}/{path.name}"
        with _unheld(cache_root, entry) as free:
            if not free:
                continue
            if not dry_run:
                with _entry_lock(cache_root, entry.replace("/", "__")):
                    shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        total -= size
    if removed:
        log.info(
            "node cache %s: %s %d copies to stay under %d bytes",
            cache_root,
            "would remove" if dry_run else "removed",
            len(removed),
            max_bytes,
        )
    return removed
