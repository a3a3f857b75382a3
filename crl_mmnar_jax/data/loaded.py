"""What a data source hands over (`LoadedData`), and the helpers its `from_config` shares.

A source module (`data/sources/`) turns its released data layout into a `Cohort`; its
`from_config(config, keep) -> LoadedData` reads the `config.data` fields it needs and
calls it. `data.registry` names every source.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections
import numpy as np

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.errors import DataError


@dataclasses.dataclass(frozen=True)
class LoadedData:
  cohort: Cohort
  true_prob_NxT: np.ndarray | None = None   # synthetic cohorts only (oracle ceiling)
  info: dict = dataclasses.field(default_factory=dict)   # JSON-able summary
  test_mask_N: np.ndarray | None = None     # rows fixed to the test split (by set / database)


Keep = Callable[[np.ndarray], np.ndarray]   # patient ids -> bool mask of rows to keep
# (config, keep) -> the cohort; `keep` restricts it to some patients (`shards.keep_fn`)
Loader = Callable[[ml_collections.ConfigDict, Keep | None], LoadedData]


def csv_list(value) -> list[str]:
  """"a, b,,c" -> ["a", "b", "c"] (a comma-separated config field)."""
  return [s.strip() for s in str(value).split(",") if s.strip()]


def summary(info: dict) -> dict:
  """The loader's info without per-row arrays (those do not belong in results.json)."""
  return {k: v for k, v in info.items() if not isinstance(v, np.ndarray)}


def fixed_test(values_N: np.ndarray, train: list[str], test: list[str], what: str,
               source: str) -> tuple[np.ndarray, np.ndarray]:
  """(keep_N, test_N) for a split by `what` (set or database) names."""
  found = sorted(set(np.unique(values_N).tolist()))
  for name in train + test:
    if name not in found:
      raise DataError(f"{source}: {what} {name!r} not found (have {found})")
  if set(train) & set(test):
    raise DataError(f"{source}: {what}s {sorted(set(train) & set(test))} are both train "
                    f"and test")
  keep = np.isin(values_N, train + test) if train else np.ones(len(values_N), bool)
  return keep, np.isin(values_N, test)


def strict_rows(d: ml_collections.ConfigDict) -> bool:
  """data.strict: refuse imperfect rows instead of skipping and counting them
  (`data.row_policy`)."""
  return bool(d.strict)
