"""One config field's declaration (`Field`): name, default, type, allowed values, doc."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from crl_mmnar_jax.config.paths import shared_data_dir


@dataclasses.dataclass(frozen=True)
class SharedData:
  """A default path inside the shared data folder (`paths.shared_data_dir`), or "" where
  there is none."""

  path: str

  def resolve(self) -> str:
    root = shared_data_dir()
    return os.path.normpath(os.path.join(root, self.path)) if root else ""


@dataclasses.dataclass(frozen=True)
class Field:
  """One config field: its dotted name ("model.dim"), default, type (int, float, bool,
  str, or tuple: a non-empty grid of numbers), a one-line doc, and its allowed values:
  `low`/`high` bounds (inclusive unless `low_open`/`high_open`; for a grid, each value's)
  or `choices`."""

  name: str
  default: Any
  type: type
  doc: str
  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  choices: tuple[Any, ...] | None = None

  def default_value(self) -> Any:
    """The default, with a `SharedData` path resolved."""
    return self.default.resolve() if isinstance(self.default, SharedData) else self.default

  def allows(self, value: Any) -> bool:
    """Whether `value` has the field's type and lies in its allowed values."""
    if self.type is bool:
      return isinstance(value, bool)
    if self.type is str:
      return isinstance(value, str) and (self.choices is None or value in self.choices)
    if self.type is int:
      return is_int(value) and self._in_range(value)
    if self.type is float:
      return is_number(value) and self._in_range(float(value))
    if self.type is tuple:
      return (isinstance(value, (tuple, list)) and len(value) > 0
              and all(is_number(v) and self._in_range(float(v)) for v in value))
    raise TypeError(f"{self.name}: unknown field type {self.type!r}")

  def allowed(self) -> str:
    """What `allows` accepts, in words ("an integer >= 1")."""
    if self.type is bool:
      return "True or False"
    if self.choices is not None:
      return f"one of {', '.join(repr(c) for c in self.choices)}"
    if self.type is str:
      return "a string"
    if self.type is int:
      return f"an integer{self._bounds()}"
    number = f"a finite number{self._bounds()}"
    return f"a non-empty list, each value {number}" if self.type is tuple else number

  def _in_range(self, v: float) -> bool:
    if self.choices is not None and v not in self.choices:
      return False
    above = self.low is None or (v > self.low if self.low_open else v >= self.low)
    below = self.high is None or (v < self.high if self.high_open else v <= self.high)
    return above and below

  def _bounds(self) -> str:
    parts = []
    if self.low is not None:
      parts.append(f"{'>' if self.low_open else '>='} {self.low}")
    if self.high is not None:
      parts.append(f"{'<' if self.high_open else '<='} {self.high}")
    return (" " + " and ".join(parts)) if parts else ""


def is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
  """A finite int or float (not a bool)."""
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
