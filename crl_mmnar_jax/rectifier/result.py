"""The fitted rectifier (`Rectifier`): apply it, tabulate it, write and read it.

`rectifier.fit` (`cross_fit.py`) builds one; `Rectifier.to_dict` / `from_dict` are the
rectifier.json format (`FORMAT`), and `from_dict` restores an identical `apply`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from crl_mmnar_jax.rectifier import checks as checks
from crl_mmnar_jax.rectifier import folds as folds_lib
from crl_mmnar_jax.rectifier import select as select_lib

FORMAT = "crl_mmnar_jax.rectifier/1"


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
  in-sample for the choice of κ and λ (see the package docstring, `rectifier`).
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
