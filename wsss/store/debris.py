"""Debris of builds that did not finish (SIGKILL, a timeout, a trial Ray killed): unpublished attempt
folders in the store and staging folders in a node's cache. A published artifact is never touched,
and neither is anything the store did not make: only folders named as attempts are removed (the
store refuses to open a folder that is not a store, wsss.store.layout), and looking for a free key
lock never creates one.

An attempt may be removed only when no live build can be writing it: when the caller holds the key's
exclusive lock, when its builder process (whose pid and host are in the attempt's name) is gone, or,
for whole-store cleaning of object stores (which have no lock primitive), when it is old.
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pyarrow.fs as pafs

from wsss.store.cache import lock_if_free


class StoreFolders(Protocol):
    """What the sweeps read of a store (wsss.store.StageStore provides it), so this module, below the
    store, does not import it."""

    @property
    def fs(self) -> pafs.FileSystem: ...
    @property
    def root(self) -> str: ...
    @property
    def is_local(self) -> bool: ...
    @property
    def staging_dir(self) -> Path: ...
    def key_dir(self, stage: str, key: str) -> str: ...
    def read_manifest(self, stage: str, key: str) -> dict[str, Any] | None: ...


log = logging.getLogger(__name__)

_STARTED = "%Y%m%dT%H%M%SZ"
# <UTC start>-<random>-<pid>@<host>, as new_attempt_name makes them
ATTEMPT_NAME = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}-\d+@[A-Za-z0-9._-]+")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64] or "host"


def new_attempt_name() -> str:
    """UTC start time, a random suffix, and the builder's pid and host: unique across nodes, and a
    build whose process died can be recognised on its own host without any lock."""
    return f"{time.strftime(_STARTED, time.gmtime())}-{uuid.uuid4().hex[:8]}-{os.getpid()}@{_host()}"


def attempt_age(name: str) -> float | None:
    """Seconds since the attempt `name` started, or None if the name is not one of ours."""
    try:
        started = calendar.timegm(time.strptime(name.split("-")[0], _STARTED))
    except ValueError:
        return None
    return time.time() - started


def _builder_alive(name: str) -> bool | None:
    """Whether the process that started attempt `name` still runs: None when that cannot be known
    here (another host, or a name that is not one of ours)."""
    match = re.fullmatch(r".*-(\d+)@([A-Za-z0-9._-]+)", name)
    if match is None or match.group(2) != _host():
        return None
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user
        return True
    return True


def builder_is_dead(name: str) -> bool:
    """True only when the attempt was started on this host by a process that no longer exists."""
    return _builder_alive(name) is False


def remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, or already gone: both fine
        folder.rmdir()


def _published(store: StoreFolders, stage: str, key: str) -> str | None:
    manifest = store.read_manifest(stage, key)
    return manifest["attempt"] if manifest is not None else None


def _attempts(store: StoreFolders, stage: str, key: str) -> list[str]:
    selector = pafs.FileSelector(store.key_dir(stage, key), allow_not_found=True)
    return [i.base_name for i in store.fs.get_file_info(selector) if i.type == pafs.FileType.Directory]


def remove_stale_attempts(
    store: StoreFolders, stage: str, key: str, exclusive: bool, dry_run: bool = False
) -> list[str]:
    """Remove the key's unpublished attempt folders (and this node's staging folders for it) that no
    live build can be writing: those whose builder died on this host and, when the caller holds the
    key's lock (`exclusive`), all others but those of builders still running on this host (a build
    without the lock). Returns what was (or, with `dry_run`, would be) removed."""

    def stale(name: str) -> bool:
        if not ATTEMPT_NAME.fullmatch(name):
            return False  # not made by a build
        alive = _builder_alive(name)
        return alive is False or (exclusive and alive is None)

    published = _published(store, stage, key)
    removed = []
    for attempt in _attempts(store, stage, key):
        if attempt != published and stale(attempt):
            removed.append(_remove(store, f"{store.key_dir(stage, key)}/{attempt}", dry_run))
    for staging in store.staging_dir.glob(f"{stage}-{key}-*"):
        if stale(staging.name[len(f"{stage}-{key}-") :]):
            removed.append(_remove_local(staging, dry_run))
    if store.is_local and not dry_run:
        remove_if_empty(Path(store.key_dir(stage, key)))
    return removed


def _remove(store: StoreFolders, path: str, dry_run: bool) -> str:
    if not dry_run:
        log.info("removing %s: left by a build that did not finish", path)
        store.fs.delete_dir(path)
    return path


def _remove_local(path: Path, dry_run: bool) -> str:
    if not dry_run:
        log.info("removing %s: left by a build that did not finish", path)
        shutil.rmtree(path, ignore_errors=True)
    return str(path)


@contextlib.contextmanager
def _lock_if_free(store: StoreFolders, stage: str, key: str) -> Iterator[bool]:
    """Take a local key's file lock without waiting; yields whether it was free (False on object
    stores, which have no lock to take)."""
    path = Path(f"{store.key_dir(stage, key)}.lock")
    if not store.is_local:
        yield False
        return
    try:
        descriptor = os.open(path, os.O_RDWR)  # no O_CREAT: a key no build ever locked stays as it is
    except OSError:
        yield False  # without the lock only attempts of builders known dead may go
        return
    with os.fdopen(descriptor, "r+b") as handle, lock_if_free(handle) as free:
        yield free


def _remove_old_attempts(
    store: StoreFolders, stage: str, key: str, older_than: float, dry_run: bool
) -> list[str]:
    published, removed = _published(store, stage, key), []
    for attempt in _attempts(store, stage, key):
        age = attempt_age(attempt) if ATTEMPT_NAME.fullmatch(attempt) else None
        if attempt != published and age is not None and age > older_than:
            removed.append(_remove(store, f"{store.key_dir(stage, key)}/{attempt}", dry_run))
    return removed


def clean_store(store: StoreFolders, older_than: float = 48 * 3600, dry_run: bool = False) -> list[str]:
    """Remove build debris everywhere in the store: unpublished attempts no live build is writing (a
    free key lock on local stores, a dead builder on this host, or on object stores an attempt started
    more than `older_than` seconds ago), this node's staging folders of dead builders, and empty key
    folders. Returns what was removed."""
    removed: list[str] = []
    for stage in store.fs.get_file_info(pafs.FileSelector(store.root, allow_not_found=True)):
        if stage.type != pafs.FileType.Directory:
            continue
        for key in store.fs.get_file_info(pafs.FileSelector(stage.path, allow_not_found=True)):
            if key.type != pafs.FileType.Directory:
                continue
            stage_name, key_name = stage.base_name, key.base_name
            with _lock_if_free(store, stage_name, key_name) as free:
                removed += remove_stale_attempts(store, stage_name, key_name, free, dry_run)
            if not store.is_local:
                removed += _remove_old_attempts(store, stage_name, key_name, older_than, dry_run)
    for staging in store.staging_dir.glob("*-*"):
        if builder_is_dead(staging.name) and str(staging) not in removed:
            removed.append(_remove_local(staging, dry_run))
    return removed
