"""`wsss-tune search --searcher staged` for real: Ray Tune on loopback runs rung jobs over tiny synthetic
data, a real MLflow server keeps one run per configuration, promotions pay only the stages they lack,
an interrupted search resumes its ladder, a budget in compute ends the search, and the leaderboard
and export work on its runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.tuner.helpers import TINY_FIXED, interrupt_when, write_space
from tuner.search.driver import run_search
from tuner.search.options import SearchOptions
from tuner.search.settle import SearchFailed
from tuner.tracking.analysis import report
from tuner.tracking.results import export_config, leaderboard
from tuner.tracking.staged_report import rung_fidelity

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


def _ended_jobs(client: MlflowClient, experiment: str) -> tuple[int, int]:
    """(jobs of configurations whose runs are not running, runs running)."""
    if client.get_experiment_by_name(experiment) is None:
        return 0, 0
    runs = _runs(client, experiment)
    running = sum(r.info.status == "RUNNING" for r in runs)
    return sum(int(r.data.tags.get("wsss.jobs", "0")) for r in runs if r.info.status != "RUNNING"), running


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuner.cli.main", *args]


@pytest.fixture(scope="module")
def staged(
    mlflow_server: str, tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The search as a user runs it: started from the command line, interrupted (Ctrl-C) while a job
    runs, and continued with `wsss-tune resume`."""
    work = tmp_path_factory.mktemp("staged")
    options = _options(work, tiny_data_dir, mlflow_server, "staged-test")
    env = {**os.environ, "WSSS_CACHE_DIR": str(options.cache_dir), "MLFLOW_TRACKING_URI": mlflow_server}
    flags = ["--samples", str(JOBS), "--experiment", "staged-test", "--data", str(tiny_data_dir)]
    flags += ["--cpus-per-trial", "1", "--storage", options.storage, "--seed", "3", "--searcher", "staged"]
    flags += ["--reduction-factor", "2", "--rung-records", "2"]
    search = subprocess.Popen(
        _cli("search", options.space_files[0], *flags),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    client = MlflowClient(mlflow_server)
    # Ctrl-C while a job runs, five having ended.
    interrupt_when(search, lambda: (s := _ended_jobs(client, "staged-test"))[0] >= 5 and s[1] > 0, 300)
    store = Path(options.storage) / "store"
    before = {p.relative_to(store) for p in store.glob("*/*/*") if p.is_dir()}
    resumed = subprocess.run(
        _cli("resume", "--experiment", "staged-test", "--storage", options.storage),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("staged-test").experiment_id], "tags.`wsss.role` = 'search'"
    )
    return {
        "client": client,
        "parent": parent.info.run_id,
        "runs": _runs(client, "staged-test"),
        "options": options,
        "stored_before_resume": before,
        "tune_path": parent.data.tags["wsss.tune_path"],
    }


def _rungs(staged: dict[str, Any]) -> dict[str, list[int]]:
    """Each configuration's rung history (a job Tune ran again on resume, because it ended after Tune's
    last checkpoint of the search, logs its rung twice: it found its stages stored)."""
    client = staged["client"]
    return {
        r.data.tags["wsss.trial_id"]: [int(m.value) for m in client.get_metric_history(r.info.run_id, "rung")]
        for r in staged["runs"]
    }


def test_resume_continues_the_ladder_where_it_stopped(staged: dict[str, Any]) -> None:
    # The latest session's file, as Tune picks it (Searcher.restore_from_dir): JSON, whatever its name.
    latest = max(Path(staged["tune_path"]).glob("searcher-state-*.pkl"))
    state = json.loads(latest.read_text())
    assert state["finished_jobs"] == JOBS and state["jobs"] == {}
    assert sum(len(r) for r in state["planner"]["records"]) == JOBS
    assert len(state["planner"]["configs"]) == len(staged["runs"])
    # A ladder started afresh would have issued configuration 0's CAM job and its successors again.
    assert sum(len(set(rungs)) for rungs in _rungs(staged).values()) == JOBS
    # ... and its sampler would propose its first configurations again.
    upstream = [
        r.data.params["refine.beta"] for r in staged["runs"] if r.data.tags["wsss.upstream_config"] == "-"
    ]
    assert len(set(upstream)) == len(upstream)
    store = Path(staged["options"].storage) / "store"
    after = {p.relative_to(store) for p in store.glob("*/*/*") if p.is_dir()}
    assert staged["stored_before_resume"] <= after  # nothing stored was rebuilt or lost


def test_one_run_per_configuration_with_a_step_per_rung_job(staged: dict[str, Any]) -> None:
    client, runs = staged["client"], staged["runs"]
    parent = client.get_run(staged["parent"])
    assert parent.info.status == "FINISHED" and parent.data.params["searcher"] == "staged"
    assert parent.data.metrics["jobs"] == JOBS
    ids = [r.data.tags["wsss.trial_id"] for r in runs]
    assert len(ids) == len(set(ids)) == parent.data.metrics["configs"]
    # A job cut off by the Ctrl-C (or ended after Tune's last checkpoint) ran again on resume and
    # opened its configuration's run once more.
    assert sum(int(r.data.tags["wsss.jobs"]) for r in runs) >= JOBS
    for run in runs:
        rungs = [int(m.value) for m in client.get_metric_history(run.info.run_id, "rung")]
        assert rungs == sorted(rungs)
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
    jobs_at = [sum(k in set(rungs) for rungs in _rungs(staged).values()) for k in range(5)]
    # The space searches no seed knob: every upstream shares one seed stage (one more at the repeat's
    # rng_seed). Each pseudo job trains its refine stage once, each DeepLab job one DeepLab; a repeat
    # redoes refine and DeepLab at the next rng_seed.
    assert builds["seed"] == 1 + (jobs_at[4] > 0)
    assert builds["refine"] == jobs_at[1] + jobs_at[4]
    assert builds["segment"] == jobs_at[2] + jobs_at[3] + jobs_at[4]
    assert jobs_at[3] >= 1


def test_the_search_counts_every_stage_its_jobs_built_once(staged: dict[str, Any]) -> None:
    # Every stage in the store was built by one of this search's jobs, and the search's compute is
    # what they cost: a job that Tune ran again after the resume counts what its first attempt built.
    store = Path(staged["options"].storage) / "store"
    manifests = [
        json.loads(path.read_text())
        for stage in ("seed", "refine", "segment")
        for path in (store / stage).glob("*/manifest.json")
    ]
    assert manifests and all(m["built_by"].startswith(f"{staged['parent']}/") for m in manifests)
    parent = staged["client"].get_run(staged["parent"])
    built = sum(m["compute_seconds"] for m in manifests)
    assert parent.data.metrics["compute_seconds"] == pytest.approx(built, rel=1e-6)


def test_report_plots_both_studies_and_logs_the_rungs_fidelity(
    staged: dict[str, Any], tmp_path: Path
) -> None:
    client, out = staged["client"], tmp_path / "report"
    written, fidelity = report(client, "staged-test", staged["options"].storage, out)
    names = {p.relative_to(out).as_posix() for p in written}
    # the upstream study (refine.beta, told pseudo-mask mIoU) always holds two told trials by now
    assert {"upstream/param_importances.png", "upstream/optimization_history.html"} <= names
    assert all(p.stat().st_size > 0 for p in written)
    # the rungs' fidelity from the state Tune saved (its arithmetic: test_staged_report.py)
    planner = json.loads(max(Path(staged["tune_path"]).glob("searcher-state-*.pkl")).read_text())["planner"]
    assert fidelity == rung_fidelity(planner["records"], [c["parent"] for c in planner["configs"]])
    parent = client.search_runs(
        [client.get_experiment_by_name("staged-test").experiment_id], "tags.`wsss.role` = 'search'"
    )[0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "analysis/upstream")}
    assert "analysis/upstream/param_importances.png" in logged
    assert set(fidelity) <= set(client.get_run(parent.info.run_id).data.metrics)


def test_leaderboard_ranks_configurations_that_reached_the_full_schedule(
    staged: dict[str, Any], tmp_path: Path
) -> None:
    rows = leaderboard(staged["client"], "staged-test")
    finished = [r for r in rows if r["objective"] is not None]
    assert finished and rows[: len(finished)] == finished
    assert {r["rung"] for r in finished} <= {"full", "repeat"}
    assert [r["objective"] for r in finished] == sorted((r["objective"] for r in finished), reverse=True)
    # What each configuration's own jobs computed (nothing for a CAM job that found its seed stored,
    # nor for a job run again on resume that found its stages stored).
    assert sum(r["compute_seconds"] for r in rows) > 0
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
