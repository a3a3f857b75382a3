"""MMNAR injection: severity-driven missingness plus a known direct pattern effect.

Starting from a cohort whose missingness is (close to) random, `inject_mmnar` makes it
MMNAR in a controlled way, so that what the rectifier should find is known exactly:

1. **Drops.** Each listed modality m >= 1 is dropped, only where it was observed, with
   probability ``sigmoid(a_m + strength * z_i)``, z the standardised severity
   (mean 0, sd 1 over all patients). a_m is found by bisection (as in `synthetic.py`)
   so that the mean drop probability over the patients observing m equals
   ``drop_rate``. ``strength = 0`` gives the constant probability ``drop_rate``: drops
   are then independent of severity (MCAR-style); ``strength > 0`` drops sicker
   patients' tests more often, ``strength < 0`` less often. A dropped modality's
   features become exactly 0 and its `present` entry False. Modality 0 (the
   always-observed one, e.g. demographics) is never dropped.
2. **Direct pattern effect.** Patients whose new pattern id equals `target_pattern` get
   their outcome probability moved by ``effect`` (per task, probability scale):

   * With ``true_prob_NxT`` (synthetic data, p = the true probabilities): every label is
     redrawn as ``y = 1[u < clip(p + effect * 1[pattern = target], 0, 1)]`` with one
     fixed uniform u per patient and task (drawn from `seed` alone, so the same patient
     gets the same u under every strength and effect). The true per-patient shift is
     ``clip(p + effect) - p`` and `effect_T` is its exact mean over the target pattern
     (equal to `effect` unless clipping bites).
   * Without it (real data): the target pattern's labels are flipped 0 -> 1 with
     probability ``effect / (1 - b)`` (``effect > 0``) or 1 -> 0 with probability
     ``-effect / b`` (``effect < 0``), b the pattern's observed outcome rate after the
     drops. Every other label is kept. A patient with (unknown) outcome probability p_i
     then has ``p_i + (1 - p_i) * effect / (1 - b)`` (resp. ``p_i * (1 + effect / b)``):
     the pattern's mean outcome probability moves by exactly `effect` in expectation
     (``E[1 - p_i] = 1 - b``), but per patient the shift is proportional to 1 - p_i
     (resp. p_i), not constant. `effect_T` is then the nominal `effect`.

   `label_change_T` is the realised mean change of the target pattern's labels caused
   by the effect: against the labels drawn with the same uniforms and no effect
   (synthetic) or against the original labels (real).

The drops use the first stream of ``np.random.default_rng(seed).spawn(2)`` and the
labels the second, so drops and labels are coupled across settings.

Example::

  syn = synthetic.make_synthetic(4000, mechanism="mcar", seed=0)
  inj = inject_mmnar(syn.cohort, syn.severity_N, modalities=(1, 2, 3), strength=2.0,
                     drop_rate=0.3, target_pattern=1, effect=0.1,
                     true_prob_NxT=syn.true_prob_NxT, seed=0)
  inj.cohort, inj.effect_T, inj.true_prob_NxT
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from crl_mmnar_jax.cohort import Cohort, pattern_label
from crl_mmnar_jax.data.sources.synthetic import calibrate_offsets, sigmoid


@dataclasses.dataclass(frozen=True)
class Injected:
  """An injected cohort and its ground truth."""

  cohort: Cohort                    # validated; dropped rows zeroed, labels redrawn/flipped
  drop_prob_NxM: np.ndarray         # (N, M) P(modality m dropped); 0 where unlisted/unobserved
  dropped_NxM: np.ndarray           # (N, M) bool, the realised drops
  target_N: np.ndarray              # (N,) bool, new pattern == target_pattern
  target_pattern: int | None
  effect_T: np.ndarray              # (T,) true mean effect on the target pattern (prob. scale)
  label_change_T: np.ndarray        # (T,) realised mean label change on the target pattern
  true_prob_NxT: np.ndarray | None  # (N, T) new true probabilities (synthetic input only)


# ----------------------------------------------------------------------------- checks


def _modality_indices(modalities: Any, cohort: Cohort) -> list[int]:
  """Distinct modality indices in 1..M-1, from indices or names."""
  items = [modalities] if isinstance(modalities, (int, str, np.integer)) else list(modalities)
  if not items:
    raise ValueError("modalities must name at least one modality to drop")
  out = []
  for m in items:
    if isinstance(m, str):
      if m not in cohort.modality_names:
        raise ValueError(f"unknown modality {m!r}; have {list(cohort.modality_names)}")
      m = cohort.modality_names.index(m)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
      raise ValueError(f"modalities must be indices or names, got {m!r}")
    if not 0 <= m < cohort.n_modalities:
      raise ValueError(f"modality index {m} out of range 0..{cohort.n_modalities - 1}")
    if m == 0:
      raise ValueError("modality 0 is the always-observed modality and cannot be dropped")
    out.append(int(m))
  if len(set(out)) != len(out):
    raise ValueError(f"modalities must be distinct, got {items!r}")
  return out


def _per_item(value: Any, count: int, name: str, low: float, high: float) -> np.ndarray:
  """A scalar or `count` values, each finite and in [low, high]."""
  try:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (count,)).copy()
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number or {count} numbers, got {value!r}") from None
  if not np.all(np.isfinite(arr)) or np.any((arr < low) | (arr > high)):
    raise ValueError(f"{name} must lie in [{low}, {high}], got {value!r}")
  return arr


def _standardised(severity_N: Any, n: int, strength: float) -> np.ndarray:
  s = np.asarray(severity_N, dtype=np.float64)
  if s.shape != (n,):
    raise ValueError(f"severity_N must have shape ({n},), got {s.shape}")
  if not np.all(np.isfinite(s)):
    raise ValueError("severity_N must be finite")
  if strength == 0.0:
    return np.zeros(n)
  sd = float(s.std())
  if sd == 0.0:
    raise ValueError("severity_N is constant; it cannot drive missingness (strength != 0)")
  return (s - s.mean()) / sd


def _check_true_prob(true_prob_NxT: Any, shape: tuple[int, int]) -> np.ndarray:
  p = np.asarray(true_prob_NxT, dtype=np.float64)
  if p.shape != shape:
    raise ValueError(f"true_prob_NxT must have shape {shape}, got {p.shape}")
  if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
    raise ValueError("true_prob_NxT must lie in [0, 1]")
  return p


# ----------------------------------------------------------------------------- steps


def _target_mean(x_NxT: np.ndarray, target_N: np.ndarray) -> np.ndarray:
  """Per task, the mean over target rows of the non-NaN entries (0 where there are none)."""
  x_KxT = x_NxT[target_N]
  known_KxT = ~np.isnan(x_KxT)
  count_T = known_KxT.sum(0)
  return np.where(known_KxT, x_KxT, 0.0).sum(0) / np.maximum(count_T, 1)


def drop_probabilities(z_N: np.ndarray, observed_N: np.ndarray, strength: float,
                       drop_rate: float) -> np.ndarray:
  """sigmoid(a + strength * z) with mean drop_rate over the observed rows; 0 elsewhere."""
  if strength == 0.0 or drop_rate in (0.0, 1.0):
    prob_N = np.full(z_N.shape, drop_rate)
  else:
    scores_N = strength * z_N
    offset = calibrate_offsets(scores_N[observed_N, None], np.array([drop_rate]))[0]
    prob_N = sigmoid(scores_N + offset)
  return np.where(observed_N, prob_N, 0.0)


def _synthetic_labels(labels_NxT: np.ndarray, true_prob_NxT: np.ndarray, shift_T: np.ndarray,
                      target_N: np.ndarray, u_NxT: np.ndarray):
  """(labels, new true probabilities, exact mean effect, realised label change)."""
  new_prob_NxT = np.clip(true_prob_NxT + np.outer(target_N, shift_T), 0.0, 1.0)
  known_NxT = ~np.isnan(labels_NxT)
  new_NxT = np.where(known_NxT, (u_NxT < new_prob_NxT).astype(np.float32), np.nan)
  without_NxT = np.where(known_NxT, (u_NxT < true_prob_NxT).astype(np.float32), np.nan)
  effect_T = _target_mean(new_prob_NxT - true_prob_NxT, target_N)
  change_T = _target_mean(new_NxT - without_NxT, target_N)
  return new_NxT.astype(np.float32), new_prob_NxT, effect_T, change_T


def _flipped_labels(labels_NxT: np.ndarray, effect_T: np.ndarray, target_N: np.ndarray,
                    u_NxT: np.ndarray, target_pattern: int):
  """(labels, realised label change): real data, flips inside the target pattern."""
  y_NxT = labels_NxT.astype(np.float64)
  new_NxT = y_NxT.copy()
  for t, effect in enumerate(effect_T):
    if effect == 0.0:
      continue
    y_K = y_NxT[target_N, t]
    base = float(np.nanmean(y_K)) if np.any(~np.isnan(y_K)) else math.nan
    if math.isnan(base):
      raise ValueError(f"task {t}: pattern {target_pattern} has no known label to flip")
    source, room = (0.0, 1.0 - base) if effect > 0 else (1.0, base)
    q = abs(effect) / room if room > 0 else math.inf
    if q > 1.0:
      raise ValueError(f"task {t}: effect {effect} is out of reach for pattern "
                       f"{target_pattern} (base rate {base:.3f}; |effect| must be <= "
                       f"{room:.3f})")
    flip_N = target_N & (y_NxT[:, t] == source) & (u_NxT[:, t] < q)
    new_NxT[flip_N, t] = 1.0 - source
  change_T = _target_mean(new_NxT - y_NxT, target_N)
  return new_NxT.astype(np.float32), change_T


# ----------------------------------------------------------------------------- main


def inject_mmnar(cohort: Cohort,
                 severity_N: Any,
                 *,
                 modalities: Sequence[int | str] | int | str,
                 strength: float,
                 drop_rate: float | Sequence[float],
                 target_pattern: int | None = None,
                 effect: float | Sequence[float] = 0.0,
                 true_prob_NxT: Any = None,
                 seed: int = 0) -> Injected:
  """Injects severity-driven drops and a known direct pattern effect (module docstring).

  Args:
    cohort: the starting cohort (missingness close to random); modality 0 must be
      observed for every patient.
    severity_N: (N,) severity (any scale; standardised here).
    modalities: modality indices (>= 1) or names to drop from.
    strength: coefficient of the standardised severity in the drop logit; 0 = MCAR.
    drop_rate: mean drop probability among patients observing the modality, in
      [0, 1]; a scalar or one per listed modality.
    target_pattern: pattern id (after the drops) that gets the direct effect.
    effect: shift of the outcome probability of the target pattern, in [-1, 1]; a
      scalar or one per task. Non-zero requires `target_pattern`.
    true_prob_NxT: (N, T) true outcome probabilities (synthetic data): labels are
      redrawn for every patient; None (real data): target labels are flipped.
    seed: seeds the drops and the label uniforms.

  Returns:
    `Injected` with the validated new cohort and the ground truth.

  Raises:
    ValueError: on bad input, naming the argument.
  """
  cohort.validate("inject_mmnar")
  n, t_count = cohort.n, cohort.n_tasks
  if not cohort.present[:, 0].all():
    raise ValueError(f"modality 0 ('{cohort.modality_names[0]}') must be observed for "
                     "every patient (it is the always-observed modality)")
  drop_m = _modality_indices(modalities, cohort)
  try:
    strength = float(strength)
  except (TypeError, ValueError):
    raise ValueError(f"strength must be a number, got {strength!r}") from None
  if not math.isfinite(strength):
    raise ValueError(f"strength must be finite, got {strength!r}")
  rate_J = _per_item(drop_rate, len(drop_m), "drop_rate", 0.0, 1.0)
  effect_T = _per_item(effect, t_count, "effect", -1.0, 1.0)
  if target_pattern is None and np.any(effect_T != 0.0):
    raise ValueError("a non-zero effect needs a target_pattern")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be an int >= 0, got {seed!r}")
  z_N = _standardised(severity_N, n, strength)
  p_NxT = None if true_prob_NxT is None else _check_true_prob(true_prob_NxT, (n, t_count))

  drop_rng, label_rng = np.random.default_rng(int(seed)).spawn(2)
  drop_u_NxM = drop_rng.random((n, cohort.n_modalities))
  label_u_NxT = label_rng.random((n, t_count))

  drop_prob_NxM = np.zeros((n, cohort.n_modalities))
  for m, rate in zip(drop_m, rate_J):
    drop_prob_NxM[:, m] = drop_probabilities(z_N, cohort.present[:, m], strength, rate)
  dropped_NxM = drop_u_NxM < drop_prob_NxM
  present_NxM = cohort.present & ~dropped_NxM
  features = tuple(np.where(present_NxM[:, m:m + 1], x, np.float32(0.0)).astype(np.float32)
                   for m, x in enumerate(cohort.features))
  dropped = dataclasses.replace(cohort, features=features, present=present_NxM)

  pattern_N = dropped.pattern
  target_N = np.zeros(n, bool)
  if target_pattern is not None:
    if isinstance(target_pattern, bool) or not isinstance(target_pattern, (int, np.integer)):
      raise ValueError(f"target_pattern must be an int pattern id, got {target_pattern!r}")
    target_N = pattern_N == int(target_pattern)
    if not target_N.any():
      seen = sorted(set(pattern_N.tolist()))
      raise ValueError(f"unknown pattern: no patient has pattern {target_pattern} "
                       f"({pattern_label(int(target_pattern), cohort.modality_names)}) "
                       f"after injection; patterns present: {seen}")
    target_pattern = int(target_pattern)

  if p_NxT is not None:
    labels_NxT, new_prob_NxT, true_effect_T, change_T = _synthetic_labels(
        cohort.labels, p_NxT, effect_T, target_N, label_u_NxT)
  else:
    labels_NxT, change_T = _flipped_labels(cohort.labels, effect_T, target_N, label_u_NxT,
                                           target_pattern)
    new_prob_NxT, true_effect_T = None, effect_T
  new = dataclasses.replace(dropped, labels=labels_NxT).validate("inject_mmnar")
  return Injected(cohort=new, drop_prob_NxM=drop_prob_NxM, dropped_NxM=dropped_NxM,
                  target_N=target_N, target_pattern=target_pattern, effect_T=true_effect_T,
                  label_change_T=change_T, true_prob_NxT=new_prob_NxT)
