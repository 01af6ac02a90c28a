"""The tuner uses only the public `wsss` API (DESIGN.md): no `wsss.<module>` imports anywhere in tuner/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wsss

TUNER = Path(__file__).resolve().parents[2] / "tuner"


@pytest.mark.parametrize("path", sorted(TUNER.rglob("*.py")), ids=lambda p: str(p.relative_to(TUNER)))
def test_only_the_top_level_wsss_api(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wsss"):
            assert node.module == "wsss", f"{path.name}:{node.lineno} imports from {node.module}"
            assert all(alias.name in wsss.__all__ for alias in node.names)
        if isinstance(node, ast.Import):
            assert all(a.name == "wsss" or not a.name.startswith("wsss.") for a in node.names), path.name
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "wsss":
            assert node.attr in wsss.__all__ or node.attr == "__version__", (
                f"{path.name}:{node.lineno} wsss.{node.attr}"
            )
