"""Tests for `crl_mmnar_jax.injection`: drops, the known effect, and the rectifier's τ̂."""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression

from crl_mmnar_jax import rectifier
from crl_mmnar_jax.data.sources.injection import inject_mmnar
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from experiments.configs import injection as injection_config
from experiments.studies import mmnar_injection as mi

_DROP = (1, 2, 3)
_TARGET = 1          # only modality 0 left: the most common pattern after the drops


@functools.lru_cache(maxsize=None)
def _base(n: int = 4000, seed: int = 0):
  return make_synthetic(n, mechanism="mcar", seed=seed)


def _inject(syn, strength=0.0, effect=0.1, seed=0, real=False, **kwargs):
  kwargs.setdefault("drop_rate", 0.3)
  return inject_mmnar(syn.cohort, syn.severity_N, modalities=_DROP, strength=strength,
                      target_pattern=_TARGET, effect=effect,
                      true_prob_NxT=None if real else syn.true_prob_NxT, seed=seed, **kwargs)


# ----------------------------------------------------------------------------- drops


@pytest.mark.parametrize("strength", [0.0, 2.0])
def test_drops_zero_features_and_keep_everything_else(strength):
  syn = _base()
  inj = _inject(syn, strength=strength)
  before, after = syn.cohort, inj.cohort
  assert not inj.dropped_NxM[:, 0].any()                       # modality 0 never dropped
  assert not (inj.dropped_NxM & ~before.present).any()         # drops only where observed
  np.testing.assert_array_equal(after.present, before.present & ~inj.dropped_NxM)
  for m in range(before.n_modalities):
    gone = inj.dropped_NxM[:, m]
    assert np.all(after.features[m][gone] == 0.0)
    np.testing.assert_array_equal(after.features[m][~gone], before.features[m][~gone])
    assert after.features[m].dtype == np.float32
  np.testing.assert_array_equal(after.patient_id, before.patient_id)
  after.validate()
  assert inj.dropped_NxM[:, 1:].sum() > 1000


def test_unlisted_modalities_are_never_dropped():
  syn = _base()
  inj = inject_mmnar(syn.cohort, syn.severity_N, modalities=("m2",), strength=1.0,
                     drop_rate=0.5, seed=3)
  assert inj.dropped_NxM[:, 2].any()
  assert not inj.dropped_NxM[:, [0, 1, 3]].any()
  assert np.all(inj.drop_prob_NxM[:, [0, 1, 3]] == 0.0)
  np.testing.assert_array_equal(inj.cohort.labels, syn.cohort.labels)   # no effect, no redraw


@pytest.mark.parametrize("strength", [0.0, 1.0, 3.0])
def test_mean_drop_probability_is_the_drop_rate(strength):
  syn = _base()
  inj = _inject(syn, strength=strength, drop_rate=(0.2, 0.3, 0.5))
  for m, rate in zip(_DROP, (0.2, 0.3, 0.5)):
    obs = syn.cohort.present[:, m]
    assert inj.drop_prob_NxM[obs, m].mean() == pytest.approx(rate, abs=1e-5)
    assert np.all(inj.drop_prob_NxM[~obs, m] == 0.0)
    if strength == 0.0:
      assert np.all(inj.drop_prob_NxM[obs, m] == rate)         # exactly constant: MCAR


def _severity_tests(inj, syn, m):
  """(chi-square p-value over severity quintiles, logistic slope) of drops among observed."""
  obs = syn.cohort.present[:, m]
  z_N = (syn.severity_N - syn.severity_N.mean()) / syn.severity_N.std()
  z_K, d_K = z_N[obs], inj.dropped_NxM[obs, m]
  bins_K = np.digitize(z_K, np.quantile(z_K, [0.2, 0.4, 0.6, 0.8]))
  table = np.array([[np.sum((bins_K == b) & d_K), np.sum((bins_K == b) & ~d_K)]
                    for b in range(5)])
  p_value = stats.chi2_contingency(table)[1]
  slope = LogisticRegression(C=1e6).fit(z_K[:, None], d_K).coef_[0, 0]
  return p_value, slope


def test_drops_depend_on_severity_only_when_strength_is_nonzero():
  syn = _base(8000)
  mcar = _inject(syn, strength=0.0)
  mnar = _inject(syn, strength=2.0)
  for m in _DROP:
    p_mcar, slope_mcar = _severity_tests(mcar, syn, m)
    p_mnar, slope_mnar = _severity_tests(mnar, syn, m)
    assert p_mcar > 0.01 and abs(slope_mcar) < 0.15
    assert p_mnar < 1e-12 and slope_mnar == pytest.approx(2.0, abs=0.3)  # the true slope


# ----------------------------------------------------------------------------- effect


def test_synthetic_effect_is_exact_and_labels_are_coupled():
  syn = _base()
  big = _inject(syn, effect=0.5)                   # large enough for clipping to bite
  none = _inject(syn, effect=0.0)
  p_NxT, tgt = syn.true_prob_NxT, big.target_N
  np.testing.assert_array_equal(tgt, big.cohort.pattern == _TARGET)
  np.testing.assert_array_equal(big.dropped_NxM, none.dropped_NxM)   # effect: same drops
  expected_NxT = np.where(tgt[:, None], np.clip(p_NxT + 0.5, 0.0, 1.0), p_NxT)
  np.testing.assert_allclose(big.true_prob_NxT, expected_NxT)
  naive_T = [np.mean(np.clip(p_NxT[tgt, t] + 0.5, 0, 1) - p_NxT[tgt, t]) for t in range(3)]
  np.testing.assert_allclose(big.effect_T, naive_T, rtol=1e-12)
  assert np.all(big.effect_T < 0.5) and np.all(big.effect_T > 0.4)
  np.testing.assert_allclose(none.effect_T, 0.0)
  np.testing.assert_allclose(none.true_prob_NxT, p_NxT)
  # One uniform per patient and task: labels off the target pattern do not move, and
  # on it they only go up with a positive effect.
  y_big, y_none = big.cohort.labels, none.cohort.labels
  np.testing.assert_array_equal(y_big[~tgt], y_none[~tgt])
  assert np.all(y_big[tgt] >= y_none[tgt])
  np.testing.assert_allclose(big.label_change_T, (y_big[tgt] - y_none[tgt]).mean(0))
  # Labels follow the new true probabilities (calibration on the target pattern).
  se_T = np.sqrt(big.true_prob_NxT[tgt].var(0) / tgt.sum() + 0.25 / tgt.sum())
  assert np.all(np.abs(y_big[tgt].mean(0) - big.true_prob_NxT[tgt].mean(0)) < 4 * se_T)


def test_real_data_flips_only_target_labels_toward_the_effect():
  syn = _base(20_000)
  up = _inject(syn, effect=0.1, real=True)
  down = _inject(syn, effect=-0.05, real=True)
  y0 = syn.cohort.labels
  for inj, sign in ((up, 1.0), (down, -1.0)):
    tgt = inj.target_N
    assert inj.true_prob_NxT is None
    np.testing.assert_array_equal(inj.cohort.labels[~tgt], y0[~tgt])
    change_NxT = inj.cohort.labels[tgt] - y0[tgt]
    assert set(np.unique(change_NxT).tolist()) == {0.0, sign}
    np.testing.assert_allclose(inj.label_change_T, change_NxT.mean(0))
    np.testing.assert_allclose(inj.effect_T, 0.1 if sign > 0 else -0.05)
    # Expected change = effect exactly; the binomial sd of the realised mean is small.
    sd = np.sqrt(0.1 / tgt.sum())
    np.testing.assert_allclose(inj.label_change_T, inj.effect_T, atol=4 * sd)
  with pytest.raises(ValueError, match="out of reach"):
    _inject(syn, effect=-0.9, real=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(modalities=(0, 1)), "modality 0 is the always-observed"),
    (dict(modalities=("nope",)), "unknown modality 'nope'"),
    (dict(modalities=(1, 1)), "distinct"),
    (dict(modalities=()), "at least one"),
    (dict(target_pattern=2), "unknown pattern: no patient has pattern 2"),
    (dict(target_pattern=None), "non-zero effect needs a target_pattern"),
    (dict(drop_rate=1.5), "drop_rate must lie in"),
    (dict(effect=(0.1, 0.2)), "effect must be a number or 3 numbers"),
    (dict(strength=float("nan")), "strength must be finite"),
    (dict(true_prob_NxT=np.zeros((5, 3))), "true_prob_NxT must have shape"),
])
def test_bad_inputs_raise_clear_errors(kwargs, match):
  syn = _base()
  args = dict(modalities=_DROP, strength=1.0, drop_rate=0.3, target_pattern=_TARGET,
              effect=0.1, true_prob_NxT=syn.true_prob_NxT)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    inject_mmnar(syn.cohort, syn.severity_N, **args)


def test_severity_shape_and_always_observed_modality_are_checked():
  syn = _base()
  with pytest.raises(ValueError, match=r"severity_N must have shape \(4000,\)"):
    inject_mmnar(syn.cohort, syn.severity_N[:10], modalities=_DROP, strength=1.0,
                 drop_rate=0.3)
  present = syn.cohort.present.copy()
  present[0] = [False, True, False, False]     # an observed row of zeros is valid
  features = tuple(np.where(present[:, m:m + 1], x, np.float32(0.0))
                   for m, x in enumerate(syn.cohort.features))
  odd = dataclasses.replace(syn.cohort, present=present, features=features).validate()
  with pytest.raises(ValueError, match="must be observed for every patient"):
    inject_mmnar(odd, syn.severity_N, modalities=(2,), strength=1.0, drop_rate=0.3)


# ----------------------------------------------------------------------------- rectifier


def _tau_vs_truth(seed: int, effect: float, n: int = 4000, strength: float = 0.0):
  """τ̂, se and truth for the target pattern, per task, from effect-blind predictions.

  The predictions are the true probabilities BEFORE injection (blind to the effect);
  the rectifier is fitted on a random half (the "validation" rows), and the truth is
  the exact mean injected shift over that half's target patients.
  """
  syn = _base(n, seed)
  inj = _inject(syn, strength=strength, effect=effect, seed=seed)
  val_N = np.random.default_rng(seed + 100).random(n) < 0.5
  rect = rectifier.fit(syn.true_prob_NxT[val_N], inj.cohort.labels[val_N],
                       inj.cohort.pattern[val_N])
  i = int(np.searchsorted(rect.patterns, _TARGET))
  tgt = inj.target_N & val_N
  truth_T = (inj.true_prob_NxT - syn.true_prob_NxT)[tgt].mean(0)
  return rect.tau_raw_PxT[i], rect.se_PxT[i], truth_T


def test_rectifier_recovers_the_injected_effect_within_two_se():
  """The issue's test: MCAR cohort, known effect on one pattern, τ̂ within 2 se."""
  tau_T, se_T, truth_T = _tau_vs_truth(seed=0, effect=0.1)
  assert np.all(truth_T > 0.09)
  assert np.all(np.abs(tau_T - truth_T) < 2 * se_T)
  assert np.all(tau_T > 2 * se_T)                       # power: clearly away from 0
  tau0_T, se0_T, truth0_T = _tau_vs_truth(seed=0, effect=0.0)
  np.testing.assert_array_equal(truth0_T, 0.0)
  assert np.all(np.abs(tau0_T) < 2 * se0_T)


@pytest.mark.parametrize("strength", [0.0, 2.0])
def test_rectifier_coverage_over_seeds(strength):
  """Over 20 seeds x 3 tasks, |τ̂ − truth| < 2 se in at least 80% (nominal 95%), for the
  effect 0.1 and for no effect; with severity-driven drops too, since the predictions
  condition on the latent state (no selection bias left in the residual)."""
  hits, away, null_hits = [], [], []
  for seed in range(20):
    tau_T, se_T, truth_T = _tau_vs_truth(seed=seed, effect=0.1, n=3000, strength=strength)
    hits.extend(np.abs(tau_T - truth_T) < 2 * se_T)
    away.extend(tau_T > 2 * se_T)
    tau0_T, se0_T, _ = _tau_vs_truth(seed=seed, effect=0.0, n=3000, strength=strength)
    null_hits.extend(np.abs(tau0_T) < 2 * se0_T)
  assert np.mean(hits) >= 0.8 and np.mean(null_hits) >= 0.8
  assert np.mean(away) >= 0.95


# ----------------------------------------------------------------------------- experiment


def test_injection_experiment_end_to_end(tmp_path, capsys):
  """Minuscule run of experiments.studies.mmnar_injection: outputs, reuse, honest reference."""
  workdir = str(tmp_path)
  cells = mi.plan([2.0], 1)
  setting = mi.Setting(n=400)
  config = injection_config.get_config("tiny")
  rows = mi.run_experiment(workdir, cells, ["crl_mmnar"], setting, config,
                           log=lambda s: None)
  summary = mi.write_outputs(workdir, rows, ["crl_mmnar"], setting, "test")
  for name in ("injection.md", "injection.csv", "injection.json", "injection.png"):
    assert os.path.exists(os.path.join(workdir, name))
  assert {(r["method"], r["task"]) for r in rows} == {
      (m, t) for m in ("crl_mmnar", mi.REFERENCE, mi.ORACLE) for t in ("task0", "task1", "task2")}
  cell_dir = cells[0].dir(workdir)
  with open(os.path.join(cell_dir, "crl_mmnar", "results.json")) as f:
    crl = json.load(f)
  # The recomputed reference uses the same split, preprocessing and fit as the one in
  # results.json; the blind oracle's τ̂ is estimated on the same validation patients.
  ref = {r["task"]: r["auroc"] for r in rows if r["method"] == mi.REFERENCE}
  for task, auc in ref.items():
    assert auc == pytest.approx(crl["reference"]["logreg_mean_impute"][task]["auroc"],
                                abs=1e-6)
  oracle = [r for r in rows if r["method"] == mi.ORACLE]
  assert all(0.05 < r["truth_val"] <= 0.1 for r in oracle)
  assert summary["auroc"][0]["seeds"] == 1 and "gain_vs_logreg_reference" in summary["auroc"][0]
  # A second call reuses everything; other injection settings in the same dir are refused.
  logs = []
  assert mi.run_experiment(workdir, cells, ["crl_mmnar"], setting, config,
                           log=logs.append) == rows
  assert logs == [f"reusing {os.path.join(cell_dir, 'crl_mmnar')}"]
  with pytest.raises(ValueError, match="holds a cohort injected with"):
    mi.run_experiment(workdir, cells, ["crl_mmnar"], mi.Setting(n=400, effect=0.2), config)
  capsys.readouterr()
  mi.SCRIPT(["prog", f"--workdir={workdir}", "--strengths=0,2", "--seeds=2", "--dry_run"])
  planned = capsys.readouterr().out.splitlines()
  assert len(planned) == 2 * 2 * 3
  assert sum(line.endswith("(done)") for line in planned) == 3
