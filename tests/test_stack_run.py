"""`--config.method=stack` end to end: the run's results, report and saved workdir
(`crl_mmnar_jax.load(workdir).predict` and `experiments.predict` reproduce the stack's
predictions), test labels that change nothing but test metrics, and a member that cannot
train refused in one line before anything is written. The stacker itself is
`tests/test_stack.py`."""

import importlib.util
import os
import sys

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

import crl_mmnar_jax
from crl_mmnar_jax import data as data_lib
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.data.sources.tables import write_tables
from crl_mmnar_jax.experiment import train_and_evaluate
from experiments import predict as predict_script
from experiments import run as run_script
from experiments.configs import synthetic

HAS_GBT = any(importlib.util.find_spec(p) for p in ("lightgbm", "xgboost"))
N = 240


def _config(members: str, n: int = N):
  c = synthetic.get_config("tiny")
  c.method = "stack"
  c.stack.members = members
  c.stack.n_boot = 200
  c.data.n = n
  c.model.dim, c.model.proj_dim = 16, 8
  c.train.epochs = 1
  c.train.cv_folds = 2
  c.eval.n_boot = 50
  c.eval.plots = False
  c.baseline.logreg_l2_grid = (0.01, 1.0)
  c.baseline.gbt_n_estimators, c.baseline.gbt_num_leaves = 40, 7
  return c


@pytest.fixture(scope="module")
def neural_stack(tmp_path_factory):
  """CRL-MMNAR (its two folds in one vmapped run) and logistic regression."""
  workdir = str(tmp_path_factory.mktemp("stack"))
  config = _config("crl_mmnar,logreg")
  results = train_and_evaluate(config, workdir, log=lambda s: None)
  return workdir, config, results


def test_results_record_every_member_the_weights_and_the_paired_difference(neural_stack):
  workdir, _, results = neural_stack
  st, tr = results["stack"], results["training"]
  assert tr["kind"] == "stack" and tr["members"] == ["crl_mmnar", "logreg"]
  assert set(st["members"]) == {"crl_mmnar", "logreg"}
  pred = pl.read_parquet(os.path.join(workdir, "predictions.parquet"))
  test = pred.filter(pl.col("split") == "test")
  names = list(tr["stack"]["tasks"])
  assert names == [c[:-len("_prob")] for c in pred.columns if c.endswith("_prob")]
  for name in names:
    rule = tr["stack"]["tasks"][name]
    assert rule["rule"] in ("stack", "best_member")
    assert set(rule["weights"]) == {"crl_mmnar", "logreg"}
    assert rule["best_member"] in ("crl_mmnar", "logreg")
    # The stack's test AUROC, recomputed from predictions.parquet (sklearn as the oracle).
    y, p = test[f"{name}_label"].to_numpy(), test[f"{name}_prob"].to_numpy()
    known = ~np.isnan(y)
    stack_auroc = roc_auc_score(y[known], p[known])
    assert results["metrics"]["test"][name]["auroc"] == pytest.approx(stack_auroc, abs=1e-9)
    d = st["stack_minus_best_member_test"][name]
    member = st["members"][d["best_member"]]["test"][name]["auroc"]
    assert d["best_member"] == rule["best_member"]
    assert d["delta"] == pytest.approx(stack_auroc - member, abs=1e-9)
    assert d["lo"] <= d["delta"] <= d["hi"]
    if rule["rule"] == "best_member":     # the stack is its best member on test as well
      assert d["delta"] == pytest.approx(0.0, abs=1e-9)
  report = open(os.path.join(workdir, "report.md")).read()
  assert "## The stack and its members" in report
  assert "crl_mmnar test AUROC" in report and "logreg test AUROC" in report
  assert "A stack of crl_mmnar, logreg" in report
  assert os.path.isdir(os.path.join(workdir, "stack", "crl_mmnar"))


def _compare_test_rows(workdir, frame, tasks):
  ref = pl.read_parquet(os.path.join(workdir, "predictions.parquet"))
  j = ref.join(frame, on="patient_id", suffix="_new", how="inner")
  assert j.height == ref.height
  test = j.filter(pl.col("split") == "test")
  assert test.height > 0
  for t in tasks:
    np.testing.assert_allclose(test[f"{t}_prob_new"], test[f"{t}_prob"], atol=1e-6)
    np.testing.assert_allclose(test[f"{t}_prob_rectified_new"], test[f"{t}_prob_rectified"],
                               atol=1e-6)


def test_load_and_predict_reproduce_the_stacks_test_predictions(neural_stack, tmp_path):
  workdir, config, _ = neural_stack
  loaded = crl_mmnar_jax.load(workdir)
  assert loaded.stack is not None and loaded.stack["members"] == ["crl_mmnar", "logreg"]
  assert sorted({u.member for u in loaded.units}) == ["crl_mmnar", "logreg"]
  cohort = data_lib.load(config).cohort
  _compare_test_rows(workdir, loaded.predict(cohort), loaded.schema.tasks)
  out = tmp_path / "p.parquet"
  assert predict_script.SCRIPT(["predict", f"--workdir={workdir}", "--config=synthetic:tiny",
                                f"--config.data.n={N}", f"--out={out}"]) == 0
  _compare_test_rows(workdir, pl.read_parquet(out), loaded.schema.tasks)


@pytest.mark.skipif(not HAS_GBT, reason="needs LightGBM or XGBoost")
def test_flipping_every_test_label_changes_only_test_metrics(tmp_path):
  cohort = make_synthetic(600, seed=3).cohort
  runs = {}
  for flip in (False, True):
    folder = tmp_path / f"data{int(flip)}"
    write_tables(cohort, folder)
    if flip:
      splits = pl.read_parquet(tmp_path / "run0" / "splits.parquet")
      test_ids = splits.filter(pl.col("split") == "test")["patient_id"].to_list()
      labels = pl.read_parquet(folder / "labels.parquet")
      is_test = pl.col("patient_id").is_in(test_ids)
      labels.with_columns([pl.when(is_test).then(1 - pl.col(t)).otherwise(pl.col(t)).alias(t)
                           for t in cohort.task_names]).write_parquet(folder / "labels.parquet")
    config = _config("logreg,gbt")
    config.data.name, config.data.dir, config.data.tasks = "tables", str(folder), ""
    runs[flip] = train_and_evaluate(config, str(tmp_path / f"run{int(flip)}"),
                                    log=lambda s: None)
  a, b = runs[False], runs[True]
  assert a["training"]["stack"] == b["training"]["stack"]         # weights, rule, OOF AUROCs
  assert a["training"]["spec"] == b["training"]["spec"]
  assert a["metrics"]["val"] == b["metrics"]["val"] and a["rectifier"] == b["rectifier"]
  pa = pl.read_parquet(tmp_path / "run0" / "predictions.parquet")
  pb = pl.read_parquet(tmp_path / "run1" / "predictions.parquet")
  prob_cols = [c for c in pa.columns if "_prob" in c]
  assert pa.select(prob_cols).equals(pb.select(prob_cols))        # bit-identical
  for t in cohort.task_names:
    assert abs((1 - a["metrics"]["test"][t]["auroc"]) - b["metrics"]["test"][t]["auroc"]) < 1e-9


def test_a_member_that_cannot_train_is_one_line_before_anything_is_written(
    tmp_path, monkeypatch):
  for name in ("lightgbm", "xgboost"):     # neither GBDT package importable
    monkeypatch.setitem(sys.modules, name, None)
  workdir = tmp_path / "w"
  with pytest.raises(SystemExit) as e:
    run_script.SCRIPT(["run", "--config=synthetic:tiny", f"--workdir={workdir}",
                       "--config.method=stack", "--config.train.cv_folds=2",
                       "--config.stack.members=logreg,gbt"])
  message = str(e.value.code)
  assert message.startswith("error: ") and "\n" not in message and "LightGBM" in message
  assert not workdir.exists()
  with pytest.raises(SystemExit) as e:            # cv_folds=1: no out-of-fold rows
    run_script.SCRIPT(["run", "--config=synthetic:tiny", f"--workdir={workdir}",
                       "--config.method=stack", "--config.stack.members=logreg"])
  assert "cv_folds" in str(e.value.code) and "\n" not in str(e.value.code)
  assert not workdir.exists()
