"""`wsss-tune search --searcher staged` for real: Ray Tune on loopback runs rung jobs over tiny synthetic
data, a real MLflow server keeps one run per configuration, promotions pay only the stages they lack,
a budget in compute ends the search, and the leaderboard and export work on its runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.tuner.helpers import TINY_FIXED, write_space
from tuner.search.driver import run_search
from tuner.search.options import SearchOptions
from tuner.search.settle import SearchFailed
from tuner.tracking.results import export_config, leaderboard

pytestmark = pytest.mark.ray  # starts a Ray cluster (or a Tune run on one); not in the fast lane

JOBS = 16
PARAMS = {"refine.beta": {"float": [4.0, 16.0]}, "segment.train.lr": {"float": [0.005, 0.05], "log": True}}
FIXED = TINY_FIXED | {"segment.train.epochs": 3}  # the short rung runs 1 of 3 epochs


def _options(work: Path, data: Path, uri: str, experiment: str, **extra: Any) -> SearchOptions:
    space = write_space(work, "staged", params=PARAMS, fixed=FIXED)
    return SearchOptions(
        space_files=(str(space),),
        samples=JOBS,
        experiment=experiment,
        data=str(data),
        concurrency=1,  # one job at a time: the promotions follow from the job count alone
        cpus_per_trial=1,
        storage=str(work / "storage"),
        tracking_uri=uri,
        seed=3,
        cache_dir=str(work / "cache"),
        searcher="staged",
        reduction_factor=2,  # every rung promotes half: sixteen jobs reach the full schedule
        rung_records=2,
        **extra,
    )


def _runs(client: MlflowClient, experiment: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], "tags.`wsss.role` = 'trial'")


@pytest.fixture(scope="module")
def staged(
    mlflow_server: str, tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("staged")
    options = _options(work, tiny_data_dir, mlflow_server, "staged-test")
    parent = run_search(options)
    client = MlflowClient(mlflow_server)
    return {"client": client, "parent": parent, "runs": _runs(client, "staged-test"), "options": options}


def test_one_run_per_configuration_with_a_step_per_rung_job(staged: dict[str, Any]) -> None:
    client, runs = staged["client"], staged["runs"]
    parent = client.get_run(staged["parent"])
    assert parent.info.status == "FINISHED" and parent.data.params["searcher"] == "staged"
    assert parent.data.metrics["jobs"] == JOBS
    ids = [r.data.tags["wsss.trial_id"] for r in runs]
    assert len(ids) == len(set(ids)) == parent.data.metrics["configs"]
    assert sum(int(r.data.tags["wsss.jobs"]) for r in runs) == JOBS
    for run in runs:
        rungs = [int(m.value) for m in client.get_metric_history(run.info.run_id, "rung")]
        assert len(rungs) == int(run.data.tags["wsss.jobs"]) and rungs == sorted(rungs)
        names = ("cam", "pseudo", "short", "full", "repeat")
        assert run.data.tags["wsss.rung"] == names[max(rungs)]
        if max(rungs) >= 3:
            assert run.info.status == "FINISHED" and "val_miou" in run.data.metrics
        else:
            assert (
                run.info.status == "KILLED"
                and run.data.tags["wsss.status"] == f"stopped at {names[max(rungs)]}"
            )
            assert "val_miou" not in run.data.metrics  # a short schedule's score is short_val_miou
    assert sum(r.info.status == "FINISHED" for r in runs) >= 1
    shorts = [r for r in runs if "short_val_miou" in r.data.metrics]
    assert shorts and all(
        r.data.params["segment.train.epochs"] == "3" for r in shorts
    )  # the config, not the job


def test_promotions_compute_only_the_stages_they_lack(staged: dict[str, Any]) -> None:
    store = Path(staged["options"].storage) / "store"
    builds = {
        stage: len([p for p in (store / stage).glob("*/*") if p.is_dir()])
        for stage in ("seed", "refine", "segment")
    }
    histories = {
        r.info.run_id: [int(m.value) for m in staged["client"].get_metric_history(r.info.run_id, "rung")]
        for r in staged["runs"]
    }
    jobs_at = [sum(rungs.count(k) for rungs in histories.values()) for k in range(5)]
    # The space searches no seed knob: every upstream shares one seed stage (one more at the repeat's
    # rng_seed). Each pseudo job trains its refine stage once, each DeepLab job one DeepLab; a repeat
    # redoes refine and DeepLab at the next rng_seed.
    assert builds["seed"] == 1 + (jobs_at[4] > 0)
    assert builds["refine"] == jobs_at[1] + jobs_at[4]
    assert builds["segment"] == jobs_at[2] + jobs_at[3] + jobs_at[4]
    assert jobs_at[3] >= 1


def test_leaderboard_ranks_configurations_that_reached_the_full_schedule(
    staged: dict[str, Any], tmp_path: Path
) -> None:
    rows = leaderboard(staged["client"], "staged-test")
    finished = [r for r in rows if r["objective"] is not None]
    assert finished and rows[: len(finished)] == finished
    assert {r["rung"] for r in finished} <= {"full", "repeat"}
    assert [r["objective"] for r in finished] == sorted((r["objective"] for r in finished), reverse=True)
    # What each configuration's own jobs computed: nothing for a CAM job that found its seed stored.
    assert all(r["compute_seconds"] > 0 for r in rows if r["rung"] != "cam")
    out = tmp_path / "best.yaml"
    export_config(staged["client"], "staged-test", 1, out)
    exported = yaml.safe_load(out.read_text())
    assert exported["segment"]["train"]["epochs"] == 3 and exported.get("rng_seed", 0) == 0


def test_a_budget_in_compute_ends_the_search(mlflow_server: str, tiny_data_dir: Path, tmp_path: Path) -> None:
    options = _options(tmp_path, tiny_data_dir, mlflow_server, "staged-budget", budget="0.02m")  # 1.2 s
    # Tiny stages take 0.3-0.5 s: the budget is spent long before a configuration reaches the full
    # schedule, which the search says (it has no result to export) instead of ending as interrupted.
    with pytest.raises(SearchFailed, match=r"no configuration reached the full DeepLab schedule .* --budget"):
        run_search(options)
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("staged-budget")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'search'")
    assert parent.info.status == "FAILED" and parent.data.params["budget"] == "0.02m"
    assert parent.data.metrics["jobs"] < JOBS and parent.data.metrics["budget_used"] >= 0.02
    assert parent.data.metrics["compute_seconds"] >= 1.2
    assert all(r.info.status == "KILLED" for r in _runs(client, "staged-budget"))
