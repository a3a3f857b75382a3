"""Features of a MEDS event stream before each prediction time (the `meds` source).

Input: the events (``subject_id, time, code, value``, lazily scanned) and the cohort's
rows (``row, subject_id, prediction_time``). Only events with ``time < prediction_time``
(strictly) and, with a window of W hours, ``time >= prediction_time - W`` reach a
feature; events without a time are static (MEDS: known at every time) and only feed the
demographics' sex codes. Codes are given to modalities by prefix (`modality_of`: the
first declared modality whose prefix starts the code); a modality is observed for a row
when any of its codes occurs in the row's window.

Per modality, in this order (feature names in brackets):

* ``n_events``: events of the modality in the window;
* the ``numeric_codes`` most frequent codes that carry a numeric value (in the
  vocabulary rows: the training rows when the splits are known, else every row): last
  value (``<code>:last``; ties in time: the
  larger value), mean (``<code>:mean``) and count of valued events (``<code>:count``);
  count 0 and NaN last / mean when the code has no value in the window;
* the ``count_codes`` most frequent codes that never carry one: their event counts
  (``<code>:count``);
* for a text modality (``text_modalities``): the mean embedding of its events'
  ``text_value`` notes in the window (``text_0`` ...; `text_features`).

Frequency is the number of events in the vocabulary rows' windows, ties by code. Plus
one modality that is always observed: ``demographics`` when the data hold
``MEDS_BIRTH`` or ``GENDER//`` codes (age in years at the prediction time from the
latest MEDS_BIRTH before it, NaN if none; one 0/1 column per GENDER code; all events in
the window), else ``events`` (all events in the window).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl

BIRTH = "MEDS_BIRTH"
GENDER = "GENDER//"
YEAR_US = 365.25 * 24 * 3600 * 1e6


def modality_of(modalities: Sequence[tuple[str, tuple[str, ...]]]) -> pl.Expr:
  """The modality name of column ``code`` (null when no prefix matches)."""
  expr = None
  for name, prefixes in modalities:
    hit = pl.any_horizontal([pl.col("code").str.starts_with(p) for p in prefixes])
    expr = pl.when(hit).then(pl.lit(name)) if expr is None else expr.when(hit).then(
        pl.lit(name))
  return expr.otherwise(pl.lit(None, pl.String)).alias("modality")


def windowed(events: pl.LazyFrame, rows: pl.DataFrame, window_hours: float) -> pl.LazyFrame:
  """Events strictly before each row's prediction time (and inside the window): one
  event per (row, event) pair, with column ``row``."""
  lf = events.filter(pl.col("time").is_not_null()).join(
      rows.lazy().select("row", "subject_id", "prediction_time"), on="subject_id",
      how="inner")
  keep = pl.col("time") < pl.col("prediction_time")
  if window_hours > 0:
    keep = keep & (pl.col("time") >= pl.col("prediction_time")
                   - pl.duration(microseconds=int(window_hours * 3600 * 1e6)))
  return lf.filter(keep)


def code_stats(ev: pl.DataFrame, vocab_rows: np.ndarray) -> pl.DataFrame:
  """(modality, code, n, numeric) over the windowed events of `vocab_rows`: one batch's
  share of the vocabulary counts (`vocabulary` adds the batches up)."""
  return (ev.filter(pl.col("row").is_in(vocab_rows.tolist()) & pl.col("modality")
                    .is_not_null())
          .group_by("modality", "code")
          .agg(pl.len().alias("n"), pl.col("value").is_not_null().any().alias("numeric")))


def vocabulary(stats: pl.DataFrame, numeric_k: int,
               count_k: int) -> dict[str, tuple[list[str], list[str]]]:
  """modality -> (numeric codes, count codes), the most frequent in `stats` (`code_stats`
  of every batch, concatenated)."""
  stats = (stats.group_by("modality", "code")
           .agg(pl.col("n").sum(), pl.col("numeric").any())
           .sort(["modality", "n", "code"], descending=[False, True, False]))
  out = {}
  for (name,), part in stats.group_by(["modality"], maintain_order=True):
    num = part.filter(pl.col("numeric"))["code"].head(numeric_k).to_list()
    cnt = part.filter(~pl.col("numeric"))["code"].head(count_k).to_list()
    out[name] = (num, cnt)
  return out


def _scatter(out_NxD: np.ndarray, df: pl.DataFrame, column_of: dict[str, int],
             stats: Sequence[str]) -> None:
  """Writes ``df`` (row, code, stats...) into the columns ``column_of[code] + k``."""
  if not len(df):
    return
  rows = df["row"].to_numpy()
  base = np.array([column_of[c] for c in df["code"].to_list()], np.int64)
  for k, stat in enumerate(stats):
    out_NxD[rows, base + k] = df[stat].to_numpy().astype(np.float64)


def modality_features(ev: pl.DataFrame, n: int, name: str, numeric: list[str],
                      counts: list[str]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """(features (N, d) float32, present (N,), names) of one modality from its windowed
  events ``ev`` (row, time, code, value)."""
  names = ["n_events"]
  column_of_num, column_of_cnt = {}, {}
  for code in numeric:
    column_of_num[code] = len(names)
    names += [f"{code}:last", f"{code}:mean", f"{code}:count"]
  for code in counts:
    column_of_cnt[code] = len(names)
    names.append(f"{code}:count")
  out = np.zeros((n, len(names)), np.float64)
  per_row = ev.group_by("row").len()
  present = np.zeros(n, bool)
  present[per_row["row"].to_numpy()] = True
  out[per_row["row"].to_numpy(), 0] = per_row["len"].to_numpy()
  for code, col in column_of_num.items():       # observed, not measured: NaN, NaN, 0
    out[present, col:col + 2] = np.nan
  valued = (ev.filter(pl.col("code").is_in(numeric) & pl.col("value").is_not_null())
            .sort("row", "code", "time", "value")
            .group_by("row", "code")
            .agg(pl.col("value").last().alias("last"), pl.col("value").mean().alias("mean"),
                 pl.len().alias("count")))
  _scatter(out, valued, column_of_num, ("last", "mean", "count"))
  counted = ev.filter(pl.col("code").is_in(counts)).group_by("row", "code").len()
  _scatter(out, counted, column_of_cnt, ("len",))
  out[~present] = 0.0
  return out.astype(np.float32), present, tuple(names)


def demographics(ev: pl.DataFrame, static: pl.DataFrame, rows: pl.DataFrame,
                 gender_codes: list[str], has_birth: bool
                 ) -> tuple[np.ndarray, tuple[str, ...]]:
  """The always-observed modality's features (see the module docstring): ev holds every
  windowed event (row, time, code); `static` the events without a time."""
  n = len(rows)
  names = (["age_years"] if has_birth else []) + [f"{c}" for c in gender_codes] + [
      "n_events"]
  out = np.zeros((n, len(names)), np.float64)
  col = 0
  if has_birth:
    birth = (ev.filter(pl.col("code") == BIRTH).group_by("row")
             .agg(pl.col("time").max().alias("birth"))
             .join(rows.select("row", "prediction_time"), on="row")
             .select("row", ((pl.col("prediction_time") - pl.col("birth"))
                             .dt.total_microseconds() / YEAR_US).alias("age")))
    out[:, 0] = np.nan
    out[birth["row"].to_numpy(), 0] = birth["age"].to_numpy()
    col = 1
  if gender_codes:
    sex = pl.concat([static.select("subject_id", "code"),
                     ev.select("subject_id", "code")]).filter(
        pl.col("code").is_in(gender_codes)).unique()
    hit = rows.select("row", "subject_id").join(sex, on="subject_id")
    where = {c: col + k for k, c in enumerate(gender_codes)}
    cols = np.array([where[c] for c in hit["code"].to_list()], np.int64)
    out[hit["row"].to_numpy(), cols] = 1.0
  total = ev.group_by("row").len()
  out[total["row"].to_numpy(), -1] = total["len"].to_numpy()
  return out.astype(np.float32), tuple(names)


def text_features(tx: pl.DataFrame, n: int, encoder) -> tuple[np.ndarray, tuple[str, ...]]:
  """(N, dim) float32: the mean embedding (`encoder.encode`) of the notes (``text_value``)
  of each row's window, 0 for a row without one; names ``text_0`` ... ``text_<dim-1>``.
  ``tx`` holds (row, text_value) of one modality's windowed events."""
  out_NxD = np.zeros((n, encoder.dim), np.float64)
  if len(tx):
    rows = tx["row"].to_numpy()
    np.add.at(out_NxD, rows, encoder.encode(tx["text_value"].to_list()))
    count_N = np.bincount(rows, minlength=n)
    out_NxD[count_N > 0] /= count_N[count_N > 0, None]
  return out_NxD.astype(np.float32), tuple(f"text_{k}" for k in range(encoder.dim))
