"""A run's hold on its work directory (docs/reliability.md), on every process at once.

* `lock_workdir`: process 0 takes the workdir's exclusive lock (`workdir.WorkdirLock`)
  and removes the temporary files of killed writers; every process fails if it is busy.
* `prepare_workdir`: refuses a workdir that holds a run of another training config (or,
  given the data fingerprint, checkpoints trained on other data), then writes
  config.json.

The checks themselves live in `workdir`; this module adds what needs the checkpoints
(`train.checkpoint`, which itself imports `workdir`) and the processes agreeing on one
error (`distributed`).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Callable

import jax
import ml_collections

from crl_mmnar_jax import distributed
from crl_mmnar_jax import workdir as workdir_lib
from crl_mmnar_jax.data.io import write_atomic
from crl_mmnar_jax.train import checkpoint
from crl_mmnar_jax.workdir import WorkdirError, config_hash, config_to_dict, training_hash


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str,
                    log: Callable[[str], None] = print,
                    data_fingerprint: dict | None = None) -> str:
  """Checks that `workdir` holds no run of another training config (nor, given
  `data_fingerprint`, checkpoints trained on other data), then writes config.json;
  returns the config hash.

  Settings the trained checkpoint does not depend on (`rectifier.*`, `eval.*`) may
  change between runs: the checkpoint is reused and config.json rewritten. An
  unreadable config.json is rewritten with a warning (the checkpoints carry their own
  training hash, checked on restore)."""
  h = config_hash(config)
  path = os.path.join(workdir, "config.json")
  new = config_to_dict(config)
  if os.path.exists(path):
    try:
      old = workdir_lib.read_json(path)
      if not isinstance(old, dict):
        raise WorkdirError(f"{path}: not a JSON object")
    except WorkdirError as e:
      log(f"warning: {e}; rewriting it (the checkpoints' own config hash still guards "
          f"the resume)")
      old = None
    if old is not None:
      old_hash = old.pop("_config_hash", None)
      old_training = old.pop("_training_hash", None) or workdir_lib.training_hash_of_dict(old)
      diff = workdir_lib.config_differences(old, new)
      if old_training != training_hash(config):
        raise WorkdirError(
            f"workdir {workdir} holds a run of a different config; use a new --workdir or "
            f"delete it. Differences: " + "; ".join(diff[:10]))
      if old_hash != h:
        log(f"post-training settings changed ({'; '.join(diff[:10])}): reusing the "
            f"trained checkpoint")
  if data_fingerprint is not None:
    error = None
    if jax.process_index() == 0:
      try:
        workdir_lib.check_data(workdir, data_fingerprint, checkpoint.has_checkpoint(workdir),
                               log)
      except WorkdirError as e:
        error = e
    _fail_together(error)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    write_atomic(path, json.dumps({**new, "_config_hash": h,
                                   "_training_hash": training_hash(config)},
                                  indent=2, sort_keys=True))
  return h


def lock_workdir(workdir: str, log: Callable[[str], None]) -> contextlib.AbstractContextManager:
  """Process 0's exclusive lock on `workdir` (every process fails if it is busy); then
  the temporary files of killed writers are removed."""
  error, lock = None, None
  if jax.process_index() == 0:
    try:
      lock = workdir_lib.WorkdirLock(workdir, log)
      removed = workdir_lib.remove_stale_temporaries(workdir)
      if removed:
        log(f"removed {len(removed)} temporary file(s) of an interrupted run: {removed[:5]}")
    except WorkdirError as e:
      error = e
  _fail_together(error)
  return lock or contextlib.nullcontext()


def _fail_together(error: WorkdirError | None) -> None:
  """Raises process 0's `error` on every process (the others would wait in a collective)."""
  if jax.process_count() > 1:
    first = distributed.allgather_bytes(str(error or "").encode())[0].decode()
    if first and error is None:
      raise WorkdirError(first)
  if error is not None:
    raise error
