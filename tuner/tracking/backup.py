"""The MLflow database outlives its head node: a consistent copy of the sqlite file in the bucket.

On a cluster the tracking server keeps its runs in sqlite on the head's disk, which `ray down` or a
lost head deletes. The head restores the database from the bucket before the server starts, and
backs it up (every few minutes, after every search, and before `ray down`). A backup is made with
sqlite's online backup API, so it is consistent while the server writes; it is uploaded under a
temporary name and moved into place, so the bucket always holds a whole copy. A database given as a
managed server (Postgres, MySQL) needs none of this.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

import wsss

log = logging.getLogger(__name__)

_SQLITE_MAGIC = b"SQLite format 3\x00"
MLFLOW_TABLES = ("experiments", "runs", "alembic_version")


def sqlite_problem(path: Path) -> str | None:
    """What makes `path` not an MLflow sqlite database (read-only: it never creates one), or None."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if not head:
        return "an empty file"
    if head != _SQLITE_MAGIC:
        return "not a sqlite database"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        return f"a damaged sqlite database ({exc})"
    missing = [t for t in MLFLOW_TABLES if t not in tables]
    return f"a sqlite database without MLflow's tables ({', '.join(missing)})" if missing else None


def _remote(location: str) -> tuple[pafs.FileSystem, str]:
    try:
        if "://" in location:
            return pafs.FileSystem.from_uri(location)
        return pafs.LocalFileSystem(), str(Path(location).absolute())
    except (ValueError, pa.ArrowException) as exc:
        raise wsss.ConfigError(f"{location}: not a location pyarrow can open ({exc})") from None


def _refuse_to_overwrite_other_files(fs: pafs.FileSystem, path: str, destination: str) -> None:
    """A backup replaces an earlier backup, never some other file (`--remote` typed by hand)."""
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            raise wsss.ConfigError(f"{destination}: is a folder; give the backup's file name")
        if info.type != pafs.FileType.File or not info.size:
            return
        with fs.open_input_stream(path) as stream:
            head = stream.read(len(_SQLITE_MAGIC))
    except (OSError, pa.ArrowException) as exc:
        raise wsss.EnvironmentFault(f"{destination}: cannot look at the backup location ({exc})") from None
    if head != _SQLITE_MAGIC:
        raise wsss.ConfigError(f"{destination}: holds a file that is not a sqlite backup; not overwriting it")


def backup(db: Path, destination: str) -> int:
    """Copy the sqlite database `db` to `destination` (a path or URI); returns the bytes written."""
    if not db.is_file():
        raise wsss.ConfigError(f"{db}: no such MLflow database to back up")
    fs, path = _remote(destination)
    _refuse_to_overwrite_other_files(fs, path, destination)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "mlflow.db"
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as source, sqlite3.connect(copy) as target:
                source.backup(target)
        except sqlite3.Error as exc:
            raise wsss.ConfigError(f"{db}: cannot read it as a sqlite database ({exc})") from None
        size = copy.stat().st_size
        try:
            parent = path.rsplit("/", 1)[0]
            if parent:
                fs.create_dir(parent, recursive=True)
            pafs.copy_files(str(copy), f"{path}.tmp", destination_filesystem=fs)
            fs.move(f"{path}.tmp", path)
        except (OSError, pa.ArrowException) as exc:
            raise wsss.StoreError(f"{destination}: cannot upload the backup ({exc})") from None
    log.info("backed up %s to %s (%d bytes)", db, destination, size)
    return size


def _check_backup(download: Path, source: str) -> None:
    if (problem := sqlite_problem(download)) is not None:
        raise wsss.StoreError(f"{source}: not an MLflow database ({problem}); nothing restored")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{download}?mode=ro", uri=True)) as check:
            intact = check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    except sqlite3.Error as exc:
        raise wsss.StoreError(f"{source}: cannot restore the backup ({exc})") from None
    if not intact:
        raise wsss.StoreError(f"{source}: the backup is damaged (sqlite integrity check failed)")


def _install(download: Path, db: Path, source: str) -> None:
    """Move the checked copy into place beside `db` and rename it over `db` (never half a file)."""
    tmp = db.with_name(f".{db.name}.{os.getpid()}")
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(download, tmp)
        os.replace(tmp, db)
    except OSError as exc:  # a read-only or full disk
        raise wsss.EnvironmentFault(
            f"{db}: cannot restore the backup from {source} ({exc.strerror})"
        ) from None
    finally:
        with contextlib.suppress(OSError):  # on a read-only disk even removing nothing fails
            tmp.unlink(missing_ok=True)


def restore(source: str, db: Path, force: bool = False, missing_ok: bool = False) -> int:
    """Download the backup at `source` to `db`; returns its size (0 when there is none and
    `missing_ok`). An existing database is only replaced with `force`."""
    fs, path = _remote(source)
    try:
        present = fs.get_file_info(path).type == pafs.FileType.File
    except (OSError, pa.ArrowException) as exc:
        raise wsss.StoreError(f"{source}: cannot look for a backup ({exc})") from None
    if not present:
        if missing_ok:
            log.info("no backup at %s yet; starting with a new database", source)
            return 0
        raise wsss.ConfigError(f"{source}: no such backup")
    if db.exists() and not force:
        raise wsss.ConfigError(f"{db}: a database is already there; pass --force to replace it")
    with tempfile.TemporaryDirectory() as scratch:
        download = Path(scratch) / "mlflow.db"
        try:
            pafs.copy_files(path, str(download), source_filesystem=fs)
        except (OSError, pa.ArrowException) as exc:
            raise wsss.EnvironmentFault(f"{source}: cannot download the backup ({exc})") from None
        _check_backup(download, source)  # before anything on the head is made or replaced
        _install(download, db, source)
    log.info("restored %s from %s", db, source)
    return db.stat().st_size
