"""An exported config knows its data.

`wsss-tune export` records the dataset a trial ran on (its fingerprint, and the folder it saw, or the
config's synthetic benchmark) under the config's `provenance.data`. `wsss run best.yaml` then uses
that folder when no `--data` is given, and stops with a clear error when the data it opens has another
fingerprint: a number reproduced on other data is not the trial's number. `--allow-other-data`
says that is intended.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wsss.config_load import PROVENANCE_KEY, read_provenance
from wsss.errors import ConfigError, DataError

if TYPE_CHECKING:
    from wsss.data.voc import VocDataset

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"  # the recorded location of the config's embedded synthetic benchmark


@dataclass(frozen=True)
class RecordedData:
    label: str  # the config it was read from, for messages
    fingerprint: str
    location: str | None  # a dataset folder, or None for the config's synthetic benchmark


def recorded_data(source: str | os.PathLike[str]) -> RecordedData | None:
    """The data an exported config's trial ran on, or None for configs that record none."""
    label, provenance = read_provenance(source)
    if provenance is None or provenance.get("data") is None:
        return None
    data = provenance["data"]
    where = f"{label}: {PROVENANCE_KEY}.data"
    if not isinstance(data, dict) or set(data) - {"fingerprint", "location"}:
        raise ConfigError(f"{where}: expected a mapping with fingerprint and location")
    fingerprint, location = data.get("fingerprint"), data.get("location", SYNTHETIC)
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ConfigError(f"{where}.fingerprint: expected the dataset fingerprint string")
    if not isinstance(location, str) or not location:
        raise ConfigError(f"{where}.location: expected a folder or {SYNTHETIC!r}")
    return RecordedData(label, fingerprint, None if location == SYNTHETIC else location)


def data_location(recorded: RecordedData | None, given: Path | None) -> Path | None:
    """`--data` if given, else the folder the trial ran on (None: the synthetic benchmark)."""
    if given is not None or recorded is None or recorded.location is None:
        return given
    path = Path(recorded.location)
    if not path.is_dir():
        raise DataError(
            f"{recorded.label}: the trial ran on {path}, which is not on this machine; "
            "pass --data DIR with a copy of that dataset"
        )
    log.info("data: %s, as recorded in %s", path, recorded.label)
    return path


def check_same_data(recorded: RecordedData | None, data: VocDataset, allow_other: bool) -> None:
    """Stop (or, with `allow_other`, warn) when `data` is not the dataset the trial ran on."""
    if recorded is None or data.fingerprint == recorded.fingerprint:
        return
    trial_data = recorded.location or "the synthetic benchmark"
    message = (
        f"{recorded.label}: the data at {data.root} (fingerprint {data.fingerprint}) is not the data the "
        f"trial ran on ({trial_data}, fingerprint {recorded.fingerprint}), so its numbers would not be "
        "comparable; pass --allow-other-data if that is intended"
    )
    if not allow_other:
        raise DataError(message)
    log.warning("%s (going on: --allow-other-data)", message.split("; pass")[0])
