"""`wsss-tune demo`: a small local search end to end, on synthetic data, with nothing to set up."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import wsss
from tuner.search.options import SearchOptions

log = logging.getLogger(__name__)

DEMO_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "demo.yaml"
DEMO_DATA = wsss.SynthSpec(train=200, val=50, size=128, classes=6, seed=0)


def _recorded_spec(path: Path) -> wsss.SynthSpec | None:
    """The spec a demo data folder was generated with; None when the file is not one of ours."""
    try:
        return wsss.SynthSpec(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def demo_options(
    workdir: Path,
    samples: int = 6,
    concurrency: int = 2,
    data: wsss.SynthSpec = DEMO_DATA,
    searcher: str = "asha",
    budget: str | None = None,
) -> SearchOptions:
    """Describe the demo search and generate its data if needed (a mistaken option fails first)."""
    if not DEMO_SPACE.is_file():
        raise wsss.ConfigError(
            f"{DEMO_SPACE}: the demo space is missing; run the demo from a checkout (pip install -e .)"
        )
    data_dir = workdir / "demo-data"
    if (data_dir / "synth.json").exists() and _recorded_spec(data_dir / "synth.json") != data:
        raise wsss.ConfigError(f"{data_dir}: holds demo data of another size; use another --workdir")
    options = SearchOptions(
        space_files=(str(DEMO_SPACE),),
        samples=samples,
        experiment="wsss-demo",
        data=str(data_dir.absolute()),
        concurrency=concurrency,
        cpus_per_trial=1.0,
        storage=str(workdir.absolute()),
        # With sampler seeds 0 and 1 Optuna's first six draws all pick one seed learning rate; seed 2
        # uses both, so the demo shows two seed configurations each computed once and then reused.
        seed=2,
        searcher=searcher,
        budget=budget,
    )
    options.validate()
    if not (data_dir / "synth.json").exists():
        log.info("generating demo data in %s", data_dir)
        wsss.generate_synthetic(data, data_dir)
    return options
