"""Search spaces: YAML files of dotted config keys mapped to typed distributions.

A method space (`search_spaces/cam.yaml`):

    method: cam                          # the seed method; sets seed.method
    include: [refine.yaml, segment.yaml] # shared stage knobs, relative to this file
    metric: val_miou                     # cam_miou | cam_miou_best | pseudo_miou | val_miou
    mode: max                            # max | min
    fixed: {seed.train.epochs: 16}       # applied to every trial of this space
    params:
      seed.train.lr: {float: [0.2, 4.0], log: true, relative: true}  # x the base config's lr
      refine.logt: {int: [3, 7]}
      seed.scales: {categorical: [[1.0], [1.0, 0.5, 1.5, 2.0]]}

An included (shared) file has only `fixed` and `params`. Several method spaces in one search make the
space itself a categorical choice, each with its own conditional knobs (Optuna define-by-run), while
the shared knobs are common to all. Every key must be a real config field and every bound and choice
must give a valid config on top of the search's base config; problems are reported naming the file
and the key. Relative ranges (multipliers of the base config's value) are described in tuner.spaces.ranges.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

import wsss
from tuner.spaces.ranges import Base, Param, parse_range

__all__ = ["CHOICE", "OBJECTIVES", "Base", "Param", "SearchSpace", "Space", "SpaceError", "load_search"]

OBJECTIVES = ("cam_miou", "cam_miou_best", "pseudo_miou", "val_miou")
CHOICE = "space"  # the categorical parameter that picks a method space
_METHOD_KEYS = {"method", "name", "include", "metric", "mode", "fixed", "params", "description"}
SHARED_KEYS = {"fixed", "params", "description"}
SPACE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")  # no "|": it separates NAME|key


class SpaceError(wsss.WsssError):
    """One or more problems in search-space files; each names the file and the key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:
        # Ray pickles a trial's error to the driver; the default would rebuild it from the joined
        # message, and iterating that string gives one character per "problem".
        return type(self), (self.problems,)


@dataclass(frozen=True)
class Space:
    """One method space with its includes resolved."""

    name: str
    method: str
    metric: str
    mode: str
    fixed: dict[str, Any]
    params: tuple[Param, ...]  # conditional on choosing this space
    shared: tuple[Param, ...]  # from included files
    files: tuple[Path, ...]


def read_yaml(path: Path) -> Any:
    """A space file's YAML (a SpaceError naming the file if it is missing, unreadable or invalid)."""
    if not path.exists() and not path.is_symlink():
        raise SpaceError([f"{path}: no such search-space file"])
    try:
        return wsss.load_yaml(wsss.read_text(path, wsss.ConfigError))
    except wsss.ConfigError as exc:
        raise SpaceError([str(exc)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise SpaceError([f"{path}: invalid YAML ({getattr(exc, 'problem', exc)}{where})"]) from None


def _read(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        data = read_yaml(path)
    except SpaceError as exc:
        problems += exc.problems
        return None
    if not isinstance(data, dict):
        problems.append(
            f"{path}: must be a mapping with `params` (and `method`, `metric`, ... for a method space)"
        )
        return None
    return data


def _key_problem(key: Any, fields: dict[str, Any], searched: bool) -> str | None:
    if not isinstance(key, str) or key not in fields:
        return "not a config field (see `wsss config show`)"
    section = key.split(".")[0]
    if section == "runtime":
        return "not searchable: runtime settings do not change results; the tuner sets them per trial"
    if section == "data" and searched:
        return "not searchable: the dataset is fixed per search (set data.* under `fixed`)"
    if key == "seed.method":
        return "set by the space's `method:`, not as a parameter"
    return None


def read_params(
    path: Path, data: dict[str, Any], problems: list[str], method: str | None, base: Base
) -> tuple[dict[str, Any], tuple[Param, ...]]:
    fields = wsss.config_fields(method)
    fixed, params = data.get("fixed") or {}, data.get("params") or {}
    if not isinstance(fixed, dict) or not isinstance(params, dict):
        problems.append(f"{path}: `fixed` and `params` must be mappings of dotted config keys")
        return {}, ()
    for key, value in fixed.items():
        if (problem := _key_problem(key, fields, searched=False)) or (
            problem := base.config_error({key: value}, method)
        ):
            problems.append(
                f"{path}: {problem}" if problem.startswith(f"{key}:") else f"{path}: {key}: {problem}"
            )
    out = []
    for key, spec in params.items():
        if (problem := _key_problem(key, fields, searched=True)) is not None:
            problems.append(f"{path}: {key}: {problem}")
        elif key in fixed:
            problems.append(f"{path}: {key}: both fixed and searched")
        elif isinstance(param := parse_range(path, key, spec, fields[key], method, base), str):
            problems.append(param)
        else:
            out.append(param)
    return dict(fixed), tuple(out)


def load_space(path: str | Path, base: Base | None = None) -> Space:
    """A method space with its includes, its ranges checked against (and relative ranges scaled by)
    the base config; raises SpaceError listing every problem found."""
    base = base or Base()
    path = Path(path)
    problems: list[str] = []
    data = _read(path, problems)
    if data is None:
        raise SpaceError(problems)
    if "method" not in data:
        problems.append(
            f"{path}: not a method space (no `method:`); include it from one, e.g. `include: [{path.name}]`"
        )
        raise SpaceError(problems)
    for key in sorted(set(data) - _METHOD_KEYS):
        problems.append(f"{path}: {key}: unknown key; expected {sorted(_METHOD_KEYS)}")
    if data["method"] not in wsss.list_methods():
        problems.append(
            f"{path}: method: unknown method {data['method']!r}; known: {', '.join(wsss.list_methods())}"
        )
    metric, mode = data.get("metric", "val_miou"), data.get("mode", "max")
    if metric not in OBJECTIVES:
        problems.append(f"{path}: metric: {metric!r} is not one of {list(OBJECTIVES)}")
    if mode not in ("max", "min"):
        problems.append(f"{path}: mode: {mode!r} is not max or min")
    method = data["method"] if data["method"] in wsss.list_methods() else None
    fixed, params = read_params(path, data, problems, method, base)
    shared_fixed: dict[str, Any] = {}
    shared: list[Any] = []
    files = [path]
    includes = data.get("include") or []
    if not isinstance(includes, list) or not all(isinstance(n, str) for n in includes):
        problems.append(
            f"{path}: include: must be a list of file names, e.g. [refine.yaml], got {includes!r}"
        )
        includes = []
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not SPACE_NAME.fullmatch(name):
        problems.append(
            f"{path}: name: {wsss.short_repr(name)} must be up to 64 letters, digits and . _ - + "
            "(it prefixes the space's knobs as NAME|key)"
        )
    for include in includes:
        included = (path.parent / include).resolve()
        extra = _read(included, problems)
        if extra is None:
            continue
        for key in sorted(set(extra) - SHARED_KEYS):
            problems.append(f"{included}: {key}: an included file holds only `fixed` and `params`")
        more_fixed, more = read_params(included, extra, problems, method, base)
        shared_fixed |= more_fixed
        shared += more
        files.append(included)
    clashes = {p.key for p in params} & ({p.key for p in shared} | set(shared_fixed))
    for key in sorted(clashes):
        problems.append(f"{path}: {key}: also set by an included file")
    # Each fixed value was checked alone; together they may still contradict (alpha_high < alpha_low).
    if not problems and (error := base.config_error({**shared_fixed, **fixed}, method)) is not None:
        problems.append(f"{path}: fixed values are invalid together ({error})")
    if problems:
        raise SpaceError(problems)
    return Space(
        data.get("name", path.stem),
        data["method"],
        metric,
        mode,
        {**shared_fixed, **fixed, "seed.method": data["method"]},
        params,
        tuple(shared),
        tuple(files),
    )


def check_files(paths: Sequence[str | Path], base: Base | None = None) -> list[str]:
    """Every problem in the given files (method spaces and included files alike)."""
    base = base or Base()
    problems: list[str] = []
    for path in map(Path, paths):
        data = _read(path, problems)
        if data is None:
            continue
        if "method" in data:
            try:
                load_space(path, base)
            except SpaceError as exc:
                problems += exc.problems
        else:
            for key in sorted(set(data) - SHARED_KEYS):
                problems.append(f"{path}: {key}: unknown key; a shared file holds only `fixed` and `params`")
            read_params(path, data, problems, None, base)
    return list(dict.fromkeys(problems))


def stage_of_key(key: str) -> str:
    """The stage a dotted config key belongs to: `refine.*`, `segment.*`, and seed for the rest."""
    head = key.split(".", 1)[0]
    return head if head in ("refine", "segment") else "seed"


def _suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, log=distribution.log, step=distribution.step
        )
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, log=distribution.log, step=distribution.step
        )
    assert isinstance(distribution, CategoricalDistribution)
    return trial.suggest_categorical(name, distribution.choices)


@dataclass(frozen=True)
class SearchSpace:
    spaces: tuple[Space, ...]

    @property
    def metric(self) -> str:
        return self.spaces[0].metric

    @property
    def mode(self) -> str:
        return self.spaces[0].mode

    def _space(self, name: str) -> Space:
        return next(s for s in self.spaces if s.name == name)

    def knobs(self, name: str) -> list[str]:
        """The dotted config keys a trial of space `name` samples (its own, then the shared ones)."""
        space = self._space(name)
        return [p.key for p in (*space.params, *space.shared)]

    def define(
        self, trial: optuna.Trial, stages: Sequence[str] | None = None, space: str | None = None
    ) -> dict[str, Any]:
        """Optuna define-by-run: pick a space (if several), then its own knobs, then the shared ones.

        A space's own knobs are named `<space>|<key>` so that two spaces may give one key different ranges.
        With `stages` (of "seed", "refine", "segment"), only the knobs of those stages are suggested, so a
        per-stage model is fitted on no knob its trials never ran; `space` names the method space when the
        choice was made elsewhere (by the upstream a downstream trial builds on).
        """
        names = [s.name for s in self.spaces]
        if space is None:
            space = trial.suggest_categorical(CHOICE, names) if len(names) > 1 else names[0]
        chosen = self._space(space)
        for param in chosen.params:
            if stages is None or stage_of_key(param.key) in stages:
                _suggest(trial, f"{chosen.name}|{param.key}", param.distribution)
        for param in chosen.shared:
            if stages is None or stage_of_key(param.key) in stages:
                _suggest(trial, param.key, param.distribution)
        return {CHOICE: chosen.name}

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every parameter `define` can suggest, by its Optuna name, with its distribution."""
        out: dict[str, BaseDistribution] = {}
        if len(self.spaces) > 1:
            out[CHOICE] = CategoricalDistribution([s.name for s in self.spaces])
        for space in self.spaces:
            out |= {f"{space.name}|{p.key}": p.distribution for p in space.params}
            out |= {p.key: p.distribution for p in space.shared}
        return out

    def overrides(self, config: dict[str, Any], stages: Sequence[str] | None = None) -> dict[str, Any]:
        """A trial's dotted config overrides from its Tune config. With `stages`, only those stages'
        knobs are read (a staged search's upstream job has no DeepLab knobs yet: DeepLab keeps the
        base config's settings, which that job never runs)."""
        space = self._space(config[CHOICE])
        out = dict(space.fixed)
        for param, name in [(p, f"{space.name}|{p.key}") for p in space.params] + [
            (p, p.key) for p in space.shared
        ]:
            if stages is None or stage_of_key(param.key) in stages:
                out[param.key] = param.decode(config[name])
        return out


def load_search(paths: Sequence[str | Path], base: Base | None = None) -> SearchSpace:
    """Method spaces for one search: one metric and mode, unique names, consistent shared knobs;
    ranges resolved against the search's base config."""
    if not paths:
        raise SpaceError(["give at least one method space, e.g. search_spaces/cam.yaml"])
    spaces, problems = [], []
    for path in paths:
        try:
            spaces.append(load_space(path, base))
        except SpaceError as exc:
            problems += exc.problems
    if problems:
        raise SpaceError(problems)
    first = spaces[0]
    for space in spaces[1:]:
        if (space.metric, space.mode) != (first.metric, first.mode):
            problems.append(
                f"{space.files[0]}: metric/mode {space.metric}/{space.mode} differ from "
                f"{first.files[0]}'s {first.metric}/{first.mode}"
            )
    names = [s.name for s in spaces]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{name}: several spaces share this name; give each a distinct `name:`")
    shared: dict[str, tuple[BaseDistribution, Path]] = {}
    for space in spaces:
        for param in space.shared:
            seen = shared.setdefault(param.key, (param.distribution, space.files[0]))
            if seen[0] != param.distribution:
                problems.append(
                    f"{space.files[0]}: {param.key}: shared knob with a different range than in {seen[1]}"
                )
    if problems:
        raise SpaceError(problems)
    return SearchSpace(tuple(spaces))
