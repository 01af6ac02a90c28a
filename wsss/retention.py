"""Garbage collection of the stage store: published artifacts nobody needs any more.

A store shared by many searches grows by every stage every trial computed. What is worth keeping is
what the best trials and the exported configs need (their stage keys), and perhaps what is recent.
`collect_garbage` removes every other published artifact; it lists what it would remove unless told
to apply it. The manifest goes first, so a reader never trusts an artifact that is being removed.
Keys are computed from configs without running anything (`wsss.stage_keys`), on the dataset
fingerprint an exported config records.
"""

from __future__ import annotations

import calendar
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from wsss.config_load import load_config
from wsss.errors import ConfigError
from wsss.pipeline import stage_keys
from wsss.provenance import recorded_data
from wsss.store import MANIFEST, StageStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collected:
    stage: str
    key: str
    bytes: int
    age_days: float | None


def config_keys(paths: Iterable[str | os.PathLike[str]]) -> set[tuple[str, str]]:
    """(stage, key) of every stage of each exported config, on the data its trial ran on."""
    keep: set[tuple[str, str]] = set()
    for path in paths:
        recorded = recorded_data(path)
        if recorded is None:
            raise ConfigError(
                f"{path}: records no dataset fingerprint (provenance.data), so its stage keys are "
                "unknown; export it again with `wsss-tune export`"
            )
        keep |= set(stage_keys(load_config(path), recorded.fingerprint).items())
    return keep


def _published(store: StageStore) -> list[tuple[str, str, dict]]:
    found = []
    for stage in store.fs.get_file_info(pafs.FileSelector(store.root, allow_not_found=True)):
        if stage.type != pafs.FileType.Directory:
            continue
        for key in store.fs.get_file_info(pafs.FileSelector(stage.path, allow_not_found=True)):
            if key.type == pafs.FileType.Directory:
                manifest = store.read_manifest(stage.base_name, key.base_name)
                if manifest is not None:
                    found.append((stage.base_name, key.base_name, manifest))
    return found


def _age_days(manifest: dict) -> float | None:
    try:
        created = calendar.timegm(time.strptime(str(manifest["created"])[:19], "%Y-%m-%dT%H:%M:%S"))
    except (KeyError, ValueError):
        return None
    # `created` is local time with an offset; a day's precision is all an age limit needs.
    return (time.time() - created) / 86400


def require_rule(keep_given: bool, older_than_days: float | None) -> None:
    """Refuse a collection with nothing to decide by (checked before the store is opened)."""
    if not keep_given and older_than_days is None:
        raise ConfigError("store gc: give what to keep (experiments, exported configs) or --older-than-days")
    if older_than_days is not None and not older_than_days >= 0:  # also refuses nan
        raise ConfigError(f"--older-than-days: must be >= 0, got {older_than_days}")


def collect_garbage(
    store: StageStore,
    keep: set[tuple[str, str]] | None,
    older_than_days: float | None,
    apply: bool = False,
) -> list[Collected]:
    """Remove (with `apply`; else only list) the published artifacts that are not in `keep` and, if
    `older_than_days` is given, were created longer ago than that. `keep=None` decides by age alone."""
    require_rule(keep is not None, older_than_days)
    removed = []
    for stage, key, manifest in _published(store):
        age = _age_days(manifest)
        if keep is not None and (stage, key) in keep:
            continue
        if older_than_days is not None and (age is None or age < older_than_days):
            continue
        removed.append(Collected(stage, key, sum(manifest.get("files", {}).values()), age))
        if apply:
            log.info("removing %s/%s", stage, key)
            store.fs.delete_file(f"{store.key_dir(stage, key)}/{MANIFEST}")  # unpublished first
            store.fs.delete_dir(store.key_dir(stage, key))
            if store.is_local:
                Path(f"{store.key_dir(stage, key)}.lock").unlink(missing_ok=True)
    return removed


def describe(removed: list[Collected], location: str, applied: bool) -> list[str]:
    """Lines for a terminal: each artifact, then the total."""
    lines = [
        ("removed " if applied else "would remove ") + f"{c.stage}/{c.key} ({c.bytes / 1e6:.1f} MB)"
        for c in removed
    ]
    verb = "removed" if applied else "would remove (pass --apply to remove them)"
    lines.append(
        f"{location}: {verb} {len(removed)} artifact(s), {sum(c.bytes for c in removed) / 1e9:.2f} GB"
    )
    return lines
