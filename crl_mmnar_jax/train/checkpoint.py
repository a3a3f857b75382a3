"""Orbax checkpoints: `latest` (resume after a kill) and `best` (early-stopping target).

Each checkpoint is one `ocp.args.Composite`: `state` (model and optimizer, an nnx.State)
and `meta` (JSON: step, epoch, position in the epoch, early-stopping bookkeeping,
config hash). Orbax writes into a temporary directory and renames it when complete, so
a kill during a save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

_GLOB_CHARACTERS = "[]*?"


def check_directory(workdir: str) -> None:
  """orbax/tensorstore saves below a path with glob characters but cannot restore from
  it (the failure would come after training): refuse such a path up front."""
  bad = sorted(set(_GLOB_CHARACTERS) & set(os.path.abspath(workdir)))
  if bad:
    raise ValueError(f"workdir {workdir!r} contains {''.join(bad)!r}: checkpoints cannot be "
                     f"restored below such a path (orbax/tensorstore); choose another name")


def _manager(directory: str) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(1),
      enable_async_checkpointing=False,
      cleanup_tmp_directories=True,
      create=True,
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


class Checkpoints:
  """The run's two checkpoint managers under `WORKDIR/checkpoints/`."""

  def __init__(self, workdir: str):
    check_directory(workdir)
    self.latest = _manager(os.path.join(workdir, "checkpoints", "latest"))
    self.best = _manager(os.path.join(workdir, "checkpoints", "best"))

  @staticmethod
  def _save(mgr: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
    if step in mgr.all_steps():   # a rerun after a kill recomputed the same step
      return
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           meta=ocp.args.JsonSave(meta)))
    mgr.wait_until_finished()

  @staticmethod
  def _restore(mgr: ocp.CheckpointManager, like_state: Any) -> tuple[Any, dict] | None:
    step = mgr.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                    meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"])

  def save_latest(self, step: int, state: Any, meta: dict) -> None:
    self._save(self.latest, step, state, meta)

  def save_best(self, step: int, state: Any, meta: dict) -> None:
    self._save(self.best, step, state, meta)

  def restore_latest(self, like_state: Any) -> tuple[Any, dict] | None:
    return self._restore(self.latest, like_state)

  def restore_best(self, like_state: Any) -> tuple[Any, dict] | None:
    return self._restore(self.best, like_state)

  def close(self) -> None:
    self.latest.close()
    self.best.close()
