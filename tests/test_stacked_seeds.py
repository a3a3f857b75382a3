"""Stacked seeds (`experiment.train_and_evaluate_seeds`, `experiments.run --seeds`): the
seeds of a config trained in one vmapped step against each seed's own run; stacked
members with their own optimizer hyperparameters against their own steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

SEEDS = [0, 1]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(cv_folds: int):
  """`synthetic:tiny` as the other tests run it (their compiled programs are reused)."""
  from experiments.configs import synthetic
  config = synthetic.get_config("tiny")
  config.train.cv_folds = cv_folds
  config.eval.plots = False
  config.eval.n_boot = 0
  return config


@pytest.fixture(scope="module", params=[1, 2], ids=["one_model", "cv_folds_2"])
def runs(request, tmp_path_factory):
  from crl_mmnar_jax.experiment import train_and_evaluate, train_and_evaluate_seeds
  config = _config(request.param)
  separate = str(tmp_path_factory.mktemp("separate"))
  alone = {}
  for s in SEEDS:
    c = config.copy_and_resolve_references()
    c.seed = s
    alone[s] = train_and_evaluate(c, os.path.join(separate, f"seed{s}"), log=lambda _: None)
  together = str(tmp_path_factory.mktemp("together"))
  logs: list[str] = []
  stacked = dict(zip(SEEDS, train_and_evaluate_seeds(config, SEEDS, together,
                                                     log=logs.append)))
  return request.param, separate, alone, together, stacked, logs


def _frame(workdir: str, seed: int, name: str) -> pl.DataFrame:
  return pl.read_parquet(os.path.join(workdir, f"seed{seed}", name))


def test_stacked_seeds_equal_each_seeds_own_run(runs):
  k, separate, alone, together, stacked, logs = runs
  members = len(SEEDS) * k
  assert any(f"of {members} members" in line for line in logs), logs[:5]
  for s in SEEDS:
    a, b = alone[s], stacked[s]
    assert b["seed"] == s and b["config_hash"] == a["config_hash"]
    # The same patients in each split, the split of that seed (not seed 0's).
    sa, sb = _frame(separate, s, "splits.parquet"), _frame(together, s, "splits.parquet")
    assert sa.equals(sb)
    pa, pb = _frame(separate, s, "predictions.parquet"), _frame(together, s,
                                                              "predictions.parquet")
    np.testing.assert_array_equal(pa["patient_id"].to_numpy(), pb["patient_id"].to_numpy())
    probs = [c for c in pa.columns if c.endswith("_prob")]
    assert probs
    for c in probs:
      np.testing.assert_allclose(pa[c].to_numpy(), pb[c].to_numpy(), atol=2e-4, err_msg=c)
    ra, rb = a["metrics"]["test"]["mean"]["auroc"], b["metrics"]["test"]["mean"]["auroc"]
    assert ra == pytest.approx(rb, abs=1e-3)
    where = b["training"]["checkpoint"] if k == 1 else b["training"]["members"][0]["checkpoint"]
    assert where["dir"] == os.path.join("..", "stacked-seeds-0-1")
    assert where["size"] == members
    if k == 1:
      assert (a["training"]["best_epoch"], a["training"]["best_step"]) == (
          b["training"]["best_epoch"], b["training"]["best_step"])
    else:
      assert b["training"]["stacked"]
      for ma, mb in zip(a["training"]["members"], b["training"]["members"]):
        assert (ma["best_epoch"], ma["best_step"]) == (mb["best_epoch"], mb["best_step"])
  # Two seeds, two different splits: the stacked run did not give both seed 0's data.
  assert not _frame(together, 0, "splits.parquet").equals(_frame(together, 1, "splits.parquet"))


def test_a_stacked_seeds_model_loads_and_predicts_as_written(runs):
  import crl_mmnar_jax
  k, _, _, together, stacked, _ = runs
  s = SEEDS[-1]
  predictor = crl_mmnar_jax.load(os.path.join(together, f"seed{s}"))
  frame = predictor.predict(_config(k))
  written = _frame(together, s, "predictions.parquet").filter(pl.col("split") == "test")
  got = frame.join(written.select("patient_id", pl.col("task0_prob").alias("w")),
                   on="patient_id")
  assert len(got) == len(written) > 0
  np.testing.assert_allclose(got["task0_prob"].to_numpy(), got["w"].to_numpy(),
                             atol=1e-5)


def test_a_rerun_of_stacked_seeds_resumes_to_the_same_results(runs):
  from crl_mmnar_jax.experiment import train_and_evaluate_seeds
  k, _, _, together, stacked, _ = runs
  if k != 1:
    pytest.skip("one resume check is enough")
  logs: list[str] = []
  again = train_and_evaluate_seeds(_config(k), SEEDS, together, log=logs.append)
  assert any("training had finished" in line for line in logs)
  for s, r in zip(SEEDS, again):
    assert r["metrics"]["test"]["mean"]["auroc"] == stacked[s]["metrics"]["test"]["mean"]["auroc"]


N_STEPS = 4


def _member_setup(lr: float, weight_decay: float, warmup: int, horizon: int, seed: int,
                  dropout: float = 0.1, weights: tuple = (1.0, 0.5, 1.0, 0.3)):
  from crl_mmnar_jax import methods
  from crl_mmnar_jax.train import mesh as mesh_lib
  from crl_mmnar_jax.train import optim
  from crl_mmnar_jax.train import step as step_lib
  from experiments.bench.train import random_cohort
  from experiments.configs.base import get_base_config
  config = get_base_config()
  config.model.dim = 32
  config.model.n_heads = 4
  config.train.lr, config.train.weight_decay = lr, weight_decay
  config.train.warmup_steps, config.train.warmup_max_fraction = warmup, 1.0
  config.model.dropout = dropout
  for name, w in zip(("pred", "miss", "rec", "con"), weights):
    config.loss[name] = w
  cohort = random_cohort(64, (5, 7, 3))
  mcfg = methods.model_config(config, cohort)
  tx = optim.make_optimizer(config, horizon)
  graphdef, state = step_lib.create_state(mcfg, methods.loss_weights(config), tx, seed,
                                          mesh_lib.make_mesh())
  return config, cohort, mcfg, graphdef, state


def test_stacked_members_with_their_own_hyperparameters_equal_separate_runs():
  """Two members with other learning rates, warm-ups, schedule lengths, weight decays,
  dropout rates and loss weights in one vmapped step: each moves as its own one-member
  step moves it; and the hyperparameters are data, so both share one compiled program."""
  import jax
  import jax.numpy as jnp

  from crl_mmnar_jax import methods
  from crl_mmnar_jax.losses import objective
  from crl_mmnar_jax.train import mesh as mesh_lib
  from crl_mmnar_jax.train.members import MemberAxis
  mesh = mesh_lib.make_mesh()
  setups = [_member_setup(3e-3, 1e-2, 2, 12, 0),
            _member_setup(5e-4, 0.0, 5, 40, 1, dropout=0.3, weights=(2.0, 0.1, 1.5, 0.05))]
  config, cohort, mcfg, graphdef, _ = setups[0]
  loss = objective(methods.loss_weights(config), mcfg.miss_head)
  initial = [jax.device_get(s[4]) for s in setups]      # the steps below donate their state
  batches = [[mesh_lib.local_batch(cohort, np.arange(k * 16, k * 16 + 16) % 64, 16)
              for k in (step, step + 2)] for step in range(N_STEPS)]
  keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
  axis = MemberAxis(2)
  stacked = axis.make_step(graphdef, loss, "float32")
  state = axis.stack([s[4] for s in setups])
  for b in range(N_STEPS):
    state, _ = stacked(state, axis.put_batches(batches[b], mesh), keys,
                       np.array([b, b], np.int32), np.array([True, True]), jnp.float32(1),
                       jnp.float32(1))
  one = MemberAxis(1)
  for k, setup in enumerate(setups):
    alone = one.make_step(setup[3], loss, "float32")
    ref = setup[4]
    for b in range(N_STEPS):
      ref, _ = alone(ref, one.put_batches([batches[b][k]], mesh), keys[k:k + 1],
                     np.array([b], np.int32), np.array([True]), jnp.float32(1),
                     jnp.float32(1))
    got, want = jax.device_get(axis.take(state, k)), jax.device_get(ref)
    checked = 0
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
      # The attention's key bias has an exactly zero gradient (softmax ignores a shift
      # shared by all keys): its float gradient is rounding noise, which Adam scales up
      # to lr-sized steps, different in a vmapped and a plain program. Any other leaf
      # moves alike to float tolerance.
      if "qkv" in jax.tree_util.keystr(path) and "bias" in jax.tree_util.keystr(path):
        continue
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6,
                                 err_msg=jax.tree_util.keystr(path))
      checked += 1
    assert checked > 50
  # The two members' parameters moved differently (their learning rates differ).
  def moved(k):
    now = jax.tree.leaves(jax.device_get(axis.take(state, k))[0])    # the model's part
    return sum(float(np.abs(np.asarray(a) - np.asarray(b)).sum())
               for a, b in zip(now, jax.tree.leaves(initial[k][0]))
               if np.issubdtype(np.asarray(a).dtype, np.floating))
  assert moved(0) > 2 * moved(1) > 0      # lr 3e-3 against 5e-4
  # One program for both: the hyperparameters are inputs, not constants.
  a, b = (jax.jit(one.step_body(s[3], loss, "float32")).lower(
      init, one.put_batches([batches[0][0]], mesh), keys[:1], np.array([0], np.int32),
      np.array([True]), jnp.float32(1), jnp.float32(1)).as_text()
      for s, init in zip(setups, initial))
  assert a == b


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                        cwd=ROOT, timeout=300)


@pytest.mark.parametrize("seeds", ["0,x", "1,1"])
def test_bad_seeds_flag_is_one_line(tmp_path, seeds):
  proc = _run("experiments.run", "--config=synthetic:tiny", f"--workdir={tmp_path}",
              f"--seeds={seeds}")
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: --seeds={seeds}: give distinct integers, e.g. --seeds=0,1,2")
  assert not os.listdir(tmp_path)


def test_sweep_stacks_a_neural_runs_seeds_and_not_a_direct_ones(tmp_path):
  from experiments import sweep
  proc = _run("experiments.sweep", "--config=synthetic:tiny", f"--workdir={tmp_path}",
              "--seeds=3", "--methods=crl_mmnar,logreg", "--stack_seeds=on", "--dry_run")
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  neural = [line for line in lines if "--config.method=crl_mmnar" in line]
  direct = [line for line in lines if "--config.method=logreg" in line]
  assert len(neural) == 1 and len(direct) == 3
  assert neural[0].endswith("--seeds=0,1,2")
  assert f"--workdir={os.path.join(str(tmp_path), 'runs', 'crl_mmnar')}" in neural[0]
  assert "--config.seed=" not in neural[0]
  run = sweep.Run("crl_mmnar", "crl_mmnar")
  assert not sweep.stacks_seeds("off", run, 3)
  assert not sweep.stacks_seeds("on", run, 1)
  assert not sweep.stacks_seeds("on", sweep.Run("logreg", "logreg"), 3)
  import jax
  assert sweep.stacks_seeds("auto", run, 3) == (jax.default_backend() != "cpu")
  # Each seed's folder is exactly the one the separate runs would write.
  seeds_cmd = sweep.seeds_args(run, [0, 2], "synthetic:tiny", str(tmp_path), ())
  workdir = next(a for a in seeds_cmd if a.startswith("--workdir=")).split("=", 1)[1]
  assert os.path.join(workdir, "seed2") == sweep.run_dir(str(tmp_path), run, 2)
  record = json.dumps(seeds_cmd)
  assert "--seeds=0,2" in record
