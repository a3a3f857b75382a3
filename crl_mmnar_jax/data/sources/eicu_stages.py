"""eICU-CRD v2.0 modality stages: one table (or two) -> per-stay features.

Each stage reads its table with a lazy typed scan (projection, filter on the cohort's
unit stays and the time window, streaming collection) and returns a per-stay frame
(``patientunitstayid``, ``present``, features) plus a report. Numeric time series go
through `featurize.featurize_batched` in batches of about `batch_values` values
(`eicu.BATCH_VALUES`); counts and hashed buckets are polars aggregations. What each
modality holds is described in the docstring of `crl_mmnar_jax.data.sources.eicu`,
which runs these stages.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl

from crl_mmnar_jax.data import io
from crl_mmnar_jax.data.featurize import ModalityGroup, featurize_batched, hash_bucket
from crl_mmnar_jax.data.row_policy import CsvTables

N_BUCKETS = 16

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

STAY = "patientunitstayid"
PARSE_ERROR = "cannot parse a value with its eICU v2.0 type"


# ----------------------------------------------------------------------------- files


def scan(tables: CsvTables, directory: str, name: str, columns: dict[str, pl.DataType]
         ) -> tuple[pl.LazyFrame, str]:
  """Lazy scan of table `name` projected to `columns` (typed), header checked; read
  leniently once `tables` has counted a value of it that does not parse."""
  path = io.require_table(directory, name, "eICU")
  return tables.scan(path, columns, f"eICU table '{name}'", name_empty_file=False), path


def collect(lf: pl.LazyFrame, path: str) -> pl.DataFrame:
  """Streaming collection; unparsable values raise DataError naming `path`."""
  return io.collect(lf, path, PARSE_ERROR)


# ----------------------------------------------------------------------------- modalities


def _in_window(offset: str, window_min: float) -> pl.Expr:
  return pl.col(offset).is_between(0, window_min)


def _series_stage(tables: CsvTables, directory: str, table: str, offset: str,
                  variables: Sequence[str], name: str, stays: np.ndarray,
                  window_min: float, scratch: str, batch_values: int,
                  long: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None,
                  columns: dict[str, pl.DataType] | None = None
                  ) -> tuple[pl.DataFrame, dict[str, Any]]:
  """Numeric time series through `featurize`, in bounded memory.

  Pass 1 streams the table (projection, filter on the cohort's stays and the window)
  into a scratch parquet file of the usable rows, still wide; pass 2 featurises
  batches of stays from that file (unpivoting only the batch), so the long
  table never exists for the whole cohort at once (about `batch_values` values per
  batch; each batch re-reads the scratch file, projected and filtered).
  """
  cols = columns or {STAY: pl.Int64, offset: pl.Int64,
                     **{v: pl.Float64 for v in variables}}
  lf, path = scan(tables, directory, table, cols)
  lf = lf.filter(pl.col(STAY).is_in(pl.Series(stays).implode()) &
                 _in_window(offset, window_min))
  if long is not None:
    lf = long(lf)
  rows_path = os.path.join(scratch, f".{name}.rows.parquet")
  io.sink(lf, rows_path, path, PARSE_ERROR)
  group = [ModalityGroup(name, tuple(variables))]
  # Batches: contiguous ranges of sorted stay ids holding about batch_values values
  # each (ranges let parquet statistics skip row groups when the table is ordered).
  sorted_S = np.sort(stays)
  per_stay = pl.scan_parquet(rows_path).group_by(STAY).len().collect()
  n_rows_S = (pl.DataFrame({STAY: sorted_S})
              .join(per_stay, on=STAY, how="left")["len"].fill_null(0).to_numpy())
  values_S = n_rows_S.astype(np.int64) * (1 if long is not None else len(variables))
  batch_S = (np.cumsum(values_S) - values_S) // batch_values

  def load_batch(batch: np.ndarray) -> pl.DataFrame:
    blf = pl.scan_parquet(rows_path).filter(
        pl.col(STAY).is_between(int(batch[0]), int(batch[-1])) &
        pl.col(STAY).is_in(pl.Series(batch).implode()))
    if long is None:
      blf = blf.unpivot(index=[STAY, offset], on=list(variables),
                        variable_name="variable", value_name="value")
    return blf.filter(pl.col("value").is_not_null()).select(
        pl.col(STAY).alias("stay_id"),
        (pl.col(offset).cast(pl.Float64) / 60.0).alias("time"),
        "variable", pl.col("value").cast(pl.Float64)).collect()

  df, report = featurize_batched(load_batch, group, sorted_S, batch_S, STAY,
                                 window=(0.0, window_min / 60.0), valid_ranges=VALID_RANGES,
                                 out_of_range="drop", unknown_variables="ignore")
  os.remove(rows_path)
  df = df[np.searchsorted(sorted_S, stays)]          # sorted order -> `stays` order
  return df, report


def bucket(text: str) -> int:
  """Stable hash bucket of a string: CRC-32 of its lower-cased stripped UTF-8 bytes."""
  return hash_bucket(text, N_BUCKETS)


def _hashed_counts(rows: pl.DataFrame, key: str, prefix: str) -> pl.DataFrame:
  """(stay, key) rows -> per stay counts in N_BUCKETS hashed buckets (wide)."""
  keys = rows.select(pl.col(key).drop_nulls().unique())[key].to_list()
  mapping = pl.DataFrame({key: keys, "_b": [bucket(k) for k in keys]},
                         schema={key: pl.String, "_b": pl.Int64})
  counts = rows.join(mapping, on=key, how="inner").group_by(STAY, "_b").len()
  return counts.group_by(STAY).agg(
      (pl.col("len").filter(pl.col("_b") == b).sum().cast(pl.Float64)
       .alias(f"{prefix}_bucket{b:02d}")) for b in range(N_BUCKETS))


def _to_stays(stays: np.ndarray, parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
  """Left-joins per-stay feature frames onto `stays`; present = any row; missing = 0."""
  df = pl.DataFrame({STAY: stays})
  flags = []
  for k, p in enumerate(parts):
    flag = f"_has{k}"
    df = df.join(p.with_columns(pl.lit(True).alias(flag)), on=STAY, how="left")
    flags.append(flag)
  feat_cols = [c for c in df.columns if c != STAY and c not in flags]
  present = pl.any_horizontal(pl.col(f).fill_null(False) for f in flags)
  return df.select(STAY, present.alias("present"),
                   *(pl.col(c).cast(pl.Float64).fill_null(0.0) for c in feat_cols))


def _events(tables: CsvTables, directory: str, table: str,
            columns: dict[str, pl.DataType], offset: str, stays: np.ndarray,
            window_min: float, extra: pl.Expr | None = None) -> pl.DataFrame:
  lf, path = scan(tables, directory, table, columns)
  cond = pl.col(STAY).is_in(pl.Series(stays).implode()) & _in_window(offset, window_min)
  if extra is not None:
    cond = cond & extra
  return collect(lf.filter(cond), path)


def _medication(tables, directory, stays, window_min):
  rows = _events(tables, directory, "medication",
                 {STAY: pl.Int64, "drugorderoffset": pl.Int64,
                  "drugordercancelled": pl.String, "drugname": pl.String},
                 "drugorderoffset", stays, window_min,
                 pl.col("drugordercancelled").fill_null("No").str.strip_chars() != "Yes")
  rows = rows.with_columns(pl.col("drugname").str.strip_chars().str.to_lowercase())
  counts = rows.group_by(STAY).agg(pl.len().cast(pl.Float64).alias("med_orders"),
                                    pl.col("drugname").n_unique().alias("med_distinct"))
  return _to_stays(stays, [counts, _hashed_counts(rows, "drugname", "med")]), {
      "rows_in_window": len(rows)}


def _infusion(tables, directory, stays, window_min):
  rows = _events(tables, directory, "infusionDrug",
                 {STAY: pl.Int64, "infusionoffset": pl.Int64, "drugname": pl.String},
                 "infusionoffset", stays, window_min)
  rows = rows.with_columns(pl.col("drugname").str.strip_chars().str.to_lowercase())
  counts = rows.group_by(STAY).agg(pl.len().cast(pl.Float64).alias("inf_records"),
                                    pl.col("drugname").n_unique().alias("inf_distinct"))
  return _to_stays(stays, [counts, _hashed_counts(rows, "drugname", "inf")]), {
      "rows_in_window": len(rows)}


def _diagnosis(tables, directory, stays, window_min):
  rows = _events(tables, directory, "diagnosis",
                 {STAY: pl.Int64, "diagnosisoffset": pl.Int64,
                  "diagnosisstring": pl.String, "icd9code": pl.String},
                 "diagnosisoffset", stays, window_min)
  counts = rows.group_by(STAY).agg(
      pl.len().cast(pl.Float64).alias("dx_entries"),
      pl.col("icd9code").drop_nulls().n_unique().alias("dx_distinct_icd9"))
  return _to_stays(stays, [counts, _hashed_counts(rows, "diagnosisstring", "dx")]), {
      "rows_in_window": len(rows)}


def _treatment_resp(tables, directory, stays, window_min):
  tr = _events(tables, directory, "treatment",
               {STAY: pl.Int64, "treatmentoffset": pl.Int64, "treatmentstring": pl.String},
               "treatmentoffset", stays, window_min)
  rc = _events(tables, directory, "respiratoryCharting",
               {STAY: pl.Int64, "respchartoffset": pl.Int64,
                "respchartvaluelabel": pl.String}, "respchartoffset", stays, window_min)
  tr_counts = tr.group_by(STAY).agg(
      pl.len().cast(pl.Float64).alias("tx_entries"),
      pl.col("treatmentstring").n_unique().alias("tx_distinct"))
  rc_counts = rc.group_by(STAY).agg(
      pl.len().cast(pl.Float64).alias("resp_rows"),
      pl.col("respchartvaluelabel").n_unique().alias("resp_distinct_labels"))
  parts = [tr_counts, _hashed_counts(tr, "treatmentstring", "tx"), rc_counts]
  return _to_stays(stays, parts), {"treatment_rows_in_window": len(tr),
                                   "respiratory_rows_in_window": len(rc)}


def _microbiology(tables, directory, stays, window_min):
  """Cultures TAKEN in the window: only what is known when a culture is ordered (how
  many, from which sites). The organism and sensitivity columns are results that
  arrive days later, and microLab has one row per organism and antibiotic tested, so
  neither they nor the row count are read."""
  rows = _events(tables, directory, "microLab",
                 {STAY: pl.Int64, "culturetakenoffset": pl.Int64,
                  "culturesite": pl.String},
                 "culturetakenoffset", stays, window_min)
  site = pl.col("culturesite").str.strip_chars().str.to_lowercase()
  counts = rows.group_by(STAY).agg(
      pl.struct("culturetakenoffset", site).n_unique().cast(pl.Float64)
      .alias("micro_cultures"),
      site.n_unique().cast(pl.Float64).alias("micro_sites"))
  return _to_stays(stays, [counts]), {"rows_in_window": len(rows)}


def _lab_long(lf: pl.LazyFrame) -> pl.LazyFrame:
  return lf.filter(pl.col("labname").str.strip_chars().is_in(list(LAB_NAMES))).select(
      STAY, "labresultoffset", pl.col("labname").str.strip_chars().alias("variable"),
      pl.col("labresult").alias("value"))


def modality_stage(name: str, directory: str, stays: np.ndarray, window_min: float,
                   scratch: str, batch_values: int, tables: CsvTables
                   ) -> tuple[pl.DataFrame, dict[str, Any]]:
  """One modality's per-stay frame (stay id, present, features) and its report.

  Scratch files go to the folder `scratch`; time series are featurised in batches of
  stays holding about `batch_values` values; tables are scanned through `tables` (the
  row policy for values that do not parse).
  """
  series = {"vitals_periodic": ("vitalPeriodic", "observationoffset", PERIODIC_VITALS),
            "vitals_aperiodic": ("vitalAperiodic", "observationoffset", APERIODIC_VITALS),
            "intake_output": ("intakeOutput", "intakeoutputoffset", IO_VARIABLES)}
  if name in series:
    table, offset, variables = series[name]
    return _series_stage(tables, directory, table, offset, variables, name, stays,
                         window_min, scratch, batch_values)
  if name == "lab":
    return _series_stage(tables, directory, "lab", "labresultoffset", LAB_NAMES, name,
                         stays, window_min, scratch, batch_values, long=_lab_long,
                         columns={STAY: pl.Int64, "labresultoffset": pl.Int64,
                                  "labname": pl.String, "labresult": pl.Float64})
  fn = {"medication": _medication, "infusion": _infusion, "diagnosis": _diagnosis,
        "treatment_resp": _treatment_resp, "microbiology": _microbiology}[name]
  return fn(tables, directory, stays, window_min)
