"""Fixed-size features from irregular clinical time series, one modality per group.

Input is a long table with one row per measurement: a stay id, the time in hours from
admission, a variable name and a numeric value. Variables are grouped into virtual
modalities (`ModalityGroup`: what a clinician orders or charts together); each group
becomes one `Cohort` modality with 8 statistics per variable (`STATS`):

======== =================================================================
stat     meaning (over the stay's usable measurements of the variable)
======== =================================================================
last     value of the latest measurement (ties in time: the later input row)
mean     mean value
min      smallest value
max      largest value
std      population standard deviation (0 with one measurement)
count    number of measurements
time_last  time (hours) of the latest measurement
slope    ordinary least-squares slope of value on time (units per hour);
         NaN with fewer than two distinct times
======== =================================================================

A measurement is *usable* when its time and value are finite, window[0] <= time <=
window[1], and its value lies inside the variable's valid range (``valid_ranges``,
bounds inclusive) or was clipped into it (``out_of_range="clip"``).

Missingness follows the `Cohort` conventions:

* A group is observed for a stay (``present[i, g]``) when at least one of its variables
  has a usable measurement. A group whose only measurements fell outside the window or
  were dropped as impossible is NOT observed.
* Group observed, variable not measured: ``count = 0`` and the 7 other statistics NaN
  ("not measured"; `data.standardize` imputes them with training statistics only).
* Group not observed: the whole row is 0 and ``present`` is False.

Everything is vectorised: two polars queries over the same lazy input, collected
together (a per-variable report, and one ``group_by(stay, variable)`` aggregation:
sort-by-time last, mean, min, max, std, count, max/min time, and the slope from the
centered second moments of time and value, which give the same bits on every load),
then one numpy scatter into the output arrays. Time and memory grow linearly with the
number of measurements (plus the output, N x sum of group widths); input ordered by
stay, as EHR extracts usually are, keeps the aggregation cache-friendly
(`python -m experiments.bench --only=featurize`).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import polars as pl
from absl import logging

from crl_mmnar_jax.data.errors import DataError

STATS = ("last", "mean", "min", "max", "std", "count", "time_last", "slope")
_COUNT = STATS.index("count")
_OUT_OF_RANGE_ACTIONS = ("drop", "clip")
_UNKNOWN_ACTIONS = ("error", "ignore")


@dataclasses.dataclass(frozen=True)
class ModalityGroup:
  """A virtual modality: variables that are ordered or charted together."""

  name: str
  variables: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Featurized:
  """Per-group feature matrices for N stays (see the module docstring)."""

  stay_id: np.ndarray                            # (N,) order of `stays` or sorted ids
  features: tuple[np.ndarray, ...]               # per group (N, len(variables) * 8) f32
  present: np.ndarray                            # (N, G) bool
  feature_names: tuple[tuple[str, ...], ...]     # f"{variable}_{stat}", variable-major
  group_names: tuple[str, ...]
  report: dict                                   # counts, see `featurize`


# ----------------------------------------------------------------------------- checks


def _check_groups(groups: Sequence[ModalityGroup]) -> list[str]:
  """All variables in group order; raises ValueError for an invalid grouping."""
  if not groups:
    raise ValueError("featurize: at least one ModalityGroup is needed")
  names = [g.name for g in groups]
  if len(set(names)) != len(names):
    raise ValueError(f"featurize: duplicate group names {names}")
  variables: list[str] = []
  for g in groups:
    if isinstance(g.variables, str) or not g.variables:
      raise ValueError(f"featurize: group '{g.name}' needs a non-empty tuple of variable "
                       f"names, got {g.variables!r}")
    variables += list(g.variables)
  seen, dup = set(), []
  for v in variables:
    if v in seen:
      dup.append(v)
    seen.add(v)
  if dup:
    raise ValueError(f"featurize: variable(s) {sorted(set(dup))} belong to more than one "
                     f"group; each variable must belong to exactly one")
  return variables


def _check_ranges(valid_ranges: Mapping[str, tuple[float, float]] | None,
                  variables: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """(lo_V, hi_V) float64 bounds per variable (-inf/inf where none is given)."""
  lo_V = np.full(len(variables), -np.inf)
  hi_V = np.full(len(variables), np.inf)
  index = {v: j for j, v in enumerate(variables)}
  for var, bounds in (valid_ranges or {}).items():
    lo, hi = (float(b) for b in bounds)
    if np.isnan(lo) or np.isnan(hi) or lo > hi:
      raise ValueError(f"featurize: valid range of '{var}' must be (lo, hi) with lo <= hi, "
                       f"got {bounds!r}")
    if var in index:        # ranges of variables outside the groups are simply unused
      lo_V[index[var]], hi_V[index[var]] = lo, hi
  return lo_V, hi_V


def _id_dtype(dtype: pl.DataType, what: str) -> pl.DataType:
  if dtype.is_integer():
    return pl.Int64
  if dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)):
    return pl.String
  raise DataError(f"featurize: {what} has dtype {dtype}; stay ids must be integers or "
                  f"strings")


def _stays_series(stays: np.ndarray, dtype: pl.DataType) -> pl.Series:
  """`stays` as a polars Series of the measurement table's id dtype, checked unique."""
  stays = np.asarray(stays)
  if stays.ndim != 1:
    raise ValueError(f"featurize: stays must be 1-D, got shape {stays.shape}")
  kind = "int" if stays.dtype.kind in "iu" else "str" if stays.dtype.kind in "UO" else None
  if (kind == "int") != (dtype == pl.Int64) or (kind is None and len(stays)):
    raise DataError(f"featurize: stays has dtype {stays.dtype} but the measurement table's "
                    f"stay ids are {'integers' if dtype == pl.Int64 else 'strings'}")
  series = pl.Series("_stay", stays.tolist() if kind == "str" else stays, dtype=dtype)
  if series.null_count():
    raise DataError("featurize: stays holds null ids")
  dup = series.filter(series.is_duplicated())
  if len(dup):
    raise DataError(f"featurize: stays lists {dup.n_unique()} id(s) more than once "
                    f"({len(dup)} rows)")
  return series


def _prepare(measurements: pl.DataFrame | pl.LazyFrame, stay_col: str, time_col: str,
             var_col: str, value_col: str) -> tuple[pl.LazyFrame, pl.DataType]:
  """The input as a lazy frame with columns _stay, _t, _var, _v (types checked)."""
  lf = measurements.lazy()
  schema = lf.collect_schema()
  missing = [c for c in (stay_col, time_col, var_col, value_col) if c not in schema]
  if missing:
    raise DataError(f"featurize: measurement table has no column(s) {missing} (found "
                    f"{list(schema)})")
  id_dtype = _id_dtype(schema[stay_col], f"column '{stay_col}'")
  for col in (time_col, value_col):
    if not (schema[col].is_numeric() or schema[col] in (pl.Boolean, pl.Null)):
      raise DataError(f"featurize: column '{col}' has dtype {schema[col]}; it must be "
                      f"numeric")
  var_dtype = schema[var_col]
  if not (var_dtype == pl.String or isinstance(var_dtype, (pl.Categorical, pl.Enum))):
    raise DataError(f"featurize: column '{var_col}' has dtype {var_dtype}; variable names "
                    f"must be strings")
  return lf.select(
      pl.col(stay_col).cast(id_dtype).alias("_stay"),
      pl.col(time_col).cast(pl.Float64).alias("_t"),
      pl.col(var_col).cast(pl.String).alias("_var"),
      pl.col(value_col).cast(pl.Float64).alias("_v"),
  ), id_dtype


# ----------------------------------------------------------------------------- featurize


def featurize(measurements: pl.DataFrame | pl.LazyFrame,
              groups: Sequence[ModalityGroup], *,
              stays: np.ndarray | None = None,
              window: tuple[float, float] = (0.0, 48.0),
              valid_ranges: Mapping[str, tuple[float, float]] | None = None,
              out_of_range: str = "drop",
              stay_col: str = "stay_id", time_col: str = "time",
              var_col: str = "variable", value_col: str = "value",
              unknown_variables: str = "error") -> Featurized:
  """Per-group, per-variable statistics of a long measurement table.

  Args:
    measurements: one row per measurement; columns named by `stay_col` (int or str),
      `time_col` (hours from admission, numeric), `var_col` (str) and `value_col`
      (numeric). Rows need not be sorted.
    groups: the virtual modalities, in output order; each variable in exactly one.
    stays: the output rows, in this order (unique). Stays without any usable
      measurement get ``present`` all False and zero rows; measurements of stays not
      listed are ignored (counted in ``report["n_unlisted_stay"]``). Default: the
      sorted unique stay ids of `measurements` (all rows, whatever their variable).
    window: (start, end) hours, inclusive; only measurements inside count.
    valid_ranges: variable -> (lo, hi), inclusive bounds of physiologically possible
      values (in the input's units). Variables without an entry are not checked.
    out_of_range: "drop" values outside the valid range, or "clip" them to it.
    stay_col, time_col, var_col, value_col: column names of `measurements`.
    unknown_variables: variables in no group: "error" raises DataError naming them,
      "ignore" drops them (counted in ``report["unknown_variables"]``).

  Returns:
    A `Featurized`. Its ``report`` holds: ``n_measurements`` (rows in),
    ``n_unlisted_stay``, ``n_unknown_variable``, ``n_invalid`` (null or non-finite time
    or value), ``n_out_of_window``, ``n_in_window`` (known variable, listed stay, finite,
    in the window), ``n_out_of_range`` (dropped or clipped), ``n_used`` (entered the
    statistics), ``out_of_range_action``, ``out_of_range`` (variable -> count, only
    variables with some), ``unknown_variables`` (variable -> count), ``per_variable``
    (variable -> {measurements, in_window, out_of_window, out_of_range, used}),
    ``n_stays`` and ``observed`` (group -> number of stays observed).

  Raises:
    DataError: missing columns, wrong dtypes, null stay ids or variable names, unknown
      variables (with ``unknown_variables="error"``), `stays` of another id type.
    ValueError: invalid arguments (groups, window, ranges, options).
  """
  if out_of_range not in _OUT_OF_RANGE_ACTIONS:
    raise ValueError(f"featurize: out_of_range must be one of {_OUT_OF_RANGE_ACTIONS}, "
                     f"got {out_of_range!r}")
  if unknown_variables not in _UNKNOWN_ACTIONS:
    raise ValueError(f"featurize: unknown_variables must be one of {_UNKNOWN_ACTIONS}, "
                     f"got {unknown_variables!r}")
  start, end = (float(w) for w in window)
  if not start <= end:
    raise ValueError(f"featurize: window must be (start, end) with start <= end, got "
                     f"{window!r}")
  variables = _check_groups(groups)
  n_vars = len(variables)
  lo_V, hi_V = _check_ranges(valid_ranges, variables)
  lf, id_dtype = _prepare(measurements, stay_col, time_col, var_col, value_col)
  stays_s = None if stays is None else _stays_series(stays, id_dtype)

  # Per-row flags, all vectorised. _j is the variable's index (null: unknown variable).
  var_index = pl.col("_var").replace_strict(variables, list(range(n_vars)), default=None,
                                            return_dtype=pl.Int32)
  lf = lf.with_row_index("_i").with_columns(var_index.alias("_j"))
  lf = lf.with_columns(
      pl.col("_j").replace_strict(list(range(n_vars)), lo_V.tolist(), default=-np.inf,
                                  return_dtype=pl.Float64).alias("_lo"),
      pl.col("_j").replace_strict(list(range(n_vars)), hi_V.tolist(), default=np.inf,
                                  return_dtype=pl.Float64).alias("_hi"),
      (pl.lit(True) if stays_s is None else pl.col("_stay").is_in(stays_s.implode())
       ).alias("_listed"),
      (pl.col("_t").is_finite() & pl.col("_v").is_finite()).fill_null(False).alias("_ok"),
  )
  known = pl.col("_j").is_not_null()
  base = pl.col("_listed") & known
  valid = base & pl.col("_ok")
  in_window = valid & pl.col("_t").is_between(start, end)
  in_range = pl.col("_v").is_between(pl.col("_lo"), pl.col("_hi"))
  lf = lf.with_columns(
      (~pl.col("_listed")).alias("_unlisted"),
      (pl.col("_listed") & ~known).alias("_unknown"),
      (base & ~pl.col("_ok")).alias("_invalid"),
      (valid & ~pl.col("_t").is_between(start, end)).alias("_out_win"),
      in_window.alias("_in_win"),
      (in_window & ~in_range).alias("_oor"),
  )
  report_lf = lf.group_by("_var").agg(
      pl.len().alias("measurements"),
      pl.col("_stay").is_null().sum().alias("null_stay"),
      *(pl.col(c).sum().alias(c[1:]) for c in
        ("_unlisted", "_unknown", "_invalid", "_out_win", "_in_win", "_oor")),
  )
  used = lf.filter(pl.col("_in_win") & ~pl.col("_oor") if out_of_range == "drop"
                   else pl.col("_in_win"))
  if out_of_range == "clip":
    used = used.with_columns(pl.col("_v").clip(pl.col("_lo"), pl.col("_hi")))
  t, v = pl.col("_t"), pl.col("_v")
  stats_lf = used.group_by("_stay", "_j").agg(
      v.sort_by(t, pl.col("_i")).last().alias("last"),
      v.mean().alias("mean"),
      v.min().alias("min"),
      v.max().alias("max"),
      v.std(ddof=0).alias("std"),
      pl.len().cast(pl.Float64).alias("count"),
      t.max().alias("time_last"),
      t.min().alias("_t_min"),
      # Centered two-pass moments through `mean`: `pl.cov` in a group_by gave results
      # that differed in the last bits from run to run (and so the data fingerprint).
      ((t - t.mean()) * (v - v.mean())).mean().alias("_cov"),
      ((t - t.mean()) ** 2).mean().alias("_var_t"),
  ).with_columns(
      pl.when(pl.col("_t_min") < pl.col("time_last"))
      .then(pl.col("_cov") / pl.col("_var_t")).otherwise(None).alias("slope"))
  queries = [report_lf, stats_lf]
  if stays_s is None:
    queries.append(lf.select(pl.col("_stay").unique().sort()))
  results = pl.collect_all(queries)
  report_df, stats_df = results[0], results[1]

  # Data problems found by the report pass.
  if report_df["null_stay"].sum():
    raise DataError(f"featurize: {report_df['null_stay'].sum()} measurement(s) have a null "
                    f"'{stay_col}'")
  if report_df["_var"].null_count():
    n_null = report_df.filter(pl.col("_var").is_null())["measurements"].sum()
    raise DataError(f"featurize: {n_null} measurement(s) have a null '{var_col}'")
  unknown_df = report_df.filter(pl.col("unknown") > 0).sort("_var")
  unknown = dict(zip(unknown_df["_var"].to_list(), unknown_df["unknown"].to_list()))
  if unknown and unknown_variables == "error":
    few = list(unknown.items())[:10]
    raise DataError(f"featurize: {len(unknown)} variable(s) in column '{var_col}' belong to "
                    f"no group: {', '.join(f'{k!r} ({n} rows)' for k, n in few)}"
                    f"{', ...' if len(unknown) > 10 else ''}; add them to a ModalityGroup "
                    f"or pass unknown_variables='ignore'")

  # Output rows.
  if stays_s is None:
    stays_s = results[2]["_stay"]
    if stays_s.null_count():
      raise DataError(f"featurize: measurements have a null '{stay_col}'")
  n = len(stays_s)
  rows_df = stats_df.join(
      pl.DataFrame({"_stay": stays_s}).with_row_index("_row"), on="_stay", how="inner")
  row_R = rows_df["_row"].to_numpy().astype(np.int64)
  var_R = rows_df["_j"].to_numpy().astype(np.int64)
  stats_RxS = rows_df.select(STATS).to_numpy().astype(np.float64).reshape(-1, len(STATS))

  out_NxVxS = np.full((n, n_vars, len(STATS)), np.nan, dtype=np.float32)
  out_NxVxS[:, :, _COUNT] = 0.0
  out_NxVxS[row_R, var_R] = stats_RxS.astype(np.float32)
  group_of_V = np.concatenate([np.full(len(g.variables), k) for k, g in enumerate(groups)])
  present_NxG = np.zeros((n, len(groups)), dtype=bool)
  present_NxG[row_R, group_of_V[var_R]] = True

  features, feature_names, offset = [], [], 0
  for k, g in enumerate(groups):
    width = len(g.variables)
    x = out_NxVxS[:, offset:offset + width].reshape(n, width * len(STATS))
    x[~present_NxG[:, k]] = 0.0
    features.append(np.ascontiguousarray(x, dtype=np.float32))
    feature_names.append(tuple(f"{var}_{s}" for var in g.variables for s in STATS))
    offset += width

  report = _report(report_df, variables, unknown, out_of_range, n, present_NxG, groups,
                   lo_V, hi_V)
  stay_id = stays_s.to_numpy()
  stay_id = stay_id.astype(np.int64) if id_dtype == pl.Int64 else stay_id.astype(str)
  return Featurized(stay_id=stay_id, features=tuple(features), present=present_NxG,
                    feature_names=tuple(feature_names),
                    group_names=tuple(g.name for g in groups), report=report)


def _report(report_df: pl.DataFrame, variables: Sequence[str], unknown: dict[str, int],
            action: str, n: int, present_NxG: np.ndarray, groups: Sequence[ModalityGroup],
            lo_V: np.ndarray, hi_V: np.ndarray) -> dict[str, Any]:
  """The JSON-friendly report (see `featurize`), logging out-of-range values."""
  rows = {r["_var"]: r for r in report_df.iter_rows(named=True)}   # one per variable
  zero = dict(measurements=0, unlisted=0, unknown=0, invalid=0, out_win=0, in_win=0, oor=0)
  per_variable, out_of_range = {}, {}
  for j, var in enumerate(variables):
    r = rows.get(var, zero)
    per_variable[var] = {"measurements": int(r["measurements"]),
                         "in_window": int(r["in_win"]), "out_of_window": int(r["out_win"]),
                         "out_of_range": int(r["oor"]),
                         "used": int(r["in_win"] - (r["oor"] if action == "drop" else 0))}
    if r["oor"]:
      out_of_range[var] = int(r["oor"])
  if out_of_range:                    # one line for all variables, not one per variable
    logging.warning("featurize: %s %d value(s) outside their valid range: %s",
                    "dropped" if action == "drop" else "clipped", sum(out_of_range.values()),
                    {v: f"{n} outside [{lo_V[variables.index(v)]:g}, "
                        f"{hi_V[variables.index(v)]:g}]" for v, n in out_of_range.items()})
  if unknown:
    logging.warning("featurize: ignored %d measurement(s) of %d variable(s) in no group: %s",
                    sum(unknown.values()), len(unknown), list(unknown)[:10])
  total = lambda c: int(report_df[c].sum())
  n_oor = total("oor")
  report = {
      "n_measurements": total("measurements"),
      "n_unlisted_stay": total("unlisted"),
      "n_unknown_variable": total("unknown"),
      "n_invalid": total("invalid"),
      "n_out_of_window": total("out_win"),
      "n_in_window": total("in_win"),
      "n_out_of_range": n_oor,
      "n_used": total("in_win") - (n_oor if action == "drop" else 0),
      "out_of_range_action": action,
      "out_of_range": out_of_range,
      "unknown_variables": {k: int(v) for k, v in unknown.items()},
      "per_variable": per_variable,
      "n_stays": int(n),
      "observed": {g.name: int(present_NxG[:, k].sum()) for k, g in enumerate(groups)},
  }
  if report["n_unlisted_stay"]:
    logging.info("featurize: ignored %d measurement(s) of stays not in `stays`",
                 report["n_unlisted_stay"])
  if report["n_invalid"]:
    logging.info("featurize: ignored %d measurement(s) with a null or non-finite time or "
                 "value", report["n_invalid"])
  return report


def featurize_batched(load_batch: Callable[[np.ndarray], pl.DataFrame],
                      groups: Sequence[ModalityGroup], ids_N: np.ndarray, batch_N: np.ndarray,
                      id_col: str, **kwargs) -> tuple[pl.DataFrame, dict[str, Any]]:
  """`featurize` of one group over batches of stays, in bounded memory.

  `ids_N` are the stays (any order), `batch_N` the batch index of each; `load_batch(ids)`
  returns the measurements of those stays. Returns one frame in `ids_N` order
  (`id_col`, `present`, the features) and the batches' reports summed.
  """
  present, features, names = [], [], ()
  report = {"n_measurements": 0, "n_used": 0, "n_out_of_range": 0, "out_of_range": {}}
  order_N = np.argsort(batch_N, kind="stable")
  for b in np.unique(batch_N):
    batch = ids_N[batch_N == b]
    feats = featurize(load_batch(batch), groups, stays=batch, **kwargs)
    present.append(feats.present[:, 0])
    features.append(feats.features[0])
    names = feats.feature_names[0]
    for k in ("n_measurements", "n_used", "n_out_of_range"):
      report[k] += int(feats.report[k])
    for var, c in feats.report["out_of_range"].items():
      report["out_of_range"][var] = report["out_of_range"].get(var, 0) + int(c)
  back_N = np.empty_like(order_N)
  back_N[order_N] = np.arange(len(order_N))        # batch-concatenated order -> ids_N order
  df = pl.DataFrame({id_col: ids_N, "present": np.concatenate(present)[back_N]})
  return df.hstack(pl.DataFrame(np.concatenate(features)[back_N], schema=list(names),
                                orient="row")), report


# ----------------------------------------------------------------------------- categories


def hash_bucket(text: str, n: int) -> int:
  """Stable hash bucket of a category string (a drug name, a code): CRC-32 of its
  lower-cased, stripped UTF-8 bytes modulo `n` (the same on every platform, process
  and Python version, unlike Python's salted ``hash``)."""
  return zlib.crc32(text.strip().lower().encode("utf-8")) % n
