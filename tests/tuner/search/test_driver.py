"""A real search on local Ray, logging to a real MLflow server, over tiny synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

import wsss
from tests.tuner.helpers import write_space
from tuner.cli.main import main as tune_main
from tuner.search.driver import run_search
from tuner.search.options import SearchOptions
from tuner.search.searcher import StageAwareOptunaSearch
from tuner.tracking.results import export_config, leaderboard, write_leaderboard

pytestmark = pytest.mark.ray  # starts a Ray cluster (or a Tune run on one); not in the fast lane

SAMPLES = 5


@pytest.fixture(scope="module")
def search(
    mlflow_server: str, tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("search")
    space = write_space(
        work
    )  # the seed config is fixed, so every trial after the first reuses its seed stage
    options = SearchOptions(
        space_files=(str(space),),
        samples=SAMPLES,
        experiment="search-test",
        data=str(tiny_data_dir),
        concurrency=1,
        cpus_per_trial=1,
        storage=str(work / "storage"),
        tracking_uri=mlflow_server,
        seed=3,
        cache_dir=str(work / "cache"),
        rung_records=1,  # five trials never fill a rung of the default 4: judge from the first record
    )
    parent = run_search(options)
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("search-test")
    children = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
    return {"client": client, "parent": parent, "children": children, "work": work, "options": options}


def test_parent_and_one_child_per_trial_all_ended(search: dict[str, Any]) -> None:
    client, children = search["client"], search["children"]
    parent = client.get_run(search["parent"])
    assert parent.info.status == "FINISHED"
    assert {"samples", "seed", "sampler", "scheduler", "code_version", "metric"} <= set(parent.data.params)
    assert [a.path for a in client.list_artifacts(search["parent"], "spaces")] == ["spaces/tiny.yaml"]
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not a GenAI one
    note = parent.data.tags["mlflow.note.content"]  # its description in MLflow's UI
    assert "over tiny with the asha searcher, 5 trials" in note and "--experiment search-test" in note
    # The leaderboard link (MLflow's own shared-view mechanism; rendered by check_mlflow_ui.py): the
    # view's filter and sort are ones the server runs, and give the trials best first.
    link = f"{search['options'].tracking_uri}/#/experiments/{experiment.experiment_id}/runs?"
    assert link + "workflowType=machine_learning&viewStateShareKey=wsss-leaderboard-val_miou" in note
    view = json.loads(experiment.tags["mlflow.sharedViewState.wsss-leaderboard-val_miou"])
    assert view["selectedColumns"][0] == "metrics.`val_miou`" and view["orderByAsc"] is False
    order = [view["orderByKey"] + " DESC"]
    shown = client.search_runs([experiment.experiment_id], view["searchFilter"], order_by=order)
    assert {r.info.run_id for r in shown} == {c.info.run_id for c in children}
    values = [r.data.metrics.get("val_miou", float("-inf")) for r in shown]
    assert values == sorted(values, reverse=True)
    assert len(children) == SAMPLES
    assert all(c.data.tags["mlflow.parentRunId"] == search["parent"] for c in children)
    assert {c.info.status for c in children} <= {"FINISHED", "KILLED"}
    assert any(c.info.status == "FINISHED" for c in children)
    for child in children:
        expected = {"FINISHED": "finished", "KILLED": "pruned"}[child.info.status]
        assert child.data.tags["wsss.status"] == expected


def test_children_hold_config_stage_metrics_and_artifacts(search: dict[str, Any]) -> None:
    client = search["client"]
    for child in search["children"]:
        run_id = child.info.run_id
        # MLflow's UI: the Datasets and Source columns, the git commit on the run page.
        (dataset,) = child.inputs.dataset_inputs
        assert dataset.dataset.digest == child.data.tags["wsss.data.fingerprint"][:32]
        assert dataset.dataset.name == Path(search["options"].data).name
        assert json.loads(dataset.dataset.profile)["train"] > 0
        assert child.data.tags["mlflow.source.name"] == "wsss-tune search"
        note = child.data.tags["mlflow.note.content"]  # the run page's description: what was sampled
        beta = child.data.params["refine.beta"]
        assert note.startswith("A tiny trial (cam) of a search that maximises val_miou; sampled: ")
        assert f"refine.beta={beta}" in note
        assert child.data.tags.get("mlflow.source.git.commit") == client.get_run(
            search["parent"]
        ).data.tags.get("mlflow.source.git.commit")
        assert (
            child.data.params["refine.beta"] and child.data.params["runtime.threads"] == "1"
        )  # threads follow CPUs
        assert child.info.artifact_uri.startswith(
            "mlflow-artifacts:"
        )  # proxied by the server, not on the worker
        history = client.get_metric_history(run_id, "objective")
        steps = sorted(m.step for m in history)
        assert steps == list(range(1, len(steps) + 1))  # one value per finished stage, step = stage number
        files = {a.path for a in client.list_artifacts(run_id, "stages")}
        assert {
            "stages/seed_samples.png",
            "stages/cam_threshold_curve.png",
            "stages/per_class_iou.parquet",
        } <= files
        assert {a.path for a in client.list_artifacts(run_id)} >= {"config.yaml", "stages"}
        if child.info.status == "FINISHED":
            assert "stages/segment_samples.png" in files and steps == [1, 2, 3]
            table = pq.read_table(
                client.download_artifacts(run_id, "stages/per_class_iou.parquet", str(search["work"]))
            )
            assert table.column_names == ["class", "cam_iou", "cam_iou_best", "pseudo_iou", "val_iou"]
            assert child.data.metrics["val_miou"] == child.data.metrics["objective"]


def test_seed_stage_is_computed_once_and_reused(search: dict[str, Any]) -> None:
    seed_root = Path(search["options"].storage) / "store" / "seed"
    attempts = [p for p in seed_root.glob("*/*") if p.is_dir()]
    assert len(attempts) == 1
    cached = sorted(c.data.metrics["seed_cached"] for c in search["children"])
    assert cached == [0.0] + [1.0] * (SAMPLES - 1)
    reused = [c for c in search["children"] if c.data.metrics["seed_cached"] == 1.0]
    assert all("seed" in c.data.tags["wsss.reused"] for c in reused)
    assert all(
        c.data.metrics["compute_seconds"] < c.data.metrics["compute_seconds_without_reuse"] for c in reused
    )


def test_pruned_trials_reach_optuna_as_pruned(search: dict[str, Any]) -> None:
    experiment_dir = Path(search["client"].get_run(search["parent"]).data.tags["wsss.tune_path"])
    searcher = StageAwareOptunaSearch(metric="objective", mode="max", final_iteration=3)
    searcher.restore_from_dir(str(experiment_dir))
    states = sorted(t.state.name for t in searcher._ot_study.trials)
    statuses = [c.info.status for c in search["children"]]
    assert states.count("PRUNED") == statuses.count("KILLED")
    assert states.count("COMPLETE") == statuses.count("FINISHED")
    # Whether any trial is stopped here depends on the order of five tiny trials' values; that a
    # stopped trial reaches Optuna PRUNED is checked on a real Tune run in test_searcher.py.


def test_leaderboard_formats(search: dict[str, Any], tmp_path: Path) -> None:
    rows = leaderboard(search["client"], "search-test")
    assert [r["rank"] for r in rows] == list(range(1, SAMPLES + 1))
    finished = [r for r in rows if r["status"] == "finished"]
    assert rows[: len(finished)] == finished  # finished first, best objective first
    assert [r["objective"] for r in finished] == sorted((r["objective"] for r in finished), reverse=True)
    assert {r["status"] for r in rows[len(finished) :]} <= {"pruned"}
    for fmt in ("csv", "parquet", "json"):
        write_leaderboard(rows, fmt, tmp_path / f"board.{fmt}")
    assert pq.read_table(tmp_path / "board.parquet").num_rows == SAMPLES
    assert json.loads((tmp_path / "board.json").read_text())[0]["trial"] == rows[0]["trial"]
    assert (tmp_path / "board.csv").read_text().startswith('"rank","trial","method","objective"')
    by_method = leaderboard(search["client"], "search-test", top=2, by="method")
    assert len(by_method) == 2 and {r["method"] for r in by_method} == {"cam"}


def test_export_then_wsss_run_reproduces_the_trial(
    search: dict[str, Any], tiny_data_dir: Path, tmp_path: Path
) -> None:
    best = tmp_path / "best.yaml"
    provenance = export_config(search["client"], "search-test", 1, best)
    expected = provenance["metrics"]["val_miou"]
    exported = yaml.safe_load(best.read_text())
    assert exported["runtime"]["threads"] == 1 and exported["runtime"]["progress"] is True
    fingerprint = wsss.open_dataset(tiny_data_dir, wsss.load_config().data, tmp_path / "c").fingerprint
    assert exported["provenance"]["data"] == {"fingerprint": fingerprint, "location": str(tiny_data_dir)}
    # Without --data the export's own record of the data is used; with it, the fingerprint is checked.
    for workdir, cached, data in (
        (Path(search["options"].storage), True, []),
        (tmp_path / "fresh", False, ["--data", str(tiny_data_dir)]),
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "wsss.cli",
                "--cache-dir",
                str(tmp_path / "cache"),
                "-q",
                "run",
                str(best),
                *data,
                "--workdir",
                str(workdir),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["val_miou"] == pytest.approx(expected, abs=1e-9)
        assert all(stage["cached"] is cached for stage in summary["stages"].values())


def test_gc_keeps_the_best_trials_stages(
    search: dict[str, Any], mlflow_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`wsss-tune gc --experiment X --top 1`: the best trial's stages stay, the others' go (on --apply).
    Runs after the export test, which needs the stages of trial 1 only."""
    storage = search["options"].storage
    best = leaderboard(search["client"], "search-test", top=1)[0]
    tags = search["client"].get_run(best["run_id"]).data.tags
    keys = {stage: tags[f"wsss.key.{stage}"] for stage in wsss.STAGES}
    store = wsss.StageStore(f"{storage}/store", cache_dir=Path(storage) / "cache")
    published = {
        (s, k.name) for s in wsss.STAGES for k in (Path(storage) / "store" / s).iterdir() if k.is_dir()
    }
    common = [
        "gc",
        "--experiment",
        "search-test",
        "--top",
        "1",
        "--storage",
        storage,
        "--tracking-uri",
        mlflow_server,
    ]
    assert tune_main(common) == 0
    listed = capsys.readouterr().out
    assert f"would remove refine/{keys['refine']}" not in listed and "pass --apply" in listed
    assert tune_main([*common, "--apply"]) == 0
    left = {(s, k.name) for s in wsss.STAGES for k in (Path(storage) / "store" / s).iterdir() if k.is_dir()}
    assert left == set(keys.items()) < published
    assert all(store.lookup(stage, key) is not None for stage, key in keys.items())


def test_a_search_where_no_trial_finishes_fails_and_names_the_cause(
    mlflow_server: str, tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trials whose training diverges raise; each run ends FAILED with the reason, and a search in
    which no trial finished exits 1 with its parent run FAILED and the most common cause named.

    The diverging learning rate comes from the base config (--config), which the space overrides.
    """
    space = write_space(tmp_path, "diverge", params={"refine.beta": {"float": [4.0, 16.0]}})
    base = tmp_path / "base.yaml"
    base.write_text("seed:\n  train:\n    lr: 1.0e12\n")
    args = [
        "search",
        str(space),
        "--samples",
        "2",
        "--experiment",
        "crash-test",
        "--data",
        str(tiny_data_dir),
    ]
    args += ["--storage", str(tmp_path / "storage"), "--tracking-uri", mlflow_server, "--config", str(base)]
    assert tune_main(args) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("wsss-tune: error: no trial finished (2 failed, 0 pruned, of 2); ")
    assert "most common cause (2 of 2 failed): " in last and "lower seed.train.lr" in last
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("crash-test")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'search'")
    assert parent.info.status == "FAILED" and parent.data.tags["wsss.error"] in last
    assert json.loads(parent.data.tags["wsss.trial_errors"])[0]["trials"] == 2
    children = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
    for child in children:
        assert child.info.status == "FAILED" and child.data.tags["wsss.status"] == "failed"
        assert "loss became" in child.data.tags["wsss.error"]
        assert "lower seed.train.lr" in child.data.tags["wsss.error"]
    rows = leaderboard(client, "crash-test")
    assert [(r["status"], r["objective"]) for r in rows] == [("failed", None)] * 2
