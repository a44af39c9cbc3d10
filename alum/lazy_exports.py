"""Lazy package exports (PEP 562): a name's module is imported on first access.

A package (``alum.data``, ``alum.pretrain``) re-exports names whose modules pull in
megatron-core or DeepSpeed (seconds to import); a plain ``import alum.data`` must stay
cheap. The module imported is always a submodule of the package that calls
``lazy_getattr``, so the import is that package's own: this core module names no other
package (tests/test_import_layering.py counts the exports as the caller's imports).
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Dict


def lazy_getattr(package: str, exports: Dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` serving ``exports`` (name -> submodule)."""
    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value
    return __getattr__
