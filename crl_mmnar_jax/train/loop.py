"""The training loop: K >= 1 members of one neural method, one jitted step, resumable.

A single run is K = 1; the cross-fitted members of `train.cv_folds=K` are K > 1 and
train together, their states stacked on a member axis (`train/members.py`). Each member
does exactly what its own run would: its own initialisation and dropout keys (its
config's seed), its own standardised cohort, shuffled training rows and validation
rows, its own learning-rate schedule and weight decay (hyperparameters held in its
optimizer state, `train/optim.py`; cross-fitted members share the largest member's
schedule length, `MethodData.schedule_steps_per_epoch`), its own early stopping on the
mean validation AUROC. A member whose epoch has fewer batches, or that has stopped
early, is masked out of the step.

The loop never sees test patients. Everything that varies between steps is a pure
function of (config, step): the epoch's data order (`shards.Layout.epoch_order`), the
dropout key (`fold_in(key, step)`) and the annealed loss scales. With orbax checkpoints
of the state and of the typed run state (`RunState`: the position in the epoch, each
member's early-stopping record), a run killed at any moment and rerun reproduces the
uninterrupted run exactly (on CPU).

What a run reports, per member: one line per epoch through `log` (a live tqdm bar on
top when stderr is a terminal), a line per epoch and every `train.log_every` steps in
its metrics.jsonl, and the same numbers as TensorBoard scalars with `train.tensorboard`
(`train/records.py`, docs/outputs.md).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from crl_mmnar_jax.data import shards
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.train import records
from crl_mmnar_jax.train import scan as scan_lib
from crl_mmnar_jax.train.checkpoint import Checkpoints
from crl_mmnar_jax.train.members import Member, MemberAxis
from crl_mmnar_jax.train.optim import loss_scales, lr_schedule, make_optimizer
from crl_mmnar_jax.train.step import init_state, make_predict_fn, predict, prefetched
from crl_mmnar_jax.workdir import StopRequest, WorkdirError, fault_point

if TYPE_CHECKING:
  from crl_mmnar_jax.methods import NeuralMethod

RUN_STATE_FORMAT = 5     # the checkpoints' run state; 5: dropout rates and loss weights
                         # in the model's state (`layers.Hyper`); 4: the optimizer's
                         # hyperparameters in its state; 3: `best` holds the model alone;
                         # 2: one loop; 1 (no "format"): before it


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or Inf; the checkpoints saved before it are left intact."""


@dataclasses.dataclass
class MemberProgress:
  """One member's early-stopping record. Epochs are 0-based here, 1-based in logs."""
  step: int = 0               # its optimizer steps so far
  epochs: int = 0             # epochs it has trained
  best_score: float = -1.0    # best mean validation AUROC
  best_step: int = -1
  best_epoch: int = -1
  bad_epochs: int = 0         # joint epochs since the best
  done: bool = False
  history: list[dict] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RunState:
  """Where a run is, saved with every checkpoint as JSON (`to_json`, `from_json`)."""
  config_hashes: list[str]
  members: list[MemberProgress]
  tick: int = 0               # steps of the run (each steps every active member)
  epoch: int = 0              # epochs done
  batch_in_epoch: int = 0     # batches of the current epoch done
  done: bool = False
  epoch_sums: dict[str, list[float]] | None = None   # per-term sums so far, per member
  epoch_terms: list[int] | None = None               # steps in those sums, per member

  def to_json(self, **changes: Any) -> dict:
    return dict(dataclasses.asdict(dataclasses.replace(self, **changes)),
                format=RUN_STATE_FORMAT)

  @classmethod
  def from_json(cls, meta: dict, where: str) -> RunState:
    if meta.get("format") != RUN_STATE_FORMAT:
      raise WorkdirError(f"checkpoint in {where} was written by an earlier version of "
                         f"crl_mmnar_jax (run state format {meta.get('format', 1)}, this "
                         f"version reads {RUN_STATE_FORMAT}); train again in a new --workdir")
    fields = {f.name for f in dataclasses.fields(cls)}
    out = cls(**{k: v for k, v in meta.items() if k in fields})
    out.members = [MemberProgress(**m) for m in out.members]
    return out


@dataclasses.dataclass
class FitResult:
  """One member's trained model."""
  graphdef: nnx.GraphDef
  state: Any                  # its best model + optimizer state
  predict_fn: Callable        # `make_predict_fn(graphdef)`, compiled during training
  best_epoch: int             # 1-based, as logged, in metrics.jsonl and in results.json
  best_step: int
  best_score: float
  history: list[dict]
  resumed: bool


def fit(config: ml_collections.ConfigDict, method: NeuralMethod, members: list[Member],
        checkpoint_dir: str, mesh: jax.sharding.Mesh, log: Callable[[str], None] = print,
        on_epoch: Callable[[int, float], None] | None = None) -> list[FitResult]:
  """Trains `members` (one structure) together, each on its `data.train_rows` with early
  stopping on its `data.val_rows`; checkpoints in `checkpoint_dir/checkpoints/`,
  resuming from them if possible. SIGINT/SIGTERM stop it between steps, after a
  checkpoint, with `workdir.Interrupted`. `on_epoch(epoch, val mean AUROC)` (1-based
  epoch; the members' mean) is called after each joint epoch's checkpoint; an exception
  it raises (a tuner's pruning) stops the run there, the workdir resumable."""
  with StopRequest() as signals:
    return _Run(config, method, members, checkpoint_dir, mesh, log, signals).train(on_epoch)


class _Run:
  """One run of the loop: set up in `__init__`, trained by `train`."""

  def __init__(self, config, method, members, checkpoint_dir, mesh, log, signals):
    self.config, self.members, self.mesh, self.log, self.signals = (
        config, members, mesh, log, signals)
    t = self.t = config.train
    self.axis = MemberAxis(len(members))
    self.gbs, self.eval_bs = int(t.batch_size), int(t.eval_batch_size)
    self.layouts = [m.data.layout or shards.Layout.single(m.data.cohort.n) for m in members]
    for bs, name in ((self.gbs, "train.batch_size"), (self.eval_bs, "train.eval_batch_size")):
      mesh_lib.check_batch_divides_devices(bs, mesh)
      for lay in self.layouts:
        lay.check_batch_divides_shards(bs, name)
    self.steps_K = [lay.n_batches(m.data.train_rows, self.gbs)
                    for lay, m in zip(self.layouts, members)]
    self.n_epochs = int(t.pretrain_epochs) + int(t.epochs)
    # Each member's own schedule (its optimizer's hyperparameters, `train.optim`).
    horizons = [self.n_epochs * (m.data.schedule_steps_per_epoch or s)
                for m, s in zip(members, self.steps_K)]
    lr_at = [lr_schedule(m.config, h) for m, h in zip(members, horizons)]
    self.lr_of_step = lambda k, step: float(lr_at[k](max(step - 1, 0)))  # the lr `step` used
    self.lr_of_step(0, 0)          # compiled here, not inside the timed training steps
    self.seeds = [int(m.config.seed) for m in members]
    inits = [init_state(lambda rngs, m=m: method.build(m.config, m.data, rngs),
                        make_optimizer(m.config, h), s, mesh)
             for m, h, s in zip(members, horizons, self.seeds)]
    self.graphdef = inits[0][0]
    self.state = jax.device_put(self.axis.stack([s for _, s in inits]),
                                mesh_lib.replicated(mesh))
    del inits
    self.step_fn = self.axis.make_step(self.graphdef, method.make_loss(config),
                                       str(t.compute_dtype))
    self.predict_fn = make_predict_fn(self.graphdef)
    cohorts = [m.data.cohort for m in members]
    self.scan = scan_lib.use_scan(
        str(t.scan_epoch), cohorts, jax.process_count() == 1 and all(
            lay.n_shards == 1 for lay in self.layouts), int(t.checkpoint_every))
    if self.scan:
      self.n_rows = cohorts[0].n
      self.data_dev = scan_lib.device_cohort(cohorts, self.axis.k, mesh)
      self.epoch_fn = scan_lib.EpochProgram(self.axis.step_body(
          self.graphdef, method.make_loss(config), str(t.compute_dtype)), self.axis.k, mesh)
    self.keys = jnp.stack([jax.random.key(s) for s in self.seeds])
    self.where = checkpoint_dir
    self.ckpt = Checkpoints(checkpoint_dir, log)
    hashes = [m.config_hash for m in members]
    self.run = RunState(hashes, [MemberProgress() for _ in members])
    self.best = None
    restored = self.ckpt.restore_latest(
        self.state, check=lambda meta: RunState.from_json(meta, checkpoint_dir))
    self.resumed = restored is not None
    if self.resumed:
      self.state, meta = restored
      self.run = RunState.from_json(meta, checkpoint_dir)
      if self.run.config_hashes != hashes:
        raise WorkdirError(f"checkpoint in {checkpoint_dir} was written by a different config")
      best = self.ckpt.restore_best(self.state)
      self.best = None if best is None else best[0]
      self.log(self._resume_line())
    if self.best is None:
      self.best = jax.tree.map(jnp.copy, self.state)
    resume_steps = [p.step if self.resumed else None for p in self.run.members]
    self.writers = [records.MetricsWriter(os.path.join(m.workdir, "metrics.jsonl"), s)
                    for m, s in zip(members, resume_steps)]
    self.boards = [records.TensorBoard(m.workdir, bool(t.tensorboard), s)
                   for m, s in zip(members, resume_steps)]

  def _resume_line(self) -> str:
    r = self.run
    if r.done:
      return (f"resuming from step {r.tick}: training had finished; the best model "
              f"(epoch {r.members[0].best_epoch + 1}) is restored" if self.axis.k == 1 else
              f"resuming the {self.axis.k} members: training had finished")
    where = f"epoch {r.epoch + 1}, batch {r.batch_in_epoch}"
    return (f"resuming from step {r.tick} ({where})" if self.axis.k == 1 else
            f"resuming the {self.axis.k} stacked members at {where}")

  def _write(self, k: int, record: dict) -> None:
    self.writers[k].write(record)
    self.boards[k].write(record)

  def _check_finite(self, pending: list[tuple[np.ndarray, Any]]) -> None:
    """Raises NonFiniteLossError naming the first member and step whose loss or updated
    parameters are NaN/Inf and what the checkpoints hold. Called before every save."""
    values = jax.device_get([finite for _, finite in pending])
    for (steps, _), finite in zip(pending, values):
      if np.all(finite):
        continue
      bad = int(np.flatnonzero(~np.asarray(finite))[0])
      who = "" if self.axis.k == 1 else f"member {bad}: "
      saved = self.ckpt.latest_step()
      where = ("No checkpoint was saved before it." if saved is None else
               f"The latest checkpoint (step {saved}) was saved before it and is intact.")
      raise NonFiniteLossError(
          f"{who}the loss or parameters became NaN/Inf at step {int(steps[bad])}; "
          f"training stopped. {where} Lower train.lr or train.clip_norm, or check the "
          f"inputs, with a new --workdir.")
    pending.clear()

  def train(self, on_epoch: Callable[[int, float], None] | None) -> list[FitResult]:
    try:
      while not self.run.done and self.run.epoch < self.n_epochs:
        score = self._epoch()
        if on_epoch is not None and score is not None:
          on_epoch(self.run.epoch, score)
        if self.signals.requested:
          self.signals.stop(self.run.tick)
    finally:
      for board in self.boards:
        board.close()
      self.ckpt.close()
    results = []
    for k, p in enumerate(self.run.members):
      if p.best_step < 0:
        raise ValueError("no joint-training epoch ran, so there is no best checkpoint "
                         "(train.epochs must be >= 1)")
      results.append(FitResult(self.graphdef, self.axis.take(self.best, k), self.predict_fn,
                               p.best_epoch + 1, p.best_step, p.best_score,
                               list(p.history), self.resumed))
    return results

  def _save_latest(self, b_next: int, sums: dict | None, n_terms: np.ndarray) -> None:
    host = None if sums is None else {k: [float(x) for x in v]
                                      for k, v in jax.device_get(sums).items()}
    self.ckpt.save_latest(self.run.tick, self.state, self.run.to_json(
        batch_in_epoch=b_next, epoch_sums=host, epoch_terms=[int(n) for n in n_terms]))

  def _plan(self) -> tuple:
    """What both loops need to run the current epoch: (epoch, active members, each
    member's batches of rows, loss scales aux and pred, phase, steps in the epoch)."""
    epoch = self.run.epoch
    active_ep = np.array([not p.done for p in self.run.members])
    orders = [lay.batches(lay.epoch_order(m.data.train_rows, s, epoch), self.gbs)
              for lay, m, s in zip(self.layouts, self.members, self.seeds)]
    aux, pred = loss_scales(self.config, epoch)
    phase = "pretrain" if epoch < self.t.pretrain_epochs else "joint"
    return epoch, active_ep, orders, aux, pred, phase, max(self.steps_K)

  def _epoch(self) -> float | None:
    """Trains one epoch, evaluates, logs and checkpoints; returns the members' mean
    validation AUROC (None in pre-training)."""
    if self.scan and self.run.batch_in_epoch == 0:
      return self._scanned_epoch()
    run, t, members, k_all = self.run, self.t, self.members, self.axis.k
    epoch, active_ep, orders, aux, pred, phase, per_epoch = self._plan()
    aux_a, pred_a = jnp.float32(aux), jnp.float32(pred)
    first = run.batch_in_epoch
    sums = None
    n_terms = np.zeros(k_all, np.int64)
    if first and run.epoch_sums:       # a resumed epoch logs the uninterrupted one's means
      sums = {k: jnp.asarray(v, jnp.float32) for k, v in run.epoch_sums.items()}
      n_terms = np.asarray(run.epoch_terms, np.int64)
    bar = records.Progress(per_epoch, first, f"epoch {epoch + 1}/{self.n_epochs} ({phase})",
                           bool(t.progress))

    def load(b):
      return self.axis.put_batches([mesh_lib.local_batch(
          m.data.cohort, orders[k][b] if b < self.steps_K[k] else np.full(self.gbs, -1),
          self.gbs) for k, m in enumerate(members)], self.mesh)

    meter, pending, t_epoch = records.Throughput(), [], time.perf_counter()
    last_loss = None
    for b, batch in prefetched(load, range(first, per_epoch)):
      active = active_ep & (b < np.array(self.steps_K))
      steps_now = np.array([p.step for p in run.members], np.int32)
      self.state, parts = self.step_fn(self.state, batch, self.keys, steps_now, active,
                                       aux_a, pred_a)
      for k in np.flatnonzero(active):
        run.members[k].step += 1
      run.tick += 1
      fault_point("step", run.tick)
      terms = {k: v for k, v in parts.items() if k != "finite"}
      sums = terms if sums is None else records.accumulate(sums, terms)
      n_terms += active
      meter.step_done(sums, int(sum((orders[k][b] >= 0).sum()
                                    for k in np.flatnonzero(active))) // k_all)
      pending.append((steps_now + 1, parts["finite"]))
      if run.tick % t.log_every == 0:
        self._check_finite(pending)
        host = jax.device_get(terms)
        last_loss = float(host["total"][0])
        for k in np.flatnonzero(active):
          s = run.members[k].step
          self._write(k, {"kind": "step", "step": s, "epoch": epoch + 1, "phase": phase,
                          "lr": self.lr_of_step(k, s),
                          **{f"batch/{n}": float(v[k]) for n, v in host.items()}})
      if b + 1 < per_epoch and (self.signals.requested or (
          t.checkpoint_every and run.tick % t.checkpoint_every == 0)):
        self._check_finite(pending)
        self._save_latest(b + 1, sums, n_terms)
        if self.signals.requested:         # SIGINT/SIGTERM: saved, now stop
          self.signals.stop(run.tick)
      bar.update(last_loss, meter.rate())
    self._check_finite(pending)            # a device sync
    rate = meter.rate()
    bar.close()
    return self._end_epoch(epoch, phase, aux, pred, active_ep, sums, n_terms, rate,
                           time.perf_counter() - t_epoch)

  def _scanned_epoch(self) -> float | None:
    """`_epoch` as one program (`train/scan.py`), then the host loop's bookkeeping and
    records from the stacked per-step loss terms."""
    run, t, k_all = self.run, self.t, self.axis.k
    epoch, active_ep, orders, aux, pred, phase, per_epoch = self._plan()
    active_SxK = active_ep[None] & (np.arange(per_epoch)[:, None]
                                    < np.array(self.steps_K)[None])
    idx = scan_lib.epoch_indices(orders, per_epoch, self.gbs, self.n_rows, k_all)
    steps0 = np.array([p.step for p in run.members], np.int32)
    t_epoch = time.perf_counter()
    self.state, parts = self.epoch_fn(self.state, self.data_dev, idx, self.keys, steps0,
                                      active_SxK, aux, pred)
    seconds = time.perf_counter() - t_epoch
    steps_after = steps0[None] + np.cumsum(active_SxK, axis=0)
    self._check_finite([(steps_after[s], parts["finite"][s]) for s in range(per_epoch)])
    terms = {n: v for n, v in parts.items() if n != "finite"}
    for s in range(per_epoch):
      run.tick += 1
      fault_point("step", run.tick)
      if run.tick % t.log_every == 0:
        for k in np.flatnonzero(active_SxK[s]):
          step = int(steps_after[s, k])
          self._write(k, {"kind": "step", "step": step, "epoch": epoch + 1, "phase": phase,
                          "lr": self.lr_of_step(k, step),
                          **{f"batch/{n}": float(v[s, k]) for n, v in terms.items()}})
    for k, p in enumerate(run.members):
      p.step = int(steps_after[-1, k])
    real = (idx != self.n_rows).reshape(per_epoch, k_all, -1).sum(-1) * active_SxK
    rate = float(real.sum()) / k_all / max(seconds, 1e-9)
    sums = {n: v.sum(0, dtype=np.float32) for n, v in terms.items()}
    return self._end_epoch(epoch, phase, aux, pred, active_ep, sums,
                           active_SxK.sum(0).astype(np.int64), rate, seconds)

  def _end_epoch(self, epoch, phase, aux, pred, active_ep, sums, n_terms, rate,
                 seconds) -> float | None:
    run, t = self.run, self.t
    means = None if sums is None else jax.device_get(sums)
    improved, scores = False, []
    for k, m in enumerate(self.members):
      if not active_ep[k]:
        continue
      p = run.members[k]
      record = {"kind": "epoch", "step": p.step, "epoch": epoch + 1, "phase": phase,
                "lr": self.lr_of_step(k, p.step), "aux_scale": aux, "pred_scale": pred,
                **({} if means is None else {f"train/{n}": float(v[k]) / max(n_terms[k], 1)
                                             for n, v in means.items()}),
                "train/patients_per_s": rate}
      if phase == "joint":
        layout = self.layouts[k]
        probs = predict(self.predict_fn, self.axis.take(self.state, k), m.data.cohort,
                        m.data.val_rows, self.eval_bs, self.mesh, layout)
        labels = m.data.cohort.labels[m.data.val_rows]
        score = records.mean_auroc(labels, probs)
        if math.isnan(score):
          raise ValueError("validation AUROC is undefined for every task (one class only)")
        scores.append(score)
        record["val/mean_auroc"] = score
        record.update(records.validation_metrics(labels, probs, m.data.cohort.task_names))
        p.history.append({"epoch": epoch + 1, "step": p.step, "val_mean_auroc": score})
        if score > p.best_score:
          p.best_score, p.best_step, p.best_epoch, p.bad_epochs = score, p.step, epoch, 0
          self.best = self.axis.replace(self.best, self.state, k)
          improved = True
        else:
          p.bad_epochs += 1
        p.done = p.bad_epochs >= t.patience
      record["time/epoch_s"] = seconds
      self._write(k, record)
      p.epochs += 1
    run.epoch = epoch + 1
    for p in run.members:
      p.done = p.done or run.epoch >= self.n_epochs
    run.batch_in_epoch, run.epoch_sums, run.epoch_terms = 0, None, None
    run.done = all(p.done for p in run.members)
    self.log(self._epoch_line(epoch, phase, active_ep, means, n_terms, rate))
    if improved:
      self.ckpt.save_best(run.tick, self.best, run.to_json())
    self.ckpt.save_latest(run.tick, self.state, run.to_json())
    if run.done:
      self.ckpt.keep_last_latest()
    return float(np.mean(scores)) if scores else None

  def _epoch_line(self, epoch, phase, active_ep, means, n_terms, rate) -> str:
    run, k_all = self.run, self.axis.k
    head = f"epoch {epoch + 1}/{self.n_epochs} ({phase})"
    joint = phase == "joint"
    if k_all == 1:
      p = run.members[0]
      line = head + ": loss " + ("-" if means is None else
                                 f"{float(means['total'][0]) / max(n_terms[0], 1):.4f}")
      if joint:
        line += (f", val mean AUROC {p.history[-1]['val_mean_auroc']:.4f} (best "
                 f"{p.best_score:.4f} at epoch {p.best_epoch + 1})")
      line += f", lr {self.lr_of_step(0, p.step):.2e}"
      line += "" if rate is None else f", {rate:,.0f} patients/s"
      if joint and p.done and run.epoch < self.n_epochs:
        line += f"; early stopping: no improvement for {self.t.patience} epoch(s)"
      return line
    line = head + f", {int(active_ep.sum())} of {k_all} members"
    if joint:
      line += ": val mean AUROC " + ", ".join(
          f"{p.history[-1]['val_mean_auroc']:.4f}" + ("*" if p.best_epoch == epoch else "")
          for k, p in enumerate(run.members) if active_ep[k]) + " (* best so far)"
    return line + ("" if rate is None else f", {rate:,.0f} patients/s per member")
