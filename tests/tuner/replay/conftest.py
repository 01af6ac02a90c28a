"""A small replay table written the way record_replay.py writes one, with values from a known rule
instead of trained pipelines, so that what a replay must find is known in advance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tuner.replay.design import Design, make_design
from tuner.spaces.ranges import Base
from tuner.spaces.space import load_search

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"
FILES = ["cam.yaml", "mixup.yaml"]
BASE: dict = {"seed": {"train": {"epochs": 6}}}
COSTS = {"seed": 10.0, "refine": 15.0, "segment": 75.0}


def write_table(
    folder: Path, per_method: int = 3, refines: int = 2, segments: int = 2, repeat_all: bool = False
) -> Design:
    """design.json and rows.jsonl in `folder`: quality is a per-seed-config level plus a refine and
    a segment effect; the report half is the search half plus a little noise; rng_seed repeats add
    their own noise (with `repeat_all`, every pipeline is also recorded at rng_seed 1)."""
    search = load_search([SPACES / f for f in FILES], Base(BASE))
    design = make_design(
        search,
        Base(BASE),
        per_method=per_method,
        refines=refines,
        segments=segments,
        repeats=2,
        short_epochs=[1, 3],
    )
    design = Design(**{**design.__dict__, "meta": {"space_files": FILES, "base": BASE, "data": {}}})
    folder.mkdir(parents=True, exist_ok=True)
    design.save(folder / "design.json")
    rng = np.random.default_rng(7)
    level = {s: 0.3 + 0.3 * rng.random() for s in design.seeds}
    effect = {r: 0.05 * i for i, r in enumerate(design.refines)} | {
        g: 0.02 * i for i, g in enumerate(design.segments)
    }
    lines = []
    repeats = design.repeats
    if repeat_all:
        repeats = [(*p, 1) for p in design.pipelines] + [r for r in design.repeats if r[3] != 1]
    for s, r, g, k in [(*p, 0) for p in design.pipelines] + repeats:
        val = level[s] + effect[r] + effect[g]
        noise = 0.01 * rng.standard_normal(3) if k else np.zeros(3)
        lines.append(
            {
                "pipeline": [s, r, g],
                "rng_seed": k,
                "metrics": {
                    "cam_miou": level[s],
                    "cam_miou_best": level[s] + noise[0],
                    "pseudo_miou": val - 0.02,
                },
                "val": {"search": val + noise[1], "report": val + 0.005 + noise[2]},
                "compute": COSTS,
                "short": {"1": {"val": {"search": val - 0.1, "report": val - 0.1}, "compute": 8.0}},
            }
        )
    (folder / "rows.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return design


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("replay-table")
    write_table(folder)
    return folder
