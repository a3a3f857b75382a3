"""MIMIC-IV feature stages: the ehr modality's blocks, the notes and the chest X-rays.

Each stage takes a reader's lazy, windowed rows (`frames`) and returns a per-subject
frame (``subject_id``, ``present``, features, rows in `subjects` order) plus a report;
`load_mimic` caches each one as a parquet file. What each feature means is described
in the docstring of `crl_mmnar_jax.data.sources.mimic`.

* ehr: `static_features` (admission-level columns from the cohort frame),
  `series_stage` (labs, vitals: `featurize.featurize_batched`, in batches of subjects),
  `count_stage` (prescriptions, diagnoses, procedures: counts and hashed buckets);
  `feature_block` turns a stage frame into a block of the ehr modality.
* notes: `note_stage` (mean text embedding, encoded in batches of subjects).
* cxr: `cxr_stage` (mean image embedding of the frontal images in the window).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl

from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.featurize import ModalityGroup, featurize_batched, hash_bucket
from crl_mmnar_jax.data.row_policy import CsvTables
from crl_mmnar_jax.data.sources.mimic import tfrecord
from crl_mmnar_jax.data.sources.mimic.frames import collect, in_window, sink, subjects_in
from crl_mmnar_jax.data.sources.mimic.schema import (
  ADMISSION_LOCATIONS,
  ADMISSION_TYPES,
  CXR_METADATA_COLUMNS,
  DISCHARGE_LOCATIONS,
  FRONTAL_VIEWS,
  INSURANCES,
  TIMESTAMP,
)

TEXT_DIM = 768
# Notes per row group of the note stage's scratch file: the sink buffers one row group
# (polars' default, 512² rows, would hold ~1.5 GB of MIMIC-IV discharge text).
NOTE_ROW_GROUP = 4096
# Notes encoded at once, at most (besides `batch_chars`): the encoder's output for a batch
# is (notes, dim) float32 (the hashed encoder also holds it in float64), ~150 MB here.
NOTE_BATCH_NOTES = 16_384
N_CODE_BUCKETS = 32
VALID_RANGES: dict[str, tuple[float, float]] = {
    "heart_rate": (10.0, 300.0), "resp_rate": (1.0, 100.0), "spo2": (10.0, 100.0),
    "temperature_f": (77.0, 113.0), "temperature_c": (25.0, 45.0),
    "nbp_systolic": (20.0, 300.0), "nbp_diastolic": (5.0, 250.0), "nbp_mean": (10.0, 300.0),
    "abp_systolic": (20.0, 300.0), "abp_diastolic": (5.0, 250.0), "abp_mean": (10.0, 300.0),
    "sodium": (90.0, 200.0), "potassium": (1.0, 12.0), "ph": (6.5, 8.0),
    "creatinine": (0.05, 30.0), "glucose": (5.0, 2000.0),
}
RACE_GROUPS = ("white", "black", "hispanic", "asian", "other")
_RACE_UNKNOWN = ("UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER")


def bucket(text: str, n: int = N_CODE_BUCKETS) -> int:
  """Stable hash bucket: CRC-32 of the lower-cased stripped UTF-8 string, modulo n."""
  return hash_bucket(text, n)


# ----------------------------------------------------------------------------- ehr


def _onehot(col: str, values: Sequence[str], prefix: str) -> list[pl.Expr]:
  v = pl.col(col)
  return [pl.when(v.is_null()).then(None).otherwise((v == u).cast(pl.Float64))
          .alias(f"{prefix}={u}") for u in values]


def _race_group() -> pl.Expr:
  r = pl.col("race").str.to_uppercase()
  return (pl.when(r.is_null() | r.is_in(list(_RACE_UNKNOWN))).then(None)
          .when(r.str.starts_with("WHITE")).then(pl.lit("white"))
          .when(r.str.starts_with("BLACK")).then(pl.lit("black"))
          .when(r.str.starts_with("HISPANIC") | r.str.starts_with("SOUTH AMERICAN"))
          .then(pl.lit("hispanic"))
          .when(r.str.starts_with("ASIAN")).then(pl.lit("asian"))
          .otherwise(pl.lit("other")).alias("race"))


def static_features(base: pl.DataFrame, kind: str) -> pl.DataFrame:
  """The ehr modality's admission-level columns (all Float64, NaN = not recorded)."""
  exprs = [pl.col(c).cast(pl.Float64) for c in ("age", "male", "los_hours", "icu_stays")]
  exprs += _onehot("admission_type", ADMISSION_TYPES, "admission_type")
  exprs += _onehot("admission_location", ADMISSION_LOCATIONS, "admission_location")
  exprs += _onehot("discharge_location", DISCHARGE_LOCATIONS, "discharge_location")
  if kind == "raw":
    exprs += _onehot("insurance", INSURANCES, "insurance")
    exprs += _onehot("race", RACE_GROUPS, "race")
  return base.with_columns(_race_group()).select(exprs).fill_null(float("nan"))


def series_stage(rows: pl.LazyFrame, path: str, items: dict[int, str], name: str,
                 subjects: np.ndarray, scratch: str, batch_values: int
                 ) -> tuple[pl.DataFrame, dict]:
  """Windowed (subject_id, time, itemid, value, admittime) rows -> featurised, batched.

  Pass 1 streams the in-window rows into a scratch parquet file in the folder
  `scratch`; pass 2 featurises contiguous ranges of sorted subject ids holding about
  `batch_values` values each.
  """
  rows_path = os.path.join(scratch, f".{name}.rows.parquet")
  hours = (pl.col("time") - pl.col("admittime")).dt.total_microseconds() / 3.6e9
  sink(rows.select("subject_id", hours.alias("hours"),
                   pl.col("itemid").replace_strict(list(items), list(items.values()),
                                                   return_dtype=pl.String)
                   .alias("variable"), "value"), rows_path, path)
  group = [ModalityGroup(name, tuple(items.values()))]
  sorted_S = np.sort(subjects)
  per = pl.scan_parquet(rows_path).group_by("subject_id").len().collect()
  n_S = (pl.DataFrame({"subject_id": sorted_S}).join(per, on="subject_id", how="left")
         ["len"].fill_null(0).to_numpy().astype(np.int64))
  batch_S = (np.cumsum(n_S) - n_S) // batch_values

  def load_batch(batch: np.ndarray) -> pl.DataFrame:
    return pl.scan_parquet(rows_path).filter(
        pl.col("subject_id").is_between(int(batch[0]), int(batch[-1]))
        & pl.col("subject_id").is_in(pl.Series(batch).implode())).collect()

  df, report = featurize_batched(load_batch, group, sorted_S, batch_S, "subject_id",
                                 window=(0.0, float("inf")), valid_ranges=VALID_RANGES,
                                 out_of_range="drop", stay_col="subject_id",
                                 time_col="hours", unknown_variables="ignore")
  os.remove(rows_path)
  return df[np.searchsorted(sorted_S, subjects)], report    # sorted -> `subjects` order


def count_stage(rows: pl.LazyFrame, path: str, key: str, prefix: str,
                subjects: np.ndarray) -> tuple[pl.DataFrame, dict]:
  """(subject_id, key) rows -> entries, distinct keys and hashed key buckets.

  Keys are compared stripped and lower-cased; the rows are reduced to (subject, key)
  counts while streaming, so only the distinct pairs are held in memory.
  """
  pairs = collect(rows.select("subject_id", pl.col(key).str.strip_chars().str.to_lowercase())
                  .drop_nulls(key).group_by("subject_id", key).len(), path)
  keys = pairs[key].unique().to_list()
  mapping = pl.DataFrame({key: keys, "_b": [bucket(k) for k in keys]},
                         schema={key: pl.String, "_b": pl.Int64})
  counts = pairs.group_by("subject_id").agg(
      pl.col("len").sum().cast(pl.Float64).alias(f"{prefix}_entries"),
      pl.len().cast(pl.Float64).alias(f"{prefix}_distinct"))
  per_bucket = (pairs.join(mapping, on=key, how="inner").group_by("subject_id").agg(
      pl.col("len").filter(pl.col("_b") == b).sum().cast(pl.Float64)
      .alias(f"{prefix}_bucket{b:02d}") for b in range(N_CODE_BUCKETS)))
  df = (pl.DataFrame({"subject_id": subjects}).join(counts, on="subject_id", how="left")
        .join(per_bucket, on="subject_id", how="left"))
  df = df.select("subject_id", pl.col(f"{prefix}_entries").is_not_null().alias("present"),
                 pl.exclude("subject_id").fill_null(0.0))
  return df, {"rows_in_window": int(pairs["len"].sum())}



def feature_block(df: pl.DataFrame, stats_nan_when_absent: bool
                  ) -> tuple[np.ndarray, list[str]]:
  """A stage frame's features as an ehr block; absent rows: counts 0, statistics NaN."""
  cols = [c for c in df.columns if c not in ("subject_id", "present")]
  x = df.select(cols).to_numpy().astype(np.float32)
  if stats_nan_when_absent:
    absent = ~df["present"].to_numpy().astype(bool)
    stat = np.array([not c.endswith("_count") for c in cols])
    x[np.ix_(absent, stat)] = np.nan
  return x, cols


# ----------------------------------------------------------------------------- notes, cxr


def _embedding_frame(subjects: np.ndarray, sums_NxD: np.ndarray, counts_N: np.ndarray,
                     prefix: str) -> pl.DataFrame:
  """Per-subject means from per-subject sums and counts (rows of `subjects`). Divides
  `sums_NxD` in place (float32), in chunks of rows that have a sum, so no other (N, D)
  array is made (at full MIMIC-IV scale one is ~0.5 GB) and the rows of subjects without
  an entry (zero pages of `np.zeros`) are never touched."""
  present_N = counts_N > 0
  rows = np.flatnonzero(present_N)
  for start in range(0, len(rows), 4096):
    r = rows[start:start + 4096]
    sums_NxD[r] /= counts_N[r, None].astype(np.float32)
  names = [f"{prefix}{j:03d}" for j in range(sums_NxD.shape[1])]
  df = pl.DataFrame({"subject_id": subjects, "present": present_N})
  return df.hstack(pl.DataFrame(sums_NxD, schema=names, orient="row"))


def _batches(chars_S: np.ndarray, notes_S: np.ndarray, max_chars: int, max_notes: int
             ) -> np.ndarray:
  """Batch id per subject (in order): a new batch starts where the subject would take
  the current one past `max_chars` characters or `max_notes` notes (a subject's notes
  stay together, so one subject alone may exceed them)."""
  batch_S = np.zeros(len(chars_S), np.int64)
  b = chars = notes = 0
  for i, (c, n) in enumerate(zip(chars_S.tolist(), notes_S.tolist())):
    if notes and (chars + c > max_chars or notes + n > max_notes):
      b, chars, notes = b + 1, 0, 0
    chars, notes = chars + c, notes + n
    batch_S[i] = b
  return batch_S


def note_stage(rows: pl.LazyFrame, path: str, name: str, subjects: np.ndarray,
               encoder_fn: Callable[[], Any], scratch: str, batch_chars: int,
               batch_notes: int = NOTE_BATCH_NOTES) -> tuple[pl.DataFrame, dict]:
  """Notes -> mean text embedding per subject, encoded in batches of subjects holding
  at most `batch_chars` characters and `batch_notes` notes (`_batches`; the encoder is
  built only when a note is there).
  Each batch's embeddings are added into per-subject float32 sums and dropped, so
  memory holds one batch of notes plus the cohort's (N, dim) output."""
  rows_path = os.path.join(scratch, f".{name}.rows.parquet")
  sink(rows.select("subject_id", "charttime", "note_id", pl.col("text").fill_null("")),
       rows_path, path, row_group_size=NOTE_ROW_GROUP)
  per = (pl.scan_parquet(rows_path).group_by("subject_id")
         .agg(pl.col("text").str.len_chars().sum().alias("chars"), pl.len().alias("n"))
         .sort("subject_id").collect())
  ids_S = per["subject_id"].to_numpy()
  chars_S = per["chars"].to_numpy().astype(np.int64)
  batch_S = _batches(chars_S, per["n"].to_numpy(), batch_chars, batch_notes)
  encoder = encoder_fn() if len(ids_S) else None
  dim = encoder.dim if encoder is not None else TEXT_DIM
  sums_NxD = np.zeros((len(subjects), dim), np.float32)
  counts_N = np.zeros(len(subjects), np.int64)
  for b in np.unique(batch_S):
    batch = ids_S[batch_S == b]
    notes = collect(pl.scan_parquet(rows_path)     # streaming: one batch's notes held
                    .filter(pl.col("subject_id").is_between(int(batch[0]), int(batch[-1]))
                            & pl.col("subject_id").is_in(pl.Series(batch).implode()))
                    .sort("subject_id", "charttime", "note_id"), rows_path)
    x_BxD = np.asarray(encoder.encode(notes["text"].to_list()), np.float32)
    uniq, start, count = np.unique(notes["subject_id"].to_numpy(), return_index=True,
                                   return_counts=True)
    rows_U = np.searchsorted(subjects, uniq)
    sums_NxD[rows_U] += np.add.reduceat(x_BxD, start, axis=0, dtype=np.float32)
    counts_N[rows_U] += count
    del notes, x_BxD
  os.remove(rows_path)
  return _embedding_frame(subjects, sums_NxD, counts_N, "emb"), {
      "notes_in_window": int(per["n"].sum()) if len(per) else 0,
      "subjects_with_notes": len(ids_S)}


def _study_time() -> pl.Expr:
  """MIMIC-CXR StudyDate (YYYYMMDD) + StudyTime (HHMMSS.fff; null: midnight)."""
  date = pl.col("StudyDate").cast(pl.String).str.to_date("%Y%m%d", strict=False)
  t = pl.col("StudyTime").fill_null(0.0)
  seconds = (t // 10000) * 3600 + ((t // 100) % 100) * 60 + t % 100
  micros = (seconds * 1e6).round().cast(pl.Int64)
  return (date.cast(TIMESTAMP) + pl.duration(microseconds=micros)).alias("time")


def _scan_embeddings(path: str, dicom_ids: pl.Series) -> tuple[pl.LazyFrame, list[str]]:
  """Lazy (dicom_id, numeric columns as Float32) of an embeddings file (any width): a
  parquet or csv table, or TFRecord files (a ``.tfrecord`` file or a folder of them,
  `tfrecord`; only those of `dicom_ids` are opened)."""
  if path.endswith(tfrecord.SUFFIX) or os.path.isdir(path):
    df = tfrecord.read_embeddings(path, dicom_ids.to_list())
    return df.lazy(), [c for c in df.columns if c != "dicom_id"]
  if not os.path.isfile(path):
    raise DataError(f"{path}: CXR embeddings file not found")
  try:
    if path.endswith(".parquet"):
      lf = pl.scan_parquet(path)
    else:
      lf = pl.scan_csv(path, infer_schema_length=10000, schema_overrides={"dicom_id": pl.String})
    schema = lf.collect_schema()
  except Exception as e:  # pylint: disable=broad-except  (any reader error is bad input)
    raise DataError(f"{path}: cannot read the CXR embeddings ({type(e).__name__}: {e})"
                    ) from None
  if "dicom_id" not in schema:
    raise DataError(f"{path}: CXR embeddings lack column 'dicom_id' (has {list(schema)[:10]})")
  cols = [c for c in schema if c not in ("dicom_id", "subject_id", "study_id")]
  bad = [c for c in cols if not schema[c].is_numeric()]
  if bad or not cols:
    raise DataError(f"{path}: CXR embedding columns must be numeric, found {bad[:5] or 'none'}")
  return lf.select(pl.col("dicom_id").cast(pl.String),
                   *(pl.col(c).cast(pl.Float32) for c in cols)), cols


def cxr_stage(metadata: str, embeddings: str, windows: pl.DataFrame,
              subjects: np.ndarray, tables: CsvTables) -> tuple[pl.DataFrame, dict]:
  """Mean embedding of the frontal images whose study lies in the window. The images'
  embeddings are summed per subject while the file streams (float32), never held all
  at once."""
  lf = tables.scan(metadata, CXR_METADATA_COLUMNS, "MIMIC-CXR metadata")
  lf = lf.filter(subjects_in(windows)
                 & pl.col("ViewPosition").str.strip_chars().is_in(list(FRONTAL_VIEWS)))
  images = collect(in_window(lf.with_columns(_study_time()), windows)
                   .select("subject_id", "dicom_id"), metadata)
  emb, cols = _scan_embeddings(embeddings, images["dicom_id"])
  joined = emb.filter(pl.col("dicom_id").is_in(images["dicom_id"].implode())).join(
      images.lazy(), on="dicom_id", how="inner")
  per = collect(joined.group_by("subject_id").agg(
      pl.len().alias("_n"),
      *(pl.col(c).is_finite().all().alias(f"_ok{j}") for j, c in enumerate(cols)),
      *(pl.col(c).sum() for c in cols)), embeddings).sort("subject_id")
  if not per.select(pl.all_horizontal(f"_ok{j}" for j in range(len(cols)))
                    ).to_series().all():
    raise DataError(f"{embeddings}: CXR embeddings hold NaN or Inf values")
  sums_NxD = np.zeros((len(subjects), len(cols)), np.float32)
  counts_N = np.zeros(len(subjects), np.int64)
  rows = np.searchsorted(subjects, per["subject_id"].to_numpy())
  sums_NxD[rows] = np.asarray(per.select(cols).to_numpy(), np.float32)
  counts_N[rows] = per["_n"].to_numpy()
  del per                                             # (its sums are in sums_NxD now)
  df = _embedding_frame(subjects, sums_NxD, counts_N, "cxr")
  return df, {"frontal_images_in_window": len(images),
              "images_without_embedding": len(images) - int(counts_N.sum())}
