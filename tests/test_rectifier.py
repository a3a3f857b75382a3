"""Tests for `crl_mmnar_jax.rectifier` against independent, naive computations."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from crl_mmnar_jax import rectifier
from crl_mmnar_jax.rectifier import bootstrap as rectifier_bootstrap
from crl_mmnar_jax.rectifier import select as rectifier_select

# Pattern ids (bit m = modality m observed) and very different pattern sizes.
_PATTERNS = np.array([1, 3, 5, 7, 12, 15, 31, 64, 2, 100])
_SIZES = np.array([1500, 700, 400, 200, 100, 50, 30, 15, 4, 1])


def _mixed_data(seed: int = 0, n_tasks: int = 3):
  """Patterns of very different sizes, per-pattern shifts, NaN labels, clipping."""
  rng = np.random.default_rng(seed)
  pattern_N = rng.permutation(np.repeat(_PATTERNS, _SIZES))
  n = pattern_N.shape[0]
  shift_PxT = rng.uniform(-0.15, 0.15, size=(len(_PATTERNS), n_tasks))  # sorted ids
  idx_N = np.searchsorted(np.sort(_PATTERNS), pattern_N)
  probs_NxT = rng.uniform(0.0, 1.0, size=(n, n_tasks)).astype(np.float32)
  probs_NxT[:20] = 0.99   # near the edge: positive corrections get clipped
  probs_NxT[20:30] = 0.0
  probs_NxT[30:40] = 1.0
  truth = np.clip(probs_NxT + shift_PxT[idx_N], 0.0, 1.0)
  labels_NxT = (rng.uniform(size=(n, n_tasks)) < truth).astype(np.float32)
  labels_NxT[rng.uniform(size=(n, n_tasks)) < 0.2] = np.nan
  labels_NxT[pattern_N == 7, n_tasks - 1] = np.nan   # a pattern with no label for a task
  return probs_NxT, labels_NxT, pattern_N


def _naive_rule(delta, se, kappa_grid, lambda_grid, rule, z):
  """Reference for the documented selection rules: a plain loop over the grid."""
  cands = sorted(itertools.product(range(len(kappa_grid)), range(len(lambda_grid))),
                 key=lambda ij: (lambda_grid[ij[1]], -kappa_grid[ij[0]]))  # stable sort
  if rule == "lcb":
    score = lambda ij: (delta[ij] + z * se[ij] if lambda_grid[ij[1]] > 0 else np.inf)
  else:
    score = lambda ij: delta[ij]
  best = cands[0]
  for ij in cands[1:]:
    if score(ij) < score(best) - 1e-12:
      best = ij
  if rule == "min":
    return best
  bound = score(best) + (z * se[best] if rule == "one_se" else 0.0)
  return best if bound < 0 else cands[0]


def _naive(probs_NxT, labels_NxT, pattern_N, folds_N, *, n_folds, kappa_grid,
           lambda_grid, z, min_count, shrinkage, selection, rule, rule_z):
  """Reference: explicit Python loops over folds, patterns, tasks and the grid."""
  p64 = probs_NxT.astype(np.float64)
  y64 = labels_NxT.astype(np.float64)
  patterns = sorted(set(pattern_N.tolist()))
  n_tasks = p64.shape[1]
  shape = (n_folds, len(patterns), n_tasks)
  n_oof, tau_oof, se_oof = np.zeros(shape), np.full(shape, np.nan), np.full(shape, np.nan)
  g_oof = np.full((n_folds, n_tasks), np.nan)

  def stats(rows, t):
    r = y64[rows, t] - p64[rows, t]
    r = r[~np.isnan(r)]
    mean = r.mean() if r.size else np.nan
    sd = r.std(ddof=1) if r.size > 1 else np.nan
    return r.size, mean, sd / np.sqrt(r.size), sd

  for k in range(n_folds):
    for t in range(n_tasks):
      size, mean, _, _ = stats(folds_N != k, t)
      if size:
        g_oof[k, t] = mean
      for i, pat in enumerate(patterns):
        n_oof[k, i, t], tau_oof[k, i, t], se_oof[k, i, t], _ = stats(
            (folds_N != k) & (pattern_N == pat), t)

  def shrink_gate(n, ok, tau, se, g, kappa):
    if not ok:
      return 0.0
    shrunk = (n * tau + shrinkage * g) / (n + shrinkage)
    passed = abs(shrunk) > kappa
    if z > 0:
      passed = passed and not np.isnan(se) and abs(shrunk) - z * se > kappa
    return shrunk if passed else 0.0

  def loss(q, y):
    if selection == "brier":
      return (y - q) ** 2
    q = np.clip(q, rectifier.LOGLOSS_EPS, 1 - rectifier.LOGLOSS_EPS)
    return -(y * np.log(q) + (1 - y) * np.log(1 - q))

  grid = (n_tasks, len(kappa_grid), len(lambda_grid))
  cv_loss, cv_delta, se_row, se_fold = (np.zeros(grid) for _ in range(4))
  chosen = []
  oof = p64.copy()
  for t in range(n_tasks):
    known = ~np.isnan(y64[:, t])
    preds = {}
    for (i, kappa), (j, lam) in itertools.product(enumerate(kappa_grid),
                                                  enumerate(lambda_grid)):
      q = p64[:, t].copy()
      for k in range(n_folds):
        for pi, pat in enumerate(patterns):
          rows = (folds_N == k) & (pattern_N == pat)
          ok = n_oof[k, pi, t] >= max(min_count, 1)
          c = shrink_gate(n_oof[k, pi, t], ok, tau_oof[k, pi, t], se_oof[k, pi, t],
                          g_oof[k, t], kappa)
          q[rows] = np.clip(p64[rows, t] + lam * c, 0.0, 1.0)
      d = loss(q[known], y64[known, t]) - loss(p64[known, t], y64[known, t])
      cv_loss[t, i, j] = loss(q[known], y64[known, t]).mean()
      cv_delta[t, i, j] = d.mean()
      se_row[t, i, j] = d.std(ddof=1) / np.sqrt(d.size)
      fold_means = [d[folds_N[known] == k].mean() for k in range(n_folds)]
      se_fold[t, i, j] = np.std(fold_means, ddof=1) / np.sqrt(n_folds)
      preds[i, j] = q
    se = se_row if rule == "lcb" else se_fold
    best = _naive_rule(cv_delta[t], se[t], kappa_grid, lambda_grid, rule, rule_z)
    chosen.append(best)
    oof[:, t] = preds[best]

  # The final table: counts on the out-of-fold scale (mean for the shrinkage and the
  # standard error of the gate, minimum over folds for the minimum count).
  count = np.zeros((len(patterns), n_tasks))
  tau_raw, se, tau = (np.full((len(patterns), n_tasks), np.nan) for _ in range(3))
  global_mean = np.array([np.mean([g for g in g_oof[:, t] if not np.isnan(g)])
                          for t in range(n_tasks)])
  for t in range(n_tasks):
    kappa = kappa_grid[chosen[t][0]]
    for i, pat in enumerate(patterns):
      count[i, t], _, se[i, t], sd = stats(pattern_N == pat, t)
      estimates = [tau_oof[k, i, t] for k in range(n_folds) if n_oof[k, i, t] > 0]
      if estimates:
        tau_raw[i, t] = np.mean(estimates)
      n_bar = count[i, t] * (n_folds - 1) / n_folds
      ok = min(n_oof[:, i, t]) >= max(min_count, 1)
      tau[i, t] = shrink_gate(n_bar, ok, tau_raw[i, t], sd / np.sqrt(n_bar) if ok else 0,
                              global_mean[t], kappa)
  return dict(patterns=np.array(patterns), tau_oof=tau_oof, n_oof=n_oof, cv_loss=cv_loss,
              cv_delta=cv_delta, se=se, se_row=se_row, se_fold=se_fold,
              kappa=np.array([kappa_grid[i] for i, _ in chosen]),
              lam=np.array([lambda_grid[j] for _, j in chosen]), oof=oof, count=count,
              tau_raw=tau_raw, tau=tau, global_mean=global_mean)


@pytest.mark.parametrize("selection,z,shrinkage,min_count,rule,rule_z", [
    ("brier", 0.0, 20.0, 20, "lcb", 1.645),
    ("brier", 0.0, 20.0, 20, "min", 0.0),
    ("logloss", 1.5, 5.0, 3, "one_se", 1.0),
    ("logloss", 0.0, 5.0, 3, "lcb", 3.0),
])
def test_matches_naive_loop_over_folds_and_patterns(selection, z, shrinkage, min_count,
                                                    rule, rule_z):
  probs, labels, pattern = _mixed_data()
  settings = dict(n_folds=5, kappa_grid=(0.0, 0.01, 0.02, 0.05, 0.1),
                  lambda_grid=(0.0, 0.25, 0.5, 0.75, 1.0), z=z, min_count=min_count,
                  shrinkage=shrinkage, selection=selection, rule=rule, rule_z=rule_z)
  rect = rectifier.fit(probs, labels, pattern, seed=3, **settings)
  ref = _naive(probs, labels, pattern, rect.folds_N, **settings)

  np.testing.assert_array_equal(rect.patterns, ref["patterns"])
  np.testing.assert_allclose(rect.tau_oof_KxPxT, ref["tau_oof"], atol=1e-6, rtol=0)
  np.testing.assert_allclose(rect.cv_loss_TxIxJ, ref["cv_loss"], atol=1e-6, rtol=1e-6)
  np.testing.assert_allclose(rect.cv_delta_TxIxJ, ref["cv_delta"], atol=1e-9, rtol=1e-6)
  np.testing.assert_allclose(rect.cv_se_TxIxJ, ref["se_row" if rule == "lcb" else "se_fold"],
                             atol=1e-9, rtol=1e-6)
  np.testing.assert_array_equal(rect.kappa_T, ref["kappa"])
  np.testing.assert_array_equal(rect.lambda_T, ref["lam"])
  np.testing.assert_allclose(rect.oof_probs_NxT, ref["oof"], atol=1e-6, rtol=0)
  np.testing.assert_array_equal(rect.count_PxT, ref["count"])
  np.testing.assert_allclose(rect.tau_raw_PxT, ref["tau_raw"], atol=1e-6, rtol=0)
  np.testing.assert_allclose(rect.se_PxT, ref["se"], atol=1e-6, rtol=0)
  np.testing.assert_allclose(rect.global_mean_T, ref["global_mean"], atol=1e-6, rtol=0)
  np.testing.assert_allclose(rect.tau_PxT, ref["tau"], atol=1e-6, rtol=0)
  # The comparison is meaningful: some cells are corrected, some not, some lack data.
  assert (rect.tau_PxT != 0).any() and (rect.tau_PxT == 0).any()
  assert np.isnan(rect.tau_raw_PxT).any() and (rect.lambda_T > 0).any()
  assert not np.array_equal(rect.oof_probs_NxT, probs)
  # apply() is clip(p + λ·τ[pattern]) with the final table.
  idx = np.searchsorted(ref["patterns"], pattern)
  expected = np.clip(probs.astype(np.float64) + ref["lam"] * ref["tau"][idx], 0, 1)
  np.testing.assert_allclose(rect.apply(probs, pattern), expected, atol=1e-6, rtol=0)


def test_folds_are_stratified_by_pattern_and_seeded():
  _, _, pattern = _mixed_data()
  folds = rectifier.stratified_folds(pattern, 5, seed=1)
  assert folds.shape == pattern.shape and set(np.unique(folds)) <= set(range(5))
  for pat in np.unique(pattern):
    sizes = np.bincount(folds[pattern == pat], minlength=5)
    assert sizes.max() - sizes.min() <= 1, (pat, sizes)
  np.testing.assert_array_equal(folds, rectifier.stratified_folds(pattern, 5, seed=1))
  assert not np.array_equal(folds, rectifier.stratified_folds(pattern, 5, seed=2))
  # Leftover rows of small patterns are spread, not all dealt to fold 0.
  small = np.isin(pattern, [2, 64, 100])
  assert len(np.unique(folds[small])) > 1


def test_never_uses_the_fold_it_corrects():
  probs, labels, pattern = _mixed_data(seed=1)
  settings = dict(kappa_grid=(0.0,), lambda_grid=(1.0,), shrinkage=5.0, min_count=5,
                  seed=0)
  rect = rectifier.fit(probs, labels, pattern, **settings)
  k = 2
  in_k = rect.folds_N == k
  changed = labels.copy()
  changed[in_k] = 1.0 - changed[in_k]            # flip fold-k labels ...
  changed[in_k & (np.arange(len(pattern)) % 3 == 0), 1] = np.nan  # ... hide some
  rect2 = rectifier.fit(probs, changed, pattern, **settings)
  np.testing.assert_array_equal(rect2.folds_N, rect.folds_N)
  np.testing.assert_array_equal(rect2.oof_probs_NxT[in_k], rect.oof_probs_NxT[in_k])
  # The other folds' corrections did use fold k's labels.
  assert not np.allclose(rect2.oof_probs_NxT[~in_k], rect.oof_probs_NxT[~in_k])


@pytest.mark.parametrize("grids", [
    dict(kappa_grid=(1.0,)),
    dict(lambda_grid=(0.0,)),
    dict(kappa_grid=(1.0, 0.5), lambda_grid=(0.0, 1.0)),
])
def test_large_kappa_or_zero_lambda_changes_nothing(grids):
  probs, labels, pattern = _mixed_data(seed=2)
  rect = rectifier.fit(probs, labels, pattern, **grids)
  np.testing.assert_array_equal(rect.oof_probs_NxT, probs)
  np.testing.assert_array_equal(rect.apply(probs, pattern), probs)
  assert not rect.corrected_PxT.any()


def test_exact_ties_pick_smallest_lambda_then_largest_kappa():
  rng = np.random.default_rng(0)
  labels = (rng.uniform(size=(500, 2)) < 0.5).astype(np.float64)
  pattern = rng.integers(1, 4, size=500)
  # Perfect predictions: every residual is 0, every (κ, λ) scores the same.
  rect = rectifier.fit(labels.copy(), labels, pattern, kappa_grid=(0.02, 0.1, 0.0),
                       lambda_grid=(0.5, 0.0, 1.0))
  np.testing.assert_array_equal(rect.kappa_T, [0.1, 0.1])
  np.testing.assert_array_equal(rect.lambda_T, [0.0, 0.0])


def _shifted_data(shift_P, n_per_pattern, seed):
  rng = np.random.default_rng(seed)
  pats = np.arange(1, len(shift_P) + 1)
  pattern = rng.permutation(np.repeat(pats, n_per_pattern))
  p_true = rng.uniform(0.15, 0.75, size=(pattern.size, 2))   # no clipping at |shift| <= .12
  truth = p_true + np.asarray(shift_P)[pattern - 1, None]
  labels = (rng.uniform(size=p_true.shape) < truth).astype(np.float64)
  labels[rng.uniform(size=labels.shape) < 0.1] = np.nan
  return p_true, labels, pattern


def _brier(probs, labels):
  known = ~np.isnan(labels)
  return float(np.mean((probs[known] - labels[known]) ** 2))


def test_recovers_an_injected_per_pattern_shift():
  shift_P = np.array([-0.12, -0.06, -0.03, 0.0, 0.02, 0.05, 0.08, 0.12])
  probs, labels, pattern = _shifted_data(shift_P, 4000, seed=0)
  rect = rectifier.fit(probs, labels, pattern)
  assert (rect.count_PxT > 3000).all()
  err = np.abs(rect.tau_raw_PxT - shift_P[rect.patterns - 1, None])
  assert (err < 3 * rect.se_PxT).all(), (err, rect.se_PxT)
  assert (rect.lambda_T > 0).all()
  # Clearly shifted patterns are corrected by roughly the shift.
  big = np.abs(shift_P[rect.patterns - 1]) >= 0.05
  assert rect.corrected_PxT[big].all()
  np.testing.assert_allclose(rect.shift_PxT[big], np.broadcast_to(
      shift_P[rect.patterns - 1, None], rect.tau_PxT.shape)[big], atol=0.035)
  # Honest (cross-fitted) Brier improves, and so does an independent test set's.
  assert _brier(rect.oof_probs_NxT, labels) < _brier(probs, labels) - 1e-3
  test_probs, test_labels, test_pattern = _shifted_data(shift_P, 4000, seed=1)
  assert (_brier(rect.apply(test_probs, test_pattern), test_labels)
          < _brier(test_probs, test_labels) - 1e-3)


def test_without_a_shift_corrects_little():
  probs, labels, pattern = _shifted_data(np.zeros(8), 4000, seed=0)
  rect = rectifier.fit(probs, labels, pattern)
  assert _brier(rect.oof_probs_NxT, labels) < _brier(probs, labels) + 2e-4
  assert np.mean(np.abs(rect.apply(probs, pattern) - probs)) < 0.005
  assert np.abs(rect.shift_PxT).max() < 0.02


def test_unseen_pattern_is_unchanged():
  probs, labels, pattern = _mixed_data(seed=3)
  rect = rectifier.fit(probs, labels, pattern, kappa_grid=(0.0,), lambda_grid=(1.0,),
                       min_count=1)
  assert rect.corrected_PxT.all(axis=1).any()
  new_probs = np.array([[0.3, 0.5, 0.7], [0.2, 0.2, 0.2], [0.3, 0.5, 0.7]], np.float32)
  new_pattern = np.array([4, 1 << 29, 1])          # 4 and 2**29 never seen in fitting
  out = rect.apply(new_probs, new_pattern)
  np.testing.assert_array_equal(out[:2], new_probs[:2])
  row = np.searchsorted(rect.patterns, 1)
  expected = np.clip(new_probs[2] + rect.shift_PxT[row].astype(np.float32), 0, 1)
  np.testing.assert_array_equal(out[2], expected)
  assert out.dtype == np.float32
  # Small unseen ids take the dense lookup path, huge ones a binary search.
  np.testing.assert_array_equal(rect.apply(new_probs, [4, 6, 1]), out[[0, 1, 2]])
  assert 6 not in rect.patterns.tolist()


def test_to_dict_from_dict_round_trip_through_json():
  probs, labels, pattern = _mixed_data(seed=4)
  rect = rectifier.fit(probs, labels, pattern, task_names=("mort", "los7", "readm"),
                       z=0.5, min_count=10)
  d = rect.to_dict()
  text = json.dumps(d, allow_nan=False)              # strict JSON: NaN became null
  back = rectifier.Rectifier.from_dict(json.loads(text))
  assert back.table() == rect.table() == d["table"]
  assert back.task_names == rect.task_names and back.z == 0.5 and back.min_count == 10
  np.testing.assert_array_equal(back.cv_loss_TxIxJ, rect.cv_loss_TxIxJ)
  test_pattern = np.concatenate([pattern[:500], [4, 6, 1 << 20]])
  for dtype in (np.float32, np.float64):
    test_probs = np.random.default_rng(5).uniform(size=(test_pattern.size, 3)).astype(dtype)
    out = back.apply(test_probs, test_pattern)
    np.testing.assert_array_equal(out, rect.apply(test_probs, test_pattern))
    assert out.dtype == dtype
  row = next(r for r in d["table"] if r["corrected"])
  assert set(row) == {"pattern", "task", "n", "tau_raw", "se", "tau", "shift", "corrected"}
  assert d["kappa"].keys() == {"mort", "los7", "readm"}
  with pytest.raises(ValueError, match="lacks pattern"):
    rectifier.Rectifier.from_dict({**d, "table": d["table"][1:]})
  # The selection record survives; dicts written before the rule still load.
  assert d["settings"]["rule"] == "lcb" and d["settings"]["count_scale"] == "out_of_fold"
  assert back.selection_test() == rect.selection_test() == d["selection_test"]
  np.testing.assert_array_equal(back.cv_delta_TxIxJ, rect.cv_delta_TxIxJ)
  old = {k: v for k, v in d.items() if k not in ("cv_delta", "cv_se", "selection_test")}
  old["settings"] = {k: v for k, v in d["settings"].items()
                     if k not in ("rule", "rule_z", "count_scale")}
  legacy = rectifier.Rectifier.from_dict(old)
  assert legacy.rule == "min" and legacy.rule_z == 0.0 and legacy.cv_delta_TxIxJ is None
  np.testing.assert_array_equal(legacy.apply(probs, pattern), rect.apply(probs, pattern))


def test_one_dimensional_input_is_a_single_task():
  probs, labels, pattern = _mixed_data(seed=5)
  one = rectifier.fit(probs[:, 0], labels[:, 0], pattern)
  two = rectifier.fit(probs[:, :1], labels[:, :1], pattern)
  for field in ("tau_raw_PxT", "se_PxT", "tau_PxT", "kappa_T", "lambda_T",
                "oof_probs_NxT"):
    np.testing.assert_array_equal(getattr(one, field), getattr(two, field))
  assert one.oof_probs_NxT.shape == (len(pattern), 1)
  out = one.apply(probs[:, 0], pattern)
  assert out.shape == (len(pattern),)
  np.testing.assert_array_equal(out, two.apply(probs[:, :1], pattern)[:, 0])


def test_huge_pattern_ids_give_the_same_fit():
  probs, labels, pattern = _mixed_data(seed=6)
  small = rectifier.fit(probs, labels, pattern)
  huge = rectifier.fit(probs, labels, pattern + (1 << 40))   # np.unique path
  np.testing.assert_array_equal(huge.patterns, small.patterns + (1 << 40))
  np.testing.assert_array_equal(huge.tau_PxT, small.tau_PxT)
  np.testing.assert_array_equal(huge.oof_probs_NxT, small.oof_probs_NxT)
  np.testing.assert_array_equal(huge.apply(probs, pattern + (1 << 40)),
                                small.apply(probs, pattern))


def _bad(**overrides):
  probs = np.full((10, 2), 0.5)
  labels = np.tile([[0.0, 1.0]], (10, 1))
  kwargs = dict(probs_NxT=probs, labels_NxT=labels, pattern_N=np.ones(10, int))
  kwargs.update(overrides)
  return kwargs


@pytest.mark.parametrize("kwargs,match", [
    (_bad(probs_NxT=np.full((10, 2), np.nan)), "probs_NxT contains NaN"),
    (_bad(probs_NxT=np.full((10, 2), 1.5)), r"probs_NxT must lie in \[0, 1\].*1.5"),
    (_bad(probs_NxT=np.full((10, 2), -0.1)), r"probs_NxT.*-0.1"),
    (_bad(probs_NxT=np.full((10, 2, 1), 0.5)), r"probs_NxT must be 1-D.*\(10, 2, 1\)"),
    (_bad(probs_NxT=np.zeros((0, 2))), "probs_NxT has no rows"),
    (_bad(labels_NxT=np.full((10, 2), 2.0)), r"labels_NxT must be 0, 1 or NaN.*2\.0"),
    (_bad(labels_NxT=np.zeros((9, 2))), r"labels_NxT must have the shape.*\(9, 2\)"),
    (_bad(pattern_N=-np.ones(10, int)), "pattern_N must be non-negative.*-1"),
    (_bad(pattern_N=np.ones(9, int)), "pattern_N must have 10 entries.*got 9"),
    (_bad(pattern_N=np.ones((10, 1), int)), r"pattern_N must be 1-D \(N,\), got shape"),
    (_bad(pattern_N=np.full(10, 1.5)), r"pattern_N must hold integer.*1.5"),
    (_bad(n_folds=1), "n_folds must be an integer >= 2, got 1"),
    (_bad(n_folds=2.5), "n_folds must be an integer >= 2, got 2.5"),
    (_bad(kappa_grid=()), "kappa_grid must not be empty"),
    (_bad(kappa_grid=(0.0, -0.1)), "kappa_grid values.*-0.1"),
    (_bad(lambda_grid=(np.nan,)), "lambda_grid values.*nan"),
    (_bad(z=-1.0), "z must be finite and >= 0, got -1.0"),
    (_bad(min_count=-2), "min_count must be an integer >= 0, got -2"),
    (_bad(shrinkage=float("inf")), "shrinkage must be finite and >= 0, got inf"),
    (_bad(seed=-1), "seed must be an integer >= 0, got -1"),
    (_bad(selection="auc"), "selection must be one of.*'auc'"),
    (_bad(rule="best"), "rule must be one of.*'best'"),
    (_bad(rule_z=-1.0), "rule_z must be finite and >= 0, got -1.0"),
    (_bad(task_names=("a",)), "task_names must have 2 entries"),
    (_bad(task_names=("a", "a")), "task_names must be unique"),
])
def test_bad_fit_inputs_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    rectifier.fit(**kwargs)


def test_bad_apply_inputs_raise():
  rect = rectifier.fit(**_bad())
  with pytest.raises(ValueError, match="probs_NxT has 3 task column"):
    rect.apply(np.full((4, 3), 0.5), np.ones(4, int))
  with pytest.raises(ValueError, match="probs_NxT must lie in"):
    rect.apply(np.full((4, 2), 2.0), np.ones(4, int))
  with pytest.raises(ValueError, match="pattern_N must be non-negative.*-3"):
    rect.apply(np.full((4, 2), 0.5), np.array([1, 1, -3, 1]))
  with pytest.raises(ValueError, match="pattern_N must have 4 entries.*got 5"):
    rect.apply(np.full((4, 2), 0.5), np.ones(5, int))


# ----------------------------------------------------------------------------- selection


@pytest.mark.parametrize("rule,z", [("min", 0.0), ("one_se", 1.0), ("one_se", 0.0),
                                    ("lcb", 1.645), ("lcb", 0.5)])
def test_select_equals_a_naive_loop_over_the_grid(rule, z):
  rng = np.random.default_rng(7)
  kappa_grid, lambda_grid = (0.05, 0.0, 0.1, 0.02), (0.5, 0.0, 1.0, 0.25)
  t, n_i, n_j = 60, len(kappa_grid), len(lambda_grid)
  # Small values on a coarse lattice: many exact ties; λ = 0 scores exactly 0.
  delta = rng.integers(-3, 4, size=(t, n_i, n_j)) * 1e-3
  se = rng.integers(0, 4, size=(t, n_i, n_j)) * 1e-3
  delta[:, :, 1], se[:, :, 1] = 0.0, 0.0
  i_T, j_T, passed_T = rectifier_select.select(delta, se, np.array(kappa_grid),
                                               np.array(lambda_grid), rule=rule, z=z)
  got = list(zip(i_T.tolist(), j_T.tolist()))
  want = [_naive_rule(delta[k], se[k], kappa_grid, lambda_grid, rule, z) for k in range(t)]
  assert got == want
  if rule != "min" and z >= 1.0:   # the rule rejects some tasks and keeps others
    assert 0 < passed_T.sum() < t
    assert all(lambda_grid[j] == 0.0 for (_, j), ok in zip(got, passed_T) if not ok)


def test_row_differences_in_float64_survive_where_float32_sums_cancel():
  """10^6 rows, a tiny correction: float64 per-row differences match an exact sum;
  the difference of two float32 loss sums (the old computation) does not."""
  import math

  import jax
  import jax.numpy as jnp
  rng = np.random.default_rng(0)
  n = 1_000_000
  p = rng.uniform(0.05, 0.95, n).astype(np.float32)
  y = (rng.random(n) < p).astype(np.float64)
  shift = 2e-4
  q = np.clip(p.astype(np.float64) + shift, 0.0, 1.0)
  exact = math.fsum(((y - q) ** 2 - (y - p.astype(np.float64)) ** 2).tolist())
  sums, sq = rectifier_select.cell_delta_sums(
      p[:, None], y[:, None], np.zeros(n, np.int32), np.array([[shift]]),
      np.array([0.0, 1.0]), 1, "brier")
  assert sums[0, 0, 0] == 0.0 and sq[0, 0, 0] == 0.0     # λ = 0: exactly no change
  err64 = abs(sums[0, 0, 1] - exact)
  zero = jnp.zeros(n, jnp.int32)
  y32, q32 = jnp.asarray(y, jnp.float32), jnp.asarray(q, jnp.float32)
  loss32 = lambda a: float(jax.ops.segment_sum(jnp.square(y32 - a), zero, num_segments=1)[0])
  err32 = abs((loss32(q32) - loss32(jnp.asarray(p))) - exact)
  assert err64 < 1e-9 * max(abs(exact), 1.0), (err64, exact)
  assert err32 > 1e-3 * abs(exact) and err32 > 1e4 * err64, (err32, err64, exact)


def test_count_scale_is_out_of_fold_in_selection_and_final_table():
  """A pattern whose out-of-fold count is below min_count in some fold is never
  corrected in the final table, whatever its full count."""
  rng = np.random.default_rng(3)
  sizes = {1: 2000, 2: 22, 3: 24, 4: 25, 5: 26, 6: 30, 7: 19}   # 5 folds, min_count 20
  pattern = rng.permutation(np.repeat(list(sizes), list(sizes.values())))
  probs = rng.uniform(0.2, 0.6, pattern.size)
  # Every small pattern has a large real shift: all of them would pass |τ| > κ.
  labels = (rng.random(pattern.size) < np.where(pattern == 1, probs, probs + 0.35))
  labels = labels.astype(np.float64)
  labels[(pattern == 6) & (rng.random(pattern.size) < 0.3)] = np.nan
  rect = rectifier.fit(probs, labels, pattern, min_count=20, rule="min", seed=1)
  assert rect.lambda_T[0] > 0
  for i, pid in enumerate(rect.patterns.tolist()):
    if pid == 1:
      continue                                  # no shift: gated out by κ
    rows = (pattern == pid) & ~np.isnan(labels)
    oof_counts = [int((rows & (rect.folds_N != k)).sum()) for k in range(5)]
    assert rect.count_PxT[i, 0] == rows.sum()
    assert rect.corrected_PxT[i, 0] == (min(oof_counts) >= 20), (pid, oof_counts)
    assert (rect.tau_PxT[i, 0] == 0.0) == (min(oof_counts) < 20)
  # The cases that the old full-count scale got wrong exist here: n >= 20 but an
  # out-of-fold count below 20 (never corrected), and n = 25 (always).
  row = {int(pid): i for i, pid in enumerate(rect.patterns.tolist())}
  assert not rect.corrected_PxT[row[2], 0] and not rect.corrected_PxT[row[3], 0]
  assert rect.corrected_PxT[row[4], 0] and rect.corrected_PxT[row[5], 0]
  # Shrinkage on the mean out-of-fold count (K − 1) / K · n = 0.8 · 26.
  tau_raw, g = rect.tau_raw_PxT[row[5], 0], rect.global_mean_T[0]
  assert rect.tau_PxT[row[5], 0] == pytest.approx((20.8 * tau_raw + 20 * g) / 40.8, rel=1e-9)


# ----------------------------------------------------------------------------- bootstrap


def _naive_auroc(y, p):
  pos, neg = p[y == 1], p[y == 0]
  diff = pos[:, None] - neg[None, :]
  return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


def test_tau_intervals_match_a_naive_resampling_loop():
  probs, labels, pattern = _mixed_data(seed=8)
  keep = np.isin(pattern, [3, 5, 7, 12, 64, 2])    # small: the naive loop stays fast
  probs, labels, pattern = probs[keep].astype(float), labels[keep].astype(float), pattern[keep]
  out = rectifier_bootstrap.tau_intervals(probs, labels, pattern, n_boot=200, seed=5,
                                          alpha=0.1, task_names=("a", "b", "c"))
  json.dumps(out, allow_nan=False)
  rng = np.random.default_rng(5)
  for pid in sorted(set(pattern.tolist())):
    rows = np.flatnonzero(pattern == pid)
    idx = [rows[rng.integers(0, rows.size, size=rows.size)] for _ in range(200)]
    for t, task in enumerate(("a", "b", "c")):
      entry = next(e for e in out["tasks"][task] if e["pattern"] == pid)
      r = labels[:, t] - probs[:, t]
      if np.isnan(r[rows]).all():                # pattern 7 has no label for task c
        assert entry["n"] == 0 and entry["tau"] is None and entry["lo"] is None
        continue
      means = np.array([np.nanmean(r[ix]) if (~np.isnan(r[ix])).any() else np.nan
                        for ix in idx])
      lo, hi = np.percentile(means[~np.isnan(means)], [5, 95])
      assert entry["tau"] == pytest.approx(np.nanmean(r[rows]), abs=1e-12)
      assert (entry["lo"], entry["hi"]) == pytest.approx((lo, hi), abs=1e-12)
      assert entry["lo"] <= entry["tau"] <= entry["hi"]


def test_paired_delta_intervals_match_a_naive_resampling_loop():
  rng = np.random.default_rng(9)
  n = 300
  pattern = rng.integers(0, 3, n)
  raw = rng.uniform(0.05, 0.9, size=(n, 2))
  labels = (rng.random((n, 2)) < np.clip(raw + 0.1 * (pattern[:, None] == 1), 0, 1)) * 1.0
  labels[rng.random((n, 2)) < 0.1] = np.nan
  rect = np.clip(raw + 0.08 * (pattern[:, None] == 1), 0, 1)
  out = rectifier_bootstrap.paired_delta_intervals(labels, raw, rect, pattern, n_boot=150,
                                                   seed=4, min_pattern_count=50)
  json.dumps(out, allow_nan=False)
  metric = {"auroc": _naive_auroc, "brier": lambda y, p: np.mean((p - y) ** 2)}
  slices = [(out["overall"][f"task{t}"], np.ones(n, bool), t) for t in range(2)]
  slices += [(e, pattern == e["pattern"], t) for t in range(2)
             for e in out["per_pattern"][f"task{t}"]]
  assert len(slices) > 2
  for entry, rows, t in slices:
    known = rows & ~np.isnan(labels[:, t])
    y, p, q = labels[known, t], raw[known, t], rect[known, t]
    rs = np.random.default_rng(4)
    resamples = [rs.integers(0, y.size, size=y.size) for _ in range(150)]
    for m, f in metric.items():
      deltas = [f(y[ix], q[ix]) - f(y[ix], p[ix]) for ix in resamples]
      assert entry[m]["delta"] == pytest.approx(f(y, q) - f(y, p), abs=1e-12)
      assert (entry[m]["lo"], entry[m]["hi"]) == pytest.approx(
          tuple(np.percentile(deltas, [2.5, 97.5])), abs=1e-12)
      assert entry[m]["lo"] <= entry[m]["delta"] <= entry[m]["hi"]
  lines = rectifier_bootstrap.report_lines(
      rectifier_bootstrap.tau_intervals(raw, labels, pattern, n_boot=50), out)
  assert any("pattern 1" in line and "brier" in line for line in lines)


# ----------------------------------------------------------------------------- simulation


def _sim(rng, n, shift):
  """Calibrated model; pattern 1 shifted by +shift, pattern 2 by −shift (8 patterns)."""
  p = 1.0 / (1.0 + np.exp(-(rng.standard_normal(n) - 1.0)))
  pattern = rng.integers(0, 8, n)
  s = np.where(pattern == 1, shift, np.where(pattern == 2, -shift, 0.0))
  return p, (rng.random(n) < np.clip(p + s, 0, 1)).astype(np.float64), pattern


def test_small_null_and_shift_simulation():
  """The direction of experiments/studies/rectifier_null.py in a few seconds: without a pattern
  effect the default rule corrects far less often than the plain minimum and does not
  hurt test AUROC on average; with a real ±0.1 shift it corrects both patterns."""
  from sklearn.metrics import roc_auc_score
  rng = np.random.default_rng(0)
  chosen, d_auc = {"lcb": [], "min": []}, {"lcb": [], "min": []}
  for _ in range(30):
    (p, y, pat), (pt, yt, patt) = _sim(rng, 1500, 0.0), _sim(rng, 5000, 0.0)
    for rule, lam_pos in chosen.items():
      rect = rectifier.fit(p, y, pat, rule=rule)
      lam_pos.append(rect.lambda_T[0] > 0)
      d_auc[rule].append(roc_auc_score(yt, rect.apply(pt, patt)) - roc_auc_score(yt, pt))
  assert np.mean(chosen["lcb"]) <= 0.2 and np.mean(chosen["min"]) >= 0.3
  assert np.mean(d_auc["lcb"]) > np.mean(d_auc["min"]) and np.mean(d_auc["lcb"]) > -2e-4
  both, d_brier = [], []
  for _ in range(15):
    (p, y, pat), (pt, yt, patt) = _sim(rng, 3000, 0.1), _sim(rng, 5000, 0.1)
    rect = rectifier.fit(p, y, pat)
    row = {int(q): i for i, q in enumerate(rect.patterns.tolist())}
    both.append(rect.corrected_PxT[row[1], 0] and rect.corrected_PxT[row[2], 0])
    d_brier.append(_brier(rect.apply(pt, patt), yt) - _brier(pt, yt))
  assert np.mean(both) >= 0.8 and np.mean(d_brier) < 0
