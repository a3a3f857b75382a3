"""The rectifier's AUROC guard: a correction that ranks the fitting rows worse is dropped."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from crl_mmnar_jax import rectifier
from crl_mmnar_jax.rectifier import select


def _reordering_world(seed: int, n: int = 3000):
  """Pattern 1 holds 20% sure negatives predicted 0.8 and 80% patients of risk 0.45
  predicted exactly; pattern 0 is predicted exactly (risk 0.05 to 0.5). Pattern 1's
  mean residual is negative, so a calibrating shift pushes its 0.45-risk patients
  below pattern 0's lower-risk ones: better Brier, worse ranking."""
  rng = np.random.default_rng(seed)
  pattern = rng.integers(0, 2, n)
  zero = rng.random(n) < 0.2
  truth = np.where(pattern == 1, np.where(zero, 0.0, 0.45), rng.uniform(0.05, 0.5, n))
  probs = np.where(pattern == 1, np.where(zero, 0.8, 0.45), truth)
  labels = (rng.random(n) < truth).astype(float)
  return probs, labels, pattern


def test_the_guard_compares_aurocs_as_sklearn_does_with_ties_and_unknown_labels():
  rng = np.random.default_rng(0)
  for _ in range(20):
    y = (rng.random((200, 2)) < 0.3).astype(float)
    y[rng.random(200) < 0.2, 1] = np.nan
    p = np.round(rng.random((200, 2)), 1)                  # many ties
    q = np.round(np.clip(p + rng.normal(0, 0.1, p.shape), 0, 1), 1)
    want = []
    for t in range(2):
      k = ~np.isnan(y[:, t])
      want.append(not roc_auc_score(y[k, t], q[k, t]) < roc_auc_score(y[k, t], p[k, t]))
    np.testing.assert_array_equal(select.auroc_kept(p, q, y), want)
  one_class = np.zeros((5, 1))
  assert select.auroc_kept(np.arange(5.0)[:, None], np.zeros((5, 1)), one_class).all()


def test_a_correction_that_reorders_patients_is_dropped():
  probs, labels, pattern = _reordering_world(0)
  off = rectifier.fit(probs, labels, pattern, auroc_guard=False)
  on = rectifier.fit(probs, labels, pattern)
  assert off.lambda_T[0] > 0                       # the Brier rule alone corrects ...
  # ... and that correction ranks fresh patients of the same world worse:
  t_probs, t_labels, t_pattern = _reordering_world(1, 20000)
  raw = roc_auc_score(t_labels, t_probs)
  assert roc_auc_score(t_labels, off.apply(t_probs, t_pattern)) < raw - 0.01
  assert roc_auc_score(labels, off.oof_probs_NxT[:, 0]) < roc_auc_score(labels, probs)
  # The guard drops it: no correction, the fitting rows' predictions unchanged.
  assert on.lambda_T[0] == 0 and bool(on.guarded_T[0]) and not on.corrected_PxT.any()
  np.testing.assert_array_equal(on.oof_probs_NxT[:, 0], probs)
  np.testing.assert_array_equal(on.apply(t_probs, t_pattern), t_probs)
  test = on.to_dict()["selection_test"]["task0"]
  assert test["passed"] and test["dropped_by_auroc_guard"]
  again = rectifier.Rectifier.from_dict(on.to_dict())
  assert bool(again.guarded_T[0]) and again.auroc_guard


def test_a_real_pattern_shift_is_still_corrected():
  """A model blind to a ±0.1 pattern effect: correcting it improves the ranking, so
  the guard keeps it (and it equals the unguarded fit)."""
  rng = np.random.default_rng(3)
  n = 3000
  pattern = rng.integers(0, 4, n)
  probs = 1 / (1 + np.exp(-(-1 + rng.normal(size=n))))
  truth = np.clip(probs + np.select([pattern == 1, pattern == 2], [0.1, -0.1], 0.0), 0, 1)
  labels = (rng.random(n) < truth).astype(float)
  on = rectifier.fit(probs, labels, pattern)
  off = rectifier.fit(probs, labels, pattern, auroc_guard=False)
  assert on.lambda_T[0] > 0 and not on.guarded_T[0]
  np.testing.assert_array_equal(on.tau_PxT, off.tau_PxT)
  assert on.corrected_PxT[[1, 2], 0].all()
