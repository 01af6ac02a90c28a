"""A trial's device. A trial given GPUs (`--gpus-per-trial`) computes on CUDA or fails saying why.

Ray advertises a node's GPUs from the cluster config (cluster.yaml's `resources`), not from what its
container can see, and `runtime.device: auto` falls back to the CPU: with a host driver too old for
torch's CUDA, or a container started without GPU access, every trial would quietly train on the CPU
for hours (cluster-review.md A4). So a trial that holds a GPU asks for `cuda` outright.
"""

from __future__ import annotations

import os
import socket

import torch

import wsss


class NoCudaError(wsss.ConfigError):
    """A trial that holds GPUs found no CUDA device."""


def trial_device(gpus: float) -> str | None:
    """The `runtime.device` a trial holding `gpus` GPUs runs on; None: the base config's own."""
    return "cuda" if gpus > 0 else None


def loader_workers(gpus: float, threads: int, configured: int) -> int:
    """DataLoader processes for a trial: a GPU trial without `runtime.workers` set gets one per CPU it
    holds but the one its main process drives the GPU from. A GPU steps faster than one process
    decodes and augments (issue 25: ~48 VOC images/s for seed and segment per worker, 18 for refine
    before its jitter went uint8); a CPU trial keeps its CPUs for the model (workers 0)."""
    if gpus <= 0 or configured > 0:
        return configured
    return max(threads - 1, 0)


def describe_device(gpus: float) -> str:
    """What the trial computes on (for its run's tags); raises NoCudaError when it holds GPUs that
    torch cannot see."""
    if gpus <= 0:
        return "cpu (no GPU requested)"
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        raise NoCudaError(
            f"this trial holds {gpus:g} GPU (--gpus-per-trial) but torch sees no CUDA device on "
            f"{socket.gethostname()} (torch {torch.__version__}, built for CUDA {torch.version.cuda}; "
            f"CUDA_VISIBLE_DEVICES={visible}): the node's NVIDIA driver is missing or older than that "
            "CUDA needs, or its container has no GPU access (docs/cluster.md); a trial given a GPU "
            "never falls back to the CPU"
        )
    return f"cuda: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
