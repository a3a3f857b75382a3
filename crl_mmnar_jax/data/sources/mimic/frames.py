"""The canonical frames that both MIMIC-IV readers (`raw`, `meds`) produce, and the
expressions and error handling they share with the feature stages.

A reader (`raw.RawSource`, `meds.MedsSource`) has a ``kind`` ("raw" or "meds") and
yields canonical frames. ``base()``: patients (subject_id, male, birth_year,
death_time, death_date_only), admissions (subject_id, hadm_id, admittime, dischtime,
died, admission_type, admission_location, discharge_location, insurance, race) and ICU
stays (subject_id, hadm_id, stay_id, intime). The event methods (``labs``, ``vitals``,
``prescriptions``, ``diagnoses``, ``procedures``; raw: also ``notes``) take the
cohort's windows (the `WINDOW` columns plus icu_stay_ids, one row per subject) and
return lazy frames already limited to the index admission: (subject_id, time, itemid,
value, admittime), (subject_id, name) or (subject_id, code), with the path that parse
errors name.
"""

from __future__ import annotations

import polars as pl

from crl_mmnar_jax.data import io

WINDOW = ("subject_id", "hadm_id", "admittime", "dischtime")   # the index admission
PARSE_ERROR = "cannot read a value with its MIMIC-IV type"


def collect(lf: pl.LazyFrame, path: str) -> pl.DataFrame:
  """Streaming collection; a value that does not parse raises DataError naming `path`."""
  return io.collect(lf, path, PARSE_ERROR)


def sink(lf: pl.LazyFrame, out: str, path: str, row_group_size: int | None = None) -> None:
  """``lf.sink_parquet(out)``; a value that does not parse raises DataError naming `path`."""
  io.sink(lf, out, path, PARSE_ERROR, row_group_size)


def clean(col: str) -> pl.Expr:
  """A categorical string column, stripped; empty or MEDS' "UNK" become null."""
  v = pl.col(col).str.strip_chars()
  return pl.when(v.is_in(["", "UNK"])).then(None).otherwise(v).alias(col)


def icd(version: pl.Expr, code: pl.Expr) -> pl.Expr:
  """The column ``code`` = ``ICD<version>:<code>`` (both stripped)."""
  return pl.concat_str([pl.lit("ICD"), version.str.strip_chars(), pl.lit(":"),
                        code.str.strip_chars()]).alias("code")


def subjects_in(windows: pl.DataFrame) -> pl.Expr:
  """Rows of the cohort's subjects (a semi-join on subject_id)."""
  return pl.col("subject_id").is_in(windows["subject_id"].implode())


def in_window(lf: pl.LazyFrame, windows: pl.DataFrame, from_day: bool = False
              ) -> pl.LazyFrame:
  """Rows whose time lies in the subject's index window; adds admittime."""
  start = pl.col("admittime").dt.truncate("1d") if from_day else pl.col("admittime")
  w = windows.lazy().select("subject_id", "admittime", "dischtime")
  return (lf.join(w, on="subject_id", how="inner")
          .filter(pl.col("time").is_between(start, pl.col("dischtime")))
          .drop("dischtime"))
