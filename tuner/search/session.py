"""The Ray session a search runs in: the workers' environment (where MLflow is, how long its calls
may take), starting or joining Ray, the resources a trial may ask for, and the code version a search
records."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import ray

import wsss
from tuner.search.options import SearchOptions


def git_commit() -> str | None:
    """The git commit of this checkout, when it is one (a wheel installed in an image is not)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> str:
    """wsss's version plus the short git commit of its checkout, when there is one."""
    sha = git_commit()
    return f"{wsss.__version__}+{sha[:7] if sha else 'unknown'}"


def source_tags() -> dict[str, str]:
    """MLflow's own source tags (its UI's Source column and the run page's git commit)."""
    tags = {"mlflow.source.name": "wsss-tune search", "mlflow.source.type": "JOB"}
    sha = git_commit()
    return tags | ({"mlflow.source.git.commit": sha} if sha else {})


# MLflow's own HTTP retries (default: 7 tries with doubling waits, 120 s timeouts) would hold a
# trial's journal on one write for minutes; the journal retries anyway, so calls fail fast.
_MLFLOW_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def trial_env(uri: str) -> dict[str, str]:
    """Environment variables for every trial: where MLflow is, and how long its HTTP calls may take."""
    return {"MLFLOW_TRACKING_URI": uri} | {k: os.environ.get(k, v) for k, v in _MLFLOW_HTTP.items()}


@contextlib.contextmanager
def ray_session(address: str | None, env: dict[str, str]) -> Iterator[None]:
    """Connect to (or start) Ray with `env` in the workers' runtime environment; disconnect afterwards."""
    if ray.is_initialized():
        raise wsss.WsssError("Ray is already initialised in this process; run the search in a fresh process")
    ray.init(
        address=address,
        runtime_env={"env_vars": env},
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    try:
        yield
    finally:
        ray.shutdown()


def check_resources(options: SearchOptions) -> None:
    """On Ray started here (no --address, so no autoscaler), a trial asking for more CPUs or GPUs than
    the machine has would wait for them forever: refuse it before anything starts. Counted as Ray
    counts them: the CPUs this process may run on, the GPUs CUDA sees."""
    if options.address is not None:
        return  # a cluster may add nodes when trials ask for them
    import torch

    have = {"CPU": len(os.sched_getaffinity(0)), "GPU": torch.cuda.device_count()}
    for option, unit, wanted in (
        ("--cpus-per-trial", "CPU", options.cpus_per_trial),
        ("--gpus-per-trial", "GPU", options.gpus_per_trial),
    ):
        if wanted > have[unit]:
            raise wsss.ConfigError(
                f"{option} {wanted:g}: this machine has {have[unit]} {unit}(s), so no trial could ever "
                "start (give --address to run on a cluster)"
            )
