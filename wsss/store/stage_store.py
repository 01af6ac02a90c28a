"""Content-addressed, atomically published stage artifacts on any pyarrow filesystem.

Layout under the store root:
    wsss-store.json                  marks the folder as a store (written by its first build)
    <stage>/<key>/<attempt>/...      the files of one build attempt
    <stage>/<key>/manifest.json      written last; names the attempt that won, its files and metrics

A folder that is neither empty, nor marked, nor laid out as a store (a store of an earlier version)
is refused: `--store` pointed at a dataset or a working folder must not be built into or cleaned.

A reader only trusts an artifact through its manifest, and the manifest is moved into place after
all files are written, so nobody sees half an artifact, on a laptop or on S3. A local root is used in
place; a remote root (s3://, gs://, hdfs://, ...) is built in a local staging folder, uploaded, and
downloaded on demand into a local cache.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.fs as pafs

from wsss.configio import digest, to_mapping
from wsss.errors import EnvironmentFault, StoreError, os_error_message
from wsss.store.cache import adopt, download, file_lock, file_sizes, hold, trim
from wsss.store.debris import clean_store, new_attempt_name, remove_if_empty, remove_stale_attempts
from wsss.store.layout import MANIFEST, MANIFEST_FORMAT, MARKER, complete, laid_out_as_store, well_formed

__all__ = ["MANIFEST", "Artifact", "Build", "StageStore", "stage_key"]

MAX_MANIFEST = 64 << 20  # VOC's seed manifest, listing 10,582 CAM files, is about 1 MB

log = logging.getLogger(__name__)


def stage_key(
    stage: str, config: Any, upstream: str | None, dataset: str, version: int, rng_seed: int
) -> str:
    """Hash of (stage name, the stage's own config, upstream key, dataset fingerprint, format version).

    The pipeline's RNG seed is part of every stage's own configuration.
    """
    payload = {
        "stage": stage,
        "config": to_mapping(config),
        "rng_seed": rng_seed,
        "upstream": upstream,
        "dataset": dataset,
        "version": version,
    }
    return digest(payload)[:24]


@dataclass(frozen=True)
class Artifact:
    stage: str
    key: str
    path: Path  # a local directory holding the artifact's files
    manifest: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.get("metrics", {}))


@dataclass
class Build:
    """A build in progress: write files under `path` and put JSON-able facts in `meta`."""

    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    artifact: Artifact | None = None


def _reason(exc: BaseException) -> str:
    return os_error_message(exc) if isinstance(exc, OSError) else str(exc)


class StageStore:
    def __init__(
        self,
        location: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str],
        filesystem: pafs.FileSystem | None = None,
        builder: str = "",
    ) -> None:
        """`location`: a local path or any pyarrow.fs URI; with `filesystem`, a path inside it.
        `builder` names who builds through this store (a search's trial) in the manifests it writes."""
        text = str(location)
        try:
            if filesystem is not None:
                self.fs, self.root = filesystem, text.rstrip("/")
            elif "://" in text:
                self.fs, self.root = pafs.FileSystem.from_uri(text)
                self.root = self.root.rstrip("/")
            else:
                self.fs, self.root = pafs.LocalFileSystem(), str(Path(text).absolute())
            self.fs.create_dir(self.root, recursive=True)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise StoreError(f"{text}: cannot open the stage store ({exc})") from None
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)
        self.cache_dir = Path(cache_dir).absolute()
        self.location = text
        self.builder = builder
        self._marked = self._check_is_store()
        self._holds: dict[str, IO[str]] = {}  # node copies this store handed out (wsss.store.cache)

    def _check_is_store(self) -> bool:
        """Whether the root is marked as a store; a StoreError if it holds anything else."""
        try:
            if self._has_marker():
                return True
            if laid_out_as_store(self.fs, self.root):
                # An earlier version's store is marked now, so that it is not listed again each time
                # it is opened; an empty one is marked by its first build (a mistyped --store given to
                # `store clean` must not become a store).
                with contextlib.suppress(OSError, pa.ArrowException):  # a read-only store stays usable
                    if self.fs.get_file_info(pafs.FileSelector(self.root)):
                        self._write_marker()
                        return True
                return False
            # Another process may have marked the empty folder between the two looks (its first
            # build writes the marker): the listing then held the marker.
            if self._has_marker():
                return True
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"{self.location}: cannot open the stage store ({exc})") from None
        raise StoreError(
            f"{self.location}: not a stage store (it holds other files and no {MARKER}); give an empty "
            "folder or an existing store, e.g. WORKDIR/store"
        )

    def _has_marker(self) -> bool:
        return bool(self.fs.get_file_info(f"{self.root}/{MARKER}").type == pafs.FileType.File)

    def _write_marker(self) -> None:
        marker = json.dumps({"format": MANIFEST_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        with self.fs.open_output_stream(f"{self.root}/{MARKER}") as stream:
            stream.write(marker.encode())

    def _mark(self) -> None:
        """Write the marker before the first build, so that clean and gc know the folder is ours."""
        if not self._marked:
            self._write_marker()
            self._marked = True

    def uri(self) -> str:
        """The store's location as a URI another process or node can open."""
        return self.location if "://" in self.location or not self.is_local else Path(self.root).as_uri()

    def key_dir(self, stage: str, key: str) -> str:
        return f"{self.root}/{stage}/{key}"

    def read_manifest(self, stage: str, key: str) -> dict[str, Any] | None:
        path = f"{self.key_dir(stage, key)}/{MANIFEST}"
        try:
            if self.fs.get_file_info(path).type != pafs.FileType.File:
                return None
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"{path}: cannot look up the artifact ({exc})") from None
        try:
            with self.fs.open_input_stream(path) as stream:
                text = stream.read(MAX_MANIFEST + 1)
            if len(text) > MAX_MANIFEST:
                raise ValueError(f"over {MAX_MANIFEST >> 20} MiB")
            manifest = json.loads(text.decode())
        except (OSError, ValueError, pa.ArrowException) as exc:
            log.warning("ignoring unreadable manifest %s (%s); the stage will be rebuilt", path, exc)
            return None
        if not well_formed(manifest):
            log.warning("ignoring manifest %s of an unknown format; the stage will be rebuilt", path)
            return None
        return manifest

    def lookup(self, stage: str, key: str) -> Artifact | None:
        """The published artifact, available locally, or None (never a partial one)."""
        manifest = self.read_manifest(stage, key)
        if manifest is None:
            return None
        remote = f"{self.key_dir(stage, key)}/{manifest['attempt']}"
        if self.is_local:
            local = Path(remote)
            damaged = complete(local, manifest.get("files", {}))
            if damaged is not None:
                log.warning(
                    "artifact %s/%s: %s is missing or damaged; it will be rebuilt", stage, key, damaged
                )
                return None
            return Artifact(stage, key, local, manifest)
        return Artifact(stage, key, self._download(stage, key, remote, manifest), manifest)

    def _download(self, stage: str, key: str, remote: str, manifest: dict[str, Any]) -> Path:
        entry = f"{stage}/{key}-{manifest['attempt']}"
        self._hold(entry)
        return download(self.fs, remote, self.cache_dir / "store", entry, manifest)

    def _hold(self, entry: str) -> None:
        """Keep this node's copy of `entry` from trim_cache while this store lives (before it is
        looked at, so that a trim cannot remove it between the look and the use)."""
        if entry not in self._holds:
            self._holds[entry] = hold(self.cache_dir / "store", entry)

    def release_copies(self) -> None:
        """Let trim_cache remove the node copies this store handed out (a process's end does too)."""
        for handle in self._holds.values():
            handle.close()
        self._holds.clear()

    def available(self, stage: str, key: str) -> bool:
        """Whether a whole artifact is published under `key` (without downloading it)."""
        manifest = self.read_manifest(stage, key)
        if manifest is None or not self.is_local:
            return manifest is not None
        local = Path(f"{self.key_dir(stage, key)}/{manifest['attempt']}")
        return complete(local, manifest.get("files", {})) is None

    def unpublish(self, stage: str, key: str, attempt: str) -> bool:
        """Withdraw a damaged artifact (its manifest, if it still names `attempt`, and this node's copy),
        so that the key is built again; its folder is left as debris for the next build or `clean`."""
        manifest = self.read_manifest(stage, key)
        if manifest is None or manifest["attempt"] != attempt:
            return False  # already withdrawn, or rebuilt by someone else meanwhile
        log.warning(
            "withdrawing the damaged artifact %s/%s (attempt %s); it will be rebuilt", stage, key, attempt
        )
        self.fs.delete_file(f"{self.key_dir(stage, key)}/{MANIFEST}")
        if not self.is_local:
            shutil.rmtree(self.cache_dir / "store" / stage / f"{key}-{attempt}", ignore_errors=True)
        return True

    def trim_cache(self, max_bytes: int, dry_run: bool = False) -> list[Path]:
        """Keep this node's copies of remote artifacts under `max_bytes`, removing only copies no
        process holds (see wsss.store.cache.trim)."""
        return trim(self.cache_dir / "store", max_bytes, dry_run)

    @contextlib.contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        """Exclusive right to build one key, so concurrent trials compute a shared stage once.

        On a local (or NFS-mounted) store this is an fcntl lock on `<stage>/<key>.lock`, released by the
        kernel even if the holder is killed. Other filesystems have no such primitive: there the lock is
        a no-op and callers that span machines pass their own (the tuner uses a Ray actor).
        """
        if not self.is_local:
            yield
            return
        with file_lock(Path(f"{self.key_dir(stage, key)}.lock")):
            yield

    @property
    def staging_dir(self) -> Path:
        """Where this node builds artifacts of a remote store before uploading them."""
        return self.cache_dir / "staging"

    @contextlib.contextmanager
    def build(self, stage: str, key: str, exclusive: bool = False) -> Iterator[Build]:
        """A fresh directory to build into; published when the block exits cleanly, removed otherwise.

        Attempts that killed builders left behind are removed first: every unpublished one when the
        caller holds an exclusive lock on the key (`exclusive`), else those whose builder is known dead.
        """
        attempt = new_attempt_name()
        if self.is_local:
            path = Path(self.key_dir(stage, key)) / attempt
        else:
            path = self.staging_dir / f"{stage}-{key}-{attempt}"
        try:
            self._mark()
            remove_stale_attempts(self, stage, key, exclusive)
            path.mkdir(parents=True)
        except (OSError, pa.ArrowException) as exc:
            raise EnvironmentFault(f"{self.location}: cannot build {stage} here ({_reason(exc)})") from None
        build = Build(path)
        try:
            yield build
            build.artifact = self._publish(stage, key, attempt, build)
        except BaseException as exc:
            shutil.rmtree(path, ignore_errors=True)
            if self.is_local:
                remove_if_empty(Path(self.key_dir(stage, key)))
            if isinstance(exc, OSError):  # a full or read-only disk: the machine's fault, not the input's
                owner = stage.split("_", 1)[0]  # seed_round, refine_step: cached steps of a stage
                what = f"the {owner} stage" + ("" if owner == stage else f" (its cached {stage} step)")
                message = f"{what} hit a file-system error ({os_error_message(exc, path)})"
                raise EnvironmentFault(f"{self.location}: {message}") from None
            raise

    def clean(self, older_than: float = 48 * 3600, dry_run: bool = False) -> list[str]:
        """Remove the debris of builds that did not finish (see wsss.store.debris.clean_store)."""
        return clean_store(self, older_than, dry_run)

    def _publish(self, stage: str, key: str, attempt: str, build: Build) -> Artifact:
        if self.available(stage, key):  # another worker published the same key meanwhile; theirs is as good
            shutil.rmtree(build.path, ignore_errors=True)
            existing = self.lookup(stage, key)
            if existing is not None:
                return existing
        manifest = {
            "format": MANIFEST_FORMAT,
            "stage": stage,
            "key": key,
            "attempt": attempt,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(),
            "built_by": self.builder,
            "files": file_sizes(build.path),
            **build.meta,
        }
        local = build.path
        if not self.is_local:
            remote = f"{self.key_dir(stage, key)}/{attempt}"
            self.fs.create_dir(remote, recursive=True)  # implicit on object stores, needed elsewhere
            pafs.copy_files(
                str(build.path),
                remote,
                source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=self.fs,
            )
            self._hold(f"{stage}/{key}-{attempt}")
            local = adopt(self.cache_dir / "store", f"{stage}/{key}-{attempt}", build.path)
        final = f"{self.key_dir(stage, key)}/{MANIFEST}"
        tmp = f"{final}.{attempt}.tmp"
        with self.fs.open_output_stream(tmp) as stream:
            stream.write(json.dumps(manifest, indent=1).encode())
        self.fs.move(tmp, final)  # a rename locally; a single atomic object write on object stores
        return Artifact(stage, key, local, manifest)
