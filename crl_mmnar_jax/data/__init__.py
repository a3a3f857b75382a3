"""Data sources by name, and preprocessing whose statistics come from training rows only."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import ml_collections
import numpy as np

from crl_mmnar_jax.cohort import Cohort


@dataclasses.dataclass(frozen=True)
class LoadedData:
  cohort: Cohort
  true_prob_NxT: np.ndarray | None = None   # synthetic cohorts only (oracle ceiling)
  info: dict = dataclasses.field(default_factory=dict)   # JSON-able summary
  test_mask_N: np.ndarray | None = None     # rows fixed to the test split (by set / database)


def _csv(value) -> list[str]:
  return [s.strip() for s in str(value).split(",") if s.strip()]


def _summary(info: dict) -> dict:
  """The loader's info without per-row arrays (those do not belong in results.json)."""
  return {k: v for k, v in info.items() if not isinstance(v, np.ndarray)}


def _fixed_test(values_N: np.ndarray, train: list[str], test: list[str], what: str,
                source: str) -> tuple[np.ndarray, np.ndarray]:
  """(keep_N, test_N) for a split by `what` (set or database) names."""
  from crl_mmnar_jax.data.errors import DataError
  found = sorted(set(np.unique(values_N).tolist()))
  for name in train + test:
    if name not in found:
      raise DataError(f"{source}: {what} {name!r} not found (have {found})")
  if set(train) & set(test):
    raise DataError(f"{source}: {what}s {sorted(set(train) & set(test))} are both train "
                    f"and test")
  keep = np.isin(values_N, train + test) if train else np.ones(len(values_N), bool)
  return keep, np.isin(values_N, test)


def _strict(d: ml_collections.ConfigDict) -> bool:
  """data.strict: refuse imperfect rows instead of skipping and counting them
  (`data.row_policy`)."""
  return bool(d.get("strict", False))


Keep = Callable[[np.ndarray], np.ndarray]   # patient ids -> bool mask of rows to keep


def load(config: ml_collections.ConfigDict, keep: Keep | None = None) -> LoadedData:
  """The cohort named by `config.data.name`, validated.

  `keep` (see `shards.keep_fn`) restricts it to some patients: the generic tables, YAIB
  and PhysioNet 2012 never read the other patients' rows or files; the synthetic
  generator and the MIMIC-IV and eICU pipelines build the whole cohort and drop the rest.
  """
  loaded = _load(config, keep)
  if keep is None:
    return loaded
  mask = np.asarray(keep(loaded.cohort.patient_id), bool)
  if mask.all():
    return loaded
  pick = lambda a: None if a is None else a[mask]
  return dataclasses.replace(loaded, cohort=loaded.cohort.subset(mask),
                             true_prob_NxT=pick(loaded.true_prob_NxT),
                             test_mask_N=pick(loaded.test_mask_N))


def _load(config: ml_collections.ConfigDict, keep: Keep | None) -> LoadedData:
  d = config.data
  if d.name == "synthetic":
    from crl_mmnar_jax.data.sources.synthetic import make_synthetic
    syn = make_synthetic(
        int(d.n), n_modalities=int(d.n_modalities), n_tasks=int(d.n_tasks),
        mechanism=str(d.mechanism), prevalence=float(d.prevalence),
        pattern_effect=None if d.pattern_effect < 0 else float(d.pattern_effect),
        seed=int(d.seed),
        world_seed=None if d.get("world_seed", -1) < 0 else int(d.world_seed))
    return LoadedData(syn.cohort, syn.true_prob_NxT, {"mechanism": syn.mechanism})
  if d.name == "tables":
    from crl_mmnar_jax.data.errors import DataError
    from crl_mmnar_jax.data.sources.tables import load_tables_with_info
    if not d.dir:
      raise DataError("--config=tables needs --config.data.dir=DIR (the cohort directory)")
    tasks = [s for s in str(d.tasks).split(",") if s] or None
    cohort, info = load_tables_with_info(d.dir, tasks=tasks, keep=keep)
    return LoadedData(cohort, None, info)
  if d.name == "physionet2012":
    from crl_mmnar_jax.data.sources.physionet2012 import load_physionet2012
    train, test = _csv(d.train_sets), _csv(d.test_sets)
    sets = (train + test) or None
    cohort, info = load_physionet2012(d.dir, sets=sets, tasks=tuple(_csv(d.tasks)),
                                      window_hours=float(d.window_hours), keep=keep,
                                      strict=_strict(d))
    if not test:
      return LoadedData(cohort, None, _summary(info))
    keep, is_test = _fixed_test(info["set"], train, test, "set", d.dir)
    return LoadedData(cohort.subset(keep), None, _summary(info), is_test[keep])
  if d.name == "yaib":
    from crl_mmnar_jax.data.sources.yaib import load_yaib
    cohort, info = load_yaib(d.dir, databases=tuple(_csv(d.databases)), task=str(d.task),
                             window_hours=float(d.window_hours), keep=keep,
                             strict=_strict(d))
    if not d.test_database:
      return LoadedData(cohort, None, _summary(info))
    keep, is_test = _fixed_test(info["database"], [], [str(d.test_database)], "database",
                                d.dir)
    return LoadedData(cohort, None, _summary(info), is_test)
  if d.name == "eicu":
    from crl_mmnar_jax.data.errors import DataError
    from crl_mmnar_jax.data.sources.eicu import load_eicu
    if not d.dir:
      raise DataError("--config=eicu needs --config.data.dir=DIR (the eICU-CRD v2.0 tables)")
    cohort, info = load_eicu(d.dir, tasks=tuple(_csv(d.tasks)),
                             window_hours=float(d.window_hours),
                             cache_dir=str(d.cache_dir) or None, strict=_strict(d))
    return LoadedData(cohort, None, _summary(info))
  if d.name == "mimic":
    from crl_mmnar_jax.data.errors import DataError
    from crl_mmnar_jax.data.sources.mimic import load_mimic
    directory, meds = str(d.dir), str(d.meds)
    if not directory and not meds:
      if not (d.demo_meds and os.path.isfile(d.demo_meds)):
        raise DataError("--config=mimic needs --config.data.dir=MIMIC_ROOT (raw MIMIC-IV) or "
                        "--config.data.meds=EVENTS.parquet (MEDS events); the default MIMIC-IV "
                        f"demo {d.demo_meds or '(none)'} was not found (the open demo: "
                        "`wget -r -N -c -np https://physionet.org/files/mimic-iv-demo-meds/"
                        "0.0.1/`, see docs/data.md)")
      meds = str(d.demo_meds)
    cohort, info = load_mimic(
        directory or None, meds=meds or None, version=str(d.version),
        tasks=tuple(_csv(d.tasks)), cache_dir=str(d.cache_dir) or None,
        text_encoder=str(d.text_encoder), text_model_path=str(d.text_model_path),
        cxr_embeddings=str(d.cxr_embeddings), cxr_metadata=str(d.cxr_metadata),
        strict=_strict(d), anchor_years=str(d.get("anchor_years", "")),
        text_device=str(d.get("text_device", "auto")))
    return LoadedData(cohort, None, _summary(info))
  raise ValueError(f"unknown data source {d.name!r}")
