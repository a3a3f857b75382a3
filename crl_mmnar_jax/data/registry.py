"""Data sources by name (`config.data.name`), like methods (`methods.get_method`).

Each source module under `data/sources/` defines `from_config(config, keep) ->
LoadedData`, which reads the `config.data` fields it needs; `SOURCES` names them. A new
cohort is one new source module and one line here.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from crl_mmnar_jax.data.loaded import Keep, LoadedData, Loader
from crl_mmnar_jax.data.sources import eicu, mimic, physionet2012, synthetic, tables, yaib

SOURCES: dict[str, Loader] = {
    "synthetic": synthetic.from_config,
    "tables": tables.from_config,
    "physionet2012": physionet2012.from_config,
    "yaib": yaib.from_config,
    "eicu": eicu.from_config,
    "mimic": mimic.from_config,
}


def get_source(name: str) -> Loader:
  """The loader of the data source called `name`; a ValueError names the known ones."""
  if name not in SOURCES:
    raise ValueError(f"unknown data source {name!r}; known: {', '.join(SOURCES)}")
  return SOURCES[name]


def load(config: ml_collections.ConfigDict, keep: Keep | None = None) -> LoadedData:
  """The cohort named by `config.data.name`, validated.

  `keep` (see `shards.keep_fn`) restricts it to some patients: the generic tables, YAIB
  and PhysioNet 2012 never read the other patients' rows or files; the synthetic
  generator and the MIMIC-IV and eICU pipelines build the whole cohort and drop the rest.
  """
  loaded = get_source(config.data.name)(config, keep)
  if keep is None:
    return loaded
  mask = np.asarray(keep(loaded.cohort.patient_id), bool)
  if mask.all():
    return loaded
  pick = lambda a: None if a is None else a[mask]
  return dataclasses.replace(loaded, cohort=loaded.cohort.subset(mask),
                             true_prob_NxT=pick(loaded.true_prob_NxT),
                             test_mask_N=pick(loaded.test_mask_N))
