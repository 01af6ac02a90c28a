"""Seed (CAM) methods. A method is one module here exposing `METHOD`; the module name is its key."""

from __future__ import annotations

import functools
import importlib
import pkgutil

from wsss.errors import ConfigError
from wsss.methods.base import SeedMethod

__all__ = ["SeedMethod", "get", "list_methods"]


def list_methods() -> list[str]:
    """Module names in this package, found without importing them (config validation stays cheap)."""
    return list(_method_names())


@functools.cache
def _method_names() -> tuple[str, ...]:
    found = (
        m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and m.name != "base"
    )
    return tuple(sorted(found))


def get(name: str) -> SeedMethod:
    if name not in list_methods():
        raise ConfigError(f"seed.method: unknown method {name!r}; known: {', '.join(list_methods())}")
    method = importlib.import_module(f"wsss.methods.{name}").METHOD
    assert isinstance(method, SeedMethod), f"wsss.methods.{name}.METHOD must be a SeedMethod"
    return method
