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
`BATCH_VALUES` values, so memory is bounded by the batch, not the table.
On a synthetic eICU-schema directory of 10,000 patients (12,500 unit stays, 6.8 M rows,
5.4 M of them periodic vitals, 98 MB gzipped) a cold load takes 3.5 s and 0.7 GB peak
RSS on 2 cores (`experiments/bench.py --only=eicu`).

Code: the cohort and `load_eicu` here, the modality stages in `eicu_stages`, the CSV
reading and the stage cache in `data.io`.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Sequence

import numpy as np
import polars as pl
from absl import logging

from crl_mmnar_jax.cohort import Cohort, fingerprint
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.io import cache_folder, cached_stage, check_tasks
from crl_mmnar_jax.data.sources.eicu_stages import (
  APERIODIC_VITALS,
  IO_VARIABLES,
  LAB_NAMES,
  N_BUCKETS,
  PERIODIC_VITALS,
  STAY,
  VALID_RANGES,
  bucket,
  collect,
  modality_stage,
  scan,
)

__all__ = ["TASKS", "MODALITIES", "UNIT_TYPES", "ADMIT_SOURCES", "PERIODIC_VITALS",
           "APERIODIC_VITALS", "LAB_NAMES", "IO_VARIABLES", "VALID_RANGES",
           "DEMOGRAPHIC_FEATURES", "N_BUCKETS", "BATCH_VALUES", "bucket", "parse_age",
           "load_eicu"]

TASKS = ("mortality", "icu_readmission", "hospital_readmission")
BATCH_VALUES = 2_000_000   # values featurised at once (bounds the long table's memory)
CACHE_VERSION = 1

UNIT_TYPES = ("Cardiac ICU", "CCU-CTICU", "CSICU", "CTICU", "Med-Surg ICU", "MICU",
              "Neuro ICU", "SICU")
ADMIT_SOURCES = ("Emergency Department", "Operating Room", "Floor", "Direct Admit",
                 "Other Hospital", "Recovery Room", "Step-Down Unit (SDU)", "Other ICU")
DEMOGRAPHIC_FEATURES = (("age", "male", "height_cm", "weight_kg", "pre_unit_hours")
                        + tuple(f"unittype={u}" for u in UNIT_TYPES)
                        + tuple(f"admitsource={s}" for s in ADMIT_SOURCES))
MODALITIES = ("demographics", "vitals_periodic", "vitals_aperiodic", "lab", "medication",
              "infusion", "intake_output", "diagnosis", "treatment_resp", "microbiology")

_PATIENT_COLUMNS: dict[str, pl.DataType] = {
    STAY: pl.Int64, "patienthealthsystemstayid": pl.Int64, "uniquepid": pl.String,
    "gender": pl.String, "age": pl.String, "admissionheight": pl.Float64,
    "admissionweight": pl.Float64, "hospitaladmitoffset": pl.Int64,
    "hospitaldischargeyear": pl.Int64, "hospitaldischargestatus": pl.String,
    "unittype": pl.String, "unitadmitsource": pl.String, "unitvisitnumber": pl.Int64,
}


# ----------------------------------------------------------------------------- cohort


def parse_age(age: pl.Expr) -> pl.Expr:
  """eICU's string age as Float64: '> 89' -> 90, integer strings as is, else null."""
  s = age.str.strip_chars()
  return (pl.when(s.str.replace_all(" ", "") == ">89").then(pl.lit(90.0))
          .otherwise(s.cast(pl.Float64, strict=False)))


def _cohort_stage(directory: str) -> tuple[pl.DataFrame, dict[str, Any]]:
  """One row per patient (first adult unit stay) with labels and demographics."""
  lf, path = scan(directory, "patient", _PATIENT_COLUMNS)
  stays = collect(lf, path)
  if stays[STAY].null_count() or stays["uniquepid"].null_count():
    raise DataError(f"{path}: null {STAY} or uniquepid")
  if stays[STAY].is_duplicated().any():
    dup = stays.filter(pl.col(STAY).is_duplicated())[STAY].head(5).to_list()
    raise DataError(f"{path}: column {STAY} repeats ids, e.g. {dup}")
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
  out = first.select(pl.col("uniquepid").alias("patient_id"), pl.col(STAY), *demo,
                     *(pl.col(t) for t in TASKS))
  return out, {"attrition": attrition}


def _cache_key(directory: str, window_hours: float) -> str:
  return hashlib.sha256(json.dumps(
      [os.path.abspath(directory), float(window_hours), CACHE_VERSION]).encode()
  ).hexdigest()[:12]


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
    ``n_patients``, ``fingerprint`` (`cohort.fingerprint` of the ids),
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
  folder = cache_folder(cache_dir, "eicu", _cache_key(directory, window_hours))
  ran: list[str] = []
  base, base_info = cached_stage(folder, "cohort", lambda: _cohort_stage(directory), ran)
  if len(base) == 0:
    raise DataError(f"{directory}: no adult unit stay with a known age in the patient "
                    f"table")
  stays = base[STAY].to_numpy().astype(np.int64)
  n = len(stays)

  features = [base.select(DEMOGRAPHIC_FEATURES).to_numpy().astype(np.float32)]
  names = [DEMOGRAPHIC_FEATURES]
  present = [np.ones(n, dtype=bool)]
  reports: dict[str, Any] = {}
  for name in MODALITIES[1:]:
    df, rep = cached_stage(folder, name,
                           lambda name=name: modality_stage(
                               name, directory, stays, window_min, folder, BATCH_VALUES),
                           ran)
    if df[STAY].to_numpy().tolist() != stays.tolist():
      raise DataError(f"{folder}/{name}.parquet: cached stage does not match the cohort; "
                      f"delete the cache folder {folder}")
    cols = [c for c in df.columns if c not in (STAY, "present")]
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
  info = {
      "directory": directory,
      "cache_folder": folder,
      "stages_run": ran,
      "attrition": base_info["attrition"],
      "n_patients": n,
      "fingerprint": fingerprint(patient_id),
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
