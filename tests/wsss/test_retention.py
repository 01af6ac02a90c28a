"""`wsss store gc`: keep what exported configs need, or what is recent; list unless told to apply."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

import wsss
from tests.helpers import tiny_config
from wsss.cli import main as wsss_main
from wsss.retention import collect_garbage, config_keys
from wsss.store import StageStore

FINGERPRINT = "f" * 16


def _publish_pipeline(store: StageStore, cfg: wsss.PipelineConfig) -> dict[str, str]:
    keys = wsss.stage_keys(cfg, FINGERPRINT)
    for stage, key in keys.items():
        if store.read_manifest(stage, key) is None:
            with store.build(stage, key) as build:
                (build.path / "out.bin").write_bytes(b"x" * 1000)
    return keys


def _export(path: Path, cfg: wsss.PipelineConfig, fingerprint: str | None = FINGERPRINT) -> Path:
    mapping = yaml.safe_load(wsss.dump_config(cfg))
    provenance = {"experiment": "e"} | (
        {"data": {"fingerprint": fingerprint, "location": "synthetic"}} if fingerprint else {}
    )
    path.write_text(yaml.safe_dump({wsss.PROVENANCE_KEY: provenance, **mapping}))
    return path


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StageStore:
    if request.param == "local":
        return StageStore(tmp_path / "store", tmp_path / "cache")
    return StageStore("bucket/store", tmp_path / "cache", filesystem=pafs._MockFileSystem())


def test_gc_keeps_what_exported_configs_need(store: StageStore, tmp_path: Path) -> None:
    best, other = tiny_config(), tiny_config("refine.beta=5.0")
    kept = _publish_pipeline(store, best)
    dropped = _publish_pipeline(store, other)
    assert kept["seed"] == dropped["seed"]  # one seed stage, shared by both
    keep = config_keys([_export(tmp_path / "best.yaml", best)])
    listed = collect_garbage(store, keep, None)  # a dry run: lists, removes nothing
    assert {(c.stage, c.key) for c in listed} == {
        ("refine", dropped["refine"]),
        ("segment", dropped["segment"]),
    }
    assert all(c.bytes == 1000 for c in listed)
    assert store.read_manifest("refine", dropped["refine"]) is not None
    collect_garbage(store, keep, None, apply=True)
    assert store.read_manifest("refine", dropped["refine"]) is None
    assert store.read_manifest("segment", dropped["segment"]) is None
    assert all(store.lookup(stage, key) is not None for stage, key in kept.items())
    assert collect_garbage(store, keep, None) == []


def test_gc_by_age_leaves_recent_artifacts(store: StageStore) -> None:
    _publish_pipeline(store, tiny_config())
    assert collect_garbage(store, None, older_than_days=1, apply=True) == []
    assert len(collect_garbage(store, None, older_than_days=0, apply=True)) == 3
    assert collect_garbage(store, None, older_than_days=0) == []


def test_gc_needs_a_rule_and_configs_that_know_their_data(tmp_path: Path) -> None:
    store = StageStore(tmp_path / "store", tmp_path / "cache")
    with pytest.raises(wsss.ConfigError, match="give what to keep"):
        collect_garbage(store, None, None)
    blind = _export(tmp_path / "old.yaml", tiny_config(), fingerprint=None)
    with pytest.raises(wsss.ConfigError, match=r"old\.yaml: records no dataset fingerprint"):
        config_keys([blind])


def test_wsss_store_gc_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = StageStore(tmp_path / "work" / "store", tmp_path / "work" / "cache")
    _publish_pipeline(store, tiny_config())
    other = _publish_pipeline(store, tiny_config("refine.beta=5.0"))
    best = _export(tmp_path / "best.yaml", tiny_config())
    common = ["store", "gc", "--workdir", str(tmp_path / "work"), "--keep-config", str(best)]
    assert wsss_main(common) == 0
    out = capsys.readouterr().out
    assert f"would remove refine/{other['refine']}" in out and "pass --apply" in out
    assert store.read_manifest("refine", other["refine"]) is not None
    assert wsss_main([*common, "--apply"]) == 0
    assert "removed 2 artifact(s)" in capsys.readouterr().out
    assert store.read_manifest("refine", other["refine"]) is None
    assert wsss_main(["store", "gc", "--workdir", str(tmp_path / "work")]) == 2  # no rule given
