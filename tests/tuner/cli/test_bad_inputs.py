"""Every kind of bad input to `wsss-tune` that can be caught before a search starts, each answered the
same way: exit status 2, `wsss-tune: error:` lines naming the file, key or value, no traceback, and
nothing started: no MLflow database, no Tune state, no stage store. (Bad inputs that only show inside a
running search are covered where those searches run: test_search.py, test_attempts.py.)
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.tuner.helpers import TINY_FIXED
from tuner.cli.main import main
from tuner.search.options import SearchOptions
from wsss.data.classes import write_mask

Setup = Callable[[Path, Path], list[str]]  # (dataset, scratch folder) -> wsss-tune arguments


@dataclass(frozen=True)
class Case:
    id: str
    setup: Setup
    expect: str


def _space_file(t: Path, body: dict[str, Any], name: str = "space") -> Path:
    path = t / f"{name}.yaml"
    content = {"method": "cam", "fixed": dict(TINY_FIXED), **body}
    path.write_text(yaml.safe_dump(content))
    return path


def _search(t: Path, *spaces: Path, extra: tuple[str, ...] = (), data: Path | None = None) -> list[str]:
    args = ["search", *map(str, spaces), "--samples", "1", "--experiment", "bad"]
    args += ["--storage", str(t / "storage"), "--tracking-uri", f"sqlite:///{t / 'mlflow.db'}"]
    return [*args, *(["--data", str(data)] if data is not None else []), *extra]


def option(*extra: str) -> Setup:
    return lambda d, t: _search(t, _space_file(t, {}), extra=extra, data=d)


def space(body: dict[str, Any], includes: dict[str, Any] | None = None) -> Setup:
    def setup(d: Path, t: Path) -> list[str]:
        for name, content in (includes or {}).items():
            (t / name).write_text(yaml.safe_dump(content) if not isinstance(content, str) else content)
        return _search(t, _space_file(t, body), data=d)

    return setup


def raw_space(text: str) -> Setup:
    def setup(d: Path, t: Path) -> list[str]:
        (t / "raw.yaml").write_text(text)
        return _search(t, t / "raw.yaml", data=d)

    return setup


def params(**spec: Any) -> Setup:
    return space({"params": {k.replace("__", "."): v for k, v in spec.items()}})


def _two_spaces(first: dict[str, Any], second: dict[str, Any]) -> Setup:
    return lambda d, t: _search(t, _space_file(t, first, "a"), _space_file(t, second, "b"), data=d)


def _broken_val_mask(d: Path, t: Path) -> list[str]:
    image_id = (d / "ImageSets/Segmentation/val.txt").read_text().split()[0]
    write_mask(d / "SegmentationClass" / f"{image_id}.png", np.full((64, 64), 9, np.uint8))
    return _search(t, _space_file(t, {}), data=d)


def _binary_space(d: Path, t: Path) -> list[str]:
    (t / "bin.yaml").write_bytes(b"\xff\xfemethod: cam")
    return _search(t, t / "bin.yaml", data=d)


def _tracking_file(content: bytes, name: str = "x.db") -> Setup:
    """A search whose --tracking-uri names an existing file that is not an MLflow database."""

    def setup(d: Path, t: Path) -> list[str]:
        (t / name).write_bytes(content)
        return _search(t, _space_file(t, {}), extra=("--tracking-uri", f"sqlite:///{t / name}"), data=d)

    return setup


def _foreign_sqlite(path: Path) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.commit()
    return path


def _restore_from(make: Callable[[Path], object]) -> Setup:
    """`db restore` of a backup that `make` writes (into a folder standing for the bucket)."""

    def setup(d: Path, t: Path) -> list[str]:
        (t / "bucket").mkdir()
        make(t / "bucket" / "mlflow.db")
        return [
            "db",
            "restore",
            "--db",
            str(t / "head" / "mlflow.db"),
            "--remote",
            str(t / "bucket" / "mlflow.db"),
        ]

    return setup


def _database_then_leaderboard(make: Callable[[Path], object]) -> Setup:
    def setup(d: Path, t: Path) -> list[str]:
        (t / "storage").mkdir()
        make(t / "storage" / "mlflow.db")
        return ["leaderboard", "--experiment", "x", "--storage", str(t / "storage")]

    return setup


def _many_choices(count: int, repeat: bool = False) -> Setup:
    choices = [float(i % 3 + 1) if repeat else float(i + 1) for i in range(count)]
    return params(refine__beta={"categorical": choices})


def _leaderboard(*extra: str) -> Setup:
    return _with_experiment(lambda t: ["leaderboard", "--experiment", "other", *extra])


def _with_experiment(args: Callable[[Path], list[str]]) -> Setup:
    """A database that holds an experiment 'other' (and no search in experiment 'empty')."""

    def setup(d: Path, t: Path) -> list[str]:
        client = MlflowClient(f"sqlite:///{t / 'storage' / 'mlflow.db'}")
        client.create_experiment("other")
        client.create_experiment("empty")
        broken = client.create_experiment("broken")  # a search record another version wrote
        client.create_run(broken, tags={"wsss.role": "search", "wsss.options": "{not json"})
        halfway = client.create_experiment("halfway")  # a finished trial that never logged its config
        run = client.create_run(halfway, tags={"wsss.role": "trial", "wsss.trial_id": "t1"})
        client.set_terminated(run.info.run_id, "FINISHED")
        lost = client.create_experiment("lost")  # a search whose Tune state is gone
        options = asdict(SearchOptions(space_files=("x.yaml",), samples=1, experiment="lost"))
        tags = {"wsss.role": "search", "wsss.options": json.dumps(options | {"name": "lost-1"})}
        client.create_run(lost, tags=tags)
        return [*args(t), "--storage", str(t / "storage")]

    return setup


SEARCH_OPTIONS = [
    Case("samples 0", option("--samples", "0"), "--samples: 0 is out of range"),
    Case("concurrency 0", option("--concurrency", "0"), "--concurrency: 0 is out of range"),
    Case("cpus 0", option("--cpus-per-trial", "0"), "--cpus-per-trial: 0.0 is out of range"),
    Case("negative gpus", option("--gpus-per-trial", "-1"), "--gpus-per-trial: -1.0 is out of range"),
    Case("reduction factor 1", option("--reduction-factor", "1"), "--reduction-factor: 1 is out of range"),
    Case("rung records 0", option("--rung-records", "0"), "--rung-records: 0 is out of range"),
    Case("unknown searcher", option("--searcher", "tpe"), "--searcher 'tpe': one of asha, staged"),
    Case("budget for asha", option("--budget", "2h"), "--budget: only the staged searcher"),
    Case(
        "demo budget for asha",
        lambda d, t: ["demo", "--workdir", str(t / "demo"), "--train", "8", "--val", "4", "--budget", "1h"],
        "--budget: only the staged searcher",
    ),
    Case(
        "budget without a unit",
        option("--searcher", "staged", "--budget", "2"),
        "--budget '2': give a positive amount of stage compute in hours (4h)",
    ),
    Case(
        "short fraction 1",
        option("--searcher", "staged", "--short-fraction", "1"),
        "--short-fraction: 1.0 is out of range",
    ),
    Case(
        "refine branch 0",
        option("--searcher", "staged", "--refine-branch", "0"),
        "--refine-branch '0': auto or a whole number >= 1",
    ),
    Case(
        "staged search before DeepLab",
        lambda d, t: _search(
            t, _space_file(t, {"metric": "pseudo_miou"}), extra=("--searcher", "staged"), data=d
        ),
        "--searcher staged: the spaces search on pseudo_miou, a refine metric",
    ),
    Case("empty experiment name", option("--experiment", ""), "--experiment: give the search a name"),
    Case("base config missing", option("--config", "nope.yaml"), "nope.yaml: no such config file or preset"),
    Case(
        "data folder missing",
        lambda d, t: _search(t, _space_file(t, {}), data=t / "none"),
        "none: data folder",
    ),
    Case("broken val mask", _broken_val_mask, ".png: mask values [9] outside the classes 0..3 and 255"),
    Case(
        "tracking URI a file store",
        option("--tracking-uri", "./mlruns"),
        "--tracking-uri ./mlruns: MLflow 3 refuses file stores",
    ),
    Case(
        "tracking URI relative sqlite",
        option("--tracking-uri", "sqlite:///mlflow.db"),
        "give an absolute sqlite path",
    ),
    Case(
        "gpus on a machine without", option("--gpus-per-trial", "1"), "--gpus-per-trial 1: this machine has 0"
    ),
    Case(
        "more cpus than the machine",
        option("--cpus-per-trial", "4096"),
        "--cpus-per-trial 4096: this machine",
    ),
    Case("experiment name with a slash", option("--experiment", "a/b"), "--experiment 'a/b': names folders"),
    Case("experiment name ..", option("--experiment", ".."), "--experiment '..': names folders"),
    Case("experiment name climbing out", option("--experiment", "../../x"), "names folders of the search"),
    Case(
        "tracking database a text file",
        _tracking_file(b"not a database\n"),
        "x.db: not an MLflow database (not a sqlite database)",
    ),
    Case(
        "tracking database a foreign sqlite",
        lambda d, t: (
            _foreign_sqlite(t / "x.db")
            and _search(t, _space_file(t, {}), extra=("--tracking-uri", f"sqlite:///{t / 'x.db'}"), data=d)
        ),
        "x.db: not an MLflow database (a sqlite database without MLflow's tables",
    ),
]

SPACES = [
    Case(
        "space file missing",
        lambda d, t: _search(t, t / "gone.yaml", data=d),
        "gone.yaml: no such search-space",
    ),
    Case("space invalid YAML", raw_space("params: [unclosed\n"), "raw.yaml: invalid YAML"),
    Case("space not a mapping", raw_space("- cam\n"), "raw.yaml: must be a mapping"),
    Case("space is a folder", lambda d, t: _search(t, t, data=d), "scratch: cannot read it"),
    Case("space not text", lambda d, t: _binary_space(d, t), "bin.yaml: not a UTF-8 text file"),
    Case("shared file as a space", raw_space("params: {}\n"), "raw.yaml: not a method space (no `method:`)"),
    Case("unknown method", space({"method": "gradcam"}), "method: unknown method 'gradcam'"),
    Case("unknown top-level key", space({"parms": {}}), "space.yaml: parms: unknown key"),
    Case(
        "not a config field",
        params(seed__train__lrr={"float": [0.1, 0.2]}),
        "seed.train.lrr: not a config field",
    ),
    Case("runtime searched", params(runtime__threads={"int": [1, 2]}), "runtime.threads: not searchable"),
    Case("data searched", params(data__labels={"categorical": ["file"]}), "data.labels: not searchable"),
    Case("method searched", params(seed__method={"categorical": ["cam"]}), "seed.method: set by the space's"),
    Case("range reversed", params(refine__beta={"float": [8, 4]}), "refine.beta: low 8 must be below high 4"),
    Case("log from 0", params(refine__beta={"float": [0, 4], "log": True}), "a log range needs low > 0"),
    Case("unknown range option", params(refine__beta={"float": [1, 4], "lo": 1}), "unknown option(s) ['lo']"),
    Case("spec not a mapping", params(refine__beta=8), "refine.beta: expected one of"),
    Case(
        "float range on an int", params(refine__logt={"float": [1, 4]}), "a float range does not fit this int"
    ),
    Case("int bounds not ints", params(refine__logt={"int": [1.5, 4]}), "int bounds must be integers"),
    Case("bounds not numbers", params(refine__beta={"float": ["a", 4]}), "float needs [low, high] numbers"),
    Case("range outside valid", params(refine__radius={"int": [1, 4]}), "refine.radius: range [1, 4] leaves"),
    Case("no choices", params(segment__scales={"categorical": []}), "categorical needs a non-empty list"),
    Case(
        "invalid choice", params(segment__scales={"categorical": [[1.0], [9.0]]}), "choice [9.0] is invalid"
    ),
    Case(
        "int step 0", params(refine__logt={"int": [2, 6], "step": 0}), "refine.logt: step must be > 0, got 0"
    ),
    Case("float step 0", params(refine__beta={"float": [2, 6], "step": 0}), "refine.beta: step must be > 0"),
    Case("negative step", params(refine__beta={"float": [2, 6], "step": -1}), "step must be > 0, got -1"),
    Case("fractional int step", params(refine__logt={"int": [2, 6], "step": 0.5}), "a positive integer"),
    Case(
        "step beyond range",
        params(refine__logt={"int": [2, 6], "step": 9}),
        "step 9 is larger than the range",
    ),
    Case(
        "log and step", params(refine__beta={"float": [1, 6], "log": True, "step": 1}), "log and step cannot"
    ),
    Case("fixed value invalid", space({"fixed": {"refine.beta": -1}}), "refine.beta: must be > 0"),
    Case(
        "fixed values contradict",
        space({"fixed": {**TINY_FIXED, "refine.alpha_low": 50, "refine.alpha_high": 30}}),
        "fixed values are invalid together (refine.alpha_high: must be > alpha_low (50.0), got 30.0)",
    ),
    Case(
        "fixed and searched",
        space({"fixed": {**TINY_FIXED, "refine.beta": 4}, "params": {"refine.beta": {"float": [2, 6]}}}),
        "refine.beta: both fixed and searched",
    ),
    Case("include missing", space({"include": ["shared.yaml"]}), "shared.yaml: no such search-space file"),
    Case(
        "include with method keys",
        space({"include": ["shared.yaml"]}, {"shared.yaml": {"method": "cam", "params": {}}}),
        "shared.yaml: method: an included file holds only `fixed` and `params`",
    ),
    Case(
        "knob in space and include",
        space(
            {"include": ["shared.yaml"], "params": {"refine.beta": {"float": [2, 6]}}},
            {"shared.yaml": {"params": {"refine.beta": {"float": [4, 8]}}}},
        ),
        "refine.beta: also set by an included file",
    ),
    Case(
        "bad include",
        space({"include": ["shared.yaml"]}, {"shared.yaml": "[1, 2"}),
        "shared.yaml: invalid YAML",
    ),
    Case("unknown metric", space({"metric": "miou"}), "metric: 'miou' is not one of"),
    Case("unknown mode", space({"mode": "maximise"}), "mode: 'maximise' is not max or min"),
    Case(
        "spaces with other metrics",
        _two_spaces({"metric": "val_miou"}, {"metric": "pseudo_miou"}),
        "metric/mode pseudo_miou/max differ from",
    ),
    Case(
        "spaces with one name", _two_spaces({"name": "x"}, {"name": "x"}), "x: several spaces share this name"
    ),
    Case(
        "shared knob ranges differ",
        lambda d, t: (
            _search(
                t,
                _space_file(t, {"include": ["s1.yaml"]}, "a"),
                _space_file(t, {"include": ["s2.yaml"]}, "b"),
                data=d,
            )
            if (t / "s1.yaml").write_text(yaml.safe_dump({"params": {"refine.beta": {"float": [2, 4]}}}))
            and (t / "s2.yaml").write_text(yaml.safe_dump({"params": {"refine.beta": {"float": [2, 8]}}}))
            else []
        ),
        "refine.beta: shared knob with a different range than in",
    ),
    Case(
        "include a string, not a list",
        space({"include": "shared.yaml"}, {"shared.yaml": {"params": {}}}),
        "include: must be a list of file names, e.g. [refine.yaml], got 'shared.yaml'",
    ),
    Case("space name with a bar", space({"name": "a|b"}), "name: 'a|b' must be up to 64 letters"),
    Case("space duplicate key", raw_space("method: cam\nmetric: val_miou\nmethod: seam\n"), "duplicate key"),
    Case(
        "space alias bomb",
        raw_space(
            "method: cam\nparams:\n  refine.beta: {categorical: ["
            + ", ".join(
                ["&x0 [1,1,1,1,1,1,1,1,1]", *[f"&x{i} [{','.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 7)]]
            )
            + "]}\n"
        ),
        "raw.yaml: invalid YAML (holds over 100000 values",
    ),
    Case(
        "space of 200000 choices",
        _many_choices(200_000),
        "space.yaml: invalid YAML (holds over 100000 values",
    ),
    Case("space of 5000 choices", _many_choices(5000), "refine.beta: 5000 choices; at most 1000"),
    Case(
        "choice listed twice", _many_choices(5, repeat=True), "refine.beta: a choice is listed more than once"
    ),
]

READING = [
    Case(
        "leaderboard without a database",
        lambda d, t: ["leaderboard", "--experiment", "x", "--storage", str(t / "none")],
        "mlflow.db: no MLflow database; pass the search's --storage or --tracking-uri",
    ),
    Case(
        "leaderboard of an unknown experiment",
        _with_experiment(lambda t: ["leaderboard", "--experiment", "nope"]),
        "--experiment nope: no such MLflow experiment",
    ),
    Case(
        "parquet leaderboard to the terminal",
        _with_experiment(lambda t: ["leaderboard", "--experiment", "other", "--format", "parquet"]),
        "--format parquet: needs --out FILE",
    ),
    Case(
        "export rank beyond the finished",
        _with_experiment(
            lambda t: ["export", "--experiment", "other", "--rank", "3", "--out", str(t / "b.yaml")]
        ),
        "--rank 3: the experiment has 0 finished trial(s)",
    ),
    Case(
        "export an unknown run",
        _with_experiment(
            lambda t: ["export", "--experiment", "other", "--run-id", "abc", "--out", str(t / "b")]
        ),
        "--run-id abc: no such trial run in experiment 'other'",
    ),
    Case(
        "export a trial that never logged its config",
        _with_experiment(lambda t: ["export", "--experiment", "halfway", "--out", str(t / "b.yaml")]),
        "no config.yaml to export; the trial ended before logging it",
    ),
    Case(
        "resume a search whose Tune state is gone",
        _with_experiment(lambda t: ["resume", "--experiment", "lost"]),
        "no resumable Tune state of search lost-1 under",
    ),
    Case(
        "gc keeping no trial",
        lambda d, t: ["gc", "--experiment", "x", "--top", "0", "--storage", str(t / "storage")],
        "--top: must be >= 1, got 0",
    ),
    Case(
        "gc with nothing to decide by",
        lambda d, t: ["gc", "--storage", str(t / "storage")],
        "store gc: give what to keep (experiments, exported configs) or --older-than-days",
    ),
    Case(
        "resume an unknown experiment",
        _with_experiment(lambda t: ["resume", "--experiment", "nope"]),
        "--experiment nope: no such MLflow experiment",
    ),
    Case(
        "resume an experiment without a search",
        _with_experiment(lambda t: ["resume", "--experiment", "empty"]),
        "--experiment empty: holds no search",
    ),
    Case(
        "resume a damaged search record",
        _with_experiment(lambda t: ["resume", "--experiment", "broken"]),
        "holds no resumable record (made by another version of wsss-tune?)",
    ),
    Case(
        "resume with a relative sqlite URI",
        lambda d, t: ["resume", "--experiment", "x", "--tracking-uri", "sqlite:///m.db"],
        "give an absolute sqlite path",
    ),
    Case("leaderboard top 0", _leaderboard("--top", "0"), "--top: must be >= 1, got 0"),
    Case("leaderboard top -1", _leaderboard("--top", "-1"), "--top: must be >= 1, got -1"),
    Case(
        "leaderboard into a missing folder",
        lambda d, t: _leaderboard("--out", str(t / "none" / "board.csv"))(d, t),
        "none/board.csv: the folder",
    ),
    Case(
        "export into a missing folder",
        _with_experiment(lambda t: ["export", "--experiment", "other", "--out", str(t / "none" / "b.yaml")]),
        "none/b.yaml: the folder",
    ),
    Case(
        "leaderboard of a text file as database",
        _database_then_leaderboard(lambda p: p.write_text("hello")),
        "mlflow.db: not an MLflow database (not a sqlite database)",
    ),
    Case(
        "leaderboard of a foreign sqlite",
        _database_then_leaderboard(_foreign_sqlite),
        "without MLflow's tables (experiments, runs, alembic_version)",
    ),
    Case(
        "gc with a nan age",
        lambda d, t: ["gc", "--older-than-days", "nan", "--storage", str(t / "storage")],
        "--older-than-days: must be >= 0, got nan",
    ),
    Case(
        "restore a 0-byte backup",
        _restore_from(lambda p: p.write_bytes(b"")),
        "not an MLflow database (an empty file); nothing restored",
    ),
    Case(
        "restore a foreign sqlite",
        _restore_from(_foreign_sqlite),
        "not an MLflow database (a sqlite database without MLflow's tables",
    ),
    Case(
        "restore a text file",
        _restore_from(lambda p: p.write_text("SQLite? no")),
        "not an MLflow database (not a sqlite database); nothing restored",
    ),
]

CASES = SEARCH_OPTIONS + SPACES + READING


@pytest.mark.timeout(120)  # some of these inputs made earlier versions hang
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_clean_error_lines(
    case: Case,
    bad_input_workspace: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WSSS_CACHE_DIR", str(tmp_path / "cache"))
    data, scratch = bad_input_workspace
    args = case.setup(data, scratch)
    before = {p for p in tmp_path.rglob("*") if "cache" not in p.parts}
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("wsss-tune: error: ")]
    assert errors and any(case.expect in line for line in errors), err
    created = {p for p in tmp_path.rglob("*") if "cache" not in p.parts} - before
    assert not created, sorted(created)  # no database, Tune state or store was started


def test_the_catalogue_is_long_enough() -> None:
    assert len(CASES) >= 80 and len({c.id for c in CASES}) == len(CASES)
