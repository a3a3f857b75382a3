"""The reference patients: a fixed sample of training patients that MUSE (`muse.py`) and
M3Care (`m3care.py`) read at evaluation instead of the other evaluated patients, so that
a patient's output depends only on its own observed modalities, the parameters and that
sample (stored with the model), never on the rest of its batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data import shards
from crl_mmnar_jax.layers import Constant, split_points

Array = jax.Array


class ReferencePatients(nnx.Module):
  """A fixed sample of training patients (inputs and presence) that MUSE and M3Care read
  at evaluation instead of the other evaluated patients."""

  def __init__(self, cohort: Cohort, rows: np.ndarray):
    x = [shards.gather_rows(f, rows) for f in cohort.features]   # wherever they are held
    self.x_RxF = Constant(jnp.asarray(np.concatenate(x, 1)))
    self.present_RxM = Constant(jnp.asarray(cohort.present[rows]))
    self.split_at = split_points(cohort.input_dims)

  def inputs(self) -> tuple[tuple[Array, ...], Array]:
    return tuple(jnp.split(self.x_RxF[...], self.split_at, axis=1)), self.present_RxM[...]


def reference_rows(train_rows: np.ndarray, size: int, seed: int) -> np.ndarray:
  """Up to `size` training rows drawn without replacement by `seed`, sorted."""
  rng = np.random.default_rng([seed, 0x5EF])
  n = min(int(size), len(train_rows))
  return np.sort(rng.choice(np.asarray(train_rows), size=n, replace=False))
