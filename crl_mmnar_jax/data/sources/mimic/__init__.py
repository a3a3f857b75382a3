"""MIMIC-IV (v2.2 or v3.1), from its raw CSV layout or from a MEDS event table.

Inputs (exactly one):

* ``directory``: the PhysioNet layout, each table as ``<name>.csv.gz`` or plain
  ``<name>.csv``. Only the columns below are read (a projection, with explicit types);
  other columns may be present. Timestamps are ``YYYY-MM-DD HH:MM:SS``, dates
  ``YYYY-MM-DD``.

  ====================== =============================================================
  table                  columns read (MIMIC-IV names and types)
  ====================== =============================================================
  hosp/patients          subject_id int, gender str, anchor_age int, anchor_year int,
                         anchor_year_group str, dod date
  hosp/admissions        subject_id int, hadm_id int, admittime, dischtime, deathtime
                         timestamp, admission_type, admission_location,
                         discharge_location, insurance, race str,
                         hospital_expire_flag int
  icu/icustays           subject_id, hadm_id, stay_id int, intime timestamp
  hosp/labevents         subject_id int, itemid int, charttime timestamp, valuenum float
  icu/chartevents        stay_id int, itemid int, charttime timestamp, valuenum float
  hosp/prescriptions     subject_id int, starttime timestamp, drug str
  hosp/diagnoses_icd     hadm_id int, icd_code str, icd_version int
  hosp/procedures_icd    hadm_id int, icd_code str, icd_version int
  note/discharge,        note_id str, subject_id int, hadm_id int, charttime timestamp,
  note/radiology         text str (MIMIC-IV-Note v2.2; optional: a missing note table
                         drops its modality with a line in ``info["notes"]``, since
                         MIMIC-IV-Note is a separate PhysioNet project)
  CXR metadata           dicom_id str, subject_id int, study_id int, ViewPosition str,
                         StudyDate int (YYYYMMDD), StudyTime float (HHMMSS.fff)
                         (``mimic-cxr-2.0.0-metadata.csv.gz``; default
                         ``<directory>/cxr/mimic-cxr-2.0.0-metadata.csv.gz``)
  CXR embeddings         parquet or csv: ``dicom_id`` plus numeric columns (any width;
                         ``subject_id`` / ``study_id`` columns, if any, are ignored);
                         or PhysioNet's TFRecord files (a ``.tfrecord`` file or a
                         folder of ``<dicom_id>.tfrecord``, read without TensorFlow:
                         `tfrecord`)
  ====================== =============================================================

  Versions: ``version`` is "2.2" or "3.1"; empty means "the directory's name if it is
  a version number" (PhysioNet's ``mimiciv/2.2/``), else "unknown" (recorded, with a
  note). Any other value, given or inferred, raises `DataError`. The columns read here
  are the same in v2.2 and v3.1 (published table documentation); the values differ:
  v3.1 adds admissions from 2020-2022 (``anchor_year_group`` "2020 - 2022"), which
  MIMIC-IV-Note v2.2 and MIMIC-CXR do not cover (notes and X-rays are then missing by
  design for those years: ``anchor_years``, default "2008-2019", excludes them), and
  v3.x has more ``insurance`` values ("Private", "No charge" besides "Medicaid",
  "Medicare", "Other"): the one-hot covers both.

* ``meds``: a MEDS event table (one parquet file, or a folder of them) with columns
  ``subject_id``, ``time``, ``code`` and ``numeric_value`` (or ``value``), as written
  by the MIMIC-IV MEDS ETL (the MIMIC-IV demo in ``../shared/data`` is stored so). The
  codes are mapped to the same canonical frames as the raw tables:

  ==================================== ===============================================
  code                                 meaning
  ==================================== ===============================================
  HOSPITAL_ADMISSION//<type>//<loc>    admittime, admission type and location
  HOSPITAL_DISCHARGE//<loc>            dischtime, discharge location (DIED = death)
  ICU_ADMISSION//<unit>                an ICU stay's intime
  MEDS_BIRTH                           birth year (the ETL writes anchor_year -
                                       anchor_age as 1 January of that year)
  MEDS_DEATH                           death (the ETL writes the earliest admission
                                       deathtime, else ``dod`` at midnight)
  GENDER//F, GENDER//M                 sex
  LAB//<itemid>//<unit>                labevents and chartevents values (also the
                                       newer ETL's LAB//RESULT//<itemid>//<unit>)
  MEDICATION//START//<name>            a medication order at its start time
  DIAGNOSIS//ICD//<version>//<code>    a billed diagnosis (at the admission's
                                       dischtime)
  PROCEDURE//ICD//<version>//<code>    a billed procedure (at its chartdate, or at
                                       dischtime in newer ETL versions)
  ==================================== ===============================================

  There is no hadm_id: the k-th admission event of a subject (by time) is paired with
  the k-th discharge event, and admissions get synthetic ids in (subject, admittime)
  order. An ICU stay belongs to the admission whose [admittime, dischtime] contains its
  intime (the latest-admitted one if several do), else to the first admission
  starting within 24 h after it (ICU stays entered from the emergency department can
  start minutes before admittime). The MEDS file holds no notes, insurance or race:
  those modalities / features are absent. Both inputs give the same cohort and the
  same shared features for the same data (tested on a fixture written both ways).

Cohort (each step counted in ``info["attrition"]``, a list of {step, unit,
n_remaining, n_excluded}):

1. subjects (``patients`` and ``admissions``; for MEDS: every subject of the table);
2. ``anchor_year_group`` inside ``anchor_years`` (default `ANCHOR_YEARS` "2008-2019":
   MIMIC-IV-Note v2.2 and MIMIC-CXR end in 2019, so v3.x's "2020 - 2022" subjects could
   have neither; "" keeps every group). The group dates the subject's anchor year, not
   each admission, so this is a subject-level approximation. MEDS tables carry no
   group: nobody is excluded there (a note in ``info["notes"]`` says so);
3. admissions with ``dischtime >= admittime`` (unit: admissions; invalid ones are
   dropped before the index is chosen);
4. subjects with at least one valid admission; the INDEX EPISODE starts with the first
   admission by (admittime, dischtime, hadm_id) and takes in every later admission
   that starts less than `EPISODE_GAP_HOURS` = 6 h after the latest discharge so far
   (or overlaps it): an observation stay converted into an admission a minute after
   its "discharge", a transfer between hadm_ids. The episode runs from the first
   admittime to the last dischtime (the real discharge, where prediction happens); its
   admission type and location are the first admission's, its discharge location the
   last one's; the merged admissions are counted in the attrition row (extra keys
   ``admissions_merged``, ``subjects_with_merged``), excluding nobody;
5. adult at the index admission: age = anchor_age + year(admittime) - anchor_year
   (MEDS: year(admittime) - birth year) >= 18; unknown age is excluded;
6. survived the index episode: not ``hospital_expire_flag = 1``, no ``deathtime``,
   discharge location not DIED (in any of its admissions), and no death recorded
   before its end: for a
   death with a time of day, at or before dischtime; for a date-only death (``dod``,
   or a MEDS_DEATH at exactly midnight), before the discharge DATE. Deviation from
   "a MEDS death at or before the discharge time", with reason: the MEDS ETL writes an
   out-of-hospital ``dod`` as midnight, so a patient discharged alive at 17:00 who
   died at home that day would be excluded from MEDS but kept (mortality 1) from the
   raw tables.

One row per subject (the split unit); patient_id = subject_id (int), rows sorted by
it; ``info["fingerprint"]`` hashes the sorted ids.

Tasks (counted from the end of the index episode; never NaN):

=============== =======================================================================
task            definition
=============== =======================================================================
readmission_30d an UNPLANNED admission of the subject after the index episode with
                admittime - episode end <= 30 days (exactly 30 days: 1; 30 days and a
                minute: 0). Admissions within 6 h of a discharge belong to the
                episode, never readmissions. Planned admissions
                (`PLANNED_ADMISSION_TYPES`: ELECTIVE, SURGICAL SAME DAY ADMISSION) do
                NOT count: a scheduled operation or treatment is not a failure of the
                discharge (an unplanned one in the same 30 days still counts).
icu_90d         an ICU stay (icustays.intime) of an admission after the index episode
                with 0 < intime - episode end <= 90 days (planned admissions
                included: their ICU stays are ICU stays)
mortality_180d  0 <= date of death - date(index dischtime) <= 180 days (death on the
                discharge day after a survived admission: 1). Date of death: the raw
                ``patients.dod``; MEDS: the date of MEDS_DEATH. MIMIC-IV's ``dod``
                includes out-of-hospital deaths up to one year after the patient's LAST
                discharge, so the 180 days after any discharge are inside the observed
                window; no recorded death = 0. Deaths before a readmission can happen
                are not censored (readmission is then 0).
=============== =======================================================================

Modalities, in this order; a modality observed for nobody is dropped with a line in
``info["notes"]``. Only information from the index episode's window [admittime,
dischtime] is used (prediction is at its discharge); ``tests/test_mimic.py`` and
``tests/test_leakage.py`` check that adding events after it changes no feature.

============== =========================================================================
modality       features (observed when)
============== =========================================================================
ehr            always observed. Age, male, length of stay (hours; known at discharge),
               ICU stays in the index episode, one-hots of admission type / location
               and discharge location (null or "UNK": NaN); raw input only: insurance
               and race group (`RACE_GROUPS`). Labs (`LAB_ITEMS`, labevents by charttime
               in the window) and vitals (`VITAL_ITEMS`, chartevents of the index
               admission's ICU stays by charttime in the window; MEDS: LAB codes of
               those itemids in the window) through `featurize.featurize` (8 statistics
               per variable, hours since admittime; no measurement: count 0, the others
               NaN). Prescriptions (by starttime in the window): orders, distinct drugs,
               `N_CODE_BUCKETS` hashed drug-name buckets. Diagnoses and procedures
               (coded for the episode's hadm_ids; MEDS: in the window, procedures from the
               admission's date): entries, distinct codes, hashed ``ICD<v>:<code>``
               buckets. Hashing: CRC-32 of the lower-cased stripped string.
cxr            mean embedding of the frontal (ViewPosition PA or AP) images whose study
               (StudyDate + StudyTime) lies in the window (any such image with an
               embedding). Needs ``cxr_embeddings``; without it the modality is absent.
discharge_note mean text embedding (`text_embed`, 768 dims) of the notes with an
radiology_note episode hadm_id, plus those with NO hadm_id (many radiology reports:
               emergency department, outpatient) charted from
               `NOTE_BEFORE_ADMIT_HOURS` = 6 h before admittime on; all with charttime
               <= the episode's dischtime (any such note)
============== =========================================================================

Scale and resumability: every stage (``cohort``, ``labs``, ``vitals``,
``medications``, ``diagnoses``, ``procedures``, ``cxr-<key>``, ``<note>-<encoder>``)
scans its table lazily (projection, itemid filter, semi-join on the cohort's subjects,
admissions or ICU stays, window filter, streaming collection or ``sink_parquet``) and
writes ``<stage>.parquet`` into ``<cache_dir>/mimic-<key>`` (key: source path, kind,
version, format version); a rerun reads finished stages and never opens their tables.
The time series are featurised in batches of subjects of about `BATCH_VALUES` values,
and notes are encoded in batches of about `NOTE_BATCH_CHARS` characters whose
embeddings are added into per-subject float32 sums (image embeddings are summed per
subject as their file streams), so memory is bounded by the batch plus the cohort's
output arrays.

Imperfect rows (the row policy of `data.row_policy`): by default skipped and counted per
file and per problem in ``info["skipped"]`` (kept with each cached stage): values that
do not parse as their column's type (counted in one more pass over that table, then
read as null), rows with a null id and every row of a repeated id in patients,
admissions and icustays, MEDS admission or discharge events without a time, and the
admissions of a MEDS subject whose admission and discharge events do not pair up (the
subject then leaves the cohort at step 4). ``strict=True`` raises `DataError` at the
first of them instead. ``cache_dir=None`` uses a fresh
temporary folder. Delete the cache folder when the data change. Measured on this
2-core machine: a generated v2.2-schema folder of 20,000 subjects (40,000 admissions,
2 M labevents and 2 M chartevents rows, 20,000 notes per note table) loads in 27 s cold
(half of it encoding notes) at 0.8 GB peak RSS, and in 2 s from the cache.

Code: `schema` (the tables, columns, types and versions read), `raw` and `meds` (the
two readers, producing the canonical frames of `frames`), `cohort` (index admission,
attrition, labels), `stages` (the ehr, note and cxr features); `load_mimic` here runs
them through the stage cache of `data.io`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl
from absl import logging

from crl_mmnar_jax.cohort import Cohort, fingerprint
from crl_mmnar_jax.data import io
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.io import cache_folder, cached_stage, check_tasks
from crl_mmnar_jax.data.row_policy import CsvTables, RowProblems
from crl_mmnar_jax.data.sources.mimic.cohort import (
  ADULT_AGE,
  ANCHOR_YEARS,
  EPISODE_GAP_HOURS,
  PLANNED_ADMISSION_TYPES,
  TASKS,
  cohort_frame,
  parse_anchor_years,
)
from crl_mmnar_jax.data.sources.mimic.frames import WINDOW
from crl_mmnar_jax.data.sources.mimic.meds import ICU_BEFORE_ADMIT_HOURS, MedsSource
from crl_mmnar_jax.data.sources.mimic.raw import NOTE_BEFORE_ADMIT_HOURS, RawSource
from crl_mmnar_jax.data.sources.mimic.schema import (
  ADMISSION_LOCATIONS,
  ADMISSION_TYPES,
  CXR_METADATA_DEFAULT,
  DISCHARGE_LOCATIONS,
  INSURANCES,
  LAB_ITEMS,
  NOTE_TABLES,
  VERSIONS,
  VITAL_ITEMS,
)
from crl_mmnar_jax.data.sources.mimic.stages import (
  N_CODE_BUCKETS,
  RACE_GROUPS,
  TEXT_DIM,
  VALID_RANGES,
  bucket,
  count_stage,
  cxr_stage,
  feature_block,
  note_stage,
  series_stage,
  static_features,
)
from crl_mmnar_jax.data.text_embed import ENCODERS, get_encoder

__all__ = ["TASKS", "MODALITIES", "NOTE_TABLES", "VERSIONS", "TEXT_DIM", "N_CODE_BUCKETS",
           "BATCH_VALUES", "NOTE_BATCH_CHARS", "CACHE_VERSION", "ADULT_AGE",
           "ICU_BEFORE_ADMIT_HOURS", "EPISODE_GAP_HOURS", "PLANNED_ADMISSION_TYPES",
           "ANCHOR_YEARS", "NOTE_BEFORE_ADMIT_HOURS", "LAB_ITEMS", "VITAL_ITEMS", "VALID_RANGES",
           "ADMISSION_TYPES", "ADMISSION_LOCATIONS", "DISCHARGE_LOCATIONS", "INSURANCES",
           "RACE_GROUPS", "bucket", "load_mimic"]

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
    meds: a MEDS event table (parquet file or folder); exclusive with `directory`.
    version: "2.2", "3.1" or "" (see the module docstring).
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
