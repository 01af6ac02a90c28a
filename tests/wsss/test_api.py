"""The public API (wsss/__init__.py) loads each name on first use and tells type checkers the same names
with their real types; the two lists must not drift apart, or tuner/'s calls go untyped."""

from __future__ import annotations

import ast
from pathlib import Path

import wsss

INIT = Path(wsss.__file__)


def _typed_names() -> dict[str, str]:
    """Public name -> "module.attribute" from the `if TYPE_CHECKING:` block."""
    tree = ast.parse(INIT.read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    return {
        alias.asname or alias.name: f"{node.module}.{alias.name}"
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_every_export_is_typed_as_what_it_loads() -> None:
    typed = _typed_names()
    assert set(typed) == set(wsss.__all__)
    for name in wsss.__all__:
        module, _, attribute = typed[name].rpartition(".")
        assert getattr(wsss, name) is getattr(__import__(module, fromlist=[attribute]), attribute), name
