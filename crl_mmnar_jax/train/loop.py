"""Training: one jit-compiled, donated train step; a resumable loop with early stopping.

The loop never sees test patients: it gets a cohort and the rows to train and validate
on. Everything that varies between steps is a pure function of (config, step): the
epoch's data order (`shards.Layout.epoch_order`), the dropout key (`fold_in(key, step)`) and
the annealed loss scales. Together with orbax checkpoints of the model, the optimizer
and the position in the epoch, a run killed at any moment and rerun reproduces the
uninterrupted run exactly (on CPU).
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
from flax import nnx

from crl_mmnar_jax import metrics as metrics_lib
from crl_mmnar_jax.data import shards
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.train.checkpoint import Checkpoints
from crl_mmnar_jax.train.optim import loss_scales, make_optimizer
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
  """metrics.jsonl, one JSON object per line, written by process 0 only.

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
  """A one-line progress bar on stderr (process 0), with loss and throughput."""

  def __init__(self, total: int, desc: str, enabled: bool):
    self.total, self.desc, self.enabled = total, desc, enabled and jax.process_index() == 0
    self.t0 = time.perf_counter()
    self.last = 0.0

  def update(self, done: int, loss: float | None, patients: int, force: bool = False) -> None:
    now = time.perf_counter()
    if not self.enabled or (not force and now - self.last < 0.5):
      return
    self.last = now
    width = 24
    filled = int(width * done / max(self.total, 1))
    rate = patients / max(now - self.t0, 1e-9)
    loss_s = "" if loss is None else f" loss {loss:.4f}"
    sys.stderr.write(f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] "
                     f"{done}/{self.total}{loss_s} {rate:,.0f} patients/s")
    if force:
      sys.stderr.write("\n")
    sys.stderr.flush()


@dataclasses.dataclass
class FitResult:
  graphdef: nnx.GraphDef
  state: Any               # best model + optimizer state
  predict_fn: Callable     # `make_predict_fn(graphdef)`, compiled during training
  best_epoch: int
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
        log: Callable[[str], None] = print) -> FitResult:
  """Trains `method` on `data.train_rows` with early stopping on the AUROC of
  `data.val_rows`; resumes from `workdir` if possible. SIGINT/SIGTERM stop it between
  steps, after a checkpoint, with `workdir.Interrupted`."""
  with StopRequest() as signals:
    return _fit_loop(config, method, data, workdir, mesh, config_hash, log, signals)


def _fit_loop(config: ml_collections.ConfigDict, method: NeuralMethod, data: MethodData,
              workdir: str, mesh: jax.sharding.Mesh, config_hash: str,
              log: Callable[[str], None], signals: StopRequest) -> FitResult:
  cohort, train_rows, val_rows = data.cohort, data.train_rows, data.val_rows
  layout = data.layout or shards.Layout.single(cohort.n)
  t = config.train
  gbs = int(t.batch_size)
  mesh_lib.check_batch_size(gbs, mesh)
  layout.check_batch_size(gbs, "train.batch_size")
  steps_per_epoch = layout.n_batches(train_rows, gbs)
  n_epochs = int(t.pretrain_epochs) + int(t.epochs)
  tx = make_optimizer(config, n_epochs * steps_per_epoch)
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
    log(f"resuming from step {meta['step']} (epoch {meta['epoch']}, batch "
        f"{meta['batch_in_epoch']})")
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"),
                         meta["step"] if resumed else None)

  step = int(meta["step"])
  epoch = int(meta["epoch"])
  while not meta["done"] and epoch < n_epochs:
    batches = layout.batches(layout.epoch_order(train_rows, int(config.seed), epoch), gbs)
    aux, pred = loss_scales(config, epoch)
    aux_a, pred_a = jnp.float32(aux), jnp.float32(pred)
    phase = "pretrain" if epoch < t.pretrain_epochs else "joint"
    bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{n_epochs} ({phase})", t.progress)
    pending: list[tuple[int, Any]] = []
    t0, n_seen, last_loss = time.perf_counter(), 0, None
    load = lambda b: mesh_lib.put_batch(mesh_lib.local_batch(cohort, batches[b], gbs), mesh)
    for b, batch in prefetched(load, range(int(meta["batch_in_epoch"]), steps_per_epoch)):
      state, parts = train_step(state, batch, base_key, np.int32(step), aux_a, pred_a)
      step += 1
      fault_point("step", step)
      n_seen += int((batches[b] >= 0).sum())
      pending.append((step, (parts["total"], parts["finite"])))
      if step % t.log_every == 0:
        last_loss = _check_finite(pending, ckpt)
        pending = []
        host = {k: float(v) for k, v in jax.device_get(parts).items() if k != "finite"}
        writer.write({"step": step, "epoch": epoch, "phase": phase, "aux_scale": aux,
                      **{f"train/{k}": v for k, v in host.items()}})
      if t.checkpoint_every and step % t.checkpoint_every == 0 and b + 1 < steps_per_epoch:
        _check_finite(pending, ckpt)
        pending = []
        ckpt.save_latest(step, state, dict(meta, step=step, epoch=epoch, batch_in_epoch=b + 1))
      if signals.requested and b + 1 < steps_per_epoch:    # SIGINT/SIGTERM: save, then stop
        _check_finite(pending, ckpt)
        pending = []
        ckpt.save_latest(step, state, dict(meta, step=step, epoch=epoch, batch_in_epoch=b + 1))
        signals.stop(step)
      bar.update(b + 1, last_loss, n_seen)
    last_loss = _check_finite(pending, ckpt) if pending else last_loss
    train_time = time.perf_counter() - t0
    bar.update(steps_per_epoch, last_loss, n_seen, force=True)

    record = {"step": step, "epoch": epoch, "phase": phase,
              "train/patients_per_s": n_seen / max(train_time, 1e-9)}
    if phase == "joint":
      probs = predict(predict_fn, state, cohort, val_rows, eval_bs, mesh, layout)
      score = mean_auroc(val_labels, probs)
      if math.isnan(score):
        raise ValueError("validation AUROC is undefined for every task (one class only)")
      record["val/mean_auroc"] = score
      meta["history"].append({"epoch": epoch, "step": step, "val_mean_auroc": score})
      if score > meta["best_score"]:
        meta.update(best_score=score, best_step=step, best_epoch=epoch, bad_epochs=0)
        ckpt.save_best(step, state, dict(meta, step=step, epoch=epoch + 1, batch_in_epoch=0))
      else:
        meta["bad_epochs"] += 1
      log(f"epoch {epoch + 1}: val mean AUROC {score:.4f} (best {meta['best_score']:.4f} "
          f"at epoch {meta['best_epoch'] + 1}), {record['train/patients_per_s']:,.0f} "
          f"patients/s")
    writer.write(record)
    epoch += 1
    stop = phase == "joint" and meta["bad_epochs"] >= t.patience
    meta.update(step=step, epoch=epoch, batch_in_epoch=0, done=stop or epoch >= n_epochs)
    if stop:
      log(f"early stopping: no improvement for {t.patience} epochs")
    ckpt.save_latest(step, state, meta)
    if signals.requested:
      signals.stop(step)

  best = ckpt.restore_best(state)
  ckpt.close()
  if best is None:
    raise ValueError("no joint-training epoch ran, so there is no best checkpoint "
                     "(train.epochs must be >= 1)")
  return FitResult(graphdef=graphdef, state=best[0], predict_fn=predict_fn,
                   best_epoch=int(meta["best_epoch"]),
                   best_step=int(meta["best_step"]), best_score=float(meta["best_score"]),
                   history=list(meta["history"]), resumed=resumed)
