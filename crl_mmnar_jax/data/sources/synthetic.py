"""Synthetic MMNAR cohorts: the library's embedded default data.

A cohort in which a clinician decides which tests (modalities) to order, so that the
observation pattern can depend on the patient's hidden health state and can also act
on the outcome directly. Everything the model never sees (the latent state, the true
outcome probabilities, the direct pattern effects) is returned next to the `Cohort`
for oracle checks.

Generative model, patient i, modality m = 0..M-1, task t = 0..T-1:

* Latent health state ``u_i ~ N(0, I_K)`` (K = `latent_dim`, default 8) and severity
  ``s_i = w_s . u_i`` with a fixed unit vector w_s (so s_i ~ N(0, 1)). w_s puts weight
  0.25 (before normalisation) on the latent directions modality 0 can see and 1.0 on the
  others: severity is barely recoverable from modality 0.
* Content ``x_im = f(A_m u_i) + noise_m * eps``: rows of A_m are random unit vectors,
  so every ``z = A_m u`` is N(0, 1) and all modalities share the same rank-K structure
  (one modality is informative about another). f is the identity for a random half
  of each modality's features and ``tanh(2 z)`` (saturating, so a linear model loses
  the tails) for the other half. Modality 0 (always observed, demographics-like) sees
  only the first ``min(2, K - 1)`` latent directions. Default widths
  (12, 48, 32, 24) for M = 4, otherwise 12 then 32 for every other modality; default
  noise sd 1.5 for modality 0 and 0.75 for the others.
* Observation pattern: ``delta_i0 = 1``; for m >= 1,
  ``P(delta_im = 1) = sigmoid(a_m + strength * driver_i)``, driver = 0 (`mcar`), a
  fixed standardised linear score of modality 0's content (`mar`), or the severity
  s_i itself (`mnar`: sicker patients get more tests). a_m is found by bisection so
  that the sample mean of the probabilities equals the target rate (default
  (1.0, 0.7, 0.5, 0.35) for M = 4; in general 0.7 -> 0.5 -> 0.35 interpolated over
  modalities 1..M-1).
* Outcomes: ``logit_it = c_t + beta_t . u_i + sum_m eta_mt delta_im`` with
  ``beta_t = 2.0 * (0.6 w_s + 0.8 v_t)``, v_t a random unit vector orthogonal to w_s
  (severity matters for every task), and the direct pattern effect
  ``eta_mt = pattern_effect * sign_mt * U(0.5, 1.5)`` for m >= 1, with signs
  alternating over modalities from a random start per task (so a task's direct effects
  never all cancel the severity-driven pattern-outcome link), and eta_0t = 0
  (modality 0 is always observed: its effect would be indistinguishable from c_t).
  plus a U-shaped risk ``nonlinearity * 0.75 * ((w_t . u_i)^2 - 1)`` along a random
  unit direction w_t per task (`u_shape_TxK`): in physiology both too low and too high
  are dangerous, and a linear model on the observed data cannot represent it.
  `pattern_effect` defaults to 0 for `mcar` (the pattern is then independent of the
  outcome) and 0.75 otherwise. c_t is found by bisection so that the mean true
  probability equals the prevalence; y ~ Bernoulli(true probability).

The world (A_m, w_s, beta, eta's signs and sizes, feature kinds) is drawn from its own
stream of `world_seed` (by default `seed`), so it does not depend on `n`, `mechanism` or
the rates; the patients (u, noise, the uniforms behind delta and y) come from a second
stream of `seed` drawn in a fixed order, so the same seed gives the same latent patients
under every mechanism and every world. Patient ids are a random sample of distinct integers in
[10_000_000, 99_999_999], in random order.

With the defaults (n = 20,000, `mnar`, seed 0; AUROCs on a random held-out half) the
oracle AUROC of the true probabilities is 0.890 / 0.882 / 0.868 for the three tasks,
and a logistic regression on the observed data (mean imputation plus missingness
indicators) trained on the other half reaches 0.851 / 0.846 / 0.820, i.e. 0.036-0.048
below; over seeds 0-4 the oracle lies in 0.86-0.89 and the gap in 0.03-0.055. Most of
that gap is irreducible (feature noise, modalities never observed): an MLP trained to
recover u from the same observed inputs (using u as its target, which no real model
has) gains only about 0.005 AUROC over the logistic regression.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import ml_collections
import numpy as np

from crl_mmnar_jax.cohort import MAX_MODALITIES, Cohort
from crl_mmnar_jax.data.loaded import Keep, LoadedData

MECHANISMS = ("mcar", "mar", "mnar")

_DEFAULT_WIDTHS_4 = (12, 48, 32, 24)
_DEFAULT_WIDTH_0 = 12
_DEFAULT_WIDTH_OTHER = 32
_DEFAULT_RATE_KNOTS = (0.7, 0.5, 0.35)
_DEFAULT_NOISE_0 = 1.5
_DEFAULT_NOISE_OTHER = 0.75
_DEFAULT_PATTERN_EFFECT = 0.75
_MODALITY0_DIRECTIONS = 2      # latent directions modality 0 can see
_SEVERITY_WEIGHT_ON_M0 = 0.25  # severity's (unnormalised) weight on those directions
_OUTCOME_SCALE = 2.0           # |beta_t|
_OUTCOME_SEVERITY_COS = 0.6    # cosine between beta_t and w_s
_TANH_GAIN = 2.0
_USHAPE_SCALE = 0.75           # gamma of the U-shaped risk term (times `nonlinearity`)
_ID_LOW, _ID_HIGH = 10_000_000, 99_999_999
_BISECTION_TOL = 1e-6
_BISECTION_MAX_STEPS = 100


@dataclasses.dataclass(frozen=True)
class SyntheticData:
  """A synthetic cohort plus the ground truth the model never sees."""

  cohort: Cohort              # validated; features zero where missing
  true_prob_NxT: np.ndarray   # (N, T) float64, P(y = 1 | u, delta)
  latent_NxK: np.ndarray      # (N, K) float64, u
  severity_N: np.ndarray      # (N,) float64, s = w_s . u
  eta_MxT: np.ndarray         # (M, T) float64, direct effect of delta_m on the logit
  u_shape_TxK: np.ndarray     # (T, K) float64 unit directions of the U-shaped risk
  mechanism: str              # 'mcar', 'mar' or 'mnar'


def sigmoid(x: np.ndarray) -> np.ndarray:
  """Overflow-free logistic function."""
  return 0.5 * (1.0 + np.tanh(0.5 * x))


def calibrate_offsets(scores_NxJ: np.ndarray, targets_J: np.ndarray) -> np.ndarray:
  """Offsets a_J with mean_i sigmoid(a_j + scores[i, j]) = targets[j], by bisection.

  All columns are bisected at once on the sample mean. Since the mean lies between
  sigmoid(a - max|s|) and sigmoid(a + max|s|), the root lies within max|s| of
  logit(target), which brackets it. A target of 1.0 gets +inf (always 1).
  """
  reach = 1.0 + float(np.max(np.abs(scores_NxJ), initial=0.0))
  inner_J = np.clip(targets_J, 1e-12, 1.0 - 1e-12)
  logit_J = np.log(inner_J) - np.log1p(-inner_J)
  lo_J, hi_J = logit_J - reach, logit_J + reach
  # sigmoid(x) = (1 + tanh(x / 2)) / 2, so compare mean tanh with 2 * target - 1.
  half_NxJ = (0.5 * scores_NxJ).astype(np.float32)
  tanh_target_J = 2.0 * inner_J - 1.0
  buf_NxJ = np.empty(half_NxJ.shape, dtype=np.float32)
  for _ in range(_BISECTION_MAX_STEPS):
    if np.max(hi_J - lo_J) < _BISECTION_TOL:
      break
    mid_J = 0.5 * (lo_J + hi_J)
    np.add(half_NxJ, (0.5 * mid_J).astype(np.float32), out=buf_NxJ)
    np.tanh(buf_NxJ, out=buf_NxJ)
    too_high_J = buf_NxJ.mean(axis=0, dtype=np.float64) > tanh_target_J
    hi_J = np.where(too_high_J, mid_J, hi_J)
    lo_J = np.where(too_high_J, lo_J, mid_J)
  return np.where(targets_J >= 1.0, np.inf, 0.5 * (lo_J + hi_J))


def _broadcast(value, count: int, name: str, unit: str) -> tuple[float, ...]:
  """A real scalar repeated `count` times, or a flat sequence of `count` reals."""
  if np.ndim(value) == 0:
    return (_check_finite(value, name),) * count
  try:
    values = tuple(np.asarray(value, dtype=object).ravel().tolist())
  except ValueError:
    raise ValueError(f"{name} must be a number or a flat sequence, got {value!r}") from None
  if len(values) != count:
    raise ValueError(f"{name} must be a scalar or have one entry per {unit} ({count}), "
                     f"got {len(values)}: {value!r}")
  try:
    return tuple(_check_finite(v, name) for v in values)
  except ValueError:
    raise ValueError(f"{name} must contain finite real numbers, got {value!r}") from None


def _resolve_widths(widths, n_modalities: int) -> tuple[int, ...]:
  if widths is None:
    if n_modalities == 4:
      return _DEFAULT_WIDTHS_4
    return (_DEFAULT_WIDTH_0,) + (_DEFAULT_WIDTH_OTHER,) * (n_modalities - 1)
  if np.ndim(widths) == 0:
    raise ValueError(f"widths must be a sequence of {n_modalities} positive ints, "
                     f"got {widths!r}")
  widths_M = tuple(widths)
  if len(widths_M) != n_modalities:
    raise ValueError(f"widths must have one entry per modality (n_modalities="
                     f"{n_modalities}), got {len(widths_M)}: {widths!r}")
  for w in widths_M:
    if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer)) or w < 1:
      raise ValueError(f"widths must be positive ints, got {widths!r}")
  return tuple(int(w) for w in widths_M)


def _resolve_rates(observe_rate, n_modalities: int) -> np.ndarray:
  if observe_rate is None:
    knots = np.arange(len(_DEFAULT_RATE_KNOTS))
    where = np.linspace(0.0, knots[-1], n_modalities - 1)
    rest = np.round(np.interp(where, knots, _DEFAULT_RATE_KNOTS), 4)
    return np.concatenate([[1.0], rest])
  if np.ndim(observe_rate) == 0:
    rate = _check_finite(observe_rate, "observe_rate")
    rates_M = np.concatenate([[1.0], np.full(n_modalities - 1, rate)])
  else:
    rates_M = np.asarray(_broadcast(observe_rate, n_modalities, "observe_rate", "modality"))
  if not np.all(np.isfinite(rates_M)) or np.any((rates_M <= 0) | (rates_M > 1)):
    raise ValueError(f"observe_rate must lie in (0, 1], got {observe_rate!r}")
  if rates_M[0] != 1.0:
    raise ValueError(f"observe_rate[0] must be 1.0 (modality 0 is always observed), "
                     f"got {observe_rate!r}")
  return rates_M


def _check_finite(value, name: str, minimum: float | None = None) -> float:
  try:
    x = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a real number, got {value!r}") from None
  if not np.isfinite(x) or (minimum is not None and x < minimum):
    bound = "" if minimum is None else f" >= {minimum}"
    raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
  return x


def _check_int(value, name: str, minimum: int, maximum: int | None = None) -> int:
  if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))
      or value < minimum or (maximum is not None and value > maximum)):
    upper = "" if maximum is None else f" and <= {maximum}"
    raise ValueError(f"{name} must be an int >= {minimum}{upper}, got {value!r}")
  return int(value)


def _unit_rows(a_RxC: np.ndarray) -> np.ndarray:
  return a_RxC / np.linalg.norm(a_RxC, axis=1, keepdims=True)


def make_synthetic(
    n: int = 20_000,
    *,
    n_modalities: int = 4,
    widths: Sequence[int] | None = None,
    n_tasks: int = 3,
    mechanism: str = "mnar",
    observe_rate: float | Sequence[float] | None = None,
    prevalence: float | Sequence[float] = 0.2,
    pattern_effect: float | None = None,
    missingness_strength: float = 1.5,
    latent_dim: int = 8,
    noise: float | Sequence[float] | None = None,
    nonlinearity: float = 1.0,
    seed: int = 0,
    world_seed: int | None = None,
) -> SyntheticData:
  """Draws a synthetic multimodal cohort with clinician-driven missingness.

  Args:
    n: number of patients (>= 10).
    n_modalities: M >= 2 (modality 0 is always observed).
    widths: feature width per modality (M positive ints); default (12, 48, 32, 24)
      for M = 4, else 12 then 32 each.
    n_tasks: T >= 1 binary outcomes.
    mechanism: 'mcar' (constant test-ordering probability), 'mar' (driven by modality
      0's content) or 'mnar' (driven by the latent severity).
    observe_rate: target observation rate per modality, each in (0, 1] with entry 0
      equal to 1.0; a scalar applies to modalities 1..M-1.
    prevalence: target mean outcome probability, a scalar or one per task, in (0, 1).
    pattern_effect: scale of the direct effect eta of the pattern on the outcome
      logit; None -> 0.0 for 'mcar' and 0.75 otherwise.
    missingness_strength: coefficient of the driver in the observation logit (>= 0).
    latent_dim: K >= 2, dimension of the latent health state.
    noise: feature noise sd, a scalar or one per modality (>= 0); default 1.5 for
      modality 0 and 0.75 for the others.
    nonlinearity: scale of the U-shaped risk term (>= 0; 0 gives a logit linear in
      u and delta).
    seed: seed of `np.random.default_rng`: the patients, and the world too unless
      `world_seed` is given.
    world_seed: seed of the world alone (loadings, severity and outcome directions,
      pattern effects, feature kinds); None means `seed`. Cohorts with one world seed
      and different seeds are independent draws of patients from one world, of any
      size (the offsets a_m and c_t are still calibrated on each sample, which moves
      them by O(1/sqrt(n))).

  Returns:
    `SyntheticData` with a validated `Cohort` (modalities 'm0'.., tasks 'task0'..).

  Raises:
    ValueError: on any invalid argument, naming it and its value.
  """
  n = _check_int(n, "n", 10, _ID_HIGH - _ID_LOW + 1)
  m_count = _check_int(n_modalities, "n_modalities", 2, MAX_MODALITIES)
  t_count = _check_int(n_tasks, "n_tasks", 1)
  k_dim = _check_int(latent_dim, "latent_dim", 2)
  seed = _check_int(seed, "seed", 0)
  world_seed = seed if world_seed is None else _check_int(world_seed, "world_seed", 0)
  if mechanism not in MECHANISMS:
    raise ValueError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
  widths_M = _resolve_widths(widths, m_count)
  rates_M = _resolve_rates(observe_rate, m_count)
  prevalence_T = np.asarray(_broadcast(prevalence, t_count, "prevalence", "task"))
  if np.any((prevalence_T <= 0) | (prevalence_T >= 1)):
    raise ValueError(f"prevalence must lie in (0, 1), got {prevalence!r}")
  if pattern_effect is None:
    pattern_effect = 0.0 if mechanism == "mcar" else _DEFAULT_PATTERN_EFFECT
  pattern_effect = _check_finite(pattern_effect, "pattern_effect")
  strength = _check_finite(missingness_strength, "missingness_strength", minimum=0.0)
  nonlinearity = _check_finite(nonlinearity, "nonlinearity", minimum=0.0)
  if noise is None:
    noise_M = (_DEFAULT_NOISE_0,) + (_DEFAULT_NOISE_OTHER,) * (m_count - 1)
  else:
    noise_M = _broadcast(noise, m_count, "noise", "modality")
    if not all(np.isfinite(s) and s >= 0 for s in noise_M):
      raise ValueError(f"noise must be finite and >= 0, got {noise!r}")

  world_rng = np.random.default_rng(world_seed).spawn(2)[0]
  patient_rng = np.random.default_rng(seed).spawn(2)[1]

  # The world: loadings, severity direction, outcome directions, pattern effects.
  k0 = min(_MODALITY0_DIRECTIONS, k_dim - 1)
  loadings_DxK = []
  for m, width in enumerate(widths_M):
    a_DxK = world_rng.standard_normal((width, k_dim))
    if m == 0:
      a_DxK[:, k0:] = 0.0
    loadings_DxK.append(_unit_rows(a_DxK).astype(np.float32))
  is_tanh = [world_rng.permutation(w) < w // 2 for w in widths_M]
  mar_weights_D = world_rng.standard_normal(widths_M[0])
  sev_K = np.where(np.arange(k_dim) < k0, _SEVERITY_WEIGHT_ON_M0, 1.0)
  sev_K = sev_K / np.linalg.norm(sev_K)
  v_TxK = world_rng.standard_normal((t_count, k_dim))
  v_TxK = _unit_rows(v_TxK - np.outer(v_TxK @ sev_K, sev_K))
  cos = _OUTCOME_SEVERITY_COS
  beta_TxK = _OUTCOME_SCALE * (cos * sev_K + np.sqrt(1.0 - cos**2) * v_TxK)
  # Alternating signs over modalities (random start per task): no task's direct
  # effects all cancel, or all amplify, the severity-driven pattern-outcome link.
  start_T = world_rng.choice([-1.0, 1.0], size=t_count)
  signs_MxT = np.where(np.arange(m_count)[:, None] % 2 == 1, 1.0, -1.0) * start_T
  sizes_MxT = world_rng.uniform(0.5, 1.5, size=(m_count, t_count))
  eta_MxT = pattern_effect * signs_MxT * sizes_MxT + 0.0  # + 0.0: no negative zeros
  eta_MxT[0] = 0.0
  # U-shaped risk (drawn last, so the rest of the world is unchanged by it).
  ushape_TxK = _unit_rows(world_rng.standard_normal((t_count, k_dim)))

  # The patients, always drawn in this order (same latent patients for any mechanism).
  latent_NxK = patient_rng.standard_normal((n, k_dim))
  latent32_KxN = np.ascontiguousarray(latent_NxK.T, dtype=np.float32)
  content = []
  for m in range(m_count):
    # Built feature-major (D, N) so that row operations are contiguous, then transposed.
    x_DxN = loadings_DxK[m] @ latent32_KxN
    rows = np.flatnonzero(is_tanh[m])
    x_DxN[rows] = np.tanh(np.float32(_TANH_GAIN) * x_DxN[rows])
    noise_DxN = patient_rng.standard_normal(x_DxN.shape, dtype=np.float32)
    noise_DxN *= np.float32(noise_M[m])
    x_DxN += noise_DxN
    content.append(np.ascontiguousarray(x_DxN.T))
  observe_u_NxM = patient_rng.random((n, m_count))
  label_u_NxT = patient_rng.random((n, t_count))
  patient_id = patient_rng.choice(_ID_HIGH - _ID_LOW + 1, size=n, replace=False)
  patient_id = patient_id.astype(np.int64) + _ID_LOW

  severity_N = latent_NxK @ sev_K
  if mechanism == "mcar":
    driver_N = np.zeros(n)
  elif mechanism == "mar":
    score_N = content[0].astype(np.float64) @ mar_weights_D
    driver_N = (score_N - score_N.mean()) / max(float(score_N.std()), 1e-12)
  else:
    driver_N = severity_N
  drive_NxJ = np.broadcast_to((strength * driver_N)[:, None], (n, m_count - 1))
  offsets_J = calibrate_offsets(drive_NxJ, rates_M[1:])
  observe_prob_NxJ = sigmoid(drive_NxJ + offsets_J)
  present_NxM = np.ones((n, m_count), dtype=bool)
  present_NxM[:, 1:] = observe_u_NxM[:, 1:] < observe_prob_NxJ

  outcome_NxT = latent_NxK @ beta_TxK.T + present_NxM.astype(np.float64) @ eta_MxT
  outcome_NxT += nonlinearity * _USHAPE_SCALE * ((latent_NxK @ ushape_TxK.T) ** 2 - 1.0)
  intercept_T = calibrate_offsets(outcome_NxT, prevalence_T)
  true_prob_NxT = sigmoid(outcome_NxT + intercept_T)
  labels_NxT = (label_u_NxT < true_prob_NxT).astype(np.float32)

  for m, x_NxD in enumerate(content):
    x_NxD[~present_NxM[:, m]] = 0.0
  features = tuple(content)
  cohort = Cohort(
      patient_id=patient_id,
      features=features,
      present=present_NxM,
      labels=labels_NxT,
      modality_names=tuple(f"m{m}" for m in range(m_count)),
      task_names=tuple(f"task{t}" for t in range(t_count)),
      feature_names=tuple(tuple(f"m{m}_{j}" for j in range(w))
                          for m, w in enumerate(widths_M)),
  ).validate("synthetic")
  return SyntheticData(
      cohort=cohort,
      true_prob_NxT=true_prob_NxT,
      latent_NxK=latent_NxK,
      severity_N=severity_N,
      eta_MxT=eta_MxT,
      u_shape_TxK=ushape_TxK,
      mechanism=mechanism,
  )


def from_config(config: ml_collections.ConfigDict, keep: Keep | None = None) -> LoadedData:
  """`data.name = "synthetic"`: the whole generated cohort (`data.load` applies `keep`)."""
  d = config.data
  syn = make_synthetic(
      int(d.n), n_modalities=int(d.n_modalities), n_tasks=int(d.n_tasks),
      mechanism=str(d.mechanism), prevalence=float(d.prevalence),
      pattern_effect=None if d.pattern_effect < 0 else float(d.pattern_effect),
      seed=int(d.seed),
      world_seed=None if d.world_seed < 0 else int(d.world_seed))
  return LoadedData(syn.cohort, syn.true_prob_NxT, {"mechanism": syn.mechanism})
