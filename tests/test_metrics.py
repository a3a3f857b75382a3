"""Tests for crl_mmnar_jax.metrics against independent computations.

Oracles: scikit-learn (test-only dependency), naive Python loops, np.repeat-ed data
for count weights, and a known-distribution coverage check for the bootstrap.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn import calibration as sk_calibration
from sklearn import metrics as skm

from crl_mmnar_jax import metrics

TOL = 1e-10
METRICS = ("auroc", "auprc", "brier", "ece")
FNS = {"auroc": metrics.auroc, "auprc": metrics.auprc, "brier": metrics.brier,
       "ece": metrics.ece}


def _tied_data(seed: int, n: int, decimals: int = 1, prevalence: float = 0.3):
  """Labels correlated with heavily tied probabilities (rounded to `decimals`)."""
  rng = np.random.default_rng(seed)
  y_N = (rng.random(n) < prevalence).astype(np.float64)
  p_N = np.clip(0.35 * y_N + 0.65 * rng.random(n), 0.0, 1.0).round(decimals)
  return y_N, p_N


def _naive_ece(y_N, p_N, w_N=None, n_bins=10):
  """ECE by an explicit loop over bins [e_k, e_k+1), 1.0 in the last bin."""
  w_N = np.ones_like(p_N) if w_N is None else w_N
  edges = np.linspace(0.0, 1.0, n_bins + 1)
  total, ece = w_N.sum(), 0.0
  for k in range(n_bins):
    upper = (p_N <= edges[k + 1]) if k == n_bins - 1 else (p_N < edges[k + 1])
    in_bin = (p_N >= edges[k]) & upper
    wk = w_N[in_bin].sum()
    if wk > 0:
      ece += wk / total * abs(np.sum(w_N[in_bin] * y_N[in_bin]) / wk
                              - np.sum(w_N[in_bin] * p_N[in_bin]) / wk)
  return ece


# ----------------------------------------------------------------------------------
# Point metrics against sklearn and closed forms.


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_with_ties(seed):
  n = [40, 200, 1000][seed % 3]
  y, p = _tied_data(seed, n, decimals=2 if n >= 1000 else 1)
  assert np.unique(p).size < n / 2  # many ties
  assert metrics.auroc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=TOL)
  assert metrics.auprc(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=TOL)
  assert metrics.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=TOL)


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_with_weights_and_ties(seed):
  y, p = _tied_data(100 + seed, 300)
  rng = np.random.default_rng(seed)
  w = rng.random(300) * 3.0
  w[rng.random(300) < 0.2] = 0.0  # zero weights must not create thresholds
  assert metrics.auroc(y, p, w) == pytest.approx(
      skm.roc_auc_score(y, p, sample_weight=w), abs=TOL)
  assert metrics.auprc(y, p, w) == pytest.approx(
      skm.average_precision_score(y, p, sample_weight=w), abs=TOL)
  assert metrics.brier(y, p, w) == pytest.approx(
      skm.brier_score_loss(y, p, sample_weight=w), abs=TOL)


def test_rank_metrics_accept_any_finite_scores():
  y, p = _tied_data(7, 300)
  logits = np.log(p + 1e-3) - np.log1p(1e-3 - p)  # outside [0, 1], same order
  assert metrics.auroc(y, logits) == pytest.approx(skm.roc_auc_score(y, logits), abs=TOL)
  assert metrics.auprc(y, logits) == pytest.approx(
      skm.average_precision_score(y, logits), abs=TOL)


def test_closed_form_small_cases():
  # Perfect, reversed, all tied.
  y = np.array([0, 0, 1, 1])
  assert metrics.auroc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
  assert metrics.auroc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
  assert metrics.auroc(y, [0.5] * 4) == 0.5
  assert metrics.auprc(y, [0.5] * 4) == 0.5  # one threshold: precision = prevalence
  # One positive tied with one of two negatives above the other: (1 + 0.5) / 2.
  assert metrics.auroc([1, 0, 0], [0.6, 0.6, 0.2]) == 0.75
  assert metrics.brier([1, 0], [1.0, 0.5]) == 0.125


@pytest.mark.parametrize("seed", range(3))
def test_batched_weights_equal_separate_calls(seed):
  y, p = _tied_data(200 + seed, 150)
  rng = np.random.default_rng(seed)
  w_BxN = rng.random((6, 150)) * (rng.random((6, 150)) < 0.7)
  w_BxN[1] = 0.0                    # no weight at all: every metric undefined
  w_BxN[2] = np.where(y == 1, 0.0, 1.0)  # only negatives: auroc/auprc undefined
  for name, fn in FNS.items():
    batched_B = fn(y, p, w_BxN)
    assert isinstance(batched_B, np.ndarray) and batched_B.shape == (6,)
    separate_B = np.array([fn(y, p, w_BxN[b]) for b in range(6)])
    np.testing.assert_allclose(batched_B, separate_B, rtol=0, atol=TOL, equal_nan=True)
    assert np.isnan(batched_B[1])
  assert np.isnan(metrics.auroc(y, p, w_BxN)[2]) and np.isnan(metrics.auprc(y, p, w_BxN)[2])
  assert np.isfinite(metrics.brier(y, p, w_BxN)[2])


@pytest.mark.parametrize("seed", range(4))
def test_count_weights_equal_repeated_rows(seed):
  """The bootstrap's closed form: integer counts as weights == the repeated data."""
  y, p = _tied_data(300 + seed, 120)
  rng = np.random.default_rng(seed)
  counts_BxN = rng.multinomial(120, np.full(120, 1 / 120), size=4)
  for name, fn in FNS.items():
    batched_B = fn(y, p, counts_BxN)
    for b in range(4):
      rep_y, rep_p = np.repeat(y, counts_BxN[b]), np.repeat(p, counts_BxN[b])
      assert batched_B[b] == pytest.approx(fn(rep_y, rep_p), abs=TOL), name
      assert fn(y, p, counts_BxN[b]) == pytest.approx(fn(rep_y, rep_p), abs=TOL), name


@pytest.mark.parametrize("n_bins", [1, 7, 10, 15])
def test_ece_matches_naive_loop(n_bins):
  y, p = _tied_data(400 + n_bins, 500, decimals=2)
  p[:5] = [0.0, 1.0, 0.1, 0.5, 0.9]  # exact edges and both ends
  assert metrics.ece(y, p, n_bins=n_bins) == pytest.approx(
      _naive_ece(y, p, n_bins=n_bins), abs=TOL)
  w = np.random.default_rng(n_bins).random(500)
  assert metrics.ece(y, p, w, n_bins=n_bins) == pytest.approx(
      _naive_ece(y, p, w, n_bins=n_bins), abs=TOL)


def test_ece_closed_forms():
  # Perfectly calibrated within each bin -> 0; constant prediction -> |prevalence - c|.
  assert metrics.ece([0, 1, 0, 1], [0.5, 0.5, 0.55, 0.55]) == pytest.approx(0.025)
  assert metrics.ece([0, 1, 1, 1], [0.75] * 4) == 0.0
  assert metrics.ece([1, 1, 1, 0], [1.0, 1.0, 1.0, 0.0]) == 0.0  # 1.0 in the last bin


def test_calibration_curve_matches_naive_and_sklearn():
  y, p = _tied_data(500, 800, decimals=3)
  p = p[(np.abs(p * 10 - np.round(p * 10)) > 1e-9)]  # keep off the bin edges for sklearn
  y = y[:p.size]
  mean_pred, frac_pos, count = metrics.calibration_curve(y, p, n_bins=10)
  frac_sk, pred_sk = sk_calibration.calibration_curve(y, p, n_bins=10)
  np.testing.assert_allclose(mean_pred, pred_sk, atol=TOL)
  np.testing.assert_allclose(frac_pos, frac_sk, atol=TOL)
  assert count.sum() == p.size and count.dtype.kind == "i"
  # And the ECE is the count-weighted gap of the curve.
  assert metrics.ece(y, p) == pytest.approx(
      np.sum(count / count.sum() * np.abs(frac_pos - mean_pred)), abs=TOL)
  # Empty bins are left out.
  mp, fp, c = metrics.calibration_curve([0, 1, 1], [0.05, 0.95, 1.0], n_bins=10)
  np.testing.assert_allclose(mp, [0.05, 0.975])
  np.testing.assert_allclose(fp, [0.0, 1.0])
  np.testing.assert_array_equal(c, [1, 2])


def test_roc_curve_matches_sklearn():
  y, p = _tied_data(600, 300)
  fpr, tpr = metrics.roc_curve(y, p)
  fpr_sk, tpr_sk, _ = skm.roc_curve(y, p, drop_intermediate=False)
  np.testing.assert_allclose(fpr, fpr_sk, atol=TOL)
  np.testing.assert_allclose(tpr, tpr_sk, atol=TOL)
  assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.auroc(y, p), abs=TOL)
  fpr1, tpr1 = metrics.roc_curve([0, 0, 0], [0.1, 0.2, 0.3])  # one class: no raise
  assert np.all(np.isnan(tpr1)) and fpr1[-1] == 1.0


# ----------------------------------------------------------------------------------
# Undefined slices and bad input.


def test_single_class_and_empty_slices_give_nan_and_note():
  p = np.linspace(0.05, 0.95, 12)
  neg = metrics.binary_metrics(np.zeros(12), p)
  assert neg["n"] == 12 and neg["n_pos"] == 0
  assert math.isnan(neg["auroc"]) and math.isnan(neg["auprc"])
  assert neg["brier"] == pytest.approx(np.mean(p ** 2), abs=TOL)
  assert "auroc undefined: only one class (n_pos=0 of n=12)" in neg["note"]
  assert "auprc undefined" in neg["note"]

  pos = metrics.binary_metrics(np.ones(12), p)
  assert math.isnan(pos["auroc"]) and pos["auprc"] == 1.0
  assert "only one class (n_pos=12 of n=12)" in pos["note"]

  for y_empty, p_empty in [(np.full(4, np.nan), np.full(4, 0.5)), ([], [])]:
    e = metrics.binary_metrics(y_empty, p_empty)
    assert e["n"] == 0 and e["n_pos"] == 0 and "empty" in e["note"]
    assert all(math.isnan(e[m]) for m in METRICS)

  ok = metrics.binary_metrics([0, 1, np.nan, 1], [0.2, 0.7, 0.1, 0.9])
  assert "note" not in ok and ok["n"] == 3 and ok["n_pos"] == 2 and ok["auroc"] == 1.0
  for name, fn in FNS.items():  # low level: NaN, not an exception
    assert math.isnan(fn([], [])), name
  assert math.isnan(metrics.auroc([1, 1], [0.2, 0.3]))
  assert math.isnan(metrics.auprc([0, 0], [0.2, 0.3]))
  assert math.isnan(metrics.brier([0, 1], [0.2, 0.3], w=[0.0, 0.0]))


def test_binary_metrics_plain_python_types():
  y, p = _tied_data(700, 100)
  m = metrics.binary_metrics(y, p)
  assert type(m["n"]) is int and type(m["n_pos"]) is int
  assert all(type(m[k]) is float for k in METRICS)
  json.dumps(m)
  assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p), abs=TOL)
  assert m["ece"] == pytest.approx(_naive_ece(y, p), abs=TOL)


_M = metrics
_BAD_INPUT = [
    (lambda: _M.auroc([0, 2, 1], [0.1, 0.2, 0.3]),
     r"y must contain only 0 and 1.*\[2\.0\]"),
    (lambda: _M.auroc([0, np.nan, 1], [0.1, 0.2, 0.3]), r"y must contain only 0 and 1"),
    (lambda: _M.binary_metrics([0, -1, 1], [0.1, 0.2, 0.3]),
     r"y must contain only 0, 1 or NaN.*-1"),
    (lambda: _M.auroc([0, 1, 1], [0.1, 0.2]), r"p must have the same length as y \(3\)"),
    (lambda: _M.binary_metrics([0, 1], [0.1, 0.2, 0.3]), r"same length as y \(2\)"),
    (lambda: _M.auroc([0, 1], [0.1, np.nan]), r"p must be finite scores.*nan"),
    (lambda: _M.binary_metrics([0, 1], [0.1, np.nan]),
     r"p must be finite probabilities in \[0, 1\].*nan"),
    (lambda: _M.brier([0, 1], [0.1, 1.5]), r"p must be finite probabilities in \[0, 1\].*1\.5"),
    (lambda: _M.ece([0, 1], [-0.1, 0.5]), r"p must be finite probabilities.*-0\.1"),
    (lambda: _M.auroc([[0, 1]], [[0.1, 0.2]]), r"y must be 1-D, got shape \(1, 2\)"),
    (lambda: _M.auroc([0, 1], [0.1, 0.2], w=[1.0, -1.0]),
     r"w must be finite and non-negative.*-1\.0"),
    (lambda: _M.auroc([0, 1], [0.1, 0.2], w=np.ones((2, 3))),
     r"w must have shape .*got shape \(2, 3\)"),
    (lambda: _M.ece([0, 1], [0.1, 0.2], n_bins=0), r"n_bins must be a positive integer, got 0"),
    (lambda: _M.bootstrap_ci([0, 1], [0.1, 0.2], metrics=("auc",)), r"metrics must be .*auc"),
    (lambda: _M.bootstrap_ci([0, 1], [0.1, 0.2], n_boot=0),
     r"n_boot must be a positive integer, got 0"),
    (lambda: _M.bootstrap_ci([0, 1], [0.1, 0.2], alpha=1.5),
     r"alpha must be in \(0, 1\), got 1\.5"),
    (lambda: _M.per_pattern_metrics([0, 1], [0.1, 0.2], [1.0, 2.0]),
     r"pattern must hold integer .*float64"),
    (lambda: _M.per_pattern_metrics([0, 1], [0.1, 0.2], [1, 2, 3]),
     r"pattern must have shape \(N,\)=\(2,\)"),
    (lambda: _M.task_metrics(np.zeros((3, 2)), np.zeros((3, 3)), ["a", "b"]),
     r"probs_NxT must have the shape"),
    (lambda: _M.task_metrics(np.zeros((3, 2)), np.zeros((3, 2)), ["a"]),
     r"task_names has 1 names for 2"),
    (lambda: _M.task_metrics(np.zeros((3, 1)), np.zeros((3, 1)), ["mean"]), r"not 'mean'"),
    (lambda: _M.task_metrics(np.full((2, 1), 3.0), np.zeros((2, 1)), ["mort"]),
     r"task 'mort' \(column 0\): y must"),
]


@pytest.mark.parametrize("call, match", _BAD_INPUT)
def test_bad_input_raises_value_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# ----------------------------------------------------------------------------------
# Bootstrap.


def _binormal(seed: int, n: int, d: float = 1.0, prevalence: float = 0.3):
  """Scores N(0,1) for negatives, N(d,1) for positives: true AUROC = Phi(d / sqrt 2)."""
  rng = np.random.default_rng(seed)
  y_N = (rng.random(n) < prevalence).astype(np.float64)
  s_N = rng.normal(size=n) + d * y_N
  return y_N, 1.0 / (1.0 + np.exp(-s_N))


def test_bootstrap_samples_follow_documented_protocol():
  """Each resample equals sklearn on the rows drawn by the documented protocol."""
  y, p = _tied_data(800, 30, prevalence=0.15)
  y[[3, 11]] = np.nan  # dropped first
  known = ~np.isnan(y)
  yk, pk = y[known], p[known]
  k, n_boot = yk.size, 60
  vals = metrics.bootstrap_samples(y, p, n_boot=n_boot, seed=5, chunk=7)
  rng = np.random.default_rng(5)
  n_undefined = 0
  for j in range(n_boot):
    idx = rng.integers(0, k, size=k)
    yj, pj = yk[idx], pk[idx]
    if 0 < yj.sum() < k:
      assert vals["auroc"][j] == pytest.approx(skm.roc_auc_score(yj, pj), abs=TOL)
      assert vals["auprc"][j] == pytest.approx(skm.average_precision_score(yj, pj), abs=TOL)
    else:
      n_undefined += 1
      assert np.isnan(vals["auroc"][j])
    assert vals["brier"][j] == pytest.approx(skm.brier_score_loss(yj, pj), abs=TOL)
    assert vals["ece"][j] == pytest.approx(_naive_ece(yj, pj), abs=TOL)
  assert n_undefined > 0  # the data were chosen so that some resamples have one class
  ci = metrics.bootstrap_ci(y, p, n_boot=n_boot, seed=5, alpha=0.1)
  a = vals["auroc"]
  np.testing.assert_allclose(ci["auroc"], np.percentile(a[np.isfinite(a)], [5, 95]), atol=TOL)


def test_bootstrap_ci_contains_estimate_narrows_and_is_deterministic():
  y, p = _binormal(0, 400)
  y_big, p_big = _binormal(1, 4000)
  ci = metrics.bootstrap_ci(y, p, n_boot=400, seed=3)
  ci_big = metrics.bootstrap_ci(y_big, p_big, n_boot=400, seed=3)
  point = metrics.binary_metrics(y, p)
  for m in METRICS:
    lo, hi = ci[m]
    assert lo < point[m] < hi, (m, ci[m], point[m])
    assert ci_big[m][1] - ci_big[m][0] < 0.6 * (hi - lo), m  # ~ 1/sqrt(10) expected
  assert metrics.bootstrap_ci(y, p, n_boot=400, seed=3) == ci
  assert metrics.bootstrap_ci(y, p, n_boot=400, seed=3, chunk=13) == ci
  assert metrics.bootstrap_ci(y, p, n_boot=400, seed=4) != ci
  # Prefix property: the first resamples of a larger run are the same resamples.
  a = metrics.bootstrap_samples(y, p, n_boot=50, seed=3, metrics=("auroc",))["auroc"]
  b = metrics.bootstrap_samples(y, p, n_boot=80, seed=3, metrics=("auroc",))["auroc"]
  np.testing.assert_array_equal(a, b[:50])


def test_bootstrap_ci_undefined_metrics():
  ci = metrics.bootstrap_ci(np.zeros(50), np.linspace(0, 1, 50), n_boot=100)
  assert all(math.isnan(v) for v in ci["auroc"] + ci["auprc"])
  assert all(math.isfinite(v) for v in ci["brier"] + ci["ece"])
  empty = metrics.bootstrap_ci([np.nan, np.nan], [0.2, 0.3], n_boot=10)
  assert all(math.isnan(v) for m in METRICS for v in empty[m])
  # One positive in 40: ~36% of resamples draw no positive.
  y = np.zeros(40)
  y[7] = 1
  p = np.linspace(0.01, 0.99, 40)
  assert math.isfinite(metrics.bootstrap_ci(y, p, n_boot=200)["auroc"][0])
  assert math.isnan(metrics.bootstrap_ci(y, p, n_boot=200, min_defined=0.9)["auroc"][0])


def test_bootstrap_auroc_coverage():
  """The 95% AUROC interval covers the true AUROC in most of 100 repetitions."""
  d = 1.0
  true_auc = norm.cdf(d / np.sqrt(2.0))
  covered = 0
  for rep in range(100):
    y, p = _binormal(1000 + rep, 250, d=d)
    lo, hi = metrics.bootstrap_ci(y, p, n_boot=300, seed=rep, metrics=("auroc",))["auroc"]
    covered += lo <= true_auc <= hi
  assert 85 <= covered <= 99, covered  # nominal 95; too wide would cover all 100


def test_bootstrap_matches_naive_sklearn_bootstrap():
  """Same interval (up to Monte Carlo error) as a naive loop with another generator."""
  y, p = _binormal(2, 400)
  ci = metrics.bootstrap_ci(y, p, n_boot=2000, seed=0, metrics=("auroc", "brier"))
  rng = np.random.default_rng(12345)
  auc, bs = [], []
  for _ in range(600):
    idx = rng.integers(0, 400, size=400)
    auc.append(skm.roc_auc_score(y[idx], p[idx]))
    bs.append(skm.brier_score_loss(y[idx], p[idx]))
  np.testing.assert_allclose(ci["auroc"], np.percentile(auc, [2.5, 97.5]), atol=0.012)
  np.testing.assert_allclose(ci["brier"], np.percentile(bs, [2.5, 97.5]), atol=0.006)


# ----------------------------------------------------------------------------------
# Per-pattern and per-task views.


def test_per_pattern_metrics_agree_with_manual_subsets():
  rng = np.random.default_rng(900)
  n = 600
  pattern = rng.choice([1, 3, 5, 7], size=n, p=[0.1, 0.2, 0.3, 0.4]).astype(np.int32)
  pattern[:6] = 9                       # a small pattern
  pattern[6:9] = 11                     # a pattern whose labels are all unknown
  y, p = _tied_data(901, n)
  y[rng.random(n) < 0.1] = np.nan
  y[6:9] = np.nan
  rows = metrics.per_pattern_metrics(y, p, pattern, min_count=10)
  assert sorted(r["pattern"] for r in rows) == [1, 3, 5, 7, 9, 11]
  ns = [r["n"] for r in rows]
  assert ns == sorted(ns, reverse=True)
  for r in rows:
    sel = (pattern == r["pattern"]) & ~np.isnan(y)
    assert r["n"] == int(sel.sum()) and r["n_pos"] == int(y[sel].sum())
    if r["pattern"] in (9, 11):
      assert all(math.isnan(r[m]) for m in METRICS) and "note" in r
      continue
    expected = metrics.binary_metrics(y[pattern == r["pattern"]], p[pattern == r["pattern"]])
    assert r == {"pattern": r["pattern"], **expected}
    assert r["auroc"] == pytest.approx(skm.roc_auc_score(y[sel], p[sel]), abs=TOL)
  assert "min_count=10" in next(r for r in rows if r["pattern"] == 9)["note"]
  empty = next(r for r in rows if r["pattern"] == 11)
  assert empty["n"] == 0 and "empty slice" in empty["note"]


def test_task_metrics_per_column_and_mean():
  rng = np.random.default_rng(1000)
  n = 300
  y0, p0 = _tied_data(1001, n)
  y1, p1 = _tied_data(1002, n, prevalence=0.5)
  y1[rng.random(n) < 0.3] = np.nan      # task-specific unknown labels
  y2 = np.zeros(n)                      # single class: auroc/auprc undefined
  labels = np.stack([y0, y1, y2], axis=1)
  probs = np.stack([p0, p1, rng.random(n)], axis=1)
  out = metrics.task_metrics(labels, probs, ["mort", "los", "readm"])
  assert list(out) == ["mort", "los", "readm", "mean"]
  for t, name in enumerate(["mort", "los", "readm"]):
    known = ~np.isnan(labels[:, t])
    assert out[name]["n"] == int(known.sum())
    assert out[name]["brier"] == pytest.approx(
        skm.brier_score_loss(labels[known, t], probs[known, t]), abs=TOL)
  assert out["los"]["auroc"] == pytest.approx(
      skm.roc_auc_score(y1[~np.isnan(y1)], p1[~np.isnan(y1)]), abs=TOL)
  mean = out["mean"]
  assert mean["auroc"] == pytest.approx((out["mort"]["auroc"] + out["los"]["auroc"]) / 2)
  assert mean["n_tasks_auroc"] == 2 and mean["n_tasks_brier"] == 3
  briers = [out[t]["brier"] for t in ("mort", "los", "readm")]
  assert mean["brier"] == pytest.approx(np.mean(briers))
  assert "auroc averaged over 2 of 3 tasks" in mean["note"]
  json.dumps(out)
