"""Cross-fitted ensembles: fold assignment, out-of-fold predictions, sealed test labels."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax.data.splits import assign_folds


def _cohort_like(n=900, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.choice(10**7, n, replace=False)
  pattern = rng.integers(0, 4, n)
  labels = (rng.random((n, 2)) < 0.3).astype(float)
  labels[rng.random(n) < 0.1, 1] = np.nan
  return ids, pattern, labels


def test_folds_are_balanced_in_every_stratum_and_order_free():
  ids, pattern, labels = _cohort_like()
  fold = assign_folds(ids, pattern, labels, 5, seed=3)
  assert set(np.unique(fold)) == set(range(5))
  code = np.where(np.isnan(labels), 2, labels)
  # Every stratum, at every nesting level, within one unit of n/K per fold (naive loop).
  for keys in ([pattern], [pattern, code[:, 0]], [pattern, code[:, 0], code[:, 1]]):
    strata = np.stack(keys, 1)
    for s in np.unique(strata, axis=0):
      rows = np.all(strata == s, axis=1)
      counts = np.bincount(fold[rows], minlength=5)
      assert counts.max() - counts.min() <= 1, (s, counts)
  perm = np.random.default_rng(1).permutation(len(ids))
  np.testing.assert_array_equal(assign_folds(ids[perm], pattern[perm], labels[perm], 5,
                                             seed=3), fold[perm])
  assert not np.array_equal(assign_folds(ids, pattern, labels, 5, seed=4), fold)


def test_folds_keep_groups_together():
  ids, pattern, labels = _cohort_like(300)
  group = ids // 10**5                     # about 100 groups
  fold = assign_folds(ids, pattern, labels, 3, seed=0, group_id=group)
  for g in np.unique(group):
    assert len(np.unique(fold[group == g])) == 1
  with pytest.raises(ValueError, match="n_folds"):
    assign_folds(ids, pattern, labels, 1)


@pytest.fixture(scope="module")
def logreg_cv_run(tmp_path_factory):
  from crl_mmnar_jax.experiment import train_and_evaluate
  from experiments.configs import synthetic
  config = synthetic.get_config("tiny")
  config.method = "logreg"
  config.train.cv_folds = 3
  config.eval.plots = False
  config.eval.n_boot = 0
  workdir = str(tmp_path_factory.mktemp("cv"))
  return config, workdir, train_and_evaluate(config, workdir, log=lambda s: None)


def test_out_of_fold_predictions_match_members_fitted_by_hand(logreg_cv_run):
  from crl_mmnar_jax import data as data_lib
  from crl_mmnar_jax.data.splits import make_splits
  from crl_mmnar_jax.data.standardize import standardize
  from crl_mmnar_jax.methods.direct import logreg_mean_impute
  config, workdir, results = logreg_cv_run
  cohort = data_lib.load(config).cohort
  split = make_splits(config, cohort)
  nontest = np.flatnonzero(split != "test")
  test = np.flatnonzero(split == "test")
  sealed = cohort.labels.copy()
  sealed[test] = np.nan
  cohort = dataclasses.replace(cohort, labels=sealed)
  fold = assign_folds(cohort.patient_id[nontest], cohort.pattern[nontest],
                      cohort.labels[nontest], 3, seed=int(config.seed))
  oof = np.zeros((len(nontest), cohort.n_tasks))
  test_mean = np.zeros((len(test), cohort.n_tasks))
  for f in range(3):
    train, held = nontest[fold != f], nontest[fold == f]
    std, _ = standardize(cohort, train)
    probs, _ = logreg_mean_impute(std, train, held, {"val": held, "test": test},
                                  tuple(config.baseline.logreg_l2_grid))
    oof[fold == f] = probs["val"]
    test_mean += probs["test"] / 3
  pred = pl.read_parquet(f"{workdir}/predictions.parquet")
  val = pred.filter(pl.col("split") == "val")
  tst = pred.filter(pl.col("split") == "test")
  np.testing.assert_array_equal(val["patient_id"].to_numpy(), cohort.patient_id[nontest])
  np.testing.assert_array_equal(tst["patient_id"].to_numpy(), cohort.patient_id[test])
  for t, name in enumerate(cohort.task_names):
    np.testing.assert_allclose(val[f"{name}_prob"].to_numpy(), oof[:, t], atol=1e-6)
    np.testing.assert_allclose(tst[f"{name}_prob"].to_numpy(), test_mean[:, t], atol=1e-6)
  assert results["cohort"]["n_out_of_fold"] == len(nontest)
  members = results["training"]["members"]
  assert [m["n_held_out"] for m in members] == [int((fold == f).sum()) for f in range(3)]
  # The rectifier was fitted on every non-test patient's out-of-fold prediction.
  counted = {}
  for row in results["rectifier"]["table"]:
    counted[(row["task"], row["pattern"])] = row["n"]
  for name in cohort.task_names:
    assert sum(n for (t, _), n in counted.items() if t == name) == int(
        (~np.isnan(cohort.labels[nontest, cohort.task_names.index(name)])).sum())


def test_flipping_test_labels_changes_only_test_metrics(logreg_cv_run, tmp_path, monkeypatch):
  from dataclasses import replace

  import crl_mmnar_jax.data as data_lib
  from crl_mmnar_jax.data.splits import make_splits
  from crl_mmnar_jax.experiment import train_and_evaluate
  config, workdir, results = logreg_cv_run
  original = data_lib.load

  def flipped(cfg, keep=None):
    loaded = original(cfg, keep)
    test = make_splits(cfg, loaded.cohort, loaded.test_mask_N) == "test"
    labels = loaded.cohort.labels.copy()
    labels[test] = 1.0 - labels[test]
    return replace(loaded, cohort=replace(loaded.cohort, labels=labels))

  monkeypatch.setattr(data_lib, "load", flipped)
  again = train_and_evaluate(config, str(tmp_path / "flipped"), log=lambda s: None)
  a = pl.read_parquet(f"{workdir}/predictions.parquet")
  b = pl.read_parquet(str(tmp_path / "flipped" / "predictions.parquet"))
  for c in a.columns:
    if not c.endswith("_label"):
      assert a[c].equals(b[c]), c
  assert json.dumps(results["rectifier"]) == json.dumps(again["rectifier"])
  assert results["metrics"]["test"]["mean"]["auroc"] != again["metrics"]["test"]["mean"]["auroc"]
