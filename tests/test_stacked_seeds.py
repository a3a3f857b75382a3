"""Stacked seeds (`experiment.train_and_evaluate_seeds`, `experiments.run --seeds`): the
seeds of a config trained in one vmapped step against each seed's own run."""

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


def test_members_with_other_schedule_lengths_train_apart():
  from crl_mmnar_jax import methods
  from crl_mmnar_jax.methods import MethodData
  from crl_mmnar_jax.train.members import Member, group_members
  from experiments.bench.train import random_cohort
  from experiments.configs.base import get_base_config
  config = get_base_config()
  config.model.dim = 32
  config.model.n_heads = 4
  config.train.batch_size = 16
  cohort = random_cohort(80, (3, 4))
  base = methods.get_method("crl_mmnar")
  rows = {n: Member(config, MethodData(cohort, np.arange(n), np.arange(60, 80), {}),
                    "/nonexistent", "h") for n in (32, 30, 48)}    # 2, 2 and 3 steps
  groups, why = group_members(config, base, [rows[32], rows[48], rows[30]])
  assert groups == [[0, 2], [1]]
  assert why == "the members' learning-rate schedules differ in length (steps per epoch 2, 3)"
  shared = Member(config, MethodData(cohort, np.arange(48), np.arange(60, 80), {},
                                     schedule_steps_per_epoch=2), "/nonexistent", "h")
  assert group_members(config, base, [rows[32], shared]) == ([[0, 1]], None)


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
