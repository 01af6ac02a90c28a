"""What a stage store looks like on disk, checked before anything in it is trusted or removed.

    wsss-store.json                  marks the folder as a store (written by its first build)
    <stage>/<key>/<attempt>/...      the files of one build attempt
    <stage>/<key>/manifest.json      written last; names the attempt that won, its files and metrics

Stores are shared (NFS, buckets) and `--store` is typed by hand, so a manifest is trusted only when
every name in it stays inside its artifact and every field has its type, and a folder counts as a
store only when it is marked or laid out as one (an earlier version's store, unmarked).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from wsss.store.debris import ATTEMPT_NAME

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
MARKER = "wsss-store.json"

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def well_formed(manifest: Any) -> bool:
    """A manifest of ours: stores are shared, so its attempt and file names must stay inside the
    artifact's folder (no absolute paths, no `..`) before any of them is joined onto a path, and
    every field the pipeline reads has its type."""
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return False
    attempt, files = manifest.get("attempt"), manifest.get("files", {})
    if not isinstance(attempt, str) or not _SAFE_NAME.fullmatch(attempt) or not isinstance(files, dict):
        return False
    metrics = manifest.get("metrics", {})
    if not isinstance(metrics, dict) or not all(isinstance(k, str) for k in metrics):
        return False
    if not _number(manifest.get("compute_seconds", 0.0)):
        return False
    if not all(isinstance(manifest.get(k, ""), str) for k in ("stage", "key", "created", "host", "built_by")):
        return False
    return all(
        isinstance(name, str)
        and isinstance(size, int)
        and not isinstance(size, bool)
        and size >= 0
        and name
        and not name.startswith("/")
        and ".." not in name.split("/")
        for name, size in files.items()
    )


def complete(folder: Path, files: dict[str, int]) -> str | None:
    """The first file of a local artifact folder that is missing or not the size its manifest
    records (a truncated copy, a file replaced by another), or None when all are intact."""
    for name, size in files.items():
        try:
            if (folder / name).stat().st_size != size:
                return name
        except OSError:
            return name
    return None


def laid_out_as_store(fs: pafs.FileSystem, root: str) -> bool:
    """Whether an unmarked folder is empty or a store of an earlier version (which wrote no marker):
    only folders at the top (stages), key folders and key locks below them, attempt folders and
    manifests below those. Lists three levels, never into an attempt's files."""

    def listing(path: str) -> list[pafs.FileInfo]:
        return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))

    for stage in listing(root):
        if stage.type != pafs.FileType.Directory:
            return False
        for key in listing(stage.path):
            if key.type != pafs.FileType.Directory:
                if not key.base_name.endswith(".lock"):
                    return False
                continue
            for entry in listing(key.path):
                is_attempt = entry.type == pafs.FileType.Directory and ATTEMPT_NAME.fullmatch(entry.base_name)
                if not (is_attempt or entry.base_name.split(".")[0:2] == MANIFEST.split(".")):
                    return False
    return True
