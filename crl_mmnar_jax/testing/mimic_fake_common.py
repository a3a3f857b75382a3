"""The MIMIC-IV layout shared by the generator's modules (`mimic_fake`): real row counts,
the published column order, where each table lives (the loader's names, from
`crl_mmnar_jax.data.sources.mimic.schema`), and the random-draw and column helpers
every table uses."""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import polars as pl

from crl_mmnar_jax.data.sources.mimic import schema

# Row counts of the real databases: MIMIC-IV v2.2 (hosp, icu), MIMIC-IV-Note v2.2,
# MIMIC-CXR 2.0.0. `write_fake_mimic(scale=s)` aims at s times these.
FULL_SCALE = {
    "patients": 299_712,
    "admitted_patients": 180_733,
    "admissions": 431_231,
    "icustays": 73_181,
    "labevents": 118_171_367,
    "chartevents": 313_645_063,
    "prescriptions": 15_416_708,
    "diagnoses_icd": 4_756_326,
    "procedures_icd": 669_186,
    "discharge": 331_794,
    "radiology": 2_321_355,
    "cxr_studies": 227_835,
    "cxr_images": 377_110,
}

# Official column order of every table written (the loader reads a subset: `schema`).
COLUMNS = {
    "patients": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group",
                 "dod"],
    "admissions": ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime",
                   "admission_type", "admit_provider_id", "admission_location",
                   "discharge_location", "insurance", "language", "marital_status", "race",
                   "edregtime", "edouttime", "hospital_expire_flag"],
    "labevents": ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid",
                  "order_provider_id", "charttime", "storetime", "value", "valuenum",
                  "valueuom", "ref_range_lower", "ref_range_upper", "flag", "priority",
                  "comments"],
    "prescriptions": ["subject_id", "hadm_id", "pharmacy_id", "poe_id", "poe_seq",
                      "order_provider_id", "starttime", "stoptime", "drug_type", "drug",
                      "formulary_drug_cd", "gsn", "ndc", "prod_strength", "form_rx",
                      "dose_val_rx", "dose_unit_rx", "form_val_disp", "form_unit_disp",
                      "doses_per_24_hrs", "route"],
    "diagnoses_icd": ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    "procedures_icd": ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code",
                       "icd_version"],
    "d_labitems": ["itemid", "label", "fluid", "category"],
    "icustays": ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit",
                 "intime", "outtime", "los"],
    "chartevents": ["subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime",
                    "storetime", "itemid", "value", "valuenum", "valueuom", "warning"],
    "d_items": ["itemid", "label", "abbreviation", "linksto", "category", "unitname",
                "param_type", "lownormalvalue", "highnormalvalue"],
    "discharge": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                  "storetime", "text"],
    "radiology": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                  "storetime", "text"],
    "cxr_metadata": ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
                     "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
                     "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
                     "PatientOrientationCodeSequence_CodeMeaning"],
}

# Where each table lives in a MIMIC-IV directory, without the extension: the loader's
# names (`schema`) for the tables it reads, the published ones for the dictionaries.
TABLE_PATHS = {
    "patients": schema.PATIENTS, "admissions": schema.ADMISSIONS,
    "labevents": schema.LABEVENTS, "prescriptions": schema.PRESCRIPTIONS,
    "diagnoses_icd": schema.DIAGNOSES_ICD, "procedures_icd": schema.PROCEDURES_ICD,
    "d_labitems": "hosp/d_labitems", "icustays": schema.ICUSTAYS,
    "chartevents": schema.CHARTEVENTS, "d_items": "icu/d_items",
    "discharge": schema.NOTE_DISCHARGE, "radiology": schema.NOTE_RADIOLOGY,
    "cxr_metadata": schema.CXR_METADATA_DEFAULT,
}
CXR_EMBEDDINGS_FILE = "mimic-cxr-embeddings.parquet"     # not a published file


def relative_path(table: str) -> str:
  """Where `table` (a key of `COLUMNS`) lives in a MIMIC-IV directory, without the
  extension: "hosp/labevents", "cxr/mimic-cxr-2.0.0-metadata"."""
  return TABLE_PATHS[table]


DAY = 86_400
HOUR = 3_600

# Admissions with an ICU stay, and the share of those with a second one.
P_ICU = 0.155
P_SECOND_ICU = FULL_SCALE["icustays"] / FULL_SCALE["admissions"] / P_ICU - 1.0

# ------------------------------------------------------------------------------- helpers

def los_days(rng: np.random.Generator, icu: np.ndarray) -> np.ndarray:
  los = rng.lognormal(np.log(3.0), 0.85, len(icu))
  return np.maximum(np.where(icu, 1.8 * los + 1.0, los), 0.1)


def icu_stays(rng, adm_idx, second, admit, disch) -> dict[str, np.ndarray]:
  """One ICU stay inside each admission of `adm_idx`, a second one after it where
  `second`: returns admission index, intime, outtime (seconds), sorted."""
  a0, d0 = admit[adm_idx], disch[adm_idx]
  in1 = a0 + ((d0 - a0) * rng.uniform(0.0, 0.35, len(adm_idx))).astype(np.int64)
  out1 = in1 + ((d0 - in1) * rng.uniform(0.25, 0.75, len(adm_idx))).astype(np.int64)
  k = np.flatnonzero(second)
  in2 = out1[k] + ((d0[k] - out1[k]) * rng.uniform(0.1, 0.5, len(k))).astype(np.int64)
  out2 = in2 + ((d0[k] - in2) * rng.uniform(0.2, 0.8, len(k))).astype(np.int64)
  adm = np.concatenate([adm_idx, adm_idx[k]])
  tin = np.concatenate([in1, in2]) // 60 * 60
  tout = np.maximum(np.concatenate([out1, out2]) // 60 * 60, tin + 600)
  order = np.lexsort((tin, adm))
  return {"adm": adm[order], "in": tin[order], "out": tout[order]}


@functools.lru_cache(maxsize=1)
def calibration() -> dict[str, float]:
  """Means of the random processes that row counts are proportional to (admission and
  ICU stay lengths), by simulation with a fixed seed: counts per admission are drawn
  as target × length / mean length."""
  rng = np.random.default_rng(20_240_601)
  n = 400_000
  icu = rng.random(n) < P_ICU
  los = los_days(rng, icu)
  second = rng.random(n) < P_SECOND_ICU
  adm = np.zeros(n, np.int64)
  disch = (los * DAY).astype(np.int64)
  stays = icu_stays(rng, np.flatnonzero(icu), second[icu], adm, disch)
  return {"los_days": float(los.mean()),
          "icu_days": float(((stays["out"] - stays["in"]) / DAY).mean())}


def pick(rng, values: Sequence, n: int, p: Sequence[float] | None = None) -> pl.Series:
  """n draws from `values` (None = null) as a polars Series."""
  p = None if p is None else np.asarray(p, float) / np.sum(p)
  idx = rng.choice(len(values), size=n, p=p)
  return pl.Series(list(values)).gather(idx)


def timestamps(secs: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
  """Epoch seconds -> polars Datetime (null where `null`)."""
  arr = np.asarray(secs, np.int64).astype("datetime64[s]").astype("datetime64[ms]")
  if null is not None:
    arr = arr.copy()
    arr[null] = np.datetime64("NaT")
  return pl.Series(arr)


def nullable_int(x: np.ndarray, null: np.ndarray) -> pl.Series:
  return pl.Series(np.where(null, np.nan, x.astype(np.float64))).fill_nan(None).cast(pl.Int64)


def fmt_number(values: pl.Expr, decimals: pl.Expr) -> pl.Expr:
  """A number as MIMIC's text `value` column holds it: integer or 1-2 decimals."""
  return (pl.when(decimals == 0).then(values.round(0).cast(pl.Int64).cast(pl.Utf8))
          .when(decimals == 1).then(values.round(1).cast(pl.Utf8))
          .otherwise(values.round(2).cast(pl.Utf8)))


def year_start(years: np.ndarray) -> np.ndarray:
  return (np.asarray(years) - 1970).astype("datetime64[Y]").astype("datetime64[s]").astype(
      np.int64)


def rank_in_group(group: np.ndarray) -> np.ndarray:
  """1-based position of each row within its run of equal (sorted) `group` values."""
  n = len(group)
  if n == 0:
    return np.zeros(0, np.int64)
  start = np.r_[True, group[1:] != group[:-1]]
  idx = np.arange(n)
  first = np.maximum.accumulate(np.where(start, idx, 0))
  return idx - first + 1


def group_cumsum(x: np.ndarray, first: np.ndarray) -> np.ndarray:
  """Cumulative sum of `x` restarting where `first` (first[0] must be True)."""
  cs = np.cumsum(x)
  start = np.maximum.accumulate(np.where(first, np.arange(len(x)), 0))
  return cs - (cs[start] - x[start])


def id_block(rng, start: int, n: int, stride: int, base: int) -> np.ndarray:
  """n unique ids base + (start..start+n-1)·stride + jitter, shuffled."""
  ids = base + (start + np.arange(n, dtype=np.int64)) * stride
  if stride > 1:
    ids += rng.integers(0, stride, n)
  return rng.permutation(ids)


@functools.lru_cache(maxsize=1)
def provider_ids() -> np.ndarray:
  rng = np.random.default_rng(7)
  chars = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
  digits = rng.integers(0, 10, (3000, 3))
  tail = chars[rng.integers(0, 36, (3000, 2))]
  return np.array([f"P{a}{b}{c}{x}{y}" for (a, b, c), (x, y) in zip(digits, tail)])


def outpatient_times(rng, t0: np.ndarray, who: np.ndarray) -> np.ndarray:
  """Times anywhere in a patient's timeline (a year before anchor_year to 6 after)."""
  span = 7 * 365 * DAY
  return (t0[who] - 365 * DAY + (rng.random(len(who)) * span).astype(np.int64)) // 60 * 60

