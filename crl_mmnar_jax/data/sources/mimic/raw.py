"""Reading MIMIC-IV (v2.2 / v3.1) from PhysioNet's raw CSV layout into canonical frames.

Each table is a lazy, typed projection to the columns of `schema.RAW_TABLES` (header
checked first), filtered on the cohort's subjects, admissions or ICU stays and on the
index window before anything is collected. The frames produced are described in
`frames`.
"""

from __future__ import annotations

import polars as pl

from crl_mmnar_jax.data import io
from crl_mmnar_jax.data.errors import DataError
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


def _check_ids(df: pl.DataFrame, columns: list[str], path: str, unique: str) -> None:
  for c in columns:
    if df[c].null_count():
      raise DataError(f"{path}: column {c} has {df[c].null_count()} null value(s)")
  if df[unique].is_duplicated().any():
    dup = io.few(df.filter(pl.col(unique).is_duplicated())[unique])
    raise DataError(f"{path}: column {unique} repeats ids, e.g. {dup}")


class RawSource:
  """The PhysioNet CSV layout."""

  kind = "raw"

  def __init__(self, directory: str):
    self.directory = directory

  def _scan(self, name: str) -> tuple[pl.LazyFrame, str]:
    path = io.require_table(self.directory, name, "MIMIC-IV")
    return io.scan_csv(path, RAW_TABLES[name], f"MIMIC-IV table '{name}'"), path

  def base(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    lf, path = self._scan(PATIENTS)
    patients = collect(lf, path)
    _check_ids(patients, ["subject_id"], path, unique="subject_id")
    gender = pl.col("gender").str.strip_chars()
    patients = patients.select(
        "subject_id",
        pl.when(gender == "M").then(1.0).when(gender == "F").then(0.0).alias("male"),
        (pl.col("anchor_year") - pl.col("anchor_age")).alias("birth_year"),
        pl.col("dod").cast(TIMESTAMP).alias("death_time"),
        pl.lit(True).alias("death_date_only"))
    lf, path = self._scan(ADMISSIONS)
    adm = collect(lf, path)
    _check_ids(adm, ["subject_id", "hadm_id"], path, unique="hadm_id")
    adm = adm.select(
        "subject_id", "hadm_id", "admittime", "dischtime",
        ((pl.col("hospital_expire_flag") == 1).fill_null(False)
         | pl.col("deathtime").is_not_null()
         | (pl.col("discharge_location").str.strip_chars() == "DIED").fill_null(False)
         ).alias("died"),
        *(clean(c) for c in ("admission_type", "admission_location",
                             "discharge_location", "insurance", "race")))
    lf, path = self._scan(ICUSTAYS)
    icu = collect(lf, path)
    _check_ids(icu, ["subject_id", "hadm_id", "stay_id"], path, unique="stay_id")
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
    lf, path = self._scan(name)
    lf = lf.filter(pl.col("hadm_id").is_in(windows["hadm_id"].implode()))
    lf = lf.join(windows.lazy().select("hadm_id", "subject_id"), on="hadm_id", how="inner")
    return lf.select("subject_id", icd(pl.col("icd_version").cast(pl.String),
                                       pl.col("icd_code"))), path

  def diagnoses(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._codes(DIAGNOSES_ICD, windows)

  def procedures(self, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str]:
    return self._codes(PROCEDURES_ICD, windows)

  def notes(self, name: str, windows: pl.DataFrame) -> tuple[pl.LazyFrame, str] | None:
    """Notes of table `name` (`schema.NOTE_TABLES`) of the index admission up to its
    dischtime; None when the table is not there (MIMIC-IV-Note is optional)."""
    path = io.table_path(self.directory, name)
    if path is None:
      return None
    lf = io.scan_csv(path, RAW_TABLES[name], f"MIMIC-IV-Note table '{name}'")
    lf = lf.filter(pl.col("hadm_id").is_in(windows["hadm_id"].implode()))
    lf = lf.join(windows.lazy().select("hadm_id", "dischtime"), on="hadm_id", how="inner")
    lf = lf.filter(pl.col("charttime") <= pl.col("dischtime"))
    return lf.select("subject_id", "charttime", "note_id", "text"), path
