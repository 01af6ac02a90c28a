"""What a search needs to go on anywhere: its parsed spaces and base config, kept as JSON beside its
Tune state (`<storage>/searches/<name>.json`), so `wsss-tune resume` on a new head (another Ray
cluster, another working directory, the storage folder copied or the bucket re-mounted) needs neither
the space files nor the config file it was started with.

JSON only, read back through a whitelist: distributions go through Optuna's own JSON form, and every
field is type-checked before use; nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from optuna.distributions import distribution_to_json, json_to_distribution

import wsss
from tuner.spaces.space import Param, SearchSpace, Space

FORMAT = 1


def _param(param: Param) -> dict[str, Any]:
    return {
        "key": param.key,
        "distribution": distribution_to_json(param.distribution),
        "json": param.json_choices,
    }


def _space(space: Space) -> dict[str, Any]:
    return {
        "name": space.name,
        "method": space.method,
        "metric": space.metric,
        "mode": space.mode,
        "fixed": space.fixed,
        "params": [_param(p) for p in space.params],
        "shared": [_param(p) for p in space.shared],
        "files": [str(f) for f in space.files],
    }


def dumps(search: SearchSpace, base: dict[str, Any] | None) -> str:
    return json.dumps(
        {"format": FORMAT, "spaces": [_space(s) for s in search.spaces], "base": base}, indent=1
    )


def _read_param(data: Any) -> Param:
    if not isinstance(data, dict) or not isinstance(data.get("key"), str):
        raise ValueError("a parameter without a key")
    return Param(data["key"], json_to_distribution(str(data["distribution"])), bool(data.get("json", False)))


def _read_space(data: Any) -> Space:
    if not isinstance(data, dict) or not isinstance(data.get("fixed"), dict):
        raise ValueError("a space without fixed values")
    text = {k: str(data[k]) for k in ("name", "method", "metric", "mode")}
    return Space(
        text["name"],
        text["method"],
        text["metric"],
        text["mode"],
        dict(data["fixed"]),
        tuple(_read_param(p) for p in data.get("params", [])),
        tuple(_read_param(p) for p in data.get("shared", [])),
        tuple(Path(str(f)) for f in data.get("files", [])),
    )


def loads(text: str, where: str) -> tuple[SearchSpace, dict[str, Any] | None]:
    """(search space, base config mapping) from `dumps`; a damaged record is a ConfigError naming it."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} search record")
        spaces = tuple(_read_space(s) for s in data["spaces"])
        base = data.get("base")
        if not spaces or (base is not None and not isinstance(base, dict)):
            raise ValueError("no spaces, or a base config that is not a mapping")
        wsss.load_config(base or {})  # still a valid config for this version of wsss
    except (ValueError, KeyError, TypeError, wsss.ConfigError) as exc:
        raise wsss.ConfigError(f"{where}: damaged search record ({exc})") from None
    return SearchSpace(spaces), base


def storage_fs(location: str) -> tuple[pafs.FileSystem, str]:
    """(file system, root path) of a folder or URI under a search's storage."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location).absolute())


def record_path(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/searches/{name}.json"


def write(storage: str, name: str, search: SearchSpace, base: dict[str, Any] | None) -> str:
    location = record_path(storage, name)
    try:
        fs, path = storage_fs(location)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(f"{path}.tmp") as stream:
            stream.write(dumps(search, base).encode())
        fs.move(f"{path}.tmp", path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise wsss.StoreError(f"{location}: cannot write the search record ({exc})") from None
    return location


def read(storage: str, name: str) -> tuple[SearchSpace, dict[str, Any] | None] | None:
    """The record of search `name` under `storage`, or None if there is none."""
    location = record_path(storage, name)
    try:
        fs, path = storage_fs(location)
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(path) as stream:
            text = stream.read().decode()
    except (OSError, ValueError, UnicodeDecodeError, pa.ArrowException) as exc:
        raise wsss.ConfigError(f"{location}: cannot read the search record ({exc})") from None
    return loads(text, location)
