"""Patient-level train/val/test splits that test labels cannot influence.

The honesty contract of docs/design.md ('Evaluation'), as an algorithm:

1. **Units.** The split unit is the patient (one `Cohort` row), or the group when
   `group_id` is given (all patients of a group land in the same split). A group's
   stratum (pattern, labels) is taken from its first member in `patient_id` order.
   Fractions and stratum balance are then counted in groups, not patients.
2. **Test first, without labels.** Test units are carved out stratified by the
   observation pattern ONLY; labels are not read. Any change to any label (in
   particular to every test patient's label) leaves the test set unchanged, and since
   the second stage never reads test labels either, it leaves the whole assignment
   unchanged.
3. **Then train/val, with labels of the remaining units.** The non-test units are
   split stratified by the nested key (pattern, y_0, y_1, ..., y_{T-1}), each label
   being 0, 1 or "unknown" (its own stratum value). Nesting in that order means the
   pattern is balanced first, then the first task within each pattern, then the
   second task within each (pattern, y_0) cell, and so on; with many tasks the deep
   cells are tiny, which the allocation below handles gracefully (it never rounds
   per cell).

**Allocation (systematic stratified sampling).** Units are sorted by
(stratum key..., a per-unit random key) and walked in that order; the unit at
position g goes to the selected split when ``floor((g + 1) f + u) > floor(g f + u)``
with one random offset ``u ~ U[0, 1)``. Every unit is selected with probability
exactly f, and every contiguous run of n units (a stratum at any nesting level, or
all units) receives floor(n f) or ceil(n f) of them: strata and the overall fraction
are within one unit of their targets at the same time. Fully vectorised.

**Determinism and order invariance.** Random keys are drawn with the seed for the
unique unit ids in sorted order, so the assignment depends on the set of
(id, pattern, labels) and the seed only, never on row order. Stage 1 and stage 2
draw from separate streams of the seed.

**The run's policy** (`make_splits`, used by `experiment.train_and_evaluate`): a splits
file (`data.splits_file`) if given, else `assign_splits` with `data.val_fraction`,
`data.test_fraction` and the run's seed; rows a source fixes to the test split (a split
by set or by database) stay there and only the others are split into train and
validation. `check_validation_classes` refuses a validation split on which AUROC-based
model selection is impossible, and `SealedLabels` keeps the test labels apart until the
final evaluation.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np
import polars as pl

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.io import id_kind, read_parquet

SPLIT_NAMES = ("train", "val", "test")
_TRAIN, _VAL, _TEST = 0, 1, 2


def _as_ids(ids: np.ndarray, what: str) -> np.ndarray:
  """Ids as a 1-D numpy array that sorts consistently (ints or unicode strings)."""
  ids = np.asarray(ids)
  if ids.ndim != 1:
    raise ValueError(f"{what} must be 1-D, got shape {ids.shape}")
  if ids.dtype.kind == "O":
    null = (ids == None) | (ids != ids)  # noqa: E711  (elementwise None test)
    if null.any():
      raise DataError(f"{what} has {int(null.sum())} null value(s)")
    ids = ids.astype(str)
  if ids.dtype.kind not in "iuUS":
    raise DataError(f"{what} must hold integers or strings, got dtype {ids.dtype}")
  return ids


def _first_row(mask_N: np.ndarray, what: str = "row") -> str:
  """"first at row R" (1-based) for a boolean mask of bad rows: error messages name
  positions and counts, never a patient id, group id or value."""
  return f"first at {what} {int(np.argmax(np.asarray(mask_N, bool))) + 1}"


def _systematic(order_K: np.ndarray, fraction: float, offset: float) -> np.ndarray:
  """Boolean (K,) selection: the unit at sorted position g is picked systematically.

  `order_K` lists unit indices 0..K-1 in walking order. Any contiguous run of n
  positions receives floor(n f) or ceil(n f) picks; each unit has probability f
  (over the offset).
  """
  k = order_K.shape[0]
  g_K = np.arange(k, dtype=np.float64)
  picked_sorted = (np.floor((g_K + 1.0) * fraction + offset)
                   > np.floor(g_K * fraction + offset))
  picked_K = np.zeros(k, dtype=bool)
  picked_K[order_K] = picked_sorted
  return picked_K


def _null_mask(values: np.ndarray) -> np.ndarray:
  """True where an element of a split-like array is None/NaN."""
  if values.dtype.kind == "f":
    return np.isnan(values)
  if values.dtype.kind == "O":
    return (values == None) | (values != values)  # noqa: E711
  return np.zeros(values.shape, dtype=bool)


def _check_split_values(values: np.ndarray, source: str) -> np.ndarray:
  """Validates a fully non-null split array; returns it as a unicode array."""
  as_str = values.astype(str)
  bad = ~np.isin(as_str, SPLIT_NAMES)
  if bad.any():
    raise DataError(f"{source}: split values must be one of {list(SPLIT_NAMES)}; "
                    f"{int(bad.sum())} row(s) hold another value ({_first_row(bad)})")
  return as_str.astype("<U5")


def _check_groups_not_straddling(group_id: np.ndarray, split: np.ndarray,
                                 source: str) -> None:
  groups, inverse = np.unique(group_id, return_inverse=True)
  _, codes = np.unique(split, return_inverse=True)
  lo = np.full(groups.size, len(SPLIT_NAMES))
  hi = np.full(groups.size, -1)
  np.minimum.at(lo, inverse, codes)
  np.maximum.at(hi, inverse, codes)
  straddle = lo != hi
  if straddle.any():
    raise DataError(f"{source}: {int(straddle.sum())} group(s) straddle splits "
                    f"({_first_row(straddle[inverse])}); all patients of a group must be "
                    f"in the same split")


def _units(ids_N: np.ndarray, groups_N: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
  """(unit of each row, each unit's representative row): units are the sorted unique
  ids (or groups); a unit's representative is its first patient by id."""
  unit_N = ids_N if groups_N is None else groups_N
  _, unit_of_row_N = np.unique(unit_N, return_inverse=True)
  by_unit_then_id = np.lexsort((ids_N, unit_of_row_N))
  first = np.ones(len(ids_N), dtype=bool)
  first[1:] = unit_of_row_N[by_unit_then_id][1:] != unit_of_row_N[by_unit_then_id][:-1]
  return unit_of_row_N, by_unit_then_id[first]


def _label_codes(labels_NxT: np.ndarray) -> np.ndarray:
  """Labels as stratum codes: 0, 1, or 2 for unknown."""
  return np.where(np.isnan(labels_NxT), 2, labels_NxT).astype(np.int64)


def assign_splits(patient_id: np.ndarray, pattern_N: np.ndarray, labels_NxT: np.ndarray,
                  *, val_fraction: float = 0.15, test_fraction: float = 0.15,
                  seed: int = 0, group_id: np.ndarray | None = None,
                  predefined: np.ndarray | None = None) -> np.ndarray:
  """'train'/'val'/'test' per row (see the module docstring for the algorithm).

  Args:
    patient_id: (N,) unique ids, ints or strings, in any order.
    pattern_N: (N,) observation pattern ids (`Cohort.pattern`).
    labels_NxT: (N, T) float labels, NaN = unknown ((N,) is read as T = 1). Test
      labels are never read: the test set is chosen from ids and patterns only.
    val_fraction: target share of units in validation.
    test_fraction: target share of units in test.
    seed: fixes the assignment (together with ids, patterns and labels).
    group_id: optional (N,) group per patient; a group is never split.
    predefined: optional (N,) 'train'/'val'/'test' per row, or all None/NaN (then
      ignored). Used as is when complete; a partial or invalid one is an error.

  Returns:
    (N,) unicode array of 'train' / 'val' / 'test'.

  Raises:
    DataError: invalid ids, predefined values or groups straddling predefined splits.
    ValueError: invalid fractions or shapes.
  """
  ids_N = _as_ids(patient_id, "patient_id")
  n = ids_N.shape[0]
  uniq, inverse, counts = np.unique(ids_N, return_inverse=True, return_counts=True)
  if uniq.size != n:
    raise DataError(f"patient_id: {int((counts > 1).sum())} value(s) appear in more than "
                    f"one row ({_first_row(counts[inverse] > 1)}); splits are by patient, "
                    f"one row per patient")
  groups_N = None if group_id is None else _as_ids(group_id, "group_id")
  if groups_N is not None and groups_N.shape != (n,):
    raise ValueError(f"group_id must have shape ({n},), got {groups_N.shape}")

  if predefined is not None:
    pre_N = np.asarray(predefined)
    if pre_N.shape != (n,):
      raise ValueError(f"predefined split must have shape ({n},), got {pre_N.shape}")
    null_N = _null_mask(pre_N)
    if null_N.all():
      pre_N = None
    elif null_N.any():
      raise DataError(f"predefined split is null for {int(null_N.sum())} of {n} rows; "
                      f"give a split for every patient or for none")
    else:
      split_N = _check_split_values(pre_N, "predefined split")
      if groups_N is not None:
        _check_groups_not_straddling(groups_N, split_N, "predefined split")
      return split_N

  if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0
          and val_fraction + test_fraction < 1.0):
    raise ValueError(f"need 0 <= val_fraction, test_fraction and val_fraction + "
                     f"test_fraction < 1, got {val_fraction}, {test_fraction}")
  pattern_N = np.asarray(pattern_N).astype(np.int64)
  if pattern_N.shape != (n,):
    raise ValueError(f"pattern must have shape ({n},), got {pattern_N.shape}")
  labels_NxT = np.asarray(labels_NxT, dtype=np.float64)
  if labels_NxT.ndim == 1:
    labels_NxT = labels_NxT[:, None]
  if labels_NxT.ndim != 2 or labels_NxT.shape[0] != n:
    raise ValueError(f"labels must have shape ({n}, T), got {labels_NxT.shape}")

  unit_of_row_N, rep_U = _units(ids_N, groups_N)
  n_units = len(rep_U)
  pattern_U = pattern_N[rep_U]
  rank_U = np.arange(n_units)

  # Stage 1: test, stratified by pattern only. No label is read here.
  rng_test = np.random.default_rng([seed, 1])
  key_U = rng_test.random(n_units)
  offset = float(rng_test.random())
  order_U = np.lexsort((rank_U, key_U, pattern_U))
  is_test_U = _systematic(order_U, test_fraction, offset)

  # Stage 2: val among the remaining units, stratified by (pattern, y_0, ..., y_{T-1}).
  # Test units' labels are replaced before anything looks at them.
  rng_val = np.random.default_rng([seed, 2])
  key_U = rng_val.random(n_units)
  offset = float(rng_val.random())
  rest_R = np.flatnonzero(~is_test_U)
  labels_RxT = labels_NxT[rep_U[rest_R]]
  code_RxT = _label_codes(labels_RxT)
  sort_keys = (rank_U[rest_R], key_U[rest_R],
               *(code_RxT[:, t] for t in reversed(range(code_RxT.shape[1]))),
               pattern_U[rest_R])
  order_R = np.lexsort(sort_keys)
  val_of_rest = val_fraction / (1.0 - test_fraction)
  is_val_R = _systematic(order_R, val_of_rest, offset)

  code_U = np.full(n_units, _TRAIN, dtype=np.int64)
  code_U[is_test_U] = _TEST
  code_U[rest_R[is_val_R]] = _VAL
  return np.asarray(SPLIT_NAMES)[code_U[unit_of_row_N]].astype("<U5")


def assign_folds(patient_id: np.ndarray, pattern_N: np.ndarray, labels_NxT: np.ndarray,
                 n_folds: int, *, seed: int = 0,
                 group_id: np.ndarray | None = None) -> np.ndarray:
  """Fold 0..n_folds-1 per row, for cross-fitted ensembles over the non-test patients.

  The same units (patients, or groups) and strata as the validation stage of
  `assign_splits`: units sorted by (pattern, y_0, ..., y_{T-1}, a random key) are dealt
  to folds in turn from a random start, so every stratum, at every nesting level, puts
  floor(n/K) or ceil(n/K) of its units in each fold. Pass only rows whose labels may be
  read (never test rows).
  """
  ids_N = _as_ids(patient_id, "patient_id")
  if not (isinstance(n_folds, (int, np.integer)) and 2 <= n_folds <= len(ids_N)):
    raise ValueError(f"n_folds must be an integer in [2, {len(ids_N)}], got {n_folds!r}")
  groups_N = None if group_id is None else _as_ids(group_id, "group_id")
  labels_NxT = np.asarray(labels_NxT, dtype=np.float64).reshape(len(ids_N), -1)
  unit_of_row_N, rep_U = _units(ids_N, groups_N)
  rng = np.random.default_rng([seed, 3])
  key_U = rng.random(len(rep_U))
  start = int(rng.integers(n_folds))
  code_UxT = _label_codes(labels_NxT[rep_U])
  order_U = np.lexsort((np.arange(len(rep_U)), key_U,
                        *(code_UxT[:, t] for t in reversed(range(code_UxT.shape[1]))),
                        np.asarray(pattern_N, np.int64)[rep_U]))
  fold_U = np.empty(len(rep_U), np.int64)
  fold_U[order_U] = (np.arange(len(rep_U)) + start) % n_folds
  return fold_U[unit_of_row_N]


def splits_frame(patient_id: np.ndarray, split: np.ndarray) -> pl.DataFrame:
  """The `splits.parquet` contract: columns patient_id, split (one row per patient)."""
  ids_N = _as_ids(patient_id, "patient_id")
  split_N = np.asarray(split)
  if split_N.shape != ids_N.shape:
    raise ValueError(f"split must have shape {ids_N.shape}, got {split_N.shape}")
  if _null_mask(split_N).any():
    raise DataError(f"split has {int(_null_mask(split_N).sum())} null value(s)")
  split_N = _check_split_values(split_N, "split")
  return pl.DataFrame({"patient_id": ids_N, "split": split_N.astype(str)})


def read_splits(path: str | os.PathLike, patient_id: np.ndarray) -> np.ndarray:
  """Reads a splits.parquet and aligns it to `patient_id` by joining on the id.

  Raises:
    DataError: unreadable file, missing columns, incompatible id types, duplicate or
      null ids, invalid split values, or ids missing from / extra in the file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: splits file not found")
  df = read_parquet(path)
  for col in ("patient_id", "split"):
    if col not in df.columns:
      raise DataError(f"{path}: missing column '{col}' (found {df.columns})")
  ids_N = _as_ids(patient_id, "patient_id")
  want_kind = "int" if ids_N.dtype.kind in "iu" else "str"
  file_kind = id_kind(df.schema["patient_id"])
  if file_kind != want_kind:
    raise DataError(f"{path}: column 'patient_id' has dtype {df.schema['patient_id']} but "
                    f"the cohort's ids are {'integers' if want_kind == 'int' else 'strings'}")
  id_dtype = pl.Int64 if want_kind == "int" else pl.String
  df = df.select(pl.col("patient_id").cast(id_dtype), pl.col("split").cast(pl.String))
  if df["patient_id"].null_count():
    raise DataError(f"{path}: column 'patient_id' has {df['patient_id'].null_count()} null(s)")
  is_dup = df["patient_id"].is_duplicated().to_numpy()
  if is_dup.any():
    raise DataError(f"{path}: column 'patient_id': {df['patient_id'].filter(is_dup).n_unique()} "
                    f"value(s) appear in more than one row ({_first_row(is_dup)})")
  ours = pl.DataFrame({"patient_id": pl.Series(ids_N.tolist(), dtype=id_dtype)})
  ours = ours.with_row_index("__row")
  df = df.with_row_index("__file_row")
  missing = ours.join(df, on="patient_id", how="anti")["__row"].sort()
  if len(missing):
    raise DataError(f"{path}: {len(missing)} of {len(ours)} patients have no split (first "
                    f"at cohort row {int(missing[0]) + 1})")
  extra = df.join(ours, on="patient_id", how="anti")["__file_row"].sort()
  if len(extra):
    raise DataError(f"{path}: column 'patient_id': {len(extra)} value(s) are not in the "
                    f"cohort (first at row {int(extra[0]) + 1})")
  df = df.drop("__file_row")
  joined = ours.join(df, on="patient_id", how="left").sort("__row")
  split_N = joined["split"].to_numpy()
  null_N = _null_mask(split_N)
  if null_N.any():
    raise DataError(f"{path}: column 'split' has {int(null_N.sum())} null value(s)")
  return _check_split_values(split_N, f"{path}: column 'split'")


def make_splits(config: ml_collections.ConfigDict, cohort: Cohort,
                test_mask_N: np.ndarray | None = None) -> np.ndarray:
  """train/val/test per patient. `test_mask_N` fixes the test rows (a split by set or
  by database); the other rows are then split into train and validation."""
  d = config.data
  if d.splits_file:
    return read_splits(d.splits_file, cohort.patient_id)
  if test_mask_N is None:
    return assign_splits(
        cohort.patient_id, cohort.pattern, cohort.labels, val_fraction=float(d.val_fraction),
        test_fraction=float(d.test_fraction), seed=int(config.seed), group_id=cohort.group_id,
        predefined=cohort.split)
  split = np.full(cohort.n, "test", dtype="<U5")
  rest = ~test_mask_N
  split[rest] = assign_splits(
      cohort.patient_id[rest], cohort.pattern[rest], cohort.labels[rest],
      val_fraction=float(d.val_fraction), test_fraction=0.0, seed=int(config.seed),
      group_id=None if cohort.group_id is None else cohort.group_id[rest])
  return split


def check_validation_classes(cohort: Cohort, val_rows: np.ndarray) -> None:
  """Raises `DataError` for a task whose validation labels are all unknown or all of one
  class: AUROC-based model selection would be impossible."""
  check_split_classes(cohort, val_rows, "validation", "AUROC-based model selection is "
                      "impossible", "a larger data.val_fraction")


def check_test_classes(cohort: Cohort, test_rows: np.ndarray) -> None:
  """Raises `DataError` for a task whose test labels are all unknown or all of one class
  (its test AUROC would be undefined), before anything is trained. Only the class counts
  are read: nothing about which patient holds which label reaches training."""
  check_split_classes(cohort, test_rows, "test", "its test AUROC would be undefined",
                      "a larger data.test_fraction, other splits")


def check_split_classes(cohort: Cohort, rows: np.ndarray, split: str, why: str,
                        remedy: str) -> None:
  for t, name in enumerate(cohort.task_names):
    y = cohort.labels[rows, t]
    y = y[~np.isnan(y)]
    n_pos = int(y.sum())
    if len(y) == 0:
      raise DataError(
          f"task '{name}' has no known labels in the {split} split: {why}; check the "
          f"label column, or drop the task (data.tasks)")
    if n_pos == 0 or n_pos == len(y):
      raise DataError(
          f"task '{name}' has only one class in the {split} split (n_pos={n_pos} of "
          f"{len(y)}): {why}; use more patients, {remedy}, or drop the task (data.tasks)")


@dataclasses.dataclass(frozen=True)
class SealedLabels:
  """Test labels, kept apart from everything that trains or selects."""

  _labels_NxT: np.ndarray

  def open(self) -> np.ndarray:
    return self._labels_NxT.copy()
