"""The real searches validate_replay.py sets beside the replay: the table's synthetic set prepared with
val in halves, plain arms (a, a2, a3) run by Ray Tune with the replay's own searcher and scheduler
objects, the shipped search run by `wsss-tune search`'s driver, and every stage report read back.

Ray's workers import nothing from this folder, so `validate_replay.py` registers this module to be
pickled by value (cloudpickle) before it hands `plain_trial` to Tune.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import yaml

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
PROXY = {"seed": "cam_miou_best", "refine": "pseudo_miou", "segment": "val_miou"}


def prepare(pool: Any, work: Path) -> tuple[Path, dict[str, Any]]:
    """The table's synthetic set with val split in halves, and the base config trials run on."""
    import wsss
    from tuner.replay.design import val_halves

    meta = pool.design.meta
    data_dir = work / "data"
    if not data_dir.exists():
        wsss.generate_synthetic(wsss.SynthSpec(**meta["data"]), data_dir)
    splits = data_dir / "ImageSets" / "Segmentation"
    halves = val_halves((splits / "val.txt").read_text().split())
    for name, ids in (("val_search", halves["search"]), ("val_report", halves["report"])):
        (splits / f"{name}.txt").write_text("\n".join(ids) + "\n")
    base = {
        **meta["base"],
        "data": {"val_split": "val_search", "holdout_split": "val_report"},
        "runtime": {"progress": False},
    }
    return data_dir, base


def plain_trial(config: dict[str, Any], search: Any, base: dict[str, Any], data_dir: str, cache: str) -> None:
    """A plain arm's trial: the whole pipeline in a store of its own, a report after every stage."""
    from ray import tune

    import wsss

    overrides = search.overrides(config) | {"runtime.threads": 1}
    cfg = wsss.load_config(base, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    data = wsss.prepare_dataset(cfg, data_dir, Path(cache))
    spent = 0.0

    def on_stage(outcome: Any) -> None:
        nonlocal spent
        spent += outcome.compute_seconds
        metrics = outcome.metrics
        report = {
            "objective": metrics[PROXY[outcome.stage]],
            "compute_seconds": spent,
            "stage": outcome.stage,
        }
        if "holdout_miou" in metrics:
            report["holdout_miou"] = metrics["holdout_miou"]
        tune.report(report)

    with tempfile.TemporaryDirectory(prefix="plain-store-") as store:
        wsss.run_pipeline(
            cfg, data, wsss.StageStore(store, cache_dir=Path(store) / "cache"), on_stage=on_stage
        )


def _budget_stopper(seconds: float) -> Any:
    from ray import tune

    class ComputeBudget(tune.Stopper):
        """Stops the search once its trials have reported `seconds` of compute between them."""

        def __init__(self) -> None:
            self.spent: dict[str, float] = {}

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            self.spent[trial_id] = float(result.get("compute_seconds", 0.0))
            return False

        def stop_all(self) -> bool:
            return sum(self.spent.values()) >= seconds

    return ComputeBudget()


def run_plain(
    arm: str,
    seed: int,
    pool: Any,
    base: dict[str, Any],
    data_dir: Path,
    work: Path,
    budget: float | None,
    samples: int,
    concurrency: int,
) -> Path:
    """One real search of a plain arm; returns Tune's experiment folder."""
    import ray
    from ray import tune

    from tuner.replay.simulate import ARMS, METRIC

    parts = ARMS[arm][1](pool, seed, work)
    trainable = tune.with_resources(
        tune.with_parameters(
            plain_trial, search=pool.search, base=base, data_dir=str(data_dir), cache=str(work / "cache")
        ),
        {"cpu": 1},
    )
    name = f"{arm}-{seed}"
    ray.init(num_cpus=concurrency, include_dashboard=False, logging_level=logging.WARNING)
    try:
        tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=parts.searcher,
                scheduler=parts.scheduler,
                metric=METRIC,
                mode=pool.search.mode,
                num_samples=samples,
                max_concurrent_trials=concurrency,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(work / "tune"),
                stop=_budget_stopper(budget) if budget is not None else None,
                verbose=0,
            ),
        ).fit()
    finally:
        ray.shutdown()
    return work / "tune" / name


def run_shipped(
    seed: int,
    base: dict[str, Any],
    data_dir: Path,
    work: Path,
    samples: int,
    concurrency: int,
    staged_budget: float | None = None,
) -> Path:
    """One real `wsss-tune search` as shipped; returns Tune's experiment folder. With `staged_budget`
    (compute seconds) it is `--searcher staged --budget`, `samples` then capping its jobs."""
    from tuner.search.driver import run_search
    from tuner.search.options import SearchOptions
    from tuner.search.settle import SearchFailed

    arm = "b" if staged_budget is None else "staged"
    storage = work / f"{arm}-{seed}"
    base_file = work / "base.yaml"
    base_file.write_text(yaml.safe_dump(base))
    meta_files = [str(SPACES / f) for f in json.loads((work / "space_files.json").read_text())]
    staged = {} if staged_budget is None else {"searcher": "staged", "budget": f"{staged_budget / 60:.4f}m"}
    options = SearchOptions(
        space_files=tuple(meta_files),
        samples=samples,
        experiment=f"validate-{arm}-{seed}",
        data=str(data_dir),
        concurrency=concurrency,
        cpus_per_trial=1,
        storage=str(storage),
        seed=seed,
        config=str(base_file),
        cache_dir=str(work / "cache"),
        **staged,
    )
    try:
        run_search(options)
    except SearchFailed as exc:  # a search that finished nothing is scored as such: no point
        logging.getLogger(__name__).warning("%s seed %d: %s", arm, seed, exc)
    (folder,) = (storage / "tune").iterdir()
    return folder


def read_reports(folder: Path) -> list[Any]:
    """Every stage report of every trial of a Tune experiment, as tuner.replay.observed Reports."""
    from ray.tune import ExperimentAnalysis

    from tuner.replay.observed import Report

    out = []
    for frame in ExperimentAnalysis(str(folder)).trial_dataframes.values():
        for row in frame.to_dict("records"):
            holdout = row.get("holdout_miou")
            out.append(
                Report(
                    trial=str(row["trial_id"]),
                    time=float(row["timestamp"]),
                    iteration=int(row["training_iteration"]),
                    compute=float(row["compute_seconds"]),
                    value=float(row["objective"]),
                    holdout=None if holdout is None or math.isnan(holdout) else float(holdout),
                )
            )
    return out


def read_jobs(folder: Path) -> list[Any]:
    """Every rung job of a staged search's Tune experiment, as tuner.replay.observed JobReports."""
    from ray.tune import ExperimentAnalysis

    from tuner.replay.observed import JobReport
    from tuner.tracking.runs import JOB_KEY
    from tuner.trial.job import RUNG_NAMES

    out = []
    for trial in ExperimentAnalysis(str(folder)).trials:
        result, job = trial.last_result, trial.config[JOB_KEY]
        if "objective" not in result:
            continue  # a job that failed or was cut off reported nothing
        holdout = result.get("holdout_miou")
        out.append(
            JobReport(
                job=trial.trial_id,
                time=float(result["timestamp"]),
                config=int(job["config"]),
                rung=RUNG_NAMES.index(result["rung"]),
                compute=sum(float(v) for k, v in result.items() if k.endswith("_compute_seconds")),
                value=float(result["objective"]),
                holdout=None if holdout is None or math.isnan(holdout) else float(holdout),
            )
        )
    return out
