"""A real search on pseudo-mask mIoU with stage reuse planned by the searcher: the trials stop at the
metric's stage, later trials reuse finished seed stages although the seed knobs are continuous, and
the experiment's Optuna study outlives the search (load, report, warm start)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

import wsss
from tests.tuner.helpers import write_space
from tuner.cli.main import main as tune_main
from tuner.search.driver import run_search
from tuner.search.fidelity import proxy_fidelity
from tuner.search.options import SearchOptions
from tuner.search.study import study_path, study_storage

pytestmark = pytest.mark.ray  # starts a Ray cluster (or a Tune run on one); not in the fast lane

SAMPLES = 6


@pytest.fixture(scope="module")
def search(
    mlflow_server: str, tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("stage-aware")
    params = {"seed.train.lr": {"float": [0.01, 0.1], "log": True}, "refine.beta": {"float": [4.0, 16.0]}}
    space = write_space(work, params=params, metric="pseudo_miou")
    options = SearchOptions(
        space_files=(str(space),),
        samples=SAMPLES,
        experiment="stage-aware",
        data=str(tiny_data_dir),
        storage=str(work / "storage"),
        tracking_uri=mlflow_server,
        seed=1,
        cache_dir=str(work / "cache"),
        reduction_factor=100,  # no trial stopped early: each one shows its stages
        reuse_fraction=1.0,
        reuse_warmup=2,
    )
    parent = run_search(options)
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("stage-aware")
    children = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
    return {"client": client, "parent": parent, "children": children, "work": work, "options": options}


def test_a_search_on_pseudo_miou_never_trains_deeplab(search: dict[str, Any]) -> None:
    children = search["children"]
    assert len(children) == SAMPLES and {c.info.status for c in children} == {"FINISHED"}
    assert all("pseudo_miou" in c.data.metrics and "val_miou" not in c.data.metrics for c in children)
    store = search["work"] / "storage" / "store"
    assert (store / "refine").is_dir() and not (store / "segment").exists()
    params = search["client"].get_run(search["parent"]).data.params
    assert params["stages"] == "seed,refine" and "group=True" in params["sampler"]


def test_later_trials_reuse_finished_seed_stages_by_design(search: dict[str, Any]) -> None:
    children = sorted(search["children"], key=lambda c: c.info.start_time)
    planned = [c for c in children if c.data.tags["wsss.planned_reuse"] != "-"]
    assert len(planned) >= SAMPLES - 2  # after the two warm-up trials, every trial (fraction 1)
    assert all("seed" in c.data.tags["wsss.reused"] for c in planned)
    # Never the final stage's knobs too: that would rerun a finished trial exactly.
    assert {c.data.tags["wsss.planned_reuse"] for c in planned} == {"seed"}
    configs = {(c.data.params["seed.train.lr"], c.data.params["refine.beta"]) for c in children}
    assert len(configs) == SAMPLES
    lrs = {c.data.params["seed.train.lr"] for c in children}
    assert len(lrs) < SAMPLES  # continuous seed knob, yet shared
    seeds = [p for p in (search["work"] / "storage" / "store" / "seed").iterdir() if p.is_dir()]
    assert len(seeds) == len(lrs)


def test_the_study_outlives_the_search(search: dict[str, Any], tmp_path: Path) -> None:
    path = study_path(search["options"].storage, "stage-aware")
    study = optuna.load_study(study_name="stage-aware", storage=study_storage(path))
    assert len(study.trials) == SAMPLES and all(len(t.intermediate_values) == 2 for t in study.trials)
    parent = search["client"].get_run(search["parent"])
    # Logged at the end of the search: what tuner.search.study computes from the study (the seed stage's
    # only when its values and the final ones vary).
    expected = proxy_fidelity(study, 2)
    assert expected["proxy_fidelity_trials"] == SAMPLES
    assert {k: v for k, v in parent.data.metrics.items() if k.startswith("proxy_")} == pytest.approx(expected)
    out = tmp_path / "report"
    common = ["--storage", search["options"].storage, "--tracking-uri", search["client"].tracking_uri]
    assert tune_main(["report", "--experiment", "stage-aware", "--out", str(out), *common]) == 0
    assert {p.suffix for p in out.iterdir()} == {".png", ".html"} and len(list(out.iterdir())) == 6
    artifacts = {a.path for a in search["client"].list_artifacts(search["parent"], "analysis")}
    assert "analysis/param_importances.png" in artifacts


def test_warm_start_from_a_missing_experiment_fails_before_ray(search: dict[str, Any]) -> None:
    options = search["options"]
    bad = SearchOptions(**{**options.__dict__, "experiment": "other", "warm_start": "nope"})
    with pytest.raises(Exception, match="no Optuna study"):
        run_search(bad)


def test_warm_start_from_a_search_on_another_metric_fails_before_ray(search: dict[str, Any]) -> None:
    """The pseudo_miou study's values are not val mIoU: copied, they would read as finals."""
    options = search["options"]
    study = optuna.load_study(
        study_name="stage-aware", storage=study_storage(study_path(options.storage, "stage-aware"))
    )
    assert study.user_attrs["wsss_identity"]["metric"] == "pseudo_miou"
    folder = search["work"] / "val-space"
    folder.mkdir(exist_ok=True)
    space = write_space(folder, params={"refine.beta": {"float": [4.0, 16.0]}})  # metric val_miou
    bad = SearchOptions(
        **{**options.__dict__, "space_files": (str(space),), "experiment": "val", "warm_start": "stage-aware"}
    )
    with pytest.raises(wsss.WsssError, match="metric 'pseudo_miou' there, 'val_miou' here"):
        run_search(bad)
    assert not study_path(options.storage, "val").exists()
