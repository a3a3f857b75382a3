"""Data parallelism: a 1-D device mesh, replicated parameters, batch-sharded inputs.

Multi-host ready: each process builds only its own slice of every global batch and
`jax.make_array_from_process_local_data` assembles the global array. The mesh axis is
`Auto` (GSPMD propagation): the model reshapes batch-sharded arrays (the leave-one-out
copies), which explicit sharding-in-types would make us annotate op by op for no gain
in pure data parallelism.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from crl_mmnar_jax.batch import Batch, make_batch
from crl_mmnar_jax.cohort import Cohort

DATA = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh((len(devices),), (DATA,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def check_batch_divides_devices(global_batch_size: int, mesh: jax.sharding.Mesh) -> int:
  """Returns the per-process batch size; the global batch must split evenly."""
  n_dev, n_proc = mesh.devices.size, jax.process_count()
  if global_batch_size % n_dev:
    raise ValueError(f"batch_size={global_batch_size} must be a multiple of the number of "
                     f"devices ({n_dev})")
  return global_batch_size // n_proc


def local_batch(cohort: Cohort, global_rows: np.ndarray, global_batch_size: int) -> Batch:
  """This process's slice of one global batch (padded to its fixed local size).

  `global_rows` lists the batch's cohort rows, -1 for padding; shorter than
  `global_batch_size` means padded at the end."""
  n_proc, pid = jax.process_count(), jax.process_index()
  local = global_batch_size // n_proc
  return make_batch(cohort, np.asarray(global_rows)[pid * local:(pid + 1) * local], local)


def put_batch(batch: Batch, mesh: jax.sharding.Mesh) -> Batch:
  """Host-local numpy batch -> global batch-sharded jax arrays."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), batch)


def to_host(x: jax.Array) -> np.ndarray:
  """A (possibly multi-host) global array as one numpy array on every process."""
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
