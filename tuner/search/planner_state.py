"""The staged planner's state as plain JSON, for Tune's searcher checkpoints and `wsss-tune resume`.

What a planner built again from the search's options lacks: its configurations, the ladder's records
and promotions, the jobs in flight and waiting (children and siblings), the stage prices it has seen,
its random generator, and its two Optuna studies (trials re-added in number order: told ones COMPLETE,
asked ones RUNNING so that a job finishing after the resume can still tell its value, start-up ones
not asked yet WAITING). JSON, not a pickle: the state lives in the search's storage, which is read as
untrusted data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState, create_trial

import wsss
from tuner.search.staged import RUNGS, ConfigState, StagedPlanner

VERSION = 1


def _study_state(study: optuna.Study) -> list[dict[str, Any]]:
    trials = []
    for trial in study.get_trials(deepcopy=False):
        entry: dict[str, Any] = {"state": trial.state.name, "value": trial.value}
        if trial.state == TrialState.WAITING:
            entry["fixed"] = dict(trial.system_attrs.get("fixed_params", {}))
        else:
            entry["params"] = dict(trial.params)
            entry["distributions"] = {k: distribution_to_json(d) for k, d in trial.distributions.items()}
        trials.append(entry)
    return trials


def rebuilt_study(seed: int, trials: list[dict[str, Any]]) -> optuna.Study:
    """A study holding the trials `_study_state` wrote (also what `wsss-tune report` plots)."""
    study = StagedPlanner.new_study(seed)
    for entry in trials:
        if entry["state"] == "WAITING":
            study.enqueue_trial(entry["fixed"])
            continue
        state = TrialState.COMPLETE if entry["state"] == "COMPLETE" else TrialState.RUNNING
        study.add_trial(
            create_trial(
                params=entry["params"],
                distributions={k: json_to_distribution(d) for k, d in entry["distributions"].items()},
                value=entry["value"] if state == TrialState.COMPLETE else None,
                state=state,
            )
        )
    return study


def dump(planner: StagedPlanner) -> dict[str, Any]:
    return {
        "version": VERSION,
        "configs": [
            {
                "params": c.params,
                "parent": c.parent,
                "upstream_trial": c.upstream_trial,
                "segment_trial": c.segment_trial,
                "draws": c.draws,
            }
            for c in planner.configs
        ],
        "records": [{str(c): v for c, v in held.items()} for held in planner.ladder.records],
        "promoted": [sorted(p) for p in planner.ladder.promoted],
        "running": sorted([c, r] for c, r in planner.running),
        "waiting": list(planner.waiting),
        "sibling_of": list(planner.sibling_of),
        "prices": planner.prices,
        "rng": planner.rng.bit_generator.state,
        "upstream": _study_state(planner.upstream),
        "segment": _study_state(planner.segment),
    }


def load(planner: StagedPlanner, state: dict[str, Any], source: str) -> None:
    """Give `planner` (just built from the search's options) the state `dump` wrote; `source` names
    where it came from in the error a damaged state raises."""
    try:
        if state.get("version") != VERSION or len(state["records"]) != len(RUNGS):
            raise ValueError(f"version {state.get('version')!r} with {len(state['records'])} rungs")
        planner.configs = [
            ConfigState(
                dict(c["params"]),
                c["parent"],
                upstream_trial=c["upstream_trial"],
                segment_trial=c["segment_trial"],
                draws=[float(d) for d in c["draws"]],
            )
            for c in state["configs"]
        ]
        planner.ladder.records = [{int(c): float(v) for c, v in held.items()} for held in state["records"]]
        planner.ladder.promoted = [{int(c) for c in p} for p in state["promoted"]]
        planner.running = {(int(c), int(r)) for c, r in state["running"]}
        planner.waiting = [int(c) for c in state["waiting"]]
        # Absent from states saved before refine siblings existed.
        planner.sibling_of = [int(c) for c in state.get("sibling_of", [])]
        prices = state.get("prices", {})
        planner.prices = {s: [float(x) for x in prices.get(s, [])] for s in planner.prices}
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        planner.rng = rng
        # Samplers seeded anew from the restored generator: seeded as at the start they would replay
        # their first proposals (the random start-up draws), so the resumed search would rerun configs.
        sampler_seed = int(rng.integers(2**31 - 1))
        planner.upstream = rebuilt_study(sampler_seed, state["upstream"])
        planner.segment = rebuilt_study(sampler_seed + 1, state["segment"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise wsss.ConfigError(f"{source}: not a staged searcher's state ({exc})") from None
    planner._etas.clear()
