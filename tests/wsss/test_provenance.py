"""An exported config knows its data: `wsss run best.yaml` runs on the trial's data or says why not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import TINY
from wsss.cli import main
from wsss.config import DataConfig
from wsss.config_load import load_config
from wsss.configio import to_mapping
from wsss.data.voc import open_dataset


def _exported(tmp_path: Path, data: dict[str, Any] | None, name: str = "best.yaml") -> Path:
    """A config as `wsss-tune export` writes it: provenance first, then the trial's config."""
    provenance: dict[str, Any] = {"experiment": "e", "run_id": "r", "metric": "val_miou", "value": 0.5}
    if data is not None:
        provenance["data"] = data
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"provenance": provenance, **to_mapping(load_config(None, TINY))}))
    return path


def _run(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    code = main(
        ["-q", "--cache-dir", str(tmp_path / "cache"), "run", "--workdir", str(tmp_path / "w"), *args]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_on_the_recorded_data_and_refuses_other_data(
    tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    fingerprint = open_dataset(tiny_data_dir, DataConfig(), tmp_path / "cache").fingerprint
    best = _exported(tmp_path, {"fingerprint": fingerprint, "location": str(tiny_data_dir)})
    code, out, err = _run(capsys, tmp_path, str(best), "--json")  # no --data: the trial's folder
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["val_miou"] is not None

    other = Path(shutil.copytree(tiny_data_dir, tmp_path / "other"))
    val = other / "ImageSets/Segmentation/val.txt"
    val.write_text("\n".join(val.read_text().split()[:-1]) + "\n")  # one val image fewer
    code, _, err = _run(capsys, tmp_path, str(best), "--data", str(other))
    assert code == 2 and "Traceback" not in err
    assert f"best.yaml: the data at {other} (fingerprint " in err
    assert f"is not the data the trial ran on ({tiny_data_dir}, fingerprint {fingerprint})" in err
    assert "pass --allow-other-data if that is intended" in err

    code, _, err = _run(capsys, tmp_path, str(best), "--data", str(other), "--allow-other-data")
    assert code == 0, err
    assert "is not the data the trial ran on" in caplog.text  # said, not hidden


def test_synthetic_trials_and_missing_or_malformed_records(
    tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    synthetic = _exported(tmp_path, {"fingerprint": "0123456789abcdef", "location": "synthetic"}, "s.yaml")
    code, _, err = _run(capsys, tmp_path, str(synthetic), "--data", str(tiny_data_dir))
    assert code == 2 and "ran on (the synthetic benchmark, fingerprint 0123456789abcdef)" in err

    gone = _exported(tmp_path, {"fingerprint": "0123456789abcdef", "location": "/nowhere/VOC"}, "g.yaml")
    code, _, err = _run(capsys, tmp_path, str(gone))
    assert code == 2 and "g.yaml: the trial ran on /nowhere/VOC, which is not on this machine" in err

    for bad, message in [
        ({"fingerprint": 3}, "provenance.data.fingerprint: expected the dataset fingerprint"),
        ({"fingerprint": "ab", "where": "x"}, "provenance.data: expected a mapping with fingerprint"),
    ]:
        code, _, err = _run(capsys, tmp_path, str(_exported(tmp_path, bad, "bad.yaml")))
        assert code == 2 and message in err and "Traceback" not in err

    plain = _exported(tmp_path, None, "plain.yaml")  # configs without a data record run on any data
    assert load_config(plain) == load_config(None, TINY)
