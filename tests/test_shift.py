"""The shift check of `predict` (`crl_mmnar_jax.shift`): the training reference saved by
`data.standardize`, what counts as a difference, and that fresh samples of the training
population are not flagged while another synthetic world is (see also test_predict.py,
which runs it through `experiments.predict`)."""

import dataclasses
import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from crl_mmnar_jax import shift
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.data.standardize import standardize

N_TRAIN, N_NEW = 240, 150        # test_predict.py's sizes: 168 training patients


def _reference(seed=0, world=0, n=N_TRAIN):
  cohort = make_synthetic(n, seed=seed, world_seed=world).cohort
  return cohort, standardize(cohort, np.arange(int(0.7 * n)))[1]


def test_the_reference_is_the_training_range_and_orthonormal_directions():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((300, 10)) @ rng.standard_normal((10, 10))
  x[rng.random(x.shape) < 0.1] = np.nan
  x[:, 3] = np.nan                                   # never measured
  keep = np.arange(10) != 3
  mean, sd = np.zeros(10), np.ones(10)
  mean[keep], sd[keep] = np.nanmean(x[:, keep], 0), np.nanstd(x[:, keep], 0)
  ref = shift.training_reference(x, mean, sd)
  np.testing.assert_array_equal(np.isnan(ref["min"]), ~keep)
  np.testing.assert_array_equal(ref["min"][keep], np.nanmin(x[:, keep], 0))
  np.testing.assert_array_equal(ref["max"][keep], np.nanmax(x[:, keep], 0))
  v = ref["components"]
  assert v.shape == (5, 10)                          # half the features, at most 8
  np.testing.assert_allclose(v @ v.T, np.eye(5), atol=1e-10)
  assert 0.5 < float(ref["explained"]) < 1.0         # correlated features
  # Too few rows or features: no directions.
  assert shift.training_reference(x[:12], mean, sd)["components"].shape == (0, 10)
  one = shift.training_reference(x[:, :1], mean[:1], sd[:1])
  assert one["components"].shape == (0, 1) and np.isnan(one["explained"])


def test_the_range_tail_is_that_of_beta_2_n_minus_1():
  """The mass outside the range of n draws is Beta(2, n - 1): the closed form against
  scipy, and against simulated uniforms."""
  s = np.array([0.01, 0.05, 0.1, 0.3])
  for n in (20, 168, 5000):
    got = shift.outside_range_p(s, np.full(4, 1e24), np.full(4, n))
    np.testing.assert_allclose(got, scipy_stats.beta.sf(s, 2, n - 1), rtol=1e-6, atol=1e-300)
  u = np.sort(np.random.default_rng(0).random((20000, 50)), 1)
  outside = u[:, 0] + 1 - u[:, -1]
  np.testing.assert_allclose(shift.outside_range_p(np.array([0.05]), np.array([1e24]),
                                                   np.array([50]))[0],
                             np.mean(outside > 0.05), atol=0.01)


@pytest.mark.parametrize("seed", range(10))
def test_a_fresh_sample_of_the_training_world_is_not_flagged(seed):
  train, ref = _reference(seed=100 + seed, world=seed)
  new = make_synthetic(N_NEW, seed=200 + seed, world_seed=seed).cohort
  report = shift.compare(new, ref, train.feature_names)
  assert report["checked"] and report["warning"] is None, report["warning"]
  other = make_synthetic(N_NEW, seed=300 + seed).cohort      # its own world, 300 + seed
  report = shift.compare(other, ref, train.feature_names)
  assert "co-vary differently" in report["warning"]
  json.dumps(report, allow_nan=False)                         # NaN written as null


def test_a_modality_observed_less_often_is_named():
  train, ref = _reference()
  new = make_synthetic(N_NEW, seed=5, world_seed=0).cohort
  present = new.present.copy()
  present[np.flatnonzero(present[:, 1])[::3], 1] = False       # a third fewer keep m1
  present[np.flatnonzero(present[:, 1])[::2], 1] = False       # and half of those
  features = list(new.features)
  features[1] = np.where(present[:, 1:2], features[1], 0.0).astype(np.float32)
  new = dataclasses.replace(new, present=present, features=tuple(features))
  report = shift.compare(new, ref, train.feature_names)
  row = next(r for r in report["modalities"] if r["modality"] == "m1")
  assert row["rate_differs"] and row["observed_rate_new"] == pytest.approx(present[:, 1].mean())
  assert row["observed_rate_train"] == pytest.approx(train.present[:int(0.7 * N_TRAIN), 1].mean())
  assert (f"modality m1 observed in {100 * row['observed_rate_new']:.0f}% vs "
          f"{100 * row['observed_rate_train']:.0f}% in training") in report["warning"]


def test_a_shift_needs_enough_values_and_more_than_noise():
  """A 0.8 SD shift of one feature: flagged with 150 new patients, not with 12 (fewer
  than MIN_VALUES); extreme cells count as outside the range, not in the mean."""
  train, ref = _reference()
  new = make_synthetic(N_NEW, seed=5, world_seed=0).cohort
  sd = ref["m0"]["sd"][2]
  x = new.features[0].copy()
  x[:, 2] += 0.8 * sd
  x[0, 2] = 1e30                                              # extreme: not measured
  moved = dataclasses.replace(new, features=(x,) + new.features[1:])
  row = next(r for r in shift.compare(moved, ref, train.feature_names)["features"]
             if r["feature"] == "m0/m0_2")
  assert row["shifted"] and row["n_new"] == N_NEW
  v = x[1:, 2].astype(np.float64)
  assert row["mean_new"] == pytest.approx(v.mean())
  assert row["outside_range_share"] == pytest.approx(
      (np.sum((v < ref["m0"]["min"][2]) | (v > ref["m0"]["max"][2])) + 1) / N_NEW)
  few = shift.compare(moved.subset(np.arange(1, 13)), ref, train.feature_names)
  assert few["warning"] is None


def test_statistics_from_before_the_check_are_reported_unchecked():
  train, ref = _reference()
  old = {m: {k: v for k, v in s.items() if k not in shift.REFERENCE} for m, s in ref.items()}
  report = shift.compare(train, old, train.feature_names)
  assert report["checked"] is False and "predates the shift check" in report["reason"]
