"""`wsss-tune search`'s options are defined once, as SearchOptions' fields (tuner.options): the parser,
the dataclass and docs/search.md's usage block agree."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from tuner.cli.main import _parser
from tuner.options import add_options, from_namespace
from tuner.search.options import SearchOptions

DOCS = Path(__file__).resolve().parents[2] / "docs" / "search.md"


def _search_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_options(parser, SearchOptions)
    return parser


def test_the_parser_fills_every_option_and_keeps_the_dataclass_defaults() -> None:
    args = _search_parser().parse_args(["a.yaml", "b.yaml", "--samples", "4", "--experiment", "e"])
    options = from_namespace(SearchOptions, args)
    assert options == SearchOptions(space_files=("a.yaml", "b.yaml"), samples=4, experiment="e")
    given = _search_parser().parse_args(
        ["a.yaml", "--samples", "4", "--experiment", "e", "--reuse-fraction", "0.5", "--node-cache-gb", "10"]
    )
    assert from_namespace(SearchOptions, given).reuse_fraction == 0.5
    assert from_namespace(SearchOptions, given).node_cache_gb == 10.0


def test_every_option_but_the_node_cache_folder_is_on_the_command_line() -> None:
    flags = {a.dest for a in _search_parser()._actions if a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(SearchOptions)}
    assert fields - flags == {"space_files", "cache_dir"} and flags - fields == {"spaces"}


def test_the_documented_usage_lists_exactly_the_parsers_flags() -> None:
    usage = re.search(r"```\n(wsss-tune search .*?)\nwsss-tune report", DOCS.read_text(), re.S)
    assert usage, "docs/search.md has no `wsss-tune search` usage block"
    documented = set(re.findall(r"--[a-z-]+", usage.group(1)))
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    parsed = {s for a in sub.choices["search"]._actions for s in a.option_strings if s.startswith("--")}
    assert documented == parsed - {"--help"}
