"""Orbax checkpoints: `latest` (resume after a kill) and `best` (early-stopping target).

Each checkpoint is one `ocp.args.Composite`: `state` and `meta` (JSON: step, epoch,
position in the epoch, early-stopping bookkeeping, config hash, and `state_sha256`, the
hash of the saved arrays' bytes). Orbax writes into
a temporary directory and renames it when complete, so a kill during a save leaves the
previous checkpoint intact. `latest`'s state is the model and the optimizer (an
nnx.State of `nnx.split((model, optimizer))`), what a resume needs; `best`'s is the model
alone (a third of the size with AdamW's two moments), what prediction needs.

A restore checks the state against `state_sha256`. `latest` keeps the last two steps: a
corrupt or unreadable one (flipped bytes, a truncated file) is deleted with a warning
and the previous one is used (a finished run keeps its last step only); with no good
step left, or a corrupt `best`, the restore stops with one line (`WorkdirError`) naming
the checkpoint.
"""

from __future__ import annotations

import contextlib
import gc
import glob
import hashlib
import logging
import os
import re
import shutil
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from crl_mmnar_jax.workdir import WorkdirError, fault_point

_GLOB_CHARACTERS = "[]*?"


def check_directory(workdir: str) -> None:
  """orbax/tensorstore saves below a path with glob characters but cannot restore from
  it (the failure would come after training): refuse such a path up front."""
  bad = sorted(set(_GLOB_CHARACTERS) & set(os.path.abspath(workdir)))
  if bad:
    raise ValueError(f"workdir {workdir!r} contains {''.join(bad)!r}: checkpoints cannot be "
                     f"restored below such a path (orbax/tensorstore); choose another name")


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a checkpoint step, in WORKDIR/checkpoints or in a
  sub-folder's (cross-fitted members), without opening it."""
  pattern = os.path.join(glob.escape(workdir), "**", "checkpoints", "*", "[0-9]*")
  return any(os.path.basename(p).isdigit() for p in glob.iglob(pattern, recursive=True))


def _host_array(x: Any) -> np.ndarray:
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)            # the state is replicated: any copy is the whole
  return np.asarray(jax.device_get(x))


def state_digest(state: Any) -> str:
  """sha256 of the state's leaves (path, dtype, shape and bytes) in tree order."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    a = np.ascontiguousarray(_host_array(leaf))
    h.update(f"{jax.tree_util.keystr(path)}:{a.dtype.str}:{a.shape};".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def model_part(state: Any) -> Any:
  """The model's variables in a training state (item 0 of `nnx.split((model, optimizer))`)."""
  return state[0]


def with_model(state: Any, model: Any) -> Any:
  """`state` with its model variables replaced by `model`'s (the optimizer's copied)."""
  out = jax.tree.map(jnp.copy, state)
  out[0] = model
  return out


def _manager(directory: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(keep),
      enable_async_checkpointing=False,
      cleanup_tmp_directories=True,
      create=True,
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


class _NotFromOrbax(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return "orbax" not in record.pathname


def _closed_loop(e: BaseException | None) -> bool:
  return isinstance(e, RuntimeError) and "Event loop is closed" in str(e)


@contextlib.contextmanager
def _orbax_errors_silenced():
  """Orbax's save threads log each failure with a traceback; the caller reports it.

  When a save fails (a full disk), orbax abandons its tensorstore writes, which then
  finish on a closed event loop: each raises `RuntimeError: Event loop is closed` from a
  native thread through sys.excepthook or sys.unraisablehook, hundreds of tracebacks,
  during the save and after it. Those, and only those, are dropped while saving, and
  for the rest of the process once a save has failed.
  """
  quiet = _NotFromOrbax()
  logger = logging.getLogger("absl")
  logger.addFilter(quiet)
  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

  def quiet_excepthook(kind, value, tb):
    if not _closed_loop(value):
      excepthook(kind, value, tb)

  def quiet_unraisablehook(unraisable):
    if not _closed_loop(unraisable.exc_value):
      unraisablehook(unraisable)

  sys.excepthook, sys.unraisablehook = quiet_excepthook, quiet_unraisablehook
  try:
    yield
  except BaseException:
    logging.getLogger("asyncio").addFilter(lambda record: False)
    raise
  else:
    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
  finally:
    logger.removeFilter(quiet)


def _orbax_coroutine(unraisable: Any) -> bool:
  code = getattr(unraisable.object, "cr_code", None)
  return code is not None and "orbax" in code.co_filename


@contextlib.contextmanager
def _abandoned_reads_silenced():
  """A failed restore (a corrupt array) leaves orbax's other read coroutines unfinished;
  their finalisers (or their callbacks, on a closed event loop) raise through
  sys.unraisablehook, a 60-line dump per array naming the failure the caller reports in
  one line. Those, and only those, are dropped: during the restore and, once a read has
  failed (the block appends to the list it is given), for the rest of the process, since
  the coroutines may be finalised at any later collection."""
  unraisablehook = sys.unraisablehook

  def quiet(unraisable):
    if not (_orbax_coroutine(unraisable) or _closed_loop(unraisable.exc_value)):
      unraisablehook(unraisable)

  sys.unraisablehook = quiet
  failed: list = []
  try:
    yield failed
  finally:
    gc.collect()
    if not failed:
      sys.unraisablehook = unraisablehook


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  first = text[0].split(". See full")[0][:160] if text else ""
  return f"{type(e).__name__}: {first}"


class Checkpoints:
  """The run's two checkpoint managers under `WORKDIR/checkpoints/`."""

  def __init__(self, workdir: str, log: Callable[[str], None] = print):
    check_directory(workdir)
    self.log = log
    self.folder = os.path.join(workdir, "checkpoints")
    self.latest = _manager(os.path.join(self.folder, "latest"), keep=2)
    self.best = _manager(os.path.join(self.folder, "best"), keep=1)

  @staticmethod
  def _save(mgr: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
    if step in mgr.all_steps():   # a rerun after a kill recomputed the same step
      return
    meta = dict(meta, state_sha256=state_digest(state))
    fault_point("checkpoint_save")
    try:
      with _orbax_errors_silenced():
        mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)))
        mgr.wait_until_finished()
    except Exception as e:  # noqa: BLE001  (a full or read-only disk: one OSError line)
      code = re.search(r"os_error_code='?(\d+)", str(e))
      n = e.errno if isinstance(e, OSError) else int(code.group(1)) if code else None
      if not n:
        raise
      raise OSError(n, os.strerror(n), os.path.join(str(mgr.directory), str(step))) from None

  def _restore(self, mgr: ocp.CheckpointManager, like_state: Any, kind: str,
               check: Callable[[dict], Any] | None = None) -> tuple[Any, dict] | None:
    steps = sorted(mgr.all_steps(), reverse=True)
    if not steps:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    with _abandoned_reads_silenced() as bad:      # (step, why) of each corrupt step
      for step in steps:
        try:
          out = mgr.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
          state, meta = out["state"], dict(out["meta"])
          want = meta.get("state_sha256")
          if want is not None and state_digest(state) != want:
            raise ValueError("the restored arrays do not match the hash saved with them")
        except Exception as e:  # noqa: BLE001  (any failure to read it back: corrupt)
          bad.append((step, _first_line(e)))
          continue
        for b, why in bad:
          self.log(f"warning: checkpoint {os.path.join(self.folder, kind, str(b))} is corrupt "
                   f"({why}); deleted it and resumed from step {step}")
          self._delete(mgr, b)
        return state, meta
    step, why = bad[0]
    if check is not None:       # unreadable as this version's state: an older version's?
      try:
        meta = dict(mgr.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"])
      except Exception:  # noqa: BLE001  (the metadata is unreadable too: corrupt)
        meta = None
      if meta is not None:
        check(meta)               # raises its own line for another version's checkpoint
    raise WorkdirError(
        f"checkpoint {os.path.join(self.folder, kind, str(step))} is corrupt ({why})"
        + (f", and so are the older ones {[b for b, _ in bad[1:]]}" if len(bad) > 1 else "")
        + f"; delete {self.folder} to train again")

  @staticmethod
  def _delete(mgr: ocp.CheckpointManager, step: int) -> None:
    try:
      mgr.delete(step)
    except Exception:  # noqa: BLE001  (orbax may not read it: remove the folder)
      shutil.rmtree(os.path.join(str(mgr.directory), str(step)), ignore_errors=True)
      mgr.reload()

  def save_latest(self, step: int, state: Any, meta: dict) -> None:
    self._save(self.latest, step, state, meta)

  def save_best(self, step: int, state: Any, meta: dict) -> None:
    """Saves the model part of `state` (`model_part`)."""
    self._save(self.best, step, model_part(state), meta)

  def keep_last_latest(self) -> None:
    """Deletes every `latest` step but the last (a finished run needs no fallback)."""
    for step in sorted(self.latest.all_steps())[:-1]:
      self._delete(self.latest, step)

  def restore_latest(self, like_state: Any, check: Callable[[dict], Any] | None = None
                     ) -> tuple[Any, dict] | None:
    """(state, meta) of the newest readable latest checkpoint, or None. When none can be
    read as `like_state`, `check(meta)` (of the newest) may raise a better error than
    "corrupt" (a checkpoint of an earlier version)."""
    return self._restore(self.latest, like_state, "latest", check)

  def restore_best(self, like_state: Any, check: Callable[[dict], Any] | None = None
                   ) -> tuple[Any, dict] | None:
    """(`like_state` with the best model's variables, meta), or None: `best` holds the
    model alone, the optimizer part is a copy of `like_state`'s. `check` as in
    `restore_latest`."""
    restored = self._restore(self.best, model_part(like_state), "best", check)
    return None if restored is None else (with_model(like_state, restored[0]), restored[1])

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def close(self) -> None:
    self.latest.close()
    self.best.close()
