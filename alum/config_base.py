"""What every typed config dataclass of alum shares: copy with changes, dict round trip,
and the validators of ``__post_init__`` (each error names the class, the field and the
bad value)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

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


def bad_value(cls: str, name: str, value: Any, why: str) -> ValueError:
    """``ValueError("Class.field=value: why")``: the error every config validator raises."""
    return ValueError(f"{cls}.{name}={value!r}: {why}")


def bad_field(obj: Any, name: str, why: str) -> ValueError:
    """``bad_value`` for the current value of a field of the config ``obj``."""
    return bad_value(type(obj).__name__, name, getattr(obj, name), why)


def check_int(obj: Any, name: str, minimum: int) -> None:
    """The field is an integer (not a bool) >= ``minimum``."""
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_field(obj, name, f"must be an integer >= {minimum}")


def check_number(obj: Any, name: str, minimum: float, strict: bool = False,
                 maximum: Optional[float] = None) -> None:
    """The field is a finite number >= ``minimum`` (> with ``strict``), <= ``maximum``."""
    value = getattr(obj, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    ok = ok and (maximum is None or value <= maximum)
    if not ok:
        bound = f"{'>' if strict else '>='} {minimum}" + (f" and <= {maximum}" if maximum else "")
        raise bad_field(obj, name, f"must be a finite number {bound}")


def check_choice(obj: Any, name: str, choices: Tuple[str, ...]) -> None:
    """The field is one of ``choices``."""
    if getattr(obj, name) not in choices:
        raise bad_field(obj, name, f"must be one of {list(choices)}")


def check_bool(obj: Any, name: str) -> None:
    """The field is a bool."""
    if not isinstance(getattr(obj, name), bool):
        raise bad_field(obj, name, "must be a bool")
