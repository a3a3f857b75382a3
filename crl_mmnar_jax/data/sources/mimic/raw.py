"""Reading MIMIC-IV (v2.2 / v3.1) from PhysioNet's raw CSV layout into canonical frames.

Each table is a lazy, typed projection to the columns of `schema.RAW_TABLES` (header
checked first), filtered on the cohort's subjects, admissions or ICU stays and on the
index window before anything is collected. The frames produced are described in
`frames`.
"""

from __future__ import annotations

import polars as pl

from crl_mmnar_jax.data import io
from crl_mmnar_jax.data.row_policy import CsvTables, RowProblems
from crl_mmnar_jax.data.sources.mimic.frames import clean, collect, icd, in_window, subjects_in
from crl_mmnar_jax.data.sources.mimic.schema import (
  ADMISSIONS,
  CHARTEVENTS,
  DIAGNOSES_ICD,
  ICUSTAYS,
  LAB_ITEMS,
  LABEVENTS,
  PATIENTS,
  PRESCRIPTIONS,
  PROCEDURES_ICD,
  RAW_TABLES,
  TIMESTAMP,
  VITAL_ITEMS,
)

NOTE_BEFORE_ADMIT_HOURS = 6   # a report without hadm_id this long before admittime joins


def _check_ids(df: pl.DataFrame, columns: list[str], path: str, unique: str,
               tables: CsvTables) -> pl.DataFrame:
  """`df` without rows whose ids are null and without every row of a repeated `unique`
  id, each counted (strict: DataError)."""
  for c in columns:
    n = df[c].null_count()
    tables.problems.found(path, f"null {c} (row skipped)", n,
                          f"{path}: column {c} has {n} null value(s)")
    df = df.filter(pl.col(c).is_not_null())
  rep = df[unique].is_duplicated()
  if rep.any():
    dup = df.filter(rep)[unique]
    tables.problems.found(path, f"{unique} repeated (every row of that id skipped)",
                          len(dup), f"{path}: column {unique} repeats {dup.n_unique()} "
                                    f"id(s) in {len(dup)} rows")
  return df.filter(~rep)


class RawSource:
  """The PhysioNet CSV layout. `tables` (the row policy's typed scans) may be replaced
  per stage by the loader."""

  kind = "raw"

  def __init__(self, directory: str, tables: CsvTables | None = None):
    self.directory = directory
    self.tables = tables or CsvTables(RowProblems())

  def _scan(self, name: str) -> tuple[pl.LazyFrame, str]:
    path = io.require_table(self.directory, name, "MIMIC-IV")
    return self.tables.scan(path, RAW_TABLES[name], f"MIMIC-IV table '{name}'"), path

  def base(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    lf, path = self._scan(PATIENTS)
    patients = _check_ids(collect(lf, path), ["subject_id"], path, "subject_id",
                          self.tables)
    gender = pl.col("gender").str.strip_chars()
    patients = patients.select(
        "subject_id",
        pl.when(gender == "M").then(1.0).when(gender == "F").then(0.0).alias("male"),
        (pl.col("anchor_year") - pl.col("anchor_age")).alias("birth_year"),
        pl.col("dod").cast(TIMESTAMP).alias("death_time"),
        pl.lit(True).alias("death_date_only"),
        pl.col("anchor_year_group").str.strip_chars())
    lf, path = self._scan(ADMISSIONS)
    adm = _check_ids(collect(lf, path), ["subject_id", "hadm_id"], path, "hadm_id",
                     self.tables)
    adm = adm.select(
        "subject_id", "hadm_id", "admittime", "dischtime",
        ((pl.col("hospital_expire_flag") == 1).fill_null(False)
         | pl.col("deathtime").is_not_null()
         | (pl.col("discharge_location").str.strip_chars() == "DIED").fill_null(False)
         ).alias("died"),
        *(clean(c) for c in ("admission_type", "admission_location",
                             "discharge_location", "insurance", "race")))
    lf, path = self._scan(ICUSTAYS)
    icu = _check_ids(collect(lf, path), ["subject_id", "hadm_id", "stay_id"], path,
                     "stay_id", self.tables)
    return patients, adm, icu

  def labs(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    lf, path = self._scan(LABEVENTS)
    lf = lf.filter(pl.col("itemid").is_in(list(LAB_ITEMS)) & pl.col("valuenum").is_not_null()
                   & subjects_in(windows))
    return in_window(lf.select("subject_id", pl.col("charttime").alias("time"), "itemid",
                               pl.col("valuenum").alias("value")), windows), path

  def vitals(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    lf, path = self._scan(CHARTEVENTS)
    stays = windows.select("subject_id", "icu_stay_ids").explode("icu_stay_ids").drop_nulls()
    stays = stays.rename({"icu_stay_ids": "stay_id"})
    lf = lf.filter(pl.col("itemid").is_in(list(VITAL_ITEMS)) & pl.col("valuenum").is_not_null()
                   & pl.col("stay_id").is_in(stays["stay_id"].implode()))
    lf = lf.join(stays.lazy(), on="stay_id", how="inner")
    return in_window(lf.select("subject_id", pl.col("charttime").alias("time"), "itemid",
                               pl.col("valuenum").alias("value")), windows), path

  def prescriptions(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    lf, path = self._scan(PRESCRIPTIONS)
    lf = lf.filter(subjects_in(windows)).select(
        "subject_id", pl.col("starttime").alias("time"), pl.col("drug").alias("name"))
    return in_window(lf, windows).select("subject_id", "name"), path

  def _codes(self, name: str, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    """Codes of every admission of the index episode (coded at their discharge, which
    is at or before the episode's end)."""
    lf, path = self._scan(name)
    hadm = _episode_hadm(windows)
    lf = lf.filter(pl.col("hadm_id").is_in(hadm["hadm_id"].implode()))
    lf = lf.join(hadm.lazy(), on="hadm_id", how="inner")
    return lf.select("subject_id", icd(pl.col("icd_version").cast(pl.String),
                                       pl.col("icd_code"))), path

  def diagnoses(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._codes(DIAGNOSES_ICD, windows)

  def procedures(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._codes(PROCEDURES_ICD, windows)

  def notes(self, name: str, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str] | None:
    """Notes of table `name` (`schema.NOTE_TABLES`) of the index episode up to its end:
    those with a hadm_id of the episode, and those WITHOUT a hadm_id (many radiology
    reports: emergency department, outpatient) of the subject charted from
    `NOTE_BEFORE_ADMIT_HOURS` before admittime to the episode's dischtime. None when the
    table is not there (MIMIC-IV-Note is optional)."""
    path = io.table_path(self.directory, name)
    if path is None:
      return None
    lf = self.tables.scan(path, RAW_TABLES[name], f"MIMIC-IV-Note table '{name}'")
    hadm = _episode_hadm(windows)
    linked = (lf.filter(pl.col("hadm_id").is_in(hadm["hadm_id"].implode()))
              .join(hadm.lazy(), on=["hadm_id", "subject_id"], how="inner"))
    unlinked = lf.filter(pl.col("hadm_id").is_null() & subjects_in(windows)).join(
        windows.lazy().select("subject_id", "admittime"), on="subject_id", how="inner"
    ).filter(pl.col("charttime") >= pl.col("admittime")
             - pl.duration(hours=NOTE_BEFORE_ADMIT_HOURS)).drop("admittime")
    ends = windows.lazy().select("subject_id", "dischtime")
    lf = pl.concat([linked, unlinked]).join(ends, on="subject_id", how="inner")
    lf = lf.filter(pl.col("charttime") <= pl.col("dischtime"))
    return lf.select("subject_id", "charttime", "note_id", "text"), path


def _episode_hadm(windows: pl.DataFrame) -> pl.DataFrame:
  """(hadm_id, subject_id) of every admission of each subject's index episode."""
  return (windows.select("subject_id", pl.col("hadm_ids").alias("hadm_id"))
          .explode("hadm_id").drop_nulls("hadm_id"))
