"""The stage store on every backend (the `store` fixture: local, in-memory, S3 through moto)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from wsss.configio import digest
from wsss.errors import StoreError
from wsss.stages.rounds import payload_key
from wsss.store import MANIFEST, StageStore, stage_key


def _local(tmp_path: Path) -> StageStore:
    """For tests that edit a local store's files directly."""
    return StageStore(tmp_path / "store", cache_dir=tmp_path / "cache-local")


def _build(store: StageStore, stage: str = "seed", key: str = "k1", payload: str = "cams") -> None:
    with store.build(stage, key) as build:
        (build.path / "cams").mkdir()
        (build.path / "cams" / "a.npz").write_text(payload)
        (build.path / "model.pt").write_bytes(b"\0" * 100)
        build.meta["metrics"] = {"cam_miou": 0.5}


def test_miss_then_hit(store: StageStore) -> None:
    assert store.lookup("seed", "k1") is None
    _build(store)
    artifact = store.lookup("seed", "k1")
    assert artifact is not None
    assert (artifact.path / "cams" / "a.npz").read_text() == "cams"
    assert artifact.metrics == {"cam_miou": 0.5}
    assert artifact.manifest["files"] == {"cams/a.npz": 4, "model.pt": 100}
    assert store.lookup("seed", "other") is None and store.lookup("refine", "k1") is None


def test_nothing_is_visible_until_the_build_completes(store: StageStore) -> None:
    with store.build("seed", "k1") as build:
        (build.path / "model.pt").write_text("half")
        assert store.lookup("seed", "k1") is None  # files written, manifest not yet
    assert store.lookup("seed", "k1") is not None


def test_failed_build_publishes_nothing_and_cleans_up(store: StageStore, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.build("seed", "k1") as build:
        (build.path / "model.pt").write_text("half")
        staged = build.path
        raise RuntimeError("boom")
    assert store.lookup("seed", "k1") is None
    assert not staged.exists()
    _build(store)  # a later attempt succeeds normally
    assert store.lookup("seed", "k1") is not None


def test_first_published_attempt_wins(store: StageStore) -> None:
    with store.build("seed", "k1") as slow:
        (slow.path / "model.pt").write_text("slow")
        _build(store, payload="fast")  # a concurrent worker publishes first
    assert slow.artifact is not None
    assert (slow.artifact.path / "cams" / "a.npz").read_text() == "fast"
    assert store.lookup("seed", "k1").manifest["attempt"] == slow.artifact.manifest["attempt"]  # type: ignore[union-attr]


def test_local_store_with_lost_files_is_rebuilt(tmp_path: Path) -> None:
    store = _local(tmp_path)
    _build(store)
    artifact = store.lookup("seed", "k1")
    assert artifact is not None
    (artifact.path / "model.pt").unlink()
    assert store.lookup("seed", "k1") is None


def test_unreadable_manifest_counts_as_a_miss(tmp_path: Path) -> None:
    store = _local(tmp_path)
    _build(store)
    (tmp_path / "store" / "seed" / "k1" / MANIFEST).write_text("{not json")
    assert store.lookup("seed", "k1") is None


def test_remote_store_downloads_into_the_cache(tmp_path: Path) -> None:
    fs = pafs._MockFileSystem()
    writer = StageStore("bucket/prefix", cache_dir=tmp_path / "writer", filesystem=fs)
    _build(writer)
    reader = StageStore("bucket/prefix", cache_dir=tmp_path / "reader", filesystem=fs)  # another node
    artifact = reader.lookup("seed", "k1")
    assert artifact is not None and str(artifact.path).startswith(str(tmp_path / "reader"))
    assert (artifact.path / "model.pt").stat().st_size == 100
    manifest = json.loads(fs.open_input_stream(f"bucket/prefix/seed/k1/{MANIFEST}").read())
    assert manifest["key"] == "k1" and not list((tmp_path / "writer" / "staging").iterdir())


def test_store_uri(tmp_path: Path) -> None:
    store = StageStore(f"file://{tmp_path}/uri-store", cache_dir=tmp_path / "cache")
    _build(store)
    assert store.is_local and store.lookup("seed", "k1") is not None
    with pytest.raises(StoreError, match="cannot open the stage store"):
        StageStore("nosuchscheme://bucket/x", cache_dir=tmp_path / "cache")


def test_stage_key_covers_every_input() -> None:
    base = {
        "stage": "refine",
        "config": {"beta": 8},
        "upstream": "u",
        "dataset": "d",
        "version": 1,
        "rng_seed": 0,
    }
    key = stage_key(**base)  # type: ignore[arg-type]
    assert key == stage_key(**base)  # type: ignore[arg-type]
    for field, value in [
        ("stage", "segment"),
        ("config", {"beta": 9}),
        ("upstream", "v"),
        ("dataset", "e"),
        ("version", 2),
        ("rng_seed", 1),
    ]:
        assert stage_key(**{**base, field: value}) != key  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tamper",
    [
        {"attempt": "../../../etc"},
        {"attempt": "/abs"},
        {"files": {"../outside": 1}},
        {"files": {"/etc/passwd": 1}},
        {"metrics": [1, 2]},
        {"format": 99},
        {"compute_seconds": "long"},
        {"files": {"model.pt": -1}},
        {"files": {"model.pt": True}},
        {"stage": 3},
    ],
)
def test_tampered_manifests_are_ignored(tmp_path: Path, tamper: dict) -> None:
    """Stores are shared: a manifest whose names would reach outside its artifact is not trusted."""
    store = _local(tmp_path)
    _build(store)
    path = tmp_path / "store" / "seed" / "k1" / MANIFEST
    path.write_text(json.dumps({**json.loads(path.read_text()), **tamper}))
    assert store.lookup("seed", "k1") is None  # a miss: the stage is rebuilt
    path.write_text("[1, 2, 3]")
    assert store.lookup("seed", "k1") is None


def test_a_file_of_another_size_than_recorded_is_a_miss(tmp_path: Path) -> None:
    """A truncated or replaced file (the manifest records every size) must not block its key."""
    store = _local(tmp_path)
    _build(store)
    artifact = store.lookup("seed", "k1")
    assert artifact is not None
    (artifact.path / "cams" / "a.npz").write_text("ca")  # truncated
    assert store.lookup("seed", "k1") is None and not store.available("seed", "k1")
    _build(store, payload="cams")  # the rebuild publishes over the damaged one
    rebuilt = store.lookup("seed", "k1")
    assert rebuilt is not None and rebuilt.path != artifact.path


def test_a_damaged_node_copy_is_downloaded_again(tmp_path: Path) -> None:
    fs = pafs._MockFileSystem()
    writer = StageStore("bucket/prefix", cache_dir=tmp_path / "writer", filesystem=fs)
    _build(writer)
    reader = StageStore("bucket/prefix", cache_dir=tmp_path / "reader", filesystem=fs)
    copy = reader.lookup("seed", "k1")
    assert copy is not None
    (copy.path / "model.pt").write_bytes(b"\0")  # the node's disk damaged its copy
    again = reader.lookup("seed", "k1")
    assert again is not None and (again.path / "model.pt").stat().st_size == 100


def test_unpublish_withdraws_only_the_attempt_named(store: StageStore) -> None:
    _build(store)
    artifact = store.lookup("seed", "k1")
    assert artifact is not None
    assert not store.unpublish("seed", "k1", "20200101T000000Z-abcdef12-1@elsewhere")  # rebuilt meanwhile
    assert store.lookup("seed", "k1") is not None
    assert store.unpublish("seed", "k1", artifact.manifest["attempt"])
    assert store.lookup("seed", "k1") is None and not store.unpublish("seed", "k1", "x")


def test_stage_and_round_keys_are_the_one_config_digest_and_do_not_move() -> None:
    """Stores written before keep their keys: the value is pinned, and both keys are `digest`'s, the
    function test_config.py checks for equal and unequal configs."""
    base = {"stage": "refine", "config": {"beta": 8}, "upstream": "u", "dataset": "d", "version": 1}
    assert stage_key(**base, rng_seed=0) == "e760f436e8a947399ed3e35b"  # type: ignore[arg-type]
    assert stage_key(**base, rng_seed=0) == digest({**base, "rng_seed": 0})[:24]  # type: ignore[arg-type]
    payload = {"step": "targets", "round": 1, "knobs": {"clusters": 10}, "previous": None}
    assert payload_key(payload) == digest(payload)[:24]


def test_a_build_names_the_stores_builder_in_its_manifest(tmp_path: Path) -> None:
    named = StageStore(tmp_path / "store", cache_dir=tmp_path / "cache-named", builder="search-run/trial_1")
    _build(named)
    _build(named, key="k2")
    reader = _local(tmp_path)  # another process, another builder (here none): it reads the name back
    artifact = reader.lookup("seed", "k1")
    assert artifact is not None and artifact.manifest["built_by"] == "search-run/trial_1"
    _build(reader, key="k3")
    assert reader.lookup("seed", "k3").manifest["built_by"] == ""  # type: ignore[union-attr]
    # a manifest naming its builder with anything but a string is not one of ours: not reused
    manifest = tmp_path / "store" / "seed" / "k2" / MANIFEST
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"built_by": ["x"]}))
    assert reader.lookup("seed", "k2") is None
