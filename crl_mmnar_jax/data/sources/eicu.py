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
                    hospitaldischargeoffset int, hospitaldischargestatus str,
                    unittype str, unitadmitsource str, unitvisitnumber int,
                    unitdischargeoffset int, unitdischargestatus str
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
microLab            patientunitstayid, culturetakenoffset int, culturesite str
=================== ======================================================================

The optional tables (apacheApsVar, pastHistory, physicalExam, nurseCharting) are not
read. A missing table raises `DataError` naming the path tried; a missing column raises
`DataError` naming the file and the column.

Imperfect rows (the row policy of `data.row_policy`): by default skipped and counted per
file and per problem in ``info["skipped"]`` (kept with each cached stage): values that
do not parse as their column's type (counted in one more pass over that table, then
read as null, so their row drops out wherever the value is needed), patient rows with a
null ``patientunitstayid`` or ``uniquepid``, and every row of a repeated
``patientunitstayid``. ``strict=True`` raises `DataError` at the first of them instead
(naming the file; for a value that does not parse, polars' message names the column).

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
   stay with a null discharge year sorts last;
5. in the unit and alive at the end of the feature window: ``unitdischargeoffset >
   window_hours * 60`` and no hospital discharge (or death) at or before it
   (``hospitaldischargeoffset``, when known). A stay that ends inside the window would
   have a series that stops at its discharge or death: a death at hour 10 would be
   predicted from ten hours that end with it. The index stay is chosen first (step 4),
   so a patient whose first stay is short is excluded, not re-indexed on a later stay.

patient_id = ``uniquepid`` (str): one row per patient, the split unit. The sorted ids
are hashed into ``info["fingerprint"]``.

Tasks (NaN = unknown):

=================== =====================================================================
task                definition
=================== =====================================================================
mortality           ``hospitaldischargestatus == "Expired"`` (death in hospital); "Alive"
                    = 0; empty = unknown
icu_readmission     a return to an ICU in the same hospital stay after a GAP of at least
                    `ICU_TRANSFER_GAP_HOURS` = 4 h. Unit stays are placed in time from
                    the hospital admission: a unit stay runs from
                    ``-hospitaladmitoffset`` to ``-hospitaladmitoffset +
                    unitdischargeoffset`` minutes. The index stay and the later unit
                    stays of its hospital stay that start less than 4 h after the
                    latest end so far (a direct unit-to-unit transfer, an overlap, a
                    trip to theatre) form one episode; 1 when another unit stay starts
                    4 h or more after the episode ends, else 0. Unknown (NaN) when the
                    episode ends with a death in the unit (``unitdischargestatus`` =
                    "Expired"): that patient cannot be readmitted. A death on the ward
                    after the unit stay is 0 (not censored)
hospital_readmission another hospital stay (``patienthealthsystemstayid``) of the same
                    ``uniquepid`` ordered after the chosen one by the cohort's ordering
                    rule (a later discharge year, or the same year and a larger id; a
                    stay with a null discharge year is NOT later). Unknown (NaN) when
                    the chosen stay's discharge year is null, when the patient died in
                    the chosen hospital stay (even if a later stay is recorded), and
                    when its discharge status is unknown unless a later stay is there
=================== =====================================================================

What is and is not identifiable: eICU gives each hospital stay a discharge year and,
per unit stay, offsets relative to that unit admission; there are no dates, so the
time between two hospital stays is unknown: "readmission within 30 days" cannot be
defined, and ``hospital_readmission`` is "any later hospital stay in this database
(2014-2015, same health system)", censored at the end of 2015 and blind to
other health systems. Same-year order is a tie-break, not an observation. Unit stays
within one hospital stay are placed exactly by their offsets.

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
microbiology     microLab                  cultures TAKEN in the window (distinct offset,
                                           site) and distinct sites: what is known when a
                                           culture is ordered. Organisms and
                                           sensitivities arrive days later (and make one
                                           row per organism and antibiotic), so neither
                                           they nor the row count are read
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
RSS on 2 cores (`python -m experiments.bench --only=eicu`).

Code: the cohort and `load_eicu` here, the modality stages in `eicu_stages`, the CSV
reading and the stage cache in `data.io`.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
import polars as pl
from absl import logging

from crl_mmnar_jax.cohort import Cohort, fingerprint
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.io import cache_folder, cached_stage, check_tasks
from crl_mmnar_jax.data.loaded import Keep, LoadedData, csv_list, strict_rows, summary
from crl_mmnar_jax.data.row_policy import CsvTables, RowProblems
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
SOURCE_URL = "https://physionet.org/files/eicu-crd/2.0"   # credentialed access
BATCH_VALUES = 2_000_000   # values featurised at once (bounds the long table's memory)
ICU_TRANSFER_GAP_HOURS = 4.0   # unit stays closer than this are one episode (a transfer)
CACHE_VERSION = 2

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
    "unitdischargeoffset": pl.Int64, "unitdischargestatus": pl.String,
    "hospitaldischargeoffset": pl.Int64,
}


# ----------------------------------------------------------------------------- cohort


def parse_age(age: pl.Expr) -> pl.Expr:
  """eICU's string age as Float64: '> 89' -> 90, integer strings as is, else null."""
  s = age.str.strip_chars()
  return (pl.when(s.str.replace_all(" ", "") == ">89").then(pl.lit(90.0))
          .otherwise(s.cast(pl.Float64, strict=False)))


def _patient_table(directory: str, tables: CsvTables) -> pl.DataFrame:
  """The patient table; rows with a null unit stay id or uniquepid and every row of a
  repeated unit stay id are skipped and counted (strict: DataError)."""
  lf, path = scan(tables, directory, "patient", _PATIENT_COLUMNS)
  stays = collect(lf, path)
  null = stays[STAY].is_null() | stays["uniquepid"].is_null()
  tables.problems.found(path, f"null {STAY} or uniquepid (row skipped)", int(null.sum()),
                        f"{path}: null {STAY} or uniquepid in {int(null.sum())} row(s)")
  stays = stays.filter(~null)
  rep = stays[STAY].is_duplicated()
  tables.problems.found(path, f"{STAY} repeated (every row of that stay skipped)",
                        int(rep.sum()), lambda: f"{path}: column {STAY} repeats "
                                                f"{stays.filter(rep)[STAY].n_unique()} id(s)")
  return stays.filter(~rep)


def _icu_readmission(stays: pl.DataFrame, first: pl.DataFrame) -> pl.DataFrame:
  """uniquepid -> icu_readmission (module docstring): the index unit stay and the unit
  stays of its hospital stay that follow it within `ICU_TRANSFER_GAP_HOURS` (chained)
  form one episode; 1 when a unit stay of that hospital stay starts at least the gap
  after the episode's end, NaN when the episode ends in a death in the unit."""
  gap = ICU_TRANSFER_GAP_HOURS * 60.0
  start = -pl.col("hospitaladmitoffset").cast(pl.Float64)     # minutes from hospital admit
  end = start + pl.col("unitdischargeoffset").cast(pl.Float64)
  index = first.select("uniquepid", "patienthealthsystemstayid",
                       start.alias("_start0"), pl.col("unitvisitnumber").alias("_visit0"))
  s = (stays.join(index, on="patienthealthsystemstayid", how="inner")
       .with_columns(start.alias("_start"), end.alias("_end"))
       .filter((pl.col("_start") > pl.col("_start0"))
               | ((pl.col("_start") == pl.col("_start0"))
                  & (pl.col("unitvisitnumber") >= pl.col("_visit0"))))
       .sort("uniquepid", "_start", "unitvisitnumber"))
  prev_end = pl.col("_end").cum_max().shift(1).over("uniquepid")
  s = s.with_columns(((pl.col("_start") - prev_end) >= gap).fill_null(False).alias("_new"))
  s = s.with_columns(pl.col("_new").cast(pl.Int32).cum_sum().over("uniquepid").alias("_ep"))
  died = (pl.col("unitdischargestatus").str.strip_chars() == "Expired").fill_null(False)
  per = s.group_by("uniquepid").agg(pl.col("_new").any().alias("_readmit"),
                                    (died & (pl.col("_ep") == 0)).any().alias("_died"))
  return per.select("uniquepid", pl.when(pl.col("_died")).then(None)
                    .otherwise(pl.col("_readmit").cast(pl.Float64)).alias("icu_readmission"))


def _cohort_stage(directory: str, window_min: float, tables: CsvTables
                  ) -> tuple[pl.DataFrame, dict[str, Any]]:
  """One row per patient (first adult unit stay) with labels and demographics."""
  stays = _patient_table(directory, tables)
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
  beyond = ((pl.col("unitdischargeoffset") > window_min)
            & (pl.col("hospitaldischargeoffset").is_null()
               | (pl.col("hospitaldischargeoffset") > window_min))).fill_null(False)
  first = first.filter(beyond)
  attrition.append({"step": f"in the unit and alive after the {window_min / 60:g} h "
                            f"feature window (unit and hospital discharge or death later)",
                    "stays": len(first), "patients": len(first)})

  # hospital_readmission: another hospital stay ordered after the chosen one (a null
  # discharge year is not "later"); unknown after a death (or unknown status) in it.
  hosp = stays.group_by("uniquepid", "patienthealthsystemstayid").agg(
      pl.col("hospitaldischargeyear").max().alias("_year"))
  chosen = first.select("uniquepid", pl.col("patienthealthsystemstayid").alias("_hs0"),
                        pl.col("hospitaldischargeyear").alias("_year0"))
  later = (hosp.join(chosen, on="uniquepid")
           .filter(pl.col("patienthealthsystemstayid") != pl.col("_hs0"))
           .with_columns(((pl.col("_year") > pl.col("_year0")) |
                          ((pl.col("_year") == pl.col("_year0")) &
                           (pl.col("patienthealthsystemstayid") > pl.col("_hs0"))))
                         .fill_null(False).alias("_later"))
           .group_by("uniquepid").agg(pl.col("_later").any().alias("_any_later")))
  status = pl.col("hospitaldischargestatus").str.strip_chars()
  any_later = pl.col("_any_later").fill_null(False)
  first = (first.join(_icu_readmission(stays, first), on="uniquepid", how="left")
           .join(later, on="uniquepid", how="left")
           .with_columns(
               pl.when(status == "Expired").then(1.0).when(status == "Alive").then(0.0)
               .otherwise(None).alias("mortality"),
               pl.when(pl.col("hospitaldischargeyear").is_null()
                       | (status == "Expired").fill_null(False)).then(None)
               .when(any_later).then(1.0)
               .when((status == "Alive").fill_null(False)).then(0.0)
               .otherwise(None).alias("hospital_readmission"))
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


def _policy_stage(strict: bool, compute: Callable[[CsvTables], tuple[pl.DataFrame, dict]]
                  ) -> tuple[pl.DataFrame, dict]:
  """A stage run under the row policy; its report gains ``skipped`` (rows skipped per
  file and problem), so that a stage read back from the cache still reports them."""
  tables = CsvTables(RowProblems(strict))
  df, report = tables.run(lambda: compute(tables))
  return df, {**report, "skipped": tables.problems.counts}


def _cache_key(directory: str, window_hours: float) -> str:
  return hashlib.sha256(json.dumps(
      [os.path.abspath(directory), float(window_hours), ICU_TRANSFER_GAP_HOURS,
       CACHE_VERSION]).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- loading


def load_eicu(directory: str | os.PathLike, *,
              tasks: Sequence[str] = ("mortality", "icu_readmission"),
              window_hours: float = 24.0,
              cache_dir: str | os.PathLike | None = None,
              strict: bool = False) -> tuple[Cohort, dict[str, Any]]:
  """Reads the raw eICU-CRD v2.0 tables into a validated `Cohort` plus a load report.

  Args:
    directory: the folder holding ``patient.csv.gz`` and the other tables (read only).
    tasks: any of `TASKS`, each once, in this order.
    window_hours: events at offsets 0 <= offset <= window_hours * 60 minutes count.
    cache_dir: where stage parquet files are kept for resuming (a subfolder per data
      directory and window); None = a fresh temporary folder.
    strict: refuse the first imperfect row instead of skipping and counting it.

  Returns:
    (cohort, info). Modalities: `MODALITIES` (demographics always observed);
    patient_id = uniquepid (str), rows sorted by it. ``info``: ``directory``,
    ``cache_folder``, ``stages_run`` (stages computed by this call, the others came
    from the cache), ``attrition`` (list of {step, stays, patients}),
    ``n_patients``, ``fingerprint`` (`cohort.fingerprint` of the ids),
    ``patientunitstayid`` ((N,) the chosen unit stay per row), ``observed_fraction``,
    ``labels_known`` and ``positives`` per task, ``modalities`` (per-stage
    reports: rows read, values used, out-of-range values dropped), and ``skipped``
    (`RowProblems.report`: rows skipped per file and per problem).

  Raises:
    DataError: a missing table or column, bad arguments; with ``strict``, also every
      imperfect row (see the module docstring).
  """
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise DataError(f"{directory}: no such folder (eICU-CRD v2.0, data.dir); it is "
                    f"credentialed: download it with `wget -r -N -c -np --user USER "
                    f"--ask-password {SOURCE_URL}/` (see docs/data.md)")
  tasks = check_tasks(tasks, TASKS)
  if not window_hours > 0:
    raise DataError(f"window_hours must be positive, got {window_hours}")
  window_min = float(window_hours) * 60.0
  folder = cache_folder(cache_dir, "eicu", _cache_key(directory, window_hours))
  ran: list[str] = []
  base, base_info = cached_stage(
      folder, "cohort",
      lambda: _policy_stage(strict, lambda t: _cohort_stage(directory, window_min, t)), ran)
  problems = RowProblems(strict)
  problems.merge(base_info["skipped"])
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
                           lambda name=name: _policy_stage(strict, lambda t: modality_stage(
                               name, directory, stays, window_min, folder, BATCH_VALUES, t)),
                           ran)
    problems.merge(rep["skipped"])
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
    reports[name] = {k: v for k, v in rep.items() if k != "skipped"}
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
      "skipped": problems.report(),
  }
  problems.log(f"eICU {directory}")
  logging.info("eICU: %d patients, stages run %s, observed fraction %s", n, ran,
               {m: round(f, 3) for m, f in info["observed_fraction"].items()})
  return cohort, info


def from_config(config: ml_collections.ConfigDict, keep: Keep | None = None) -> LoadedData:
  """`data.name = "eicu"`: the whole cohort of `data.dir` (`data.load` applies `keep`)."""
  d = config.data
  if not d.dir:
    raise DataError("--config=eicu needs --config.data.dir=DIR (the eICU-CRD v2.0 tables)")
  cohort, info = load_eicu(d.dir, tasks=tuple(csv_list(d.tasks)),
                           window_hours=float(d.window_hours),
                           cache_dir=str(d.cache_dir) or None, strict=strict_rows(d))
  return LoadedData(cohort, None, summary(info))
