"""No import circle anywhere in wsss/ or tuner/ (DESIGN.md: layers without circles). Every import counts,
also those inside functions and under `if TYPE_CHECKING:`: a circle there is a layering mistake too
(a module below another naming its types), only one that Python happens to survive."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("wsss", "tuner")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(name: str, path: Path, modules: set[str]) -> set[str]:
    """The dotted names `name`'s module imports, absolute (relative imports resolved); `from a import
    b` names `a.b` when that is a module (importing a submodule is not a use of its package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name resolves to its longest module prefix)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in _imported(name, path, set(modules)):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def test_the_graph_sees_the_modules_and_their_imports() -> None:
    graph = import_graph()
    assert {"wsss.config", "wsss.config_load", "wsss.methods.sc_cam", "tuner.search.driver"} <= set(graph)
    assert "wsss.config" in graph["wsss.config_load"] and "wsss.methods" in graph["wsss.config_load"]
    assert "wsss.store.debris" in graph["wsss.store.stage_store"]


def test_a_circle_is_found_and_named() -> None:
    with pytest.raises(graphlib.CycleError) as found:
        graphlib.TopologicalSorter({"a": {"b"}, "b": {"c"}, "c": {"a"}}).prepare()
    assert set(found.value.args[1]) == {"a", "b", "c"}


def test_no_import_circle_in_wsss_or_tuner() -> None:
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")
