"""YAML a user wrote (config files, `--set` values, search spaces), read as bounded, strict input.

PyYAML's safe loader constructs only plain data. On top of it: YAML 1.2 numbers, no key given twice,
and no document that stands for more than MAX_YAML_VALUES values once its aliases are expanded.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

# A config or search space holds tens of values. Aliases let a few hundred bytes of YAML stand for
# millions of them (nested `*a` references, "billion laughs"), which every later walk over the value
# (merging, converting, an error message) would expand; documents over this many values are refused.
MAX_YAML_VALUES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml's parser when PyYAML was built with it (10-50x faster on a long file), else PyYAML's own.
_SafeLoader: type = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


def _expanded_size(root: Node, limit: int) -> int:
    """How many values the document stands for with every alias expanded (counted once per node, so
    the count itself stays linear in the document), stopping past `limit`."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in active:
            raise ConstructorError(None, None, "an alias refers to itself", node.start_mark)
        active.add(id(node))
        if isinstance(node, SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        active.discard(id(node))
        sizes[id(node)] = total = min(total, limit + 1)
        if total > limit:
            why = f"holds over {limit} values (counting each alias's repeats); not a file of settings"
            raise ConstructorError(None, None, why, node.start_mark)
        return total

    return size(root)


class _Loader(_SafeLoader):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader reading floats as YAML 1.2 does: `1e-5` is a number, not the string
    YAML 1.1 makes of it (which would turn `--set seed.train.lr=1e-5` into a type error). A key given
    twice in one mapping is an error (PyYAML would keep the last silently), and so is a document
    that expands to more than MAX_YAML_VALUES values."""

    def construct_document(self, node: Node) -> Any:
        _expanded_size(node, MAX_YAML_VALUES)
        return super().construct_document(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *base` then explicit keys: overriding is the point
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable; the base constructor reports it
                continue
            if duplicate:
                raise ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text (config files, --set values, search spaces) with YAML 1.2 numbers; refuses
    duplicate keys and alias bombs (yaml.YAMLError, with the line where it can tell)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except RecursionError:
        raise ConstructorError(None, None, "nested too deeply to be a config", None) from None
