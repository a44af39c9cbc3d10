"""What every typed config dataclass of alum shares: copy with changes, and dict round trip."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Type, TypeVar

C = TypeVar("C", bound="ConfigMixin")


class ConfigMixin:
    """``replace``, ``to_dict`` and ``from_dict`` for a dataclass validated in ``__post_init__``."""

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (for checkpoints, logs and JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: Type[C], values: Dict[str, Any]) -> C:
        """Inverse of ``to_dict``; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}; known: {sorted(known)}")
        return cls(**values)
