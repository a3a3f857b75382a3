"""Training: one jit-compiled, donated train step; a resumable loop with early stopping.

The loop never sees test patients: it gets a cohort and the rows to train and validate
on. Everything that varies between steps is a pure function of (config, step): the
epoch's data order (`shards.Layout.epoch_order`), the dropout key (`fold_in(key, step)`) and
the annealed loss scales. Together with orbax checkpoints of the model, the optimizer
and the position in the epoch, a run killed at any moment and rerun reproduces the
uninterrupted run exactly (on CPU).

What a run reports: one line per epoch through `log` (a live tqdm bar on top when stderr
is a terminal), a line per epoch and every `train.log_every` steps in metrics.jsonl, and
the same numbers as TensorBoard scalars with `train.tensorboard` (docs/outputs.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from flax import nnx

from crl_mmnar_jax import metrics as metrics_lib
from crl_mmnar_jax.data import shards
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.train.checkpoint import Checkpoints
from crl_mmnar_jax.train.optim import loss_scales, lr_schedule, make_optimizer
from crl_mmnar_jax.train.step import init_state, make_predict_fn, make_step, predict, prefetched
from crl_mmnar_jax.workdir import StopRequest, WorkdirError, fault_point

if TYPE_CHECKING:
  from crl_mmnar_jax.methods import MethodData, NeuralMethod


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or Inf; the checkpoints saved before it are left intact."""


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


@dataclasses.dataclass
class FitResult:
  graphdef: nnx.GraphDef
  state: Any               # best model + optimizer state
  predict_fn: Callable     # `make_predict_fn(graphdef)`, compiled during training
  best_epoch: int          # 1-based, as logged, in metrics.jsonl and in results.json
  best_step: int
  best_score: float
  history: list[dict]
  resumed: bool


def _check_finite(pending: list[tuple[int, Any]], ckpt: Checkpoints | None = None
                  ) -> float | None:
  """Raises NonFiniteLossError naming the first step whose loss or updated parameters
  are NaN/Inf and what `ckpt` holds; returns the last loss. Called before every
  checkpoint save."""
  if not pending:
    return None
  values = jax.device_get([p for _, p in pending])
  for (step, _), (loss, finite) in zip(pending, values):
    if not finite:
      what = f"loss became {float(loss)}" if not np.isfinite(loss) else \
          "parameters became NaN/Inf"
      saved = None if ckpt is None else ckpt.latest_step()
      where = ("No checkpoint was saved before it." if saved is None else
               f"The latest checkpoint (step {saved}) was saved before it and is intact.")
      raise NonFiniteLossError(
          f"{what} at step {step}; training stopped. {where} Lower train.lr or "
          f"train.clip_norm, or check the inputs, with a new --workdir.")
  return float(values[-1][0])


def fit(config: ml_collections.ConfigDict, method: NeuralMethod, data: MethodData,
        workdir: str, mesh: jax.sharding.Mesh, config_hash: str,
        log: Callable[[str], None] = print,
        on_epoch: Callable[[int, float], None] | None = None) -> FitResult:
  """Trains `method` on `data.train_rows` with early stopping on the AUROC of
  `data.val_rows`; resumes from `workdir` if possible. SIGINT/SIGTERM stop it between
  steps, after a checkpoint, with `workdir.Interrupted`. `on_epoch(epoch, val mean
  AUROC)` (1-based epoch) is called after each joint epoch's checkpoint; an exception it
  raises (a tuner's pruning) stops the run there, the workdir resumable."""
  with StopRequest() as signals:
    return _fit_loop(config, method, data, workdir, mesh, config_hash, log, signals,
                     on_epoch)


def _fit_loop(config: ml_collections.ConfigDict, method: NeuralMethod, data: MethodData,
              workdir: str, mesh: jax.sharding.Mesh, config_hash: str,
              log: Callable[[str], None], signals: StopRequest,
              on_epoch: Callable[[int, float], None] | None = None) -> FitResult:
  cohort, train_rows, val_rows = data.cohort, data.train_rows, data.val_rows
  layout = data.layout or shards.Layout.single(cohort.n)
  t = config.train
  gbs = int(t.batch_size)
  mesh_lib.check_batch_size(gbs, mesh)
  layout.check_batch_size(gbs, "train.batch_size")
  steps_per_epoch = layout.n_batches(train_rows, gbs)
  n_epochs = int(t.pretrain_epochs) + int(t.epochs)
  horizon = n_epochs * (data.schedule_steps_per_epoch or steps_per_epoch)
  tx = make_optimizer(config, horizon)
  lr_at = lr_schedule(config, horizon)
  lr_of_step = lambda step: float(lr_at(max(step - 1, 0)))   # the lr update `step` used
  lr_of_step(0)                    # compiled here, not inside the timed training steps
  graphdef, state = init_state(lambda rngs: method.build(config, data, rngs), tx,
                               int(config.seed), mesh)
  train_step = make_step(graphdef, method.make_loss(config), str(t.get("compute_dtype", "float32")))
  predict_fn = make_predict_fn(graphdef)
  eval_bs = int(t.eval_batch_size)
  mesh_lib.check_batch_size(eval_bs, mesh)
  layout.check_batch_size(eval_bs, "train.eval_batch_size")
  base_key = jax.random.key(int(config.seed))
  val_labels = cohort.labels[val_rows]

  ckpt = Checkpoints(workdir, log)
  # Internal counters: `epoch` is the number of epochs done (0-based), `best_epoch` too;
  # everything logged or returned numbers epochs from 1.
  meta = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_score": -1.0, "best_step": -1,
          "best_epoch": -1, "bad_epochs": 0, "history": [], "done": False,
          "config_hash": config_hash}
  restored = ckpt.restore_latest(state)
  resumed = restored is not None
  if resumed:
    state, meta = restored
    if meta.get("config_hash") != config_hash:
      raise WorkdirError(f"checkpoint in {workdir} was written by a different config "
                         f"(hash {meta.get('config_hash')} != {config_hash})")
    if meta["done"]:
      log(f"resuming from step {meta['step']}: training had finished; the best model "
          f"(epoch {int(meta['best_epoch']) + 1}) is restored")
    else:
      log(f"resuming from step {meta['step']} (epoch {meta['epoch'] + 1}, batch "
          f"{meta['batch_in_epoch']})")
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"),
                         meta["step"] if resumed else None)
  board = TensorBoard(workdir, bool(t.get("tensorboard", False)),
                      meta["step"] if resumed else None)

  def write(record: dict) -> None:
    writer.write(record)
    board.write(record)

  step = int(meta["step"])
  epoch = int(meta["epoch"])
  while not meta["done"] and epoch < n_epochs:
    batches = layout.batches(layout.epoch_order(train_rows, int(config.seed), epoch), gbs)
    aux, pred = loss_scales(config, epoch)
    aux_a, pred_a = jnp.float32(aux), jnp.float32(pred)
    phase = "pretrain" if epoch < t.pretrain_epochs else "joint"
    first = int(meta["batch_in_epoch"])
    bar = Progress(steps_per_epoch, first, f"epoch {epoch + 1}/{n_epochs} ({phase})",
                   bool(t.progress))
    # Per-term sums over the epoch's steps (carried by mid-epoch checkpoints, so a
    # resumed epoch logs the means of the uninterrupted one).
    carried = meta.get("epoch_sums") if first else None
    sums = None if not carried else {k: jnp.float32(v) for k, v in carried.items()}
    n_terms = int(meta.get("epoch_steps", 0)) if carried else 0

    def save_mid_epoch(b):
      nonlocal pending
      _check_finite(pending, ckpt)
      pending = []
      host = {k: float(v) for k, v in jax.device_get(sums).items()}
      ckpt.save_latest(step, state, dict(meta, step=step, epoch=epoch, batch_in_epoch=b + 1,
                                         epoch_sums=host, epoch_steps=n_terms))

    pending: list[tuple[int, Any]] = []
    meter, last_loss, t_epoch = Throughput(), None, time.perf_counter()
    load = lambda b: mesh_lib.put_batch(mesh_lib.local_batch(cohort, batches[b], gbs), mesh)
    for b, batch in prefetched(load, range(first, steps_per_epoch)):
      state, parts = train_step(state, batch, base_key, np.int32(step), aux_a, pred_a)
      step += 1
      fault_point("step", step)
      terms = {k: v for k, v in parts.items() if k != "finite"}
      sums = accumulate(jax.tree.map(jnp.zeros_like, terms) if sums is None else sums,
                         terms)
      n_terms += 1
      meter.step_done(sums, int((batches[b] >= 0).sum()))
      pending.append((step, (parts["total"], parts["finite"])))
      if step % t.log_every == 0:
        last_loss = _check_finite(pending, ckpt)
        pending = []
        host = {k: float(v) for k, v in jax.device_get(terms).items()}
        write({"kind": "step", "step": step, "epoch": epoch + 1, "phase": phase,
               "lr": lr_of_step(step), **{f"batch/{k}": v for k, v in host.items()}})
      if t.checkpoint_every and step % t.checkpoint_every == 0 and b + 1 < steps_per_epoch:
        save_mid_epoch(b)
      if signals.requested and b + 1 < steps_per_epoch:    # SIGINT/SIGTERM: save, then stop
        save_mid_epoch(b)
        signals.stop(step)
      bar.update(last_loss, meter.rate())
    last_loss = _check_finite(pending, ckpt) if pending else last_loss   # a device sync
    rate = meter.rate()
    bar.close()

    means = {} if sums is None else {
        f"train/{k}": float(v) / max(n_terms, 1) for k, v in jax.device_get(sums).items()}
    record = {"kind": "epoch", "step": step, "epoch": epoch + 1, "phase": phase,
              "lr": lr_of_step(step), "aux_scale": aux, "pred_scale": pred, **means,
              "train/patients_per_s": rate}
    line = f"epoch {epoch + 1}/{n_epochs} ({phase}): loss "
    line += "-" if sums is None else f"{means['train/total']:.4f}"
    stop = False
    if phase == "joint":
      probs = predict(predict_fn, state, cohort, val_rows, eval_bs, mesh, layout)
      score = mean_auroc(val_labels, probs)
      if math.isnan(score):
        raise ValueError("validation AUROC is undefined for every task (one class only)")
      record["val/mean_auroc"] = score
      record.update(validation_metrics(val_labels, probs, cohort.task_names))
      meta["history"].append({"epoch": epoch + 1, "step": step, "val_mean_auroc": score})
      if score > meta["best_score"]:
        meta.update(best_score=score, best_step=step, best_epoch=epoch, bad_epochs=0)
        ckpt.save_best(step, state, dict(meta, step=step, epoch=epoch + 1, batch_in_epoch=0,
                                         epoch_sums=None, epoch_steps=0))
      else:
        meta["bad_epochs"] += 1
      stop = meta["bad_epochs"] >= t.patience
      line += (f", val mean AUROC {score:.4f} (best {meta['best_score']:.4f} at epoch "
               f"{meta['best_epoch'] + 1})")
    record["time/epoch_s"] = time.perf_counter() - t_epoch
    line += f", lr {record['lr']:.2e}"
    line += "" if rate is None else f", {rate:,.0f} patients/s"
    if stop and epoch + 1 < n_epochs:
      line += f"; early stopping: no improvement for {t.patience} epoch(s)"
    write(record)
    log(line)
    epoch += 1
    meta.update(step=step, epoch=epoch, batch_in_epoch=0, done=stop or epoch >= n_epochs,
                epoch_sums=None, epoch_steps=0)
    ckpt.save_latest(step, state, meta)
    if on_epoch is not None and "val/mean_auroc" in record:
      try:
        on_epoch(epoch, float(record["val/mean_auroc"]))
      except BaseException:
        board.close()
        ckpt.close()
        raise
    if signals.requested:
      signals.stop(step)

  board.close()
  best = ckpt.restore_best(state)
  ckpt.close()
  if best is None:
    raise ValueError("no joint-training epoch ran, so there is no best checkpoint "
                     "(train.epochs must be >= 1)")
  return FitResult(graphdef=graphdef, state=best[0], predict_fn=predict_fn,
                   best_epoch=int(meta["best_epoch"]) + 1,
                   best_step=int(meta["best_step"]), best_score=float(meta["best_score"]),
                   history=list(meta["history"]), resumed=resumed)
