"""One searched key's range: an Optuna distribution, absolute or relative to the base config.

Absolute ranges name the values themselves: `refine.beta: {float: [4.0, 16.0]}`. A relative range
(`relative: true`) names multipliers of the base config's value at that key, so one space fits the
CPU defaults and the `voc12` preset alike, whose learning rates differ by up to 80x:

    seed.train.lr: {float: [0.2, 4.0], log: true, relative: true}        # 0.2x to 4x the base lr
    seed.train.epochs: {float: [0.5, 1.5], step: 0.25, relative: true}   # int field: rounded
    seed.train.lr: {categorical: [1.0, 2.0], relative: true}             # the base lr or twice it

The base value is the base config's (`--config`, else the defaults) with the space's method. A relative
range is resolved into an absolute distribution when the space is loaded, so Optuna, the leaderboard
and exported configs all see real values. On an int field the bounds and the step are rounded (at
least 1); a log-uniform multiplier times a constant stays log-uniform, so nothing else changes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

import wsss

_KINDS = {"float", "int", "categorical"}


@dataclass(frozen=True)
class Param:
    key: str
    distribution: BaseDistribution
    json_choices: bool = False  # list-valued choices travel through Optuna as JSON strings
    # How a relative range was resolved, for `wsss-tune spaces check`; the distribution is the range.
    note: str = field(default="", compare=False)

    def decode(self, value: Any) -> Any:
        return json.loads(value) if self.json_choices else value


@dataclass(frozen=True)
class Base:
    """The config a space's ranges are checked against and relative ranges are scaled by."""

    settings: Mapping[str, Any] | None = None  # from wsss.config_source; None = the defaults
    _configs: dict[str | None, Any] = field(default_factory=dict, compare=False, repr=False)

    def setting_error(self, key: str, value: Any, method: str | None) -> str | None:
        """The error setting one key to `value` on the base config (with this method) would raise:
        only the key's section is rebuilt, so checking thousands of choices stays quick."""
        try:
            if method not in self._configs:
                overrides = {"seed": {"method": method}} if method else None
                self._configs[method] = wsss.load_config(self.settings, overrides)
            wsss.with_setting(self._configs[method], key, value)
        except wsss.ConfigError as exc:
            return str(exc)
        return None

    def config_error(self, overrides: dict[str, Any], method: str | None) -> str | None:
        """The error the base config with these overrides (and this seed method) would raise, if any."""
        items = ({"seed.method": method} if method else {}) | overrides
        try:
            wsss.load_config(self.settings, [f"{k}={json.dumps(v)}" for k, v in items.items()])
        except wsss.ConfigError as exc:
            return str(exc)
        return None

    def value(self, key: str, method: str | None) -> Any:
        """The base config's value at a dotted key, with this seed method's parameters."""
        overrides = {"seed": {"method": method}} if method else None
        value: Any = wsss.to_mapping(wsss.load_config(self.settings, overrides))
        for part in key.split("."):
            value = value[part]
        return value


def _round(x: float) -> float:
    """Products such as 0.05 * 0.2 = 0.010000000000000002 shown and searched as 0.01."""
    return float(f"{x:.12g}")


def _relative(where: str, spec: dict[str, Any], base_value: Any, field_type: Any) -> dict[str, Any] | str:
    """The absolute spec a relative one stands for, or what is wrong with it."""
    if isinstance(base_value, bool) or not isinstance(base_value, int | float):
        return f"{where}: relative ranges need a numeric field, but the base value is {base_value!r}"
    if base_value == 0:
        return f"{where}: a relative range needs a non-zero base value, but the base config has 0"
    if "int" in spec:
        return f"{where}: a relative range gives multipliers: use float: [low, high] (rounded on int fields)"
    kind = "categorical" if "categorical" in spec else "float"
    values = spec[kind]
    if not (isinstance(values, list) and values and all(_number(v) for v in values)):
        return f"{where}: relative {kind} needs a list of multipliers, got {values!r}"
    if any(v <= 0 for v in values):
        return f"{where}: multipliers must be > 0, got {values}"
    as_int = field_type is int
    scale = (
        (lambda m: max(1, math.floor(base_value * m + 0.5))) if as_int else (lambda m: _round(base_value * m))
    )
    out = {k: v for k, v in spec.items() if k not in (kind, "relative")}
    if kind == "categorical":
        return {**out, "categorical": list(dict.fromkeys(scale(m) for m in values))}
    if len(values) != 2 or values[0] >= values[1]:
        return {**out, "float": values}  # the absolute checks name what is wrong with the bounds
    low, high = scale(values[0]), scale(values[1])
    if as_int:
        step = max(1, math.floor(base_value * spec["step"] + 0.5)) if spec.get("step") else 1
        out.pop("step", None)
        high = low + (high - low) // step * step if high > low else low + step
        return {**out, "int": [low, high], **({"step": step} if step > 1 else {})}
    if spec.get("step") is not None and _number(spec["step"]):
        out["step"] = _round(base_value * spec["step"])
    return {**out, "float": [low, high]}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _step_problem(kind: str, step: Any, bounds: list[float]) -> str | None:
    """What is wrong with a range's `step` (absent is fine), e.g. 0, which Optuna cannot use."""
    if step is None:
        return None
    if kind == "int" and (isinstance(step, bool) or not isinstance(step, int)):
        return f"step must be a positive integer for an int range, got {step!r}"
    if not _number(step):
        return f"step must be a positive number, got {step!r}"
    if step <= 0:
        return f"step must be > 0, got {step}"
    if step > bounds[1] - bounds[0]:
        return f"step {step} is larger than the range {bounds}"
    return None


# TPE learns a weight per choice: past a few dozen it is random search, past this it is a mistake
# (a range written out as a list); each choice is also checked against the config.
MAX_CHOICES = 1000


def _categorical(where: str, key: str, choices: Any, method: str | None, base: Base) -> Param | str:
    if not isinstance(choices, list) or not choices:
        return f"{where}: categorical needs a non-empty list of choices"
    if len(choices) > MAX_CHOICES:
        return f"{where}: {len(choices)} choices; at most {MAX_CHOICES} (use an int or float range)"
    if len({json.dumps(c, sort_keys=True, default=str) for c in choices}) != len(choices):
        return f"{where}: a choice is listed more than once"
    errors = [(c, error) for c in choices if (error := base.setting_error(key, c, method))]
    if errors:
        return f"{where}: choice {wsss.short_repr(errors[0][0])} is invalid ({errors[0][1]})"
    if any(isinstance(c, list | dict) for c in choices):
        return Param(key, CategoricalDistribution([json.dumps(c) for c in choices]), json_choices=True)
    return Param(key, CategoricalDistribution(choices))


def _numeric(
    where: str, key: str, spec: dict[str, Any], field_type: Any, method: str | None, base: Base
) -> Param | str:
    kind = "float" if "float" in spec else "int"
    bounds = spec[kind]
    log, step = bool(spec.get("log", False)), spec.get("step")
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_number(b) for b in bounds)):
        return f"{where}: {kind} needs [low, high] numbers, got {bounds!r}"
    if field_type not in ((float, int) if kind == "int" else (float,)):
        return (
            f"{where}: a {kind} range does not fit this {getattr(field_type, '__name__', field_type)} field"
        )
    if kind == "int" and not all(isinstance(b, int) for b in bounds):
        return f"{where}: int bounds must be integers, got {bounds}"
    if bounds[0] >= bounds[1]:
        return f"{where}: low {bounds[0]} must be below high {bounds[1]}"
    if log and bounds[0] <= 0:
        return f"{where}: a log range needs low > 0, got {bounds[0]}"
    if log and step is not None:
        return f"{where}: log and step cannot be combined"
    if (step_problem := _step_problem(kind, step, bounds)) is not None:
        return f"{where}: {step_problem}"
    error = base.setting_error(key, bounds[0], method) or base.setting_error(key, bounds[1], method)
    if error is not None:
        return f"{where}: range {bounds} leaves the valid values ({error})"
    if kind == "int":
        return Param(key, IntDistribution(bounds[0], bounds[1], log=log, step=step or 1))
    return Param(
        key, FloatDistribution(float(bounds[0]), float(bounds[1]), log=log, step=step and float(step))
    )


def parse_range(
    path: Path, key: str, spec: Any, field_type: Any, method: str | None, base: Base
) -> Param | str:
    """The Param for one `params:` entry, or a problem naming the file and the key."""
    where = f"{path}: {key}"
    if not isinstance(spec, dict) or len(_KINDS & set(spec)) != 1:
        return (
            f"{where}: expected one of {{float: [low, high]}}, {{int: [low, high]}}, {{categorical: [...]}}"
        )
    kind = next(iter(_KINDS & set(spec)))
    extra = set(spec) - {kind, "relative"} - ({"log", "step"} if kind != "categorical" else set())
    if extra:
        return f"{where}: unknown option(s) {sorted(extra)}; use log, step and relative"
    if not isinstance(spec.get("relative", False), bool):
        return f"{where}: relative must be true or false, got {spec['relative']!r}"
    note = ""
    if spec.get("relative"):
        base_value = base.value(key, method)
        resolved = _relative(where, spec, base_value, field_type)
        if isinstance(resolved, str):
            return resolved
        where = f"{where} ({kind} {spec[kind]} x base {base_value})"
        note = f"x{spec[kind]} of {base_value}"
        spec = resolved
    if "categorical" in spec:
        param = _categorical(where, key, spec["categorical"], method, base)
    else:
        param = _numeric(where, key, spec, field_type, method, base)
    return (
        Param(param.key, param.distribution, param.json_choices, note) if isinstance(param, Param) else param
    )


def contains(param: Param, value: Any) -> bool:
    """Whether the range can give this (base) value."""
    dist = param.distribution
    if isinstance(dist, CategoricalDistribution):
        choices = [param.decode(c) for c in dist.choices]
        listed = list(value) if isinstance(value, tuple | list) else value
        return any(c == listed for c in choices)
    assert isinstance(dist, FloatDistribution | IntDistribution)
    return dist.low - 1e-12 * abs(dist.low) <= value <= dist.high + 1e-12 * abs(dist.high)


def describe(param: Param) -> str:
    """What the range samples, e.g. `float log-uniform [0.02, 0.4]`."""
    dist = param.distribution
    if isinstance(dist, CategoricalDistribution):
        return f"one of {[param.decode(c) for c in dist.choices]}"
    assert isinstance(dist, FloatDistribution | IntDistribution)
    shape = "log-uniform" if dist.log else "uniform"
    plain = dist.step is None or (isinstance(dist, IntDistribution) and dist.step == 1)
    step = "" if plain else f" step {dist.step:g}"
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    return f"{kind} {shape} [{dist.low:g}, {dist.high:g}]{step}"
