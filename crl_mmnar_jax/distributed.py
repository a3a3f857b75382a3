"""Process-level collectives: start the distributed runtime, gather bytes, compare values.

One process per host; on CPU the collectives use gloo, so the multi-process tests run on
one machine without a pod.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils


def allgather_bytes(data: bytes) -> list[bytes]:
  """Every process's `data` (any length), in process order, on every process."""
  if jax.process_count() == 1:
    return [data]
  sizes = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int32)))
  sizes = sizes.reshape(-1)
  buf = np.zeros(max(int(sizes.max()), 1), np.uint8)
  buf[:len(data)] = np.frombuffer(data, np.uint8)
  table = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(sizes), -1)
  return [table[p, :int(k)].tobytes() for p, k in enumerate(sizes)]


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """`jax.distributed.initialize`, before anything touches a device.

  On a Cloud TPU pod (and SLURM and other detected clusters) every argument may be None.
  Elsewhere they come from the arguments or from the environment variables
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID. On CPU, cross-process
  collectives use gloo (this is how the local multi-process test runs without a pod).
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = int(os.environ["JAX_PROCESS_ID"])
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def assert_same_on_all_processes(value: str, what: str) -> None:
  """Fails on every process if `value` (e.g. the config hash) differs between them."""
  if jax.process_count() == 1:
    return
  digest = np.frombuffer(value.encode().ljust(64, b" ")[:64], dtype=np.uint8).astype(np.int32)
  multihost_utils.assert_equal(digest, f"{what} differs between processes: start every "
                                       f"process with the same command and code")
