"""Bootstrap intervals for the rectifier: τ̂ per pattern, and paired metric changes.

Both functions return plain JSON-able dicts (None for an undefined value) for
results.json and the report; `report_lines` renders them as markdown tables.

* `tau_intervals`: per pattern and task, the mean residual τ̂ = mean(y − p) over the
  pattern's labelled rows and a percentile bootstrap interval. Resampling protocol
  (fixed): patterns in ascending id order; a pattern's rows (all of them, in input
  order) are resampled with replacement, resample b of pattern δ being the rows
  ``rows_δ[rng.integers(0, n_δ, size=n_δ)]`` with ``rng =
  np.random.default_rng(seed)`` drawn for b = 0, 1, ... (in chunks; the stream is the
  same). Per task, a resample's τ̂ is the mean residual over its rows with a known
  label (undefined if none). τ̂ here is the plain pattern mean: the rectifier's
  `tau_raw` (the mean of the K out-of-fold means) equals it up to unequal fold sizes.
* `paired_delta_intervals`: per task (and per pattern with enough labelled rows), the
  metric of the raw and of the rectified predictions and a paired percentile
  bootstrap interval of (rectified − raw). Both are evaluated on the same patient
  resamples: `metrics.bootstrap_samples` with the same seed and labels draws the same
  rows (see its protocol), so the interval is that of the paired difference.

Validation "rectified" predictions (`Rectifier.oof_probs_NxT`) are out-of-fold for τ̂
but in-sample for the choice of κ and λ, so validation intervals of the change are
optimistic; test intervals are honest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from crl_mmnar_jax import metrics as metrics_lib
from crl_mmnar_jax.rectifier import checks as checks
from crl_mmnar_jax.rectifier import folds as folds_lib

DELTA_METRICS = ("auroc", "brier")
_METRIC_FNS = {"auroc": metrics_lib.auroc, "auprc": metrics_lib.auprc,
               "brier": metrics_lib.brier, "ece": metrics_lib.ece}
_MAX_DRAWS = 1 << 20          # resampled row indices materialised at once
_MIN_DEFINED = 0.5            # as metrics.bootstrap_ci: fewer defined resamples -> None


def _finite_or_none(x: Any) -> float | None:
  x = float(x)
  return x if math.isfinite(x) else None


def _interval(values_B: np.ndarray, alpha: float) -> tuple[float | None, float | None]:
  """Percentile interval of the defined values (None if under half are defined)."""
  ok_B = np.isfinite(values_B)
  if not ok_B.any() or ok_B.sum() < _MIN_DEFINED * values_B.shape[0]:
    return None, None
  lo, hi = np.percentile(values_B[ok_B], [100.0 * alpha / 2.0, 100.0 * (1 - alpha / 2.0)])
  return float(lo), float(hi)


def _common(probs_NxT: Any, labels_NxT: Any, n_boot: Any, alpha: Any, seed: Any,
            task_names: Sequence[str] | None, probs_name: str = "probs_NxT"):
  probs, _ = checks.as_probs(probs_name, probs_NxT)
  labels = checks.as_labels("labels_NxT", labels_NxT, probs.shape)
  return (probs.astype(np.float64), labels, checks.integer("n_boot", n_boot, 1),
          checks.alpha_level("alpha", alpha), checks.integer("seed", seed, 0),
          checks.task_names(task_names, probs.shape[1]))


def tau_intervals(probs_NxT: Any, labels_NxT: Any, pattern_N: Any, *, n_boot: int = 1000,
                  alpha: float = 0.05, seed: int = 0,
                  task_names: Sequence[str] | None = None) -> dict[str, Any]:
  """Per-pattern bootstrap intervals of τ̂ = mean(y − p) (protocol in the docstring).

  Args:
    probs_NxT: (N, T) or (N,) probabilities in [0, 1] (the uncorrected predictions).
    labels_NxT: labels of the same shape: 0, 1 or NaN (unknown).
    pattern_N: (N,) non-negative integer pattern ids.
    n_boot: resamples per pattern.
    alpha: the interval is the [alpha/2, 1 − alpha/2] percentiles.
    seed: seed of the resampling generator.
    task_names: T names (default task0, task1, ...).

  Returns:
    {"n_boot", "alpha", "seed", "method", "tasks": {task: [{"pattern", "n" (labelled
    rows), "tau", "lo", "hi"}, ...] in ascending pattern id}}; tau, lo and hi are None
    where the pattern has no labelled row for the task.
  """
  probs, labels, n_boot, alpha, seed, names = _common(probs_NxT, labels_NxT, n_boot,
                                                      alpha, seed, task_names)
  pattern = checks.as_patterns("pattern_N", pattern_N, probs.shape[0])
  known_NxT = ~np.isnan(labels)
  r_NxT = np.where(known_NxT, labels - probs, 0.0)
  patterns_P, index_N = folds_lib.compact_patterns(pattern)
  order_N = np.argsort(index_N, kind="stable")
  ends_P = np.cumsum(np.bincount(index_N, minlength=patterns_P.shape[0]))
  rng = np.random.default_rng(seed)
  out: dict[str, list] = {name: [] for name in names}
  for i, pid in enumerate(patterns_P.tolist()):
    rows = order_N[(ends_P[i - 1] if i else 0):ends_P[i]]
    n_p = rows.shape[0]
    r_nxT, k_nxT = r_NxT[rows], known_NxT[rows].astype(np.float64)
    sums_BxT, counts_BxT = np.zeros((n_boot, len(names))), np.zeros((n_boot, len(names)))
    step = max(1, _MAX_DRAWS // n_p)
    for start in range(0, n_boot, step):
      b = min(step, n_boot - start)
      idx_bxn = rng.integers(0, n_p, size=(b, n_p))
      sums_BxT[start:start + b] = r_nxT[idx_bxn].sum(1)
      counts_BxT[start:start + b] = k_nxT[idx_bxn].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
      means_BxT = np.where(counts_BxT > 0, sums_BxT / counts_BxT, np.nan)
    n_T = k_nxT.sum(0)
    for t, name in enumerate(names):
      tau = r_nxT[:, t].sum() / n_T[t] if n_T[t] > 0 else math.nan
      lo, hi = _interval(means_BxT[:, t], alpha) if n_T[t] > 0 else (None, None)
      out[name].append({"pattern": int(pid), "n": int(n_T[t]), "tau": _finite_or_none(tau),
                        "lo": lo, "hi": hi})
  return {"n_boot": n_boot, "alpha": alpha, "seed": seed,
          "method": "percentile bootstrap of rows within each pattern", "tasks": out}


def _paired(y_N: np.ndarray, p_N: np.ndarray, q_N: np.ndarray, names: tuple[str, ...],
            n_boot: int, alpha: float, seed: int) -> dict[str, Any]:
  """{"n", metric: {"raw", "rectified", "delta", "lo", "hi"}} for one slice."""
  known_N = ~np.isnan(y_N)
  y, p, q = y_N[known_N], p_N[known_N], q_N[known_N]
  entry: dict[str, Any] = {"n": int(y.shape[0]), "n_pos": int(y.sum())}
  if y.shape[0] == 0:
    for m in names:
      entry[m] = {"raw": None, "rectified": None, "delta": None, "lo": None, "hi": None}
    return entry
  raw_B = metrics_lib.bootstrap_samples(y, p, n_boot=n_boot, seed=seed, metrics=names)
  rect_B = metrics_lib.bootstrap_samples(y, q, n_boot=n_boot, seed=seed, metrics=names)
  for m in names:
    raw, rect = _METRIC_FNS[m](y, p), _METRIC_FNS[m](y, q)
    lo, hi = _interval(rect_B[m] - raw_B[m], alpha)
    entry[m] = {"raw": _finite_or_none(raw), "rectified": _finite_or_none(rect),
                "delta": _finite_or_none(rect - raw), "lo": lo, "hi": hi}
  return entry


def paired_delta_intervals(labels_NxT: Any, raw_probs_NxT: Any, rectified_probs_NxT: Any,
                           pattern_N: Any = None, *, n_boot: int = 1000,
                           alpha: float = 0.05, seed: int = 0,
                           task_names: Sequence[str] | None = None,
                           metrics: Sequence[str] = DELTA_METRICS,
                           min_pattern_count: int = 20) -> dict[str, Any]:
  """Paired bootstrap intervals of (rectified − raw) metrics, overall and per pattern.

  Args:
    labels_NxT: (N, T) or (N,) labels 0, 1 or NaN (unknown; dropped per task).
    raw_probs_NxT: the uncorrected probabilities, same shape.
    rectified_probs_NxT: the rectified probabilities of the same rows.
    pattern_N: optional (N,) pattern ids; with them each pattern with at least
      `min_pattern_count` labelled rows also gets its own paired interval.
    n_boot, alpha, seed: resamples, interval level, seed (the same seed for every
      slice; resamples as in `metrics.bootstrap_samples`).
    task_names: T names (default task0, task1, ...).
    metrics: names from `metrics.METRIC_NAMES` (default AUROC and Brier score).
    min_pattern_count: see pattern_N.

  Returns:
    {"n_boot", "alpha", "seed", "metrics", "method", "overall": {task: {"n", "n_pos",
    metric: {"raw", "rectified", "delta", "lo", "hi"}}}} and, with pattern_N,
    "per_pattern": {task: [{"pattern", "n", "n_pos", metric: {...}}, ...]} in
    ascending pattern id. None marks an undefined value (e.g. AUROC of one class).
  """
  raw, labels, n_boot, alpha, seed, names = _common(
      raw_probs_NxT, labels_NxT, n_boot, alpha, seed, task_names, "raw_probs_NxT")
  rect, _ = checks.as_probs("rectified_probs_NxT", rectified_probs_NxT)
  if rect.shape != raw.shape:
    raise ValueError(f"rectified_probs_NxT must have the shape of raw_probs_NxT "
                     f"{raw.shape}, got {rect.shape}")
  rect = rect.astype(np.float64)
  metric_names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
  if not metric_names or any(m not in _METRIC_FNS for m in metric_names):
    raise ValueError(f"metrics must be a non-empty subset of {tuple(_METRIC_FNS)}, "
                     f"got {metric_names!r}")
  min_pattern_count = checks.integer("min_pattern_count", min_pattern_count, 1)
  out: dict[str, Any] = {
      "n_boot": n_boot, "alpha": alpha, "seed": seed, "metrics": list(metric_names),
      "method": ("paired percentile bootstrap of patients (same resamples for raw and "
                 "rectified)"),
      "overall": {name: _paired(labels[:, t], raw[:, t], rect[:, t], metric_names,
                                n_boot, alpha, seed) for t, name in enumerate(names)}}
  if pattern_N is not None:
    pattern = checks.as_patterns("pattern_N", pattern_N, raw.shape[0])
    per_pattern: dict[str, list] = {name: [] for name in names}
    for pid in np.unique(pattern).tolist():
      rows_N = pattern == pid
      for t, name in enumerate(names):
        if int((~np.isnan(labels[rows_N, t])).sum()) >= min_pattern_count:
          entry = _paired(labels[rows_N, t], raw[rows_N, t], rect[rows_N, t],
                          metric_names, n_boot, alpha, seed)
          per_pattern[name].append({"pattern": int(pid), **entry})
    out["per_pattern"] = per_pattern
  return out


def _fmt(x: Any, digits: int = 4, sign: bool = False) -> str:
  return "n/a" if x is None else f"{x:{'+' if sign else ''}.{digits}f}"


def report_lines(tau: dict[str, Any] | None = None,
                 delta: dict[str, Any] | None = None) -> list[str]:
  """Markdown tables of `tau_intervals` and `paired_delta_intervals` results."""
  lines: list[str] = []
  if delta is not None:
    level = round(100 * (1 - delta["alpha"]))
    change = f"Δ (rectified − raw) [{level}% CI]"
    lines += [f"| task | slice | n | metric | raw | rectified | {change} |",
              "|---|---|---|---|---|---|---|"]
    slices = [(task, "all", e) for task, e in delta["overall"].items()]
    slices += [(task, f"pattern {e['pattern']}", e)
               for task, rows in delta.get("per_pattern", {}).items() for e in rows]
    for task, where, e in slices:
      for m in delta["metrics"]:
        v = e[m]
        lines.append(f"| {task} | {where} | {e['n']} | {m} | {_fmt(v['raw'])} | "
                     f"{_fmt(v['rectified'])} | {_fmt(v['delta'], sign=True)} "
                     f"[{_fmt(v['lo'], sign=True)}, {_fmt(v['hi'], sign=True)}] |")
    lines.append("")
  if tau is not None:
    level = round(100 * (1 - tau["alpha"]))
    lines += [f"| task | pattern | n | τ̂ = mean(y − p) [{level}% CI] |", "|---|---|---|---|"]
    for task, rows in tau["tasks"].items():
      for r in rows:
        lines.append(f"| {task} | {r['pattern']} | {r['n']} | {_fmt(r['tau'], sign=True)} "
                     f"[{_fmt(r['lo'], sign=True)}, {_fmt(r['hi'], sign=True)}] |")
    lines.append("")
  return lines
