"""The epoch as one program: the cohort on the device, `jax.lax.scan` over the steps.

The host loop (`loop._Run._epoch`) gathers each batch on the host, transfers it and
dispatches one step: per step, host work and a launch. When one process holds every
row, `train.scan_epoch` puts each member's standardised cohort on the device once (one
extra all-absent padding row at index n) and runs a whole epoch as one jitted
`jax.lax.scan`: per step the batch is gathered on the device from the epoch's
(steps, [K,] B) index matrix and the same step body (`MemberAxis.step_body`) runs.
The epoch's order is the host loop's (`Layout.epoch_order`, a pure function of seed
and epoch; computing it costs microseconds and 4 bytes per patient to transfer), so
both loops see identical batches; their results agree to float tolerance (XLA may fuse
the step differently inside the scan). Per-step loss terms come back stacked, so the
logged records are the host loop's; checkpoints are written at epoch ends only (a
`train.checkpoint_every` run, or a run resumed mid-epoch, uses the host loop).
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from crl_mmnar_jax.batch import Batch, make_batch
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.train import records

MODES = ("auto", "on", "off")
AUTO_MAX_BYTES = 1 << 30     # "auto" scans when the members' cohorts take at most this


def cohort_bytes(cohorts: list[Cohort]) -> int:
  """Device bytes of `device_cohort` for these cohorts (float32 features, labels)."""
  return sum(sum(x.nbytes for x in c.features) + c.n * (c.n_modalities + 2 * c.n_tasks + 3)
             * 4 for c in cohorts)


def use_scan(mode: str, cohorts: list[Cohort], single_process: bool,
             checkpoint_every: int) -> bool:
  """Whether the epoch runs as one program: "on" unless the cohort is sharded over
  processes or mid-epoch checkpoints are asked for; "auto" also needs the cohorts to
  take at most `AUTO_MAX_BYTES`; "off" never."""
  if mode not in MODES:
    raise ValueError(f"train.scan_epoch={mode!r}: must be one of {list(MODES)}")
  possible = single_process and not checkpoint_every
  return possible and (mode == "on" or (mode == "auto"
                                        and cohort_bytes(cohorts) <= AUTO_MAX_BYTES))


def device_cohort(cohorts: list[Cohort], k: int, mesh: jax.sharding.Mesh) -> Batch:
  """Every row of each member's cohort and one padding row (index n) as one Batch,
  replicated on the mesh: leaves (n + 1, ...) for K = 1, (K, n + 1, ...) otherwise."""
  host = [make_batch(c, np.r_[np.arange(c.n), -1]) for c in cohorts]
  stacked = host[0] if k == 1 else jax.tree.map(lambda *a: np.stack(a), *host)
  return jax.device_put(stacked, mesh_lib.replicated(mesh))


def epoch_indices(orders: list[np.ndarray], n_steps: int, batch_size: int, n_rows: int,
                  k: int) -> np.ndarray:
  """(steps, B) for K = 1 or (steps, K, B): each member's batches of cohort rows, with
  padding (-1, and the steps after a member's last batch) pointing at row `n_rows`."""
  idx = np.full((n_steps, len(orders), batch_size), n_rows, np.int32)
  for m, order in enumerate(orders):
    idx[:len(order), m] = np.where(order >= 0, order, n_rows)
  return idx[:, 0] if k == 1 else idx


def make_epoch(body: Callable, k: int, mesh: jax.sharding.Mesh) -> Callable:
  """(state, data, idx, keys_K, steps0_K, active_SxK, aux, pred) -> (state, parts_SxK):
  the epoch as one jitted scan of `body` (`MemberAxis.step_body`), the state donated.
  A member's step counter advances only on the steps it is active."""
  spec = P(mesh_lib.DATA) if k == 1 else P(None, mesh_lib.DATA)
  sharding = NamedSharding(mesh, spec)

  def gather(data: Batch, idx_B: jax.Array) -> Batch:
    if k == 1:
      batch = jax.tree.map(lambda a: a[idx_B], data)
    else:
      batch = jax.tree.map(lambda a: jax.vmap(lambda a_k, i_k: a_k[i_k])(a, idx_B), data)
    return jax.lax.with_sharding_constraint(batch, sharding)

  def epoch(state, data, idx, keys, steps0, active_SxK, aux, pred):
    def one_step(carry, xs):
      state, steps = carry
      idx_B, active = xs
      state, parts = body(state, gather(data, idx_B), keys, steps, active, aux, pred)
      return (state, steps + active.astype(steps.dtype)), parts

    (state, _), parts = jax.lax.scan(one_step, (state, steps0), (idx, active_SxK))
    return state, parts

  return jax.jit(epoch, donate_argnums=0)


class EpochProgram:
  """`make_epoch`'s program, compiled ahead of its first call (the end of that compile
  is what the run reports as its first step: `records.mark_first_step`); called on host
  arrays, it returns (state, the per-step parts as numpy (S, K) per term)."""

  def __init__(self, body: Callable, k: int, mesh: jax.sharding.Mesh):
    self.fn = make_epoch(body, k, mesh)
    self.compiled = None

  def __call__(self, state, data: Batch, idx: np.ndarray, keys, steps0: np.ndarray,
               active_SxK: np.ndarray, aux: float, pred: float):
    args = (state, data, jnp.asarray(idx), keys, jnp.asarray(steps0, jnp.int32),
            jnp.asarray(active_SxK), jnp.float32(aux), jnp.float32(pred))
    if self.compiled is None:
      self.compiled = self.fn.lower(*args).compile()
      records.mark_first_step(time.perf_counter())
    state, parts = self.compiled(*args)
    return state, jax.device_get(parts)
