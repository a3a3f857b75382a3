"""The in-memory cohort: one row per patient, M modalities, T tasks (numpy, host side).

Every data source (synthetic generator, generic tables, PhysioNet 2012, MIMIC-IV, ...)
produces a `Cohort`; training turns it into fixed-shape `Batch`es (see `batch.py`).

Conventions used across the library:

* `present_NxM[i, m]` is True when modality m was observed for patient i (δ_i).
* The pattern id of a patient is the integer whose bit m is δ_im:
  ``pattern = sum_m present[:, m] << m``. Modality 0 is bit 0.
* `features[m]` is an (N, d_m) float32 array; rows where modality m is missing hold
  zeros (their content is never read by the model, see `model.py`). Inside an
  observed row, NaN means "this variable was not measured"; `data.standardize` imputes
  it with the training mean before anything reaches the model.
* `labels_NxT` is float32 with 0.0/1.0 and NaN for "label unknown".
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np

MAX_MODALITIES = 30  # pattern ids must fit in an int32


def _first_row(mask_N: np.ndarray) -> str:
  """"first at row R" (1-based row of the cohort) for a boolean mask of bad rows; error
  messages name positions and counts, never an id or a value."""
  return f"first at row {int(np.argmax(mask_N)) + 1}"


def pattern_ids(present_NxM: np.ndarray) -> np.ndarray:
  """Pattern id per row: the integer whose bit m is present[:, m]."""
  present_NxM = np.asarray(present_NxM, dtype=bool)
  if present_NxM.ndim != 2:
    raise ValueError(f"present must be 2-D (N, M), got shape {present_NxM.shape}")
  m = present_NxM.shape[1]
  if m > MAX_MODALITIES:
    raise ValueError(f"at most {MAX_MODALITIES} modalities are supported, got {m}")
  weights_M = (1 << np.arange(m, dtype=np.int64))
  return (present_NxM.astype(np.int64) @ weights_M).astype(np.int32)


def pattern_to_present(pattern_N: np.ndarray, n_modalities: int) -> np.ndarray:
  """Inverse of `pattern_ids`: (N,) ints -> (N, M) bool."""
  pattern_N = np.asarray(pattern_N, dtype=np.int64)
  return ((pattern_N[:, None] >> np.arange(n_modalities)) & 1).astype(bool)


def pattern_label(pattern: int, modality_names: Sequence[str]) -> str:
  """Human-readable pattern: the observed modality names joined by '+'."""
  names = [n for m, n in enumerate(modality_names) if (int(pattern) >> m) & 1]
  return "+".join(names) if names else "(none)"


@dataclasses.dataclass(frozen=True)
class Cohort:
  """One row per patient (the split unit)."""

  patient_id: np.ndarray                 # (N,) int or str, unique
  features: tuple[np.ndarray, ...]       # M arrays (N, d_m) float32, zeros where missing
  present: np.ndarray                    # (N, M) bool
  labels: np.ndarray                     # (N, T) float32, NaN = unknown
  modality_names: tuple[str, ...]
  task_names: tuple[str, ...]
  group_id: np.ndarray | None = None     # (N,) patients sharing a group stay in one split
  split: np.ndarray | None = None        # (N,) 'train' / 'val' / 'test' when predefined
  feature_names: tuple[tuple[str, ...], ...] | None = None

  @property
  def n(self) -> int:
    return int(self.present.shape[0])

  @property
  def n_modalities(self) -> int:
    return len(self.modality_names)

  @property
  def n_tasks(self) -> int:
    return len(self.task_names)

  @property
  def observed_nan_cells(self) -> int:
    """NaN cells inside observed rows ("not measured"; imputed by `data.standardize`)."""
    return int(sum(np.isnan(f[self.present[:, m]]).sum() for m, f in enumerate(self.features)))

  @property
  def input_dims(self) -> tuple[int, ...]:
    return tuple(int(f.shape[1]) for f in self.features)

  @property
  def pattern(self) -> np.ndarray:
    return pattern_ids(self.present)

  def subset(self, rows: np.ndarray) -> "Cohort":
    """Rows selected by an index or boolean array (order preserved)."""
    rows = np.asarray(rows)
    pick = lambda a: None if a is None else a[rows]
    return dataclasses.replace(
        self,
        patient_id=self.patient_id[rows],
        features=tuple(f[rows] for f in self.features),
        present=self.present[rows],
        labels=self.labels[rows],
        group_id=pick(self.group_id),
        split=pick(self.split),
    )

  def validate(self, source: str = "cohort") -> "Cohort":
    """Checks every invariant; raises ValueError naming `source` and the problem."""
    n, m, t = self.n, self.n_modalities, self.n_tasks
    if self.present.dtype != bool or self.present.shape != (n, m):
      raise ValueError(f"{source}: present must be bool (N, M)=({n}, {m}), got "
                       f"{self.present.dtype} {self.present.shape}")
    if len(self.features) != m:
      raise ValueError(f"{source}: {len(self.features)} feature arrays for {m} modalities")
    if self.patient_id.shape != (n,):
      raise ValueError(f"{source}: patient_id must have shape ({n},)")
    uniq, inverse, counts = np.unique(self.patient_id, return_inverse=True,
                                      return_counts=True)
    if uniq.size != n:
      is_dup_N = counts[inverse.reshape(-1)] > 1
      raise ValueError(f"{source}: {int((counts > 1).sum())} patient_id value(s) appear in "
                       f"more than one row ({_first_row(is_dup_N)})")
    for name, f in zip(self.modality_names, self.features):
      if f.ndim != 2 or f.shape[0] != n:
        raise ValueError(f"{source}: modality '{name}' features must be (N, d), got {f.shape}")
      if f.dtype != np.float32:
        raise ValueError(f"{source}: modality '{name}' features must be float32, got {f.dtype}")
    for j, name in enumerate(self.modality_names):
      obs = self.present[:, j]
      inf_N = np.isinf(self.features[j]).any(axis=1)
      if (inf_N & obs).any():
        raise ValueError(f"{source}: modality '{name}' has Inf features for "
                         f"{int((inf_N & obs).sum())} observed patient(s) "
                         f"({_first_row(inf_N & obs)})")
      if np.any(self.features[j][~obs] != 0):   # NaN != 0 too
        raise ValueError(f"{source}: modality '{name}' has non-zero features in rows where "
                         f"it is missing (they must be 0)")
    none_observed = ~self.present.any(axis=1)
    if none_observed.any():
      raise ValueError(f"{source}: {int(none_observed.sum())} patient(s) have no observed "
                       f"modality ({_first_row(none_observed)}); every patient needs at "
                       f"least one")
    if self.labels.shape != (n, t) or self.labels.dtype != np.float32:
      raise ValueError(f"{source}: labels must be float32 (N, T)=({n}, {t}), got "
                       f"{self.labels.dtype} {self.labels.shape}")
    bad_NxT = ~np.isnan(self.labels) & (self.labels != 0) & (self.labels != 1)
    if bad_NxT.any():
      t_bad = int(np.flatnonzero(bad_NxT.any(axis=0))[0])
      raise ValueError(f"{source}: labels must be 0, 1 or null; task "
                       f"'{self.task_names[t_bad]}' has {int(bad_NxT[:, t_bad].sum())} "
                       f"row(s) with another value ({_first_row(bad_NxT[:, t_bad])})")
    if self.split is not None:
      allowed = {"train", "val", "test"}
      bad_N = ~np.isin(np.asarray(self.split).astype(str), sorted(allowed))
      if bad_N.any():
        raise ValueError(f"{source}: split values must be train/val/test; "
                         f"{int(bad_N.sum())} row(s) hold another value ({_first_row(bad_N)})")
    return self


def fingerprint(patient_id: np.ndarray) -> str:
  """A short hash of the sorted patient ids, to compare cohorts across runs."""
  ids = np.sort(np.asarray(patient_id).astype(str))
  return hashlib.sha256("\n".join(ids.tolist()).encode()).hexdigest()[:16]
