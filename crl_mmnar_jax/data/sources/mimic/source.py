"""`load_mimic`: MIMIC-IV (raw layout or MEDS events) into a `Cohort`, through the stage
cache of `data.io` (the package docstring, `data.sources.mimic`, says what it reads and
how); `from_config` is its entry in `data.registry`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
import polars as pl
from absl import logging

from crl_mmnar_jax.cohort import Cohort, fingerprint
from crl_mmnar_jax.data import io
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.io import cache_folder, cached_stage, check_tasks
from crl_mmnar_jax.data.loaded import Keep, LoadedData, csv_list, strict_rows, summary
from crl_mmnar_jax.data.row_policy import CsvTables, RowProblems
from crl_mmnar_jax.data.sources.meds_root import SPLITS_FILE, read_splits
from crl_mmnar_jax.data.sources.mimic.cohort import (
  ANCHOR_YEARS,
  TASKS,
  cohort_frame,
  parse_anchor_years,
)
from crl_mmnar_jax.data.sources.mimic.frames import WINDOW
from crl_mmnar_jax.data.sources.mimic.meds import MedsSource
from crl_mmnar_jax.data.sources.mimic.raw import RawSource
from crl_mmnar_jax.data.sources.mimic.schema import (
  CXR_METADATA_DEFAULT,
  LAB_ITEMS,
  NOTE_TABLES,
  VERSIONS,
  VITAL_ITEMS,
)
from crl_mmnar_jax.data.sources.mimic.stages import (
  TEXT_DIM,
  count_stage,
  cxr_stage,
  feature_block,
  note_stage,
  series_stage,
  static_features,
)
from crl_mmnar_jax.data.text_embed import ENCODERS, get_encoder

MODALITIES = ("ehr", "cxr", "discharge_note", "radiology_note")
SOURCE_URL = "https://physionet.org/files/mimiciv/2.2"   # credentialed (or 3.1)
BATCH_VALUES = 2_000_000        # time-series values featurised at once
NOTE_BATCH_CHARS = 20_000_000   # note characters encoded at once
CACHE_VERSION = 2


def _key(*parts: Any) -> str:
  return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:12]


def _resolve_version(version: str, directory: str | None) -> tuple[str, list[str]]:
  if version:
    if version not in VERSIONS:
      raise DataError(f"data.version {version!r}: MIMIC-IV version must be one of "
                      f"{list(VERSIONS)}")
    return version, []
  name = os.path.basename(os.path.normpath(directory)) if directory else ""
  if re.fullmatch(r"\d+\.\d+", name):
    if name not in VERSIONS:
      raise DataError(f"{directory}: the folder name says MIMIC-IV version {name}; supported "
                      f"are {list(VERSIONS)} (set data.version to read it as one of them)")
    return name, []
  return "unknown", ["MIMIC-IV version unknown (data.version not given and not the folder "
                     "name): read with the v2.2/v3.1 column layout"]


def load_mimic(directory: str | None = None, *, meds: str | None = None, version: str = "",
               tasks: Sequence[str] = TASKS, cache_dir: str | None = None,
               text_encoder: str = "hashed", text_model_path: str = "",
               cxr_embeddings: str = "", cxr_metadata: str = "",
               anchor_years: str = ANCHOR_YEARS, strict: bool = False,
               text_device: str = "auto") -> tuple[Cohort, dict[str, Any]]:
  """Reads MIMIC-IV (raw layout or MEDS events) into a validated `Cohort` and a report.

  Args:
    directory: the MIMIC-IV root holding ``hosp/``, ``icu/`` (and optionally ``note/``,
      ``cxr/``); exclusive with `meds`.
    meds: a MEDS event table (parquet file, folder, or MEDS root); exclusive with
      `directory`.
    version: "2.2", "3.1" or "" (see the package docstring).
    tasks: any of `TASKS`, each once.
    cache_dir: where stage parquet files are kept for resuming; None = a fresh
      temporary folder.
    text_encoder: a `text_embed.ENCODERS` name for the note modalities.
    text_model_path: the local Bio_ClinicalBERT folder (``text_encoder="bioclinicalbert"``).
    text_device: where Bio_ClinicalBERT runs: "auto" (a GPU when torch sees one), "cpu",
      "cuda" or "cuda:N".
    cxr_embeddings: parquet / csv of image embeddings (``dicom_id`` + numeric columns);
      empty = no chest X-ray modality.
    cxr_metadata: MIMIC-CXR metadata csv; default
      ``<directory>/cxr/mimic-cxr-2.0.0-metadata.csv.gz``.
    anchor_years: keep subjects whose ``anchor_year_group`` lies in this range
      ("YYYY-YYYY", default `ANCHOR_YEARS` "2008-2019"; "" keeps every group). MEDS
      tables carry no group: nobody is excluded there (a note says so).
    strict: refuse the first imperfect row instead of skipping and counting it.

  Returns:
    (cohort, info). patient_id = subject_id, rows sorted by it. ``info``: ``source``
    ("raw" or "meds"), ``path``, ``version``, ``cache_folder``, ``stages_run``,
    ``attrition``, ``n_patients``, ``fingerprint``, ``label_counts`` (task -> {n,
    n_positive}), ``observed_fraction``, ``notes`` (dropped modalities and other
    remarks), ``modalities`` (per-stage reports), ``text_encoder``, ``hadm_id``
    ((N,) the index admission per row; synthetic for MEDS) and ``skipped``
    (`RowProblems.report`: rows skipped per file and per problem).

  Raises:
    DataError: missing tables / columns / files, bad arguments; with ``strict``, also
      every imperfect row (see the package docstring).
  """
  if bool(directory) == bool(meds):
    raise DataError("MIMIC-IV: give exactly one of a raw directory (data.dir) or a MEDS "
                    f"events table (data.meds); got dir={directory!r}, meds={meds!r}")
  tasks = check_tasks(tasks, TASKS)
  years = parse_anchor_years(anchor_years)
  if text_encoder not in ENCODERS:
    raise DataError(f"text encoder {text_encoder!r}: must be one of {list(ENCODERS)}")
  if directory:
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
      raise DataError(f"{directory}: no such folder (MIMIC-IV, data.dir); it is "
                      f"credentialed: download it with `wget -r -N -c -np --user USER "
                      f"--ask-password {SOURCE_URL}/` (see docs/data.md)")
    src: RawSource | MedsSource = RawSource(directory)
  else:
    src = MedsSource(os.fspath(meds))
  source_path = directory or os.fspath(meds)
  version, notes = _resolve_version(str(version), directory)
  folder = cache_folder(cache_dir, "mimic", _key(os.path.abspath(source_path), src.kind,
                                                version, years, CACHE_VERSION))
  ran: list[str] = []
  problems = RowProblems(strict)

  def policy(compute: Callable[[], tuple[pl.DataFrame, dict]]
             ) -> Callable[[], tuple[pl.DataFrame, dict]]:
    """`compute` under the row policy, its report gaining ``skipped`` (kept in the
    cache with the stage)."""
    def run() -> tuple[pl.DataFrame, dict]:
      src.tables = CsvTables(RowProblems(strict))
      df, report = src.tables.run(compute)
      return df, {**report, "skipped": src.tables.problems.counts}
    return run

  base, base_info = cached_stage(
      folder, "cohort", policy(lambda: cohort_frame(*src.base(), anchor_years=years)), ran)
  problems.merge(base_info["skipped"])
  if src.kind == "meds" and years is not None:
    notes.append(f"anchor_years {anchor_years}: a MEDS table has no anchor_year_group, "
                 f"so nobody was excluded by it")
  for a in base_info["attrition"]:
    logging.info("MIMIC-IV attrition: %s: %d %s remain, %d excluded", a["step"],
                 a["n_remaining"], a["unit"], a["n_excluded"])
  if len(base) == 0:
    raise DataError(f"{source_path}: no adult subject survived a first hospital admission")
  windows = base.select(*WINDOW, "hadm_ids", "icu_stay_ids")
  subjects = base["subject_id"].to_numpy().astype(np.int64)
  reports: dict[str, Any] = {}

  def stage(name: str, compute: Callable[[], tuple[pl.DataFrame, dict]]) -> pl.DataFrame:
    df, rep = cached_stage(folder, name, policy(compute), ran)
    if df["subject_id"].to_numpy().tolist() != subjects.tolist():
      raise DataError(f"{folder}/{name}.parquet: cached stage does not match the cohort; "
                      f"delete the cache folder {folder}")
    problems.merge(rep["skipped"])
    reports[name] = {k: v for k, v in rep.items() if k != "skipped"}
    return df

  series = {"labs": (src.labs, LAB_ITEMS), "vitals": (src.vitals, VITAL_ITEMS)}
  static = static_features(base, src.kind)
  blocks = [(static.to_numpy().astype(np.float32), static.columns)]
  for name, (rows_fn, items) in series.items():
    df = stage(name, lambda f=rows_fn, i=items, n=name: series_stage(
        *f(windows), i, n, subjects, folder, BATCH_VALUES))
    blocks.append(feature_block(df, stats_nan_when_absent=True))
  counts = {"medications": (src.prescriptions, "name", "rx"),
            "diagnoses": (src.diagnoses, "code", "dx"),
            "procedures": (src.procedures, "code", "proc")}
  for name, (rows_fn, key, prefix) in counts.items():
    df = stage(name, lambda f=rows_fn, k=key, p=prefix: count_stage(
        *f(windows), k, p, subjects))
    blocks.append(feature_block(df, stats_nan_when_absent=False))

  features = [np.ascontiguousarray(np.concatenate([b[0] for b in blocks], axis=1))]
  names = [tuple(c for b in blocks for c in b[1])]
  present = [np.ones(len(subjects), bool)]
  modalities = ["ehr"]

  def add(modality: str, df: pl.DataFrame) -> None:
    p = df["present"].to_numpy().astype(bool)
    if not p.any():
      notes.append(f"modality {modality} is observed for nobody: dropped")
      return
    cols = [c for c in df.columns if c not in ("subject_id", "present")]
    x = df.select(cols).to_numpy().astype(np.float32)
    x[~p] = 0.0
    features.append(np.ascontiguousarray(x))
    names.append(tuple(cols))
    present.append(p)
    modalities.append(modality)

  metadata = cxr_metadata or (
      io.table_path(directory, CXR_METADATA_DEFAULT)
      or os.path.join(directory, CXR_METADATA_DEFAULT + ".csv.gz")
      if directory else "")
  if not cxr_embeddings:
    notes.append("modality cxr: no image embeddings given (data.cxr_embeddings): dropped")
  elif not metadata or not os.path.isfile(metadata):
    raise DataError(f"{metadata or 'data.cxr_metadata'}: MIMIC-CXR metadata not found "
                    f"(needed with data.cxr_embeddings)")
  else:
    add("cxr", stage("cxr-" + _key(os.path.abspath(metadata), os.path.abspath(cxr_embeddings)),
                     lambda: cxr_stage(metadata, cxr_embeddings, windows, subjects,
                                       src.tables)))

  encoder_fn = lambda: get_encoder(text_encoder, dim=TEXT_DIM, **(
      {"model_path": text_model_path, "device": text_device}
      if text_encoder == "bioclinicalbert" else {}))
  encoder_key = f"{text_encoder}-{_key(text_model_path)}"
  for modality, table in NOTE_TABLES.items():
    if src.kind == "meds":
      notes.append(f"modality {modality}: a MEDS table holds no notes: dropped")
      continue
    found = io.table_path(directory, table)
    if found is None:
      notes.append(f"modality {modality}: {os.path.join(directory, table)}.csv.gz not found "
                   f"(MIMIC-IV-Note): dropped")
      continue
    add(modality, stage(f"{modality}-{encoder_key}",
                        lambda t=table, m=modality: note_stage(
                            *src.notes(t, windows), m, subjects, encoder_fn, folder,
                            NOTE_BATCH_CHARS)))

  present_NxM = np.stack(present, axis=1)
  labels_NxT = base.select(tasks).to_numpy().astype(np.float32)
  cohort = Cohort(patient_id=subjects, features=tuple(features), present=present_NxM,
                  labels=labels_NxT, modality_names=tuple(modalities),
                  task_names=tuple(tasks), feature_names=tuple(names))
  try:
    cohort.validate(source_path)
  except ValueError as e:
    raise DataError(str(e)) from None
  info = {
      "source": src.kind,
      "path": source_path,
      "version": version,
      "cache_folder": folder,
      "stages_run": ran,
      "attrition": base_info["attrition"],
      "n_patients": len(subjects),
      "fingerprint": fingerprint(subjects),
      "label_counts": {t: {"n": int((~np.isnan(labels_NxT[:, j])).sum()),
                           "n_positive": int(np.nansum(labels_NxT[:, j]))}
                       for j, t in enumerate(tasks)},
      "observed_fraction": {m: float(present_NxM[:, j].mean())
                            for j, m in enumerate(modalities)},
      "notes": notes,
      "modalities": reports,
      "text_encoder": text_encoder,
      "hadm_id": base["hadm_id"].to_numpy(),
      "skipped": problems.report(),
  }
  problems.log(f"MIMIC-IV {source_path}")
  logging.info("MIMIC-IV (%s): %d patients, stages run %s, observed fraction %s",
               src.kind, len(subjects), ran, info["observed_fraction"])
  return cohort, info


def from_config(config: ml_collections.ConfigDict, keep: Keep | None = None) -> LoadedData:
  """`data.name = "mimic"`: `data.dir` (raw) or `data.meds` (MEDS), else the MIMIC-IV demo
  `data.demo_meds`; the whole cohort (`data.load` applies `keep`). A MEDS root's
  subject_splits.parquet fixes the splits unless `data.meds_splits` is False."""
  d = config.data
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
      tasks=tuple(csv_list(d.tasks)), cache_dir=str(d.cache_dir) or None,
      text_encoder=str(d.text_encoder), text_model_path=str(d.text_model_path),
      cxr_embeddings=str(d.cxr_embeddings), cxr_metadata=str(d.cxr_metadata),
      strict=strict_rows(d), anchor_years=str(d.anchor_years),
      text_device=str(d.text_device))
  if meds and bool(d.meds_splits):
    split = read_splits(meds, pl.Series(cohort.patient_id.astype(np.int64)))
    if split is not None:
      cohort = dataclasses.replace(cohort, split=split)
      info["notes"].append(f"splits from {os.path.join(meds, SPLITS_FILE)} "
                           f"(data.meds_splits)")
  return LoadedData(cohort, None, summary(info))
