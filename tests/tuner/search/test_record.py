"""A search's record (parsed spaces + base config as JSON) round-trips every shipped space, and a
damaged record is an error naming its file, never something half-trusted."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

import wsss
from tuner.search import record
from tuner.spaces.space import Base, load_search

ROOT = Path(__file__).resolve().parents[3]
SPACES = sorted(p for p in (ROOT / "search_spaces").glob("*.yaml") if "method:" in p.read_text())


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_every_shipped_space_round_trips(path: Path, tmp_path: Path) -> None:
    base = wsss.config_source("voc12")
    search = load_search([path], Base(base))  # relative ranges resolved on the base they are recorded with
    record.write(str(tmp_path), "s-1", search, base)
    again, base_again = record.read(str(tmp_path), "s-1")
    assert again == search and base_again == base
    assert record.read(str(tmp_path), "other") is None


def test_all_spaces_together_on_an_object_store() -> None:
    search = load_search(SPACES)
    fs = pafs._MockFileSystem()
    text = record.dumps(search, None)
    with fs.open_output_stream("record.json") as stream:
        stream.write(text.encode())
    assert record.loads(text, "record.json") == (search, None)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "damaged search record"),
        ('{"format": 99, "spaces": []}', "not a format-1 search record"),
        ('{"format": 1, "spaces": []}', "no spaces"),
        ('{"format": 1, "spaces": [{"name": "x"}]}', "a space without fixed values"),
        (
            '{"format": 1, "spaces": [{"name": "x", "method": "cam", "metric": "val_miou", "mode": "max", '
            '"fixed": {}, "params": [{"key": "refine.beta", "distribution": "{}"}]}]}',
            "damaged search record",
        ),
        (
            '{"format": 1, "spaces": [{"name": "x", "method": "cam", "metric": "val_miou", "mode": "max", '
            '"fixed": {}}], "base": {"seed": {"train": {"lr": "fast"}}}}',
            "seed.train.lr",
        ),
    ],
)
def test_damaged_records_are_errors_naming_the_file(text: str, problem: str) -> None:
    with pytest.raises(wsss.ConfigError, match=r"s3://b/searches/x\.json: damaged search record") as info:
        record.loads(text, "s3://b/searches/x.json")
    assert problem in str(info.value)
