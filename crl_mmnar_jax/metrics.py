"""Binary classification metrics with weights, bootstrap intervals and per-pattern slices.

Pure numpy (host side), vectorised: no Python loop over rows. Every metric is computed
from one sort of the scores: rows are ordered by score (descending), equal scores form
a tie group, and the weighted positive / negative totals per tie group are enough for
AUROC (ties count 1/2), average precision (sklearn's step definition), Brier score and
ECE. Weights may be one vector (N,) or a batch (B, N); the batched form evaluates B
weightings in one pass and is what the bootstrap uses (a resample of patients is a
vector of multinomial counts used as weights).

Conventions:

* `y` holds labels 0/1 (bool, int or float). The low-level metric functions reject
  anything else, NaN included; `binary_metrics`, `bootstrap_ci`, `per_pattern_metrics`
  and `task_metrics` treat NaN as "label unknown" and drop those rows first.
* `p` holds predicted probabilities in [0, 1]. `auroc`, `auprc` and `roc_curve` only use
  the ranking, so they accept any finite score (e.g. logits); the calibration metrics
  (`brier`, `ece`, `calibration_curve`) and everything built on them require [0, 1].
* An undefined metric (one class only, no positives, zero total weight, empty slice) is
  NaN, never an exception; bad input raises ValueError naming the argument.
* Calibration bins are equal-width on [0, 1]: bin k holds edges[k] <= p < edges[k + 1]
  with ``edges = np.linspace(0, 1, n_bins + 1)``, and p = 1.0 goes in the last bin.
  (sklearn's `calibration_curve` closes its bins on the right instead, so the two differ
  only for scores exactly on an inner edge.)
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

METRIC_NAMES = ("auroc", "auprc", "brier", "ece")
# Resamples x rows materialised at once by the bootstrap (int64: 8 MB per array). Small
# chunks stay in cache: 2-3x faster than 1e7 (measured on N = 2e4 and 2e5).
_MAX_CHUNK_ELEMENTS = 1_000_000


# ----------------------------------------------------------------------------------
# Input validation.


def _fmt_bad(values: np.ndarray, limit: int = 5) -> list:
  return np.unique(values)[:limit].tolist()


def _as_1d(x, name: str, dtype=np.float64) -> np.ndarray:
  try:
    a = np.asarray(x, dtype=dtype)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be numeric, could not convert: {e}") from None
  if a.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
  return a


def _check_labels(y_N: np.ndarray, name: str = "y", allow_nan: bool = False) -> None:
  ok_N = (y_N == 0) | (y_N == 1)
  if allow_nan:
    ok_N |= np.isnan(y_N)
  if not ok_N.all():
    what = "0, 1 or NaN (unknown)" if allow_nan else "0 and 1"
    hint = "" if allow_nan else " (use binary_metrics to drop NaN = unknown labels)"
    raise ValueError(f"{name} must contain only {what}{hint}; found {_fmt_bad(y_N[~ok_N])} "
                     f"at {int((~ok_N).sum())} row(s), first at index {int(np.argmax(~ok_N))}")


def _check_scores(p_N: np.ndarray, n: int, name: str = "p", prob: bool = True) -> None:
  if p_N.shape != (n,):
    raise ValueError(f"{name} must have the same length as y ({n}), got shape {p_N.shape}")
  ok_N = np.isfinite(p_N)
  if prob:
    ok_N &= (p_N >= 0) & (p_N <= 1)
  if not ok_N.all():
    what = "finite probabilities in [0, 1]" if prob else "finite scores"
    raise ValueError(f"{name} must be {what}; found {_fmt_bad(p_N[~ok_N])} at "
                     f"{int((~ok_N).sum())} row(s), first at index {int(np.argmax(~ok_N))}")


def _labels_scores(y, p, prob: bool) -> tuple[np.ndarray, np.ndarray]:
  y_N = _as_1d(y, "y")
  _check_labels(y_N)
  p_N = _as_1d(p, "p")
  _check_scores(p_N, y_N.shape[0], prob=prob)
  return y_N, p_N


def _known_rows(y, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Validates (labels may be NaN) and returns (y_K, p_K, known_N) for known labels."""
  y_N = _as_1d(y, "y")
  _check_labels(y_N, allow_nan=True)
  p_N = _as_1d(p, "p")
  _check_scores(p_N, y_N.shape[0], prob=True)
  known_N = ~np.isnan(y_N)
  return y_N[known_N], p_N[known_N], known_N


def _as_weights(w, n: int) -> tuple[np.ndarray, bool]:
  """Returns (w_BxN float64, batched) with B = 1 for w=None or a vector."""
  if w is None:
    return np.ones((1, n)), False
  w = _as_1d(w, "w") if np.ndim(w) == 1 else np.asarray(w, dtype=np.float64)
  if w.shape == (n,):
    w_BxN, batched = w[None, :], False
  elif w.ndim == 2 and w.shape[1] == n:
    w_BxN, batched = w, True
  else:
    raise ValueError(f"w must have shape (N,)=({n},) or (B, N)=(B, {n}) to match y, "
                     f"got shape {w.shape}")
  ok = np.isfinite(w_BxN) & (w_BxN >= 0)
  if not ok.all():
    raise ValueError(f"w must be finite and non-negative; found {_fmt_bad(w_BxN[~ok])}")
  return w_BxN, batched


def _check_positive_int(value, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


# ----------------------------------------------------------------------------------
# The shared core: one sort, tie groups, weighted totals per group.


@dataclasses.dataclass(frozen=True)
class _Ranked:
  """Tie structure of the scores: groups of equal score, in descending score order.

  `code_N = label * G + group` numbers the (class, tie group) cells, so one
  `np.bincount` over codes (weighted, or over resampled row indices) yields the
  weighted negatives and positives of every tie group for every weighting at once.
  """

  p_G: np.ndarray     # distinct scores, descending
  code_N: np.ndarray  # int64 per row: label * G + tie group

  @property
  def n_groups(self) -> int:
    return int(self.p_G.shape[0])


def _rank(y_N: np.ndarray, p_N: np.ndarray) -> _Ranked:
  """One sort of the scores (np.unique); ties are exactly equal scores."""
  neg_p_G, group_N = np.unique(-p_N, return_inverse=True)
  code_N = group_N.astype(np.int64).reshape(-1) + (y_N == 1) * neg_p_G.shape[0]
  return _Ranked(p_G=-neg_p_G, code_N=code_N)


def _cell_counts(keys_BxN: np.ndarray, n_cells: int, weights_BxN=None,
                 overwrite_keys: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(positives, negatives) per tie group, each (B, G) float64, from per-row cells.

  `keys_BxN` are cell codes (label * G + group) per weighting row b; `weights_BxN` are
  the weights (None: each key counts 1, as for resampled row indices).
  """
  b = keys_BxN.shape[0]
  offsets_Bx1 = (np.arange(b, dtype=np.int64) * n_cells)[:, None]
  if overwrite_keys:
    keys_BxN += offsets_Bx1
    flat_BxN = keys_BxN
  else:
    flat_BxN = keys_BxN + offsets_Bx1
  w = None if weights_BxN is None else weights_BxN.ravel()
  cells = np.bincount(flat_BxN.ravel(), weights=w, minlength=b * n_cells)
  cells_Bx2xG = cells.reshape(b, 2, n_cells // 2)
  return cells_Bx2xG[:, 1].astype(np.float64), cells_Bx2xG[:, 0].astype(np.float64)


def _group_sums(r: _Ranked, w_BxN: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
  """(positives, negatives) per tie group, each (B, G), for weights (B, N) or None (B=1)."""
  if w_BxN is None:
    return _cell_counts(r.code_N[None, :], 2 * r.n_groups)
  keys_BxN = np.broadcast_to(r.code_N, w_BxN.shape)
  return _cell_counts(keys_BxN, 2 * r.n_groups, w_BxN)


def _safe_div(num_B: np.ndarray, den_B: np.ndarray, defined_B: np.ndarray) -> np.ndarray:
  out_B = np.full(num_B.shape, np.nan)
  np.divide(num_B, den_B, out=out_B, where=defined_B)
  return out_B


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
  """Equal-width bin of each probability: [edge_k, edge_k+1), 1.0 in the last bin."""
  edges = np.linspace(0.0, 1.0, n_bins + 1)
  return np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)


def _from_groups(names: Sequence[str], pos_BxG: np.ndarray, neg_BxG: np.ndarray,
                 p_G: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
  """The named metrics, each (B,), from weighted positives / negatives per tie group.

  Tie groups are in descending score order. NaN where a metric is undefined.
  """
  n_pos_B, n_neg_B = pos_BxG.sum(1), neg_BxG.sum(1)
  total_B = n_pos_B + n_neg_B
  out: dict[str, np.ndarray] = {}
  tp_BxG = np.cumsum(pos_BxG, axis=1) if {"auroc", "auprc"} & set(names) else None
  if "auroc" in names:
    # A negative in group g is beaten by the positives scored strictly higher
    # (tp_g - pos_g) and ties those of its own group (pos_g / 2):
    # correctly ordered pairs = sum_g neg_g * (tp_g - pos_g / 2).
    num_B = (np.einsum("bg,bg->b", neg_BxG, tp_BxG)
             - 0.5 * np.einsum("bg,bg->b", neg_BxG, pos_BxG))
    out["auroc"] = _safe_div(num_B, n_pos_B * n_neg_B, (n_pos_B > 0) & (n_neg_B > 0))
  if "auprc" in names:
    # sum over thresholds k of (R_k - R_{k-1}) P_k with P_k = tp_k / (tp_k + fp_k).
    pp_BxG = np.cumsum(neg_BxG, axis=1)
    pp_BxG += tp_BxG
    # Where tp + fp = 0 the precision stays 0; there pos = 0, so the term is 0 anyway.
    np.divide(tp_BxG, pp_BxG, out=pp_BxG, where=pp_BxG > 0)
    out["auprc"] = _safe_div(np.einsum("bg,bg->b", pos_BxG, pp_BxG), n_pos_B, n_pos_B > 0)
  if "brier" in names:
    num_B = pos_BxG @ np.square(1.0 - p_G) + neg_BxG @ np.square(p_G)
    out["brier"] = _safe_div(num_B, total_B, total_B > 0)
  if "ece" in names:
    # sum_k (W_k / W) |mean_k(y) - mean_k(p)| = sum_k |sum_k w (y - p)| / W. The bins
    # are contiguous runs of tie groups (descending scores): two matrix-vector products
    # per non-empty bin (a loop over at most n_bins bins, not rows).
    bin_G = _bin_index(p_G, n_bins)
    bounds = np.r_[np.flatnonzero(np.r_[True, bin_G[1:] != bin_G[:-1]]), p_G.shape[0]]
    abs_gap_B = np.zeros(pos_BxG.shape[0])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
      abs_gap_B += np.abs(pos_BxG[:, lo:hi] @ (1.0 - p_G[lo:hi])
                          - neg_BxG[:, lo:hi] @ p_G[lo:hi])
    out["ece"] = _safe_div(abs_gap_B, total_B, total_B > 0)
  return out


def _weighted_metric(name: str, y, p, w, n_bins: int = 10, prob: bool = True):
  y_N, p_N = _labels_scores(y, p, prob=prob)
  w_BxN, batched = _as_weights(w, y_N.shape[0])
  if y_N.shape[0] == 0:
    out_B = np.full(w_BxN.shape[0], np.nan)
  else:
    r = _rank(y_N, p_N)
    pos_BxG, neg_BxG = _group_sums(r, None if w is None else w_BxN)
    out_B = _from_groups((name,), pos_BxG, neg_BxG, r.p_G, n_bins)[name]
  return out_B if batched else float(out_B[0])


# ----------------------------------------------------------------------------------
# Public metrics.


def auroc(y, p, w=None) -> float | np.ndarray:
  """Area under the ROC curve; tied scores count 1/2 (equals sklearn's roc_auc_score).

  Args:
    y: (N,) labels 0/1.
    p: (N,) scores; only their order matters (any finite values).
    w: optional non-negative weights, (N,) or (B, N) for B weightings at once.

  Returns:
    A float, or a (B,) array for (B, N) weights; NaN where the (weighted) data has
    only one class.
  """
  return _weighted_metric("auroc", y, p, w, prob=False)


def auprc(y, p, w=None) -> float | np.ndarray:
  """Average precision as sklearn's average_precision_score (ties grouped).

  AP = sum_k (R_k - R_{k-1}) P_k over distinct score thresholds in descending order.
  Same arguments as `auroc`; NaN where the (weighted) positives are zero.
  """
  return _weighted_metric("auprc", y, p, w, prob=False)


def brier(y, p, w=None) -> float | np.ndarray:
  """(Weighted) mean squared error of probabilities p in [0, 1] against 0/1 labels."""
  return _weighted_metric("brier", y, p, w)


def ece(y, p, w=None, n_bins: int = 10) -> float | np.ndarray:
  """Expected calibration error over `n_bins` equal-width bins on [0, 1].

  ECE = sum over bins of (bin weight / total weight) * |mean(y) - mean(p)| in the bin;
  bins as in the module docstring. Same weight/batch support as `auroc`.
  """
  return _weighted_metric("ece", y, p, w, n_bins=_check_positive_int(n_bins, "n_bins"))


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray]:
  """ROC points (fpr, tpr), one per distinct threshold, starting at (0, 0).

  Equals sklearn's roc_curve(..., drop_intermediate=False) without the thresholds.
  With a single class the undefined axis is NaN (no exception), as in sklearn; with
  no rows the curve is the single point (0, 0).
  """
  y_N, p_N = _labels_scores(y, p, prob=False)
  if y_N.shape[0] == 0:
    return np.array([0.0]), np.array([0.0])
  r = _rank(y_N, p_N)
  pos_1xG, neg_1xG = _group_sums(r)
  tp_G = np.r_[0.0, np.cumsum(pos_1xG[0])]
  fp_G = np.r_[0.0, np.cumsum(neg_1xG[0])]
  with np.errstate(invalid="ignore", divide="ignore"):
    return fp_G / fp_G[-1], tp_G / tp_G[-1]


def calibration_curve(y, p, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Reliability diagram data: (mean_pred, frac_pos, count) per non-empty bin.

  Bins are the ECE bins (see the module docstring), in ascending order; `count` is int.
  """
  n_bins = _check_positive_int(n_bins, "n_bins")
  y_N, p_N = _labels_scores(y, p, prob=True)
  bin_N = _bin_index(p_N, n_bins)
  count_K = np.bincount(bin_N, minlength=n_bins)
  sum_p_K = np.bincount(bin_N, weights=p_N, minlength=n_bins)
  sum_y_K = np.bincount(bin_N, weights=y_N, minlength=n_bins)
  keep_K = count_K > 0
  return (sum_p_K[keep_K] / count_K[keep_K], sum_y_K[keep_K] / count_K[keep_K],
          count_K[keep_K].astype(np.int64))


def _metrics_known(y_K: np.ndarray, p_K: np.ndarray) -> dict:
  """binary_metrics on already validated rows with known labels."""
  n, n_pos = int(y_K.shape[0]), int(y_K.sum())
  out: dict = {"n": n, "n_pos": n_pos}
  if n == 0:
    out.update({m: float("nan") for m in METRIC_NAMES})
    out["note"] = "empty slice: no rows with a known label (n=0)"
    return out
  r = _rank(y_K, p_K)
  pos_1xG, neg_1xG = _group_sums(r)
  for m, v_1 in _from_groups(METRIC_NAMES, pos_1xG, neg_1xG, r.p_G).items():
    out[m] = float(v_1[0])
  notes = []
  if n_pos == 0 or n_pos == n:
    notes.append(f"auroc undefined: only one class (n_pos={n_pos} of n={n})")
  if n_pos == 0:
    notes.append(f"auprc undefined: no positives (n_pos=0 of n={n})")
  if notes:
    out["note"] = "; ".join(notes)
  return out


def binary_metrics(y, p) -> dict:
  """AUROC, AUPRC, Brier and ECE (10 bins) on the rows whose label is known.

  Args:
    y: (N,) labels 0, 1 or NaN (unknown; those rows are dropped).
    p: (N,) probabilities in [0, 1] (checked on every row).

  Returns:
    {"n", "n_pos", "auroc", "auprc", "brier", "ece"} as plain ints / floats, plus a
    "note" string only when some metric is undefined (NaN). Never raises on a
    single-class or empty slice.
  """
  y_K, p_K, _ = _known_rows(y, p)
  return _metrics_known(y_K, p_K)


# ----------------------------------------------------------------------------------
# Bootstrap, per-pattern and per-task views.


def _check_metric_names(metrics: Sequence[str]) -> tuple[str, ...]:
  names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
  unknown = [m for m in names if m not in METRIC_NAMES]
  if unknown or not names:
    raise ValueError(f"metrics must be a non-empty subset of {METRIC_NAMES}, got {names}")
  return names


def bootstrap_samples(y, p, *, n_boot: int = 1000, seed: int = 0,
                      metrics: Sequence[str] = METRIC_NAMES, chunk: int | None = None
                      ) -> dict[str, np.ndarray]:
  """Metric values on `n_boot` patient-level resamples: {metric: (n_boot,) array}.

  NaN marks a resample where the metric is undefined (e.g. only one class drawn).

  Resampling protocol (fixed): rows with a NaN label are dropped, leaving K rows in
  input order; with ``rng = np.random.default_rng(seed)``, resample j = 0, 1, ... is
  the rows ``rng.integers(0, K, size=K)``, drawn one resample after another. Hence the
  values do not depend on `chunk`, the first k of a larger `n_boot` are the same, and
  two calls with the same seed and the same labels (e.g. raw and rectified
  probabilities of the same patients) use the same resamples: their difference is a
  paired bootstrap.

  Each chunk of b resamples is evaluated in one vectorised pass: the resampled rows'
  (tie group, class) cells are counted with one `np.bincount`, which is exactly the
  batched-weight form with multinomial counts as weights.

  Args:
    y: (N,) labels 0, 1 or NaN.
    p: (N,) probabilities in [0, 1].
    n_boot: number of resamples.
    seed: seed of the resampling generator.
    metrics: names from METRIC_NAMES.
    chunk: resamples per chunk; default keeps chunk * K <= 1e6 (~8 MB per array).
  """
  names = _check_metric_names(metrics)
  n_boot = _check_positive_int(n_boot, "n_boot")
  if chunk is not None:
    chunk = _check_positive_int(chunk, "chunk")
  y_K, p_K, _ = _known_rows(y, p)
  k = int(y_K.shape[0])
  values = {m: np.full(n_boot, np.nan) for m in names}
  if k == 0:
    return values
  r = _rank(y_K, p_K)
  n_cells = 2 * r.n_groups
  rng = np.random.default_rng(seed)
  b_chunk = min(n_boot, chunk if chunk is not None else max(1, _MAX_CHUNK_ELEMENTS // k))
  idx_BxK = np.empty((b_chunk, k), dtype=np.int64)
  for start in range(0, n_boot, b_chunk):
    b = min(b_chunk, n_boot - start)
    for j in range(b):  # a loop over resamples (not rows): chunk-independent draws
      idx_BxK[j] = rng.integers(0, k, size=k)
    keys_BxK = r.code_N[idx_BxK[:b]]
    pos_BxG, neg_BxG = _cell_counts(keys_BxK, n_cells, overwrite_keys=True)
    for m, v_B in _from_groups(names, pos_BxG, neg_BxG, r.p_G).items():
      values[m][start:start + b] = v_B
  return values


def bootstrap_ci(y, p, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                 metrics: Sequence[str] = METRIC_NAMES, chunk: int | None = None,
                 min_defined: float = 0.5) -> dict[str, tuple[float, float]]:
  """Percentile bootstrap intervals from resampling patients (rows) with replacement.

  Rows with a NaN label are dropped first; resamples as in `bootstrap_samples`
  (deterministic for a given seed, independent of `chunk`).

  Args:
    y: (N,) labels 0, 1 or NaN.
    p: (N,) probabilities in [0, 1].
    n_boot: number of resamples.
    alpha: the interval is the [alpha/2, 1 - alpha/2] percentiles.
    seed: seed of the resampling generator.
    metrics: names from METRIC_NAMES.
    chunk: resamples per vectorised chunk; default keeps chunk * N <= 1e6.
    min_defined: resamples where a metric is undefined (e.g. one class) are ignored;
      when fewer than this fraction of the resamples define it, its interval is
      (nan, nan).

  Returns:
    {metric: (lo, hi)} as plain floats.
  """
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
  if not 0.0 <= min_defined <= 1.0:
    raise ValueError(f"min_defined must be in [0, 1], got {min_defined!r}")
  values = bootstrap_samples(y, p, n_boot=n_boot, seed=seed, metrics=metrics, chunk=chunk)
  q = [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)]
  out = {}
  for m, v in values.items():
    n_defined = int(np.isfinite(v).sum())
    if n_defined == 0 or n_defined < min_defined * v.shape[0]:
      out[m] = (float("nan"), float("nan"))
    else:
      lo, hi = np.nanpercentile(v, q)
      out[m] = (float(lo), float(hi))
  return out


def per_pattern_metrics(y, p, pattern, min_count: int = 1) -> list[dict]:
  """binary_metrics per missingness pattern.

  Args:
    y: (N,) labels 0, 1 or NaN (unknown; dropped, but the pattern is still listed).
    p: (N,) probabilities in [0, 1].
    pattern: (N,) integer pattern ids (see `cohort.pattern_ids`).
    min_count: patterns with fewer rows of known label than this get NaN metrics and a
      note instead of numbers computed on too few patients (a pattern with none gets
      binary_metrics' empty-slice note).

  Returns:
    One dict per distinct pattern id present in `pattern`, sorted by n (rows with a
    known label) descending, then by pattern id: {"pattern", "n", "n_pos", "auroc",
    "auprc", "brier", "ece"} and "note" where a metric is undefined or withheld.
  """
  y_N = _as_1d(y, "y")
  pat = np.asarray(pattern)
  if pat.ndim != 1 or pat.shape[0] != y_N.shape[0]:
    raise ValueError(f"pattern must have shape (N,)=({y_N.shape[0]},) like y, got {pat.shape}")
  if not (np.issubdtype(pat.dtype, np.integer) or pat.dtype == bool):
    raise ValueError(f"pattern must hold integer pattern ids, got dtype {pat.dtype}")
  if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)):
    raise ValueError(f"min_count must be an integer, got {min_count!r}")
  _, _, known_N = _known_rows(y_N, p)
  p_N = np.asarray(p, dtype=np.float64)

  ids_P, inverse_N = np.unique(pat.astype(np.int64), return_inverse=True)
  n_P = np.bincount(inverse_N[known_N], minlength=ids_P.shape[0])
  rank_P = np.lexsort((ids_P, -n_P))
  rows_by_pattern = np.argsort(inverse_N[known_N], kind="stable")
  known_rows = np.flatnonzero(known_N)[rows_by_pattern]
  ends_P = np.cumsum(n_P)
  out = []
  for k in rank_P:
    rows = known_rows[ends_P[k] - n_P[k]:ends_P[k]]
    if 0 < n_P[k] < min_count:
      m = {"n": int(n_P[k]), "n_pos": int(y_N[rows].sum())}
      m.update({name: float("nan") for name in METRIC_NAMES})
      m["note"] = f"metrics withheld: n={int(n_P[k])} < min_count={int(min_count)}"
    else:
      m = _metrics_known(y_N[rows], p_N[rows])
    out.append({"pattern": int(ids_P[k]), **m})
  return out


def task_metrics(labels_NxT, probs_NxT, task_names: Sequence[str]) -> dict[str, dict]:
  """binary_metrics per task column plus a "mean" entry.

  Args:
    labels_NxT: (N, T) labels 0, 1 or NaN (unknown, dropped per task).
    probs_NxT: (N, T) probabilities in [0, 1].
    task_names: T distinct names (not "mean").

  Returns:
    {task: binary_metrics(...)} and "mean": each metric averaged over the tasks where
    it is defined (NaN if none), with "n_tasks_<metric>" counts and a "note" when a task
    was left out of an average.
  """
  names = [str(t) for t in task_names]
  labels_NxT = np.asarray(labels_NxT, dtype=np.float64)
  probs_NxT = np.asarray(probs_NxT, dtype=np.float64)
  if labels_NxT.ndim != 2:
    raise ValueError(f"labels_NxT must be 2-D (N, T), got shape {labels_NxT.shape}")
  if probs_NxT.shape != labels_NxT.shape:
    raise ValueError(f"probs_NxT must have the shape of labels_NxT {labels_NxT.shape}, "
                     f"got {probs_NxT.shape}")
  if len(names) != labels_NxT.shape[1]:
    raise ValueError(f"task_names has {len(names)} names for {labels_NxT.shape[1]} "
                     f"task columns: {names}")
  if len(set(names)) != len(names) or "mean" in names:
    raise ValueError(f"task_names must be distinct and not 'mean', got {names}")
  out: dict[str, dict] = {}
  for t, name in enumerate(names):
    try:
      out[name] = binary_metrics(labels_NxT[:, t], probs_NxT[:, t])
    except ValueError as e:
      raise ValueError(f"task '{name}' (column {t}): {e}") from None
  mean: dict = {}
  notes = []
  for m in METRIC_NAMES:
    vals = np.array([out[name][m] for name in names], dtype=np.float64)
    ok = np.isfinite(vals)
    mean[m] = float(vals[ok].mean()) if ok.any() else float("nan")
    mean[f"n_tasks_{m}"] = int(ok.sum())
    if not ok.all():
      notes.append(f"{m} averaged over {int(ok.sum())} of {len(names)} tasks")
  if notes:
    mean["note"] = "; ".join(notes)
  out["mean"] = mean
  return out


# ----------------------------------------------------------------------------------
# Operating points: a patient is flagged when p >= threshold.


def threshold_metrics(y, p, thresholds: Sequence[float]) -> list[dict]:
  """{"threshold", "sensitivity", "specificity", "ppv"} per threshold on the rows of
  known label (NaN labels dropped); NaN where a rate has no denominator."""
  y_K, p_K, _ = _known_rows(y, p)
  t_T = _as_1d(thresholds, "thresholds")
  pos_sorted, neg_sorted = np.sort(p_K[y_K == 1]), np.sort(p_K[y_K == 0])
  tp_T = pos_sorted.shape[0] - np.searchsorted(pos_sorted, t_T, side="left")
  fp_T = neg_sorted.shape[0] - np.searchsorted(neg_sorted, t_T, side="left")
  tn_T = neg_sorted.shape[0] - fp_T
  rate = lambda num, den: float(num / den) if den > 0 else float("nan")
  return [{"threshold": float(t), "sensitivity": rate(tp, pos_sorted.shape[0]),
           "specificity": rate(tn, neg_sorted.shape[0]), "ppv": rate(tp, tp + fp)}
          for t, tp, fp, tn in zip(t_T, tp_T, fp_T, tn_T)]


def threshold_for_sensitivity(y, p, target: float = 0.9) -> float:
  """The largest threshold whose sensitivity (p >= threshold) is at least `target`
  on the rows of known label; NaN without positives."""
  if not 0.0 < float(target) <= 1.0:
    raise ValueError(f"target sensitivity must be in (0, 1], got {target!r}")
  y_K, p_K, _ = _known_rows(y, p)
  pos_desc = -np.sort(-p_K[y_K == 1])
  if pos_desc.shape[0] == 0:
    return float("nan")
  k = max(1, int(np.ceil(float(target) * pos_desc.shape[0] - 1e-9)))
  return float(pos_desc[k - 1])
