"""Masking-rate schedules: the fraction of tokens to predict as a function of the step.

ALUM (Liu et al. 2020, arXiv 2004.08994) raises the MLM masking rate during
training (the project brief: from 5% to 25%). A schedule is any callable
``step -> rate``; the classes below are the usual shapes and
:func:`make_masking_schedule` builds one from a number, a short string or a dict
(so a CLI flag or a JSON config can name it).
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Any, Callable, Sequence, Union

MaskingSchedule = Callable[[int], float]


def _check_rate(name: str, rate: float) -> None:
    if not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"{name} must be a rate in [0, 1], got {rate!r}")


@dataclasses.dataclass(frozen=True)
class ConstantMaskingRate:
    """The same rate at every step (BERT/RoBERTa: 0.15)."""

    rate: float = 0.15
    """Fraction of maskable tokens chosen for prediction."""

    def __post_init__(self) -> None:
        _check_rate("rate", self.rate)

    def __call__(self, step: int) -> float:
        return float(self.rate)


@dataclasses.dataclass(frozen=True)
class LinearMaskingRate:
    """``start`` until ``begin_step``, then linear to ``end`` at ``begin_step + num_steps``, then ``end``."""

    start: float = 0.05
    """Rate at and before ``begin_step``."""
    end: float = 0.25
    """Rate from ``begin_step + num_steps`` on."""
    num_steps: int = 100_000
    """Length of the ramp in optimizer steps (> 0)."""
    begin_step: int = 0
    """First step of the ramp."""

    def __post_init__(self) -> None:
        _check_rate("start", self.start)
        _check_rate("end", self.end)
        if int(self.num_steps) <= 0:
            raise ValueError(f"num_steps must be > 0, got {self.num_steps!r}")
        if int(self.begin_step) < 0:
            raise ValueError(f"begin_step must be >= 0, got {self.begin_step!r}")

    def __call__(self, step: int) -> float:
        fraction = min(max((step - self.begin_step) / self.num_steps, 0.0), 1.0)
        return float(self.start + (self.end - self.start) * fraction)


@dataclasses.dataclass(frozen=True)
class StepMaskingRate:
    """Piecewise constant: ``rates[0]`` before ``boundaries[0]``, ``rates[k]`` from ``boundaries[k-1]``."""

    rates: Sequence[float] = (0.05, 0.15, 0.25)
    """One rate per interval (``len(boundaries) + 1`` of them)."""
    boundaries: Sequence[int] = (10_000, 20_000)
    """Strictly increasing steps where the next rate takes over."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rates", tuple(float(r) for r in self.rates))
        object.__setattr__(self, "boundaries", tuple(int(b) for b in self.boundaries))
        if len(self.rates) != len(self.boundaries) + 1:
            raise ValueError(f"rates needs len(boundaries) + 1 = {len(self.boundaries) + 1} "
                             f"values, got {len(self.rates)}")
        for r in self.rates:
            _check_rate("rates", r)
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"boundaries must increase strictly, got {self.boundaries}")

    def __call__(self, step: int) -> float:
        return self.rates[bisect.bisect_right(self.boundaries, step)]


def make_masking_schedule(spec: Union[float, str, dict, MaskingSchedule, None]) -> MaskingSchedule:
    """Builds a schedule from a flexible spec.

    * ``0.15`` or ``"0.15"``: constant; ``None``: constant 0.15.
    * ``"linear:0.05:0.25:100000"`` (start:end:num_steps[:begin_step]).
    * ``"step:0.05,0.15,0.25@10000,20000"`` (rates@boundaries).
    * ``{"type": "linear", "start": 0.05, "end": 0.25, "num_steps": 1000}``
      (``"constant"``/``"linear"``/``"step"`` with the class fields).
    * any callable ``step -> rate`` is returned as is.
    """
    if spec is None:
        return ConstantMaskingRate()
    if callable(spec):
        return spec
    if isinstance(spec, (int, float)):
        return ConstantMaskingRate(float(spec))
    if isinstance(spec, dict):
        kinds = {"constant": ConstantMaskingRate, "linear": LinearMaskingRate,
                 "step": StepMaskingRate}
        fields = dict(spec)
        kind = fields.pop("type", "constant")
        if kind not in kinds:
            raise ValueError(f"unknown masking schedule type {kind!r}; expected {sorted(kinds)}")
        return kinds[kind](**fields)
    if isinstance(spec, str):
        text = spec.strip()
        kind, _, rest = text.partition(":")
        try:
            if not rest:
                return ConstantMaskingRate(float(text))
            if kind == "constant":
                return ConstantMaskingRate(float(rest))
            if kind == "linear":
                parts = rest.split(":")
                if len(parts) not in (3, 4):
                    raise ValueError("expected start:end:num_steps[:begin_step]")
                return LinearMaskingRate(float(parts[0]), float(parts[1]), int(parts[2]),
                                         int(parts[3]) if len(parts) == 4 else 0)
            if kind == "step":
                rates, _, bounds = rest.partition("@")
                return StepMaskingRate([float(r) for r in rates.split(",")],
                                       [int(b) for b in bounds.split(",") if b])
        except ValueError as err:
            raise ValueError(f"bad masking schedule {spec!r}: {err}") from err
        raise ValueError(f"unknown masking schedule {spec!r}")
    raise TypeError(f"cannot make a masking schedule from {type(spec).__name__}")


def describe_schedule(schedule: Any) -> Any:
    """A JSON-able description (for dataset hashes): dataclass fields, or the repr."""
    if dataclasses.is_dataclass(schedule):
        return {"type": type(schedule).__name__, **dataclasses.asdict(schedule)}
    return repr(schedule)
