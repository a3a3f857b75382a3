"""Pattern-wise post-hoc correction ("rectifier") of any model's probabilities.

docs/design.md, "The method", item 10. After a model is trained, for task t and observation
pattern δ the rectifier estimates the mean residual

    τ̂_{δ,t} = mean over fitting patients with pattern δ of (y − p̂)

on the probability scale and, where that shift is worth it, applies
``p' = clip(p + λ_t · τ_{δ,t}, 0, 1)``. Everything is estimated by K-fold
cross-fitting on the fitting (validation) data only (docs/design.md, "Evaluation"):

1. Rows are dealt to K folds stratified by pattern (`stratified_folds`).
2. One jitted `jax.ops.segment_sum` over ids ``fold * P + pattern_index`` gives the
   per-(fold, pattern, task) sums of r, r² and the count; the out-of-fold (OOF)
   statistics of fold k are the sums over the other folds.
3. Shrinkage toward the OOF global mean (pseudo-count `shrinkage`), a minimum count
   and the gate ``|τ| > κ`` (and ``|τ| − z·se > κ`` when z > 0) decide the correction.
4. κ and λ are chosen per task on the cross-fitted predictions (each row corrected
   with τ̂ from the other folds) by exact per-row Brier score or log loss
   differences against the uncorrected predictions, summed in float64, and a
   correction is kept only when its improvement beats its spread (`rule`, `rule_z`;
   see `rectifier.select`). By default ("lcb", z = 1.645) the candidate with the
   largest paired lower confidence bound on the improvement over λ = 0 is taken if
   that bound is positive, else λ = 0 (no correction); "one_se" is the
   one-standard-error rule on the spread across folds, "min" the plain minimum (λ > 0
   then wins on noise in about half the fits without any pattern effect).
5. The table applied to new data holds the mean of the K OOF estimates per pattern
   and task, with the same shrinkage, minimum count and gate at the selected κ.

Count scale: out-of-fold, everywhere. Every count that enters the minimum count, the
shrinkage or the standard-error gate is a number of labelled rows outside the fold
being corrected. In cross-fitting fold k uses its own OOF count n_k; the final table
uses the mean OOF count n̄ = mean_k n_k = (K − 1)/K · n for the shrinkage and for the
standard error of the gate (sd / sqrt(n̄)), and requires min_k n_k >= `min_count`. So a
pattern is corrected on new data only if the minimum count admitted it in every fold
during the selection of κ and λ; the table's `n` and `se` columns still report the full
count n and sd / sqrt(n).

Honest metrics: `Rectifier.oof_probs_NxT` (each fitting row corrected with τ̂ from the
other folds) is out-of-fold for τ̂ but in-sample for the choice of κ and λ, which used
every fitting label; validation "rectified" metrics are therefore slightly optimistic,
and only held-out (test) data measure the rectifier without bias.
`rectifier.bootstrap` gives per-pattern bootstrap intervals of τ̂ and paired bootstrap
intervals of the (rectified − raw) AUROC and Brier score.

Numpy in, numpy out: `fit` works on the predictions of any model. Conventions follow
`cohort.py`: the pattern id is the integer whose bit m says modality m was observed,
labels are 0/1 with NaN for "unknown" (ignored, per task).

Example::

  rect = rectifier.fit(val_probs_NxT, val_labels_NxT, val_pattern_N)
  test_rectified_NxT = rect.apply(test_probs_NxT, test_pattern_N)
  json.dump(rect.to_dict(), f)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crl_mmnar_jax.rectifier import checks as checks
from crl_mmnar_jax.rectifier import folds as folds_lib
from crl_mmnar_jax.rectifier import select as select_lib

compact_patterns = folds_lib.compact_patterns
stratified_folds = folds_lib.stratified_folds
SELECTIONS = select_lib.CRITERIA
RULES = select_lib.RULES
FORMAT = "crl_mmnar_jax.rectifier/1"
LOGLOSS_EPS = select_lib.LOGLOSS_EPS   # probabilities are clipped to [eps, 1 - eps]
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
# The fitted rectifier.
# ----------------------------------------------------------------------------


def _none_if_nan(x: float) -> float | None:
  return None if math.isnan(x) else float(x)


def _nan_if_none(x: Any) -> float:
  return math.nan if x is None else float(x)


def _finite_or_none(x: float) -> float | None:
  return float(x) if math.isfinite(x) else None


@dataclasses.dataclass(frozen=True, eq=False)
class Rectifier:
  """A fitted pattern-wise correction. `apply` it to any model's predictions.

  Arrays indexed by P follow `patterns` (sorted ids seen in fitting), by T follow
  `task_names`. `tau_oof_KxPxT`, `oof_probs_NxT` and `folds_N` describe the fitting
  rows and are None after `from_dict`. `oof_probs_NxT` is out-of-fold for τ̂ but
  in-sample for the choice of κ and λ (see the module docstring).
  """

  patterns: np.ndarray          # (P,) int64 pattern ids seen in fitting, sorted
  task_names: tuple[str, ...]   # (T,)
  count_PxT: np.ndarray         # (P, T) int64 rows with a known label
  tau_raw_PxT: np.ndarray       # (P, T) mean of the K OOF estimates (NaN: no label)
  se_PxT: np.ndarray            # (P, T) sd / sqrt(n) over all rows (NaN: n < 2)
  tau_PxT: np.ndarray           # (P, T) applied correction: shrunk, min-count, gated
  corrected_PxT: np.ndarray     # (P, T) bool: apply changes this pattern (gate and λ > 0)
  kappa_T: np.ndarray           # (T,) selected κ
  lambda_T: np.ndarray          # (T,) selected λ
  global_mean_T: np.ndarray     # (T,) mean of the K OOF global mean residuals
  n_folds: int
  kappa_grid: tuple[float, ...]
  lambda_grid: tuple[float, ...]
  z: float
  min_count: int
  shrinkage: float
  seed: int
  selection: str
  cv_loss_TxIxJ: np.ndarray | None = None   # cross-fitted mean loss per (κ_i, λ_j)
  rule: str = "min"           # selection rule (the default describes pre-rule fits)
  rule_z: float = 0.0         # its multiplier of the standard error
  cv_delta_TxIxJ: np.ndarray | None = None  # mean per-row loss change vs λ = 0
  cv_se_TxIxJ: np.ndarray | None = None     # the rule's standard error of cv_delta
  passed_T: np.ndarray | None = None        # (T,) bool: the tested candidate passed
  guarded_T: np.ndarray | None = None       # (T,) bool: dropped by the AUROC guard
  auroc_guard: bool = False                 # whether `fit` applied the guard
  tau_oof_KxPxT: np.ndarray | None = None   # raw OOF means (NaN: no OOF label)
  oof_probs_NxT: np.ndarray | None = None   # cross-fitted rectified fitting predictions
  folds_N: np.ndarray | None = None         # fold of each fitting row

  @property
  def n_tasks(self) -> int:
    return len(self.task_names)

  @property
  def n_patterns(self) -> int:
    return int(self.patterns.shape[0])

  @property
  def shift_PxT(self) -> np.ndarray:
    """The amount added before clipping: λ_t · τ_{δ,t}."""
    return self.lambda_T[None, :] * self.tau_PxT

  def apply(self, probs_NxT: Any, pattern_N: Any) -> np.ndarray:
    """clip(p + λ_t · τ[pattern, t], 0, 1); a pattern unseen in fitting is unchanged.

    Accepts (N, T) or, for a single-task rectifier, (N,) probabilities; returns the
    same shape and floating dtype (float32 stays float32).
    """
    probs, one_d = checks.as_probs("probs_NxT", probs_NxT)
    if probs.shape[1] != self.n_tasks:
      raise ValueError(f"probs_NxT has {probs.shape[1]} task column(s), the rectifier "
                       f"was fitted on {self.n_tasks} ({', '.join(self.task_names)})")
    pattern = checks.as_patterns("pattern_N", pattern_N, probs.shape[0])
    # Row P of the shift table is the zero shift of unseen patterns: p + 0 = p.
    shift_Pp1xT = np.concatenate([self.shift_PxT, np.zeros((1, self.n_tasks))])
    out = np.clip(probs + shift_Pp1xT.astype(probs.dtype)[self._lookup(pattern)],
                  0.0, 1.0)
    return out[:, 0] if one_d else out

  def _lookup(self, pattern_N: np.ndarray) -> np.ndarray:
    """Index of each pattern id in `patterns`, or P where it was unseen in fitting."""
    p = self.n_patterns
    if pattern_N.size and int(pattern_N.max()) < folds_lib.DENSE_PATTERN_LIMIT:
      table = np.full(int(pattern_N.max()) + 1, p, dtype=np.int64)
      known = self.patterns[self.patterns < table.shape[0]]
      table[known] = np.searchsorted(self.patterns, known)
      return table[pattern_N]
    idx_N = np.minimum(np.searchsorted(self.patterns, pattern_N), max(p - 1, 0))
    seen_N = self.patterns[idx_N] == pattern_N if p else np.zeros(pattern_N.shape, bool)
    return np.where(seen_N, idx_N, p)

  def table(self) -> list[dict[str, Any]]:
    """One row per (pattern, task): pattern, task, n, tau_raw, se, tau, shift, corrected.

    NaN (no labelled rows, or fewer than two for se) is written as None.
    """
    shift_PxT = self.shift_PxT
    rows = []
    for i, pattern in enumerate(self.patterns.tolist()):
      for j, task in enumerate(self.task_names):
        rows.append({
            "pattern": int(pattern),
            "task": task,
            "n": int(self.count_PxT[i, j]),
            "tau_raw": _none_if_nan(self.tau_raw_PxT[i, j]),
            "se": _none_if_nan(self.se_PxT[i, j]),
            "tau": float(self.tau_PxT[i, j]),
            "shift": float(shift_PxT[i, j]),
            "corrected": bool(self.corrected_PxT[i, j]),
        })
    return rows

  def to_dict(self) -> dict[str, Any]:
    """A plain JSON-serialisable dict; `from_dict` restores an identical `apply`."""
    per_task = lambda a: {name: _none_if_nan(v) for name, v in zip(self.task_names, a)}
    d = {
        "format": FORMAT,
        "task_names": list(self.task_names),
        "kappa": per_task(self.kappa_T),
        "lambda": per_task(self.lambda_T),
        "global_mean": per_task(self.global_mean_T),
        "settings": {
            "n_folds": self.n_folds,
            "kappa_grid": list(self.kappa_grid),
            "lambda_grid": list(self.lambda_grid),
            "z": self.z,
            "min_count": self.min_count,
            "shrinkage": self.shrinkage,
            "seed": self.seed,
            "selection": self.selection,
            "rule": self.rule,
            "rule_z": self.rule_z,
            "auroc_guard": self.auroc_guard,
            "count_scale": "out_of_fold",
        },
        "table": self.table(),
    }
    grids = (("cv_loss", self.cv_loss_TxIxJ), ("cv_delta", self.cv_delta_TxIxJ),
             ("cv_se", self.cv_se_TxIxJ))
    for key, grid_TxIxJ in grids:
      if grid_TxIxJ is not None:      # None marks NaN (loss, delta) or inf (se)
        d[key] = {name: [[_finite_or_none(v) for v in row] for row in grid]
                  for name, grid in zip(self.task_names, grid_TxIxJ.tolist())}
    if self.cv_delta_TxIxJ is not None and self.cv_se_TxIxJ is not None:
      d["selection_test"] = self.selection_test()
    return d

  def selection_test(self) -> dict[str, dict[str, Any]]:
    """Per task, the candidate the selection rule tested and whether it passed.

    {task: {"kappa", "lambda" (of the tested candidate, `rectifier.select`),
    "cv_delta" (its cross-fitted mean loss change vs λ = 0; negative = better),
    "cv_se" (the rule's standard error), "bound" (cv_delta + rule_z · cv_se; the
    candidate is taken only where bound < 0), "rule", "rule_z", "passed",
    "dropped_by_auroc_guard" (it passed, but its cross-fitted predictions ranked the
    fitting rows worse, so the task is not corrected)}}; None marks a value that is
    not finite.
    """
    if self.cv_delta_TxIxJ is None or self.cv_se_TxIxJ is None:
      raise ValueError("selection_test needs cv_delta_TxIxJ and cv_se_TxIxJ")
    kappa_I, lambda_J = np.array(self.kappa_grid), np.array(self.lambda_grid)
    i_T, j_T, bound_T = select_lib.tested_candidate(
        self.cv_delta_TxIxJ, self.cv_se_TxIxJ, kappa_I, lambda_J, rule=self.rule,
        z=self.rule_z)
    passed_T = (self.passed_T if self.passed_T is not None
                else np.ones(self.n_tasks, bool))
    guarded_T = (self.guarded_T if self.guarded_T is not None
                 else np.zeros(self.n_tasks, bool))
    out = {}
    for t, name in enumerate(self.task_names):
      i, j = int(i_T[t]), int(j_T[t])
      out[name] = {"kappa": float(kappa_I[i]), "lambda": float(lambda_J[j]),
                   "cv_delta": _finite_or_none(self.cv_delta_TxIxJ[t, i, j]),
                   "cv_se": _finite_or_none(self.cv_se_TxIxJ[t, i, j]),
                   "bound": _finite_or_none(bound_T[t]), "rule": self.rule,
                   "rule_z": self.rule_z, "passed": bool(passed_T[t]),
                   "dropped_by_auroc_guard": bool(guarded_T[t])}
    return out

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Rectifier":
    """Inverse of `to_dict` (the fitting-row fields come back as None)."""
    if d.get("format", FORMAT) != FORMAT:
      raise ValueError(f"d['format'] must be {FORMAT!r}, got {d.get('format')!r}")
    try:
      task_names = tuple(d["task_names"])
      settings = d["settings"]
      rows = d["table"]
      kappa_T = np.array([float(d["kappa"][t]) for t in task_names])
      lambda_T = np.array([float(d["lambda"][t]) for t in task_names])
      global_mean_T = np.array([_nan_if_none(d["global_mean"][t]) for t in task_names])
    except (KeyError, TypeError) as e:
      raise ValueError(f"d is not a Rectifier.to_dict() result: missing {e}") from e
    task_index = {name: j for j, name in enumerate(task_names)}
    patterns = np.array(sorted({int(r["pattern"]) for r in rows}), dtype=np.int64)
    pattern_index = {int(p): i for i, p in enumerate(patterns.tolist())}
    shape = (patterns.shape[0], len(task_names))
    count = np.zeros(shape, np.int64)
    tau_raw, se, tau = (np.full(shape, np.nan) for _ in range(3))
    corrected = np.zeros(shape, bool)
    filled = np.zeros(shape, bool)
    for r in rows:
      if r["task"] not in task_index:
        raise ValueError(f"d['table'] row names unknown task {r['task']!r}")
      i, j = pattern_index[int(r["pattern"])], task_index[r["task"]]
      if filled[i, j]:
        raise ValueError(f"d['table'] repeats pattern {r['pattern']} task {r['task']!r}")
      filled[i, j] = True
      count[i, j] = int(r["n"])
      tau_raw[i, j] = _nan_if_none(r["tau_raw"])
      se[i, j] = _nan_if_none(r["se"])
      tau[i, j] = float(r["tau"])
      corrected[i, j] = bool(r["corrected"])
    if not filled.all():
      i, j = np.argwhere(~filled)[0]
      raise ValueError(f"d['table'] lacks pattern {int(patterns[i])} task "
                       f"{task_names[j]!r}")
    grid = lambda key, none: (None if key not in d else np.array(
        [[[none if v is None else float(v) for v in row] for row in d[key][t]]
         for t in task_names], dtype=np.float64))
    passed = guarded = None
    if "selection_test" in d:
      passed = np.array([bool(d["selection_test"][t]["passed"]) for t in task_names])
      guarded = np.array([bool(d["selection_test"][t].get("dropped_by_auroc_guard", False))
                          for t in task_names])
    return cls(
        patterns=patterns, task_names=task_names, count_PxT=count, tau_raw_PxT=tau_raw,
        se_PxT=se, tau_PxT=tau, corrected_PxT=corrected, kappa_T=kappa_T,
        lambda_T=lambda_T, global_mean_T=global_mean_T,
        n_folds=int(settings["n_folds"]),
        kappa_grid=tuple(float(v) for v in settings["kappa_grid"]),
        lambda_grid=tuple(float(v) for v in settings["lambda_grid"]),
        z=float(settings["z"]), min_count=int(settings["min_count"]),
        shrinkage=float(settings["shrinkage"]), seed=int(settings["seed"]),
        selection=str(settings["selection"]), cv_loss_TxIxJ=grid("cv_loss", np.nan),
        rule=str(settings.get("rule", "min")), rule_z=float(settings.get("rule_z", 0.0)),
        cv_delta_TxIxJ=grid("cv_delta", np.nan), cv_se_TxIxJ=grid("cv_se", np.inf),
        passed_T=passed, guarded_T=guarded,
        auroc_guard=bool(settings.get("auroc_guard", False)))




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
      scale, see the module docstring).
    min_count: patterns with fewer labelled out-of-fold rows get no correction (in the
      final table: fewer in any fold, i.e. min_k n_k < min_count).
    shrinkage: pseudo-count s of the shrinkage (n·τ + s·g) / (n + s) toward the
      global mean residual g, n the out-of-fold count; 0 disables it.
    seed: seeds the fold assignment.
    task_names: T names (default task0, task1, ...).
    selection: "brier" or "logloss", the cross-fitted criterion choosing κ and λ.
    rule: "one_se" (default), "lcb" or "min": when the best candidate of the grid is
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
  n_folds = checks.integer("n_folds", n_folds, 2)
  kappa_I = np.array(checks.as_grid("kappa_grid", kappa_grid))
  lambda_J = np.array(checks.as_grid("lambda_grid", lambda_grid))
  z = checks.non_negative("z", z)
  min_count = checks.integer("min_count", min_count, 0)
  shrinkage = checks.non_negative("shrinkage", shrinkage)
  seed = checks.integer("seed", seed, 0)
  names = checks.task_names(task_names, t)
  selection = checks.one_of("selection", selection, SELECTIONS)
  rule = checks.one_of("rule", rule, RULES)
  rule_z = checks.non_negative("rule_z", rule_z)

  # Folds and cells (cell = fold * P_pad + pattern index), padded to size buckets.
  patterns_P, index_N = compact_patterns(pattern)
  p = patterns_P.shape[0]
  folds_N = folds_lib.deal_folds(index_N, p, n_folds, seed)
  p_pad, n_pad = folds_lib.bucket(p, 8), folds_lib.bucket(n, 1024)
  k, c = n_folds, n_folds * p_pad
  cell_N = np.zeros(n_pad, np.int32)
  cell_N[:n] = folds_N * p_pad + index_N
  probs32 = np.zeros((n_pad, t), np.float32)
  probs32[:n] = probs
  labels32 = np.full((n_pad, t), np.nan, np.float32)   # padded rows: label unknown
  labels32[:n] = labels

  # Per-(fold, pattern, task) sums -> out-of-fold statistics (sum over other folds).
  sums_KxPx3xT = np.asarray(
      _segment_sums(jnp.asarray(probs32), jnp.asarray(labels32), jnp.asarray(cell_N),
                    num_segments=c), dtype=np.float64).reshape(k, p_pad, 3, t)
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

  # Cross-fitted choice of (κ, λ): float64 per-row loss changes of clip(p + λ·τ_oof)
  # against p, summed per cell; the κ gate (per cell) picks the corrected cells.
  sum_CxTxJ, sq_CxTxJ = select_lib.cell_delta_sums(
      probs, labels, cell_N[:n], shrunk_oof_KxPxT.reshape(c, t), lambda_J, c, selection)
  cv_delta, se_fold, se_row = select_lib.candidate_stats(
      sum_CxTxJ.reshape(k, p_pad, t, -1), sq_CxTxJ.reshape(k, p_pad, t, -1),
      gate_IxKxPxT, sums_KxPx3xT[:, :, 2].sum(1))
  cv_se = se_row if rule == "lcb" else se_fold
  i_T, j_T, passed_T = select_lib.select(cv_delta, cv_se, kappa_I, lambda_J, rule=rule,
                                         z=rule_z)
  cv_loss = select_lib.raw_loss(probs, labels, selection)[:, None, None] + cv_delta

  def cross_fitted(i_T, j_T):      # rectified predictions of the fitting rows
    gate_KxPxT = np.take_along_axis(gate_IxKxPxT, i_T[None, None, None, :], axis=0)[0]
    shift_CxT = (lambda_J[j_T] * np.where(gate_KxPxT, shrunk_oof_KxPxT, 0.0)).reshape(c, t)
    return np.clip(probs + shift_CxT.astype(probs.dtype)[cell_N[:n]], 0.0, 1.0)

  oof_probs = cross_fitted(i_T, j_T)
  guarded_T = np.zeros(t, bool)
  if auroc_guard:
    guarded_T = lambda_J[j_T] > 0
    guarded_T &= ~select_lib.auroc_kept(probs, oof_probs, labels)
    if guarded_T.any():          # no correction for those tasks
      i0, j0 = (a[0] for a in select_lib.conservative_order(kappa_I, lambda_J))
      i_T, j_T = np.where(guarded_T, i0, i_T), np.where(guarded_T, j0, j_T)
      oof_probs = cross_fitted(i_T, j_T)
  kappa_T, lambda_T = kappa_I[i_T], lambda_J[j_T]

  # The table for new data: mean of the K OOF estimates; counts on the OOF scale.
  tot_Px3xT = sums_KxPx3xT.sum(0)[:p]
  count_PxT = tot_Px3xT[:, 2]
  _, se_PxT = _mean_and_se(tot_Px3xT[:, 0], tot_Px3xT[:, 1], count_PxT)
  has_oof_KxPxT = n_oof[:, :p] > 0
  with np.errstate(invalid="ignore", divide="ignore"):
    tau_raw_PxT = np.where(has_oof_KxPxT, tau_oof_KxPxT[:, :p], 0.0).sum(0) / \
        has_oof_KxPxT.sum(0)
    has_global_KxT = n_oof_KxT > 0
    global_mean_T = np.where(has_global_KxT, global_oof_KxT, 0.0).sum(0) / \
        has_global_KxT.sum(0)
    n_bar_PxT = n_oof[:, :p].mean(0)                  # = (K − 1) / K · count
    se_gate_PxT = se_PxT * np.sqrt(count_PxT / n_bar_PxT)   # sd / sqrt(n̄)
  tau_raw_PxT = np.where(count_PxT > 0, tau_raw_PxT, np.nan)
  ok_PxT = n_oof[:, :p].min(0) >= max(min_count, 1)
  shrunk_PxT = _shrink(np.nan_to_num(tau_raw_PxT), n_bar_PxT, global_mean_T, shrinkage,
                       ok_PxT)
  gate_PxT = _gate(shrunk_PxT, se_gate_PxT, ok_PxT, kappa_T, z)

  return Rectifier(
      patterns=patterns_P,
      task_names=names,
      count_PxT=np.rint(count_PxT).astype(np.int64),
      tau_raw_PxT=tau_raw_PxT,
      se_PxT=se_PxT,
      tau_PxT=np.where(gate_PxT, shrunk_PxT, 0.0),
      corrected_PxT=gate_PxT & (lambda_T > 0.0),
      kappa_T=kappa_T,
      lambda_T=lambda_T,
      global_mean_T=global_mean_T,
      n_folds=n_folds,
      kappa_grid=tuple(kappa_I.tolist()),
      lambda_grid=tuple(lambda_J.tolist()),
      z=z,
      min_count=min_count,
      shrinkage=shrinkage,
      seed=seed,
      selection=selection,
      cv_loss_TxIxJ=cv_loss,
      rule=rule,
      rule_z=rule_z,
      cv_delta_TxIxJ=cv_delta,
      cv_se_TxIxJ=cv_se,
      passed_T=passed_T,
      guarded_T=guarded_T,
      auroc_guard=bool(auroc_guard),
      tau_oof_KxPxT=tau_oof_KxPxT[:, :p],
      oof_probs_NxT=oof_probs,
      folds_N=folds_N,
  )
