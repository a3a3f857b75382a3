"""eICU Collaborative Research Database v2.0, read from its raw CSV layout.

Layout of ``directory`` (as published on PhysioNet; each table as ``<name>.csv.gz`` or
plain ``<name>.csv``). Offsets are integer MINUTES from unit (ICU) admission. Only the
columns below are read (a projection); other columns may be present and are ignored:

=================== ======================================================================
table               columns read (eICU-CRD v2.0 names and types)
=================== ======================================================================
patient             patientunitstayid int, patienthealthsystemstayid int, uniquepid str,
                    gender str, age str, admissionheight float, admissionweight float,
                    hospitaladmitoffset int, hospitaldischargeyear int,
                    hospitaldischargestatus str, unittype str, unitadmitsource str,
                    unitvisitnumber int
vitalPeriodic       patientunitstayid, observationoffset int, temperature, sao2,
                    heartrate, respiration, systemicsystolic, systemicdiastolic,
                    systemicmean (float)
vitalAperiodic      patientunitstayid, observationoffset int, noninvasivesystolic,
                    noninvasivediastolic, noninvasivemean (float)
lab                 patientunitstayid, labresultoffset int, labname str, labresult float
medication          patientunitstayid, drugorderoffset int, drugordercancelled str,
                    drugname str
infusionDrug        patientunitstayid, infusionoffset int, drugname str
intakeOutput        patientunitstayid, intakeoutputoffset int, intaketotal, outputtotal,
                    nettotal (float)
diagnosis           patientunitstayid, diagnosisoffset int, diagnosisstring str,
                    icd9code str
treatment           patientunitstayid, treatmentoffset int, treatmentstring str
respiratoryCharting patientunitstayid, respchartoffset int, respchartvaluelabel str
microLab            patientunitstayid, culturetakenoffset int, culturesite str,
                    organism str
=================== ======================================================================

The optional tables (apacheApsVar, pastHistory, physicalExam, nurseCharting) are not
read. A missing table raises `DataError` naming the path tried; a missing column raises
`DataError` naming the file and the column; a value that does not parse as its type
raises `DataError` naming the file (and polars' message, which names the column).

Cohort (each step counted in ``info["attrition"]``):

1. every unit stay in ``patient`` (one row per ``patientunitstayid``);
2. age known: ``age`` is a string; ``"> 89"`` reads as 90, an integer string as that
   age, empty / anything else is unknown and the stay is excluded;
3. adults: age >= 18;
4. first adult unit stay per patient (``uniquepid``): stays are ordered by
   (``hospitaldischargeyear``, ``patienthealthsystemstayid``, ``unitvisitnumber``)
   and the first is kept. Limits of this rule: eICU has no absolute dates, only the
   discharge YEAR (2014 or 2015); two hospital stays of one patient in the same year
   cannot be put in time order, and ``patienthealthsystemstayid`` is used as a
   deterministic tie-break only (it is not documented to be chronological). Within one
   hospital stay ``unitvisitnumber`` is the documented order of the unit stays. A
   stay with a null discharge year sorts last.

patient_id = ``uniquepid`` (str): one row per patient, the split unit. The sorted ids
are hashed into ``info["fingerprint"]``.

Tasks (NaN = unknown):

=================== =====================================================================
task                definition
=================== =====================================================================
mortality           ``hospitaldischargestatus == "Expired"`` (death in hospital); "Alive"
                    = 0; empty = unknown
icu_readmission     another unit stay with the SAME ``patienthealthsystemstayid`` and a
                    larger ``unitvisitnumber`` (readmission to an ICU in the same
                    hospital stay); 0 otherwise (also for patients who died in the unit)
hospital_readmission another hospital stay (``patienthealthsystemstayid``) of the same
                    ``uniquepid`` ordered after the chosen one by the cohort's ordering
                    rule (later discharge year, or same year and larger id). Unknown
                    when the chosen stay's discharge year is null
=================== =====================================================================

What is and is not identifiable: eICU gives each hospital stay a discharge year and,
per unit stay, offsets relative to that unit admission; there are no dates, so the
time between two hospital stays is unknown: "readmission within 30 days" cannot be
defined, and ``hospital_readmission`` is "any later hospital stay in this database
(2014-2015, same health system)", censored at the end of 2015 and blind to
other health systems. Same-year order is a tie-break, not an observation. Unit
readmission within one hospital stay is identified exactly by ``unitvisitnumber``.

Modalities. A time-series modality is observed when it has at least one usable value
at an offset in [0, ``window_hours`` * 60] minutes; numeric series go through
`featurize.featurize` (8 statistics per variable; times in hours), counts and hashed
buckets are polars aggregations. Hashed buckets: the lower-cased, stripped string is
hashed with CRC-32 (``zlib.crc32`` of its UTF-8 bytes, stable across versions and
platforms) modulo ``N_BUCKETS`` = 16, computed once per unique string.

================ ========================= ==================================================
modality         source                    features (observed when)
================ ========================= ==================================================
demographics     patient                   age, male, admission height / weight, pre-unit
                                           hours in hospital, unittype one-hot
                                           (`UNIT_TYPES`), unitadmitsource one-hot
                                           (`ADMIT_SOURCES`) (always observed; NaN = not
                                           recorded)
vitals_periodic  vitalPeriodic             `PERIODIC_VITALS` x 8 stats (any usable value)
vitals_aperiodic vitalAperiodic            noninvasive systolic / diastolic / mean x 8
lab              lab                       `LAB_NAMES` (labresult) x 8 stats
medication       medication                orders (not cancelled), distinct drugs, 16
                                           hashed drugname buckets (any order in window)
infusion         infusionDrug              records, distinct drugs, 16 hashed drugname
                                           buckets (any record in window)
intake_output    intakeOutput              intaketotal, outputtotal, nettotal x 8 stats
diagnosis        diagnosis                 entries, distinct ICD-9 codes, 16 hashed
                                           diagnosisstring buckets (any entry in window)
treatment_resp   treatment,                treatments, distinct treatments, 16 hashed
                 respiratoryCharting       treatmentstring buckets, respiratory chart rows,
                                           distinct respiratory labels (any row in window)
microbiology     microLab                  culture rows, distinct cultures (offset, site),
                                           positive-organism rows (organism not empty and
                                           not "no growth"), distinct sites
================ ========================= ==================================================

Valid ranges (`VALID_RANGES`) drop impossible values (counted in the info).

Streaming and resumability: every stage (``cohort``, then one per modality) reads its
table with a lazy ``pl.scan_csv`` (projection, filter on the cohort's stays and the
window, streaming collection) and writes ``<stage>.parquet`` into a cache folder
``<cache_dir>/eicu-<key>`` (key = hash of the absolute data directory, the window and
the format version); a rerun reads finished stages from there and never opens their
tables. ``cache_dir=None`` uses a fresh temporary folder (nothing is resumed). Delete
the cache folder when the data change. Numeric time series are streamed into a scratch
parquet file of the in-window rows and featurised in batches of stays of about
`BATCH_VALUES` values, so memory is bounded by the batch, not the table. On a synthetic
eICU-schema directory of 10,000 patients (12,500 unit stays, 6.8 M rows, 5.4 M of them
periodic vitals, 98 MB gzipped) a cold load takes 3.5 s and 0.7 GB peak RSS on 2 cores
(`experiments/bench.py --only=eicu`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import zlib
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl
from absl import logging

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.featurize import ModalityGroup, featurize_batched
from crl_mmnar_jax.data.sources.tables import check_tasks

TASKS = ("mortality", "icu_readmission", "hospital_readmission")
N_BUCKETS = 16
BATCH_VALUES = 2_000_000   # values featurised at once (bounds the long table's memory)
CACHE_VERSION = 1

UNIT_TYPES = ("Cardiac ICU", "CCU-CTICU", "CSICU", "CTICU", "Med-Surg ICU", "MICU",
              "Neuro ICU", "SICU")
ADMIT_SOURCES = ("Emergency Department", "Operating Room", "Floor", "Direct Admit",
                 "Other Hospital", "Recovery Room", "Step-Down Unit (SDU)", "Other ICU")
PERIODIC_VITALS = ("heartrate", "respiration", "sao2", "temperature", "systemicsystolic",
                   "systemicdiastolic", "systemicmean")
APERIODIC_VITALS = ("noninvasivesystolic", "noninvasivediastolic", "noninvasivemean")
LAB_NAMES = ("sodium", "potassium", "chloride", "bicarbonate", "BUN", "creatinine",
             "glucose", "calcium", "magnesium", "phosphate", "Hgb", "Hct", "WBC x 1000",
             "platelets x 1000", "PT - INR", "PTT", "albumin", "total bilirubin", "AST (SGOT)",
             "ALT (SGPT)", "alkaline phos.", "lactate", "pH", "paO2", "paCO2",
             "troponin - I", "anion gap")
IO_VARIABLES = ("intaketotal", "outputtotal", "nettotal")

VALID_RANGES: dict[str, tuple[float, float]] = {
    "heartrate": (10.0, 300.0), "respiration": (1.0, 100.0), "sao2": (10.0, 100.0),
    "temperature": (25.0, 45.0), "systemicsystolic": (20.0, 300.0),
    "systemicdiastolic": (5.0, 250.0), "systemicmean": (10.0, 300.0),
    "noninvasivesystolic": (20.0, 300.0), "noninvasivediastolic": (5.0, 250.0),
    "noninvasivemean": (10.0, 300.0), "sodium": (90.0, 200.0), "potassium": (1.0, 12.0),
    "pH": (6.5, 8.0), "creatinine": (0.05, 30.0), "glucose": (5.0, 2000.0),
    "intaketotal": (0.0, 50000.0), "outputtotal": (0.0, 50000.0),
    "nettotal": (-50000.0, 50000.0),
}
DEMOGRAPHIC_FEATURES = (("age", "male", "height_cm", "weight_kg", "pre_unit_hours")
                        + tuple(f"unittype={u}" for u in UNIT_TYPES)
                        + tuple(f"admitsource={s}" for s in ADMIT_SOURCES))
MODALITIES = ("demographics", "vitals_periodic", "vitals_aperiodic", "lab", "medication",
              "infusion", "intake_output", "diagnosis", "treatment_resp", "microbiology")

_STAY = "patientunitstayid"
_PATIENT_COLUMNS: dict[str, pl.DataType] = {
    _STAY: pl.Int64, "patienthealthsystemstayid": pl.Int64, "uniquepid": pl.String,
    "gender": pl.String, "age": pl.String, "admissionheight": pl.Float64,
    "admissionweight": pl.Float64, "hospitaladmitoffset": pl.Int64,
    "hospitaldischargeyear": pl.Int64, "hospitaldischargestatus": pl.String,
    "unittype": pl.String, "unitadmitsource": pl.String, "unitvisitnumber": pl.Int64,
}


# ----------------------------------------------------------------------------- files


def _table_path(directory: str, name: str) -> str:
  """``<name>.csv.gz`` or ``<name>.csv``; DataError naming both when neither exists."""
  for ext in (".csv.gz", ".csv"):
    path = os.path.join(directory, name + ext)
    if os.path.isfile(path):
      return path
  raise DataError(f"{os.path.join(directory, name)}.csv.gz: required eICU table '{name}' "
                  f"not found (neither .csv.gz nor .csv)")


def _header(path: str) -> list[str]:
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rt", encoding="utf-8", newline="") as f:
      line = f.readline()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}:1: cannot read the header ({e})") from None
  return [c.strip().strip('"') for c in line.rstrip("\r\n").split(",")] if line else []


def _scan(directory: str, name: str, columns: dict[str, pl.DataType]
          ) -> tuple[pl.LazyFrame, str]:
  """Lazy scan of table `name` projected to `columns` (typed), header checked."""
  path = _table_path(directory, name)
  header = _header(path)
  missing = [c for c in columns if c not in header]
  if missing:
    raise DataError(f"{path}:1: eICU table '{name}' lacks column(s) {missing} (header has "
                    f"{header[:20]})")
  lf = pl.scan_csv(path, schema_overrides=columns, infer_schema=False,
                   null_values=[""], raise_if_empty=False)
  return lf.select(list(columns)), path


def _collect(lf: pl.LazyFrame, path: str) -> pl.DataFrame:
  try:
    return lf.collect(engine="streaming")
  except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError) as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DataError(f"{path}: cannot parse a value with its eICU v2.0 type: {msg}") from None


# ----------------------------------------------------------------------------- cohort


def parse_age(age: pl.Expr) -> pl.Expr:
  """eICU's string age as Float64: '> 89' -> 90, integer strings as is, else null."""
  s = age.str.strip_chars()
  return (pl.when(s.str.replace_all(" ", "") == ">89").then(pl.lit(90.0))
          .otherwise(s.cast(pl.Float64, strict=False)))


def _cohort_stage(directory: str) -> tuple[pl.DataFrame, dict[str, Any]]:
  """One row per patient (first adult unit stay) with labels and demographics."""
  lf, path = _scan(directory, "patient", _PATIENT_COLUMNS)
  stays = _collect(lf, path)
  if stays[_STAY].null_count() or stays["uniquepid"].null_count():
    raise DataError(f"{path}: null {_STAY} or uniquepid")
  if stays[_STAY].is_duplicated().any():
    dup = stays.filter(pl.col(_STAY).is_duplicated())[_STAY].head(5).to_list()
    raise DataError(f"{path}: column {_STAY} repeats ids, e.g. {dup}")
  attrition = [{"step": "unit stays in patient table", "stays": len(stays),
                "patients": stays["uniquepid"].n_unique()}]
  stays = stays.with_columns(parse_age(pl.col("age")).alias("age_years"))
  kept = stays.filter(pl.col("age_years").is_not_null())
  attrition.append({"step": "age known", "stays": len(kept),
                    "patients": kept["uniquepid"].n_unique()})
  kept = kept.filter(pl.col("age_years") >= 18)
  attrition.append({"step": "adult (age >= 18)", "stays": len(kept),
                    "patients": kept["uniquepid"].n_unique()})
  order = ["hospitaldischargeyear", "patienthealthsystemstayid", "unitvisitnumber"]
  first = (kept.sort(order, nulls_last=True)
           .group_by("uniquepid", maintain_order=True).first())
  attrition.append({"step": "first unit stay per patient", "stays": len(first),
                    "patients": len(first)})

  # icu_readmission: a larger unitvisitnumber within the same hospital stay (all stays).
  max_visit = stays.group_by("patienthealthsystemstayid").agg(
      pl.col("unitvisitnumber").max().alias("_max_visit"))
  # hospital_readmission: any other hospital stay ordered after the chosen one.
  hosp = stays.group_by("uniquepid", "patienthealthsystemstayid").agg(
      pl.col("hospitaldischargeyear").max().alias("_year"))
  chosen = first.select("uniquepid", pl.col("patienthealthsystemstayid").alias("_hs0"),
                        pl.col("hospitaldischargeyear").alias("_year0"))
  later = (hosp.join(chosen, on="uniquepid")
           .filter(pl.col("patienthealthsystemstayid") != pl.col("_hs0"))
           .with_columns(((pl.col("_year") > pl.col("_year0")) |
                          ((pl.col("_year") == pl.col("_year0")) &
                           (pl.col("patienthealthsystemstayid") > pl.col("_hs0"))) |
                          pl.col("_year").is_null()).alias("_later"))
           .group_by("uniquepid").agg(pl.col("_later").any().alias("_any_later")))
  status = pl.col("hospitaldischargestatus").str.strip_chars()
  first = (first.join(max_visit, on="patienthealthsystemstayid", how="left")
           .join(later, on="uniquepid", how="left")
           .with_columns(
               pl.when(status == "Expired").then(1.0).when(status == "Alive").then(0.0)
               .otherwise(None).alias("mortality"),
               (pl.col("_max_visit") > pl.col("unitvisitnumber")).cast(pl.Float64)
               .alias("icu_readmission"),
               pl.when(pl.col("hospitaldischargeyear").is_null()).then(None)
               .otherwise(pl.col("_any_later").fill_null(False).cast(pl.Float64))
               .alias("hospital_readmission"))
           .sort("uniquepid"))
  gender = pl.col("gender").str.strip_chars()
  demo = [
      pl.col("age_years").alias("age"),
      pl.when(gender == "Male").then(1.0).when(gender == "Female").then(0.0)
      .otherwise(None).alias("male"),
      pl.when(pl.col("admissionheight").is_between(100.0, 250.0))
      .then(pl.col("admissionheight")).alias("height_cm"),
      pl.when(pl.col("admissionweight").is_between(20.0, 350.0))
      .then(pl.col("admissionweight")).alias("weight_kg"),
      (-pl.col("hospitaladmitoffset").cast(pl.Float64) / 60.0).alias("pre_unit_hours"),
  ]
  for col, values, prefix in (("unittype", UNIT_TYPES, "unittype="),
                              ("unitadmitsource", ADMIT_SOURCES, "admitsource=")):
    v = pl.col(col).str.strip_chars()
    demo += [pl.when(v.is_null()).then(None).otherwise((v == u).cast(pl.Float64))
             .alias(prefix + u) for u in values]
  out = first.select(pl.col("uniquepid").alias("patient_id"), pl.col(_STAY), *demo,
                     *(pl.col(t) for t in TASKS))
  return out, {"attrition": attrition}


# ----------------------------------------------------------------------------- modalities


def _in_window(offset: str, window_min: float) -> pl.Expr:
  return pl.col(offset).is_between(0, window_min)


def _series_stage(directory: str, table: str, offset: str, variables: Sequence[str],
                  name: str, stays: np.ndarray, window_min: float, scratch: str,
                  long: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None,
                  columns: dict[str, pl.DataType] | None = None
                  ) -> tuple[pl.DataFrame, dict[str, Any]]:
  """Numeric time series through `featurize`, in bounded memory.

  Pass 1 streams the table (projection, filter on the cohort's stays and the window)
  into a scratch parquet file of the usable rows, still wide; pass 2 featurises
  batches of stays from that file (unpivoting only the batch), so the long
  table never exists for the whole cohort at once (about `BATCH_VALUES` values per
  batch; each batch re-reads the scratch file, projected and filtered).
  """
  cols = columns or {_STAY: pl.Int64, offset: pl.Int64,
                     **{v: pl.Float64 for v in variables}}
  lf, path = _scan(directory, table, cols)
  lf = lf.filter(pl.col(_STAY).is_in(pl.Series(stays).implode()) &
                 _in_window(offset, window_min))
  if long is not None:
    lf = long(lf)
  rows_path = os.path.join(scratch, f".{name}.rows.parquet")
  try:
    lf.sink_parquet(rows_path)
  except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError) as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DataError(f"{path}: cannot parse a value with its eICU v2.0 type: {msg}") from None
  group = [ModalityGroup(name, tuple(variables))]
  # Batches: contiguous ranges of sorted stay ids holding about BATCH_VALUES values
  # each (ranges let parquet statistics skip row groups when the table is ordered).
  sorted_S = np.sort(stays)
  per_stay = pl.scan_parquet(rows_path).group_by(_STAY).len().collect()
  n_rows_S = (pl.DataFrame({_STAY: sorted_S})
              .join(per_stay, on=_STAY, how="left")["len"].fill_null(0).to_numpy())
  values_S = n_rows_S.astype(np.int64) * (1 if long is not None else len(variables))
  batch_S = (np.cumsum(values_S) - values_S) // BATCH_VALUES

  def load_batch(batch: np.ndarray) -> pl.DataFrame:
    blf = pl.scan_parquet(rows_path).filter(
        pl.col(_STAY).is_between(int(batch[0]), int(batch[-1])) &
        pl.col(_STAY).is_in(pl.Series(batch).implode()))
    if long is None:
      blf = blf.unpivot(index=[_STAY, offset], on=list(variables),
                        variable_name="variable", value_name="value")
    return blf.filter(pl.col("value").is_not_null()).select(
        pl.col(_STAY).alias("stay_id"),
        (pl.col(offset).cast(pl.Float64) / 60.0).alias("time"),
        "variable", pl.col("value").cast(pl.Float64)).collect()

  df, report = featurize_batched(load_batch, group, sorted_S, batch_S, _STAY,
                                 window=(0.0, window_min / 60.0), valid_ranges=VALID_RANGES,
                                 out_of_range="drop", unknown_variables="ignore")
  os.remove(rows_path)
  df = df[np.searchsorted(sorted_S, stays)]          # sorted order -> `stays` order
  return df, report


def bucket(text: str) -> int:
  """Stable hash bucket of a string: CRC-32 of its lower-cased stripped UTF-8 bytes."""
  return zlib.crc32(text.strip().lower().encode("utf-8")) % N_BUCKETS


def _hashed_counts(rows: pl.DataFrame, key: str, prefix: str) -> pl.DataFrame:
  """(stay, key) rows -> per stay counts in N_BUCKETS hashed buckets (wide)."""
  keys = rows.select(pl.col(key).drop_nulls().unique())[key].to_list()
  mapping = pl.DataFrame({key: keys, "_b": [bucket(k) for k in keys]},
                         schema={key: pl.String, "_b": pl.Int64})
  counts = rows.join(mapping, on=key, how="inner").group_by(_STAY, "_b").len()
  return counts.group_by(_STAY).agg(
      (pl.col("len").filter(pl.col("_b") == b).sum().cast(pl.Float64)
       .alias(f"{prefix}_bucket{b:02d}")) for b in range(N_BUCKETS))


def _to_stays(stays: np.ndarray, parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
  """Left-joins per-stay feature frames onto `stays`; present = any row; missing = 0."""
  df = pl.DataFrame({_STAY: stays})
  flags = []
  for k, p in enumerate(parts):
    flag = f"_has{k}"
    df = df.join(p.with_columns(pl.lit(True).alias(flag)), on=_STAY, how="left")
    flags.append(flag)
  feat_cols = [c for c in df.columns if c != _STAY and c not in flags]
  present = pl.any_horizontal(pl.col(f).fill_null(False) for f in flags)
  return df.select(_STAY, present.alias("present"),
                   *(pl.col(c).cast(pl.Float64).fill_null(0.0) for c in feat_cols))


def _events(directory: str, table: str, columns: dict[str, pl.DataType], offset: str,
            stays: np.ndarray, window_min: float,
            extra: pl.Expr | None = None) -> pl.DataFrame:
  lf, path = _scan(directory, table, columns)
  cond = pl.col(_STAY).is_in(pl.Series(stays).implode()) & _in_window(offset, window_min)
  if extra is not None:
    cond = cond & extra
  return _collect(lf.filter(cond), path)


def _medication(directory, stays, window_min):
  rows = _events(directory, "medication",
                 {_STAY: pl.Int64, "drugorderoffset": pl.Int64,
                  "drugordercancelled": pl.String, "drugname": pl.String},
                 "drugorderoffset", stays, window_min,
                 pl.col("drugordercancelled").fill_null("No").str.strip_chars() != "Yes")
  rows = rows.with_columns(pl.col("drugname").str.strip_chars().str.to_lowercase())
  counts = rows.group_by(_STAY).agg(pl.len().cast(pl.Float64).alias("med_orders"),
                                    pl.col("drugname").n_unique().alias("med_distinct"))
  return _to_stays(stays, [counts, _hashed_counts(rows, "drugname", "med")]), {
      "rows_in_window": len(rows)}


def _infusion(directory, stays, window_min):
  rows = _events(directory, "infusionDrug",
                 {_STAY: pl.Int64, "infusionoffset": pl.Int64, "drugname": pl.String},
                 "infusionoffset", stays, window_min)
  rows = rows.with_columns(pl.col("drugname").str.strip_chars().str.to_lowercase())
  counts = rows.group_by(_STAY).agg(pl.len().cast(pl.Float64).alias("inf_records"),
                                    pl.col("drugname").n_unique().alias("inf_distinct"))
  return _to_stays(stays, [counts, _hashed_counts(rows, "drugname", "inf")]), {
      "rows_in_window": len(rows)}


def _diagnosis(directory, stays, window_min):
  rows = _events(directory, "diagnosis",
                 {_STAY: pl.Int64, "diagnosisoffset": pl.Int64,
                  "diagnosisstring": pl.String, "icd9code": pl.String},
                 "diagnosisoffset", stays, window_min)
  counts = rows.group_by(_STAY).agg(
      pl.len().cast(pl.Float64).alias("dx_entries"),
      pl.col("icd9code").drop_nulls().n_unique().alias("dx_distinct_icd9"))
  return _to_stays(stays, [counts, _hashed_counts(rows, "diagnosisstring", "dx")]), {
      "rows_in_window": len(rows)}


def _treatment_resp(directory, stays, window_min):
  tr = _events(directory, "treatment",
               {_STAY: pl.Int64, "treatmentoffset": pl.Int64, "treatmentstring": pl.String},
               "treatmentoffset", stays, window_min)
  rc = _events(directory, "respiratoryCharting",
               {_STAY: pl.Int64, "respchartoffset": pl.Int64,
                "respchartvaluelabel": pl.String}, "respchartoffset", stays, window_min)
  tr_counts = tr.group_by(_STAY).agg(
      pl.len().cast(pl.Float64).alias("tx_entries"),
      pl.col("treatmentstring").n_unique().alias("tx_distinct"))
  rc_counts = rc.group_by(_STAY).agg(
      pl.len().cast(pl.Float64).alias("resp_rows"),
      pl.col("respchartvaluelabel").n_unique().alias("resp_distinct_labels"))
  parts = [tr_counts, _hashed_counts(tr, "treatmentstring", "tx"), rc_counts]
  return _to_stays(stays, parts), {"treatment_rows_in_window": len(tr),
                                   "respiratory_rows_in_window": len(rc)}


def _microbiology(directory, stays, window_min):
  rows = _events(directory, "microLab",
                 {_STAY: pl.Int64, "culturetakenoffset": pl.Int64,
                  "culturesite": pl.String, "organism": pl.String},
                 "culturetakenoffset", stays, window_min)
  org = pl.col("organism").str.strip_chars().str.to_lowercase()
  positive = org.is_not_null() & (org != "") & ~org.str.contains("no growth")
  counts = rows.group_by(_STAY).agg(
      pl.len().cast(pl.Float64).alias("micro_rows"),
      pl.struct("culturetakenoffset", "culturesite").n_unique().alias("micro_cultures"),
      positive.sum().cast(pl.Float64).alias("micro_positive"),
      pl.col("culturesite").n_unique().alias("micro_sites"))
  return _to_stays(stays, [counts]), {"rows_in_window": len(rows)}


def _lab_long(lf: pl.LazyFrame) -> pl.LazyFrame:
  return lf.filter(pl.col("labname").str.strip_chars().is_in(list(LAB_NAMES))).select(
      _STAY, "labresultoffset", pl.col("labname").str.strip_chars().alias("variable"),
      pl.col("labresult").alias("value"))


def _modality_stage(name: str, directory: str, stays: np.ndarray, window_min: float,
                    scratch: str) -> tuple[pl.DataFrame, dict[str, Any]]:
  """One modality's per-stay frame (stay id, present, features) and its report."""
  if name == "vitals_periodic":
    return _series_stage(directory, "vitalPeriodic", "observationoffset", PERIODIC_VITALS,
                         name, stays, window_min, scratch)
  if name == "vitals_aperiodic":
    return _series_stage(directory, "vitalAperiodic", "observationoffset",
                         APERIODIC_VITALS, name, stays, window_min, scratch)
  if name == "lab":
    return _series_stage(directory, "lab", "labresultoffset", LAB_NAMES, name, stays,
                         window_min, scratch, long=_lab_long,
                         columns={_STAY: pl.Int64, "labresultoffset": pl.Int64,
                                  "labname": pl.String, "labresult": pl.Float64})
  if name == "intake_output":
    return _series_stage(directory, "intakeOutput", "intakeoutputoffset", IO_VARIABLES,
                         name, stays, window_min, scratch)
  fn = {"medication": _medication, "infusion": _infusion, "diagnosis": _diagnosis,
        "treatment_resp": _treatment_resp, "microbiology": _microbiology}[name]
  return fn(directory, stays, window_min)


# ----------------------------------------------------------------------------- cache


def _write_atomic(df: pl.DataFrame, info: dict, folder: str, stage: str) -> None:
  tmp = os.path.join(folder, f".{stage}.parquet.tmp")
  df.write_parquet(tmp)
  with open(os.path.join(folder, f".{stage}.json.tmp"), "w") as f:
    json.dump(info, f)
  os.replace(os.path.join(folder, f".{stage}.json.tmp"),
             os.path.join(folder, f"{stage}.json"))
  os.replace(tmp, os.path.join(folder, f"{stage}.parquet"))   # parquet last: the marker


def _stage(folder: str, stage: str, compute: Callable[[], tuple[pl.DataFrame, dict]],
           ran: list[str]) -> tuple[pl.DataFrame, dict]:
  path = os.path.join(folder, f"{stage}.parquet")
  if os.path.isfile(path) and os.path.isfile(os.path.join(folder, f"{stage}.json")):
    with open(os.path.join(folder, f"{stage}.json")) as f:
      return pl.read_parquet(path), json.load(f)
  df, info = compute()
  _write_atomic(df, info, folder, stage)
  ran.append(stage)
  return df, info


def _cache_folder(directory: str, window_hours: float, cache_dir: str | None) -> str:
  if cache_dir is None:
    return tempfile.mkdtemp(prefix="crl_eicu_")
  key = hashlib.sha256(json.dumps(
      [os.path.abspath(directory), float(window_hours), CACHE_VERSION]).encode()
  ).hexdigest()[:12]
  folder = os.path.join(os.fspath(cache_dir), f"eicu-{key}")
  os.makedirs(folder, exist_ok=True)
  return folder


# ----------------------------------------------------------------------------- loading


def load_eicu(directory: str | os.PathLike, *,
              tasks: Sequence[str] = ("mortality", "icu_readmission"),
              window_hours: float = 24.0,
              cache_dir: str | os.PathLike | None = None) -> tuple[Cohort, dict[str, Any]]:
  """Reads the raw eICU-CRD v2.0 tables into a validated `Cohort` plus a load report.

  Args:
    directory: the folder holding ``patient.csv.gz`` and the other tables (read only).
    tasks: any of `TASKS`, each once, in this order.
    window_hours: events at offsets 0 <= offset <= window_hours * 60 minutes count.
    cache_dir: where stage parquet files are kept for resuming (a subfolder per data
      directory and window); None = a fresh temporary folder.

  Returns:
    (cohort, info). Modalities: `MODALITIES` (demographics always observed);
    patient_id = uniquepid (str), rows sorted by it. ``info``: ``directory``,
    ``cache_folder``, ``stages_run`` (stages computed by this call, the others came
    from the cache), ``attrition`` (list of {step, stays, patients}),
    ``n_patients``, ``fingerprint`` (`data.fingerprint` of the ids),
    ``patientunitstayid`` ((N,) the chosen unit stay per row), ``observed_fraction``,
    ``labels_known`` and ``positives`` per task, and ``modalities`` (per-stage
    reports: rows read, values used, out-of-range values dropped).

  Raises:
    DataError: a missing table or column, unparsable values, bad arguments.
  """
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise DataError(f"{directory}: eICU-CRD directory not found")
  tasks = check_tasks(tasks, TASKS)
  if not window_hours > 0:
    raise DataError(f"window_hours must be positive, got {window_hours}")
  window_min = float(window_hours) * 60.0
  folder = _cache_folder(directory, window_hours, cache_dir)
  ran: list[str] = []
  base, base_info = _stage(folder, "cohort", lambda: _cohort_stage(directory), ran)
  if len(base) == 0:
    raise DataError(f"{directory}: no adult unit stay with a known age in the patient "
                    f"table")
  stays = base[_STAY].to_numpy().astype(np.int64)
  n = len(stays)

  features = [base.select(DEMOGRAPHIC_FEATURES).to_numpy().astype(np.float32)]
  names = [DEMOGRAPHIC_FEATURES]
  present = [np.ones(n, dtype=bool)]
  reports: dict[str, Any] = {}
  for name in MODALITIES[1:]:
    df, rep = _stage(folder, name,
                     lambda name=name: _modality_stage(name, directory, stays, window_min,
                                                    folder),
                     ran)
    if df[_STAY].to_numpy().tolist() != stays.tolist():
      raise DataError(f"{folder}/{name}.parquet: cached stage does not match the cohort; "
                      f"delete the cache folder {folder}")
    cols = [c for c in df.columns if c not in (_STAY, "present")]
    p = df["present"].to_numpy().astype(bool)
    x = df.select(cols).to_numpy().astype(np.float32)
    x[~p] = 0.0
    features.append(np.ascontiguousarray(x))
    names.append(tuple(cols))
    present.append(p)
    reports[name] = rep
  present_NxM = np.stack(present, axis=1)
  labels_NxT = base.select(tasks).to_numpy().astype(np.float32)
  patient_id = base["patient_id"].to_numpy().astype(str)
  cohort = Cohort(patient_id=patient_id, features=tuple(features), present=present_NxM,
                  labels=labels_NxT, modality_names=MODALITIES, task_names=tuple(tasks),
                  feature_names=tuple(names))
  try:
    cohort.validate(directory)
  except ValueError as e:
    raise DataError(str(e)) from None
  ids = np.sort(patient_id)
  info = {
      "directory": directory,
      "cache_folder": folder,
      "stages_run": ran,
      "attrition": base_info["attrition"],
      "n_patients": n,
      "fingerprint": hashlib.sha256("\n".join(ids.tolist()).encode()).hexdigest()[:16],
      "patientunitstayid": stays,
      "observed_fraction": {m: float(present_NxM[:, j].mean())
                            for j, m in enumerate(MODALITIES)},
      "labels_known": {t: int((~np.isnan(labels_NxT[:, j])).sum())
                       for j, t in enumerate(tasks)},
      "positives": {t: int(np.nansum(labels_NxT[:, j])) for j, t in enumerate(tasks)},
      "modalities": reports,
  }
  logging.info("eICU: %d patients, stages run %s, observed fraction %s", n, ran,
               {m: round(f, 3) for m, f in info["observed_fraction"].items()})
  return cohort, info
