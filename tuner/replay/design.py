"""The factorial design a replay table records: seed configs stratified over the methods (each
method's defaults first), refine configs and segment configs (defaults first), every combination of
the three, and a few pipelines repeated with other `rng_seed`s to measure noise.

Configs are Optuna parameter dicts as the search space names them (`space`, `<space>|<key>`, shared
`refine.*` / `segment.*` keys), so a replayed searcher's proposals compare with them directly and
`SearchSpace.overrides` turns any pipeline of the design into the config a real trial would run.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution

from tuner.search.startup import encoded_value
from tuner.spaces.ranges import Base
from tuner.spaces.space import CHOICE, SearchSpace

DESIGN_VERSION = 1
STAGE_PREFIX = {"refine": "refine.", "segment": "segment."}
HALVES = ("search", "report")


def val_halves(ids: Sequence[str]) -> dict[str, list[str]]:
    """The fixed split of val ids into the half a trial reports (`search`) and the half no search sees
    (`report`): a seeded shuffle, the first half to `search`, each half sorted."""
    order = np.random.default_rng(0).permutation(len(ids))
    half = len(ids) // 2
    return {
        HALVES[0]: sorted(ids[i] for i in order[:half]),
        HALVES[1]: sorted(ids[i] for i in order[half:]),
    }


@dataclass(frozen=True)
class Design:
    seeds: dict[str, dict[str, Any]]  # id -> CHOICE and the method's own knobs
    refines: dict[str, dict[str, Any]]  # id -> refine.* knobs
    segments: dict[str, dict[str, Any]]  # id -> segment.* knobs
    pipelines: list[tuple[str, str, str]]
    repeats: list[tuple[str, str, str, int]]  # (seed id, refine id, segment id, rng_seed)
    short_epochs: list[int]  # DeepLab recorded again at these epochs (the poly schedule over the short run)
    meta: dict[str, Any] = field(default_factory=dict)  # space files, base config, data spec
    version: int = DESIGN_VERSION

    def params(self, seed: str, refine: str, segment: str) -> dict[str, Any]:
        """The Optuna parameters of one pipeline of the design."""
        return {**self.seeds[seed], **self.refines[refine], **self.segments[segment]}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> Design:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or raw.get("version") != DESIGN_VERSION:
            raise ValueError(f"{path}: not a replay design of version {DESIGN_VERSION}")
        return cls(
            seeds=raw["seeds"],
            refines=raw["refines"],
            segments=raw["segments"],
            pipelines=[tuple(p) for p in raw["pipelines"]],  # type: ignore[misc]
            repeats=[tuple(r) for r in raw["repeats"]],  # type: ignore[misc]
            short_epochs=list(raw["short_epochs"]),
            meta=raw.get("meta", {}),
        )


def stage_of(name: str) -> str:
    """Which stage an Optuna parameter belongs to: the method choice and `<space>|` knobs are seed's."""
    if name == CHOICE or "|" in name:
        return "seed"
    return next((stage for stage, prefix in STAGE_PREFIX.items() if name.startswith(prefix)), "seed")


def _draw(dists: dict[str, BaseDistribution], fixed: dict[str, Any], rng_seed: int) -> dict[str, Any]:
    """`fixed` where given, the rest drawn at random from their distributions."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=rng_seed))
    trial = study.ask({k: d for k, d in dists.items() if k not in fixed})
    return {**fixed, **trial.params}


def _defaults(search: SearchSpace, base: Base, space_name: str) -> dict[str, dict[str, Any]]:
    """Per stage, the parameters of `space_name` at the base config's values (where the range has them)."""
    space = next(s for s in search.spaces if s.name == space_name)
    out: dict[str, dict[str, Any]] = {"seed": {CHOICE: space.name}, "refine": {}, "segment": {}}
    named = [(f"{space.name}|{p.key}", p) for p in space.params] + [(p.key, p) for p in space.shared]
    for name, param in named:
        encoded = encoded_value(param, base.value(param.key, space.method))
        if encoded is not None:
            out[stage_of(name)][name] = encoded
    return out


def make_design(
    search: SearchSpace,
    base: Base,
    *,
    per_method: int,
    refines: int,
    segments: int,
    repeats: int,
    short_epochs: list[int],
    seed: int = 0,
) -> Design:
    """`per_method` seed configs for each method space, `refines` refine and `segments` segment configs
    (the base config's values first in each), all combinations, and `repeats` pipelines (seed configs spread
    evenly over the methods, random downstream configs) at rng_seeds 1 and 2."""
    dists = search.distributions()
    by_stage = {
        st: {k: d for k, d in dists.items() if stage_of(k) == st} for st in ("seed", "refine", "segment")
    }
    first = search.spaces[0].name
    seeds: dict[str, dict[str, Any]] = {}
    for space in search.spaces:
        own = {k: d for k, d in by_stage["seed"].items() if k.startswith(f"{space.name}|")}
        defaults = _defaults(search, base, space.name)["seed"]
        for i in range(per_method):
            fixed = defaults if i == 0 else {CHOICE: space.name}
            seeds[f"{space.name}-{i}"] = _draw(own, fixed, seed * 1000 + len(seeds))
    stage_defaults = _defaults(search, base, first)
    downstream: dict[str, dict[str, dict[str, Any]]] = {}
    for stage, count, letter in (("refine", refines, "r"), ("segment", segments, "g")):
        downstream[stage] = {
            f"{letter}{i}": _draw(
                by_stage[stage], stage_defaults[stage] if i == 0 else {}, seed * 1000 + 500 + i
            )
            for i in range(count)
        }
    pipelines = list(itertools.product(seeds, downstream["refine"], downstream["segment"]))
    rng = np.random.default_rng(seed)
    seed_ids = list(seeds)
    # Spread over the methods: seed ids are grouped by method, so step through them evenly.
    chosen = [
        (
            seed_ids[i * len(seed_ids) // max(repeats, 1)],
            str(rng.choice(list(downstream["refine"]))),
            str(rng.choice(list(downstream["segment"]))),
        )
        for i in range(repeats)
    ]
    return Design(
        seeds=seeds,
        refines=downstream["refine"],
        segments=downstream["segment"],
        pipelines=pipelines,
        repeats=[(*p, k) for p in chosen for k in (1, 2)],
        short_epochs=short_epochs,
    )
