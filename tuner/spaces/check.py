"""`wsss-tune spaces check [--config BASE]`: every problem in the files, what each range resolves to on
the base config, and the ranges that cannot give the base config's own value.

A range that excludes the base value is not always wrong, but it is the mark of a space written for
another setting: an absolute learning-rate range tuned on the CPU defaults samples 20-200x off on top
of `voc12`. Such ranges are warnings (errors with `--strict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tuner.spaces.ranges import Base, Param, contains, describe
from tuner.spaces.space import SHARED_KEYS, SpaceError, check_files, load_space, read_params, read_yaml


@dataclass(frozen=True)
class Row:
    key: str
    values: str  # what the range samples on this base config
    base_value: str
    note: str  # how a relative range was resolved
    contains_base: bool


@dataclass(frozen=True)
class FileReport:
    path: Path
    method: str | None  # None for an included (shared) file
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class CheckReport:
    problems: list[str]
    files: list[FileReport]

    @property
    def warnings(self) -> list[str]:
        return [
            f"{f.path}: {r.key}: {r.values} cannot give the base config's value {r.base_value} "
            "(a range written for another base config? make it relative: tuner/spaces/ranges.py)"
            for f in self.files
            for r in f.rows
            if not r.contains_base
        ]


def _row(param: Param, base: Base, method: str | None) -> Row:
    value = base.value(param.key, method)
    return Row(param.key, describe(param), repr(value), param.note, contains(param, value))


def _file_report(path: Path, base: Base) -> FileReport | None:
    data = read_yaml(path)
    if "method" in data:
        space = load_space(path, base)
        return FileReport(path, space.method, tuple(_row(p, base, space.method) for p in space.params))
    if set(data) - SHARED_KEYS:
        return None
    _, params = read_params(path, data, [], None, base)
    return FileReport(path, None, tuple(_row(p, base, None) for p in params))


def check(paths: Sequence[Path], base: Base) -> CheckReport:
    """Problems first; the per-file ranges only for files without problems."""
    problems = check_files(paths, base)
    reports = []
    for path in paths:
        if any(p.startswith(f"{path}:") for p in problems):
            continue
        try:
            report = _file_report(path, base)
        except (SpaceError, OSError, ValueError):
            continue  # already among the problems (an included file's, for instance)
        if report is not None:
            reports.append(report)
    return CheckReport(problems, reports)


def render(report: CheckReport, base_name: str) -> list[str]:
    lines = []
    for f in report.files:
        kind = f"method {f.method}" if f.method else "shared knobs"
        lines.append(f"{f.path} ({kind}, on {base_name})")
        width = max((len(r.key) for r in f.rows), default=0)
        for r in f.rows:
            resolved = f"  ({r.note})" if r.note else f"  (base {r.base_value})"
            mark = "" if r.contains_base else "  <- excludes the base value"
            lines.append(f"  {r.key:<{width}}  {r.values}{resolved}{mark}")
    return lines
