"""Network weights the pipeline writes into its artifacts and reads back from the stage store.

torch.save writes through its own zip writer, which reports a full disk as "unexpected pos" (a
RuntimeError naming no file); serialising into memory first lets the write fail as the OSError it
is, naming the file. Reading goes through `weights_only=True` (tensors and plain containers, no
code), and any file that does not load so is a damaged artifact, rebuilt rather than trusted.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from wsss.errors import DamagedArtifact


def save_state(state: dict[str, Any], path: Path) -> None:
    """Write a state dict (OSError naming `path` when the disk is full or read-only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        with path.open("wb") as handle:
            handle.write(buffer.getbuffer())
    except OSError as exc:
        exc.filename = exc.filename or str(path)
        raise


def load_stored_state(path: Path) -> dict[str, Any]:
    """A state dict this pipeline stored, or DamagedArtifact naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # untrusted bytes: every way of failing means the file is not ours
        kind = "not a weights-only checkpoint" if "weights_only" in str(exc) else type(exc).__name__
        raise DamagedArtifact(path, f"damaged weights file in the stage store ({kind})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DamagedArtifact(path, "damaged weights file in the stage store (not a state dict)")
    return state
