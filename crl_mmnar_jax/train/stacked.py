"""Cross-fitted members trained together: one jitted step, `jax.vmap`ped over members.

`train.cv_folds=K` trains K members of one neural method (`ensemble.py`). Their models
have the same structure, so their parameters and optimizer states are stacked on a
leading axis of size K and one compiled step updates all of them
(`jax.vmap(step_lib.step_fn(...))`): one dispatch per step instead of K, K times the
work per kernel, which is what an accelerator needs to be busy.

Each member still does exactly what its own run would (`train.loop.fit`): its own
initialisation and dropout keys (seed `seed * K + k`), its own standardised cohort,
its own shuffled training rows and held-out fold, its own early stopping. Members whose
epochs have fewer batches, and members that have stopped early, are masked out of the
step (their state is left as it was and their step count does not advance). So the
result equals K separate runs to float tolerance (`tests/test_stacked.py`); the
learning-rate schedule's length is the largest member's for every member, in both
paths (`MethodData.schedule_steps_per_epoch`).

Checkpoints of the stacked state live in `WORKDIR/members/stacked/` (a killed run
resumes where it was). When training ends, each member's best and last states are
written to `WORKDIR/members/k/checkpoints/` as `train.loop.fit` writes them, with one
metrics.jsonl epoch line per epoch in `members/k/`, so predicting, reporting, rerunning
and `predictor.load` see the same files as after K separate runs.

Members train one after the other instead (`ensemble.fit_members`) when their models
differ in structure (e.g. different piecewise-linear bin counts), with
`train.tensorboard`, or with `train.stack_members=False`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from crl_mmnar_jax.batch import Batch
from crl_mmnar_jax.data import shards
from crl_mmnar_jax.train import loop as loop_lib
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.train.checkpoint import Checkpoints
from crl_mmnar_jax.train.optim import loss_scales, lr_schedule, make_optimizer
from crl_mmnar_jax.train.step import init_state, make_predict_fn, predict, prefetched, step_fn
from crl_mmnar_jax.workdir import StopRequest, WorkdirError, fault_point

if TYPE_CHECKING:
  from crl_mmnar_jax.methods import MethodData, NeuralMethod


@dataclasses.dataclass(frozen=True)
class Member:
  config: ml_collections.ConfigDict    # its seed set
  data: MethodData                     # its standardised cohort, train rows, held-out fold
  workdir: str                         # WORKDIR/members/k
  config_hash: str                     # what `train.loop.fit` would check on resume


def member_slice(tree: Any, k: int) -> Any:
  return jax.tree.map(lambda a: a[k], tree)


@jax.jit
def _set_member(best: Any, state: Any, k: jax.Array) -> Any:
  return jax.tree.map(lambda b, s: b.at[k].set(s[k]), best, state)


def make_stacked_step(graphdef, loss, compute_dtype: str) -> Callable:
  """(state_K, batch_K, keys_K, steps_K, active_K, aux, pred) -> (state_K, parts_K), the
  state donated; where `active_K[k]` is False member k's state is left unchanged and
  its loss terms are 0 (its `finite` True)."""
  one = step_fn(graphdef, loss, compute_dtype)

  def stacked(state, batch, keys, steps, active, aux, pred):
    new, parts = jax.vmap(one, in_axes=(0, 0, 0, 0, None, None))(state, batch, keys, steps,
                                                                  aux, pred)
    keep = lambda n, o: jnp.where(active.reshape(active.shape + (1,) * (n.ndim - 1)), n, o)
    parts = {k: (v | ~active) if k == "finite" else jnp.where(active, v, 0.0)
             for k, v in parts.items()}
    return jax.tree.map(keep, new, state), parts

  return jax.jit(stacked, donate_argnums=0)


def put_stacked(batches: list[Batch], mesh: jax.sharding.Mesh) -> Batch:
  """K host batches -> one global (K, B, ...) batch, sharded over B."""
  sharding = NamedSharding(mesh, P(None, mesh_lib.DATA))
  stacked = jax.tree.map(lambda *a: np.stack(a), *batches)
  return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), stacked)


def why_not_stacked(config: ml_collections.ConfigDict, method: NeuralMethod,
                    members: list[Member]) -> str | None:
  """None when the members can train in one vmapped step, else the reason."""
  if not bool(config.train.get("stack_members", True)):
    return "train.stack_members=False"
  if bool(config.train.get("tensorboard", False)):
    return "train.tensorboard writes one event file per run"
  shapes = []
  for m in members:
    abstract = nnx.eval_shape(lambda m=m: method.build(m.config, m.data, nnx.Rngs(params=0)))
    graphdef, state = nnx.split(abstract)
    shapes.append((graphdef, jax.tree.structure(state),
                   [(a.shape, a.dtype) for a in jax.tree.leaves(state)]))
  if any(s != shapes[0] for s in shapes[1:]):
    return "the members' models differ in structure"
  return None


def fit_stacked(config: ml_collections.ConfigDict, method: NeuralMethod,
                members: list[Member], workdir: str, mesh: jax.sharding.Mesh,
                log: Callable[[str], None] = print) -> bool:
  """Trains the members together (see the module docstring); returns whether they
  were resumed from a checkpoint. Afterwards `train.loop.fit` on each member
  restores its result without training."""
  with StopRequest() as signals:
    return _fit(config, method, members, workdir, mesh, log, signals)


def _fit(config, method, members, workdir, mesh, log, signals) -> bool:
  t, k_all = config.train, len(members)
  gbs, eval_bs = int(t.batch_size), int(t.eval_batch_size)
  mesh_lib.check_batch_size(gbs, mesh)
  layouts = [shards.Layout.single(m.data.cohort.n) for m in members]
  steps_K = [lay.n_batches(m.data.train_rows, gbs) for lay, m in zip(layouts, members)]
  per_epoch = max(steps_K)
  n_epochs = int(t.pretrain_epochs) + int(t.epochs)
  horizon = n_epochs * max(m.data.schedule_steps_per_epoch or s for m, s in zip(members, steps_K))
  tx = make_optimizer(config, horizon)
  lr_at = lr_schedule(config, horizon)
  seeds = [int(m.config.seed) for m in members]
  inits = [init_state(lambda rngs, m=m: method.build(m.config, m.data, rngs), tx, s, mesh)
           for m, s in zip(members, seeds)]
  graphdef = inits[0][0]
  state = jax.device_put(jax.tree.map(lambda *a: jnp.stack(a), *[s for _, s in inits]),
                         mesh_lib.replicated(mesh))
  del inits
  train = make_stacked_step(graphdef, method.make_loss(config),
                            str(t.get("compute_dtype", "float32")))
  predict_fn = make_predict_fn(graphdef)
  keys = jnp.stack([jax.random.key(s) for s in seeds])

  stack_dir = os.path.join(workdir, "members", "stacked")
  if jax.process_index() == 0:
    os.makedirs(stack_dir, exist_ok=True)
  ckpt = Checkpoints(stack_dir, log)
  fresh = {"step": 0, "epochs": 0, "best_score": -1.0, "best_step": -1, "best_epoch": -1,
           "bad_epochs": 0, "history": [], "done": False}
  meta = {"tick": 0, "epoch": 0, "batch_in_epoch": 0, "done": False,
          "config_hashes": [m.config_hash for m in members],
          "members": [dict(fresh) for _ in members], "epoch_sums": None}
  restored = ckpt.restore_latest(state)
  resumed = restored is not None
  best_state = None
  if resumed:
    state, meta = restored
    if meta.get("config_hashes") != [m.config_hash for m in members]:
      raise WorkdirError(f"checkpoint in {stack_dir} was written by a different config")
    best = ckpt.restore_best(state)
    best_state = None if best is None else best[0]
    log(f"resuming the {k_all} stacked members at epoch {meta['epoch'] + 1}, batch "
        f"{meta['batch_in_epoch']}")
  if best_state is None:
    best_state = jax.tree.map(jnp.copy, state)
  mm = meta["members"]
  writers = [loop_lib.MetricsWriter(os.path.join(m.workdir, "metrics.jsonl"),
                                    mm[k]["step"] if resumed else None)
             for k, m in enumerate(members)]
  lr_of = lambda step: float(lr_at(max(step - 1, 0)))

  def save_latest(b_next: int, sums) -> None:
    ckpt.save_latest(int(meta["tick"]), state, dict(
        meta, batch_in_epoch=b_next,
        epoch_sums=None if sums is None else jax.tree.map(
            lambda a: [float(x) for x in a], jax.device_get(sums))))

  epoch = int(meta["epoch"])
  while not meta["done"] and epoch < n_epochs:
    active_ep = np.array([not m["done"] for m in mm])
    orders = [lay.batches(lay.epoch_order(m.data.train_rows, s, epoch), gbs)
              for lay, m, s in zip(layouts, members, seeds)]
    aux, pred = loss_scales(config, epoch)
    aux_a, pred_a = jnp.float32(aux), jnp.float32(pred)
    phase = "pretrain" if epoch < t.pretrain_epochs else "joint"
    first = int(meta["batch_in_epoch"])
    carried = meta.get("epoch_sums") if first else None
    sums = None if not carried else {k: jnp.asarray(v, jnp.float32) for k, v in carried.items()}
    n_terms = np.array([min(first, s) for s in steps_K]) * active_ep

    def load(b):
      return put_stacked([mesh_lib.local_batch(
          m.data.cohort, orders[k][b] if b < steps_K[k] else np.full(gbs, -1), gbs)
          for k, m in enumerate(members)], mesh)

    t0, patients = time.perf_counter(), 0
    pending: list[tuple[np.ndarray, jax.Array]] = []

    def check_finite() -> None:
      for steps, finite in zip([p[0] for p in pending],
                               jax.device_get([p[1] for p in pending])):
        if not np.all(finite):
          bad = int(np.flatnonzero(~finite)[0])
          raise loop_lib.NonFiniteLossError(
              f"member {bad}: the loss or parameters became NaN/Inf at its step "
              f"{int(steps[bad])}; training stopped. Lower train.lr or train.clip_norm, "
              f"or check the inputs, with a new --workdir.")
      pending.clear()
    for b, batch in prefetched(load, range(first, per_epoch)):
      active = active_ep & (b < np.array(steps_K))
      steps_now = np.array([m["step"] for m in mm], np.int32)
      state, parts = train(state, batch, keys, steps_now, active, aux_a, pred_a)
      for k in np.flatnonzero(active):
        mm[k]["step"] += 1
      meta["tick"] += 1
      fault_point("step", int(meta["tick"]))
      terms = {k: v for k, v in parts.items() if k != "finite"}
      sums = terms if sums is None else loop_lib.accumulate(sums, terms)
      n_terms += active
      pending.append((steps_now + 1, parts["finite"]))
      if b == first:
        jax.block_until_ready(sums)
        t0 = time.perf_counter()
      else:
        patients += int(sum((orders[k][b] >= 0).sum() for k in np.flatnonzero(active)))
      if b + 1 < per_epoch and (signals.requested or (
          t.checkpoint_every and meta["tick"] % t.checkpoint_every == 0)):
        check_finite()
        save_latest(b + 1, sums)
        if signals.requested:
          signals.stop(int(meta["tick"]))
    check_finite()
    elapsed = time.perf_counter() - t0
    rate = patients / k_all / elapsed if patients else None      # per member
    means = jax.device_get(sums) if sums is not None else None
    improved = False
    parts_line = []
    for k, m in enumerate(members):
      if not active_ep[k]:
        continue
      r = mm[k]
      record = {"kind": "epoch", "step": r["step"], "epoch": epoch + 1, "phase": phase,
                "lr": lr_of(r["step"]), "aux_scale": aux, "pred_scale": pred,
                "train/patients_per_s": rate,
                **({} if means is None else {f"train/{n}": float(v[k]) / max(n_terms[k], 1)
                                             for n, v in means.items()})}
      if phase == "joint":
        probs = predict(predict_fn, member_slice(state, k), m.data.cohort,
                        m.data.val_rows, eval_bs, mesh)
        labels = m.data.cohort.labels[m.data.val_rows]
        score = loop_lib.mean_auroc(labels, probs)
        record["val/mean_auroc"] = score
        record.update(loop_lib.validation_metrics(labels, probs, m.data.cohort.task_names))
        r["history"].append({"epoch": epoch + 1, "step": r["step"], "val_mean_auroc": score})
        if score > r["best_score"]:
          r.update(best_score=score, best_step=r["step"], best_epoch=epoch, bad_epochs=0)
          best_state = _set_member(best_state, state, jnp.int32(k))
          improved = True
        else:
          r["bad_epochs"] += 1
        r["done"] = r["bad_epochs"] >= t.patience
        parts_line.append(f"{score:.4f}" + ("*" if r["best_epoch"] == epoch else ""))
      writers[k].write(record)
    epoch += 1
    for k, r in enumerate(mm):
      r["epochs"] += int(active_ep[k])
      r["done"] = r["done"] or epoch >= n_epochs
    meta.update(epoch=epoch, batch_in_epoch=0, epoch_sums=None,
                done=all(r["done"] for r in mm))
    line = f"epoch {epoch}/{n_epochs} ({phase}), {int(active_ep.sum())} of {k_all} members"
    if parts_line:
      line += ": val mean AUROC " + ", ".join(parts_line) + " (* best so far)"
    log(line + ("" if rate is None else f", {rate:,.0f} patients/s per member"))
    if improved:
      ckpt.save_best(int(meta["tick"]), best_state, meta)
    ckpt.save_latest(int(meta["tick"]), state, meta)
    if signals.requested:
      signals.stop(int(meta["tick"]))
  ckpt.close()
  _write_members(members, mm, state, best_state, log)
  return resumed


def _write_members(members: list[Member], mm: list[dict], state: Any, best_state: Any,
                   log: Callable[[str], None]) -> None:
  """Each member's best and last states as `train.loop.fit` leaves them."""
  for k, (m, r) in enumerate(zip(members, mm)):
    if r["best_step"] < 0:
      raise ValueError("no joint-training epoch ran, so there is no best checkpoint "
                       "(train.epochs must be >= 1)")
    ck = Checkpoints(m.workdir, log)
    meta = {"step": r["step"], "epoch": r["best_epoch"] + 1, "batch_in_epoch": 0,
            "best_score": r["best_score"], "best_step": r["best_step"],
            "best_epoch": r["best_epoch"], "bad_epochs": r["bad_epochs"],
            "history": r["history"], "done": True, "config_hash": m.config_hash,
            "epoch_sums": None, "epoch_steps": 0}
    ck.save_best(r["best_step"], member_slice(best_state, k),
                 dict(meta, step=r["best_step"], done=False))
    ck.save_latest(r["step"], member_slice(state, k), dict(meta, epoch=r["epochs"]))
    ck.close()
