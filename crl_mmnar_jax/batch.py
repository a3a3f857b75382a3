"""Fixed-shape batches: the one container the model, the losses and the train step see.

Static shapes everywhere: every batch has exactly `batch_size` rows. The last partial
batch of an epoch is padded with rows whose `weight_B` is 0, whose modalities are all
absent and whose labels are all unknown; they contribute nothing to any loss or metric.
"""

from __future__ import annotations

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
  """Gathers `rows` of the cohort into a numpy Batch of `batch_size` rows.

  A row -1 is a padding row in place; `rows` shorter than `batch_size` is padded at
  its end. Only the real rows' features are read.
  """
  rows = np.asarray(rows, dtype=np.int64)
  b = len(rows) if batch_size is None else batch_size
  if len(rows) > b:
    raise ValueError(f"{len(rows)} rows do not fit a batch of {b}")
  rows = np.concatenate([rows, np.full(b - len(rows), -1, np.int64)])
  real = rows >= 0
  sel = rows[real]

  def placed(a: np.ndarray, fill) -> np.ndarray:
    if real.all():
      return a
    out = np.full((b,) + a.shape[1:], fill, a.dtype)
    out[real] = a
    return out

  present = cohort.present[sel]
  labels = cohort.labels[sel]
  known = ~np.isnan(labels)
  return Batch(
      x=tuple(placed(f[sel], 0.0) for f in cohort.features),
      present_BxM=placed(present, False),
      labels_BxT=placed(np.where(known, labels, 0.0).astype(np.float32), 0.0),
      label_mask_BxT=placed(known, False),
      pattern_B=placed(pattern_ids(present), 0),
      patient_B=rows.astype(np.int32),
      weight_B=real.astype(np.float32),
  )
