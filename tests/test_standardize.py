"""`data.standardize` beyond the z-score (tests/test_data.py): the quantile-normal option
against scikit-learn's QuantileTransformer (a test-only oracle), extreme values treated
as not measured and counted, and the same statistics on one shard and several."""

import dataclasses
import logging

import numpy as np
import pytest

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data import quantiles, shards
from crl_mmnar_jax.data.standardize import standardize

N = 600
TRAIN = np.flatnonzero(np.arange(N) % 10 < 7)
OTHER = np.flatnonzero(np.arange(N) % 10 >= 7)       # validation and test rows


def _cohort(seed=0):
  """Skewed, tied, discrete and binary features, NaN inside observed rows, a modality
  missing for some patients."""
  rng = np.random.default_rng(seed)
  present = np.ones((N, 2), bool)
  present[rng.random(N) < 0.3, 1] = False
  x0 = np.stack([rng.lognormal(3.0, 1.0, N), rng.exponential(2.0, N),
                 rng.integers(0, 6, N).astype(float), (rng.random(N) < 0.1).astype(float)],
                axis=1).astype(np.float32)
  x0[rng.random((N, 4)) < 0.15] = np.nan
  x1 = np.stack([rng.normal(80.0, 15.0, N), rng.gamma(0.5, 3.0, N)], axis=1)
  x1 = np.where(present[:, 1:], x1, 0.0).astype(np.float32)
  labels = rng.integers(0, 2, (N, 1)).astype(np.float32)
  names = (("crp", "los", "gcs", "vent"), ("hr", "lactate"))
  return Cohort(np.arange(1000, 1000 + N), (x0, x1), present, labels, ("labs", "vitals"),
                ("y",), feature_names=names).validate()


def _with(cohort, m, rows, cols, value):
  feats = [f.copy() for f in cohort.features]
  feats[m][np.ix_(np.atleast_1d(rows), np.atleast_1d(cols))] = value
  return dataclasses.replace(cohort, features=tuple(feats))


# ----------------------------------------------------------------------------- quantile normal


def test_quantile_normal_matches_sklearn_fitted_on_observed_training_rows():
  from sklearn.preprocessing import QuantileTransformer
  c = _cohort()
  out, stats = standardize(c, TRAIN, preprocess="quantile_normal")
  for m, (x, z) in enumerate(zip(c.features, out.features)):
    obs = c.present[:, m]
    fit_rows = TRAIN[obs[TRAIN]]
    qt = QuantileTransformer(n_quantiles=min(1000, len(fit_rows)),
                             output_distribution="normal", subsample=None)
    qt.fit(x[fit_rows].astype(np.float64))
    want = np.nan_to_num(qt.transform(x[obs].astype(np.float64)), nan=0.0)
    # Tolerance: float32 output of a map that agrees with scikit-learn's to ~1e-12.
    np.testing.assert_allclose(z[obs], want, atol=1e-5, rtol=0)
    assert np.all(z[~obs] == 0.0)
    assert np.abs(z[obs]).max() <= 5.2 + 1e-5     # clipped at ±ppf(1 - 1e-7)
    # The zero-imputation baseline's fill value is a raw 0 mapped the same way.
    np.testing.assert_allclose(stats[c.modality_names[m]]["raw_zero"],
                               qt.transform(np.zeros((1, x.shape[1])))[0], atol=1e-9)
  # Training values come out (nearly) standard normal; the binary one cannot.
  z = out.features[1][TRAIN[c.present[TRAIN, 1]], 0]
  assert abs(z.mean()) < 0.05 and abs(z.std() - 1.0) < 0.1


def test_quantile_normal_fit_ignores_validation_and_test_rows():
  c = _cohort()
  out, _ = standardize(c, TRAIN, preprocess="quantile_normal")
  rng = np.random.default_rng(5)
  changed = _with(c, 0, OTHER, [0, 1], rng.lognormal(8.0, 2.0, (len(OTHER), 2)))
  out2, _ = standardize(changed, TRAIN, preprocess="quantile_normal")
  for a, b in zip(out.features, out2.features):
    np.testing.assert_array_equal(a[TRAIN], b[TRAIN])
  # Control: changing training rows does move the map (the test can fail).
  moved = _with(c, 0, TRAIN[:100], [0], 1e4)
  out3, _ = standardize(moved, TRAIN, preprocess="quantile_normal")
  assert not np.array_equal(out3.features[0][TRAIN[100:]], out.features[0][TRAIN[100:]])


@pytest.mark.parametrize("preprocess", ["standard", "quantile_normal"])
def test_bin_edges_ignore_not_measured_cells_and_missing_modalities(preprocess):
  c = _cohort()
  out, stats = standardize(c, TRAIN, preprocess=preprocess, num_bins=5)
  for m, (x, z) in enumerate(zip(c.features, out.features)):
    fit = TRAIN[c.present[TRAIN, m]]
    for j in range(x.shape[1]):
      # Naive: the transformed values of the cells measured in observed training rows.
      measured = fit[~np.isnan(x[fit, j])]
      want = np.unique(np.quantile(z[measured, j].astype(np.float64), np.linspace(0, 1, 6)))
      got = stats[c.modality_names[m]]["bin_edges"][j]
      k = stats[c.modality_names[m]]["n_bins"][j]
      if len(want) < 2:          # binary after ties: one bin [v, v + 1]
        np.testing.assert_allclose(got[:2], [want[0], want[0] + 1], atol=1e-5)
      else:
        assert k == len(want) - 1
        np.testing.assert_allclose(got[:k + 1], want, atol=1e-5)
  # Control: counting the imputed cells (0 after the transform) would move the edges.
  z = out.features[0][TRAIN].astype(np.float64)
  assert not np.allclose(np.quantile(z[:, 0], np.linspace(0, 1, 6)),
                         stats["labs"]["bin_edges"][0], atol=1e-3)
  # Values in rows where a modality is missing are never read.
  absent = np.flatnonzero(~c.present[:, 1])
  _, stats2 = standardize(_with(c, 1, absent, [0, 1], 1e6), TRAIN, preprocess=preprocess,
                          num_bins=5)
  np.testing.assert_array_equal(stats2["vitals"]["bin_edges"], stats["vitals"]["bin_edges"])


def test_norm_ppf_matches_scipy():
  from scipy.stats import norm
  u = np.concatenate([np.linspace(1e-7, 1 - 1e-7, 1001), [1e-7, 0.02425, 0.975, 0.5]])
  np.testing.assert_allclose(quantiles.norm_ppf(u), norm.ppf(u), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- extreme values


@pytest.mark.parametrize("preprocess", ["standard", "quantile_normal"])
def test_one_extreme_cell_changes_no_other_patient_and_is_counted(preprocess, caplog):
  c = _cohort()
  row = TRAIN[c.present[TRAIN, 1]][3]
  bad = _with(c, 1, row, 0, 1e30)                   # one sentinel in a training row
  without = _with(c, 1, row, 0, np.nan)             # the cohort without that cell
  with caplog.at_level(logging.WARNING):
    out, stats = standardize(bad, TRAIN, preprocess=preprocess)
  ref, ref_stats = standardize(without, TRAIN, preprocess=preprocess)
  for a, b in zip(out.features, ref.features):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  assert out.features[1][row, 0] == 0.0             # imputed like a not-measured cell
  np.testing.assert_allclose(stats["vitals"]["mean"], ref_stats["vitals"]["mean"], rtol=1e-12)
  assert stats["vitals"]["extreme_cells"] == {"hr": 1}
  assert stats["labs"]["extreme_cells"] == {} and ref_stats["vitals"]["extreme_cells"] == {}
  lines = [r.getMessage() for r in caplog.records if "extreme" in r.getMessage()]
  assert len(lines) == 1 and "vitals/hr: 1 patient" in lines[0]
  assert "1e+30" not in lines[0] and "1e30" not in lines[0]
  # Control: with the check off, the cell collapses the feature for everyone else.
  off, _ = standardize(bad, TRAIN, preprocess="standard", extreme_factor=0.0)
  others = np.setdiff1d(np.flatnonzero(c.present[:, 1]), [row])
  assert len(np.unique(off.features[1][others, 0])) <= 2


def test_extreme_cells_in_other_splits_and_non_finite_values_are_not_measured():
  c = _cohort()
  vit = np.flatnonzero(c.present[:, 1])
  held_out = vit[np.isin(vit, OTHER)][:3]
  bad = _with(_with(c, 1, held_out[:2], 1, -1e12), 1, held_out[2], 1, np.inf)
  out, stats = standardize(bad, TRAIN)               # (validate() would refuse the inf)
  ref, ref_stats = standardize(c, TRAIN)
  np.testing.assert_array_equal(stats["vitals"]["sd"], ref_stats["vitals"]["sd"])
  assert np.all(out.features[1][held_out, 1] == 0.0)
  assert stats["vitals"]["extreme_cells"] == {"lactate": 3}
  assert np.all(np.isfinite(out.features[1]))


def test_heavy_tails_rare_binaries_and_discrete_features_are_not_flagged():
  rng = np.random.default_rng(1)
  x = np.stack([rng.lognormal(0.0, 1.5, 5000),           # heavy right tail (max/median ~ 300)
                (rng.random(5000) < 0.003).astype(float),  # rare event: IQR and q99 are 0
                rng.poisson(0.2, 5000).astype(float),      # IQR 0, a few large counts
                np.full(5000, 7.0)], axis=1)               # constant
  low, high = quantiles.robust_bounds(x, 1e3)
  inside = (x >= low) & (x <= high)
  assert inside.all()
  assert np.isinf(low[3]) and np.isinf(high[3])            # no spread: only non-finite
  assert high[0] < 1e30 and high[1] < 1e30                 # ... but a sentinel is caught


# ----------------------------------------------------------------------------- shards


@pytest.mark.parametrize("preprocess", ["standard", "quantile_normal"])
def test_every_statistic_is_the_same_on_one_shard_and_several(preprocess):
  c = _cohort()
  c = _with(c, 0, TRAIN[5], 1, 1e25)
  one, s1 = standardize(c, TRAIN, preprocess=preprocess, num_bins=8)
  layout = shards.Layout(4, shards.shard_of(c.patient_id, 4), (0, 1, 2, 3))
  four, s4 = standardize(c, TRAIN, layout, preprocess=preprocess, num_bins=8)
  for name in c.modality_names:
    for key in ("mean", "sd", "raw_zero", "bin_edges", "n_bins"):
      np.testing.assert_allclose(s4[name][key], s1[name][key], rtol=1e-12, atol=1e-12)
    assert s4[name]["extreme_cells"] == s1[name]["extreme_cells"]
  assert s1["labs"]["extreme_cells"] == {"los": 1}
  for a, b in zip(one.features, four.features):
    np.testing.assert_allclose(a, b, atol=1e-6)
