"""Command-line options defined once: a dataclass field's metadata (`option(...)`) gives its flag's help,
and argparse's arguments and the dataclass instance are both made from the fields, so the defaults,
types and help text of `wsss-tune search` live beside the settings they fill (tuner.search.driver).
docs/search.md's usage block is checked against the parser (tests/tuner/test_options.py)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

HELP, POSITIONAL, METAVAR = "help", "positional", "metavar"


def option(help: str, default: Any = dataclasses.MISSING, *, positional: str = "", metavar: str = "") -> Any:
    """A dataclass field that is also a command-line option (`--name-with-dashes`, or `positional`)."""
    meta = {HELP: help, POSITIONAL: positional, METAVAR: metavar}
    return dataclasses.field(default=default, metadata=meta)


def _scalar(tp: Any) -> Any:
    """The argparse type of a field annotation (`X | None`: X; None is only ever the default)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argument per field of `cls` that has option metadata."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if HELP not in f.metadata:
            continue
        help_text = f.metadata[HELP]
        if f.metadata[POSITIONAL]:
            (item,) = typing.get_args(hints[f.name])[:1]
            parser.add_argument(f.metadata[POSITIONAL], nargs="+", type=item, help=help_text)
            continue
        kind = _scalar(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        extra: dict[str, Any] = {"metavar": f.metadata[METAVAR]} if f.metadata[METAVAR] else {}
        if f.default is dataclasses.MISSING:
            parser.add_argument(flag, type=kind, required=True, help=help_text, **extra)
            continue
        if f.default is not None and "(default" not in help_text:
            shown = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
            help_text += f" (default {shown})"
        parser.add_argument(flag, type=kind, default=f.default, help=help_text, **extra)


def from_namespace(cls: type, args: argparse.Namespace) -> Any:
    """`cls` filled from parsed arguments (a positional's list becomes a tuple of strings)."""
    values = {}
    for f in dataclasses.fields(cls):
        if HELP not in f.metadata:
            continue
        if f.metadata[POSITIONAL]:
            values[f.name] = tuple(str(v) for v in getattr(args, f.metadata[POSITIONAL]))
        else:
            values[f.name] = getattr(args, f.name)
    return cls(**values)
