"""Pattern ids and cross-fitting folds of the rectifier (used by `rectifier.fit`).

Host-side numpy, vectorised: no Python loop over rows.
"""

from __future__ import annotations

import numpy as np

from crl_mmnar_jax.rectifier import checks as checks

DENSE_PATTERN_LIMIT = 1 << 22  # pattern ids below this are compacted with bincount


def compact_patterns(pattern_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Sorted distinct pattern ids (P,) and each row's index into them (N,) int32.

  Same result as ``np.unique(pattern_N, return_inverse=True)``, with an O(N) bincount
  path for the usual small ids (at most 2**22).
  """
  pattern_N = np.asarray(pattern_N, dtype=np.int64)
  if pattern_N.size and int(pattern_N.max()) < DENSE_PATTERN_LIMIT:
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
  pattern_N = checks.as_patterns("pattern_N", pattern_N, int(np.shape(pattern_N)[0])
                                 if np.ndim(pattern_N) == 1 else -1)
  n_folds = checks.integer("n_folds", n_folds, 2)
  seed = checks.integer("seed", seed, 0)
  _, index_N = compact_patterns(pattern_N)
  return deal_folds(index_N, int(index_N.max()) + 1 if index_N.size else 0, n_folds,
                    seed)


def deal_folds(index_N: np.ndarray, n_patterns: int, n_folds: int,
               seed: int) -> np.ndarray:
  """`stratified_folds` given compact pattern indices 0..n_patterns-1 (unchecked)."""
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


def bucket(n: int, minimum: int) -> int:
  """Rounds n up to m * 2**e with 8 <= m <= 16 (at most 12.5% padding).

  Padding the row count and the pattern count to such buckets lets fits of similar
  sizes reuse one compiled kernel.
  """
  n = max(int(n), minimum)
  step = 1 << max(0, (n - 1).bit_length() - 4)
  return -(-n // step) * step

