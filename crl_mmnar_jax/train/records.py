"""What a training run reports: metrics.jsonl lines, TensorBoard scalars, the live
progress bar and the throughput meter, and the validation metrics of an epoch
(docs/outputs.md). The loop (`train/loop.py`) writes through these; nothing here trains.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from crl_mmnar_jax import metrics as metrics_lib
from crl_mmnar_jax.workdir import WorkdirError


def mean_auroc(labels_NxT: np.ndarray, probs_NxT: np.ndarray) -> float:
  """Mean over tasks of the validation AUROC (the early-stopping criterion)."""
  vals = []
  for t in range(labels_NxT.shape[1]):
    known = ~np.isnan(labels_NxT[:, t])
    vals.append(metrics_lib.auroc(labels_NxT[known, t], probs_NxT[known, t]))
  return float(np.nanmean(vals)) if not np.all(np.isnan(vals)) else float("nan")


class MetricsWriter:
  """metrics.jsonl, one JSON object per line, written by process 0 only (the fields:
  docs/outputs.md). `fit` writes a `"kind": "step"` line every `train.log_every` steps
  and a `"kind": "epoch"` line at the end of every epoch; epochs are numbered from 1.

  On resume, lines logged after the restored checkpoint's step are dropped (they will
  be logged again), so the file always describes one consistent run. A torn last line
  (a kill during a write) is dropped too; any other unreadable line stops the run with
  one line naming the file and line.
  """

  def __init__(self, path: str, resume_step: int | None):
    self.path = path
    self.enabled = jax.process_index() == 0
    if self.enabled and resume_step is not None and os.path.exists(path):
      keep = [line for line, record in read_metrics_lines(path)
              if record.get("step", 0) <= resume_step]
      tmp = path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(keep)
      os.replace(tmp, path)
    elif self.enabled and resume_step is None and os.path.exists(path):
      os.remove(path)

  def write(self, record: dict) -> None:
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(record, allow_nan=True) + "\n")
        f.flush()


def read_metrics_lines(path: str) -> list[tuple[str, dict]]:
  """(line, record) of every complete line of metrics.jsonl; a torn last line is left out."""
  with open(path, "rb") as f:
    lines = f.read().decode("utf-8", errors="replace").split("\n")
  out = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    except ValueError as e:
      if all(not rest.strip() for rest in lines[i + 1:]):   # the last line: torn by a kill
        break
      raise WorkdirError(f"{path}:{i + 1}: not a JSON object ({e}); delete the file or "
                         f"that line to resume") from None
    out.append((line + "\n", record))
  return out


class Progress:
  """The live progress bar of an epoch: tqdm on stderr when stderr is a terminal (process
  0, `train.progress`), removed when the epoch ends; nothing at all otherwise, so a log
  file gets only the one line per epoch that `fit` logs and never a carriage return."""

  def __init__(self, total: int, initial: int, desc: str, enabled: bool):
    self.bar = None
    if enabled and jax.process_index() == 0 and sys.stderr.isatty():
      self.bar = tqdm.tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False,
                           dynamic_ncols=True, mininterval=0.5, file=sys.stderr)

  def update(self, loss: float | None, rate: float | None) -> None:
    if self.bar is not None:
      postfix = {}
      if loss is not None:
        postfix["loss"] = f"{loss:.4f}"
      if rate is not None:
        postfix["patients/s"] = f"{rate:,.0f}"
      self.bar.set_postfix(postfix, refresh=False)
      self.bar.update(1)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


_first_step: dict[str, float | None] = {"at": None}


def first_step_at() -> float | None:
  """`time.perf_counter()` when this process's first training step (since
  `reset_first_step`) had finished, compilation included; None before it."""
  return _first_step["at"]


def reset_first_step() -> None:
  _first_step["at"] = None


def mark_first_step(at: float) -> None:
  """Records `at` as the first step's end unless one is recorded (the scanned epoch,
  whose first step ends inside its first epoch's program, marks that program's end)."""
  if _first_step["at"] is None:
    _first_step["at"] = at


class Throughput:
  """Patients per second of an epoch's training steps with compilation left out: the
  clock starts once the epoch's first step has finished (the first step of a run is the
  one that compiles) and that step's patients are not counted."""

  def __init__(self):
    self.t0: float | None = None
    self.patients = 0

  def step_done(self, outputs: Any, patients: int) -> None:
    """After each step; `outputs` are arrays the step's work ends with."""
    if self.t0 is None:
      jax.block_until_ready(outputs)
      self.t0 = time.perf_counter()
      if _first_step["at"] is None:
        _first_step["at"] = self.t0
    else:
      self.patients += patients

  def rate(self) -> float | None:
    """Patients/s so far (call after a device sync for an exact value); None before the
    second step."""
    if self.t0 is None or self.patients == 0:
      return None
    return self.patients / max(time.perf_counter() - self.t0, 1e-9)


@jax.jit
def accumulate(sums: dict, parts: dict) -> dict:
  """`sums + parts` leaf by leaf, on the device (per-epoch loss-term sums)."""
  return jax.tree.map(jnp.add, sums, parts)


def validation_metrics(labels_NxT: np.ndarray, probs_NxT: np.ndarray,
                       task_names: tuple[str, ...] | list[str]) -> dict[str, float]:
  """Per task, the validation AUROC and mean binary cross-entropy (probabilities clipped
  to [1e-7, 1 - 1e-7]) over the patients whose label is known."""
  out = {}
  for t, name in enumerate(task_names):
    known = ~np.isnan(labels_NxT[:, t])
    y, p = labels_NxT[known, t].astype(np.float64), probs_NxT[known, t].astype(np.float64)
    out[f"val/{name}/auroc"] = float(metrics_lib.auroc(y, p)) if len(y) else float("nan")
    q = np.clip(p, 1e-7, 1 - 1e-7)
    out[f"val/{name}/loss"] = (float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))
                               if len(y) else float("nan"))
  return out


class TensorBoard:
  """The numbers of every metrics.jsonl line as TensorBoard scalars in WORKDIR/tensorboard/
  (process 0, `train.tensorboard`; needs the `tensorboard` extra), one event per line,
  written and flushed synchronously (so a kill loses nothing that metrics.jsonl holds).
  A resumed run starts with a purge marker, so TensorBoard hides the events logged after
  the restored step; a fresh run removes old event files."""

  def __init__(self, workdir: str, enabled: bool, resume_step: int | None):
    self.writer = None
    if not enabled or jax.process_index() != 0:
      return
    try:
      from tensorboardX import summary as tb_summary
      from tensorboardX.event_file_writer import EventsWriter
      from tensorboardX.proto import event_pb2, summary_pb2
    except ImportError:
      raise ValueError("--config.train.tensorboard=True needs tensorboardX: pip install -e "
                       "'.[tensorboard]'") from None
    self.summary, self.event_pb2, self.summary_pb2 = tb_summary, event_pb2, summary_pb2
    logdir = os.path.join(workdir, "tensorboard")
    if resume_step is None and os.path.isdir(logdir):
      for name in os.listdir(logdir):
        if name.startswith("events.out.tfevents."):
          os.remove(os.path.join(logdir, name))
    os.makedirs(logdir, exist_ok=True)
    self.writer = EventsWriter(os.path.join(logdir, "events"), f".{os.getpid()}")
    if resume_step is not None:
      self.writer.write_event(event_pb2.Event(
          wall_time=time.time(), step=resume_step + 1,
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self.writer.flush()

  def write(self, record: dict) -> None:
    if self.writer is None:
      return
    summary = self.summary_pb2.Summary()
    for key, value in record.items():
      if key not in ("step", "epoch") and isinstance(value, (int, float)) \
          and not isinstance(value, bool):
        summary.value.extend(self.summary.scalar(key, float(value)).value)
    self.writer.write_event(self.event_pb2.Event(wall_time=time.time(),
                                                 step=int(record["step"]), summary=summary))
    self.writer.flush()

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
