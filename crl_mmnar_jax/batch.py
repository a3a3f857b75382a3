"""Fixed-shape batches: the one container the model, the losses and the train step see.

Static shapes everywhere: every batch has exactly `batch_size` rows. The last partial
batch of an epoch is padded with rows whose `weight_B` is 0, whose modalities are all
absent and whose labels are all unknown; they contribute nothing to any loss or metric.
"""

from __future__ import annotations

from typing import Iterator

import flax.struct
import jax
import numpy as np

from crl_mmnar_jax.cohort import Cohort, pattern_ids


@flax.struct.dataclass
class Batch:
  """One batch of B patients (numpy on the host, jax.Array once on devices).

  x:              M arrays (B, d_m) float32, one per modality; zeros where missing.
  present_BxM:    bool, modality observed (δ).
  labels_BxT:     float32 0/1, 0 where the label is unknown.
  label_mask_BxT: bool, True where the label is known.
  pattern_B:      int32 pattern id (bit m = modality m observed).
  patient_B:      int32 row of the patient in its `Cohort` (-1 for padding); the
                  patient's own id is `cohort.patient_id[patient_B]`.
  weight_B:       float32, 1 for real rows, 0 for padding rows.
  """

  x: tuple[jax.Array, ...]
  present_BxM: jax.Array
  labels_BxT: jax.Array
  label_mask_BxT: jax.Array
  pattern_B: jax.Array
  patient_B: jax.Array
  weight_B: jax.Array

  @property
  def size(self) -> int:
    return int(self.present_BxM.shape[0])


def make_batch(cohort: Cohort, rows: np.ndarray, batch_size: int | None = None) -> Batch:
  """Gathers `rows` of the cohort into a numpy Batch padded to `batch_size` rows."""
  rows = np.asarray(rows, dtype=np.int64)
  b = len(rows) if batch_size is None else batch_size
  if len(rows) > b:
    raise ValueError(f"{len(rows)} rows do not fit a batch of {b}")
  pad = b - len(rows)

  def padded(a: np.ndarray, fill) -> np.ndarray:
    if pad == 0:
      return a
    return np.concatenate([a, np.full((pad,) + a.shape[1:], fill, a.dtype)])

  present = cohort.present[rows]
  labels = cohort.labels[rows]
  known = ~np.isnan(labels)
  return Batch(
      x=tuple(padded(f[rows], 0.0) for f in cohort.features),
      present_BxM=padded(present, False),
      labels_BxT=padded(np.where(known, labels, 0.0).astype(np.float32), 0.0),
      label_mask_BxT=padded(known, False),
      pattern_B=padded(pattern_ids(present), 0),
      patient_B=padded(rows.astype(np.int32), -1),
      weight_B=padded(np.ones(len(rows), np.float32), 0.0),
  )


def epoch_order(rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
  """The shuffled order of `rows` for one epoch, a pure function of (seed, epoch)."""
  rng = np.random.default_rng([seed, epoch])
  return np.asarray(rows)[rng.permutation(len(rows))]


def iterate_batches(cohort: Cohort, rows: np.ndarray, batch_size: int,
                    start: int = 0) -> Iterator[Batch]:
  """Yields padded batches over `rows` in order, from batch index `start` on."""
  rows = np.asarray(rows)
  for i in range(start * batch_size, len(rows), batch_size):
    yield make_batch(cohort, rows[i:i + batch_size], batch_size)


def num_batches(n_rows: int, batch_size: int) -> int:
  return -(-n_rows // batch_size)
