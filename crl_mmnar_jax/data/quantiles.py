"""Per-feature quantiles of the observed training values (numpy only).

Four users, all fitted on the OBSERVED TRAINING rows of a modality only:

* `robust_bounds`: median ± factor · robust sd, beyond which `data.standardize` treats a
  cell as not measured (a 1e30 sentinel must not collapse a feature for every patient);
* `fit_quantile_normal` / `quantile_normal`: the quantile transform to N(0, 1)
  (`data.preprocess="quantile_normal"`), the same map as scikit-learn's
  `QuantileTransformer(output_distribution="normal")` (which is used only as a test
  oracle here): the empirical CDF, interpolated linearly between `n_quantiles` training
  quantiles (averaged with the interpolation from above so that tied quantiles map to
  the middle of their range), then the normal quantile function, clipped at 1e-7;
* `bin_edges`: quantile bin edges for the piecewise-linear encoding
  (`model.num_embedding="ple"`, Gorishniy et al., NeurIPS 2022);
* `tree_bin_edges`: target-aware edges for it (`"ple_tree"`, the paper's PLE-T): the
  thresholds of a one-feature regression tree on the training rows' labels.

`training_rows` picks the rows these are fitted on, the observed training rows of one
modality, at most `MAX_ROWS` of them (a sample that depends on the patient ids and the
rows only, so one process and several shards fit the same statistics), and
`training_values` gathers their values.
"""

from __future__ import annotations

import statistics

import numpy as np

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data import shards

MAX_ROWS = 100_000        # observed training rows a quantile fit reads at most
BOUNDS_THRESHOLD = 1e-7   # the quantile-normal output is clipped to ±ppf(1 - 1e-7) ≈ ±5.2
IQR_TO_SD = 1.3489795     # the IQR of N(0, 1)
TAIL_TO_SD = 4.6526957    # q99 - q01 of N(0, 1)


def training_rows(cohort: Cohort, m: int, train_rows: np.ndarray) -> np.ndarray:
  """The rows the fits read: modality `m`'s observed training rows, at most `MAX_ROWS`
  of them (sorted)."""
  rows = np.asarray(train_rows)
  rows = np.sort(rows[cohort.present[rows, m]])
  if len(rows) > MAX_ROWS:
    order = np.argsort(cohort.patient_id[rows], kind="stable")   # independent of row order
    pick = np.random.default_rng(0).permutation(len(rows))[:MAX_ROWS]
    rows = np.sort(rows[order[pick]])
  return rows


def training_values(cohort: Cohort, m: int, fit_rows: np.ndarray) -> np.ndarray:
  """(n, d_m) float64 values of modality `m` on `fit_rows` (`training_rows`; NaN where
  not measured); collective when the features are sharded."""
  return shards.gather_rows(cohort.features[m], fit_rows).astype(np.float64)


def _nanquantile(values_NxD: np.ndarray, q: np.ndarray, fill: float) -> np.ndarray:
  """(len(q), D) quantiles per column over its non-NaN values (`fill` for an empty one)."""
  out = np.full((len(q), values_NxD.shape[1]), fill, np.float64)
  for d in range(values_NxD.shape[1]):
    col = values_NxD[:, d]
    col = col[~np.isnan(col)]
    if len(col):
      out[:, d] = np.quantile(col, q)
  return out


def robust_bounds(values_NxD: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
  """(low_D, high_D): median ∓ `factor` · robust sd of each column's finite values.

  The robust sd is IQR / 1.349; where the IQR is 0 (a mostly constant or rare binary
  feature) (q99 - q01) / 4.653; where that is 0 too, the median absolute deviation of the
  values that differ from the median. A column with no spread at all, or `factor` <= 0,
  gets infinite bounds (only non-finite values are then out of bounds).
  """
  v = np.where(np.isfinite(values_NxD), values_NxD, np.nan)
  d = v.shape[1]
  if factor <= 0 or d == 0:
    return np.full(d, -np.inf), np.full(d, np.inf)
  q01, q25, med, q75, q99 = _nanquantile(v, np.array([0.01, 0.25, 0.5, 0.75, 0.99]), np.nan)
  scale = (q75 - q25) / IQR_TO_SD
  scale = np.where(scale > 0, scale, (q99 - q01) / TAIL_TO_SD)
  for j in np.flatnonzero(~(scale > 0) & ~np.isnan(med)):
    dev = np.abs(v[:, j] - med[j])
    dev = dev[dev > 0]
    scale[j] = np.median(dev) if len(dev) else 0.0
  ok = scale > 0                                   # False for NaN (never measured) too
  low = np.where(ok, med - factor * np.where(ok, scale, 0.0), -np.inf)
  high = np.where(ok, med + factor * np.where(ok, scale, 0.0), np.inf)
  return low, high


def n_quantiles_for(n_rows: int, n_quantiles: int = 1000) -> int:
  """The number of quantiles a fit on `n_rows` rows uses: min(n_quantiles, n_rows), >= 2."""
  return max(2, min(int(n_quantiles), int(n_rows)))


def fit_quantile_normal(values_NxD: np.ndarray, n_quantiles: int = 1000) -> np.ndarray:
  """(Q, D) training quantiles at the levels linspace(0, 1, Q) (NaN ignored; a column
  never measured gets all zeros, which maps every value to the median 0)."""
  q = np.linspace(0.0, 1.0, n_quantiles_for(values_NxD.shape[0], n_quantiles))
  quantiles = _nanquantile(values_NxD, q, 0.0)
  # Monotone despite rounding (as scikit-learn enforces).
  return np.maximum.accumulate(quantiles, axis=0)


_PPF = np.frompyfunc(statistics.NormalDist().inv_cdf, 1, 1)


def norm_ppf(u: np.ndarray) -> np.ndarray:
  """The standard normal quantile function (Wichura's AS241 via `statistics`) of u in
  (0, 1), elementwise, float64."""
  u = np.asarray(u, np.float64)
  return _PPF(u).astype(np.float64) if u.size else u.copy()


def quantile_normal(x: np.ndarray, quantiles_QxD: np.ndarray) -> np.ndarray:
  """The fitted quantile-normal map applied to `x` (N, D): NaN stays NaN."""
  x = np.asarray(x, np.float64)
  q_levels = np.linspace(0.0, 1.0, quantiles_QxD.shape[0])
  out = np.full(x.shape, np.nan)
  eps = BOUNDS_THRESHOLD - np.spacing(1)
  for d in range(x.shape[1]):
    qd, col = quantiles_QxD[:, d], x[:, d]
    ok = ~np.isnan(col)
    c = col[ok]
    u = 0.5 * (np.interp(c, qd, q_levels) - np.interp(-c, -qd[::-1], -q_levels[::-1]))
    u[c - BOUNDS_THRESHOLD < qd[0]] = 0.0
    u[c + BOUNDS_THRESHOLD > qd[-1]] = 1.0
    out[ok, d] = norm_ppf(np.clip(u, eps, 1.0 - eps))
  return out


def bin_edges(values_NxD: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
  """Quantile bin edges per column for the piecewise-linear encoding.

  Returns (edges_DxE, n_bins_D) with E = n_bins + 1: column d's distinct quantiles at
  linspace(0, 1, n_bins + 1) of its measured values, in its first n_bins_D[d] + 1 entries
  (the rest repeat the last edge). Ties merge bins (a binary feature gets one bin). A
  column with fewer than two distinct values (constant, or never measured) gets one bin
  [v, v + 1] (v its value, or 0), so its encoding is the value itself shifted.
  """
  d = values_NxD.shape[1]
  edges = np.zeros((d, n_bins + 1), np.float64)
  counts = np.ones(d, np.int64)
  q = np.linspace(0.0, 1.0, n_bins + 1)
  for j in range(d):
    col = values_NxD[:, j]
    col = col[np.isfinite(col)]
    e = np.unique(np.quantile(col, q)) if len(col) else np.zeros(1)
    if len(e) < 2:
      e = np.array([e[0], e[0] + 1.0])
    edges[j, :len(e)] = e
    edges[j, len(e):] = e[-1]
    counts[j] = len(e) - 1
  return edges, counts


def tree_bin_edges(values_NxD: np.ndarray, labels_NxT: np.ndarray, n_bins: int,
                   min_leaf: int) -> tuple[np.ndarray, np.ndarray]:
  """Target-aware bin edges (PLE-T): per column, the split thresholds of a best-first
  regression tree on that column alone with at most `n_bins` leaves of at least
  `min_leaf` rows, fitted to the labels (squared error summed over tasks; a NaN label
  counts for no task), plus the column's minimum and maximum.

  Rows whose value is not finite are left out. A split lies halfway between two adjacent
  distinct values and is taken only if it lowers the error. The output has
  `bin_edges`' layout (edges_DxE, n_bins_D), E = n_bins + 1; a column with fewer than
  two distinct values, or no useful split, gets `bin_edges`' single bin.
  """
  d = values_NxD.shape[1]
  labels_NxT = np.asarray(labels_NxT, np.float64).reshape(len(values_NxD), -1)
  edges = np.zeros((d, n_bins + 1), np.float64)
  counts = np.ones(d, np.int64)
  for j in range(d):
    col = values_NxD[:, j]
    ok = np.isfinite(col)
    e = _tree_edges(col[ok], labels_NxT[ok], n_bins, max(int(min_leaf), 1))
    if len(e) < 2:
      e = np.array([e[0], e[0] + 1.0]) if len(e) else np.array([0.0, 1.0])
    edges[j, :len(e)] = e
    edges[j, len(e):] = e[-1]
    counts[j] = len(e) - 1
  return edges, counts


def _tree_edges(x_N: np.ndarray, y_NxT: np.ndarray, n_bins: int, min_leaf: int) -> np.ndarray:
  """Sorted edges [min, thresholds..., max] of one column (see `tree_bin_edges`)."""
  if len(x_N) == 0:
    return np.zeros(0)
  order = np.argsort(x_N, kind="stable")
  x_N, y_NxT = x_N[order], y_NxT[order]
  has_NxT = ~np.isnan(y_NxT)
  zero = np.zeros((1, y_NxT.shape[1]))
  s_N1xT = np.concatenate([zero, np.cumsum(np.where(has_NxT, y_NxT, 0.0), 0)])
  q_N1xT = np.concatenate([zero, np.cumsum(np.where(has_NxT, y_NxT ** 2, 0.0), 0)])
  c_N1xT = np.concatenate([zero, np.cumsum(has_NxT, 0)])

  def sse(a, b):                     # squared error around the mean of rows [a, b)
    s, q, c = s_N1xT[b] - s_N1xT[a], q_N1xT[b] - q_N1xT[a], c_N1xT[b] - c_N1xT[a]
    return (q - s * s / np.maximum(c, 1)).sum(-1)

  def best_split(a: int, b: int) -> tuple[float, int]:
    i = np.arange(a + min_leaf, b - min_leaf + 1)
    i = i[x_N[i - 1] < x_N[np.minimum(i, len(x_N) - 1)]] if len(i) else i
    if not len(i):
      return 0.0, -1
    gain = sse(a, b) - sse(a, i) - sse(i, b)
    k = int(np.argmax(gain))
    return float(gain[k]), int(i[k])

  leaves, cuts = [(0, len(x_N))], []
  candidates = {leaf: best_split(*leaf) for leaf in leaves}
  while len(leaves) < n_bins:
    leaf = max(leaves, key=lambda lf: candidates[lf][0])
    gain, i = candidates[leaf]
    if i < 0 or gain <= 1e-12:
      break
    leaves.remove(leaf)
    cuts.append(0.5 * (x_N[i - 1] + x_N[i]))
    for child in ((leaf[0], i), (i, leaf[1])):
      leaves.append(child)
      candidates[child] = best_split(*child)
  return np.unique(np.concatenate([[x_N[0]], cuts, [x_N[-1]]]))
