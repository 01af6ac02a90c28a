"""Strict conversion between nested mappings (YAML) and frozen, typed config dataclasses.

Every error names the dotted path of the offending key, e.g. `seed.train.lr`. Supported field
types: bool, int, float, str, Literal[...], `X | None`, tuple[X, ...], tuple[X, Y, ...] and nested
dataclasses. Ints are accepted where floats are expected; nothing else is coerced.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from wsss.errors import ConfigError, short_repr
from wsss.yamlio import load_yaml

__all__ = ["digest", "field_paths", "from_mapping", "load_yaml", "to_mapping", "with_setting"]

T = TypeVar("T")


def _describe(value: Any) -> str:
    return f"{short_repr(value)} ({type(value).__name__})"


# No setting needs an integer beyond this (sizes, counts, seeds); larger ones overflow torch or numpy.
MAX_INT = 2**31 - 1


def _convert(tp: Any, value: Any, path: str, resolvers: Resolvers | None = None) -> Any:
    origin = get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping of {tp.__name__} fields, got {_describe(value)}")
        return from_mapping(tp, value, path, resolvers)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, path, resolvers)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{path}: {_describe(value)} matches no allowed type"
        )
    if isinstance(value, Mapping):  # e.g. --set seed.train.lr.x=3
        inner = next(iter(value), "")
        raise ConfigError(f"{_join(path, str(inner))}: unknown key; {path} is a single value, not a section")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{path}: {short_repr(value)} is not one of {list(choices)}")
        return value
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_describe(value)}")
        if abs(value) > MAX_INT:
            raise ConfigError(f"{path}: {short_repr(value)} is out of range (at most {MAX_INT})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {_describe(value)}")
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            raise ConfigError(f"{path}: {short_repr(value)} is out of range") from None
        if not math.isfinite(number):  # no setting means anything at inf or nan
            raise ConfigError(f"{path}: must be a finite number, got {number}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported config field type {tp!r} at {path}")


def _unknown_key(cls: type, key: str, path: str) -> ConfigError:
    names = [f.name for f in settings(cls)]
    hint = difflib.get_close_matches(key, names, n=1)
    if hint:
        suggestion = f"; did you mean '{_join(path, hint[0])}'?"
    else:
        suggestion = f"; known keys: {', '.join(names)}" if names else f"; {cls.__name__} has no settings"
    return ConfigError(f"{_join(path, key)}: unknown key{suggestion}")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# Field metadata of a field whose dataclass type depends on the other fields (the seed stage's
# `params`, typed by the chosen method's Config). The type comes from a resolver given by dotted path
# to from_mapping, so this module and the config classes need not know the method registry
# (wsss.config_load gives it).
RESOLVE_TYPE = "resolve_type"
Resolvers = Mapping[str, Callable[[dict[str, Any]], type]]  # dotted path -> (other fields) -> type
# Field metadata: filled in by the pipeline as it runs (where something was made local), not a setting:
# no file or --set may give it, and it is left out of mappings (stage keys, dumps, search spaces).
NOT_A_SETTING = "not_a_setting"


def settings(cls: Any) -> list[dataclasses.Field[Any]]:
    """The fields of a config dataclass that are settings."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get(NOT_A_SETTING)]


def from_mapping(
    cls: type[T], data: Mapping[str, Any], path: str = "", resolvers: Resolvers | None = None
) -> T:
    """Build `cls` from `data`, keeping defaults for absent keys; unknown keys and bad types raise.

    A field whose metadata has RESOLVE_TYPE takes its type from `resolvers[its dotted path]`, called
    with the other fields, e.g. the seed stage's `params`, typed by the chosen method's config class.
    """
    hints = _type_hints(typing.cast(Any, cls))
    fields = {f.name: f for f in settings(cls)}
    for key in data:
        if not isinstance(key, str) or key not in fields:
            raise _unknown_key(cls, str(key), path)
    values: dict[str, Any] = {}
    for key, f in fields.items():
        if f.metadata.get(RESOLVE_TYPE):
            resolve = (resolvers or {}).get(_join(path, key))
            if resolve is None:
                raise ValueError(f"{_join(path, key)}: its type needs a resolver (wsss.config_load has it)")
            # The resolver sees what has been read so far and the defaults of everything else.
            current = {k: values[k] if k in values else _default(fields[k]) for k in fields if k != key}
            tp = resolve(current)
            given = data.get(key) or {}
            if not isinstance(given, Mapping):
                expected = f"expected a mapping of {tp.__name__} fields"
                raise ConfigError(f"{_join(path, key)}: {expected}, got {_describe(given)}")
            values[key] = from_mapping(tp, given, _join(path, key), resolvers)
            continue
        if key not in data:
            continue
        tp, value = hints[key], data[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            # A partial section overrides the parent's default for it, not the section class's defaults:
            # `seed.train.lr` must keep the seed stage's own epochs.
            value = deep_merge(to_mapping(_default(fields[key])), value)
        values[key] = _convert(tp, value, _join(path, key), resolvers)
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or cls.__name__}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(path)
    return obj


@functools.cache
def _type_hints(cls: Any) -> dict[str, Any]:
    """A config class's field types (evaluating string annotations is most of a config's load time)."""
    return typing.get_type_hints(cls)


def with_setting(obj: Any, key: str, value: Any, resolvers: Resolvers | None = None) -> Any:
    """`obj` (a config) with the dotted `key` set to `value`: converted and checked as `from_mapping`
    would, but rebuilding only the key's own section and replacing the sections above it (each one
    validated again). A search space checks every choice of a categorical so, cheaply."""
    *outer, leaf = key.split(".")
    chain = [obj]
    for i, part in enumerate(outer):
        section = getattr(chain[-1], part, None)
        if not dataclasses.is_dataclass(section):
            raise ConfigError(f"{'.'.join(outer[: i + 1])}: not a section of settings")
        chain.append(section)
    prefix = ".".join(outer)
    rebuilt = from_mapping(type(chain[-1]), {**to_mapping(chain[-1]), leaf: value}, prefix, resolvers)
    for depth in range(len(outer) - 1, -1, -1):
        parent, path = chain[depth], ".".join(outer[:depth])
        try:
            rebuilt = dataclasses.replace(parent, **{outer[depth]: rebuilt})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path or type(parent).__name__}: {exc}") from None
        validate = getattr(rebuilt, "validate", None)
        if callable(validate):
            validate(path)
    return rebuilt


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def to_mapping(obj: Any) -> Any:
    """Plain YAML/JSON-ready data: dataclasses become dicts, tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in settings(obj)}
    if isinstance(obj, tuple | list):
        return [to_mapping(v) for v in obj]
    return obj


def digest(obj: Any) -> str:
    """Stable SHA-256 hex digest of a config or any JSON-able value (sorted keys, no whitespace; other
    values by their str). The one hash behind stage keys (wsss.store.stage_key) and round keys
    (wsss.stages.rounds.payload_key), which keep its first 24 digits."""
    text = json.dumps(to_mapping(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`a.b=c` strings into a nested dict; values are parsed as YAML scalars or lists."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. seed.train.lr=0.05")
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            why = getattr(exc, "problem", None)
            raise ConfigError(
                f"--set {key}: cannot parse value {short_repr(raw)}" + (f" ({why})" if why else "")
            ) from None
        set_dotted(nested, key, value)
    return nested


def set_dotted(nested: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = nested
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, cannot set {key} below it")
        node = child
    node[parts[-1]] = value


def deep_merge(
    base: Mapping[str, Any], override: Mapping[str, Any], strict: bool = False, path: str = ""
) -> dict[str, Any]:
    """`override` on top of `base`, section by section. With `strict`, a section of `override` may not
    replace a value of `base` that is not a section: `--set seed.train.lr=1` over a file's
    `seed: {train: fast}` is the file's mistake, not a reason to drop it."""
    merged = dict(base)
    for key, value in override.items():
        where = _join(path, str(key))
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value, strict, where)
        elif strict and isinstance(value, Mapping) and key in merged and merged[key] is not None:
            got = _describe(merged[key])
            raise ConfigError(f"{where}: expected a mapping of settings, got {got}")
        else:
            merged[key] = value
    return merged


def field_paths(cls: type, prefix: str = "", resolved: Mapping[str, type] | None = None) -> dict[str, Any]:
    """Every leaf field of a config dataclass as {dotted path: type}, for search-space validation.

    `resolved` gives the types of RESOLVE_TYPE fields by dotted path (e.g. {"seed.params": MixupConfig});
    such fields are left out when not given.
    """
    out: dict[str, Any] = {}
    resolved = resolved or {}
    dynamic = {f.name for f in dataclasses.fields(cls) if RESOLVE_TYPE in f.metadata}  # type: ignore[arg-type]
    names = {f.name for f in settings(cls)}
    for name, tp in _type_hints(cls).items():
        if name not in names:
            continue
        path = _join(prefix, name)
        if name in dynamic:
            if path in resolved:
                out |= field_paths(resolved[path], path, resolved)
        elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out |= field_paths(tp, path, resolved)
        else:
            out[path] = tp
    return out
