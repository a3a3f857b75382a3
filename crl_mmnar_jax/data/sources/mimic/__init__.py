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
                         dod date
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
                         ``subject_id`` / ``study_id`` columns, if any, are ignored)
  ====================== =============================================================

  Versions: ``version`` is "2.2" or "3.1"; empty means "the directory's name if it is
  a version number" (PhysioNet's ``mimiciv/2.2/``), else "unknown" (recorded, with a
  note). Any other value, given or inferred, raises `DataError`. The columns read here
  are the same in v2.2 and v3.1 (published table documentation); the values differ:
  v3.1 adds admissions from 2020-2022 (``anchor_year_group`` "2020 - 2022"), which
  MIMIC-IV-Note v2.2 and MIMIC-CXR do not cover (notes and X-rays are then missing by
  design for those years), and v3.x has more ``insurance`` values ("Private",
  "No charge" besides "Medicaid", "Medicare", "Other"): the one-hot covers both.

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
2. admissions with ``dischtime >= admittime`` (unit: admissions; invalid ones are
   dropped before the index is chosen);
3. subjects with at least one valid admission; the INDEX admission is the first by
   (admittime, dischtime, hadm_id);
4. adult at the index admission: age = anchor_age + year(admittime) - anchor_year
   (MEDS: year(admittime) - birth year) >= 18; unknown age is excluded;
5. survived the index admission: not ``hospital_expire_flag = 1``, no ``deathtime``,
   discharge location not DIED, and no death recorded before the discharge: for a
   death with a time of day, at or before dischtime; for a date-only death (``dod``,
   or a MEDS_DEATH at exactly midnight), before the discharge DATE. Deviation from
   "a MEDS death at or before the discharge time", with reason: the MEDS ETL writes an
   out-of-hospital ``dod`` as midnight, so a patient discharged alive at 17:00 who
   died at home that day would be excluded from MEDS but kept (mortality 1) from the
   raw tables.

One row per subject (the split unit); patient_id = subject_id (int), rows sorted by
it; ``info["fingerprint"]`` hashes the sorted ids.

Tasks (counted from the index discharge; never NaN):

=============== =======================================================================
task            definition
=============== =======================================================================
readmission_30d another admission of the subject with 0 < admittime - index dischtime
                <= 30 days (exactly 30 days: 1; 30 days and a minute: 0). An admission
                starting at or before the index dischtime (an overlapping record, e.g.
                an administrative transfer between hadm_ids) is not a readmission.
icu_90d         an ICU stay (icustays.intime) of a LATER admission (admittime > index
                dischtime) with 0 < intime - index dischtime <= 90 days
mortality_180d  0 <= date of death - date(index dischtime) <= 180 days (death on the
                discharge day after a survived admission: 1). Date of death: the raw
                ``patients.dod``; MEDS: the date of MEDS_DEATH. MIMIC-IV's ``dod``
                includes out-of-hospital deaths up to one year after the patient's LAST
                discharge, so the 180 days after any discharge are inside the observed
                window; no recorded death = 0. Deaths before a readmission can happen
                are not censored (readmission is then 0).
=============== =======================================================================

Modalities, in this order; a modality observed for nobody is dropped with a line in
``info["notes"]``. Only information from the index admission window [admittime,
dischtime] is used (prediction is at discharge); ``tests/test_mimic.py`` checks that
adding events after the discharge changes no feature.

============== =========================================================================
modality       features (observed when)
============== =========================================================================
ehr            always observed. Age, male, length of stay (hours; known at discharge),
               ICU stays in the index admission, one-hots of admission type / location
               and discharge location (null or "UNK": NaN); raw input only: insurance
               and race group (`RACE_GROUPS`). Labs (`LAB_ITEMS`, labevents by charttime
               in the window) and vitals (`VITAL_ITEMS`, chartevents of the index
               admission's ICU stays by charttime in the window; MEDS: LAB codes of
               those itemids in the window) through `featurize.featurize` (8 statistics
               per variable, hours since admittime; no measurement: count 0, the others
               NaN). Prescriptions (by starttime in the window): orders, distinct drugs,
               `N_CODE_BUCKETS` hashed drug-name buckets. Diagnoses and procedures
               (coded for the index hadm_id; MEDS: in the window, procedures from the
               admission's date): entries, distinct codes, hashed ``ICD<v>:<code>``
               buckets. Hashing: CRC-32 of the lower-cased stripped string.
cxr            mean embedding of the frontal (ViewPosition PA or AP) images whose study
               (StudyDate + StudyTime) lies in the window (any such image with an
               embedding). Needs ``cxr_embeddings``; without it the modality is absent.
discharge_note mean text embedding (`text_embed`, 768 dims) of the notes with the index
radiology_note hadm_id and charttime <= dischtime (any such note)
============== =========================================================================

Scale and resumability: every stage (``cohort``, ``labs``, ``vitals``,
``medications``, ``diagnoses``, ``procedures``, ``cxr-<key>``, ``<note>-<encoder>``)
scans its table lazily (projection, itemid filter, semi-join on the cohort's subjects,
admissions or ICU stays, window filter, streaming collection or ``sink_parquet``) and
writes ``<stage>.parquet`` into ``<cache_dir>/mimic-<key>`` (key: source path, kind,
version, format version); a rerun reads finished stages and never opens their tables.
The time series are featurised in batches of subjects of about `BATCH_VALUES` values,
and notes are encoded in batches of about `NOTE_BATCH_CHARS` characters, so memory is
bounded by the batch plus the cohort's output arrays. ``cache_dir=None`` uses a fresh
temporary folder. Delete the cache folder when the data change. Measured on this
2-core machine: a generated v2.2-schema folder of 20,000 subjects (40,000 admissions,
2 M labevents and 2 M chartevents rows, 20,000 notes per note table) loads in 27 s cold
(half of it encoding notes) at 0.8 GB peak RSS, and in 2 s from the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zlib
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl
from absl import logging

from crl_mmnar_jax.cohort import Cohort, fingerprint
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.featurize import ModalityGroup, featurize_batched
from crl_mmnar_jax.data.sources.eicu import _header, _stage
from crl_mmnar_jax.data.sources.tables import check_tasks
from crl_mmnar_jax.data.text_embed import ENCODERS, get_encoder

TASKS = ("readmission_30d", "icu_90d", "mortality_180d")
MODALITIES = ("ehr", "cxr", "discharge_note", "radiology_note")
NOTE_TABLES = {"discharge_note": "note/discharge", "radiology_note": "note/radiology"}
VERSIONS = ("2.2", "3.1")
TEXT_DIM = 768
N_CODE_BUCKETS = 32
BATCH_VALUES = 2_000_000        # time-series values featurised at once
NOTE_BATCH_CHARS = 20_000_000   # note characters encoded at once
CACHE_VERSION = 1
ADULT_AGE = 18
ICU_BEFORE_ADMIT_HOURS = 24     # MEDS: an ICU stay this close before an admission joins it

# Common labevents itemids (d_labitems), chemistry, blood count, coagulation, liver,
# blood gas and cardiac panels as in mimic-code's derived concepts.
LAB_ITEMS: dict[int, str] = {
    50862: "albumin", 50863: "alkaline_phosphatase", 50861: "alt", 50868: "anion_gap",
    50878: "ast", 50882: "bicarbonate", 50885: "bilirubin_total", 50893: "calcium",
    50902: "chloride", 50912: "creatinine", 50931: "glucose", 50960: "magnesium",
    50970: "phosphate", 50971: "potassium", 50983: "sodium", 51006: "urea_nitrogen",
    51221: "hematocrit", 51222: "hemoglobin", 51265: "platelets", 51301: "wbc",
    51237: "inr", 51274: "pt", 51275: "ptt", 50813: "lactate", 50820: "ph",
    50821: "po2", 50818: "pco2", 51003: "troponin_t",
}
# chartevents itemids (d_items, MetaVision) of the routine vital signs.
VITAL_ITEMS: dict[int, str] = {
    220045: "heart_rate", 220179: "nbp_systolic", 220180: "nbp_diastolic",
    220181: "nbp_mean", 220050: "abp_systolic", 220051: "abp_diastolic",
    220052: "abp_mean", 220210: "resp_rate", 220277: "spo2", 223761: "temperature_f",
    223762: "temperature_c", 220739: "gcs_eye", 223900: "gcs_verbal", 223901: "gcs_motor",
}
VALID_RANGES: dict[str, tuple[float, float]] = {
    "heart_rate": (10.0, 300.0), "resp_rate": (1.0, 100.0), "spo2": (10.0, 100.0),
    "temperature_f": (77.0, 113.0), "temperature_c": (25.0, 45.0),
    "nbp_systolic": (20.0, 300.0), "nbp_diastolic": (5.0, 250.0), "nbp_mean": (10.0, 300.0),
    "abp_systolic": (20.0, 300.0), "abp_diastolic": (5.0, 250.0), "abp_mean": (10.0, 300.0),
    "sodium": (90.0, 200.0), "potassium": (1.0, 12.0), "ph": (6.5, 8.0),
    "creatinine": (0.05, 30.0), "glucose": (5.0, 2000.0),
}
ADMISSION_TYPES = ("AMBULATORY OBSERVATION", "DIRECT EMER.", "DIRECT OBSERVATION",
                   "ELECTIVE", "EU OBSERVATION", "EW EMER.", "OBSERVATION ADMIT",
                   "SURGICAL SAME DAY ADMISSION", "URGENT")
ADMISSION_LOCATIONS = ("AMBULATORY SURGERY TRANSFER", "CLINIC REFERRAL", "EMERGENCY ROOM",
                       "INFORMATION NOT AVAILABLE", "INTERNAL TRANSFER TO OR FROM PSYCH",
                       "PACU", "PHYSICIAN REFERRAL", "PROCEDURE SITE",
                       "TRANSFER FROM HOSPITAL", "TRANSFER FROM SKILLED NURSING FACILITY",
                       "WALK-IN/SELF REFERRAL")
DISCHARGE_LOCATIONS = ("ACUTE HOSPITAL", "AGAINST ADVICE", "ASSISTED LIVING",
                       "CHRONIC/LONG TERM ACUTE CARE", "HEALTHCARE FACILITY", "HOME",
                       "HOME HEALTH CARE", "HOSPICE", "OTHER FACILITY", "PSYCH FACILITY",
                       "REHAB", "SKILLED NURSING FACILITY")
INSURANCES = ("Medicaid", "Medicare", "Private", "No charge", "Other")
RACE_GROUPS = ("white", "black", "hispanic", "asian", "other")
_RACE_UNKNOWN = ("UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER")

_TS = pl.Datetime("us")
_RAW: dict[str, dict[str, pl.DataType]] = {
    "hosp/patients": {"subject_id": pl.Int64, "gender": pl.String, "anchor_age": pl.Int64,
                      "anchor_year": pl.Int64, "dod": pl.Date},
    "hosp/admissions": {"subject_id": pl.Int64, "hadm_id": pl.Int64, "admittime": _TS,
                        "dischtime": _TS, "deathtime": _TS, "admission_type": pl.String,
                        "admission_location": pl.String, "discharge_location": pl.String,
                        "insurance": pl.String, "race": pl.String,
                        "hospital_expire_flag": pl.Int64},
    "icu/icustays": {"subject_id": pl.Int64, "hadm_id": pl.Int64, "stay_id": pl.Int64,
                     "intime": _TS},
    "hosp/labevents": {"subject_id": pl.Int64, "itemid": pl.Int64, "charttime": _TS,
                       "valuenum": pl.Float64},
    "icu/chartevents": {"stay_id": pl.Int64, "itemid": pl.Int64, "charttime": _TS,
                        "valuenum": pl.Float64},
    "hosp/prescriptions": {"subject_id": pl.Int64, "starttime": _TS, "drug": pl.String},
    "hosp/diagnoses_icd": {"hadm_id": pl.Int64, "icd_code": pl.String,
                           "icd_version": pl.Int64},
    "hosp/procedures_icd": {"hadm_id": pl.Int64, "icd_code": pl.String,
                            "icd_version": pl.Int64},
    "note/discharge": {"note_id": pl.String, "subject_id": pl.Int64, "hadm_id": pl.Int64,
                       "charttime": _TS, "text": pl.String},
    "note/radiology": {"note_id": pl.String, "subject_id": pl.Int64, "hadm_id": pl.Int64,
                       "charttime": _TS, "text": pl.String},
}
_CXR_METADATA = {"dicom_id": pl.String, "subject_id": pl.Int64, "study_id": pl.Int64,
                 "ViewPosition": pl.String, "StudyDate": pl.Int64, "StudyTime": pl.Float64}
_CXR_DEFAULT = os.path.join("cxr", "mimic-cxr-2.0.0-metadata")   # .csv.gz or .csv
_FRONTAL = ("PA", "AP")
_WINDOW = ("subject_id", "hadm_id", "admittime", "dischtime")


# ----------------------------------------------------------------------------- files


def _table_path(directory: str, name: str) -> str | None:
  for ext in (".csv.gz", ".csv"):
    path = os.path.join(directory, name + ext)
    if os.path.isfile(path):
      return path
  return None


def _require(directory: str, name: str) -> str:
  path = _table_path(directory, name)
  if path is None:
    raise DataError(f"{os.path.join(directory, name)}.csv.gz: required MIMIC-IV table "
                    f"'{name}' not found (neither .csv.gz nor .csv)")
  return path


def _scan_csv(path: str, columns: dict[str, pl.DataType], what: str) -> pl.LazyFrame:
  """Lazy, typed projection of a CSV file; DataError for an empty file or a lost column."""
  header = _header(path)
  if not header:
    raise DataError(f"{path}:1: empty file without a header line (expected {what} columns "
                    f"{list(columns)})")
  missing = [c for c in columns if c not in header]
  if missing:
    raise DataError(f"{path}:1: {what} lacks column(s) {missing} (header has {header[:20]})")
  return pl.scan_csv(path, schema_overrides=columns, infer_schema=False, null_values=[""],
                     raise_if_empty=False).select(list(columns))


def _parse_error(path: str, e: Exception) -> DataError:
  msg = str(e).splitlines()[0] if str(e) else type(e).__name__
  return DataError(f"{path}: cannot read a value with its MIMIC-IV type: {msg}")


def _collect(lf: pl.LazyFrame, path: str) -> pl.DataFrame:
  try:
    return lf.collect(engine="streaming")
  except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError) as e:
    raise _parse_error(path, e) from None


def _sink(lf: pl.LazyFrame, out: str, path: str) -> None:
  try:
    lf.sink_parquet(out)
  except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError) as e:
    raise _parse_error(path, e) from None


def bucket(text: str, n: int = N_CODE_BUCKETS) -> int:
  """Stable hash bucket: CRC-32 of the lower-cased stripped UTF-8 string, modulo n."""
  return zlib.crc32(text.strip().lower().encode("utf-8")) % n


def _key(*parts: Any) -> str:
  return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- sources
#
# A source yields canonical frames. `base()`: patients (subject_id, male, birth_year,
# death_time, death_date_only), admissions (subject_id, hadm_id, admittime, dischtime,
# died, admission_type, admission_location, discharge_location, insurance, race) and
# ICU stays (subject_id, hadm_id, stay_id, intime). The event methods take the cohort's
# windows (`_WINDOW` columns plus icu_stay_ids) and return lazy frames already limited to
# the index admission: (subject_id, time, itemid, value), (subject_id, name) or
# (subject_id, code), with the path named in parse errors.


class _RawSource:
  """The PhysioNet CSV layout."""

  kind = "raw"

  def __init__(self, directory: str):
    self.directory = directory

  def _scan(self, name: str) -> tuple[pl.LazyFrame, str]:
    path = _require(self.directory, name)
    return _scan_csv(path, _RAW[name], f"MIMIC-IV table '{name}'"), path

  def base(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    lf, path = self._scan("hosp/patients")
    patients = _collect(lf, path)
    _check_ids(patients, ["subject_id"], path, unique="subject_id")
    gender = pl.col("gender").str.strip_chars()
    patients = patients.select(
        "subject_id",
        pl.when(gender == "M").then(1.0).when(gender == "F").then(0.0).alias("male"),
        (pl.col("anchor_year") - pl.col("anchor_age")).alias("birth_year"),
        pl.col("dod").cast(_TS).alias("death_time"),
        pl.lit(True).alias("death_date_only"))
    lf, path = self._scan("hosp/admissions")
    adm = _collect(lf, path)
    _check_ids(adm, ["subject_id", "hadm_id"], path, unique="hadm_id")
    adm = adm.select(
        "subject_id", "hadm_id", "admittime", "dischtime",
        ((pl.col("hospital_expire_flag") == 1).fill_null(False)
         | pl.col("deathtime").is_not_null()
         | (pl.col("discharge_location").str.strip_chars() == "DIED").fill_null(False)
         ).alias("died"),
        *(_clean(c) for c in ("admission_type", "admission_location",
                              "discharge_location", "insurance", "race")))
    lf, path = self._scan("icu/icustays")
    icu = _collect(lf, path)
    _check_ids(icu, ["subject_id", "hadm_id", "stay_id"], path, unique="stay_id")
    return patients, adm, icu

  def labs(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    lf, path = self._scan("hosp/labevents")
    lf = lf.filter(pl.col("itemid").is_in(list(LAB_ITEMS)) & pl.col("valuenum").is_not_null()
                   & _subjects_in(windows))
    return _in_window(lf.select("subject_id", pl.col("charttime").alias("time"), "itemid",
                                pl.col("valuenum").alias("value")), windows), path

  def vitals(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    lf, path = self._scan("icu/chartevents")
    stays = windows.select("subject_id", "icu_stay_ids").explode("icu_stay_ids").drop_nulls()
    stays = stays.rename({"icu_stay_ids": "stay_id"})
    lf = lf.filter(pl.col("itemid").is_in(list(VITAL_ITEMS)) & pl.col("valuenum").is_not_null()
                   & pl.col("stay_id").is_in(stays["stay_id"].implode()))
    lf = lf.join(stays.lazy(), on="stay_id", how="inner")
    return _in_window(lf.select("subject_id", pl.col("charttime").alias("time"), "itemid",
                                pl.col("valuenum").alias("value")), windows), path

  def prescriptions(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    lf, path = self._scan("hosp/prescriptions")
    lf = lf.filter(_subjects_in(windows)).select(
        "subject_id", pl.col("starttime").alias("time"), pl.col("drug").alias("name"))
    return _in_window(lf, windows).select("subject_id", "name"), path

  def _codes(self, name: str, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    lf, path = self._scan(name)
    lf = lf.filter(pl.col("hadm_id").is_in(windows["hadm_id"].implode()))
    lf = lf.join(windows.lazy().select("hadm_id", "subject_id"), on="hadm_id", how="inner")
    return lf.select("subject_id", _icd(pl.col("icd_version").cast(pl.String),
                                        pl.col("icd_code"))), path

  def diagnoses(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._codes("hosp/diagnoses_icd", windows)

  def procedures(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._codes("hosp/procedures_icd", windows)

  def notes(self, name: str, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str] | None:
    path = _table_path(self.directory, name)
    if path is None:
      return None
    lf = _scan_csv(path, _RAW[name], f"MIMIC-IV-Note table '{name}'")
    lf = lf.filter(pl.col("hadm_id").is_in(windows["hadm_id"].implode()))
    lf = lf.join(windows.lazy().select("hadm_id", "dischtime"), on="hadm_id", how="inner")
    lf = lf.filter(pl.col("charttime") <= pl.col("dischtime"))
    return lf.select("subject_id", "charttime", "note_id", "text"), path


class _MedsSource:
  """A MEDS event table (file or folder of parquet files)."""

  kind = "meds"

  def __init__(self, path: str):
    self.path = path
    self._lf = _scan_meds(path)

  def _codes_with(self, prefix: str) -> pl.LazyFrame:
    return self._lf.filter(pl.col("code").str.starts_with(prefix))

  def base(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    path = self.path
    subjects = _collect(self._lf.select("subject_id").unique(), path)
    keep = (pl.col("code").str.starts_with("HOSPITAL_ADMISSION//")
            | pl.col("code").str.starts_with("HOSPITAL_DISCHARGE//")
            | pl.col("code").str.starts_with("ICU_ADMISSION//")
            | pl.col("code").str.starts_with("GENDER//")
            | pl.col("code").is_in(["MEDS_BIRTH", "MEDS_DEATH"]))
    ev = _collect(self._lf.filter(keep).select("subject_id", "time", "code"), path)
    patients = _meds_patients(subjects, ev)
    adm = _meds_admissions(ev, path)
    return patients, adm, _meds_icu(ev, adm)

  def _lab_like(self, items: dict[int, str], windows: pl.DataFrame) -> pl.LazyFrame:
    parts = pl.col("code").str.split("//")
    itemid = (pl.when(parts.list.get(1, null_on_oob=True) == "RESULT")
              .then(parts.list.get(2, null_on_oob=True))
              .otherwise(parts.list.get(1, null_on_oob=True)))
    lf = self._codes_with("LAB//").filter(_subjects_in(windows)).select(
        "subject_id", "time", itemid.cast(pl.Int64, strict=False).alias("itemid"), "value")
    lf = lf.filter(pl.col("itemid").is_in(list(items)) & pl.col("value").is_not_null())
    return _in_window(lf, windows)

  def labs(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._lab_like(LAB_ITEMS, windows), self.path

  def vitals(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._lab_like(VITAL_ITEMS, windows), self.path

  def prescriptions(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    prefix = "MEDICATION//START//"
    lf = self._codes_with(prefix).filter(_subjects_in(windows)).select(
        "subject_id", "time", pl.col("code").str.slice(len(prefix)).alias("name"))
    return _in_window(lf, windows).select("subject_id", "name"), self.path

  def _icd_codes(self, prefix: str, windows: pl.DataFrame,
                 from_day: bool) -> tuple[pl.LazyFrame, str]:
    parts = pl.col("code").str.split("//")
    lf = self._codes_with(prefix).filter(_subjects_in(windows)).select(
        "subject_id", "time",
        _icd(parts.list.get(2, null_on_oob=True), parts.list.get(3, null_on_oob=True)))
    return _in_window(lf, windows, from_day=from_day).select("subject_id", "code"), self.path

  def diagnoses(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._icd_codes("DIAGNOSIS//ICD//", windows, from_day=False)

  def procedures(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._icd_codes("PROCEDURE//ICD//", windows, from_day=True)


def _clean(col: str) -> pl.Expr:
  """A categorical string column, stripped; empty or MEDS' "UNK" become null."""
  v = pl.col(col).str.strip_chars()
  return pl.when(v.is_in(["", "UNK"])).then(None).otherwise(v).alias(col)


def _icd(version: pl.Expr, code: pl.Expr) -> pl.Expr:
  return pl.concat_str([pl.lit("ICD"), version.str.strip_chars(), pl.lit(":"),
                        code.str.strip_chars()]).alias("code")


def _subjects_in(windows: pl.DataFrame) -> pl.Expr:
  return pl.col("subject_id").is_in(windows["subject_id"].implode())


def _in_window(lf: pl.LazyFrame, windows: pl.DataFrame, from_day: bool = False
               ) -> pl.LazyFrame:
  """Rows whose time lies in the subject's index window; adds admittime."""
  start = pl.col("admittime").dt.truncate("1d") if from_day else pl.col("admittime")
  w = windows.lazy().select("subject_id", "admittime", "dischtime")
  return (lf.join(w, on="subject_id", how="inner")
          .filter(pl.col("time").is_between(start, pl.col("dischtime")))
          .drop("dischtime"))


def _check_ids(df: pl.DataFrame, columns: list[str], path: str, unique: str) -> None:
  for c in columns:
    if df[c].null_count():
      raise DataError(f"{path}: column {c} has {df[c].null_count()} null value(s)")
  if df[unique].is_duplicated().any():
    dup = df.filter(pl.col(unique).is_duplicated())[unique].unique().sort().head(5)
    raise DataError(f"{path}: column {unique} repeats ids, e.g. {dup.to_list()}")


def _scan_meds(path: str) -> pl.LazyFrame:
  """(subject_id Int64, time Datetime, code String, value Float64), checked lazily."""
  if os.path.isdir(path):
    source = os.path.join(path, "**", "*.parquet")
    if not any(f.endswith(".parquet") for _, _, fs in os.walk(path) for f in fs):
      raise DataError(f"{path}: MEDS folder holds no .parquet file")
  elif os.path.isfile(path):
    source = path
  else:
    raise DataError(f"{path}: MEDS events file not found")
  try:
    lf = pl.scan_parquet(source)
    schema = lf.collect_schema()
  except Exception as e:  # pylint: disable=broad-except  (any reader error is bad input)
    raise DataError(f"{path}: cannot read as parquet ({type(e).__name__}: {e})") from None
  missing = [c for c in ("subject_id", "time", "code") if c not in schema]
  if missing:
    raise DataError(f"{path}: MEDS table lacks column(s) {missing} (has {list(schema)})")
  value = next((c for c in ("numeric_value", "value") if c in schema), None)
  if value is None:
    raise DataError(f"{path}: MEDS table has neither a 'numeric_value' nor a 'value' "
                    f"column (has {list(schema)})")
  checks = {"subject_id": schema["subject_id"].is_integer(),
            "time": isinstance(schema["time"], (pl.Datetime, pl.Date)),
            "code": schema["code"] == pl.String,
            value: schema[value].is_numeric() or schema[value] == pl.Null}
  bad = [f"{c} ({schema[c]})" for c, ok in checks.items() if not ok]
  if bad:
    raise DataError(f"{path}: MEDS column(s) with the wrong type: {bad}; expected integer "
                    f"subject_id, datetime time, string code, numeric {value}")
  return lf.select(pl.col("subject_id").cast(pl.Int64), pl.col("time").cast(_TS), "code",
                   pl.col(value).cast(pl.Float64).alias("value"))


def _meds_patients(subjects: pl.DataFrame, ev: pl.DataFrame) -> pl.DataFrame:
  sex = (ev.filter(pl.col("code").str.starts_with("GENDER//"))
         .group_by("subject_id").agg(pl.col("code").sort().first().str.slice(8).alias("g")))
  birth = (ev.filter(pl.col("code") == "MEDS_BIRTH").group_by("subject_id")
           .agg(pl.col("time").min().dt.year().cast(pl.Int64).alias("birth_year")))
  death = (ev.filter(pl.col("code") == "MEDS_DEATH").group_by("subject_id")
           .agg(pl.col("time").min().alias("death_time")))
  out = (subjects.join(sex, on="subject_id", how="left")
         .join(birth, on="subject_id", how="left").join(death, on="subject_id", how="left"))
  return out.select(
      "subject_id",
      pl.when(pl.col("g") == "M").then(1.0).when(pl.col("g") == "F").then(0.0).alias("male"),
      "birth_year", "death_time",
      (pl.col("death_time") == pl.col("death_time").dt.truncate("1d")).fill_null(False)
      .alias("death_date_only"))


def _meds_admissions(ev: pl.DataFrame, path: str) -> pl.DataFrame:
  """Admission/discharge events paired by order per subject, synthetic hadm_id."""
  def events(prefix: str, name: str) -> pl.DataFrame:
    rows = ev.filter(pl.col("code").str.starts_with(prefix))
    if rows["time"].null_count():
      raise DataError(f"{path}: {rows['time'].null_count()} {prefix} event(s) without a time")
    return (rows.sort("subject_id", "time", "code")
            .with_columns(pl.int_range(pl.len()).over("subject_id").alias("_k"),
                          pl.col("code").str.split("//").alias("_parts"))
            .rename({"time": name}))
  adm, dis = events("HOSPITAL_ADMISSION//", "admittime"), events("HOSPITAL_DISCHARGE//",
                                                                  "dischtime")
  counts = (adm.group_by("subject_id").len().join(dis.group_by("subject_id").len(),
                                                   on="subject_id", how="full", coalesce=True)
            .filter(pl.col("len").fill_null(0) != pl.col("len_right").fill_null(0)))
  if len(counts):
    r = counts.sort("subject_id").row(0, named=True)
    raise DataError(f"{path}: subject {r['subject_id']} has {r['len'] or 0} "
                    f"HOSPITAL_ADMISSION but {r['len_right'] or 0} HOSPITAL_DISCHARGE "
                    f"events; they cannot be paired")
  out = adm.join(dis.select("subject_id", "_k", "dischtime", pl.col("_parts").alias("_d")),
                 on=["subject_id", "_k"], how="inner").sort("subject_id", "_k")
  get = lambda col, i: pl.col(col).list.get(i, null_on_oob=True)
  out = out.select(
      "subject_id", (pl.int_range(pl.len()) + 1).cast(pl.Int64).alias("hadm_id"),
      "admittime", "dischtime", (get("_d", 1) == "DIED").fill_null(False).alias("died"),
      get("_parts", 1).alias("admission_type"), get("_parts", 2).alias("admission_location"),
      get("_d", 1).alias("discharge_location"),
      pl.lit(None, pl.String).alias("insurance"), pl.lit(None, pl.String).alias("race"))
  return out.with_columns(_clean(c) for c in ("admission_type", "admission_location",
                                              "discharge_location"))


def _meds_icu(ev: pl.DataFrame, adm: pl.DataFrame) -> pl.DataFrame:
  """ICU_ADMISSION events attached to admissions (see the module docstring)."""
  icu = (ev.filter(pl.col("code").str.starts_with("ICU_ADMISSION//")
                   & pl.col("time").is_not_null())
         .sort("subject_id", "time", "code")
         .select("subject_id", pl.col("time").alias("intime"))
         .with_columns((pl.int_range(pl.len()) + 1).cast(pl.Int64).alias("stay_id")))
  cand = icu.join(adm.select("subject_id", "hadm_id", "admittime", "dischtime"),
                  on="subject_id", how="inner")
  inside = pl.col("intime").is_between(pl.col("admittime"), pl.col("dischtime"))
  before = ((pl.col("intime") < pl.col("admittime"))
            & (pl.col("admittime") - pl.col("intime")
               <= pl.duration(hours=ICU_BEFORE_ADMIT_HOURS)))
  # Rank: containing admissions first (latest admittime), then the next one after.
  cand = cand.filter(inside | before).with_columns(
      pl.when(inside).then(0).otherwise(1).alias("_rank"),
      pl.when(inside).then(-pl.col("admittime").dt.epoch("us"))
      .otherwise(pl.col("admittime").dt.epoch("us")).alias("_order"))
  best = (cand.sort("stay_id", "_rank", "_order")
          .group_by("stay_id", maintain_order=True).first())
  return best.select("subject_id", "hadm_id", "stay_id", "intime")


# ----------------------------------------------------------------------------- cohort


def _step(step: str, n_remaining: int, n_excluded: int, unit: str = "subjects") -> dict:
  return {"step": step, "unit": unit, "n_remaining": int(n_remaining),
          "n_excluded": int(n_excluded)}


def _died_in_index() -> pl.Expr:
  timed = ~pl.col("death_date_only") & (pl.col("death_time") <= pl.col("dischtime"))
  dated = pl.col("death_date_only") & (pl.col("death_time").dt.date()
                                       < pl.col("dischtime").dt.date())
  return pl.col("died") | (pl.col("death_time").is_not_null() & (timed | dated))


def _cohort_frame(patients: pl.DataFrame, adm: pl.DataFrame, icu: pl.DataFrame
                  ) -> tuple[pl.DataFrame, dict[str, Any]]:
  """One row per subject: index admission, static columns, labels (module docstring)."""
  n_subjects = pl.concat([patients["subject_id"], adm["subject_id"]]).n_unique()
  attrition = [_step("subjects", n_subjects, 0)]
  valid = adm.filter(pl.col("admittime").is_not_null() & pl.col("dischtime").is_not_null()
                     & (pl.col("dischtime") >= pl.col("admittime")))
  attrition.append(_step("admissions with dischtime >= admittime", len(valid),
                         len(adm) - len(valid), unit="admissions"))
  index = (valid.sort("subject_id", "admittime", "dischtime", "hadm_id")
           .group_by("subject_id", maintain_order=True).first())
  attrition.append(_step("subjects with a valid hospital admission (index = first)",
                         len(index), n_subjects - len(index)))
  index = index.join(patients, on="subject_id", how="left").with_columns(
      (pl.col("admittime").dt.year().cast(pl.Int64) - pl.col("birth_year"))
      .cast(pl.Float64).alias("age"))
  n = len(index)
  index = index.filter(pl.col("age") >= ADULT_AGE)
  attrition.append(_step(f"adult at the index admission (age >= {ADULT_AGE}, known)",
                         len(index), n - len(index)))
  n = len(index)
  index = index.filter(~_died_in_index())
  attrition.append(_step("survived the index admission", len(index), n - len(index)))

  disch = index.select("subject_id", pl.col("dischtime").alias("_disch"))
  later = (valid.join(disch, on="subject_id", how="inner")
           .filter(pl.col("admittime") > pl.col("_disch")))
  readmit = later.group_by("subject_id").agg(
      ((pl.col("admittime") - pl.col("_disch")) <= pl.duration(days=30)).any()
      .alias("_readmit"))
  icu_later = (icu.join(later.select("hadm_id", "_disch"), on="hadm_id", how="inner")
               .filter((pl.col("intime") > pl.col("_disch"))
                       & (pl.col("intime") - pl.col("_disch") <= pl.duration(days=90)))
               .group_by("subject_id").agg(pl.len().alias("_icu_later")))
  icu_index = (icu.join(index.select("hadm_id"), on="hadm_id", how="inner")
               .sort("stay_id").group_by("hadm_id")
               .agg(pl.col("stay_id").alias("icu_stay_ids")))
  days_to_death = (pl.col("death_time").dt.date() - pl.col("dischtime").dt.date()).dt.total_days()
  out = (index.join(readmit, on="subject_id", how="left")
         .join(icu_later, on="subject_id", how="left")
         .join(icu_index, on="hadm_id", how="left")
         .sort("subject_id")
         .select(
             *_WINDOW, "age", "male",
             ((pl.col("dischtime") - pl.col("admittime")).dt.total_seconds() / 3600.0)
             .alias("los_hours"),
             pl.col("icu_stay_ids").list.len().fill_null(0).cast(pl.Float64)
             .alias("icu_stays"),
             pl.col("icu_stay_ids").fill_null([]).cast(pl.List(pl.Int64)),
             "admission_type", "admission_location", "discharge_location", "insurance",
             "race",
             pl.col("_readmit").fill_null(False).cast(pl.Float64).alias("readmission_30d"),
             (pl.col("_icu_later").fill_null(0) > 0).cast(pl.Float64).alias("icu_90d"),
             days_to_death.is_between(0, 180).fill_null(False).cast(pl.Float64)
             .alias("mortality_180d")))
  return out, {"attrition": attrition}


def _onehot(col: str, values: Sequence[str], prefix: str) -> list[pl.Expr]:
  v = pl.col(col)
  return [pl.when(v.is_null()).then(None).otherwise((v == u).cast(pl.Float64))
          .alias(f"{prefix}={u}") for u in values]


def _race_group() -> pl.Expr:
  r = pl.col("race").str.to_uppercase()
  return (pl.when(r.is_null() | r.is_in(list(_RACE_UNKNOWN))).then(None)
          .when(r.str.starts_with("WHITE")).then(pl.lit("white"))
          .when(r.str.starts_with("BLACK")).then(pl.lit("black"))
          .when(r.str.starts_with("HISPANIC") | r.str.starts_with("SOUTH AMERICAN"))
          .then(pl.lit("hispanic"))
          .when(r.str.starts_with("ASIAN")).then(pl.lit("asian"))
          .otherwise(pl.lit("other")).alias("race"))


def _static_features(base: pl.DataFrame, kind: str) -> pl.DataFrame:
  """The ehr modality's admission-level columns (all Float64, NaN = not recorded)."""
  exprs = [pl.col(c).cast(pl.Float64) for c in ("age", "male", "los_hours", "icu_stays")]
  exprs += _onehot("admission_type", ADMISSION_TYPES, "admission_type")
  exprs += _onehot("admission_location", ADMISSION_LOCATIONS, "admission_location")
  exprs += _onehot("discharge_location", DISCHARGE_LOCATIONS, "discharge_location")
  if kind == "raw":
    exprs += _onehot("insurance", INSURANCES, "insurance")
    exprs += _onehot("race", RACE_GROUPS, "race")
  return base.with_columns(_race_group()).select(exprs).fill_null(float("nan"))


# ----------------------------------------------------------------------------- stages


def _series_stage(rows: pl.LazyFrame, path: str, items: dict[int, str], name: str,
                  subjects: np.ndarray, scratch: str) -> tuple[pl.DataFrame, dict]:
  """Windowed (subject_id, time, itemid, value, admittime) rows -> featurised, batched.

  Pass 1 streams the in-window rows into a scratch parquet file; pass 2 featurises
  contiguous ranges of sorted subject ids holding about `BATCH_VALUES` values each.
  """
  rows_path = os.path.join(scratch, f".{name}.rows.parquet")
  hours = (pl.col("time") - pl.col("admittime")).dt.total_microseconds() / 3.6e9
  _sink(rows.select("subject_id", hours.alias("hours"),
                    pl.col("itemid").replace_strict(list(items), list(items.values()),
                                                    return_dtype=pl.String)
                    .alias("variable"), "value"), rows_path, path)
  group = [ModalityGroup(name, tuple(items.values()))]
  sorted_S = np.sort(subjects)
  per = pl.scan_parquet(rows_path).group_by("subject_id").len().collect()
  n_S = (pl.DataFrame({"subject_id": sorted_S}).join(per, on="subject_id", how="left")
         ["len"].fill_null(0).to_numpy().astype(np.int64))
  batch_S = (np.cumsum(n_S) - n_S) // BATCH_VALUES

  def load_batch(batch: np.ndarray) -> pl.DataFrame:
    return pl.scan_parquet(rows_path).filter(
        pl.col("subject_id").is_between(int(batch[0]), int(batch[-1]))
        & pl.col("subject_id").is_in(pl.Series(batch).implode())).collect()

  df, report = featurize_batched(load_batch, group, sorted_S, batch_S, "subject_id",
                                 window=(0.0, float("inf")), valid_ranges=VALID_RANGES,
                                 out_of_range="drop", stay_col="subject_id",
                                 time_col="hours", unknown_variables="ignore")
  os.remove(rows_path)
  return df[np.searchsorted(sorted_S, subjects)], report    # sorted -> `subjects` order


def _count_stage(rows: pl.LazyFrame, path: str, key: str, prefix: str,
                 subjects: np.ndarray) -> tuple[pl.DataFrame, dict]:
  """(subject_id, key) rows -> entries, distinct keys and hashed key buckets.

  Keys are compared stripped and lower-cased; the rows are reduced to (subject, key)
  counts while streaming, so only the distinct pairs are held in memory.
  """
  pairs = _collect(rows.select("subject_id", pl.col(key).str.strip_chars().str.to_lowercase())
                   .drop_nulls(key).group_by("subject_id", key).len(), path)
  keys = pairs[key].unique().to_list()
  mapping = pl.DataFrame({key: keys, "_b": [bucket(k) for k in keys]},
                         schema={key: pl.String, "_b": pl.Int64})
  counts = pairs.group_by("subject_id").agg(
      pl.col("len").sum().cast(pl.Float64).alias(f"{prefix}_entries"),
      pl.len().cast(pl.Float64).alias(f"{prefix}_distinct"))
  per_bucket = (pairs.join(mapping, on=key, how="inner").group_by("subject_id").agg(
      pl.col("len").filter(pl.col("_b") == b).sum().cast(pl.Float64)
      .alias(f"{prefix}_bucket{b:02d}") for b in range(N_CODE_BUCKETS)))
  df = (pl.DataFrame({"subject_id": subjects}).join(counts, on="subject_id", how="left")
        .join(per_bucket, on="subject_id", how="left"))
  df = df.select("subject_id", pl.col(f"{prefix}_entries").is_not_null().alias("present"),
                 pl.exclude("subject_id").fill_null(0.0))
  return df, {"rows_in_window": int(pairs["len"].sum())}


def _embedding_frame(subjects: np.ndarray, ids_K: np.ndarray, x_KxD: np.ndarray,
                     prefix: str) -> pl.DataFrame:
  """Per-subject means of rows `x_KxD` (rows sorted by `ids_K`) on `subjects`."""
  present_N = np.zeros(len(subjects), bool)
  out_NxD = np.zeros((len(subjects), x_KxD.shape[1]), np.float32)
  if len(ids_K):
    uniq, start, count = np.unique(ids_K, return_index=True, return_counts=True)
    means = (np.add.reduceat(x_KxD.astype(np.float64), start, axis=0)
             / count[:, None]).astype(np.float32)
    rows = np.searchsorted(subjects, uniq)
    present_N[rows] = True
    out_NxD[rows] = means
  names = [f"{prefix}{j:03d}" for j in range(x_KxD.shape[1])]
  df = pl.DataFrame({"subject_id": subjects, "present": present_N})
  return df.hstack(pl.DataFrame(out_NxD, schema=names, orient="row"))


def _note_stage(rows: pl.LazyFrame, path: str, name: str, subjects: np.ndarray,
                encoder_fn: Callable[[], Any], scratch: str) -> tuple[pl.DataFrame, dict]:
  """Notes -> mean text embedding per subject, encoded in batches of subjects."""
  rows_path = os.path.join(scratch, f".{name}.rows.parquet")
  _sink(rows.select("subject_id", "charttime", "note_id", pl.col("text").fill_null("")),
        rows_path, path)
  per = (pl.scan_parquet(rows_path).group_by("subject_id")
         .agg(pl.col("text").str.len_chars().sum().alias("chars"), pl.len().alias("n"))
         .sort("subject_id").collect())
  ids_S = per["subject_id"].to_numpy()
  chars_S = per["chars"].to_numpy().astype(np.int64)
  batch_S = (np.cumsum(chars_S) - chars_S) // NOTE_BATCH_CHARS
  encoder = encoder_fn() if len(ids_S) else None
  ids, parts = [], []
  for b in np.unique(batch_S):
    batch = ids_S[batch_S == b]
    notes = (pl.scan_parquet(rows_path)
             .filter(pl.col("subject_id").is_between(int(batch[0]), int(batch[-1]))
                     & pl.col("subject_id").is_in(pl.Series(batch).implode()))
             .sort("subject_id", "charttime", "note_id").collect())
    parts.append(encoder.encode(notes["text"].to_list()))
    ids.append(notes["subject_id"].to_numpy())
  os.remove(rows_path)
  dim = encoder.dim if encoder is not None else TEXT_DIM
  x_KxD = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
  ids_K = np.concatenate(ids) if ids else np.zeros(0, np.int64)
  return _embedding_frame(subjects, ids_K, x_KxD, "emb"), {
      "notes_in_window": int(per["n"].sum()) if len(per) else 0,
      "subjects_with_notes": len(ids_S)}


def _study_time() -> pl.Expr:
  """MIMIC-CXR StudyDate (YYYYMMDD) + StudyTime (HHMMSS.fff; null: midnight)."""
  date = pl.col("StudyDate").cast(pl.String).str.to_date("%Y%m%d", strict=False)
  t = pl.col("StudyTime").fill_null(0.0)
  seconds = (t // 10000) * 3600 + ((t // 100) % 100) * 60 + t % 100
  return (date.cast(_TS) + pl.duration(microseconds=(seconds * 1e6).round().cast(pl.Int64))
          ).alias("time")


def _read_embeddings(path: str, dicom_ids: pl.Series) -> tuple[pl.DataFrame, list[str]]:
  """The embedding rows of `dicom_ids`: dicom_id plus numeric columns (any width)."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: CXR embeddings file not found")
  try:
    if path.endswith(".parquet"):
      lf = pl.scan_parquet(path)
    else:
      lf = pl.scan_csv(path, infer_schema_length=10000, schema_overrides={"dicom_id": pl.String})
    schema = lf.collect_schema()
  except Exception as e:  # pylint: disable=broad-except  (any reader error is bad input)
    raise DataError(f"{path}: cannot read the CXR embeddings ({type(e).__name__}: {e})"
                    ) from None
  if "dicom_id" not in schema:
    raise DataError(f"{path}: CXR embeddings lack column 'dicom_id' (has {list(schema)[:10]})")
  cols = [c for c in schema if c not in ("dicom_id", "subject_id", "study_id")]
  bad = [c for c in cols if not schema[c].is_numeric()]
  if bad or not cols:
    raise DataError(f"{path}: CXR embedding columns must be numeric, found {bad[:5] or 'none'}")
  lf = lf.select(pl.col("dicom_id").cast(pl.String), *(pl.col(c).cast(pl.Float64) for c in cols))
  return _collect(lf.filter(pl.col("dicom_id").is_in(dicom_ids.implode())), path), cols


def _cxr_stage(metadata: str, embeddings: str, windows: pl.DataFrame,
               subjects: np.ndarray) -> tuple[pl.DataFrame, dict]:
  """Mean embedding of the frontal images whose study lies in the window."""
  lf = _scan_csv(metadata, _CXR_METADATA, "MIMIC-CXR metadata")
  lf = lf.filter(_subjects_in(windows)
                 & pl.col("ViewPosition").str.strip_chars().is_in(list(_FRONTAL)))
  images = _collect(_in_window(lf.with_columns(_study_time()), windows)
                    .select("subject_id", "dicom_id"), metadata)
  emb, cols = _read_embeddings(embeddings, images["dicom_id"])
  joined = images.join(emb, on="dicom_id", how="inner").sort("subject_id", "dicom_id")
  x_KxD = joined.select(cols).to_numpy().astype(np.float64)
  if not np.isfinite(x_KxD).all():
    raise DataError(f"{embeddings}: CXR embeddings hold NaN or Inf values")
  df = _embedding_frame(subjects, joined["subject_id"].to_numpy(), x_KxD, "cxr")
  return df, {"frontal_images_in_window": len(images),
              "images_without_embedding": len(images) - len(joined)}


# ----------------------------------------------------------------------------- loading


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


def _cache_folder(source: str, kind: str, version: str, cache_dir: str | None) -> str:
  if cache_dir is None:
    return tempfile.mkdtemp(prefix="crl_mimic_")
  folder = os.path.join(os.fspath(cache_dir), "mimic-" + _key(
      os.path.abspath(source), kind, version, CACHE_VERSION))
  os.makedirs(folder, exist_ok=True)
  return folder


def _block(df: pl.DataFrame, stats_nan_when_absent: bool) -> tuple[np.ndarray, list[str]]:
  """A stage frame's features as an ehr block; absent rows: counts 0, statistics NaN."""
  cols = [c for c in df.columns if c not in ("subject_id", "present")]
  x = df.select(cols).to_numpy().astype(np.float32)
  if stats_nan_when_absent:
    absent = ~df["present"].to_numpy().astype(bool)
    stat = np.array([not c.endswith("_count") for c in cols])
    x[np.ix_(absent, stat)] = np.nan
  return x, cols


def load_mimic(directory: str | None = None, *, meds: str | None = None, version: str = "",
               tasks: Sequence[str] = TASKS, cache_dir: str | None = None,
               text_encoder: str = "hashed", text_model_path: str = "",
               cxr_embeddings: str = "", cxr_metadata: str = ""
               ) -> tuple[Cohort, dict[str, Any]]:
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
    cxr_embeddings: parquet / csv of image embeddings (``dicom_id`` + numeric columns);
      empty = no chest X-ray modality.
    cxr_metadata: MIMIC-CXR metadata csv; default
      ``<directory>/cxr/mimic-cxr-2.0.0-metadata.csv.gz``.

  Returns:
    (cohort, info). patient_id = subject_id, rows sorted by it. ``info``: ``source``
    ("raw" or "meds"), ``path``, ``version``, ``cache_folder``, ``stages_run``,
    ``attrition``, ``n_patients``, ``fingerprint``, ``label_counts`` (task -> {n,
    n_positive}), ``observed_fraction``, ``notes`` (dropped modalities and other
    remarks), ``modalities`` (per-stage reports), ``text_encoder`` and ``hadm_id``
    ((N,) the index admission per row; synthetic for MEDS).

  Raises:
    DataError: missing tables / columns / files, unparsable values, bad arguments.
  """
  if bool(directory) == bool(meds):
    raise DataError("MIMIC-IV: give exactly one of a raw directory (data.dir) or a MEDS "
                    f"events table (data.meds); got dir={directory!r}, meds={meds!r}")
  tasks = check_tasks(tasks, TASKS)
  if text_encoder not in ENCODERS:
    raise DataError(f"text encoder {text_encoder!r}: must be one of {list(ENCODERS)}")
  if directory:
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
      raise DataError(f"{directory}: MIMIC-IV directory not found")
    src: _RawSource | _MedsSource = _RawSource(directory)
  else:
    src = _MedsSource(os.fspath(meds))
  source_path = directory or os.fspath(meds)
  version, notes = _resolve_version(str(version), directory)
  folder = _cache_folder(source_path, src.kind, version, cache_dir)
  ran: list[str] = []

  def compute_cohort():
    return _cohort_frame(*src.base())
  base, base_info = _stage(folder, "cohort", compute_cohort, ran)
  for a in base_info["attrition"]:
    logging.info("MIMIC-IV attrition: %s: %d %s remain, %d excluded", a["step"],
                 a["n_remaining"], a["unit"], a["n_excluded"])
  if len(base) == 0:
    raise DataError(f"{source_path}: no adult subject survived a first hospital admission")
  windows = base.select(*_WINDOW, "icu_stay_ids")
  subjects = base["subject_id"].to_numpy().astype(np.int64)
  reports: dict[str, Any] = {}

  def stage(name: str, compute: Callable[[], tuple[pl.DataFrame, dict]]) -> pl.DataFrame:
    df, rep = _stage(folder, name, compute, ran)
    if df["subject_id"].to_numpy().tolist() != subjects.tolist():
      raise DataError(f"{folder}/{name}.parquet: cached stage does not match the cohort; "
                      f"delete the cache folder {folder}")
    reports[name] = rep
    return df

  series = {"labs": (src.labs, LAB_ITEMS), "vitals": (src.vitals, VITAL_ITEMS)}
  static = _static_features(base, src.kind)
  blocks = [(static.to_numpy().astype(np.float32), static.columns)]
  for name, (rows_fn, items) in series.items():
    df = stage(name, lambda f=rows_fn, i=items, n=name: _series_stage(
        *f(windows), i, n, subjects, folder))
    blocks.append(_block(df, stats_nan_when_absent=True))
  counts = {"medications": (src.prescriptions, "name", "rx"),
            "diagnoses": (src.diagnoses, "code", "dx"),
            "procedures": (src.procedures, "code", "proc")}
  for name, (rows_fn, key, prefix) in counts.items():
    df = stage(name, lambda f=rows_fn, k=key, p=prefix: _count_stage(
        *f(windows), k, p, subjects))
    blocks.append(_block(df, stats_nan_when_absent=False))

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
      _table_path(directory, _CXR_DEFAULT) or os.path.join(directory, _CXR_DEFAULT + ".csv.gz")
      if directory else "")
  if not cxr_embeddings:
    notes.append("modality cxr: no image embeddings given (data.cxr_embeddings): dropped")
  elif not metadata or not os.path.isfile(metadata):
    raise DataError(f"{metadata or 'data.cxr_metadata'}: MIMIC-CXR metadata not found "
                    f"(needed with data.cxr_embeddings)")
  else:
    add("cxr", stage("cxr-" + _key(os.path.abspath(metadata), os.path.abspath(cxr_embeddings)),
                     lambda: _cxr_stage(metadata, cxr_embeddings, windows, subjects)))

  encoder_fn = lambda: get_encoder(text_encoder, dim=TEXT_DIM, **(
      {"model_path": text_model_path} if text_encoder == "bioclinicalbert" else {}))
  encoder_key = f"{text_encoder}-{_key(text_model_path)}"
  for modality, table in NOTE_TABLES.items():
    if src.kind == "meds":
      notes.append(f"modality {modality}: a MEDS table holds no notes: dropped")
      continue
    found = _table_path(directory, table)
    if found is None:
      notes.append(f"modality {modality}: {os.path.join(directory, table)}.csv.gz not found "
                   f"(MIMIC-IV-Note): dropped")
      continue
    add(modality, stage(f"{modality}-{encoder_key}",
                        lambda t=table, m=modality: _note_stage(
                            *src.notes(t, windows), m, subjects, encoder_fn, folder)))

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
  }
  logging.info("MIMIC-IV (%s): %d patients, stages run %s, observed fraction %s",
               src.kind, len(subjects), ran, info["observed_fraction"])
  return cohort, info
