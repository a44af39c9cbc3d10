"""Lazy package exports (PEP 562): a name's module is imported on first access.

alum.data and alum.pretrain re-export names whose modules pull in megatron-core or
DeepSpeed (seconds to import); a plain ``import alum.data`` must stay cheap.
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
