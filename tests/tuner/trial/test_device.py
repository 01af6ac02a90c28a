"""A trial given GPUs computes on CUDA or fails saying why (cluster-review.md A4): never a silent CPU run.

Ray advertises whatever GPUs a node is started with, so a Ray node declaring a GPU on this CPU-only
machine is exactly the broken passthrough of a GPU node whose container cannot see its GPU.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from tests.tuner.helpers import write_space
from tuner.search.driver import run_search
from tuner.search.options import SearchOptions
from tuner.search.settle import SearchFailed
from tuner.spaces.space import load_search
from tuner.trial.device import NoCudaError, describe_device
from tuner.trial.settings import TrialSettings
from tuner.trial.trainable import trial_config

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


def _settings(tmp_path: Path, gpus: float) -> TrialSettings:
    search = load_search([write_space(tmp_path)])
    return TrialSettings(search, None, str(tmp_path / "store"), None, "0", "run", 1, None, gpus=gpus)


def test_a_trial_holding_a_gpu_asks_for_cuda_and_one_without_keeps_the_base_device(tmp_path: Path) -> None:
    params = {"space": "tiny", "tiny|refine.beta": 8.0, "tiny|refine.logt": 3}

    def device(gpus: float) -> str:
        settings = _settings(tmp_path, gpus)
        return trial_config(settings.search, settings, params)[1].runtime.device

    assert device(1.0) == device(0.5) == "cuda"
    assert device(0.0) == "auto"


def test_a_gpu_trials_loaders_take_its_cpus_but_one_unless_the_config_sets_them(tmp_path: Path) -> None:
    params = {"space": "tiny", "tiny|refine.beta": 8.0, "tiny|refine.logt": 3}

    def workers(gpus: float, threads: int, base: dict[str, Any] | None = None) -> int:
        settings = replace(_settings(tmp_path, gpus), threads=threads, base=base)
        return trial_config(settings.search, settings, params)[1].runtime.workers

    assert workers(1.0, 8) == 7 and workers(0.5, 4) == 3 and workers(1.0, 1) == 0
    assert workers(0.0, 8) == 0  # a CPU trial's CPUs compute the model
    assert workers(1.0, 8, {"runtime": {"workers": 2}}) == 2
    assert workers(0.0, 8, {"runtime": {"workers": 2}}) == 2


@NO_CUDA
def test_no_cuda_device_is_an_error_that_says_what_to_check() -> None:
    assert describe_device(0) == "cpu (no GPU requested)"
    with pytest.raises(NoCudaError) as caught:
        describe_device(1)
    message = str(caught.value)
    assert "holds 1 GPU (--gpus-per-trial) but torch sees no CUDA device" in message
    assert f"torch {torch.__version__}, built for CUDA {torch.version.cuda}" in message
    assert "never falls back to the CPU" in message


@NO_CUDA
@pytest.mark.ray
def test_a_search_on_a_node_advertising_a_gpu_it_cannot_use_fails_instead_of_running_on_cpu(
    mlflow_server: str, tiny_data_dir: Path, tmp_path: Path
) -> None:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False}
    )
    try:
        options = SearchOptions(
            space_files=(str(write_space(tmp_path)),),
            samples=1,
            experiment="no-cuda",
            data=str(tiny_data_dir),
            concurrency=1,
            cpus_per_trial=1,
            gpus_per_trial=1,
            address=cluster.address,
            storage=str(tmp_path / "storage"),
            tracking_uri=mlflow_server,
            cache_dir=str(tmp_path / "cache"),
            max_failures=0,
        )
        with pytest.raises(SearchFailed, match="torch sees no CUDA device"):
            run_search(options)
    finally:
        cluster.shutdown()
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("no-cuda")
    (trial,) = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
    assert trial.info.status == "FAILED" and "torch sees no CUDA device" in trial.data.tags["wsss.error"]
    assert not list((tmp_path / "storage" / "store").glob("*/*/*"))  # no stage was computed on the CPU
