"""The `wsss` command as a user runs it: real processes for error output, in-process for the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY
from wsss.cli import main

TINY_SYNTH = [
    "data.synthetic.train=12",
    "data.synthetic.val=6",
    "data.synthetic.size=64",
    "data.synthetic.classes=3",
]


def _wsss(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsss.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_run_json_then_fully_cached(tiny_data_dir: Path, tmp_path: Path) -> None:
    args = ["run", "--data", str(tiny_data_dir), "--json", "--set", *TINY]
    first = _wsss(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout.strip().splitlines()[-1])
    assert set(result) == {
        "cam_miou",
        "cam_best_threshold",
        "cam_miou_best",
        "cam_fg_precision",
        "cam_fg_recall",
        "pseudo_miou",
        "val_miou",
        "stages",
    }
    assert set(result["stages"]) == {"seed", "refine", "segment"}
    for stage in result["stages"].values():
        assert {"seconds", "cached", "key", "path"} <= set(stage) and not stage["cached"]
        assert Path(stage["path"]).is_dir() and str(tmp_path / "wsss-work" / "store") in stage["path"]
    second = json.loads(_wsss(*args, cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert all(stage["cached"] for stage in second["stages"].values())
    assert {k: v for k, v in second.items() if k != "stages"} == {
        k: v for k, v in result.items() if k != "stages"
    }


def test_run_without_data_uses_the_cached_synthetic_benchmark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    args = [
        "--cache-dir",
        str(cache),
        "run",
        "--workdir",
        str(tmp_path / "w"),
        "--json",
        "--set",
        *TINY,
        *TINY_SYNTH,
    ]
    assert main(args) == 0
    generated = list((cache / "data").iterdir())
    assert len(generated) == 1 and (generated[0] / "JPEGImages").is_dir()
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["val_miou"] >= 0.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--set", "seed.train.lrr=1"], "seed.train.lrr: unknown key; did you mean 'seed.train.lr'?"),
        (["run", "--data", "nowhere"], "nowhere: data folder not found"),
        (["run", "missing.yaml"], "missing.yaml: no such config file or preset"),
        (["data", "synth", "out", "--size", "10"], "--size: must be within 48..2048 pixels, got 10"),
        (["eval", "nopreds", "--data", "nowhere"], "nowhere: data folder not found"),
        (["config", "show", "--set", "refine.beta=high"], "refine.beta: expected a number, got 'high' (str)"),
    ],
)
def test_user_mistakes_get_one_line_and_no_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    result = _wsss(*args, cwd=tmp_path)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("wsss: error: ") and message in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_crf_asked_for_but_not_installed(tiny_data_dir: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "pydensecrf"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('pydensecrf is not installed')\n")
    env = {"PYTHONPATH": f"{shadow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = _wsss(
        "run", "--data", str(tiny_data_dir), "--set", *TINY, "refine.crf.enabled=true", cwd=tmp_path, env=env
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "refine.crf.enabled=true needs the dense CRF from the `crf` extra: pip install -e '.[crf]'"
        in result.stderr
    )
    assert not list(tmp_path.rglob("manifest.json"))  # said before the seed stage spent any compute


def test_data_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "data",
                "synth",
                str(tmp_path / "d"),
                "--train",
                "3",
                "--val",
                "2",
                "--size",
                "48",
                "--classes",
                "2",
            ]
        )
        == 0
    )
    assert "wrote 3 train and 2 val images (2 classes)" in capsys.readouterr().out
    assert len(list((tmp_path / "d" / "JPEGImages").iterdir())) == 5


def test_eval_ground_truth_against_itself(
    tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred = tiny_data_dir / "SegmentationClass"
    assert (
        main(
            [
                "--cache-dir",
                str(tmp_path),
                "eval",
                str(pred),
                "--data",
                str(tiny_data_dir),
                "--split",
                "train",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert (
        out["miou"] == pytest.approx(1.0)
        and out["split"] == "train"
        and set(out["iou"]) >= {"background", "ant"}
    )
    assert main(["--cache-dir", str(tmp_path), "eval", str(pred), "--data", str(tiny_data_dir)]) == 0
    assert "mIoU" in capsys.readouterr().out


def test_config_show_prints_loadable_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "voc12", "--set", "seed.train.lr=0.3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["seed"]["train"]["lr"] == 0.3 and shown["seed"]["backbone"]["name"] == "resnet50"
    assert shown["data"]["eval_split"] == "train" and shown["refine"]["crf"]["enabled"] is True
    assert (
        shown["seed"]["backbone"]["frozen_stages"] == 3
        and shown["refine"]["train"]["random_rescale"] is False
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(shown))
    assert main(["config", "show", str(tmp_path / "c.yaml")]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == shown


def test_methods_lists_cam(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    assert capsys.readouterr().out.startswith("cam ")


def test_output_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    """`wsss methods | head -1`: no error line, no traceback, the shell's status for SIGPIPE."""
    process = subprocess.Popen(
        [sys.executable, "-m", "wsss.cli", "config", "show"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before anything is written
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and err == "", err
