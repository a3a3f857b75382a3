"""The one training loop (`train/loop.py`): cross-fitted members in one vmapped step
against K separate runs, a lone member against the plain step, resume, old checkpoints."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest

N_PATIENTS = 604     # 514 non-test patients: the 3 members train on 342 or 343


def _config(stack: bool, batch_size: int = 64, patience: int = 1, epochs: int = 4):
  from experiments.configs import synthetic
  config = synthetic.get_config("tiny")
  config.data.n = N_PATIENTS
  config.train.cv_folds = 3
  config.train.stack_members = stack
  config.train.epochs = epochs
  config.train.patience = patience
  config.train.batch_size = batch_size
  config.eval.plots = False
  config.eval.n_boot = 0
  return config


def _uneven_batch_size() -> int:
  """A batch size at which the members' epochs have different numbers of batches (the
  smallest member's training rows make exactly one batch, the others two)."""
  from crl_mmnar_jax import data as data_lib
  from crl_mmnar_jax.data.splits import assign_folds, make_splits
  config = _config(True)
  cohort = data_lib.load(config).cohort
  nontest = np.flatnonzero(make_splits(config, cohort) != "test")
  fold = assign_folds(cohort.patient_id[nontest], cohort.pattern[nontest],
                      cohort.labels[nontest], 3, seed=int(config.seed))
  sizes = [int((fold != f).sum()) for f in range(3)]
  assert len(set(sizes)) > 1, sizes          # else this cohort cannot test the masking
  return min(sizes)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  from crl_mmnar_jax.experiment import train_and_evaluate
  bs = _uneven_batch_size()
  out = {}
  for stack in (True, False):
    workdir = str(tmp_path_factory.mktemp("stacked" if stack else "separate"))
    logs: list[str] = []
    results = train_and_evaluate(_config(stack, bs), workdir, log=logs.append)
    out[stack] = (workdir, results, logs)
  return out


def _epoch_lines(path):
  return [r for r in map(json.loads, open(path)) if r.get("kind") == "epoch"]


def test_stacked_members_equal_separate_runs(runs):
  (wa, ra, logs_a), (wb, rb, logs_b) = runs[True], runs[False]
  assert ra["training"]["stacked"] and not rb["training"]["stacked"]
  assert any("members train one after the other" in s for s in logs_b)
  assert any("of 3 members" in s for s in logs_a)
  a, b = (pl.read_parquet(os.path.join(w, "predictions.parquet")) for w in (wa, wb))
  np.testing.assert_array_equal(a["patient_id"].to_numpy(), b["patient_id"].to_numpy())
  for c in a.columns:
    if c.endswith("_prob"):
      np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), atol=2e-4, err_msg=c)
  for ma, mb in zip(ra["training"]["members"], rb["training"]["members"]):
    assert (ma["best_epoch"], ma["best_step"]) == (mb["best_epoch"], mb["best_step"])
    np.testing.assert_allclose(ma["best_val_mean_auroc"], mb["best_val_mean_auroc"],
                               atol=1e-3)
  # Per member, the same epochs with the same steps, lr and (close) losses.
  for k in range(3):
    la = _epoch_lines(os.path.join(wa, "members", str(k), "metrics.jsonl"))
    lb = _epoch_lines(os.path.join(wb, "members", str(k), "metrics.jsonl"))
    assert [(r["epoch"], r["step"]) for r in la] == [(r["epoch"], r["step"]) for r in lb]
    for x, y in zip(la, lb):
      assert x["lr"] == pytest.approx(y["lr"], rel=1e-6)
      assert x["train/total"] == pytest.approx(y["train/total"], rel=1e-3, abs=1e-4)
      assert x["val/mean_auroc"] == pytest.approx(y["val/mean_auroc"], abs=1e-3)
  steps_per_epoch = [la["step"] for la in
                     (_epoch_lines(os.path.join(wa, "members", str(k), "metrics.jsonl"))[0]
                      for k in range(3))]
  assert len(set(steps_per_epoch)) > 1, steps_per_epoch    # uneven epochs were masked


def test_a_killed_stacked_run_resumes_to_the_same_result(runs, tmp_path, monkeypatch):
  from crl_mmnar_jax.experiment import train_and_evaluate
  from crl_mmnar_jax.train import loop
  wa, ra, _ = runs[True]
  config = _config(True, _uneven_batch_size())
  config.train.checkpoint_every = 3

  class Killed(Exception):
    pass

  def die(name, index=None, path=""):
    if name == "step" and index == 5:
      raise Killed()

  monkeypatch.setattr(loop, "fault_point", die)
  with pytest.raises(Killed):
    train_and_evaluate(config, str(tmp_path), log=lambda s: None)
  monkeypatch.undo()
  again = train_and_evaluate(config, str(tmp_path), log=lambda s: None)
  assert again["training"]["resumed"]
  a = pl.read_parquet(os.path.join(wa, "predictions.parquet"))
  b = pl.read_parquet(str(tmp_path / "predictions.parquet"))
  for c in a.columns:
    if c.endswith("_prob"):      # checkpoint_every changes nothing but where it saved
      np.testing.assert_array_equal(a[c].to_numpy(), b[c].to_numpy(), err_msg=c)


def test_inactive_members_are_left_unchanged_and_active_ones_step_alone():
  from crl_mmnar_jax import methods
  from crl_mmnar_jax.losses import objective
  from crl_mmnar_jax.train import mesh as mesh_lib
  from crl_mmnar_jax.train import optim
  from crl_mmnar_jax.train import step as step_lib
  from crl_mmnar_jax.train.members import MemberAxis
  from experiments.bench.train import random_cohort
  from experiments.configs.base import get_base_config
  config = get_base_config()
  config.model.dim = 32
  config.model.n_heads = 4
  cohort = random_cohort(64, (5, 7, 3))
  mesh = mesh_lib.make_mesh()
  tx = optim.make_optimizer(config, 100)
  mcfg = methods.model_config(config, cohort)
  weights = methods.loss_weights(config)
  inits = [step_lib.create_state(mcfg, weights, tx, s, mesh) for s in (0, 1)]
  graphdef = inits[0][0]
  state = jax.tree.map(lambda *a: jnp.stack(a), *[s for _, s in inits])
  batches = [mesh_lib.local_batch(cohort, np.arange(k * 16, k * 16 + 16), 16)
             for k in range(2)]
  keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
  steps = np.array([3, 7], np.int32)
  loss = objective(weights, mcfg.miss_head)
  axis = MemberAxis(2)
  step = axis.make_step(graphdef, loss, "float32")
  before = jax.device_get(state)
  new, parts = step(state, axis.put_batches(batches, mesh), keys, steps,
                    np.array([True, False]), jnp.float32(1), jnp.float32(1))
  new = jax.device_get(new)
  for x, y in zip(jax.tree.leaves(axis.take(before, 1)),
                  jax.tree.leaves(axis.take(new, 1))):
    np.testing.assert_array_equal(x, y)
  assert float(parts["total"][1]) == 0.0 and bool(parts["finite"][1])
  # Member 0 moved exactly as the one-member jitted step moves it.
  single = step_lib.make_train_step(graphdef, weights, mcfg.miss_head)
  ref, ref_parts = single(inits[0][1], mesh_lib.put_batch(batches[0], mesh),
                          jax.random.key(0), np.int32(3), jnp.float32(1), jnp.float32(1))
  np.testing.assert_allclose(float(parts["total"][0]), float(ref_parts["total"]), rtol=1e-5)
  for x, y in zip(jax.tree.leaves(axis.take(new, 0)),
                  jax.tree.leaves(jax.device_get(ref))):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_members_are_grouped_by_structure():
  from crl_mmnar_jax import methods
  from crl_mmnar_jax.methods import MethodData, NeuralMethod
  from crl_mmnar_jax.train.members import Member, group_members
  from experiments.bench.train import random_cohort
  from experiments.configs.base import get_base_config
  config = get_base_config()
  config.model.dim = 32
  config.model.n_heads = 4
  base = methods.get_method("crl_mmnar")
  assert isinstance(base, NeuralMethod)
  cohorts = [random_cohort(40, (3, 4)), random_cohort(40, (3, 5))]   # other widths
  members = [Member(config, MethodData(c, np.arange(20), np.arange(20, 40), {}),
                    "/nonexistent", "h") for c in cohorts]
  assert group_members(config, base, [members[0], members[1], members[0]]) == \
      ([[0, 2], [1]], "the members' models differ in structure")
  assert group_members(config, base, members[:1] * 2) == ([[0, 1]], None)
  assert group_members(config, base, members[:1]) == ([[0]], None)
  config.train.stack_members = False
  assert group_members(config, base, members[:1] * 2) == \
      ([[0], [1]], "train.stack_members=False")


def test_a_lone_member_steps_exactly_as_the_plain_jitted_step():
  """K = 1 compiles the single model's program: bit for bit the plain step."""
  from crl_mmnar_jax import methods
  from crl_mmnar_jax.losses import objective
  from crl_mmnar_jax.train import mesh as mesh_lib
  from crl_mmnar_jax.train import optim
  from crl_mmnar_jax.train import step as step_lib
  from crl_mmnar_jax.train.members import MemberAxis
  from experiments.bench.train import random_cohort
  from experiments.configs.base import get_base_config
  config = get_base_config()
  config.model.dim = 32
  config.model.n_heads = 4
  cohort = random_cohort(64, (5, 7, 3))
  mesh = mesh_lib.make_mesh()
  mcfg = methods.model_config(config, cohort)
  graphdef, state = step_lib.create_state(mcfg, methods.loss_weights(config),
                                           optim.make_optimizer(config, 100), 3, mesh)
  batch = mesh_lib.local_batch(cohort, np.arange(16), 16)
  loss = objective(methods.loss_weights(config), mcfg.miss_head)
  plain = step_lib.make_step(graphdef, loss)
  axis = MemberAxis(1)
  lone = axis.make_step(graphdef, loss, "float32")
  copy = jax.tree.map(jnp.copy, state)
  ref, ref_parts = plain(state, mesh_lib.put_batch(batch, mesh), jax.random.key(3),
                         np.int32(5), jnp.float32(1), jnp.float32(1))
  new, parts = lone(copy, axis.put_batches([batch], mesh), jnp.stack([jax.random.key(3)]),
                    np.array([5], np.int32), np.array([True]), jnp.float32(1), jnp.float32(1))
  assert parts["total"].shape == (1,)
  assert float(parts["total"][0]) == float(ref_parts["total"])
  for x, y in zip(jax.tree.leaves(jax.device_get(new)), jax.tree.leaves(jax.device_get(ref))):
    np.testing.assert_array_equal(x, y)


def test_a_checkpoint_of_format_3_with_its_optimizer_state_is_refused_as_earlier(
    tmp_path, monkeypatch):
  """Format 3 kept the learning-rate schedule out of the optimizer's state: its state no
  longer restores as this version's, and the resume says "earlier version", not
  "corrupt"."""
  import optax

  from crl_mmnar_jax.experiment import train_and_evaluate
  from crl_mmnar_jax.train import loop
  from crl_mmnar_jax.workdir import WorkdirError
  config = _config(True, epochs=1)
  config.train.cv_folds = 1
  monkeypatch.setattr(loop, "RUN_STATE_FORMAT", 3)
  monkeypatch.setattr(loop, "make_optimizer", lambda c, n: optax.chain(
      optax.clip_by_global_norm(1.0), optax.adamw(1e-3)))        # format 3's structure
  train_and_evaluate(config, str(tmp_path), log=lambda s: None)
  monkeypatch.undo()
  with pytest.raises(WorkdirError, match=r"earlier version of crl_mmnar_jax \(run state "
                                         rf"format 3, this version reads "
                                         rf"{loop.RUN_STATE_FORMAT}\).*new --workdir") as e:
    train_and_evaluate(config, str(tmp_path), log=lambda s: None)
  assert "corrupt" not in str(e.value) and "\n" not in str(e.value)


def test_a_saved_model_of_an_earlier_version_is_refused_as_such_by_predict(
    tmp_path, monkeypatch):
  """A run whose best model no longer restores as this version's model (here: a later
  version without the dropout rates in the state) is named an earlier version's by
  `predictor.load`, not a corrupt checkpoint."""
  from crl_mmnar_jax import layers, predictor
  from crl_mmnar_jax.experiment import train_and_evaluate
  from crl_mmnar_jax.train import loop
  from crl_mmnar_jax.workdir import WorkdirError
  config = _config(True, epochs=1)
  config.train.cv_folds = 1
  train_and_evaluate(config, str(tmp_path), log=lambda s: None)
  predictor.load(str(tmp_path))                       # this version reads it
  monkeypatch.setattr(loop, "RUN_STATE_FORMAT", loop.RUN_STATE_FORMAT + 1)
  monkeypatch.setattr(layers.ByteDropout, "__init__",
                      lambda self, rate: setattr(self, "threshold", None))
  with pytest.raises(WorkdirError, match=r"checkpoints/best was written by an earlier "
                                         r"version .*new --workdir") as e:
    predictor.load(str(tmp_path))
  assert "corrupt" not in str(e.value) and "\n" not in str(e.value)


def test_a_checkpoint_of_an_earlier_version_is_refused_in_one_line(tmp_path, monkeypatch):
  """A run state without the current format (as written before the one loop) stops the
  resume with one line naming the folder, before any step."""
  from crl_mmnar_jax.experiment import train_and_evaluate
  from crl_mmnar_jax.train import loop
  from crl_mmnar_jax.workdir import WorkdirError
  config = _config(True, epochs=1)
  config.train.cv_folds = 1
  to_json = loop.RunState.to_json
  monkeypatch.setattr(loop.RunState, "to_json", lambda self, **changes: {
      k: v for k, v in to_json(self, **changes).items() if k != "format"})
  train_and_evaluate(config, str(tmp_path), log=lambda s: None)
  monkeypatch.undo()
  with pytest.raises(WorkdirError, match=r"earlier version.*new --workdir") as e:
    train_and_evaluate(config, str(tmp_path), log=lambda s: None)
  assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
