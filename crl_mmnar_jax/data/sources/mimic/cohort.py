"""The MIMIC-IV cohort: index episode, attrition and labels.

The rules (years, valid admissions, the first episode as the index, adults, survivors of
the index episode) and the task definitions are in the docstring of
`crl_mmnar_jax.data.sources.mimic`; each step is counted in the attrition list.
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.sources.mimic.frames import WINDOW

TASKS = ("readmission_30d", "icu_90d", "mortality_180d")
ADULT_AGE = 18
EPISODE_GAP_HOURS = 6      # an admission starting sooner after a discharge continues it
PLANNED_ADMISSION_TYPES = ("ELECTIVE", "SURGICAL SAME DAY ADMISSION")   # not readmissions
ANCHOR_YEARS = "2008-2019"  # anchor_year_group range kept (notes and CXR end in 2019)


def _step(step: str, n_remaining: int, n_excluded: int, unit: str = "subjects",
          **extra: int) -> dict:
  return {"step": step, "unit": unit, "n_remaining": int(n_remaining),
          "n_excluded": int(n_excluded), **{k: int(v) for k, v in extra.items()}}


def parse_anchor_years(text: str) -> tuple[int, int] | None:
  """"2008-2019" -> (2008, 2019); "" -> None (no filter)."""
  text = str(text).strip()
  if not text:
    return None
  m = re.fullmatch(r"(\d{4})\s*-\s*(\d{4})", text)
  if not m or int(m[1]) > int(m[2]):
    raise DataError(f"data.anchor_years {text!r}: expected 'YYYY-YYYY' (e.g. '2008-2019') "
                    f"or '' for every anchor_year_group")
  return int(m[1]), int(m[2])


def _group_within(years: tuple[int, int]) -> pl.Expr:
  """anchor_year_group ("2008 - 2010") inside `years`; unknown (null) groups are kept."""
  parts = pl.col("anchor_year_group").str.extract_all(r"\d{4}")
  lo = parts.list.first().cast(pl.Int64, strict=False)
  hi = parts.list.last().cast(pl.Int64, strict=False)
  return pl.col("anchor_year_group").is_null() | ((lo >= years[0]) & (hi <= years[1]))


def _died_in_index() -> pl.Expr:
  timed = ~pl.col("death_date_only") & (pl.col("death_time") <= pl.col("dischtime"))
  dated = pl.col("death_date_only") & (pl.col("death_time").dt.date()
                                       < pl.col("dischtime").dt.date())
  return pl.col("died") | (pl.col("death_time").is_not_null() & (timed | dated))


def episodes(valid: pl.DataFrame) -> pl.DataFrame:
  """`valid` admissions with ``episode`` (0, 1, ... per subject, in admittime order): an
  admission starting less than `EPISODE_GAP_HOURS` after the latest dischtime so far
  (or before it: an overlap) belongs to the previous one's episode."""
  prev_end = pl.col("dischtime").cum_max().shift(1).over("subject_id")
  new = ((pl.col("admittime") - prev_end) >= pl.duration(hours=EPISODE_GAP_HOURS))
  return (valid.sort("subject_id", "admittime", "dischtime", "hadm_id")
          .with_columns(new.fill_null(False).cast(pl.Int32).alias("_new"))
          .with_columns(pl.col("_new").cum_sum().over("subject_id").alias("episode"))
          .drop("_new"))


def _index_episodes(adm: pl.DataFrame) -> pl.DataFrame:
  """One row per subject: the first episode as one admission (first admission's type
  and location, the last discharge's time and location, every hadm_id)."""
  first = adm.filter(pl.col("episode") == 0)
  last = first.sort("dischtime", "admittime", "hadm_id").group_by(
      "subject_id", maintain_order=True).last()
  return (first.group_by("subject_id", maintain_order=True).agg(
      pl.col("hadm_id").first(), pl.col("admittime").first(),
      pl.col("dischtime").max(), pl.col("died").any(),
      pl.col("admission_type").first(), pl.col("admission_location").first(),
      pl.col("insurance").first(), pl.col("race").first(),
      pl.col("hadm_id").alias("hadm_ids"))
          .join(last.select("subject_id", "discharge_location"), on="subject_id"))


def cohort_frame(patients: pl.DataFrame, adm: pl.DataFrame, icu: pl.DataFrame,
                 anchor_years: tuple[int, int] | None = None
                 ) -> tuple[pl.DataFrame, dict[str, Any]]:
  """One row per subject: index episode, static columns, labels (package docstring).

  Takes a reader's ``base()`` frames (`frames`); returns the cohort frame, sorted by
  subject_id, with the `WINDOW` columns (dischtime: the end of the index episode),
  ``hadm_ids`` and ``icu_stay_ids`` (the index episode's admissions and ICU stays), the
  admission-level columns, one column per task in `TASKS`, and ``{"attrition": [...]}``.
  """
  n_subjects = pl.concat([patients["subject_id"], adm["subject_id"]]).n_unique()
  attrition = [_step("subjects", n_subjects, 0)]
  if anchor_years is not None:
    out = patients.filter(~_group_within(anchor_years))["subject_id"]
    adm = adm.filter(~pl.col("subject_id").is_in(out.implode()))
    patients = patients.filter(~pl.col("subject_id").is_in(out.implode()))
    attrition.append(_step(f"anchor_year_group within {anchor_years[0]}-{anchor_years[1]} "
                           f"(unknown: kept)", n_subjects - len(out), len(out)))
    n_subjects -= len(out)
  valid = adm.filter(pl.col("admittime").is_not_null() & pl.col("dischtime").is_not_null()
                     & (pl.col("dischtime") >= pl.col("admittime")))
  attrition.append(_step("admissions with dischtime >= admittime", len(valid),
                         len(adm) - len(valid), unit="admissions"))
  valid = episodes(valid)
  index = _index_episodes(valid)
  attrition.append(_step("subjects with a valid hospital admission (index = first)",
                         len(index), n_subjects - len(index)))
  n_adm = index["hadm_ids"].list.len()
  attrition.append(_step(f"index episode: admissions starting < {EPISODE_GAP_HOURS} h after "
                         f"the previous discharge continue it (not readmissions)",
                         len(index), 0, admissions_merged=int((n_adm - 1).sum()),
                         subjects_with_merged=int((n_adm > 1).sum())))
  index = index.join(patients, on="subject_id", how="left").with_columns(
      (pl.col("admittime").dt.year().cast(pl.Int64) - pl.col("birth_year"))
      .cast(pl.Float64).alias("age"))
  n = len(index)
  index = index.filter(pl.col("age") >= ADULT_AGE)
  attrition.append(_step(f"adult at the index admission (age >= {ADULT_AGE}, known)",
                         len(index), n - len(index)))
  n = len(index)
  index = index.filter(~_died_in_index())
  attrition.append(_step("survived the index episode", len(index), n - len(index)))

  disch = index.select("subject_id", pl.col("dischtime").alias("_disch"))
  later = (valid.filter(pl.col("episode") > 0).join(disch, on="subject_id", how="inner"))
  unplanned = ~pl.col("admission_type").is_in(list(PLANNED_ADMISSION_TYPES)).fill_null(False)
  readmit = later.group_by("subject_id").agg(
      (((pl.col("admittime") - pl.col("_disch")) <= pl.duration(days=30)) & unplanned)
      .any().alias("_readmit"))
  icu_later = (icu.join(later.select("hadm_id", "_disch"), on="hadm_id", how="inner")
               .filter((pl.col("intime") > pl.col("_disch"))
                       & (pl.col("intime") - pl.col("_disch") <= pl.duration(days=90)))
               .group_by("subject_id").agg(pl.len().alias("_icu_later")))
  episode_hadm = index.select("subject_id", pl.col("hadm_ids").alias("hadm_id")).explode(
      "hadm_id")
  icu_index = (icu.join(episode_hadm, on=["subject_id", "hadm_id"], how="inner")
               .sort("stay_id").group_by("subject_id")
               .agg(pl.col("stay_id").alias("icu_stay_ids")))
  days_to_death = (pl.col("death_time").dt.date()
                   - pl.col("dischtime").dt.date()).dt.total_days()
  out = (index.join(readmit, on="subject_id", how="left")
         .join(icu_later, on="subject_id", how="left")
         .join(icu_index, on="subject_id", how="left")
         .sort("subject_id")
         .select(
             *WINDOW, pl.col("hadm_ids").cast(pl.List(pl.Int64)), "age", "male",
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
