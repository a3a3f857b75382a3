"""The work directory's guards (docs/reliability.md): what makes a rerun resume safely.

* `config_hash` / `training_hash`: the config, and the part of it the trained checkpoint
  depends on (everything but `rectifier.*`, `eval.*` and the progress bar). A rerun
  whose training hash matches reuses the checkpoint even if the post-training settings
  changed; `workdir_guard.prepare_workdir` refuses a workdir trained with another
  training config.
* `data_fingerprint`: hashes of the patient ids, labels, features and split a run was
  trained on, written next to the checkpoints before the first one; `check_data`
  refuses to resume on other data and names what changed.
* `WorkdirLock`: an exclusive `fcntl.flock` on ``WORKDIR/.lock`` (holder's pid and host
  inside); a second run on the workdir stops with one line naming the holder. A lock
  file whose flock is free is stale (its holder died) and is taken over.
* `remove_stale_temporaries`: the ``*.tmp<pid>`` files a killed writer left behind.
* `Interrupted` and `StopRequest`: SIGINT/SIGTERM end a run between training steps,
  after a checkpoint, with one line and exit code 130/143.
* `fault_point`: the hook of the fault-injection tests (``CRL_FAULT``; a no-op unless set).

`workdir_guard` runs these checks for a run, on every process at once.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import signal
import socket
import sys
import threading
from typing import Any, Callable, NoReturn

import numpy as np

from crl_mmnar_jax.data.io import write_atomic

LOCK_FILE = ".lock"
FINGERPRINT_FILE = "data_fingerprint.json"     # in WORKDIR/checkpoints/
POST_TRAINING = ("rectifier", "eval")           # config sections the checkpoint ignores
# Settings that change nothing in the results.
NOT_HASHED = ("train.progress", "train.tensorboard", "eval.plots")
FAULT_ENV = "CRL_FAULT"
_TMP_NAME = re.compile(r"^\.?.+\.tmp\d*$")


class WorkdirError(ValueError):
  """The workdir cannot be used as asked (busy, other config, other data, corrupt)."""


# ----------------------------------------------------------------------------- config


def config_to_dict(config) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _digest(d: dict) -> str:
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _without(d: dict, dotted: tuple[str, ...]) -> dict:
  d = json.loads(json.dumps(d))
  for key in dotted:
    head, _, tail = key.partition(".")
    if tail:
      d.get(head, {}).pop(tail, None)
    else:
      d.pop(head, None)
  return d


def hash_of_dict(d: dict) -> str:
  """The config hash of a config dict (as config.json stores it)."""
  return _digest(_without(d, NOT_HASHED))


def training_hash_of_dict(d: dict) -> str:
  """The hash of the settings the trained checkpoint depends on."""
  return _digest(_without(d, NOT_HASHED + POST_TRAINING))


def config_hash(config) -> str:
  return hash_of_dict(config_to_dict(config))


def training_hash(config) -> str:
  return training_hash_of_dict(config_to_dict(config))


def flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_differences(old: dict, new: dict) -> list[str]:
  """'key: old -> new' for every setting that differs (progress and plots left out)."""
  a, b = flatten(old), flatten(new)
  return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k) and k not in NOT_HASHED and not k.startswith("_")]


def read_json(path: str) -> Any:
  """json.load with any decoding error naming the file."""
  with open(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise WorkdirError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column "
                       f"{e.colno}; {len(text)} bytes)") from None


# ----------------------------------------------------------------------------- data


def _sha(*arrays: np.ndarray) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes() if a.dtype.kind not in "UO" else "\n".join(map(str, a.ravel())).encode())
  return h.hexdigest()[:16]


def data_fingerprint(cohort, split_N: np.ndarray,
                     combine: Callable[[bytes], list[bytes]] | None = None) -> dict[str, str]:
  """Hashes of the ids (in row order), labels (test labels included), features (with
  the presence mask, modality and feature names) and split of `cohort`.

  `combine` (e.g. `distributed.allgather_bytes`) joins the feature hashes of processes
  that each hold only their own rows (`shards.HeldRows`)."""
  labels = np.where(np.isnan(cohort.labels), -1.0, cohort.labels).astype(np.float64)
  h = hashlib.sha256()
  h.update(json.dumps([list(cohort.modality_names),
                       [list(f) for f in (cohort.feature_names or ())]]).encode())
  h.update(_sha(np.asarray(cohort.present)).encode())
  for x in cohort.features:
    local = getattr(x, "local", x)          # HeldRows: this process's rows
    h.update(_sha(np.asarray(local)).encode())
  features = h.hexdigest()[:16]
  if combine is not None:
    features = hashlib.sha256(b"".join(combine(features.encode()))).hexdigest()[:16]
  group = np.asarray([]) if cohort.group_id is None else np.asarray(cohort.group_id)
  return {"ids": _sha(np.asarray(cohort.patient_id).astype(str)),
          "labels": _sha(labels, np.asarray(cohort.task_names)),
          "features": features,
          "split": _sha(np.asarray(split_N).astype(str), group.astype(str))}


_WHAT = {"ids": "patient ids (or their order)", "labels": "labels",
         "features": "features", "split": "split"}


def data_changes(old: dict, new: dict) -> list[str]:
  """The parts of the data that differ between two fingerprints."""
  return [_WHAT[k] for k in _WHAT if old.get(k) != new.get(k)]


def check_data(workdir: str, fingerprint: dict, has_checkpoint: bool,
               log: Callable[[str], None]) -> None:
  """Refuses to resume from checkpoints trained on other data; else (re)writes the
  fingerprint next to the checkpoints (before the first one is saved)."""
  folder = os.path.join(workdir, "checkpoints")
  path = os.path.join(folder, FINGERPRINT_FILE)
  if has_checkpoint:
    if os.path.exists(path):
      try:
        old = read_json(path)
      except WorkdirError as e:
        raise WorkdirError(f"{e}; the data of the checkpoints cannot be checked: delete "
                           f"{folder} to train again") from None
      changed = data_changes(old, fingerprint)
      if changed:
        raise WorkdirError(
            f"workdir {workdir} was trained on other data: the {', '.join(changed)} "
            f"changed since its checkpoints were written; use a new --workdir, or delete "
            f"{folder} to train again on the new data")
      return
    log(f"warning: {path} is missing (a workdir of an older version?): the data of its "
        f"checkpoints cannot be checked; recording the current data")
  os.makedirs(folder, exist_ok=True)
  write_atomic(path, json.dumps(fingerprint, indent=2, sort_keys=True))


# ----------------------------------------------------------------------------- lock


class WorkdirLock:
  """An exclusive flock on WORKDIR/.lock, held until `release` (or process exit)."""

  def __init__(self, workdir: str, log: Callable[[str], None] = print):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, LOCK_FILE)
    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = self._holder()
      os.close(self.fd)
      self.fd = None
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise WorkdirError(f"workdir {workdir} is in use by another run ({holder}); wait "
                         f"for it to finish or use another --workdir") from None
    stale = self._holder()
    if stale != "holder unknown":
      log(f"taking over the stale lock of a run that ended without releasing it ({stale})")
    os.ftruncate(self.fd, 0)
    os.pwrite(self.fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(),
              0)
    os.fsync(self.fd)

  def _holder(self) -> str:
    try:
      d = json.loads(os.pread(self.fd, 4096, 0).decode() or "null")
      return f"pid {d['pid']} on host {d['host']}"
    except (ValueError, TypeError, KeyError, OSError):
      return "holder unknown"

  def release(self) -> None:
    if self.fd is not None:
      os.ftruncate(self.fd, 0)
      fcntl.flock(self.fd, fcntl.LOCK_UN)
      os.close(self.fd)
      self.fd = None

  def __enter__(self) -> "WorkdirLock":
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def remove_stale_temporaries(workdir: str) -> list[str]:
  """Deletes the temporary files of interrupted atomic writes in `workdir` (call it
  under the lock); returns their names."""
  removed = []
  for name in sorted(os.listdir(workdir)):
    path = os.path.join(workdir, name)
    if _TMP_NAME.match(name) and os.path.isfile(path):
      os.remove(path)
      removed.append(name)
  return removed


# ----------------------------------------------------------------------------- signals


class Interrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM ended the run; the workdir resumes on a rerun."""

  def __init__(self, signum: int, step: int | None = None):
    self.signum, self.step = int(signum), step
    where = f"at step {step}" if step is not None else "outside the training loop"
    super().__init__(f"interrupted ({signal.Signals(signum).name}) {where}; rerun the same "
                     f"command to resume")

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


def raise_interrupted(signum: int, frame: Any = None) -> None:
  """A signal handler: raises `Interrupted` (SIGTERM outside the training loop)."""
  raise Interrupted(signum)


def exit_interrupted(e: KeyboardInterrupt, suffix: str = "") -> NoReturn:
  """An entry point's end after SIGINT/SIGTERM: prints the one-line `Interrupted`
  message and exits with 128 + signal. Later signals are ignored from here on, so a
  second Ctrl-C or `kill` during the interpreter's shutdown (JAX's own exit handlers
  run then) cannot end in a traceback."""
  for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
  interrupted = e if isinstance(e, Interrupted) else Interrupted(signal.SIGINT)
  print(f"{interrupted}{suffix}", file=sys.stderr, flush=True)
  sys.exit(interrupted.exit_code)


class StopRequest:
  """While active, SIGINT/SIGTERM only set a flag that the training loop checks between
  steps (it saves a checkpoint, then raises `Interrupted`); a second signal stops at
  once. Installed only in the main thread of a single-process run."""

  def __init__(self):
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> "StopRequest":
    import jax
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      for s in (signal.SIGINT, signal.SIGTERM):
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum: int, frame: Any) -> None:
    if self.signum is not None:
      raise Interrupted(signum)
    self.signum = signum

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def stop(self, step: int) -> None:
    raise Interrupted(self.signum or signal.SIGINT, step)

  def __exit__(self, *exc) -> None:
    for s, h in self._previous.items():
      signal.signal(s, h)


# ----------------------------------------------------------------------------- faults

_hits: dict[str, int] = {}


def fault_point(name: str, index: int | None = None, path: str = "") -> None:
  """The fault-injection hook: a no-op unless ``CRL_FAULT`` names this point.

  ``CRL_FAULT=NAME[#K][=ACTION],...``: at the K-th time (default 1) the point NAME is
  reached in this process, or where `index` (e.g. the step) equals K, do ACTION:
  ``kill`` (SIGKILL, the default), ``kill+S`` (SIGKILL after S seconds, from a timer,
  so it lands in whatever runs then), ``sigint``, ``sigterm``, or ``enospc`` (raise
  OSError "No space left on device" on `path`).
  """
  spec = os.environ.get(FAULT_ENV)
  if not spec:
    return
  _hits[name] = _hits.get(name, 0) + 1
  for item in spec.split(","):
    target, _, action = item.partition("=")
    point, _, k = target.partition("#")
    if point != name or (index if index is not None else _hits[name]) != int(k or 1):
      continue
    action = action or "kill"
    if action.startswith("kill+"):
      threading.Timer(float(action[5:]), os.kill, (os.getpid(), signal.SIGKILL)).start()
    elif action in ("kill", "sigint", "sigterm"):
      os.kill(os.getpid(), {"kill": signal.SIGKILL, "sigint": signal.SIGINT,
                            "sigterm": signal.SIGTERM}[action])
    elif action == "enospc":
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path or name)
    else:
      raise ValueError(f"{FAULT_ENV}: unknown action {action!r}")
