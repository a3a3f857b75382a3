"""The generic cohort layout (docs/design.md, 'Contracts'): a directory of parquet tables.

Layout of ``DIR``:

* ``DIR/labels.parquet``: ``patient_id``, one 0/1 column per task (null or NaN = label
  unknown; booleans read as 0/1), optional ``split`` ('train'/'val'/'test', for every
  patient or for none) and optional ``group_id`` (patients sharing a group stay in one
  split). Every other column is a task, unless ``tasks=`` picks some of them. Row
  order of this file is the row order of the `Cohort`. Patients to predict for need
  none (``labels_needed=False``): the patients are then those of the modality files.
* ``DIR/<modality>.parquet`` for every other ``*.parquet`` file (sorted by file name,
  or the order given by ``modalities=``): ``patient_id`` plus numeric feature columns
  (integers, floats, booleans; read as float32), at most one row per patient, and a
  row only where the modality was observed. The modality's name is the file stem.

Ids are joined, never assumed to be 0..N-1, sorted or aligned by position; they may be
integers or strings but must be the same kind in every file.

Missing values inside an observed row. Clinical tables have partial rows: a null or
NaN feature value in an observed row stays NaN in the `Cohort` ("not measured") and
the row stays observed. This loader does no scaling and learns no statistics: the
training code imputes such cells with the mean over training patients and scales with
training statistics only (`data.standardize`). The count of unmeasured cells per
modality is returned by `load_tables_with_info` (`filled_cells`) and logged. ±Inf is
not a missing value: it is an error.

All problems with the input raise `DataError` (a ValueError) with a message naming the
file, the offending column and the number of bad rows with the first one's position;
messages never print data values (patient ids included), so they can be shared. The
command-line runner reports it in one line and exits non-zero. Inputs that load but
are probably not what was meant (a modality file with no rows or only null values, a
non-parquet file in DIR that is ignored, a task column with no known label) are
warned about in one line each and listed in ``info["warnings"]``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
import polars as pl
from absl import logging

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.io import (
  id_kind,
  ids_to_numpy,
  read_kept_rows,
  read_parquet,
  write_parquet_atomic,
)
from crl_mmnar_jax.data.loaded import Keep, LoadedData

LABELS_FILE = "labels.parquet"
ID_COLUMN = "patient_id"
SPLIT_COLUMN = "split"
GROUP_COLUMN = "group_id"
_RESERVED = (ID_COLUMN, SPLIT_COLUMN, GROUP_COLUMN)
_SPLIT_VALUES = ("train", "val", "test")
_SUFFIX = ".parquet"


# ----------------------------------------------------------------------------- helpers


def _first_row(mask) -> str:
  """"first at row R" (1-based data row of the file) for a boolean mask of bad rows."""
  rows = np.flatnonzero(np.asarray(mask, bool))
  return f"first at row {int(rows[0]) + 1}" if len(rows) else "no row"


def _id_series(df: pl.DataFrame, path: str, column: str = ID_COLUMN,
               want_kind: str | None = None) -> pl.Series:
  """The id column as Int64 or String, checked for presence, type and nulls."""
  if column not in df.columns:
    raise DataError(f"{path}: no '{column}' column (found {df.columns})")
  dtype = df.schema[column]
  kind = id_kind(dtype)
  if kind is None:
    raise DataError(f"{path}: column '{column}' has dtype {dtype}; ids must be integers or "
                    f"strings (cast float ids to integers before writing the file)")
  if want_kind is not None and kind != want_kind:
    raise DataError(f"{path}: column '{column}' has dtype {dtype} but {LABELS_FILE} has "
                    f"{'integer' if want_kind == 'int' else 'string'} patient ids; the id "
                    f"type must match across files")
  ids = df[column]
  try:
    ids = ids.cast(pl.Int64 if kind == "int" else pl.String)
  except Exception as e:  # pylint: disable=broad-except  (e.g. UInt64 beyond Int64)
    raise DataError(f"{path}: column '{column}' cannot be read as 64-bit ids ({e})") from None
  if ids.null_count():
    raise DataError(f"{path}: column '{column}' has {ids.null_count()} null value(s)")
  return ids


def _check_unique_ids(ids: pl.Series, path: str) -> None:
  is_dup = ids.is_duplicated()
  if is_dup.any():
    raise DataError(f"{path}: {ids.filter(is_dup).n_unique()} patient_id value(s) appear in "
                    f"more than one row ({_first_row(is_dup)}); one row per patient is "
                    f"required")


def _is_numeric(dtype: pl.DataType) -> bool:
  return dtype.is_numeric() or dtype == pl.Boolean or dtype == pl.Null


def _label_column(df: pl.DataFrame, column: str, path: str) -> np.ndarray:
  """A task column as float32 with NaN = unknown; only 0, 1, null (or NaN) allowed."""
  dtype = df.schema[column]
  if not _is_numeric(dtype):
    raise DataError(f"{path}: label column '{column}' has dtype {dtype}; labels must be "
                    f"0/1 (numeric or boolean) or null")
  y = df[column].cast(pl.Float64).fill_nan(None)
  is_bad = (y.is_not_null() & ~y.is_in([0.0, 1.0])).to_numpy()
  if is_bad.any():
    raise DataError(f"{path}: label column '{column}' must hold 0, 1 or null; "
                    f"{int(is_bad.sum())} row(s) hold another value ({_first_row(is_bad)})")
  return y.to_numpy().astype(np.float32)


def _split_column(df: pl.DataFrame, path: str) -> np.ndarray | None:
  """The optional split column: complete and valid, or entirely null (-> None)."""
  if SPLIT_COLUMN not in df.columns:
    return None
  dtype = df.schema[SPLIT_COLUMN]
  if dtype == pl.Null:
    return None
  if id_kind(dtype) != "str":
    raise DataError(f"{path}: column '{SPLIT_COLUMN}' has dtype {dtype}; it must hold the "
                    f"strings {list(_SPLIT_VALUES)}")
  s = df[SPLIT_COLUMN].cast(pl.String)
  n_null = s.null_count()
  if n_null == len(s):
    return None
  if n_null:
    raise DataError(f"{path}: column '{SPLIT_COLUMN}' is null for {n_null} of {len(s)} "
                    f"patients; give a split for every patient or for none")
  is_bad = (~s.is_in(list(_SPLIT_VALUES))).to_numpy()
  if is_bad.any():
    raise DataError(f"{path}: column '{SPLIT_COLUMN}' must hold {list(_SPLIT_VALUES)}; "
                    f"{int(is_bad.sum())} row(s) hold another value ({_first_row(is_bad)})")
  return s.to_numpy().astype("<U5")


def _task_columns(df: pl.DataFrame, path: str, tasks: Sequence[str] | None) -> list[str]:
  candidates = [c for c in df.columns if c not in _RESERVED]
  if tasks is None:
    chosen = candidates
  else:
    chosen = list(tasks)
    if len(set(chosen)) != len(chosen):
      raise DataError(f"tasks {chosen} name a column more than once")
    reserved = [t for t in chosen if t in _RESERVED]
    if reserved:
      raise DataError(f"{path}: {reserved} cannot be task columns (reserved names "
                      f"{list(_RESERVED)})")
    missing = [t for t in chosen if t not in df.columns]
    if missing:
      raise DataError(f"{path}: task column(s) {missing} not found; available task "
                      f"columns: {candidates}")
  if not chosen:
    raise DataError(f"{path}: no task columns; besides {list(_RESERVED)} it needs one 0/1 "
                    f"column per task (found columns {df.columns})")
  return chosen


def _modality_files(directory: str, modalities: Sequence[str] | None) -> list[str]:
  """Modality names (file stems) in load order."""
  if modalities is None:
    names = sorted(
        f[:-len(_SUFFIX)] for f in os.listdir(directory)
        if f.endswith(_SUFFIX) and f != LABELS_FILE and not f.startswith(".")
        and os.path.isfile(os.path.join(directory, f)))
    if not names:
      raise DataError(f"{directory}: no modality files; the generic layout needs at least "
                      f"one DIR/<modality>.parquet besides {LABELS_FILE}")
    return names
  names = list(modalities)
  if not names:
    raise DataError(f"{directory}: modalities=[] selects no modality file")
  if len(set(names)) != len(names):
    raise DataError(f"modalities {names} name a modality more than once")
  for name in names:
    if f"{name}{_SUFFIX}" == LABELS_FILE:
      raise DataError(f"{directory}: '{LABELS_FILE}' holds the labels, not a modality")
    path = os.path.join(directory, f"{name}{_SUFFIX}")
    if not os.path.isfile(path):
      raise DataError(f"{path}: modality file not found (modality '{name}')")
  return names


def _load_modality(path: str, label_rows: pl.DataFrame, ids_kind: str, n: int,
                   keep: Callable[[np.ndarray], np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], dict[str, Any]]:
  """One modality file -> (features (N, d) float32, present (N,), names, info)."""
  df = read_parquet(path) if keep is None else read_kept_rows(path, keep, ID_COLUMN)
  ids = _id_series(df, path, want_kind=ids_kind)
  _check_unique_ids(ids, path)
  columns = [c for c in df.columns if c != ID_COLUMN]
  if not columns:
    raise DataError(f"{path}: no feature columns (only '{ID_COLUMN}'); a modality file "
                    f"needs at least one numeric feature column")
  for c in columns:
    if not _is_numeric(df.schema[c]):
      raise DataError(f"{path}: feature column '{c}' has non-numeric dtype "
                      f"{df.schema[c]}; features must be integers, floats or booleans "
                      f"(encode categories as numbers first)")
  id_frame = pl.DataFrame({ID_COLUMN: ids}).with_row_index("__file_row")
  unknown = id_frame.join(label_rows, on=ID_COLUMN, how="anti")["__file_row"].to_numpy()
  if len(unknown):
    mask = np.zeros(len(df), bool)
    mask[unknown] = True
    raise DataError(f"{path}: {len(unknown)} patient_id value(s) are not in {LABELS_FILE} "
                    f"({_first_row(mask)}); every modality row must belong to a labelled "
                    f"patient")
  pairs = id_frame.join(label_rows, on=ID_COLUMN, how="inner")
  file_row = pairs["__file_row"].to_numpy().astype(np.int64)
  cohort_row = pairs["__row"].to_numpy().astype(np.int64)

  x_RxD = df.select(pl.col(c).cast(pl.Float64) for c in columns).to_numpy()
  x_RxD = np.asarray(x_RxD, dtype=np.float64).reshape(len(df), len(columns))
  missing_RxD = np.isnan(x_RxD)                      # null reads as NaN
  inf_D = np.isinf(x_RxD).sum(axis=0)
  if inf_D.any():
    bad = [c for c, k in zip(columns, inf_D) if k]
    raise DataError(f"{path}: feature column(s) {bad[:5]} hold ±Inf "
                    f"({int(inf_D.sum())} cell(s)); use null for a missing value")
  with np.errstate(over="ignore"):                   # reported just below
    x32_RxD = x_RxD.astype(np.float32)
  overflow_D = (np.isinf(x32_RxD) & ~missing_RxD).sum(axis=0)
  if overflow_D.any():
    bad = [c for c, k in zip(columns, overflow_D) if k]
    raise DataError(f"{path}: feature column(s) {bad[:5]} hold values beyond the float32 "
                    f"range ({int(overflow_D.sum())} cell(s)); use null for a missing value")
  features_NxD = np.zeros((n, len(columns)), dtype=np.float32)
  features_NxD[cohort_row] = x32_RxD[file_row]
  present_N = np.zeros(n, dtype=bool)
  present_N[cohort_row] = True
  filled_D = missing_RxD.sum(axis=0)
  n_cells = int(missing_RxD.size)
  info = {
      "file": os.path.basename(path),
      "rows": int(len(df)),
      "observed": int(present_N.sum()),
      "n_features": len(columns),
      "filled_cells": int(filled_D.sum()),
      "filled_fraction": float(filled_D.sum() / n_cells) if n_cells else 0.0,
      "filled_by_column": {c: int(k) for c, k in zip(columns, filled_D) if k},
  }
  return features_NxD, present_N, tuple(columns), info


def _warnings(directory: str, labels_NxT: np.ndarray, task_names: Sequence[str],
              mod_info: dict[str, dict], labels_needed: bool = True) -> list[str]:
  """One line per input that loads but is probably not what was meant (a task without a
  known label only where labels are needed)."""
  out = []
  ignored = sorted(f for f in os.listdir(directory)
                   if not f.endswith(_SUFFIX) and not f.startswith(".")
                   and os.path.isfile(os.path.join(directory, f)))
  if ignored:
    out.append(f"{directory}: {len(ignored)} file(s) that are not parquet are ignored: "
               f"{ignored[:5]} (the tables layout reads only *{_SUFFIX})")
  for j, t in enumerate(task_names if labels_needed else ()):
    if np.isnan(labels_NxT[:, j]).all():
      out.append(f"{os.path.join(directory, LABELS_FILE)}: task column '{t}' has no known "
                 f"label (null in every row)")
  for name, i in mod_info.items():
    path = os.path.join(directory, i["file"])
    if i["rows"] == 0:
      out.append(f"{path}: no rows: modality '{name}' is never observed")
    elif i["filled_cells"] == i["rows"] * i["n_features"]:
      out.append(f"{path}: every feature value is null/NaN in its {i['rows']} row(s): "
                 f"modality '{name}' carries only its presence")
    else:
      empty = [c for c, k in i["filled_by_column"].items() if k == i["rows"]]
      if empty:
        out.append(f"{path}: {len(empty)} feature column(s) are null/NaN in every row: "
                   f"{empty[:5]}")
  return out


# ----------------------------------------------------------------------------- loading


def _unlabelled(directory: str, tasks: Sequence[str] | None,
                modalities: Sequence[str] | None) -> pl.DataFrame:
  """labels.parquet's stand-in for a directory without one: the union of the modality
  files' patient ids, sorted, with a null column per task in `tasks`."""
  if not tasks:
    raise DataError(f"{directory}: no {LABELS_FILE}; without it the tasks must be named")
  ids, first = [], None
  for name in _modality_files(directory, modalities):
    path = os.path.join(directory, f"{name}{_SUFFIX}")
    try:
      frame = (pl.read_parquet(path, columns=[ID_COLUMN])
               if ID_COLUMN in pl.read_parquet_schema(path) else pl.DataFrame())
    except Exception as e:  # pylint: disable=broad-except  (any reader error is bad input)
      raise DataError(f"{path}: cannot read as parquet ({type(e).__name__}: {e})") from None
    series = _id_series(frame, path)
    if first is not None and series.dtype != first[1].dtype:
      raise DataError(f"{path}: '{ID_COLUMN}' is of another type than in {first[0]}; the id "
                      f"type must match across files")
    first = first or (path, series)
    ids.append(series)
  union = pl.concat(ids).unique().sort()
  if not len(union):
    raise DataError(f"{directory}: no {LABELS_FILE} and no patient in the modality files")
  return pl.DataFrame({ID_COLUMN: union}).with_columns(
      pl.lit(None, dtype=pl.Float64).alias(t) for t in tasks)


def load_tables_with_info(directory: str | os.PathLike, *, tasks: Sequence[str] | None = None,
                          modalities: Sequence[str] | None = None,
                          keep: Callable[[np.ndarray], np.ndarray] | None = None,
                          labels_needed: bool = True) -> tuple[Cohort, dict[str, Any]]:
  """Reads a generic-layout directory into a validated `Cohort`, plus a load report.

  Args:
    directory: the cohort directory (see the module docstring for the layout).
    tasks: label columns to use, in this order (default: every non-reserved column
      of labels.parquet, in file order).
    modalities: modality names (file stems) in this order (default: every other
      ``*.parquet`` file, sorted by name).
    keep: patient ids -> bool mask (`shards.keep_fn`): load only those patients. Modality
      rows of other patients are not materialised; the counts in `info` are then this
      subset's.
    labels_needed: False for patients to predict for (`predictor`): `labels.parquet` may
      be absent (the patients are then the union of the modality files' ids, sorted, no
      label known; `tasks` must be given) and a task without a known label is no warning.

  Returns:
    (cohort, info). `info` is JSON-friendly: ``n_patients``, ``tasks``,
    ``labels_known`` (per task), ``files`` (row count per file), ``modalities``
    (per modality: file, rows, observed, n_features, filled_cells, filled_fraction,
    filled_by_column), ``has_split``, ``has_group_id``, ``warnings`` (one line each,
    also logged: ignored files, empty or all-null modality files and columns, task
    columns without a known label). Null/NaN feature values in
    observed rows stay NaN (counted in ``filled_cells``; imputed by the training code).

  Raises:
    DataError: any problem with the files, naming the file and column or values.
  """
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise DataError(f"{directory}: cohort directory not found")
  labels_path = os.path.join(directory, LABELS_FILE)
  if os.path.isfile(labels_path):
    labels_df = read_parquet(labels_path)
  elif not labels_needed:
    labels_df = _unlabelled(directory, tasks, modalities)
  else:
    raise DataError(f"{directory}: no {LABELS_FILE}; the generic layout needs "
                    f"DIR/{LABELS_FILE} with '{ID_COLUMN}' and one 0/1 column per task")
  ids = _id_series(labels_df, labels_path)
  if len(ids) == 0:
    raise DataError(f"{labels_path}: no rows (no patients)")
  _check_unique_ids(ids, labels_path)
  ids_kind = "int" if ids.dtype == pl.Int64 else "str"
  if keep is not None:
    mask = pl.Series(np.asarray(keep(ids_to_numpy(ids)), bool))
    labels_df, ids = labels_df.filter(mask), ids.filter(mask)
    if len(ids) == 0:
      raise DataError(f"{labels_path}: none of its patients belongs to this process "
                      f"(keep); use fewer train.data_shards")
  n = len(ids)

  task_names = _task_columns(labels_df, labels_path, tasks)
  labels_NxT = np.stack([_label_column(labels_df, t, labels_path) for t in task_names],
                        axis=1).astype(np.float32)
  split_N = _split_column(labels_df, labels_path)
  group_N = None
  if GROUP_COLUMN in labels_df.columns:
    group_N = ids_to_numpy(_id_series(labels_df, labels_path, column=GROUP_COLUMN))

  label_rows = pl.DataFrame({ID_COLUMN: ids}).with_row_index("__row")
  names = _modality_files(directory, modalities)
  features, present, feature_names, mod_info = [], [], [], {}
  for name in names:
    x_NxD, present_N, cols, info = _load_modality(
        os.path.join(directory, f"{name}{_SUFFIX}"), label_rows, ids_kind, n, keep)
    features.append(x_NxD)
    present.append(present_N)
    feature_names.append(cols)
    mod_info[name] = info
  present_NxM = np.stack(present, axis=1)

  none_N = ~present_NxM.any(axis=1)
  if none_N.any():
    raise DataError(f"{labels_path}: {int(none_N.sum())} patient(s) have no observed "
                    f"modality (no row in any of {[f'{m}{_SUFFIX}' for m in names]}; "
                    f"{_first_row(none_N)}); every patient needs at least one")

  patient_id = ids_to_numpy(ids)
  cohort = Cohort(
      patient_id=patient_id, features=tuple(features), present=present_NxM,
      labels=labels_NxT, modality_names=tuple(names), task_names=tuple(task_names),
      group_id=group_N, split=split_N, feature_names=tuple(feature_names))
  try:
    cohort.validate(directory)
  except ValueError as e:
    raise DataError(str(e)) from None

  info = {
      "directory": directory,
      "n_patients": n,
      "tasks": list(task_names),
      "labels_known": {t: int(np.sum(~np.isnan(labels_NxT[:, j])))
                       for j, t in enumerate(task_names)},
      "files": {LABELS_FILE: n, **{i["file"]: i["rows"] for i in mod_info.values()}},
      "modalities": mod_info,
      "has_split": split_N is not None,
      "has_group_id": group_N is not None,
      "warnings": _warnings(directory, labels_NxT, task_names, mod_info, labels_needed),
  }
  for message in info["warnings"]:
    logging.warning("%s", message)
  logging.info("loaded %s: %d patients, tasks %s, observed per modality %s", directory, n,
               list(task_names), {m: i["observed"] for m, i in mod_info.items()})
  for m, i in mod_info.items():
    if i["filled_cells"]:
      logging.info("%s: %d null/NaN cell(s) in observed rows, imputed later (%.2f%% of "
                   "cells; columns %s)", i["file"], i["filled_cells"],
                   100 * i["filled_fraction"], list(i["filled_by_column"])[:10])
  return cohort, info


def load_tables(directory: str | os.PathLike, *, tasks: Sequence[str] | None = None,
                modalities: Sequence[str] | None = None) -> Cohort:
  """`load_tables_with_info` without the report."""
  return load_tables_with_info(directory, tasks=tasks, modalities=modalities)[0]


# ----------------------------------------------------------------------------- writing


def write_tables(cohort: Cohort, directory: str | os.PathLike) -> str:
  """Writes `cohort` in the generic layout; the inverse of `load_tables`.

  Writes ``labels.parquet`` (patient_id, tasks as nullable Int8, plus split and
  group_id when the cohort has them) and one ``<modality>.parquet`` per modality
  holding only the observed rows. Each file is written atomically. Loading reads
  modalities in file-name order, so pass ``modalities=cohort.modality_names`` to
  `load_tables` to get the original order back when it is not sorted.

  Returns:
    The directory (so that ``load_tables(write_tables(c, d))`` reads it back).

  Raises:
    DataError: an invalid cohort, names that cannot be file or column names, or
      other ``*.parquet`` files already in the directory (they would be read back as
      extra modalities).
  """
  directory = os.fspath(directory)
  try:
    cohort.validate("write_tables")
  except ValueError as e:
    raise DataError(str(e)) from None
  names = list(cohort.modality_names)
  for name in names:
    if (not name or os.sep in name or "/" in name or name.startswith(".")
        or f"{name}{_SUFFIX}" == LABELS_FILE):
      raise DataError(f"write_tables: modality name {name!r} cannot be a file stem")
  if len(set(names)) != len(names):
    raise DataError(f"write_tables: duplicate modality names {names}")
  tasks = list(cohort.task_names)
  if len(set(tasks)) != len(tasks) or any(t in _RESERVED for t in tasks):
    raise DataError(f"write_tables: task names {tasks} must be unique and not one of "
                    f"{list(_RESERVED)}")
  feature_names = cohort.feature_names or tuple(
      tuple(f"x{j}" for j in range(d)) for d in cohort.input_dims)
  for name, cols, d in zip(names, feature_names, cohort.input_dims):
    if len(cols) != d or len(set(cols)) != d or ID_COLUMN in cols:
      raise DataError(f"write_tables: modality '{name}' needs {d} unique feature names "
                      f"other than '{ID_COLUMN}', got {list(cols)[:10]}")

  os.makedirs(directory, exist_ok=True)
  targets = {LABELS_FILE, *(f"{m}{_SUFFIX}" for m in names)}
  stale = sorted(f for f in os.listdir(directory)
                 if f.endswith(_SUFFIX) and not f.startswith(".") and f not in targets)
  if stale:
    raise DataError(f"{directory}: already holds {stale[:5]}, which load_tables would read "
                    f"as modalities; write into an empty directory")

  ids = pl.Series(ID_COLUMN, cohort.patient_id.tolist(),
                  dtype=pl.Int64 if cohort.patient_id.dtype.kind in "iu" else pl.String)
  for m, name in enumerate(names):
    obs_N = cohort.present[:, m]
    x = pl.from_numpy(cohort.features[m][obs_N].astype(np.float32),
                      schema=list(feature_names[m]), orient="row")
    write_parquet_atomic(x.insert_column(0, ids.filter(pl.Series(obs_N))),
                         os.path.join(directory, f"{name}{_SUFFIX}"), hidden=True)
  labels = pl.DataFrame([ids]).with_columns(
      pl.Series(t, cohort.labels[:, j]).fill_nan(None).cast(pl.Int8)
      for j, t in enumerate(tasks))
  if cohort.split is not None:
    labels = labels.with_columns(pl.Series(SPLIT_COLUMN, cohort.split.astype(str)))
  if cohort.group_id is not None:
    g = np.asarray(cohort.group_id)
    labels = labels.with_columns(
        pl.Series(GROUP_COLUMN, g.tolist(), dtype=pl.Int64 if g.dtype.kind in "iu"
                  else pl.String))
  write_parquet_atomic(labels, os.path.join(directory, LABELS_FILE), hidden=True)
  return directory


def from_config(config: ml_collections.ConfigDict, keep: Keep | None = None) -> LoadedData:
  """`data.name = "tables"`: the generic layout in `data.dir`, `data.tasks` (all if empty)."""
  d = config.data
  if not d.dir:
    raise DataError("--config=tables needs --config.data.dir=DIR (the cohort directory)")
  tasks = [s for s in str(d.tasks).split(",") if s] or None
  cohort, info = load_tables_with_info(d.dir, tasks=tasks, keep=keep)
  return LoadedData(cohort, None, info)
