"""A damaged published artifact never blocks its key: a file of the wrong size is a miss at lookup, a
file that cannot be read back withdraws its artifact and the run builds it again, and nothing a
stored file holds is executed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import TINY, tiny_config
from wsss.cli import main
from wsss.pipeline import PipelineResult, prepare_dataset, run_pipeline
from wsss.store import MANIFEST, StageStore


class _RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _run(data_dir: Path, tmp_path: Path, *extra: str) -> PipelineResult:
    cfg = tiny_config(*extra)
    data = prepare_dataset(cfg, data_dir, tmp_path / "cache")
    return run_pipeline(cfg, data, StageStore(tmp_path / "store", cache_dir=tmp_path / "node"))


def _manifest(artifact: Path) -> Path:
    return artifact.parent / MANIFEST


def _record_size(artifact: Path, name: str) -> None:
    """What a hostile writer of a shared store would do too: make the manifest agree with the file."""
    manifest = json.loads(_manifest(artifact).read_text())
    manifest["files"][name] = (artifact / name).stat().st_size
    _manifest(artifact).write_text(json.dumps(manifest))


def test_a_truncated_cam_file_is_rebuilt_not_fatal(tiny_data_dir: Path, tmp_path: Path) -> None:
    first = _run(tiny_data_dir, tmp_path)
    seed = first.stages["seed"].path
    cam = next((seed / "cams").iterdir())
    cam.write_bytes(cam.read_bytes()[:40])
    again = _run(tiny_data_dir, tmp_path)
    assert not again.stages["seed"].cached  # the damaged artifact was a miss, and was built again
    assert again.stages["seed"].key == first.stages["seed"].key
    assert again.metrics()["cam_miou"] == first.metrics()["cam_miou"]


def test_a_cam_file_damaged_at_its_size_is_withdrawn_and_rebuilt(tiny_data_dir: Path, tmp_path: Path) -> None:
    first = _run(tiny_data_dir, tmp_path)
    seed = first.stages["seed"].path
    cam = next((seed / "cams").iterdir())
    cam.write_bytes(b"\0" * cam.stat().st_size)  # the size the manifest records: lookup trusts it
    again = _run(tiny_data_dir, tmp_path, "refine.beta=9")  # refine reads the CAMs again
    assert not again.stages["seed"].cached and not again.stages["refine"].cached
    assert again.stages["seed"].path != seed  # a new attempt replaced the withdrawn one


def test_a_pickle_in_a_stored_round_model_is_never_run(
    tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = [
        "seed.method=sc_cam",
        "seed.params.rounds=1",
        "seed.params.clusters=2",
        "seed.params.kmeans_init=1",
    ]
    store = tmp_path / "store"
    args = ["-q", "--cache-dir", str(tmp_path / "cache"), "run", "--data", str(tiny_data_dir), "--store"]
    assert main([*args, str(store), "--set", *TINY, *sub]) == 0
    models = [p.parent for p in (store / "seed_round").glob("*/*/model.pt")]
    assert models
    for model in models:
        torch.save({"w": _RunsAShellCommand(tmp_path / "pwned")}, model / "model.pt")
        _record_size(model, "model.pt")
    capsys.readouterr()
    # A changed CAM threshold recomputes the seed stage from the stored rounds, loading their models.
    code = main([*args, str(store), "--set", *TINY, *sub, "seed.bg_threshold=0.2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err and not (tmp_path / "pwned").exists()
    for model in models:  # each key was withdrawn and published again from a fresh attempt
        manifest = json.loads(_manifest(model).read_text())
        assert manifest["attempt"] != model.name
        assert torch.load(model.parent / manifest["attempt"] / "model.pt", weights_only=True)


def test_a_manifest_field_of_the_wrong_type_is_a_miss(tiny_data_dir: Path, tmp_path: Path) -> None:
    first = _run(tiny_data_dir, tmp_path)
    path = _manifest(first.stages["segment"].path)
    path.write_text(json.dumps({**json.loads(path.read_text()), "compute_seconds": "a lot"}))
    again = _run(tiny_data_dir, tmp_path)
    assert again.stages["seed"].cached and not again.stages["segment"].cached


def test_a_cam_file_that_would_inflate_is_withdrawn_unread(tiny_data_dir: Path, tmp_path: Path) -> None:
    """A deflated member can expand a few KB into gigabytes: one that says it unpacks to more than
    its image's CAMs take is damage, rebuilt, and never decompressed."""
    first = _run(tiny_data_dir, tmp_path)
    seed = first.stages["seed"].path
    cam = next((seed / "cams").iterdir())
    with np.load(cam) as f:
        keys = f["keys"]
    np.savez_compressed(cam, keys=keys, planes=np.zeros((2, keys.size, 2000, 2000), np.uint8))
    _record_size(seed, f"cams/{cam.name}")
    again = _run(tiny_data_dir, tmp_path, "refine.beta=9")
    assert not again.stages["seed"].cached and again.stages["seed"].path != seed
