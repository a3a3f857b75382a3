"""Tests for the synthetic MMNAR generator (`crl_mmnar_jax.synthetic`).

Statistical claims are checked with scipy / scikit-learn on fixed seeds; thresholds
leave several standard errors of margin (or a Bonferroni correction over the tests
made), so they are deterministic and not flaky, yet each fails if the property goes.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import roc_auc_score

from crl_mmnar_jax.cohort import pattern_ids
from crl_mmnar_jax.data.sources.synthetic import SyntheticData, make_synthetic

N = 20_000


@functools.lru_cache(maxsize=None)
def _data(mechanism: str = "mnar", seed: int = 0, n: int = N, **kwargs) -> SyntheticData:
  return make_synthetic(n, mechanism=mechanism, seed=seed, **kwargs)


def _halves(n: int, seed: int = 123) -> tuple[np.ndarray, np.ndarray]:
  train_N = np.zeros(n, dtype=bool)
  train_N[np.random.default_rng(seed).permutation(n)[: n // 2]] = True
  return train_N, ~train_N


def _log_likelihood(model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> float:
  p = np.clip(model.predict_proba(x)[:, 1], 1e-15, 1 - 1e-15)
  return float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _lr_test_pvalue(x_small: np.ndarray, x_big: np.ndarray, y: np.ndarray) -> float:
  """Likelihood-ratio test p-value of the nested unpenalised logistic models."""
  fit = lambda x: LogisticRegression(C=1e10, tol=1e-10, max_iter=5000).fit(x, y)
  stat = 2.0 * (_log_likelihood(fit(x_big), x_big, y) - _log_likelihood(fit(x_small), x_small, y))
  rank = lambda x: np.linalg.matrix_rank(np.concatenate([np.ones((len(x), 1)), x], axis=1))
  return float(stats.chi2.sf(max(stat, 0.0), df=rank(x_big) - rank(x_small)))


def _assert_same(a: SyntheticData, b: SyntheticData) -> None:
  np.testing.assert_array_equal(a.cohort.patient_id, b.cohort.patient_id)
  for fa, fb in zip(a.cohort.features, b.cohort.features):
    np.testing.assert_array_equal(fa, fb)
  np.testing.assert_array_equal(a.cohort.present, b.cohort.present)
  np.testing.assert_array_equal(a.cohort.labels, b.cohort.labels)
  np.testing.assert_array_equal(a.true_prob_NxT, b.true_prob_NxT)
  np.testing.assert_array_equal(a.latent_NxK, b.latent_NxK)
  np.testing.assert_array_equal(a.eta_MxT, b.eta_MxT)


# ---------------------------------------------------------------- determinism, layout


def test_same_seed_same_data_different_seed_different_data():
  _assert_same(make_synthetic(2_000, seed=3), make_synthetic(2_000, seed=3))
  a, b = make_synthetic(2_000, seed=3), make_synthetic(2_000, seed=4)
  assert not np.array_equal(a.cohort.features[1], b.cohort.features[1])
  assert not np.array_equal(a.cohort.labels, b.cohort.labels)
  assert not np.array_equal(a.cohort.patient_id, b.cohort.patient_id)
  assert not np.array_equal(a.eta_MxT, b.eta_MxT)


def test_world_shared_across_mechanisms_and_sizes():
  """Same seed: the same latent patients and the same eta under every mechanism."""
  mar, mnar = _data("mar"), _data("mnar")
  np.testing.assert_array_equal(mar.latent_NxK, mnar.latent_NxK)
  np.testing.assert_array_equal(mar.eta_MxT, mnar.eta_MxT)
  np.testing.assert_array_equal(mar.cohort.features[0], mnar.cohort.features[0])
  np.testing.assert_array_equal(make_synthetic(500, seed=0).eta_MxT, mnar.eta_MxT)
  np.testing.assert_allclose(make_synthetic(500, pattern_effect=1.5).eta_MxT,
                             2.0 * mnar.eta_MxT)
  np.testing.assert_array_equal(make_synthetic(500, pattern_effect=0.0).eta_MxT, 0.0)


@pytest.mark.parametrize("mechanism", ["mcar", "mar", "mnar"])
def test_cohort_layout_and_invariants(mechanism):
  data = _data(mechanism)
  c = data.cohort
  assert c.validate("again") is c
  assert data.mechanism == mechanism
  assert c.modality_names == ("m0", "m1", "m2", "m3")
  assert c.task_names == ("task0", "task1", "task2")
  assert c.input_dims == (12, 48, 32, 24)
  assert [len(names) for names in c.feature_names] == [12, 48, 32, 24]
  assert data.true_prob_NxT.shape == (N, 3) and data.latent_NxK.shape == (N, 8)
  assert data.severity_N.shape == (N,) and data.eta_MxT.shape == (4, 3)
  # Patient ids: unique int64, not row positions, not sorted.
  ids = c.patient_id
  assert ids.dtype == np.int64 and np.unique(ids).size == N
  assert ids.min() >= 10_000_000 and ids.max() <= 99_999_999
  assert not np.array_equal(ids, np.arange(N)) and not np.all(np.diff(ids) > 0)
  # Modality 0 always present, so nobody has the all-missing pattern.
  assert c.present[:, 0].all() and c.present.any(axis=1).all()
  assert np.all(c.pattern % 2 == 1)
  # Features exactly zero where missing, never an all-zero row where observed.
  for m, f in enumerate(c.features):
    assert f.dtype == np.float32
    assert np.all(f[~c.present[:, m]] == 0.0)
    assert np.all(np.any(f[c.present[:, m]] != 0.0, axis=1))
  assert c.labels.dtype == np.float32 and set(np.unique(c.labels)) <= {0.0, 1.0}
  assert np.all((data.true_prob_NxT > 0) & (data.true_prob_NxT < 1))
  np.testing.assert_array_equal(data.eta_MxT[0], 0.0)
  # All 8 patterns with m0 occur.
  assert set(np.unique(c.pattern).tolist()) == {1, 3, 5, 7, 9, 11, 13, 15}


def test_widths_and_sizes_are_configurable():
  data = make_synthetic(300, n_modalities=3, widths=(2, 5, 7), n_tasks=2, latent_dim=3,
                        observe_rate=(1.0, 0.9, 0.2), prevalence=(0.1, 0.4))
  c = data.cohort
  assert c.input_dims == (2, 5, 7) and c.n_tasks == 2 and c.n == 300
  assert data.latent_NxK.shape == (300, 3) and data.eta_MxT.shape == (3, 2)
  np.testing.assert_allclose(data.true_prob_NxT.mean(axis=0), (0.1, 0.4), atol=1e-5)


# ---------------------------------------------------------------- calibration


@pytest.mark.parametrize("mechanism", ["mcar", "mar", "mnar"])
def test_observation_rates_and_prevalence_hit_targets(mechanism):
  data = _data(mechanism)
  # Binomial sd at n=20,000 is <= 0.0036: 0.015 is > 4 sd.
  np.testing.assert_allclose(data.cohort.present.mean(axis=0), (1.0, 0.7, 0.5, 0.35),
                             atol=0.015)
  np.testing.assert_allclose(data.true_prob_NxT.mean(axis=0), 0.2, atol=1e-5)
  np.testing.assert_allclose(data.cohort.labels.mean(axis=0), 0.2, atol=0.015)


def test_custom_rates_and_per_task_prevalence():
  data = make_synthetic(N, observe_rate=(1.0, 0.9, 0.3, 1.0), prevalence=(0.05, 0.3, 0.6))
  np.testing.assert_allclose(data.cohort.present.mean(axis=0), (1.0, 0.9, 0.3, 1.0),
                             atol=0.015)
  assert data.cohort.present[:, 3].all()
  np.testing.assert_allclose(data.true_prob_NxT.mean(axis=0), (0.05, 0.3, 0.6), atol=1e-5)
  scalar = make_synthetic(N, observe_rate=0.6, mechanism="mcar")
  np.testing.assert_allclose(scalar.cohort.present.mean(axis=0), (1.0, 0.6, 0.6, 0.6),
                             atol=0.015)


@pytest.mark.parametrize("n_modalities", [2, 3, 6])
def test_default_rates_for_other_modality_counts(n_modalities):
  rates = make_synthetic(N, n_modalities=n_modalities).cohort.present.mean(axis=0)
  assert rates[0] == 1.0
  assert abs(rates[1] - 0.7) < 0.015
  if n_modalities > 2:
    assert abs(rates[-1] - 0.35) < 0.015
    assert np.all(np.diff(rates[1:]) < 0)


# ---------------------------------------------------------------- the generative model


def test_true_prob_is_logistic_in_latent_plus_direct_pattern_effect():
  """logit(p) = c + beta.u + eta.delta + 0.75 ((w.u)^2 - 1) exactly; y ~ Bernoulli(p)."""
  data = _data("mnar")
  c = data.cohort
  base = np.concatenate([data.latent_NxK, c.present[:, 1:].astype(np.float64)], axis=1)
  logit_NxT = np.log(data.true_prob_NxT) - np.log1p(-data.true_prob_NxT)
  # Without the U-shaped term the logit is not linear in (u, delta) (the test can fail) ...
  assert np.max(np.abs(LinearRegression().fit(base, logit_NxT).predict(base) - logit_NxT)) > 1
  coefs = []
  for t in range(c.n_tasks):
    q = (data.latent_NxK @ data.u_shape_TxK[t]) ** 2
    design = np.concatenate([base, q[:, None]], axis=1)
    fit = LinearRegression().fit(design, logit_NxT[:, t])
    assert np.max(np.abs(fit.predict(design) - logit_NxT[:, t])) < 1e-8
    np.testing.assert_allclose(fit.coef_[-4:-1], data.eta_MxT[1:, t], atol=1e-8)
    np.testing.assert_allclose(fit.coef_[-1], 0.75, atol=1e-8)
    coefs.append(fit.coef_[:8])
  np.testing.assert_allclose(np.linalg.norm(data.u_shape_TxK, axis=1), 1.0)
  # Severity (the direction behind the outcome-severity link) carries weight in every task.
  beta_TxK = np.array(coefs)
  sev_fit = LinearRegression().fit(data.latent_NxK, data.severity_N)
  cosines = beta_TxK @ sev_fit.coef_ / np.linalg.norm(beta_TxK, axis=1)
  assert np.all(cosines > 0.4)
  # The labels are draws from true_prob: an unpenalised logistic regression of y on
  # (u, delta, U-term) recovers eta (se about 0.05 at this n), and a Hosmer-Lemeshow test
  # on the true probabilities (not fitted, so df = number of bins) does not reject.
  for t in range(c.n_tasks):
    y = c.labels[:, t]
    q = (data.latent_NxK @ data.u_shape_TxK[t]) ** 2
    design = np.concatenate([base, q[:, None]], axis=1)
    lr = LogisticRegression(C=1e10, tol=1e-10, max_iter=5000).fit(design, y)
    np.testing.assert_allclose(lr.coef_[0, -4:-1], data.eta_MxT[1:, t], atol=0.25)
    p = data.true_prob_NxT[:, t]
    bins = np.digitize(p, np.quantile(p, np.linspace(0, 1, 11)[1:-1]))
    obs = np.bincount(bins, weights=y, minlength=10)
    exp = np.bincount(bins, weights=p, minlength=10)
    cnt = np.bincount(bins, minlength=10)
    hl = float(np.sum((obs - exp) ** 2 / (exp * (1 - exp / cnt))))
    assert stats.chi2.sf(hl, df=10) > 1e-3 / 3


def test_severity_is_a_fixed_standardised_linear_combination_of_latent():
  fits = []
  for seed in (0, 1):
    data = _data("mnar", seed=seed)
    fit = LinearRegression().fit(data.latent_NxK, data.severity_N)
    assert np.max(np.abs(fit.predict(data.latent_NxK) - data.severity_N)) < 1e-10
    assert abs(np.linalg.norm(fit.coef_) - 1.0) < 1e-10
    assert abs(data.severity_N.std() - 1.0) < 0.03
    fits.append(fit.coef_)
  np.testing.assert_allclose(fits[0], fits[1], atol=1e-10)


def test_modality_zero_barely_reveals_severity():
  """Under MNAR the driver is not recoverable from the always-observed modality."""
  data = _data("mnar")
  x0 = data.cohort.features[0]
  train, test = _halves(N)
  fit = LinearRegression().fit(x0[train], data.severity_N[train])
  assert fit.score(x0[test], data.severity_N[test]) < 0.05


# ---------------------------------------------------------------- missingness mechanisms


def _pattern_label_pvalues(data: SyntheticData) -> list[float]:
  pattern_N = pattern_ids(data.cohort.present)
  out = []
  for t in range(data.cohort.n_tasks):
    table = np.zeros((16, 2))
    np.add.at(table, (pattern_N, data.cohort.labels[:, t].astype(int)), 1)
    out.append(stats.chi2_contingency(table[table.sum(axis=1) > 0])[1])
  return out


def _pattern_severity_pvalue(data: SyntheticData) -> float:
  pattern_N = data.cohort.pattern
  groups = [data.severity_N[pattern_N == p] for p in np.unique(pattern_N)]
  return float(stats.kruskal(*groups).pvalue)


def test_mcar_pattern_independent_of_outcome_and_severity():
  seeds = (0, 1, 2)
  for seed in seeds:
    data = _data("mcar", seed=seed)
    np.testing.assert_array_equal(data.eta_MxT, 0.0)
    # Bonferroni over 3 seeds x 3 tasks (resp. 3 seeds) at family level 1e-3.
    assert min(_pattern_label_pvalues(data)) > 1e-3 / 9
    assert _pattern_severity_pvalue(data) > 1e-3 / 3


def test_mnar_pattern_strongly_depends_on_outcome_and_severity():
  data = _data("mnar")
  assert max(_pattern_label_pvalues(data)) < 1e-10
  assert _pattern_severity_pvalue(data) < 1e-10
  # Sicker patients get more tests.
  for m in (1, 2, 3):
    obs = data.cohort.present[:, m]
    assert data.severity_N[obs].mean() > data.severity_N[~obs].mean() + 0.5


def test_mnar_pattern_depends_on_outcome_even_without_direct_effect():
  data = make_synthetic(N, mechanism="mnar", pattern_effect=0.0)
  assert max(_pattern_label_pvalues(data)) < 1e-10


def test_mar_pattern_is_explained_by_modality_zero_and_mnar_is_not():
  """delta_m depends on x0 under MAR, and on nothing else given x0; not so under MNAR."""
  mar, mnar, mcar = _data("mar"), _data("mnar"), _data("mcar")
  x0 = mar.cohort.features[0].astype(np.float64)
  x0_sev = np.concatenate([x0, mar.severity_N[:, None]], axis=1)
  intercept_only = np.zeros((N, 1))
  for m in (1, 2, 3):
    d_mar = mar.cohort.present[:, m].astype(int)
    d_mnar = mnar.cohort.present[:, m].astype(int)
    d_mcar = mcar.cohort.present[:, m].astype(int)
    # x0 explains delta under MAR ...
    assert _lr_test_pvalue(intercept_only, x0, d_mar) < 1e-10
    # ... and severity adds nothing once x0 is known (Bonferroni over 3 modalities) ...
    assert _lr_test_pvalue(x0, x0_sev, d_mar) > 1e-3 / 3
    # ... whereas under MNAR severity still matters a lot given x0 ...
    assert _lr_test_pvalue(x0, x0_sev, d_mnar) < 1e-10
    # ... and under MCAR x0 explains nothing.
    assert _lr_test_pvalue(intercept_only, x0, d_mcar) > 1e-3 / 3


# ---------------------------------------------------------------- information content


@pytest.mark.parametrize("source,target", [(1, 2), (2, 3), (3, 1), (0, 1)])
def test_one_modality_predicts_another(source, target):
  data = _data("mnar")
  c = data.cohort
  both = c.present[:, source] & c.present[:, target]
  xs, xt = c.features[source][both], c.features[target][both]
  train, test = _halves(int(both.sum()))
  r2 = LinearRegression().fit(xs[train], xt[train]).score(xs[test], xt[test])
  floor = 0.02 if source == 0 else 0.2   # modality 0 sees only 2 of 8 latent directions
  assert r2 > floor
  # Control: with the rows of the source shuffled the relation disappears.
  shuffled = xs[np.random.default_rng(0).permutation(len(xs))]
  r2_null = LinearRegression().fit(shuffled[train], xt[train]).score(shuffled[test], xt[test])
  assert r2_null < 0.01


def _logreg_design(c, train_N: np.ndarray) -> np.ndarray:
  """Mean imputation (training means of observed rows) + missingness indicators, z-scored."""
  cols = []
  for m, f in enumerate(c.features):
    mean_D = f[train_N & c.present[:, m]].mean(axis=0)
    cols.append(np.where(c.present[:, m:m + 1], f, mean_D))
  cols.append(c.present[:, 1:].astype(np.float32))
  x = np.concatenate(cols, axis=1).astype(np.float64)
  mu, sd = x[train_N].mean(axis=0), x[train_N].std(axis=0)
  return (x - mu) / np.where(sd > 0, sd, 1.0)


def test_oracle_auroc_beats_logistic_regression_on_observed_data():
  data = _data("mnar")
  c = data.cohort
  train, test = _halves(N)
  x = _logreg_design(c, train)
  for t in range(c.n_tasks):
    y = c.labels[:, t]
    oracle = roc_auc_score(y[test], data.true_prob_NxT[test, t])
    lr = LogisticRegression(max_iter=2000).fit(x[train], y[train])
    baseline = roc_auc_score(y[test], lr.predict_proba(x[test])[:, 1])
    assert 0.8 < oracle < 0.92
    assert oracle > baseline + 0.02, (t, oracle, baseline)


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("kwargs,name", [
    (dict(n=9), "n"),
    (dict(n=20.5), "n"),
    (dict(mechanism="nmar"), "mechanism"),
    (dict(mechanism=None), "mechanism"),
    (dict(n_modalities=1), "n_modalities"),
    (dict(n_modalities=31), "n_modalities"),
    (dict(n_tasks=0), "n_tasks"),
    (dict(latent_dim=1), "latent_dim"),
    (dict(widths=(12, 48, 32)), "widths"),
    (dict(widths=(12, 0, 32, 24)), "widths"),
    (dict(widths=(12, 4.5, 32, 24)), "widths"),
    (dict(widths=16), "widths"),
    (dict(observe_rate=(1.0, 0.7, 1.2, 0.3)), "observe_rate"),
    (dict(observe_rate=(1.0, 0.7, 0.0, 0.3)), "observe_rate"),
    (dict(observe_rate=(0.9, 0.7, 0.5, 0.3)), "observe_rate"),
    (dict(observe_rate=(1.0, 0.7, 0.5)), "observe_rate"),
    (dict(observe_rate=-0.5), "observe_rate"),
    (dict(observe_rate=float("nan")), "observe_rate"),
    (dict(prevalence=0.0), "prevalence"),
    (dict(prevalence=1.0), "prevalence"),
    (dict(prevalence=(0.2, 0.3)), "prevalence"),
    (dict(prevalence=(0.2, 0.3, 1.5)), "prevalence"),
    (dict(prevalence="high"), "prevalence"),
    (dict(pattern_effect=float("inf")), "pattern_effect"),
    (dict(missingness_strength=-1.0), "missingness_strength"),
    (dict(missingness_strength=float("nan")), "missingness_strength"),
    (dict(noise=-0.1), "noise"),
    (dict(noise=(1.0, 0.5)), "noise"),
    (dict(observe_rate="often"), "observe_rate"),
    (dict(observe_rate=(1.0, 0.7, "x", 0.3)), "observe_rate"),
    (dict(noise=(1.0, 0.5, float("inf"), 0.5)), "noise"),
    (dict(seed="zero"), "seed"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments_raise_value_error(kwargs, name):
  kwargs = {"n": 50, **kwargs}
  with pytest.raises(ValueError, match=re.escape(name)) as info:
    make_synthetic(**kwargs)
  assert repr(kwargs[name]) in str(info.value) or str(kwargs[name]) in str(info.value)


def test_synthetic_data_is_frozen():
  data = make_synthetic(50)
  with pytest.raises(dataclasses.FrozenInstanceError):
    data.mechanism = "mcar"  # type: ignore[misc]


def test_world_seed_separates_the_world_from_the_patients():
  base = make_synthetic(3000, seed=4)
  same = make_synthetic(3000, seed=4, world_seed=4)
  for a, b in zip(base.cohort.features, same.cohort.features):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(base.true_prob_NxT, same.true_prob_NxT)
  # Same world, other patients: identical world parameters, new latent states.
  other_patients = make_synthetic(5000, seed=9, world_seed=4)
  np.testing.assert_array_equal(other_patients.eta_MxT, base.eta_MxT)
  np.testing.assert_array_equal(other_patients.u_shape_TxK, base.u_shape_TxK)
  assert not np.allclose(other_patients.latent_NxK[:100], base.latent_NxK[:100])
  # The world's loadings are shared: regressing modality 1's noiseless-direction
  # content on u gives the same coefficients in both cohorts (up to noise).
  def loadings(s):
    rows = s.cohort.present[:, 1]
    x = s.cohort.features[1][rows].astype(np.float64)
    coef, *_ = np.linalg.lstsq(s.latent_NxK[rows], x, rcond=None)
    return coef
  np.testing.assert_allclose(loadings(other_patients), loadings(base), atol=0.15)
  # Other world, same patients: the same latent states, other parameters.
  other_world = make_synthetic(3000, seed=4, world_seed=5)
  np.testing.assert_array_equal(other_world.latent_NxK, base.latent_NxK)
  assert not np.allclose(other_world.eta_MxT, base.eta_MxT)
  with pytest.raises(ValueError, match="world_seed"):
    make_synthetic(100, world_seed=-1)
