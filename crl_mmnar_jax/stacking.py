"""A stacked predictor: per task, a logistic stacker on the members' logits, cross-fitted
over the members' own folds, with a no-harm rule against the best single member.

Pure numpy (host side). Inputs are the M members' cross-fitted predictions
(`fitting.fit_cross_fitted`): out-of-fold (OOF) probabilities of the N non-test rows,
`member_oof_MxNxT`, their fold `fold_N` (`ensemble.member_folds`, the same for every
member) and the members' test probabilities `member_test_MxNxT`. Test labels are never
an input.

The stacker (`fit_stacker`) is an L2-regularised logistic regression on the members'
logits, logit(clip(p, eps, 1 - eps)), with an unpenalised intercept:

    minimise  sum_n [log(1 + exp(z_n)) - y_n z_n] + (l2 / 2) ||w||^2,  z_n = b + l_n . w

i.e. scikit-learn's `LogisticRegression(C=1 / l2)` (l2 = 1 by default), solved by
Newton's method with a line search (K + 1 parameters: exact, deterministic). Why this
and not non-negative weights: (1) its output is a calibrated probability (intercept
and scale are fitted), which the rectifier and the Brier / calibration figures read; a
non-negative mixture cannot fix a miscalibrated member; (2) weights free in sign can
contrast two correlated members, where a combination gains most; with M <= ~5 inputs
and thousands of rows the extra variance is small, the penalty keeps collinear or
identical members finite (shared equally), and the no-harm rule catches the rest;
(3) it is the stacker measured on PhysioNet A+B -> C (0.885 vs LightGBM 0.884).

Cross-fitting (`cross_fitted_logits`): for each fold f, the stacker is fitted on the
other folds' OOF rows only and applied to fold f: the stack's own honest OOF
predictions (what the rule, the validation figures and the rectifier read). The test
prediction uses the stacker fitted on all OOF rows.

No-harm rule (`paired_auroc_gain`), per task: the best member has the highest OOF
AUROC (first on ties); gain = AUROC(stack OOF) - AUROC(best member OOF) on the rows with
a known label. A paired bootstrap over patients (`metrics.bootstrap_samples`' protocol
with seed + t for task t: resample b = ``rng.integers(0, K, size=K)`` over the K
labelled rows, the same draws for both) gives gain_b, and LCB = gain - z * sd_b(gain_b)
(ddof 1, over resamples where both AUROCs are defined; NaN if under half are). The
stack is used where LCB > 0, else the best member alone (its OOF and test
probabilities, unchanged). Choosing the best member on the same rows biases its AUROC
up, which makes the rule conservative. A task whose members are all identical (equal
OOF and test columns) has nothing to combine: "best_member" whatever the bootstrap
says (the stack would only recalibrate that member per fold, which can move the
pooled OOF AUROC by chance).

`stack_predictions` runs all of this and returns a `StackFit`: the chosen OOF and test
probabilities, a JSON-able `spec` (weights and rule per task) that `apply_stack`
turns into the same test probabilities from the members' probabilities of any rows
(bit for bit: `stack_predictions` computes its test output with `apply_stack`), and
one record per task.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from crl_mmnar_jax import metrics as metrics_lib

STACK_DIR = "stack"            # WORKDIR/stack/<member>/: one cross-fitted member method
DEFAULT_L2 = 1.0              # = scikit-learn's C = 1
DEFAULT_Z = 1.645             # one-sided 95% lower bound on the AUROC gain
DEFAULT_N_BOOT = 1000
CLIP_EPS = 1e-6               # member probabilities are clipped to [eps, 1 - eps]
SPEC_FORMAT = 1
_MIN_DEFINED = 0.5            # fewer defined bootstrap gains than this fraction -> NaN


# ----------------------------------------------------------------------------------
# The stacker.


def _sigmoid(z: np.ndarray) -> np.ndarray:
  return np.exp(-np.logaddexp(0.0, -z))


def member_logits(probs: np.ndarray, eps: float = CLIP_EPS) -> np.ndarray:
  """logit(clip(p, eps, 1 - eps)) in float64, any shape."""
  p = np.clip(np.asarray(probs, np.float64), eps, 1.0 - eps)
  return np.log(p) - np.log1p(-p)


@dataclasses.dataclass(frozen=True)
class Stacker:
  """A fitted logistic stacker: logit = intercept + logits_NxK @ weights_K."""
  intercept: float
  weights_K: np.ndarray
  n_iter: int

  def logit(self, logits_NxK: np.ndarray) -> np.ndarray:
    return _stack_logit(self.intercept, self.weights_K, logits_NxK)


def _stack_logit(intercept: float, weights_K: np.ndarray, logits_NxK: np.ndarray
                 ) -> np.ndarray:
  return np.asarray(logits_NxK, np.float64) @ np.asarray(weights_K, np.float64) + intercept


def fit_stacker(logits_NxK: np.ndarray, labels_N: np.ndarray, *, l2: float = DEFAULT_L2,
                max_iter: int = 100, tol: float = 1e-12) -> Stacker:
  """L2-regularised logistic regression of `labels_N` on `logits_NxK` (with intercept).

  Minimises sum_n logloss_n + (l2 / 2) ||w||^2 (the intercept is not penalised), which
  is scikit-learn's `LogisticRegression(C=1 / l2)`. Rows with a NaN label are ignored.
  Newton's method with a backtracking (Armijo) line search; stops when the Newton
  decrement g' H^-1 g falls below `tol` (times the number of rows).

  Raises:
    ValueError: on non-finite logits, labels other than 0/1/NaN, l2 <= 0, or fewer than
      two classes among the known labels.
  """
  x_NxK = np.asarray(logits_NxK, np.float64)
  y_N = np.asarray(labels_N, np.float64)
  if x_NxK.ndim != 2 or y_N.shape != (x_NxK.shape[0],):
    raise ValueError(f"logits_NxK must be (N, K) and labels_N (N,), got shapes "
                     f"{x_NxK.shape} and {y_N.shape}")
  if not np.isfinite(x_NxK).all():
    raise ValueError("logits_NxK must be finite")
  if not (l2 > 0.0 and math.isfinite(l2)):
    raise ValueError(f"l2 must be a positive number, got {l2!r}")
  known_N = ~np.isnan(y_N)
  x_NxK, y_N = x_NxK[known_N], y_N[known_N]
  if not np.isin(y_N, (0.0, 1.0)).all():
    raise ValueError("labels_N must hold only 0, 1 or NaN (unknown)")
  n, k = x_NxK.shape
  n_pos = float(y_N.sum())
  if n_pos == 0.0 or n_pos == n:
    raise ValueError(f"the stacker needs both classes among the known labels "
                     f"({int(n_pos)} positive of {n})")
  x_NxK1 = np.concatenate([np.ones((n, 1)), x_NxK], axis=1)
  pen_K1 = np.r_[0.0, np.full(k, float(l2))]
  beta_K1 = np.zeros(k + 1)
  beta_K1[0] = math.log(n_pos / (n - n_pos))

  def objective(b_K1: np.ndarray) -> float:
    z_N = x_NxK1 @ b_K1
    return float(np.sum(np.logaddexp(0.0, z_N) - y_N * z_N) + 0.5 * np.dot(pen_K1 * b_K1, b_K1))

  f = objective(beta_K1)
  for it in range(1, max_iter + 1):
    z_N = x_NxK1 @ beta_K1
    p_N = _sigmoid(z_N)
    grad_K1 = x_NxK1.T @ (p_N - y_N) + pen_K1 * beta_K1
    w_N = np.exp(-np.logaddexp(0.0, z_N) - np.logaddexp(0.0, -z_N))   # p (1 - p), exactly
    hess_K1xK1 = (x_NxK1 * w_N[:, None]).T @ x_NxK1 + np.diag(pen_K1)
    step_K1 = np.linalg.solve(hess_K1xK1, grad_K1)
    decrement = float(grad_K1 @ step_K1)
    if decrement <= tol * n:
      return Stacker(float(beta_K1[0]), beta_K1[1:].copy(), it - 1)
    t = 1.0
    for _ in range(60):
      candidate_K1 = beta_K1 - t * step_K1
      f_new = objective(candidate_K1)
      if f_new <= f - 1e-4 * t * decrement:
        break
      t *= 0.5
    else:   # no decrease at machine precision: converged as far as float64 allows
      return Stacker(float(beta_K1[0]), beta_K1[1:].copy(), it - 1)
    beta_K1, f = candidate_K1, f_new
  raise RuntimeError(f"the stacker did not converge in {max_iter} Newton steps "
                     f"(decrement {decrement:.3g})")


def cross_fitted_logits(logits_NxK: np.ndarray, labels_N: np.ndarray, fold_N: np.ndarray,
                        *, l2: float = DEFAULT_L2) -> np.ndarray:
  """The stack's out-of-fold logits: fold f's rows are scored by a stacker fitted on
  the other folds' rows only (their labels; fold f's labels are never read for it)."""
  x_NxK = np.asarray(logits_NxK, np.float64)
  y_N = np.asarray(labels_N, np.float64)
  fold_N = np.asarray(fold_N)
  if fold_N.shape != y_N.shape:
    raise ValueError(f"fold_N must have shape {y_N.shape}, got {fold_N.shape}")
  folds = np.unique(fold_N)
  if folds.shape[0] < 2:
    raise ValueError(f"cross-fitted stacking needs at least 2 folds, got {folds.tolist()}")
  out_N = np.full(y_N.shape[0], np.nan)
  for f in folds:
    held_N = fold_N == f
    stacker = fit_stacker(x_NxK[~held_N], y_N[~held_N], l2=l2)
    out_N[held_N] = stacker.logit(x_NxK[held_N])
  return out_N


# ----------------------------------------------------------------------------------
# The no-harm rule.


@dataclasses.dataclass(frozen=True)
class Gain:
  """AUROC(stack) - AUROC(member) on the labelled rows and its paired bootstrap."""
  stack_auroc: float
  member_auroc: float
  gain: float
  sd: float               # bootstrap standard deviation of the gain (ddof 1)
  lcb: float              # gain - z * sd; NaN where undefined
  n_defined: int          # resamples where both AUROCs are defined


def paired_auroc_gain(labels_N: np.ndarray, stack_N: np.ndarray, member_N: np.ndarray, *,
                      n_boot: int = DEFAULT_N_BOOT, z: float = DEFAULT_Z,
                      seed: int = 0) -> Gain:
  """The paired bootstrap of the AUROC gain of `stack_N` over `member_N` (probabilities).

  Rows with a NaN label are dropped; resamples as in `metrics.bootstrap_samples` with
  `seed` (the same draws for both predictions).
  """
  if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
    raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
  y_N = np.asarray(labels_N, np.float64)
  known_N = ~np.isnan(y_N)
  y, s, m = y_N[known_N], np.asarray(stack_N)[known_N], np.asarray(member_N)[known_N]
  nan = float("nan")
  if y.shape[0] == 0:
    return Gain(nan, nan, nan, nan, nan, 0)
  stack_auroc, member_auroc = metrics_lib.auroc(y, s), metrics_lib.auroc(y, m)
  gain = stack_auroc - member_auroc
  boot = {name: metrics_lib.bootstrap_samples(y, p, n_boot=int(n_boot), seed=int(seed),
                                              metrics=("auroc",))["auroc"]
          for name, p in (("stack", s), ("member", m))}
  gain_B = boot["stack"] - boot["member"]
  ok_B = np.isfinite(gain_B)
  n_defined = int(ok_B.sum())
  if n_defined < max(2, _MIN_DEFINED * n_boot) or not math.isfinite(gain):
    return Gain(stack_auroc, member_auroc, gain, nan, nan, n_defined)
  sd = float(np.std(gain_B[ok_B], ddof=1))
  return Gain(stack_auroc, member_auroc, gain, sd, gain - float(z) * sd, n_defined)


# ----------------------------------------------------------------------------------
# The whole stack.


@dataclasses.dataclass(frozen=True)
class TaskStack:
  """One task's record: the all-rows stacker, the members, the rule and why."""
  task: str
  rule: str                      # "stack" or "best_member"
  reason: str
  best_member: str
  best_member_auroc: float       # OOF AUROC
  stack_auroc: float             # the cross-fitted stack's OOF AUROC
  gain: float                    # stack - best member
  gain_sd: float
  gain_lcb: float
  z: float
  n_boot: int
  n_boot_defined: int
  n: int                         # rows with a known label
  n_pos: int
  intercept: float               # the stacker fitted on all OOF rows (used for test)
  weights: dict[str, float]
  member_auroc: dict[str, float]
  n_distinct_members: int

  def as_dict(self) -> dict[str, Any]:
    """JSON-able (NaN -> None)."""
    fix = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v
    out = dataclasses.asdict(self)
    return {k: ({kk: fix(vv) for kk, vv in v.items()} if isinstance(v, dict) else fix(v))
            for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class StackFit:
  """`stack_predictions`' result. `val_NxT`/`test_NxT`: the predictions to use (the
  stack's where its rule fired, else the best member's); `stack_val_NxT` and
  `stack_test_NxT`: the stack's own, whatever the rule; `spec`: JSON-able, for
  `apply_stack`; `tasks`: one record per task."""
  val_NxT: np.ndarray
  test_NxT: np.ndarray
  stack_val_NxT: np.ndarray
  stack_test_NxT: np.ndarray
  spec: dict[str, Any]
  tasks: list[TaskStack]

  def record(self) -> dict[str, Any]:
    """JSON-able summary for results.json: the rule's settings and each task's record."""
    return {"kind": self.spec["kind"], "members": list(self.spec["members"]),
            "l2": self.spec["l2"], "clip_eps": self.spec["clip_eps"],
            "tasks": {r.task: r.as_dict() for r in self.tasks}}


def _as_member_probs(name: str, probs, n_tasks: int | None = None) -> np.ndarray:
  a = np.asarray(probs, np.float64)
  if a.ndim != 3 or (n_tasks is not None and a.shape[2] != n_tasks):
    raise ValueError(f"{name} must be (M members, N rows, T tasks), got shape {a.shape}")
  if not (np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all()):
    raise ValueError(f"{name} must hold probabilities in [0, 1]")
  return a


def _n_distinct(columns_MxR: np.ndarray) -> int:
  return int(np.unique(columns_MxR, axis=0).shape[0])


def stack_predictions(member_oof_MxNxT, labels_NxT, fold_N, member_test_MxNxT, *,
                      members: Sequence[str] | None = None,
                      task_names: Sequence[str] | None = None, l2: float = DEFAULT_L2,
                      n_boot: int = DEFAULT_N_BOOT, z: float = DEFAULT_Z,
                      seed: int = 0) -> StackFit:
  """Cross-fitted logistic stacking with the no-harm rule (module docstring).

  Args:
    member_oof_MxNxT: the M members' out-of-fold probabilities of the N non-test rows.
    labels_NxT: their labels, 0, 1 or NaN (unknown; ignored).
    fold_N: the fold of each non-test row, the members' folds (`ensemble.member_folds`).
    member_test_MxNxT: the members' probabilities of the test rows (no labels needed).
    members: M names (default member0, member1, ...); task_names: T names.
    l2: the stacker's L2 penalty on the weights (scikit-learn's C = 1 / l2).
    n_boot, z, seed: the no-harm rule's paired bootstrap (task t uses seed + t).

  Returns:
    A `StackFit`.
  """
  oof = _as_member_probs("member_oof_MxNxT", member_oof_MxNxT)
  m, n, t = oof.shape
  test = _as_member_probs("member_test_MxNxT", member_test_MxNxT, t)
  if test.shape[0] != m:
    raise ValueError(f"member_test_MxNxT has {test.shape[0]} members, "
                     f"member_oof_MxNxT {m}")
  labels = np.asarray(labels_NxT, np.float64)
  if labels.shape != (n, t):
    raise ValueError(f"labels_NxT must have shape {(n, t)}, got {labels.shape}")
  members = [f"member{i}" for i in range(m)] if members is None else list(members)
  names = [f"task{i}" for i in range(t)] if task_names is None else list(task_names)
  if len(members) != m or len(set(members)) != m:
    raise ValueError(f"members must be {m} distinct names, got {members}")
  if len(names) != t:
    raise ValueError(f"task_names must be {t} names, got {names}")
  logits_oof = member_logits(oof)                       # (M, N, T)
  stack_val_NxT = np.empty((n, t))
  spec_tasks, records = [], []
  for j in range(t):
    x_NxM = logits_oof[:, :, j].T
    y_N = labels[:, j]
    stack_val_NxT[:, j] = _sigmoid(cross_fitted_logits(x_NxM, y_N, fold_N, l2=l2))
    full = fit_stacker(x_NxM, y_N, l2=l2)
    known_N = ~np.isnan(y_N)
    member_auroc = [metrics_lib.auroc(y_N[known_N], oof[i, known_N, j]) for i in range(m)]
    aurocs = np.asarray(member_auroc)
    best = int(np.nanargmax(aurocs)) if np.isfinite(aurocs).any() else 0
    gain = paired_auroc_gain(y_N, stack_val_NxT[:, j], oof[best, :, j], n_boot=n_boot,
                             z=z, seed=int(seed) + j)
    distinct = _n_distinct(np.concatenate([oof[:, :, j], test[:, :, j]], axis=1))
    if distinct < 2:
      rule, reason = "best_member", "the members' predictions are identical"
    elif gain.lcb > 0.0:
      rule, reason = "stack", f"gain LCB {gain.lcb:+.4f} > 0"
    elif math.isnan(gain.lcb):
      rule, reason = "best_member", "gain LCB undefined"
    else:
      rule, reason = "best_member", f"gain LCB {gain.lcb:+.4f} <= 0"
    weights = [float(w) for w in full.weights_K]
    spec_tasks.append({"task": names[j], "rule": rule, "best_member": best,
                       "intercept": float(full.intercept), "weights": weights})
    records.append(TaskStack(
        task=names[j], rule=rule, reason=reason, best_member=members[best],
        best_member_auroc=gain.member_auroc, stack_auroc=gain.stack_auroc, gain=gain.gain,
        gain_sd=gain.sd, gain_lcb=gain.lcb, z=float(z), n_boot=int(n_boot),
        n_boot_defined=gain.n_defined, n=int(known_N.sum()), n_pos=int(y_N[known_N].sum()),
        intercept=float(full.intercept), weights=dict(zip(members, weights)),
        member_auroc={k: float(v) for k, v in zip(members, member_auroc)},
        n_distinct_members=distinct))
  spec = {"format": SPEC_FORMAT, "kind": "logistic_stack", "members": members,
          "tasks": names, "l2": float(l2), "clip_eps": CLIP_EPS, "per_task": spec_tasks}
  stack_spec = {**spec, "per_task": [{**s, "rule": "stack"} for s in spec_tasks]}
  rule_T = np.array([s["rule"] == "stack" for s in spec_tasks])
  best_T = np.array([s["best_member"] for s in spec_tasks])
  val_NxT = np.where(rule_T[None, :], stack_val_NxT, oof[best_T, :, np.arange(t)].T)
  return StackFit(val_NxT=val_NxT, test_NxT=apply_stack(spec, test),
                  stack_val_NxT=stack_val_NxT, stack_test_NxT=apply_stack(stack_spec, test),
                  spec=spec, tasks=records)


def apply_stack(spec: dict[str, Any], member_probs_MxNxT) -> np.ndarray:
  """(N, T) float64 probabilities of a fitted stack (`StackFit.spec`, e.g. read back
  from JSON) from its members' probabilities of N rows, members in `spec["members"]`
  order: per task, the all-rows stacker where the rule is "stack", else the best
  member's probabilities unchanged."""
  if spec.get("format") != SPEC_FORMAT or spec.get("kind") != "logistic_stack":
    raise ValueError(f"not a stack spec of format {SPEC_FORMAT}: "
                     f"{ {k: spec.get(k) for k in ('format', 'kind')} }")
  per_task = spec["per_task"]
  probs = _as_member_probs("member_probs_MxNxT", member_probs_MxNxT, len(per_task))
  if probs.shape[0] != len(spec["members"]):
    raise ValueError(f"member_probs_MxNxT has {probs.shape[0]} members, the stack "
                     f"{len(spec['members'])} ({spec['members']})")
  out_NxT = np.empty(probs.shape[1:])
  for j, s in enumerate(per_task):
    if s["rule"] == "stack":
      x_NxM = member_logits(probs[:, :, j], float(spec["clip_eps"])).T
      out_NxT[:, j] = _sigmoid(_stack_logit(float(s["intercept"]),
                                            np.asarray(s["weights"], np.float64), x_NxM))
    elif s["rule"] == "best_member":
      out_NxT[:, j] = probs[int(s["best_member"]), :, j]
    else:
      raise ValueError(f"unknown stack rule {s['rule']!r} (task {s['task']!r})")
  return out_NxT
