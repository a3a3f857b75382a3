"""Data sources by name (`config.data.name`), like methods (`methods.get_method`).

Each source module under `data/sources/` defines `from_config(config, keep) ->
LoadedData`, which reads the `config.data` fields it needs; `SOURCES` names them. A new
cohort is one new source module and one line here.

`reuse_loaded()` makes every `load` of the same data settings inside it return the cohort
loaded first, its arrays read-only: a search's trials load and featurise once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json

import jax
import ml_collections
import numpy as np

from crl_mmnar_jax.data.loaded import Keep, LoadedData, Loader
from crl_mmnar_jax.data.sources import (
  eicu,
  meds,
  mimic,
  physionet2012,
  synthetic,
  tables,
  yaib,
)

SOURCES: dict[str, Loader] = {
    "synthetic": synthetic.from_config,
    "tables": tables.from_config,
    "physionet2012": physionet2012.from_config,
    "yaib": yaib.from_config,
    "eicu": eicu.from_config,
    "mimic": mimic.from_config,
    "meds": meds.from_config,
}


def get_source(name: str) -> Loader:
  """The loader of the data source called `name`; a ValueError names the known ones."""
  if name not in SOURCES:
    raise ValueError(f"unknown data source {name!r}; known: {', '.join(SOURCES)}")
  return SOURCES[name]


_reused: dict[str, LoadedData] | None = None     # inside `reuse_loaded`: key -> cohort


@contextlib.contextmanager
def reuse_loaded():
  """Within the block, `load` with the same `config.data` and `config.seed` (and every
  patient: no `keep`) returns the first result again. Its arrays are made read-only, so
  that a run writing into them fails loudly instead of changing the next run's data."""
  global _reused
  outer = _reused
  _reused = {} if outer is None else outer
  try:
    yield
  finally:
    _reused = outer


def _read_only(loaded: LoadedData) -> LoadedData:
  fields = [getattr(loaded.cohort, f.name) for f in dataclasses.fields(loaded.cohort)]
  for a in jax.tree.leaves((fields, loaded.true_prob_NxT, loaded.test_mask_N)):
    if isinstance(a, np.ndarray):
      a.setflags(write=False)
  return loaded


def load(config: ml_collections.ConfigDict, keep: Keep | None = None) -> LoadedData:
  """The cohort named by `config.data.name`, validated.

  `keep` (see `shards.keep_fn`) restricts it to some patients: the generic tables, YAIB
  and PhysioNet 2012 never read the other patients' rows or files; the synthetic
  generator and the MIMIC-IV and eICU pipelines build the whole cohort and drop the rest.
  """
  key = None
  if _reused is not None and keep is None:
    key = json.dumps([config.data.to_dict(), int(config.seed)], sort_keys=True, default=str)
    if key in _reused:
      return _reused[key]
  loaded = get_source(config.data.name)(config, keep)
  if key is not None:
    _reused[key] = _read_only(loaded)
  if keep is None:
    return loaded
  mask = np.asarray(keep(loaded.cohort.patient_id), bool)
  if mask.all():
    return loaded
  pick = lambda a: None if a is None else a[mask]
  return dataclasses.replace(loaded, cohort=loaded.cohort.subset(mask),
                             true_prob_NxT=pick(loaded.true_prob_NxT),
                             test_mask_N=pick(loaded.test_mask_N))
