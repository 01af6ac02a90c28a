"""Loading configs: defaults <- a YAML file or preset <- `--set` overrides, into the frozen dataclasses
of wsss.config. This module sits above the seed methods: it resolves `seed.params` to the chosen
method's Config class (the registry in wsss.methods), merges a preset's per-method seed settings
(`seed.by_method`) and reads the provenance of exported configs, so wsss.config imports no method.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from wsss.config import PipelineConfig, SeedConfig
from wsss.configio import Resolvers, deep_merge, field_paths, parse_overrides, to_mapping
from wsss.configio import from_mapping as _from_mapping
from wsss.configio import with_setting as _with_setting
from wsss.errors import ConfigError, read_text
from wsss.methods import get, list_methods
from wsss.yamlio import load_yaml


def method_config_type(values: Mapping[str, Any]) -> type:
    """The Config class of the seed method in `values` (the seed section's other fields)."""
    return get(values["method"]).Config


RESOLVERS: Resolvers = {"seed.params": method_config_type}


def from_mapping(cls: type, data: Mapping[str, Any], path: str = "") -> Any:
    """wsss.configio.from_mapping with `seed.params` typed by the chosen method."""
    return _from_mapping(cls, data, path, RESOLVERS)


def with_setting(obj: Any, key: str, value: Any) -> Any:
    """`obj` (a config) with the dotted `key` set to `value`, checked as loading would
    (wsss.configio.with_setting, with `seed.params` typed by the chosen method)."""
    return _with_setting(obj, key, value, RESOLVERS)


PROVENANCE_KEY = "provenance"


def preset_names() -> list[str]:
    return sorted(
        p.name[: -len(".yaml")] for p in resources.files("wsss.presets").iterdir() if p.name.endswith(".yaml")
    )


def _read_yaml(source: str | os.PathLike[str]) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """(label for messages, config mapping, provenance mapping or None) of a config file or preset."""
    path = Path(source)
    if path.is_file():
        label, text = str(path), read_text(path, ConfigError)
    elif str(source) in preset_names():
        label = f"preset {source}"
        text = resources.files("wsss.presets").joinpath(f"{source}.yaml").read_text()
    else:
        presets = ", ".join(preset_names())
        raise ConfigError(f"{source}: no such config file or preset (presets: {presets})")
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{label}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: the top level must be a mapping of config sections")
    # Exported configs carry where they came from (experiment, run, metric); it is not configuration.
    provenance = data.pop(PROVENANCE_KEY, None)
    if provenance is not None and not isinstance(provenance, dict):
        raise ConfigError(f"{label}: {PROVENANCE_KEY} must be a mapping")
    return label, data, provenance


def read_provenance(source: str | os.PathLike[str]) -> tuple[str, dict[str, Any] | None]:
    """(label, provenance) of a config: where an exported config came from, None for other configs."""
    label, _, provenance = _read_yaml(source)
    return label, provenance


BY_METHOD_KEY = "by_method"
OLD_BY_METHOD_KEY = "params_by_method"


def _chosen_method(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> Any:
    for source in (overrides, data):
        seed = source.get("seed")
        if isinstance(seed, Mapping) and "method" in seed:
            return seed["method"]
    return SeedConfig.method


def resolve_by_method(
    data: dict[str, Any], label: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`seed.by_method` (a preset's per-method seed settings, e.g. voc12's SEAM schedule from
    train_SEAM.py) merged over the file's seed section for the method the run ends up with (the
    overrides' seed.method, else the file's); the overrides themselves go on top afterwards. Every
    entry is checked, not only the chosen one, so a typo in any method's settings is found at once."""
    seed = data.get("seed")
    if not isinstance(seed, dict):
        return data
    if OLD_BY_METHOD_KEY in seed:
        raise ConfigError(
            f"{label}: seed.{OLD_BY_METHOD_KEY} is now seed.{BY_METHOD_KEY}, whose entries are seed "
            "sections: {METHOD: {params: {...}, train: {...}, backbone: {...}}}"
        )
    if BY_METHOD_KEY not in seed:
        return data
    seed = dict(seed)
    by_method = seed.pop(BY_METHOD_KEY)
    if not isinstance(by_method, dict) or not all(isinstance(v, dict) for v in by_method.values()):
        raise ConfigError(f"{label}: seed.{BY_METHOD_KEY} must map method names to seed sections")
    for method, entry in by_method.items():
        where = f"seed.{BY_METHOD_KEY}.{method}"
        if method not in list_methods():
            raise ConfigError(f"{label}: {where}: unknown method (methods: {', '.join(list_methods())})")
        if "method" in entry or BY_METHOD_KEY in entry:
            raise ConfigError(
                f"{label}: {where}: holds seed settings, not seed.method or seed.{BY_METHOD_KEY}"
            )
        try:
            from_mapping(SeedConfig, {**entry, "method": method}, "seed")
        except ConfigError as exc:
            raise ConfigError(f"{label}: {where}: {exc}") from None
    chosen = by_method.get(_chosen_method(data, overrides or {}), {})
    return {**data, "seed": deep_merge(seed, chosen, strict=True)}


def config_source(source: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings a config file or preset makes, as a mapping (checked: it loads as a config).

    A search hands this mapping to its trials rather than the file's path, so a trial never depends
    on a file that exists only where the search was started.
    """
    label, data, _ = _read_yaml(source)
    try:
        from_mapping(PipelineConfig, resolve_by_method(data, label))
    except ConfigError as exc:
        raise ConfigError(exc.args[0] if str(exc).startswith(label) else f"{label}: {exc}") from None
    return data


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> PipelineConfig:
    """Defaults <- YAML file, preset name or a mapping from `config_source` <- overrides (`a.b=c`
    strings or a nested dict)."""
    data: dict[str, Any] = {}
    label = "config"
    if isinstance(source, Mapping):
        label, data = "base config", dict(source)
    elif source is not None:
        label, data, _ = _read_yaml(source)
    extra = (parse_overrides(overrides) if isinstance(overrides, list) else overrides) or {}
    try:
        # strict: an override never hides a malformed section of the file beneath it
        data = deep_merge(resolve_by_method(data, label, extra), extra, strict=True)
        return from_mapping(PipelineConfig, data)
    except ConfigError as exc:
        if source is None or str(exc).startswith(label):
            raise ConfigError(str(exc)) from None
        raise ConfigError(f"{label}: {exc}") from None


def config_fields(method: str | None = None) -> dict[str, Any]:
    """Every settable dotted key and its type; with a method, its `seed.params.*` keys too."""
    if method is None:
        return field_paths(PipelineConfig)
    return field_paths(PipelineConfig, resolved={"seed.params": method_config_type({"method": method})})


def dump_config(cfg: PipelineConfig) -> str:
    return yaml.safe_dump(to_mapping(cfg), sort_keys=False)
