"""Cross-fitted choice of the rectifier's κ and λ (used by `rectifier.fit`).

Per task, every candidate c = (κ_i, λ_j) of the grid is scored by its per-row loss
differences against the uncorrected predictions,

    d_n(c) = loss(clip(p_n + λ_j · g_n(κ_i) · τ_n), y_n) − loss(p_n, y_n),

where τ_n is the shrunk out-of-fold residual mean of row n's (fold, pattern) cell and
g_n(κ) its gate (minimum count, |τ| > κ, optional standard-error gate). Only rows with
a known label count; N is their number, N_k the number in fold k.

Precision: the d_n are computed in numpy float64 from the algebraically stable forms
(Brier: c (c − 2 (y − p)) with c = q − p; log loss: −log1p((q' − p') / p') on the
clipped probabilities p', q' given to the observed label) and summed per cell with float64
`np.bincount`. Differences of two large float32 loss sums lose the improvement to
cancellation at 10^4 rows; these sums do not. λ = 0 scores exactly 0.

Selection rules (`rule`, with multiplier z = `rule_z`). With
D(c) = Σ_n d_n(c) / N, the cross-fitted mean loss change (negative = better):

* "lcb" (default, z = 1.645): a paired lower confidence bound. Every candidate with
  λ > 0 gets the upper bound D(c) + z · se_row(c) on its loss change, with the
  row-level paired standard error se_row = sd_n(d_n) / sqrt(N) (ddof 1); the
  candidate with the smallest bound (largest lower bound on the improvement −D) is
  taken if that bound is < 0, i.e. if the improvement over λ = 0 is positive at
  one-sided level Φ(z). Rows of one (fold, pattern) cell share their correction and
  the folds' corrections reuse each other's rows, so se_row is not exact; the level
  is checked by simulation. Maximising the bound rather than the mean favours small
  λ and large κ when the evidence is marginal, which keeps the harm of a false
  positive small.
* "one_se": the one-standard-error rule on the paired difference against λ = 0:
  c* = argmin_c D(c) is taken if D(c*) + z · se_fold(c*) < 0, where se_fold =
  sd_k(D_k) / sqrt(K') is the spread across folds of the per-fold mean changes
  D_k = Σ_{n in fold k} d_n / N_k (ddof 1, over the K' folds with a labelled row;
  +inf when K' < 2); z = 1 is the classic rule.
* "min": c* = argmin_c D(c), whatever its spread (the rule before the audit).

Simulation (experiments/studies/rectifier_null.py, 200 runs: a calibrated model, 1,500
validation and 20,000 test rows, 8 equally likely patterns). Without any pattern
effect λ > 0 is chosen in 9% of runs by "lcb" (mean test ΔAUROC −0.00003), 19.5% by
"one_se" z = 1 (−0.00030), 9% by "one_se" z = 1.645 (−0.00016) and 48.5% by "min"
(−0.00042). With real ±0.08 shifts in two patterns (about 2.6 standard errors each
at ~190 rows per pattern) λ > 0 is chosen in 73% / 78% / 53% / 95.5% of runs; "lcb"
corrects each shifted pattern in about 68-70% of runs at 1,500 rows and in 90-92% at
3,000 rows.

After the rule, `rectifier.fit` applies the AUROC guard (`auroc_kept`, on by default):
a task's correction is dropped when its cross-fitted rectified predictions rank the
fitting rows worse than the raw ones.

Exact ties go to the most conservative candidate: smaller λ first, then larger κ. A
rule that rejects takes the most conservative candidate of the grid, which is "no
correction" whenever the λ grid holds 0 (the default); with a grid without 0 the user
asked for a correction and gets the smallest λ. With z = 0, "one_se" equals "min"
whenever the λ grid holds 0.
"""

from __future__ import annotations

import numpy as np

from crl_mmnar_jax import metrics

CRITERIA = ("brier", "logloss")
RULES = ("one_se", "lcb", "min")
DEFAULT_RULE = "lcb"
DEFAULT_RULE_Z = 1.645        # one-sided 95% lower bound on the improvement
LOGLOSS_EPS = 1e-6            # probabilities are clipped to [eps, 1 - eps] in log loss
_CHUNK_ROWS = 1 << 18         # rows per float64 pass (bounds the temporaries)


def row_loss_deltas(probs_NxT: np.ndarray, labels_NxT: np.ndarray, shift_NxT: np.ndarray,
                    lam: float, criterion: str) -> np.ndarray:
  """loss(clip(p + λ·shift, 0, 1)) − loss(p) per row and task, float64 (N, T).

  Rows with an unknown (NaN) label give 0. `criterion` is "brier" or "logloss" (with
  probabilities clipped to [LOGLOSS_EPS, 1 − LOGLOSS_EPS]).
  """
  rows = _Rows(probs_NxT, labels_NxT, shift_NxT, criterion)
  return rows.deltas(lam)


class _Rows:
  """The λ-independent float64 terms of a block of rows, for `deltas(λ)`."""

  def __init__(self, probs_NxT, labels_NxT, shift_NxT, criterion: str):
    if criterion not in CRITERIA:
      raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    self.criterion = criterion
    self.p_NxT = np.asarray(probs_NxT, dtype=np.float64)
    y_NxT = np.asarray(labels_NxT, dtype=np.float64)
    self.known_NxT = (~np.isnan(y_NxT)).astype(np.float64)
    self.shift_NxT = np.asarray(shift_NxT, dtype=np.float64)
    if criterion == "brier":
      self.r2_NxT = 2.0 * (np.nan_to_num(y_NxT) - self.p_NxT)      # 2 (y − p)
    else:
      self.pos_NxT = y_NxT == 1.0
      self.p_obs_NxT = np.clip(np.where(self.pos_NxT, self.p_NxT, 1.0 - self.p_NxT),
                               LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)

  def deltas(self, lam: float) -> np.ndarray:
    # c = q − p, zero where the label is unknown.
    q_NxT = np.clip(self.p_NxT + float(lam) * self.shift_NxT, 0.0, 1.0)
    c_NxT = (q_NxT - self.p_NxT) * self.known_NxT
    if self.criterion == "brier":
      return c_NxT * (c_NxT - self.r2_NxT)    # (y − q)² − (y − p)² = c (c − 2 (y − p))
    q_obs_NxT = np.clip(np.where(self.pos_NxT, self.p_NxT + c_NxT, 1.0 - self.p_NxT - c_NxT),
                        LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)
    return -np.log1p((q_obs_NxT - self.p_obs_NxT) / self.p_obs_NxT)


def raw_loss(probs_NxT: np.ndarray, labels_NxT: np.ndarray, criterion: str) -> np.ndarray:
  """Mean loss of the uncorrected predictions per task over known labels, float64 (T,).

  NaN for a task without a known label.
  """
  p_NxT = np.asarray(probs_NxT, dtype=np.float64)
  y_NxT = np.asarray(labels_NxT, dtype=np.float64)
  known_NxT = ~np.isnan(y_NxT)
  if criterion == "brier":
    loss_NxT = np.square(y_NxT - p_NxT)
  elif criterion == "logloss":
    p_obs = np.where(y_NxT == 1.0, p_NxT, 1.0 - p_NxT)
    loss_NxT = -np.log(np.clip(p_obs, LOGLOSS_EPS, 1.0 - LOGLOSS_EPS))
  else:
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
  n_T = known_NxT.sum(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(n_T > 0, np.where(known_NxT, loss_NxT, 0.0).sum(0) / n_T, np.nan)


def cell_delta_sums(probs_NxT: np.ndarray, labels_NxT: np.ndarray, cell_N: np.ndarray,
                    shift_CxT: np.ndarray, lambda_J: np.ndarray, num_cells: int,
                    criterion: str) -> tuple[np.ndarray, np.ndarray]:
  """Per-cell float64 sums of d and d² for each λ: two (C, T, J) arrays.

  Row n is corrected by λ_j · shift_CxT[cell_N[n]]; see `row_loss_deltas`.
  """
  n, t = np.shape(probs_NxT)
  lambda_J = np.asarray(lambda_J, dtype=np.float64)
  shift_CxT = np.asarray(shift_CxT, dtype=np.float64)
  sum_CTxJ = np.zeros((num_cells * t, lambda_J.shape[0]))
  sq_CTxJ = np.zeros_like(sum_CTxJ)
  for start in range(0, n, _CHUNK_ROWS):
    rows = slice(start, min(start + _CHUNK_ROWS, n))
    cell = np.asarray(cell_N[rows], dtype=np.int64)
    ids = (cell[:, None] * t + np.arange(t)).reshape(-1)
    block = _Rows(probs_NxT[rows], labels_NxT[rows], shift_CxT[cell], criterion)
    for j, lam in enumerate(lambda_J):
      if lam == 0.0:
        continue                     # no correction: exactly the raw loss
      d = block.deltas(lam).reshape(-1)
      sum_CTxJ[:, j] += np.bincount(ids, weights=d, minlength=num_cells * t)
      sq_CTxJ[:, j] += np.bincount(ids, weights=d * d, minlength=num_cells * t)
  shape = (num_cells, t, lambda_J.shape[0])
  return sum_CTxJ.reshape(shape), sq_CTxJ.reshape(shape)


def candidate_stats(sum_KxPxTxJ: np.ndarray, sq_KxPxTxJ: np.ndarray,
                    gate_IxKxPxT: np.ndarray, n_known_KxT: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean difference D and its two standard errors per task and candidate.

  Args:
    sum_KxPxTxJ, sq_KxPxTxJ: per (fold, pattern) cell sums of d and d² for each λ.
    gate_IxKxPxT: whether each cell is corrected at κ_i.
    n_known_KxT: labelled rows per fold and task.

  Returns:
    (D, se_fold, se_row), each (T, I, J) float64 (see the module docstring); a
    standard error is +inf where it cannot be estimated (fewer than two folds with a
    label, or fewer than two labelled rows).
  """
  g = gate_IxKxPxT.astype(np.float64)
  fold_TxIxKxJ = np.einsum("ikpt,kptj->tikj", g, sum_KxPxTxJ)
  sq_TxIxJ = np.einsum("ikpt,kptj->tij", g, sq_KxPxTxJ)
  total_TxIxJ = fold_TxIxKxJ.sum(2)
  n_KxT = np.asarray(n_known_KxT, dtype=np.float64)
  n_T = n_KxT.sum(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    delta = np.where(n_T[:, None, None] > 0, total_TxIxJ / n_T[:, None, None], 0.0)
    has_KxT = n_KxT > 0
    mean_TxIxKxJ = fold_TxIxKxJ / np.where(has_KxT, n_KxT, 1.0).T[:, None, :, None]
    w_TxK = has_KxT.T.astype(np.float64)
    k_T = w_TxK.sum(1)
    fold_mean = (np.einsum("tikj,tk->tij", mean_TxIxKxJ, w_TxK)
                 / np.maximum(k_T, 1.0)[:, None, None])
    dev2 = np.einsum("tikj,tk->tij",
                     np.square(mean_TxIxKxJ - fold_mean[:, :, None, :]), w_TxK)
    se_fold = np.where(k_T[:, None, None] >= 2,
                       np.sqrt(dev2 / np.maximum(k_T - 1.0, 1.0)[:, None, None]
                               / np.maximum(k_T, 1.0)[:, None, None]), np.inf)
    var_row = np.maximum(sq_TxIxJ - total_TxIxJ * delta, 0.0) / (n_T[:, None, None] - 1)
    se_row = np.where(n_T[:, None, None] >= 2,
                      np.sqrt(var_row / np.maximum(n_T, 1.0)[:, None, None]), np.inf)
  return delta, se_fold, se_row


def conservative_order(kappa_I: np.ndarray, lambda_J: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
  """(κ index, λ index) of every candidate, most conservative first.

  Order: λ ascending, then κ descending (then grid position, for repeated values).
  """
  kappa_I, lambda_J = np.asarray(kappa_I), np.asarray(lambda_J)
  i_IJ, j_IJ = np.meshgrid(np.arange(kappa_I.size), np.arange(lambda_J.size),
                           indexing="ij")
  i_C, j_C = i_IJ.reshape(-1), j_IJ.reshape(-1)
  order_C = np.lexsort((-kappa_I[i_C], lambda_J[j_C]))   # stable: grid position last
  return i_C[order_C], j_C[order_C]


def tested_candidate(delta_TxIxJ: np.ndarray, se_TxIxJ: np.ndarray | None,
                     kappa_I: np.ndarray, lambda_J: np.ndarray, *, rule: str,
                     z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per task, the candidate the rule tests and its bound: (i_T, j_T, bound_T).

  "min" and "one_se": c* = argmin D; "lcb": the λ > 0 candidate with the smallest
  D + z·se (the largest lower confidence bound on the improvement). bound_T is
  D + z·se of that candidate (D for "min"; +inf where an "lcb" grid has no λ > 0).
  Exact ties go to the most conservative candidate (`conservative_order`).
  """
  if rule not in RULES:
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
  i_C, j_C = conservative_order(kappa_I, lambda_J)
  t = delta_TxIxJ.shape[0]
  rows = np.arange(t)
  score_TxC = delta_TxIxJ[:, i_C, j_C]
  if rule == "lcb":
    if z > 0.0:                        # (0 · inf would be NaN)
      score_TxC = score_TxC + z * se_TxIxJ[:, i_C, j_C]
    score_TxC = np.where(np.asarray(lambda_J)[j_C] > 0.0, score_TxC, np.inf)
  best_T = np.argmin(score_TxC, axis=1)          # first minimum = most conservative
  i_T, j_T = i_C[best_T], j_C[best_T]
  bound_T = score_TxC[rows, best_T]
  if rule == "one_se" and z > 0.0:
    bound_T = bound_T + z * se_TxIxJ[rows, i_T, j_T]
  return i_T, j_T, bound_T


def select(delta_TxIxJ: np.ndarray, se_TxIxJ: np.ndarray | None, kappa_I: np.ndarray,
           lambda_J: np.ndarray, *, rule: str,
           z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per task, the chosen (κ index, λ index) and whether the tested candidate passed.

  `se_TxIxJ` is the standard error the rule uses (se_fold for "one_se", se_row for
  "lcb"; ignored by "min"). Returns (i_T, j_T, passed_T): the tested candidate
  (`tested_candidate`) where its bound is < 0, else the most conservative candidate
  of the grid; "min" always passes.
  """
  i_T, j_T, bound_T = tested_candidate(delta_TxIxJ, se_TxIxJ, kappa_I, lambda_J,
                                       rule=rule, z=z)
  if rule == "min":
    return i_T, j_T, np.ones(i_T.shape[0], bool)
  i_C, j_C = conservative_order(kappa_I, lambda_J)
  passed_T = bound_T < 0.0
  return (np.where(passed_T, i_T, i_C[0]), np.where(passed_T, j_T, j_C[0]), passed_T)


def auroc_kept(probs_NxT: np.ndarray, rectified_NxT: np.ndarray,
               labels_NxT: np.ndarray) -> np.ndarray:
  """(T,) bool: per task, whether the cross-fitted rectified predictions rank the
  labelled fitting rows no worse than the raw ones (AUROC not lower; True where the
  AUROC is undefined). A per-pattern shift that improves calibration can reorder
  patients across patterns: the guard keeps a correction only where that does not
  cost discrimination on the fitting rows."""
  out = np.ones(probs_NxT.shape[1], bool)
  for t in range(probs_NxT.shape[1]):
    known = ~np.isnan(labels_NxT[:, t])
    y = labels_NxT[known, t]
    raw = metrics.auroc(y, np.asarray(probs_NxT[known, t], np.float64))
    rect = metrics.auroc(y, np.asarray(rectified_NxT[known, t], np.float64))
    out[t] = not (rect < raw)
  return out
