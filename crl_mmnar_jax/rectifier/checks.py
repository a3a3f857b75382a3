"""Input checks shared by `rectifier`, `rectifier.select` and `rectifier.bootstrap`.

Every check raises ValueError naming the argument and the offending value, and returns
the input in the canonical form the rectifier modules compute with. Conventions follow
`cohort.py`: pattern ids are non-negative integers (bit m = modality m observed),
labels are 0/1 with NaN for "unknown".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def as_probs(name: str, probs: Any) -> tuple[np.ndarray, bool]:
  """Returns (N, T) floating probabilities and whether the input was 1-D."""
  a = np.asarray(probs)
  if a.dtype.kind not in "fiub":
    raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
  if a.ndim not in (1, 2):
    raise ValueError(f"{name} must be 1-D (N,) or 2-D (N, T), got shape {a.shape}")
  one_d = a.ndim == 1
  if a.dtype.kind != "f":
    a = a.astype(np.float64)
  elif a.dtype.itemsize < 4:
    a = a.astype(np.float32)
  a2 = a[:, None] if one_d else a
  if a2.size:
    if np.isnan(a2).any():
      raise ValueError(f"{name} contains NaN; probabilities must lie in [0, 1]")
    lo, hi = float(a2.min()), float(a2.max())
    if lo < 0.0 or hi > 1.0:
      bad = lo if lo < 0.0 else hi
      raise ValueError(f"{name} must lie in [0, 1], found value {bad}")
  return a2, one_d


def as_labels(name: str, labels: Any, shape: tuple[int, int]) -> np.ndarray:
  """Returns (N, T) float64 labels in {0, 1, NaN}."""
  a = np.asarray(labels)
  if a.dtype.kind not in "fiub":
    raise ValueError(f"{name} must be numeric 0/1/NaN, got dtype {a.dtype}")
  a = a.astype(np.float64)
  if a.ndim == 1 and shape[1] == 1:
    a = a[:, None]
  if a.shape != shape:
    raise ValueError(f"{name} must have the shape of probs {shape}, got {np.shape(labels)}")
  known = ~np.isnan(a)
  bad = known & (a != 0.0) & (a != 1.0)
  if bad.any():
    vals = np.unique(a[bad])[:5].tolist()
    raise ValueError(f"{name} must be 0, 1 or NaN (unknown), found {vals}")
  return a


def as_patterns(name: str, pattern: Any, n: int) -> np.ndarray:
  """Returns (N,) int64 non-negative pattern ids."""
  a = np.asarray(pattern)
  if a.ndim != 1:
    raise ValueError(f"{name} must be 1-D (N,), got shape {a.shape}")
  if a.shape[0] != n:
    raise ValueError(f"{name} must have {n} entries (one per row of probs), "
                     f"got {a.shape[0]}")
  if a.dtype.kind == "b":
    a = a.astype(np.int64)
  elif a.dtype.kind == "f":
    if a.size and (not np.all(np.isfinite(a)) or np.any(a != np.floor(a))):
      bad = a[~np.isfinite(a) | (a != np.floor(a))][:5].tolist()
      raise ValueError(f"{name} must hold integer pattern ids, found {bad}")
    a = a.astype(np.int64)
  elif a.dtype.kind not in "iu":
    raise ValueError(f"{name} must hold integer pattern ids, got dtype {a.dtype}")
  if a.size and a.min() < 0:
    raise ValueError(f"{name} must be non-negative pattern ids, found {int(a.min())}")
  if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
    raise ValueError(f"{name} pattern id too large: {int(a.max())}")
  return a.astype(np.int64, copy=False)


def as_grid(name: str, grid: Any) -> tuple[float, ...]:
  """A non-empty tuple of finite, non-negative floats."""
  try:
    values = tuple(float(v) for v in np.atleast_1d(np.asarray(grid, dtype=np.float64)))
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be a sequence of numbers, got {grid!r}") from e
  if not values:
    raise ValueError(f"{name} must not be empty, got {grid!r}")
  for v in values:
    if not math.isfinite(v) or v < 0.0:
      raise ValueError(f"{name} values must be finite and >= 0, got {v} in {grid!r}")
  return values


def non_negative(name: str, value: Any) -> float:
  """A finite float >= 0."""
  try:
    v = float(value)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be a number, got {value!r}") from e
  if not math.isfinite(v) or v < 0.0:
    raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
  return v


def integer(name: str, value: Any, minimum: int) -> int:
  """A Python int >= minimum (bool and float are refused)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  if int(value) < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def one_of(name: str, value: Any, choices: Sequence[str]) -> str:
  """`value` if it is one of `choices`."""
  if value not in tuple(choices):
    raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
  return value


def alpha_level(name: str, value: Any) -> float:
  """A float strictly between 0 and 1 (the two-sided level of an interval)."""
  try:
    v = float(value)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be a number in (0, 1), got {value!r}") from e
  if not 0.0 < v < 1.0:
    raise ValueError(f"{name} must be in (0, 1), got {value!r}")
  return v


def task_names(names: Sequence[str] | None, t: int) -> tuple[str, ...]:
  """T unique task names; task0, task1, ... when None."""
  if names is None:
    return tuple(f"task{j}" for j in range(t))
  if isinstance(names, str):
    names = (names,)
  out = tuple(names)
  if len(out) != t:
    raise ValueError(f"task_names must have {t} entries (one per column of probs), "
                     f"got {len(out)}: {out!r}")
  if not all(isinstance(s, str) for s in out) or len(set(out)) != t:
    raise ValueError(f"task_names must be unique strings, got {out!r}")
  return out
