"""A real search read as a replay Trace, so that real runs and replayed ones are scored by the same
code (tuner.replay.stats): the replay benchmark's validation (tests/benchmarks/validate_replay.py).

A real search leaves one record per stage report of each trial (Tune's results): when it came, the
trial's compute so far (reused stages cost nothing), the objective it reported and, at the last
stage, the held-out score of its val predictions (`holdout_miou`, data.holdout_split: the replay's
report half). The compute spent at a moment is the sum of what every trial had reported by then, as
the replay's clock counts busy workers; the incumbent is the best finished trial by what it reported,
and its quality is its held-out score.

A staged search (`--searcher staged`) leaves one record per rung job instead: its configuration, rung,
the compute it spent, its value and, on the full rung, the held-out score of that draw. Its incumbent
is the staged planner's (tuner.search.staged.StagedPlanner.incumbent): the best configuration at the
highest full-schedule rung holding any, by the mean of its draws; its quality is the held-out score of
its full-rung draw (rng_seed as configured, the replay's `draw` truth).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tuner.replay.trace import Trace


@dataclass(frozen=True)
class Report:
    trial: str
    time: float  # when the report came (seconds, any origin shared by the search's reports)
    iteration: int  # the stage it follows: 1 = seed, 2 = refine, 3 = segment
    compute: float  # the trial's compute so far
    value: float  # what the trial reported to the searcher
    holdout: float | None = None  # held-out val mIoU, in the last stage's report


def observed_trace(reports: Iterable[Report], final_iteration: int, mode: str = "max") -> Trace:
    """The Trace of a real search: a point at each trial's last-stage report."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode {mode!r}: max or min")
    sign = 1.0 if mode == "max" else -1.0
    trace = Trace()
    spent_by: dict[str, float] = {}
    best: tuple[float, float] | None = None
    for report in sorted(reports, key=lambda r: (r.time, r.trial, r.iteration)):
        if report.trial not in spent_by:
            trace.trials += 1
        spent_by[report.trial] = max(spent_by.get(report.trial, 0.0), report.compute)
        if report.iteration < final_iteration:
            continue
        if report.holdout is None:
            raise ValueError(f"trial {report.trial}: its last report has no held-out score")
        trace.finished += 1
        if best is None or sign * report.value > sign * best[0]:
            best = (report.value, report.holdout)
        trace.points.append((sum(spent_by.values()), best[1]))
    return trace


FULL_RUNG, REPEAT_RUNG = 3, 4  # tuner.trial.job.RUNG_NAMES


@dataclass(frozen=True)
class JobReport:
    job: str
    time: float  # when the job ended
    config: int  # the configuration it ran a rung of
    rung: int  # 0 cam, 1 pseudo, 2 short, 3 full, 4 repeat
    compute: float  # the stage compute the job spent (stages read from the store cost nothing)
    value: float  # what it reported to the searcher
    holdout: float | None = None  # held-out val mIoU of the full rung's draw


def observed_job_trace(reports: Iterable[JobReport], mode: str = "max") -> Trace:
    """The Trace of a real staged search: a point at each full-schedule job's end."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode {mode!r}: max or min")
    sign = 1.0 if mode == "max" else -1.0
    trace = Trace()
    spent = 0.0
    held: dict[int, float] = {}
    draws: dict[int, list[float]] = {}
    repeated: set[int] = set()
    for report in sorted(reports, key=lambda r: (r.time, r.job)):
        spent += report.compute
        trace.trials += report.rung == 0
        if report.rung < FULL_RUNG:
            continue
        trace.finished += 1
        if report.rung == FULL_RUNG:
            if report.holdout is None:
                raise ValueError(f"job {report.job}: a full-rung job without a held-out score")
            held[report.config] = report.holdout
        elif report.config not in held:
            raise ValueError(
                f"job {report.job}: a repeat of configuration {report.config} before its full rung"
            )
        else:
            repeated.add(report.config)
        draws.setdefault(report.config, []).append(report.value)
        candidates = repeated or set(held)
        best = max(sorted(candidates), key=lambda c: sign * float(np.mean(draws[c])))
        trace.points.append((spent, held[best]))
    return trace
