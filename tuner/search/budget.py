"""A staged search's budget in stage compute (`--budget`; issue 24 item 7).

Spent = the compute seconds of the stages the search's jobs computed (a stage read from the store costs
nothing). In hours or minutes the budget is that sum; in full-pipeline equivalents it is divided by
what one full pipeline costs at the search's own prices: the mean computed seed, refine and full-
schedule DeepLab stage, a short DeepLab counted at its share of the schedule until a full one ran.
Until every stage has a price the pipeline budget cannot be judged and nothing stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuner.search.options import parse_budget

STAGES = ("seed", "refine", "segment")


@dataclass
class ComputeBudget:
    amount: float
    unit: str  # "hours", "minutes" or "pipelines"
    short_fraction: float
    spent: float = 0.0  # compute seconds
    prices: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in (*STAGES, "short")})

    @classmethod
    def parse(cls, text: str, short_fraction: float) -> ComputeBudget:
        amount, unit = parse_budget(text)
        return cls(amount, unit, short_fraction)

    def record(self, result: dict[str, Any], fidelity: str) -> None:
        """A finished job's computed stages (`<stage>_compute_seconds` in its result, only for stages
        it computed itself)."""
        for stage in STAGES:
            seconds = result.get(f"{stage}_compute_seconds")
            if seconds is None:
                continue
            self.spent += float(seconds)
            price = "short" if stage == "segment" and fidelity == "short" else stage
            self.prices[price].append(float(seconds))

    def pipeline_seconds(self) -> float | None:
        """One full pipeline's compute at the mean prices seen so far; None while one is unknown."""
        mean = {k: sum(v) / len(v) for k, v in self.prices.items() if v}
        if "segment" not in mean and "short" in mean:
            mean["segment"] = mean["short"] / self.short_fraction
        if any(s not in mean for s in STAGES):
            return None
        return sum(mean[s] for s in STAGES)

    def used(self) -> float | None:
        """The budget spent, in its unit (None: pipeline prices not known yet)."""
        if self.unit == "hours":
            return self.spent / 3600
        if self.unit == "minutes":
            return self.spent / 60
        pipeline = self.pipeline_seconds()
        return None if pipeline is None else self.spent / pipeline

    def exhausted(self) -> bool:
        used = self.used()
        return used is not None and used >= self.amount

    def describe(self) -> str:
        used = self.used()
        shown = "?" if used is None else f"{used:.2f}"
        return f"{shown} of {self.amount:g} {self.unit}"

    def state(self) -> dict[str, Any]:
        return {"spent": self.spent, "prices": self.prices}

    def load(self, state: dict[str, Any]) -> None:
        self.spent = float(state["spent"])
        self.prices = {k: [float(x) for x in state["prices"].get(k, [])] for k in (*STAGES, "short")}
