"""Device, seeding and thread handling, passed explicitly to every stage (no global state is left changed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from wsss.config import RuntimeConfig
from wsss.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    workers: int = 0
    progress: bool = True
    channels_last_mode: str = "auto"  # RuntimeConfig.channels_last
    threads: int = 0  # the CPUs the run may use (0: torch's choice); CPU-bound steps fan out over them
    infer_batch: int = 1  # images per inference forward (RuntimeConfig.infer_batch)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def channels_last(self) -> bool:
        return self.channels_last_mode == "always" or (self.channels_last_mode == "auto" and self.cuda)

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` on the device, in the memory format convolutions run fastest in here (in place)."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    @classmethod
    def from_config(cls, cfg: RuntimeConfig) -> Runtime:
        return cls(
            resolve_device(cfg.device),
            workers=cfg.workers,
            progress=cfg.progress,
            channels_last_mode=cfg.channels_last,
            threads=cfg.threads,
            infer_batch=cfg.infer_batch,
        )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {name!r} requested but no CUDA device is available")
    return device


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for the block and restore the caller's RNG state afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Use `threads` intra-op threads for the block (0 keeps torch's choice)."""
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
