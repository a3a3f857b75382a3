"""The stacked predictor (`stacking.py`, `stack_fit.py`): the logistic stacker against
scikit-learn, cross-fitting that reads out-of-fold rows only, the no-harm rule against a
naive bootstrap loop, and the stack's choice on identical, useless and complementary
members."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from crl_mmnar_jax import stacking


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _members(n=1200, k=3, seed=0, signal=(1.0, 1.0), noise=0.3):
  """Two latent signals s1, s2; y ~ Bernoulli(sigmoid(s1 + s2)). Returns (x1, x2, y,
  fold) with x_i = s_i + noise (what a member could see) and a fold per row."""
  rng = np.random.default_rng(seed)
  s_Nx2 = rng.normal(size=(n, 2)) * np.asarray(signal)
  y_N = (rng.random(n) < _sigmoid(s_Nx2.sum(1) - 0.5)).astype(float)
  x_Nx2 = s_Nx2 + noise * rng.normal(size=(n, 2))
  fold_N = rng.permutation(np.arange(n) % k)
  return x_Nx2, y_N, fold_N


# ----------------------------------------------------------------------------------
# The stacker.


@pytest.mark.parametrize("l2", [0.1, 1.0, 30.0])
def test_stacker_equals_sklearn_logistic_regression(l2):
  from sklearn.linear_model import LogisticRegression
  rng = np.random.default_rng(int(l2 * 10))
  x_NxK = rng.normal(size=(400, 4)) * np.array([3.0, 1.0, 0.5, 2.0])
  x_NxK[:, 3] = x_NxK[:, 0] + 0.01 * rng.normal(size=400)       # nearly collinear
  y_N = (rng.random(400) < _sigmoid(x_NxK @ [0.8, -0.5, 0.0, 0.3] + 0.4)).astype(float)
  y_nan = y_N.copy()
  y_nan[rng.random(400) < 0.2] = np.nan                           # unknown: ignored
  ours = stacking.fit_stacker(x_NxK, y_nan, l2=l2)
  known = ~np.isnan(y_nan)
  ref = LogisticRegression(C=1.0 / l2, tol=1e-12, max_iter=10_000,
                           solver="newton-cholesky").fit(x_NxK[known], y_N[known])
  np.testing.assert_allclose(ours.weights_K, ref.coef_[0], atol=1e-6)
  assert abs(ours.intercept - ref.intercept_[0]) < 1e-6
  np.testing.assert_allclose(_sigmoid(ours.logit(x_NxK)), ref.predict_proba(x_NxK)[:, 1],
                             atol=1e-7)


def test_stacker_shares_identical_members_and_rejects_one_class():
  x_N, y_N, _ = _members(400)
  same_Nx2 = np.repeat(x_N[:, :1], 2, axis=1)
  s = stacking.fit_stacker(same_Nx2, y_N)
  assert np.isfinite(s.weights_K).all() and abs(s.weights_K[0] - s.weights_K[1]) < 1e-9
  with pytest.raises(ValueError, match="both classes"):
    stacking.fit_stacker(same_Nx2, np.zeros(400))
  with pytest.raises(ValueError, match="l2"):
    stacking.fit_stacker(same_Nx2, y_N, l2=0.0)


# ----------------------------------------------------------------------------------
# Cross-fitting: out-of-fold rows only.


def test_cross_fitting_never_reads_the_held_out_folds_labels():
  x_Nx2, y_N, fold_N = _members(900, k=3, seed=1)
  base_N = stacking.cross_fitted_logits(x_Nx2, y_N, fold_N)
  for f in range(3):
    changed = y_N.copy()
    held = fold_N == f
    changed[held] = 1.0 - changed[held]                     # every label of fold f
    changed[np.flatnonzero(held)[:7]] = np.nan
    out_N = stacking.cross_fitted_logits(x_Nx2, changed, fold_N)
    np.testing.assert_array_equal(out_N[held], base_N[held])   # fold f: unchanged
    assert not np.allclose(out_N[~held], base_N[~held])        # the others did see them
  # The same through the whole stack; test labels are no input at all.
  probs = np.stack([_sigmoid(x_Nx2[:, [0]]), _sigmoid(x_Nx2[:, [1]])])
  test = probs[:, :50]
  fit = stacking.stack_predictions(probs, y_N[:, None], fold_N, test, n_boot=50)
  changed = y_N.copy()
  changed[fold_N == 0] = 1.0 - changed[fold_N == 0]
  fit2 = stacking.stack_predictions(probs, changed[:, None], fold_N, test, n_boot=50)
  np.testing.assert_array_equal(fit2.stack_val_NxT[fold_N == 0],
                                fit.stack_val_NxT[fold_N == 0])
  assert not any("label" in p and "test" in p
                 for p in inspect.signature(stacking.stack_predictions).parameters)


# ----------------------------------------------------------------------------------
# The no-harm rule.


def _naive_gain(y_N, stack_N, member_N, n_boot, z, seed):
  from sklearn.metrics import roc_auc_score
  known = ~np.isnan(y_N)
  y, s, m = y_N[known], stack_N[known], member_N[known]
  rng = np.random.default_rng(seed)
  gains = []
  for _ in range(n_boot):
    idx = rng.integers(0, len(y), size=len(y))
    if len(np.unique(y[idx])) < 2:
      continue
    gains.append(roc_auc_score(y[idx], s[idx]) - roc_auc_score(y[idx], m[idx]))
  gain = roc_auc_score(y, s) - roc_auc_score(y, m)
  sd = np.std(gains, ddof=1)
  return gain, sd, gain - z * sd, len(gains)


@pytest.mark.parametrize("n", [30, 500])
def test_no_harm_rule_equals_a_naive_bootstrap_loop(n):
  rng = np.random.default_rng(n)
  y_N = (rng.random(n) < 0.3).astype(float)
  y_N[:3] = np.nan
  member_N = np.round(_sigmoid(y_N * 0.8 + rng.normal(size=n)), 2)     # with ties
  stack_N = _sigmoid(np.nan_to_num(y_N) + rng.normal(size=n))
  g = stacking.paired_auroc_gain(y_N, stack_N, member_N, n_boot=150, z=1.645, seed=7)
  gain, sd, lcb, n_defined = _naive_gain(y_N, stack_N, member_N, 150, 1.645, 7)
  assert g.n_defined == n_defined
  np.testing.assert_allclose([g.gain, g.sd, g.lcb], [gain, sd, lcb], rtol=0, atol=1e-12)


def test_the_stack_records_its_rule_as_the_naive_loop_computes_it():
  x_Nx2, y_N, fold_N = _members(600, k=3, seed=2)
  probs = np.stack([_sigmoid(x_Nx2[:, [0]]), _sigmoid(x_Nx2[:, [1]])])
  fit = stacking.stack_predictions(probs, y_N[:, None], fold_N, probs[:, :20], n_boot=100,
                                   seed=5, members=["a", "b"])
  rec = fit.tasks[0]
  best = ["a", "b"].index(rec.best_member)
  gain, sd, lcb, _ = _naive_gain(y_N, fit.stack_val_NxT[:, 0], probs[best, :, 0], 100,
                                 stacking.DEFAULT_Z, 5)
  np.testing.assert_allclose([rec.gain, rec.gain_sd, rec.gain_lcb], [gain, sd, lcb],
                             atol=1e-12)
  assert rec.rule == ("stack" if lcb > 0 else "best_member")


# ----------------------------------------------------------------------------------
# What the rule picks.


def test_identical_members_give_that_member_exactly():
  x_Nx2, y_N, fold_N = _members(600, k=4, seed=3)
  p_NxT = _sigmoid(np.stack([x_Nx2[:, 0], x_Nx2[:, 0] + x_Nx2[:, 1]], 1)).astype(np.float32)
  test_NxT = p_NxT[:100] * np.float32(0.9)
  labels = np.stack([y_N, y_N], 1)
  fit = stacking.stack_predictions(np.stack([p_NxT] * 3), labels, fold_N,
                                   np.stack([test_NxT] * 3), n_boot=100)
  assert [r.rule for r in fit.tasks] == ["best_member"] * 2
  assert all(r.best_member == "member0" and r.n_distinct_members == 1 for r in fit.tasks)
  np.testing.assert_array_equal(fit.val_NxT, p_NxT.astype(np.float64))
  np.testing.assert_array_equal(fit.test_NxT, test_NxT.astype(np.float64))


def test_a_useless_member_adds_nothing_and_the_good_member_is_kept():
  x_Nx2, y_N, fold_N = _members(2000, k=5, seed=4, signal=(1.5, 0.0))
  rng = np.random.default_rng(0)
  good = _sigmoid(x_Nx2[:, 0])
  useless = _sigmoid(rng.normal(size=2000))
  probs = np.stack([useless, good])[:, :, None]
  fit = stacking.stack_predictions(probs, y_N[:, None], fold_N, probs[:, :300], n_boot=300,
                                   members=["useless", "good"])
  rec = fit.tasks[0]
  assert rec.best_member == "good" and abs(rec.weights["useless"]) < 0.1
  assert abs(rec.gain) < 0.01 and rec.gain_lcb < 0 and rec.rule == "best_member"
  np.testing.assert_array_equal(fit.val_NxT[:, 0], good)
  np.testing.assert_array_equal(fit.test_NxT[:, 0], good[:300])


def test_complementary_members_pass_the_rule():
  # Each member sees a different half of the signal: together they see all of it.
  x_Nx2, y_N, fold_N = _members(2000, k=5, seed=5)
  probs = np.stack([_sigmoid(x_Nx2[:, 0]), _sigmoid(x_Nx2[:, 1])])[:, :, None]
  fit = stacking.stack_predictions(probs, y_N[:, None], fold_N, probs[:, :300], n_boot=300,
                                   members=["left", "right"], task_names=["death"])
  rec = fit.tasks[0]
  assert rec.rule == "stack" and rec.gain > 0.05 and rec.gain_lcb > 0
  assert rec.weights["left"] > 0.5 and rec.weights["right"] > 0.5
  np.testing.assert_array_equal(fit.val_NxT, fit.stack_val_NxT)
  np.testing.assert_array_equal(fit.test_NxT, fit.stack_test_NxT)
  assert json.loads(json.dumps(fit.record()))["tasks"]["death"]["rule"] == "stack"


def test_the_saved_spec_reproduces_the_test_predictions_exactly():
  x_Nx2, y_N, fold_N = _members(1500, k=3, seed=6)
  rng = np.random.default_rng(1)
  probs = np.stack([_sigmoid(x_Nx2), _sigmoid(x_Nx2[:, ::-1] * 0.5),
                    _sigmoid(x_Nx2.sum(1, keepdims=True) + rng.normal(size=(1500, 1)))
                    .repeat(2, 1)]).astype(np.float32)
  labels = np.stack([y_N, np.where(rng.random(1500) < 0.5, y_N, 1 - y_N)], 1)
  test = probs[:, ::3]
  fit = stacking.stack_predictions(probs, labels, fold_N, test, n_boot=100)
  assert {r.rule for r in fit.tasks} == {"stack", "best_member"}     # one of each
  spec = json.loads(json.dumps(fit.spec))
  again = stacking.apply_stack(spec, test)
  np.testing.assert_array_equal(again, fit.test_NxT)
  with pytest.raises(ValueError, match="members"):
    stacking.apply_stack(spec, test[:2])


# ----------------------------------------------------------------------------------
# Training the members (`stack_fit.py`): direct members on synthetic:tiny.


def _tiny_cohort(flip_test: bool):
  from crl_mmnar_jax import data as data_lib
  from crl_mmnar_jax.data.splits import make_splits
  from experiments.configs import synthetic
  config = synthetic.get_config("tiny")
  config.train.cv_folds = 2
  config.eval.n_boot = 0
  config.baseline.logreg_l2_grid = (0.01,)         # small and fast members
  config.baseline.gbt_n_estimators = 40
  config.baseline.gbt_early_stopping = 10
  config.baseline.gbt_num_leaves = 7
  loaded = data_lib.load(config)
  cohort = loaded.cohort
  split = make_splits(config, cohort, loaded.test_mask_N)
  nontest, test = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
  if flip_test:
    import dataclasses
    labels = cohort.labels.copy()
    labels[test] = 1.0 - labels[test]            # NaN stays NaN
    cohort = dataclasses.replace(cohort, labels=labels)
  return config, cohort, nontest, test


def test_fit_stack_members_share_folds_and_never_read_test_labels(tmp_path, monkeypatch):
  from crl_mmnar_jax import ensemble, stack_fit
  from crl_mmnar_jax.train import mesh as mesh_lib
  seen = []
  plan_members = ensemble.plan_members

  def spy(config, cohort, nontest_rows, workdir, prepare, log):
    plans, fold = plan_members(config, cohort, nontest_rows, workdir, prepare, log)
    seen.append((config.method, fold, [p.held for p in plans], workdir))
    return plans, fold

  monkeypatch.setattr(ensemble, "plan_members", spy)
  lightgbm = pytest.importorskip("lightgbm")
  train = lightgbm.train                  # one thread: no OpenMP contention on shared cores
  monkeypatch.setattr(lightgbm, "train",
                      lambda params, *a, **k: train({**params, "num_threads": 1}, *a, **k))
  mesh = mesh_lib.make_mesh()
  out = {}
  for flip in (False, True):
    config, raw, nontest, test = _tiny_cohort(flip)
    workdir = str(tmp_path / f"flip{int(flip)}")
    probs, record, _ = stack_fit.fit_stack(config, ["logreg", "gbt"], raw, nontest, test,
                                        workdir, mesh, "h", lambda s: None, n_boot=100)
    out[flip] = (probs, record)
  # Every member (and both runs) saw the same folds; each wrote to its own folder.
  assert [s[0] for s in seen] == ["logreg", "gbt"] * 2
  for _, fold, held, _ in seen[1:]:
    np.testing.assert_array_equal(fold, seen[0][1])
    for a, b in zip(held, seen[0][2]):
      np.testing.assert_array_equal(a, b)
  assert seen[0][3].endswith("stack/logreg") and seen[1][3].endswith("stack/gbt")
  assert (tmp_path / "flip0" / "stack" / "gbt" / "members" / "1").is_dir()
  # Flipping every test label changes no weight and no prediction.
  (p0, r0), (p1, r1) = out[False], out[True]
  for s in ("val", "test"):
    np.testing.assert_array_equal(p0[s], p1[s])
  assert r0["spec"] == r1["spec"] and r0["stack"] == r1["stack"]
  # The record: every member's OOF metrics, the weights and the rule per task.
  assert set(r0["member_oof_metrics"]) == {"logreg", "gbt"}
  tasks = r0["stack"]["tasks"]
  assert set(tasks) == set(raw.task_names)
  for rec in tasks.values():
    assert rec["rule"] in ("stack", "best_member") and set(rec["weights"]) == {"logreg", "gbt"}
  assert p0["val"].shape == (len(nontest), raw.n_tasks) and p0["val"].dtype == np.float32
  json.dumps(r0["spec"])


def test_fit_stack_refuses_bad_members_before_writing(tmp_path):
  from crl_mmnar_jax import stack_fit
  from experiments.configs import synthetic
  config = synthetic.get_config("tiny")
  config.train.cv_folds = 2
  for members, match in ((["logreg", "nope"], "nope"), (["gbt", "gbt"], "distinct"),
                         ([], "at least one"), (["stack"], "itself")):
    with pytest.raises(ValueError, match=match):
      stack_fit.fit_stack(config, members, None, None, None, str(tmp_path), None, "h",
                          print)
  config.train.cv_folds = 1
  with pytest.raises(ValueError, match="cv_folds"):
    stack_fit.check_members(config, ["logreg"])
  assert not list(tmp_path.iterdir())
