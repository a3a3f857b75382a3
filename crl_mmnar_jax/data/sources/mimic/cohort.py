"""The MIMIC-IV cohort: index admission, attrition and labels.

The rules (valid admissions, first admission as the index, adults, survivors of the
index admission) and the task definitions are in the docstring of
`crl_mmnar_jax.data.sources.mimic`; each step is counted in the attrition list.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from crl_mmnar_jax.data.sources.mimic.frames import WINDOW

TASKS = ("readmission_30d", "icu_90d", "mortality_180d")
ADULT_AGE = 18


def _step(step: str, n_remaining: int, n_excluded: int, unit: str = "subjects") -> dict:
  return {"step": step, "unit": unit, "n_remaining": int(n_remaining),
          "n_excluded": int(n_excluded)}


def _died_in_index() -> pl.Expr:
  timed = ~pl.col("death_date_only") & (pl.col("death_time") <= pl.col("dischtime"))
  dated = pl.col("death_date_only") & (pl.col("death_time").dt.date()
                                       < pl.col("dischtime").dt.date())
  return pl.col("died") | (pl.col("death_time").is_not_null() & (timed | dated))


def cohort_frame(patients: pl.DataFrame, adm: pl.DataFrame, icu: pl.DataFrame
                 ) -> tuple[pl.DataFrame, dict[str, Any]]:
  """One row per subject: index admission, static columns, labels (package docstring).

  Takes a reader's ``base()`` frames (`frames`); returns the cohort frame, sorted by
  subject_id, with the `WINDOW` columns, ``icu_stay_ids`` (the index admission's ICU
  stays), the admission-level columns, one column per task in `TASKS`, and
  ``{"attrition": [...]}``.
  """
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
  days_to_death = (pl.col("death_time").dt.date()
                   - pl.col("dischtime").dt.date()).dt.total_days()
  out = (index.join(readmit, on="subject_id", how="left")
         .join(icu_later, on="subject_id", how="left")
         .join(icu_index, on="hadm_id", how="left")
         .sort("subject_id")
         .select(
             *WINDOW, "age", "male",
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
