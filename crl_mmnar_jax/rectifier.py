"""Pattern-wise post-hoc correction ("rectifier") of any model's probabilities.

DESIGN.md section 2 item 10. After a model is trained, for task t and observation
pattern δ the rectifier estimates the mean residual

    τ̂_{δ,t} = mean over fitting patients with pattern δ of (y − p̂)

on the probability scale and, where that shift is worth it, applies
``p' = clip(p + λ_t · τ_{δ,t}, 0, 1)``. Everything is estimated by K-fold
cross-fitting on the fitting (validation) data only (DESIGN.md section 4):

1. Rows are dealt to K folds stratified by pattern (`stratified_folds`).
2. One jitted `jax.ops.segment_sum` over ids ``fold * P + pattern_index`` gives the
   per-(fold, pattern, task) sums of r, r² and the count; the out-of-fold (OOF)
   statistics of fold k are the sums over the other folds.
3. Shrinkage toward the OOF global mean (pseudo-count `shrinkage`), a minimum count
   and the gate ``|τ| > κ`` (and ``|τ| − z·se > κ`` when z > 0) decide the correction.
4. κ and λ are chosen per task on the cross-fitted predictions (each row corrected
   with τ̂ from the other folds), by exact per-row Brier score or log loss.
5. The table applied to new data holds the mean of the K OOF estimates per pattern
   and task, with the same shrinkage, minimum count and gate at the selected κ.

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

SELECTIONS = ("brier", "logloss")
FORMAT = "crl_mmnar_jax.rectifier/1"
LOGLOSS_EPS = 1e-6            # probabilities are clipped to [eps, 1 - eps] in log loss
MAX_ROWS = 1 << 24            # counts are float32 sums inside the segment sum: exact below
_DENSE_PATTERN_LIMIT = 1 << 22  # pattern ids below this are compacted with bincount


# ----------------------------------------------------------------------------
# Input checks.
# ----------------------------------------------------------------------------


def _as_probs(name: str, probs: Any) -> tuple[np.ndarray, bool]:
  """Returns (N, T) floating probabilities and whether the input was 1-D."""
  a = np.asarray(probs)
  if a.dtype.kind not in "fiub":
    raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
  if a.ndim not in (1, 2):
    raise ValueError(f"{name} must be 1-D (N,) or 2-D (N, T), got shape {a.shape}")
  one_d = a.ndim == 1
  if a.dtype.kind != "f":
    a = a.astype(np.float64)
  elif a.dtype.itemsize < 4:
    a = a.astype(np.float32)
  a2 = a[:, None] if one_d else a
  if a2.size:
    if np.isnan(a2).any():
      raise ValueError(f"{name} contains NaN; probabilities must lie in [0, 1]")
    lo, hi = float(a2.min()), float(a2.max())
    if lo < 0.0 or hi > 1.0:
      bad = lo if lo < 0.0 else hi
      raise ValueError(f"{name} must lie in [0, 1], found value {bad}")
  return a2, one_d


def _as_labels(name: str, labels: Any, shape: tuple[int, int]) -> np.ndarray:
  """Returns (N, T) float64 labels in {0, 1, NaN}."""
  a = np.asarray(labels)
  if a.dtype.kind not in "fiub":
    raise ValueError(f"{name} must be numeric 0/1/NaN, got dtype {a.dtype}")
  a = a.astype(np.float64)
  if a.ndim == 1 and shape[1] == 1:
    a = a[:, None]
  if a.shape != shape:
    raise ValueError(f"{name} must have the shape of probs {shape}, got {np.shape(labels)}")
  known = ~np.isnan(a)
  bad = known & (a != 0.0) & (a != 1.0)
  if bad.any():
    vals = np.unique(a[bad])[:5].tolist()
    raise ValueError(f"{name} must be 0, 1 or NaN (unknown), found {vals}")
  return a


def _as_patterns(name: str, pattern: Any, n: int) -> np.ndarray:
  """Returns (N,) int64 non-negative pattern ids."""
  a = np.asarray(pattern)
  if a.ndim != 1:
    raise ValueError(f"{name} must be 1-D (N,), got shape {a.shape}")
  if a.shape[0] != n:
    raise ValueError(f"{name} must have {n} entries (one per row of probs), "
                     f"got {a.shape[0]}")
  if a.dtype.kind == "b":
    a = a.astype(np.int64)
  elif a.dtype.kind == "f":
    if a.size and (not np.all(np.isfinite(a)) or np.any(a != np.floor(a))):
      bad = a[~np.isfinite(a) | (a != np.floor(a))][:5].tolist()
      raise ValueError(f"{name} must hold integer pattern ids, found {bad}")
    a = a.astype(np.int64)
  elif a.dtype.kind not in "iu":
    raise ValueError(f"{name} must hold integer pattern ids, got dtype {a.dtype}")
  if a.size and a.min() < 0:
    raise ValueError(f"{name} must be non-negative pattern ids, found {int(a.min())}")
  if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
    raise ValueError(f"{name} pattern id too large: {int(a.max())}")
  return a.astype(np.int64, copy=False)


def _as_grid(name: str, grid: Any) -> tuple[float, ...]:
  """A non-empty tuple of finite, non-negative floats."""
  try:
    values = tuple(float(v) for v in np.atleast_1d(np.asarray(grid, dtype=np.float64)))
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be a sequence of numbers, got {grid!r}") from e
  if not values:
    raise ValueError(f"{name} must not be empty, got {grid!r}")
  for v in values:
    if not math.isfinite(v) or v < 0.0:
      raise ValueError(f"{name} values must be finite and >= 0, got {v} in {grid!r}")
  return values


def _non_negative(name: str, value: Any) -> float:
  try:
    v = float(value)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be a number, got {value!r}") from e
  if not math.isfinite(v) or v < 0.0:
    raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
  return v


def _integer(name: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  if int(value) < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def _task_names(task_names: Sequence[str] | None, t: int) -> tuple[str, ...]:
  if task_names is None:
    return tuple(f"task{j}" for j in range(t))
  if isinstance(task_names, str):
    task_names = (task_names,)
  names = tuple(task_names)
  if len(names) != t:
    raise ValueError(f"task_names must have {t} entries (one per column of probs), "
                     f"got {len(names)}: {names!r}")
  if not all(isinstance(s, str) for s in names) or len(set(names)) != t:
    raise ValueError(f"task_names must be unique strings, got {names!r}")
  return names


# ----------------------------------------------------------------------------
# Patterns and folds (host side, vectorised).
# ----------------------------------------------------------------------------


def compact_patterns(pattern_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Sorted distinct pattern ids (P,) and each row's index into them (N,) int32.

  Same result as ``np.unique(pattern_N, return_inverse=True)``, with an O(N) bincount
  path for the usual small ids (at most 2**22).
  """
  pattern_N = np.asarray(pattern_N, dtype=np.int64)
  if pattern_N.size and int(pattern_N.max()) < _DENSE_PATTERN_LIMIT:
    seen = np.bincount(pattern_N) > 0
    patterns_P = np.flatnonzero(seen).astype(np.int64)
    lookup = (np.cumsum(seen) - 1).astype(np.int32)
    return patterns_P, lookup[pattern_N]
  patterns_P, index_N = np.unique(pattern_N, return_inverse=True)
  return patterns_P.astype(np.int64), index_N.reshape(-1).astype(np.int32)


def stratified_folds(pattern_N: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
  """Fold (0..K-1) per row, stratified by pattern.

  Within each pattern the rows are shuffled (seeded) and dealt round-robin to the
  folds, starting from a random fold per pattern so that the leftover rows of small
  patterns do not all land in fold 0. Per pattern, fold sizes differ by at most one.
  Depends only on the patterns and the seed, never on labels or predictions.
  """
  pattern_N = _as_patterns("pattern_N", pattern_N, int(np.shape(pattern_N)[0])
                           if np.ndim(pattern_N) == 1 else -1)
  n_folds = _integer("n_folds", n_folds, 2)
  seed = _integer("seed", seed, 0)
  _, index_N = compact_patterns(pattern_N)
  return _stratified_folds(index_N, int(index_N.max()) + 1 if index_N.size else 0,
                           n_folds, seed)


def _stratified_folds(index_N: np.ndarray, n_patterns: int, n_folds: int,
                      seed: int) -> np.ndarray:
  n = index_N.shape[0]
  rng = np.random.default_rng(seed)
  perm_N = rng.permutation(n)
  start_P = rng.integers(0, n_folds, size=n_patterns)
  # A stable sort of the shuffled pattern index == lexsort by (pattern, random key);
  # 16-bit keys take numpy's radix sort.
  key_dtype = np.int16 if n_patterns <= np.iinfo(np.int16).max else np.int32
  order_N = perm_N[np.argsort(index_N[perm_N].astype(key_dtype), kind="stable")]
  counts_P = np.bincount(index_N, minlength=n_patterns)
  first_P = np.cumsum(counts_P) - counts_P
  sorted_index_N = index_N[order_N]
  rank_N = np.arange(n) - first_P[sorted_index_N]
  folds_N = np.empty(n, dtype=np.int32)
  folds_N[order_N] = (rank_N + start_P[sorted_index_N]) % n_folds
  return folds_N


def _bucket(n: int, minimum: int) -> int:
  """Rounds n up to m * 2**e with 8 <= m <= 16 (at most 12.5% padding).

  Padding the row count and the pattern count to such buckets lets fits of similar
  sizes reuse one compiled kernel.
  """
  n = max(int(n), minimum)
  step = 1 << max(0, (n - 1).bit_length() - 4)
  return -(-n // step) * step


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


@functools.partial(jax.jit, static_argnames=("num_segments", "selection"))
def _cell_losses(probs_NxT: jax.Array, labels_NxT: jax.Array, cell_N: jax.Array,
                 shift_CxT: jax.Array, lambda_J: jax.Array, *, num_segments: int,
                 selection: str) -> jax.Array:
  """Per-cell sums of the loss of clip(p + λ_j · shift[cell]): (C, T, J)."""
  n, t = probs_NxT.shape
  known_NxTx1 = ~jnp.isnan(labels_NxT)[:, :, None]
  y_NxTx1 = jnp.where(known_NxTx1, labels_NxT[:, :, None], 0.0)
  shift_NxT = jnp.take(shift_CxT, cell_N, axis=0, mode="clip")
  step_NxTxJ = shift_NxT[:, :, None] * lambda_J
  if selection == "brier":
    q_NxTxJ = jnp.clip(probs_NxT[:, :, None] + step_NxTxJ, 0.0, 1.0)
    loss_NxTxJ = jnp.square(y_NxTx1 - q_NxTxJ)
  else:
    # -log of the probability given to the observed label. For y = 0 that is
    # 1 - q = clip((1 - p) - λ·shift), computed from 1 - p so that float32 keeps
    # its precision near q = 1 (one log per element).
    p_obs_NxTxJ = jnp.where(y_NxTx1 == 1.0, probs_NxT[:, :, None] + step_NxTxJ,
                            (1.0 - probs_NxT)[:, :, None] - step_NxTxJ)
    loss_NxTxJ = -jnp.log(jnp.clip(p_obs_NxTxJ, LOGLOSS_EPS, 1.0 - LOGLOSS_EPS))
  loss_NxTxJ = jnp.where(known_NxTx1, loss_NxTxJ, 0.0)
  sums = jax.ops.segment_sum(loss_NxTxJ.reshape(n, -1), cell_N,
                             num_segments=num_segments)
  return sums.reshape(num_segments, t, lambda_J.shape[0])


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
            min_count: int) -> tuple[np.ndarray, np.ndarray]:
  """(n·τ + s·g) / (n + s), zeroed where n < max(min_count, 1); returns (τ_s, ok)."""
  ok = n >= max(min_count, 1)
  with np.errstate(invalid="ignore", divide="ignore"):
    shrunk = (n * tau + shrinkage * global_mean) / (n + shrinkage)
  return np.where(ok, shrunk, 0.0), ok


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


@dataclasses.dataclass(frozen=True, eq=False)
class Rectifier:
  """A fitted pattern-wise correction. `apply` it to any model's predictions.

  Arrays indexed by P follow `patterns` (sorted ids seen in fitting), by T follow
  `task_names`. `tau_oof_KxPxT`, `oof_probs_NxT` and `folds_N` describe the fitting
  rows and are None after `from_dict`.
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
    probs, one_d = _as_probs("probs_NxT", probs_NxT)
    if probs.shape[1] != self.n_tasks:
      raise ValueError(f"probs_NxT has {probs.shape[1]} task column(s), the rectifier "
                       f"was fitted on {self.n_tasks} ({', '.join(self.task_names)})")
    pattern = _as_patterns("pattern_N", pattern_N, probs.shape[0])
    # Row P of the shift table is the zero shift of unseen patterns: p + 0 = p.
    shift_Pp1xT = np.concatenate([self.shift_PxT, np.zeros((1, self.n_tasks))])
    out = np.clip(probs + shift_Pp1xT.astype(probs.dtype)[self._lookup(pattern)],
                  0.0, 1.0)
    return out[:, 0] if one_d else out

  def _lookup(self, pattern_N: np.ndarray) -> np.ndarray:
    """Index of each pattern id in `patterns`, or P where it was unseen in fitting."""
    p = self.n_patterns
    if pattern_N.size and int(pattern_N.max()) < _DENSE_PATTERN_LIMIT:
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
        },
        "table": self.table(),
    }
    if self.cv_loss_TxIxJ is not None:
      d["cv_loss"] = {name: [[_none_if_nan(v) for v in row] for row in grid]
                      for name, grid in zip(self.task_names, self.cv_loss_TxIxJ.tolist())}
    return d

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
    cv_loss = None
    if "cv_loss" in d:
      cv_loss = np.array([[[_nan_if_none(v) for v in row] for row in d["cv_loss"][t]]
                          for t in task_names], dtype=np.float64)
    return cls(
        patterns=patterns, task_names=task_names, count_PxT=count, tau_raw_PxT=tau_raw,
        se_PxT=se, tau_PxT=tau, corrected_PxT=corrected, kappa_T=kappa_T,
        lambda_T=lambda_T, global_mean_T=global_mean_T,
        n_folds=int(settings["n_folds"]),
        kappa_grid=tuple(float(v) for v in settings["kappa_grid"]),
        lambda_grid=tuple(float(v) for v in settings["lambda_grid"]),
        z=float(settings["z"]), min_count=int(settings["min_count"]),
        shrinkage=float(settings["shrinkage"]), seed=int(settings["seed"]),
        selection=str(settings["selection"]), cv_loss_TxIxJ=cv_loss)


# ----------------------------------------------------------------------------
# Fitting.
# ----------------------------------------------------------------------------


def _select(loss_TxIxJ: np.ndarray, kappa_I: np.ndarray,
            lambda_J: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per task, the (κ, λ) indices of the smallest loss.

  Exact ties go to the most conservative pair: smaller λ first, then larger κ.
  """
  i_IJ, j_IJ = np.meshgrid(np.arange(kappa_I.size), np.arange(lambda_J.size),
                           indexing="ij")
  i_C, j_C = i_IJ.reshape(-1), j_IJ.reshape(-1)
  order_C = np.lexsort((-kappa_I[i_C], lambda_J[j_C]))  # λ ascending, then κ descending
  best_T = order_C[np.argmin(loss_TxIxJ.reshape(loss_TxIxJ.shape[0], -1)[:, order_C],
                             axis=1)]
  return i_C[best_T], j_C[best_T]


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
        selection: str = "brier") -> Rectifier:
  """Fits the rectifier on held-out (validation) predictions by K-fold cross-fitting.

  Args:
    probs_NxT: (N, T) or (N,) predicted probabilities in [0, 1], from any model.
    labels_NxT: labels of the same shape: 0, 1, or NaN for unknown (ignored per task).
    pattern_N: (N,) non-negative integer pattern ids (bit m = modality m observed).
    n_folds: K >= 2 cross-fitting folds, stratified by pattern.
    kappa_grid: candidate thresholds κ >= 0; a pattern is corrected only where
      |τ| > κ.
    lambda_grid: candidate multipliers λ >= 0 of the correction.
    z: when > 0, additionally require |τ| − z·se > κ.
    min_count: patterns with fewer labelled rows get no correction.
    shrinkage: pseudo-count s of the shrinkage (n·τ + s·g) / (n + s) toward the
      global mean residual g; 0 disables it.
    seed: seeds the fold assignment.
    task_names: T names (default task0, task1, ...).
    selection: "brier" or "logloss", the cross-fitted criterion choosing κ and λ.

  Returns:
    The fitted `Rectifier`, including the cross-fitted rectified predictions of the
    fitting rows (`oof_probs_NxT`, (N, T) even for 1-D input) for honest metrics.

  Raises:
    ValueError: on malformed input, naming the argument and the offending value.
  """
  probs, _ = _as_probs("probs_NxT", probs_NxT)
  n, t = probs.shape
  if n == 0:
    raise ValueError("probs_NxT has no rows; the rectifier needs fitting data")
  if t == 0:
    raise ValueError(f"probs_NxT has no task columns, shape {probs.shape}")
  if n > MAX_ROWS:
    raise ValueError(f"probs_NxT has {n} rows; at most {MAX_ROWS} are supported "
                     "(counts are accumulated in float32)")
  labels = _as_labels("labels_NxT", labels_NxT, (n, t))
  pattern = _as_patterns("pattern_N", pattern_N, n)
  n_folds = _integer("n_folds", n_folds, 2)
  kappa_I = np.array(_as_grid("kappa_grid", kappa_grid))
  lambda_J = np.array(_as_grid("lambda_grid", lambda_grid))
  z = _non_negative("z", z)
  min_count = _integer("min_count", min_count, 0)
  shrinkage = _non_negative("shrinkage", shrinkage)
  seed = _integer("seed", seed, 0)
  names = _task_names(task_names, t)
  if selection not in SELECTIONS:
    raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")

  # Folds and cells (cell = fold * P_pad + pattern index), padded to size buckets.
  patterns_P, index_N = compact_patterns(pattern)
  p = patterns_P.shape[0]
  folds_N = _stratified_folds(index_N, p, n_folds, seed)
  p_pad, n_pad = _bucket(p, 8), _bucket(n, 1024)
  k, c = n_folds, n_folds * p_pad
  cell_N = np.zeros(n_pad, np.int32)
  cell_N[:n] = folds_N * p_pad + index_N
  probs32 = np.zeros((n_pad, t), np.float32)
  probs32[:n] = probs
  labels32 = np.full((n_pad, t), np.nan, np.float32)   # padded rows: label unknown
  labels32[:n] = labels
  probs_dev, labels_dev, cell_dev = (jnp.asarray(probs32), jnp.asarray(labels32),
                                     jnp.asarray(cell_N))

  # Per-(fold, pattern, task) sums -> out-of-fold statistics (sum over other folds).
  sums_KxPx3xT = np.asarray(
      _segment_sums(probs_dev, labels_dev, cell_dev, num_segments=c),
      dtype=np.float64).reshape(k, p_pad, 3, t)
  others_KxK = 1.0 - np.eye(k)
  oof_KxPx3xT = np.einsum("kj,jpst->kpst", others_KxK, sums_KxPx3xT)
  s1_oof, s2_oof, n_oof = (oof_KxPx3xT[:, :, i] for i in range(3))
  tau_oof_KxPxT, se_oof_KxPxT = _mean_and_se(s1_oof, s2_oof, n_oof)
  n_oof_KxT = n_oof.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    global_oof_KxT = np.where(n_oof_KxT > 0, s1_oof.sum(1) / n_oof_KxT, np.nan)
  shrunk_oof_KxPxT, ok_oof_KxPxT = _shrink(
      np.nan_to_num(tau_oof_KxPxT), n_oof, global_oof_KxT[:, None, :], shrinkage,
      min_count)
  gate_IxKxPxT = _gate(shrunk_oof_KxPxT[None], se_oof_KxPxT[None], ok_oof_KxPxT[None],
                       kappa_I[:, None, None, None], z)

  # Cross-fitted choice of (κ, λ): exact per-row losses of clip(p + λ·τ_oof) summed
  # per cell on device; the κ gate (per cell) then picks corrected or raw cell sums.
  lambda_ext_J = np.concatenate([[0.0], lambda_J])
  cell_loss_CxTxJ = np.asarray(
      _cell_losses(probs_dev, labels_dev, cell_dev,
                   jnp.asarray(shrunk_oof_KxPxT.reshape(c, t), jnp.float32),
                   jnp.asarray(lambda_ext_J, jnp.float32), num_segments=c,
                   selection=selection), dtype=np.float64)
  base_T = cell_loss_CxTxJ[:, :, 0].sum(0)
  delta_CxTxJ = cell_loss_CxTxJ[:, :, 1:] - cell_loss_CxTxJ[:, :, :1]
  delta_CxTxJ[:, :, lambda_J == 0.0] = 0.0   # no correction: exactly the raw loss
  n_known_T = np.maximum(sums_KxPx3xT[:, :, 2].sum((0, 1)), 1.0)
  loss_TxIxJ = (base_T[:, None, None] + np.einsum(
      "ict,ctj->tij", gate_IxKxPxT.reshape(-1, c, t).astype(np.float64),
      delta_CxTxJ)) / n_known_T[:, None, None]
  i_T, j_T = _select(loss_TxIxJ, kappa_I, lambda_J)
  kappa_T, lambda_T = kappa_I[i_T], lambda_J[j_T]

  # Cross-fitted rectified predictions of the fitting rows (input precision).
  gate_KxPxT = np.take_along_axis(gate_IxKxPxT, i_T[None, None, None, :], axis=0)[0]
  shift_CxT = (lambda_T * np.where(gate_KxPxT, shrunk_oof_KxPxT, 0.0)).reshape(c, t)
  oof_probs = np.clip(probs + shift_CxT.astype(probs.dtype)[cell_N[:n]], 0.0, 1.0)

  # The table for new data: mean of the K OOF estimates, se over all rows.
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
  tau_raw_PxT = np.where(count_PxT > 0, tau_raw_PxT, np.nan)
  shrunk_PxT, ok_PxT = _shrink(np.nan_to_num(tau_raw_PxT), count_PxT, global_mean_T,
                               shrinkage, min_count)
  gate_PxT = _gate(shrunk_PxT, se_PxT, ok_PxT, kappa_T, z)

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
      cv_loss_TxIxJ=loss_TxIxJ,
      tau_oof_KxPxT=tau_oof_KxPxT[:, :p],
      oof_probs_NxT=oof_probs,
      folds_N=folds_N,
  )
