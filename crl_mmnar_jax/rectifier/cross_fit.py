"""`fit`: the rectifier by K-fold cross-fitting on the fitting (validation) rows.

The steps of the package docstring (`rectifier`), one function each:

1. `_check_data`: the arrays, validated;
2. `_deal_cells`: rows dealt to K folds stratified by pattern, and their cells
   (fold * P_pad + pattern index), padded to size buckets;
3. `_out_of_fold`: per-cell sums on the device (`_segment_sums`), then per fold the
   out-of-fold statistics: τ̂ and its standard error, the global mean, the shrunk τ̂
   and the κ gate of every κ of the grid;
4. `_choose`: κ and λ per task on the cross-fitted predictions (`rectifier.select`),
   and the AUROC guard;
5. `_final_table`: the table applied to new data, from the K out-of-fold estimates.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crl_mmnar_jax.rectifier import checks as checks
from crl_mmnar_jax.rectifier import folds as folds_lib
from crl_mmnar_jax.rectifier import select as select_lib
from crl_mmnar_jax.rectifier.result import Rectifier

MAX_ROWS = 1 << 24            # counts are float32 sums inside the segment sum: exact below


# ----------------------------------------------------------------------------
# Device kernels (float32).
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num_segments",))
def _segment_sums(probs_NxT: jax.Array, labels_NxT: jax.Array, cell_N: jax.Array, *,
                  num_segments: int) -> jax.Array:
  """Per-cell sums of r, r² and the known count: (num_segments, 3 * T)."""
  known_NxT = ~jnp.isnan(labels_NxT)
  r_NxT = jnp.where(known_NxT, labels_NxT - probs_NxT, 0.0)
  data_Nx3T = jnp.concatenate([r_NxT, r_NxT * r_NxT, known_NxT.astype(jnp.float32)],
                              axis=1)
  return jax.ops.segment_sum(data_Nx3T, cell_N, num_segments=num_segments)


# ----------------------------------------------------------------------------
# Statistics (host side, float64; small arrays of shape (..., P, T)).
# ----------------------------------------------------------------------------


def _mean_and_se(s1: np.ndarray, s2: np.ndarray,
                 n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean (NaN where n = 0) and standard error sd/sqrt(n) (NaN where n < 2)."""
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = np.where(n > 0, s1 / n, np.nan)
    var = np.maximum(s2 - s1 * np.where(n > 0, s1 / n, 0.0), 0.0) / (n - 1)
    se = np.where(n > 1, np.sqrt(var / n), np.nan)
  return mean, se


def _shrink(tau: np.ndarray, n: np.ndarray, global_mean: np.ndarray, shrinkage: float,
            ok: np.ndarray) -> np.ndarray:
  """(n·τ + s·g) / (n + s) where `ok` (the minimum count is met), else 0."""
  with np.errstate(invalid="ignore", divide="ignore"):
    shrunk = (n * tau + shrinkage * global_mean) / (n + shrinkage)
  return np.where(ok, shrunk, 0.0)


def _gate(shrunk: np.ndarray, se: np.ndarray, ok: np.ndarray, kappa: np.ndarray,
          z: float) -> np.ndarray:
  """Where a cell is corrected: n large enough, |τ| > κ and (z > 0) |τ| − z·se > κ."""
  size = np.abs(shrunk)
  gate = ok & (size > kappa)
  if z > 0.0:
    with np.errstate(invalid="ignore"):
      gate &= np.nan_to_num(size - z * se, nan=-np.inf) > kappa
  return gate


# ----------------------------------------------------------------------------
# The steps of `fit`.
# ----------------------------------------------------------------------------


def _check_data(probs_NxT: Any, labels_NxT: Any,
                pattern_N: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(probs (N, T), labels (N, T), pattern (N,)), validated."""
  probs, _ = checks.as_probs("probs_NxT", probs_NxT)
  n, t = probs.shape
  if n == 0:
    raise ValueError("probs_NxT has no rows; the rectifier needs fitting data")
  if t == 0:
    raise ValueError(f"probs_NxT has no task columns, shape {probs.shape}")
  if n > MAX_ROWS:
    raise ValueError(f"probs_NxT has {n} rows; at most {MAX_ROWS} are supported "
                     "(counts are accumulated in float32)")
  labels = checks.as_labels("labels_NxT", labels_NxT, (n, t))
  pattern = checks.as_patterns("pattern_N", pattern_N, n)
  return probs, labels, pattern


@dataclasses.dataclass(frozen=True)
class _Cells:
  """The fitting rows dealt to K folds: cell = fold * p_pad + pattern index."""

  patterns_P: np.ndarray     # (P,) pattern ids seen, sorted
  folds_N: np.ndarray        # (N,) fold of each row
  cell_N: np.ndarray         # (n_pad,) cell of each row; padded rows: cell 0
  n: int                     # rows
  k: int                     # folds
  p: int                     # patterns
  p_pad: int                 # patterns, padded to a size bucket
  n_pad: int                 # rows, padded to a size bucket

  @property
  def c(self) -> int:
    """The number of cells, k * p_pad."""
    return self.k * self.p_pad


def _deal_cells(pattern: np.ndarray, n_folds: int, seed: int) -> _Cells:
  """Folds stratified by pattern (`folds.deal_folds`) and the cells, padded to size
  buckets (a few compiled shapes serve every size)."""
  n = pattern.shape[0]
  patterns_P, index_N = folds_lib.compact_patterns(pattern)
  p = patterns_P.shape[0]
  folds_N = folds_lib.deal_folds(index_N, p, n_folds, seed)
  p_pad, n_pad = folds_lib.bucket(p, 8), folds_lib.bucket(n, 1024)
  cell_N = np.zeros(n_pad, np.int32)
  cell_N[:n] = folds_N * p_pad + index_N
  return _Cells(patterns_P, folds_N, cell_N, n, n_folds, p, p_pad, n_pad)


@dataclasses.dataclass(frozen=True)
class _OutOfFold:
  """Per fold k, the statistics of the rows outside fold k (P axis padded to p_pad)."""

  sums_KxPx3xT: np.ndarray      # per-(fold, pattern) sums of r, r², known count
  tau_KxPxT: np.ndarray         # mean residual (NaN: no label)
  se_KxPxT: np.ndarray          # its standard error (NaN: n < 2)
  n_KxPxT: np.ndarray           # labelled rows
  n_KxT: np.ndarray             # labelled rows, all patterns
  global_KxT: np.ndarray        # global mean residual (NaN: no label)
  shrunk_KxPxT: np.ndarray      # shrunk τ̂ (0 below the minimum count)
  gate_IxKxPxT: np.ndarray      # bool: corrected at κ_i


def _out_of_fold(probs: np.ndarray, labels: np.ndarray, cells: _Cells, kappa_I: np.ndarray,
                 z: float, min_count: int, shrinkage: float) -> _OutOfFold:
  """Per-(fold, pattern, task) sums on the device, then the out-of-fold statistics
  (the sums over the other folds), shrunk and gated at every κ of the grid."""
  n, t = probs.shape
  k, p_pad = cells.k, cells.p_pad
  probs32 = np.zeros((cells.n_pad, t), np.float32)
  probs32[:n] = probs
  labels32 = np.full((cells.n_pad, t), np.nan, np.float32)   # padded rows: label unknown
  labels32[:n] = labels
  sums_KxPx3xT = np.asarray(
      _segment_sums(jnp.asarray(probs32), jnp.asarray(labels32), jnp.asarray(cells.cell_N),
                    num_segments=cells.c), dtype=np.float64).reshape(k, p_pad, 3, t)
  others_KxK = 1.0 - np.eye(k)
  oof_KxPx3xT = np.einsum("kj,jpst->kpst", others_KxK, sums_KxPx3xT)
  s1_oof, s2_oof, n_oof = (oof_KxPx3xT[:, :, i] for i in range(3))
  tau_oof_KxPxT, se_oof_KxPxT = _mean_and_se(s1_oof, s2_oof, n_oof)
  n_oof_KxT = n_oof.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    global_oof_KxT = np.where(n_oof_KxT > 0, s1_oof.sum(1) / n_oof_KxT, np.nan)
  ok_oof_KxPxT = n_oof >= max(min_count, 1)
  shrunk_oof_KxPxT = _shrink(np.nan_to_num(tau_oof_KxPxT), n_oof,
                             global_oof_KxT[:, None, :], shrinkage, ok_oof_KxPxT)
  gate_IxKxPxT = _gate(shrunk_oof_KxPxT[None], se_oof_KxPxT[None], ok_oof_KxPxT[None],
                       kappa_I[:, None, None, None], z)
  return _OutOfFold(sums_KxPx3xT, tau_oof_KxPxT, se_oof_KxPxT, n_oof, n_oof_KxT,
                    global_oof_KxT, shrunk_oof_KxPxT, gate_IxKxPxT)


def _cross_fitted(probs: np.ndarray, cells: _Cells, oof: _OutOfFold, lambda_J: np.ndarray,
                  i_T: np.ndarray, j_T: np.ndarray) -> np.ndarray:
  """The fitting rows' predictions rectified at (κ_{i_T}, λ_{j_T}) with τ̂ from the
  other folds."""
  n, t = probs.shape
  gate_KxPxT = np.take_along_axis(oof.gate_IxKxPxT, i_T[None, None, None, :], axis=0)[0]
  shift_CxT = (lambda_J[j_T] * np.where(gate_KxPxT, oof.shrunk_KxPxT, 0.0)).reshape(
      cells.c, t)
  return np.clip(probs + shift_CxT.astype(probs.dtype)[cells.cell_N[:n]], 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class _Choice:
  """The selected (κ, λ) per task and the selection's record."""

  i_T: np.ndarray               # index of κ in the grid
  j_T: np.ndarray               # index of λ in the grid
  passed_T: np.ndarray          # bool: the tested candidate passed the rule
  guarded_T: np.ndarray         # bool: dropped by the AUROC guard
  cv_loss_TxIxJ: np.ndarray
  cv_delta_TxIxJ: np.ndarray
  cv_se_TxIxJ: np.ndarray
  oof_probs_NxT: np.ndarray     # the fitting rows, rectified at the selection


def _choose(probs: np.ndarray, labels: np.ndarray, cells: _Cells, oof: _OutOfFold,
            kappa_I: np.ndarray, lambda_J: np.ndarray, selection: str, rule: str,
            rule_z: float, auroc_guard: bool) -> _Choice:
  """Cross-fitted choice of (κ, λ): float64 per-row loss changes of clip(p + λ·τ_oof)
  against p, summed per cell; the κ gate (per cell) picks the corrected cells. Then the
  AUROC guard, if on, drops the correction of tasks it ranks worse."""
  n, t = probs.shape
  k, p_pad, c = cells.k, cells.p_pad, cells.c
  sum_CxTxJ, sq_CxTxJ = select_lib.cell_delta_sums(
      probs, labels, cells.cell_N[:n], oof.shrunk_KxPxT.reshape(c, t), lambda_J, c,
      selection)
  cv_delta, se_fold, se_row = select_lib.candidate_stats(
      sum_CxTxJ.reshape(k, p_pad, t, -1), sq_CxTxJ.reshape(k, p_pad, t, -1),
      oof.gate_IxKxPxT, oof.sums_KxPx3xT[:, :, 2].sum(1))
  cv_se = se_row if rule == "lcb" else se_fold
  i_T, j_T, passed_T = select_lib.select(cv_delta, cv_se, kappa_I, lambda_J, rule=rule,
                                         z=rule_z)
  cv_loss = select_lib.raw_loss(probs, labels, selection)[:, None, None] + cv_delta

  oof_probs = _cross_fitted(probs, cells, oof, lambda_J, i_T, j_T)
  guarded_T = np.zeros(t, bool)
  if auroc_guard:
    guarded_T = lambda_J[j_T] > 0
    guarded_T &= ~select_lib.auroc_kept(probs, oof_probs, labels)
    if guarded_T.any():          # no correction for those tasks
      i0, j0 = (a[0] for a in select_lib.conservative_order(kappa_I, lambda_J))
      i_T, j_T = np.where(guarded_T, i0, i_T), np.where(guarded_T, j0, j_T)
      oof_probs = _cross_fitted(probs, cells, oof, lambda_J, i_T, j_T)
  return _Choice(i_T, j_T, passed_T, guarded_T, cv_loss, cv_delta, cv_se, oof_probs)


@dataclasses.dataclass(frozen=True)
class _Table:
  """The table applied to new data (P patterns, T tasks)."""

  count_PxT: np.ndarray         # labelled rows (float; exact integers)
  se_PxT: np.ndarray            # sd / sqrt(n) over all rows
  tau_raw_PxT: np.ndarray       # mean of the K OOF estimates (NaN: no label)
  global_mean_T: np.ndarray     # mean of the K OOF global means
  tau_PxT: np.ndarray           # shrunk, min-count and gated: the applied τ
  gate_PxT: np.ndarray          # bool: the gate at the selected κ


def _final_table(cells: _Cells, oof: _OutOfFold, kappa_T: np.ndarray, z: float,
                 min_count: int, shrinkage: float) -> _Table:
  """Mean of the K OOF estimates; counts on the OOF scale (the package docstring)."""
  p = cells.p
  n_oof = oof.n_KxPxT
  tot_Px3xT = oof.sums_KxPx3xT.sum(0)[:p]
  count_PxT = tot_Px3xT[:, 2]
  _, se_PxT = _mean_and_se(tot_Px3xT[:, 0], tot_Px3xT[:, 1], count_PxT)
  has_oof_KxPxT = n_oof[:, :p] > 0
  with np.errstate(invalid="ignore", divide="ignore"):
    tau_raw_PxT = np.where(has_oof_KxPxT, oof.tau_KxPxT[:, :p], 0.0).sum(0) / \
        has_oof_KxPxT.sum(0)
    has_global_KxT = oof.n_KxT > 0
    global_mean_T = np.where(has_global_KxT, oof.global_KxT, 0.0).sum(0) / \
        has_global_KxT.sum(0)
    n_bar_PxT = n_oof[:, :p].mean(0)                  # = (K − 1) / K · count
    se_gate_PxT = se_PxT * np.sqrt(count_PxT / n_bar_PxT)   # sd / sqrt(n̄)
  tau_raw_PxT = np.where(count_PxT > 0, tau_raw_PxT, np.nan)
  ok_PxT = n_oof[:, :p].min(0) >= max(min_count, 1)
  shrunk_PxT = _shrink(np.nan_to_num(tau_raw_PxT), n_bar_PxT, global_mean_T, shrinkage,
                       ok_PxT)
  gate_PxT = _gate(shrunk_PxT, se_gate_PxT, ok_PxT, kappa_T, z)
  return _Table(count_PxT, se_PxT, tau_raw_PxT, global_mean_T,
                np.where(gate_PxT, shrunk_PxT, 0.0), gate_PxT)


# ----------------------------------------------------------------------------
# Fitting.
# ----------------------------------------------------------------------------


def fit(probs_NxT: Any,
        labels_NxT: Any,
        pattern_N: Any,
        *,
        n_folds: int = 5,
        kappa_grid: Sequence[float] = (0.0, 0.01, 0.02, 0.05, 0.1),
        lambda_grid: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
        z: float = 0.0,
        min_count: int = 20,
        shrinkage: float = 20.0,
        seed: int = 0,
        task_names: Sequence[str] | None = None,
        selection: str = "brier",
        rule: str = select_lib.DEFAULT_RULE,
        rule_z: float = select_lib.DEFAULT_RULE_Z,
        auroc_guard: bool = True) -> Rectifier:
  """Fits the rectifier on held-out (validation) predictions by K-fold cross-fitting.

  Args:
    probs_NxT: (N, T) or (N,) predicted probabilities in [0, 1], from any model.
    labels_NxT: labels of the same shape: 0, 1, or NaN for unknown (ignored per task).
    pattern_N: (N,) non-negative integer pattern ids (bit m = modality m observed).
    n_folds: K >= 2 cross-fitting folds, stratified by pattern.
    kappa_grid: candidate thresholds κ >= 0; a pattern is corrected only where
      |τ| > κ.
    lambda_grid: candidate multipliers λ >= 0 of the correction.
    z: when > 0, additionally require |τ| − z·se > κ (se on the out-of-fold count
      scale, see the package docstring).
    min_count: patterns with fewer labelled out-of-fold rows get no correction (in the
      final table: fewer in any fold, i.e. min_k n_k < min_count).
    shrinkage: pseudo-count s of the shrinkage (n·τ + s·g) / (n + s) toward the
      global mean residual g, n the out-of-fold count; 0 disables it.
    seed: seeds the fold assignment.
    task_names: T names (default task0, task1, ...).
    selection: "brier" or "logloss", the cross-fitted criterion choosing κ and λ.
    rule: "lcb" (default), "one_se" or "min": when the best candidate of the grid is
      kept rather than the most conservative one (`rectifier.select`).
    rule_z: the multiplier z of the rule's standard error.
    auroc_guard: keep a task's correction only if the cross-fitted rectified
      predictions of the fitting rows rank them no worse than the raw ones (AUROC not
      lower); else the task gets no correction (`select.auroc_kept`).

  Returns:
    The fitted `Rectifier`, including the cross-fitted rectified predictions of the
    fitting rows (`oof_probs_NxT`, (N, T) even for 1-D input; in-sample for the
    choice of κ and λ) and the selection grids.

  Raises:
    ValueError: on malformed input, naming the argument and the offending value.
  """
  probs, labels, pattern = _check_data(probs_NxT, labels_NxT, pattern_N)
  n_folds = checks.integer("n_folds", n_folds, 2)
  kappa_I = np.array(checks.as_grid("kappa_grid", kappa_grid))
  lambda_J = np.array(checks.as_grid("lambda_grid", lambda_grid))
  z = checks.non_negative("z", z)
  min_count = checks.integer("min_count", min_count, 0)
  shrinkage = checks.non_negative("shrinkage", shrinkage)
  seed = checks.integer("seed", seed, 0)
  names = checks.task_names(task_names, probs.shape[1])
  selection = checks.one_of("selection", selection, select_lib.CRITERIA)
  rule = checks.one_of("rule", rule, select_lib.RULES)
  rule_z = checks.non_negative("rule_z", rule_z)

  cells = _deal_cells(pattern, n_folds, seed)
  oof = _out_of_fold(probs, labels, cells, kappa_I, z, min_count, shrinkage)
  choice = _choose(probs, labels, cells, oof, kappa_I, lambda_J, selection, rule, rule_z,
                   auroc_guard)
  kappa_T, lambda_T = kappa_I[choice.i_T], lambda_J[choice.j_T]
  table = _final_table(cells, oof, kappa_T, z, min_count, shrinkage)

  return Rectifier(
      patterns=cells.patterns_P,
      task_names=names,
      count_PxT=np.rint(table.count_PxT).astype(np.int64),
      tau_raw_PxT=table.tau_raw_PxT,
      se_PxT=table.se_PxT,
      tau_PxT=table.tau_PxT,
      corrected_PxT=table.gate_PxT & (lambda_T > 0.0),
      kappa_T=kappa_T,
      lambda_T=lambda_T,
      global_mean_T=table.global_mean_T,
      n_folds=n_folds,
      kappa_grid=tuple(kappa_I.tolist()),
      lambda_grid=tuple(lambda_J.tolist()),
      z=z,
      min_count=min_count,
      shrinkage=shrinkage,
      seed=seed,
      selection=selection,
      cv_loss_TxIxJ=choice.cv_loss_TxIxJ,
      rule=rule,
      rule_z=rule_z,
      cv_delta_TxIxJ=choice.cv_delta_TxIxJ,
      cv_se_TxIxJ=choice.cv_se_TxIxJ,
      passed_T=choice.passed_T,
      guarded_T=choice.guarded_T,
      auroc_guard=bool(auroc_guard),
      tau_oof_KxPxT=oof.tau_KxPxT[:, :cells.p],
      oof_probs_NxT=choice.oof_probs_NxT,
      folds_N=cells.folds_N,
  )
