"""Reading MIMIC-IV from a MEDS event table (as the MIMIC-IV MEDS ETL writes it) into
the canonical frames of `frames`.

The codes read and how admissions, discharges and ICU stays are paired are described
in the docstring of `crl_mmnar_jax.data.sources.mimic`. The table is scanned lazily
(one parquet file, or every ``*.parquet`` file under a folder); only the events of the
cohort's subjects inside their index window are collected.
"""

from __future__ import annotations

import os

import polars as pl

from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.row_policy import CsvTables, RowProblems
from crl_mmnar_jax.data.sources.mimic.frames import clean, collect, icd, in_window, subjects_in
from crl_mmnar_jax.data.sources.mimic.schema import (
  LAB_ITEMS,
  MEDS_COLUMNS,
  MEDS_VALUE_COLUMNS,
  TIMESTAMP,
  VITAL_ITEMS,
)

DEMO_MEDS_URL = "https://physionet.org/files/mimic-iv-demo-meds/0.0.1"   # open access
ICU_BEFORE_ADMIT_HOURS = 24     # an ICU stay this close before an admission joins it


class MedsSource:
  """A MEDS event table (file or folder of parquet files). `tables.problems` (the row
  policy) may be replaced per stage by the loader."""

  kind = "meds"

  def __init__(self, path: str, tables: CsvTables | None = None):
    self.path = path
    self.tables = tables or CsvTables(RowProblems())
    self._lf = scan_meds(path)

  def _codes_with(self, prefix: str) -> pl.LazyFrame:
    return self._lf.filter(pl.col("code").str.starts_with(prefix))

  def base(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    path = self.path
    subjects = collect(self._lf.select("subject_id").unique(), path)
    keep = (pl.col("code").str.starts_with("HOSPITAL_ADMISSION//")
            | pl.col("code").str.starts_with("HOSPITAL_DISCHARGE//")
            | pl.col("code").str.starts_with("ICU_ADMISSION//")
            | pl.col("code").str.starts_with("GENDER//")
            | pl.col("code").is_in(["MEDS_BIRTH", "MEDS_DEATH"]))
    ev = collect(self._lf.filter(keep).select("subject_id", "time", "code"), path)
    patients = _meds_patients(subjects, ev)
    adm = _meds_admissions(ev, path, self.tables.problems)
    return patients, adm, _meds_icu(ev, adm)

  def _lab_like(self, items: dict[int, str], windows: pl.DataFrame) -> pl.LazyFrame:
    parts = pl.col("code").str.split("//")
    itemid = (pl.when(parts.list.get(1, null_on_oob=True) == "RESULT")
              .then(parts.list.get(2, null_on_oob=True))
              .otherwise(parts.list.get(1, null_on_oob=True)))
    lf = self._codes_with("LAB//").filter(subjects_in(windows)).select(
        "subject_id", "time", itemid.cast(pl.Int64, strict=False).alias("itemid"), "value")
    lf = lf.filter(pl.col("itemid").is_in(list(items)) & pl.col("value").is_not_null())
    return in_window(lf, windows)

  def labs(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._lab_like(LAB_ITEMS, windows), self.path

  def vitals(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._lab_like(VITAL_ITEMS, windows), self.path

  def prescriptions(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    prefix = "MEDICATION//START//"
    lf = self._codes_with(prefix).filter(subjects_in(windows)).select(
        "subject_id", "time", pl.col("code").str.slice(len(prefix)).alias("name"))
    return in_window(lf, windows).select("subject_id", "name"), self.path

  def _icd_codes(self, prefix: str, windows: pl.DataFrame,
                 from_day: bool) -> tuple[pl.LazyFrame, str]:
    parts = pl.col("code").str.split("//")
    lf = self._codes_with(prefix).filter(subjects_in(windows)).select(
        "subject_id", "time",
        icd(parts.list.get(2, null_on_oob=True), parts.list.get(3, null_on_oob=True)))
    return in_window(lf, windows, from_day=from_day).select("subject_id", "code"), self.path

  def diagnoses(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._icd_codes("DIAGNOSIS//ICD//", windows, from_day=False)

  def procedures(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._icd_codes("PROCEDURE//ICD//", windows, from_day=True)


def scan_meds(path: str) -> pl.LazyFrame:
  """(subject_id Int64, time Datetime, code String, value Float64), checked lazily.
  `path`: one parquet file, a folder of them, or a MEDS root (a folder holding
  ``data/``: its ``data/**/*.parquet`` are read, ``metadata/`` is not)."""
  if os.path.isdir(os.path.join(path, "data")):
    path = os.path.join(path, "data")
  if os.path.isdir(path):
    source = os.path.join(path, "**", "*.parquet")
    if not any(f.endswith(".parquet") for _, _, fs in os.walk(path) for f in fs):
      raise DataError(f"{path}: MEDS folder holds no .parquet file")
  elif os.path.isfile(path):
    source = path
  else:
    raise DataError(f"{path}: MEDS events file not found (the open MIMIC-IV demo in MEDS: "
                    f"`wget -r -N -c -np {DEMO_MEDS_URL}/`, see docs/data.md)")
  try:
    lf = pl.scan_parquet(source)
    schema = lf.collect_schema()
  except Exception as e:  # pylint: disable=broad-except  (any reader error is bad input)
    raise DataError(f"{path}: cannot read as parquet ({type(e).__name__}: {e})") from None
  missing = [c for c in MEDS_COLUMNS if c not in schema]
  if missing:
    raise DataError(f"{path}: MEDS table lacks column(s) {missing} (has {list(schema)})")
  value = next((c for c in MEDS_VALUE_COLUMNS if c in schema), None)
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
  return lf.select(pl.col("subject_id").cast(pl.Int64), pl.col("time").cast(TIMESTAMP),
                   "code", pl.col(value).cast(pl.Float64).alias("value"))


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
      .alias("death_date_only"),
      pl.lit(None, pl.String).alias("anchor_year_group"))   # not in MEDS


def _meds_admissions(ev: pl.DataFrame, path: str, problems: RowProblems) -> pl.DataFrame:
  """Admission/discharge events paired by order per subject, synthetic hadm_id. Events
  without a time are skipped; a subject whose admission and discharge events do not
  pair up has no admission (dropped from the cohort); both counted (strict:
  DataError)."""
  def events(prefix: str, name: str) -> pl.DataFrame:
    rows = ev.filter(pl.col("code").str.starts_with(prefix))
    n = rows["time"].null_count()
    problems.found(path, f"{prefix} event without a time (skipped)", n,
                   f"{path}: {n} {prefix} event(s) without a time")
    return (rows.filter(pl.col("time").is_not_null()).sort("subject_id", "time", "code")
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
    problems.found(path, "subject's admission and discharge events cannot be paired "
                         "(its admissions dropped)", len(counts),
                   f"{path}: {len(counts)} subject(s) have admission and discharge "
                   f"events that cannot be paired (the first by subject_id has "
                   f"{r['len'] or 0} HOSPITAL_ADMISSION but {r['len_right'] or 0} "
                   f"HOSPITAL_DISCHARGE events)")
    unpaired = counts["subject_id"].implode()
    adm = adm.filter(~pl.col("subject_id").is_in(unpaired))
    dis = dis.filter(~pl.col("subject_id").is_in(unpaired))
  out = adm.join(dis.select("subject_id", "_k", "dischtime", pl.col("_parts").alias("_d")),
                 on=["subject_id", "_k"], how="inner").sort("subject_id", "_k")
  get = lambda col, i: pl.col(col).list.get(i, null_on_oob=True)
  out = out.select(
      "subject_id", (pl.int_range(pl.len()) + 1).cast(pl.Int64).alias("hadm_id"),
      "admittime", "dischtime", (get("_d", 1) == "DIED").fill_null(False).alias("died"),
      get("_parts", 1).alias("admission_type"), get("_parts", 2).alias("admission_location"),
      get("_d", 1).alias("discharge_location"),
      pl.lit(None, pl.String).alias("insurance"), pl.lit(None, pl.String).alias("race"))
  return out.with_columns(clean(c) for c in ("admission_type", "admission_location",
                                             "discharge_location"))


def _meds_icu(ev: pl.DataFrame, adm: pl.DataFrame) -> pl.DataFrame:
  """ICU_ADMISSION events attached to admissions (see the package docstring)."""
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
