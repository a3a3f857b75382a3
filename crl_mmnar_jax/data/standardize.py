"""Standardisation whose statistics come from the observed training rows only."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from absl import logging

from crl_mmnar_jax import shift
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data import quantiles, shards

PREPROCESS = ("standard", "quantile_normal")
EXTREME_FACTOR = 1e3   # a cell beyond median ± this · robust sd (training) is not measured


def options(config: Any) -> dict[str, Any]:
  """`standardize`'s keyword arguments from a run config (`data.preprocess`,
  `data.extreme_factor`; `model.num_bins` when `model.num_embedding` is "ple" or
  "ple_tree", the latter with target-aware bins)."""
  data, model = config.data, config.model
  kind = str(model.num_embedding)
  ple = kind in ("ple", "ple_tree")
  return {"preprocess": str(data.preprocess),
          "extreme_factor": float(data.extreme_factor),
          "num_bins": int(model.num_bins) if ple else 0,
          "target_bins": kind == "ple_tree"}


def tree_min_leaf(n_rows: int, num_bins: int) -> int:
  """Target-aware bins' smallest leaf: half a quantile bin's rows, at least 8, so that a
  bin's mean label rests on enough patients."""
  return max(8, n_rows // (2 * max(num_bins, 1)))


def column_name(cohort: Cohort, m: int, j: int) -> str:
  names = cohort.feature_names[m] if cohort.feature_names else None
  return str(names[j]) if names is not None and j < len(names) else f"#{j}"


def standardize(cohort: Cohort, train_rows: np.ndarray, layout: shards.Layout | None = None,
                *, preprocess: str = "standard", extreme_factor: float = EXTREME_FACTOR,
                num_bins: int = 0, target_bins: bool = False) -> tuple[Cohort, dict]:
  """Z-scores every feature with mean/sd over the OBSERVED training rows of its modality
  and imputes NaN ("not measured" inside an observed row) with the training mean (0).

  Only training rows inform the statistics. Rows where a modality is missing stay
  exactly zero. Features constant (or never measured) on the training rows get mean 0
  and sd 1.

  Extreme values: a cell that is non-finite or beyond median ± `extreme_factor` · robust
  sd of the feature's observed training values (`quantiles.robust_bounds`; 0 = only
  non-finite) is treated as not measured, for the statistics and the transform, in every
  split; they are counted per column (`extreme_cells`) and summarised in one warning line
  (names and counts, never values).

  `preprocess="quantile_normal"` replaces the z-score by the per-feature quantile
  transform to N(0, 1) fitted on the observed training rows (`quantiles.quantile_normal`);
  not-measured cells become its median, 0.

  Returns the new cohort and, per modality: `n_train_observed`, `imputed_cells` (NaN
  inside observed rows, all splits), `extreme_cells` ({column: patients} for columns with
  any), the training `mean` and `sd` of the raw values and `raw_zero`, the transformed
  value of a raw 0, `low` and `high`, the bounds beyond which a cell is extreme (float64
  arrays of shape (d_m,)); what `shift.compare` measures new patients against: the
  number of measured training values per feature `n_measured`, `n_train_rows` and
  `shift.training_reference`'s `min`, `max`, `components` and `explained`, on the same
  training values as the quantiles; with "quantile_normal" its training `quantiles` (Q, d_m)
  (`predictor.apply_preprocessing` replays the transform from these); with `num_bins` >
  0 also the piecewise-linear encoding's `bin_edges` (d_m, num_bins + 1) and `n_bins`
  (d_m,) of the transformed measured training values: their quantiles
  (`quantiles.bin_edges`) or, with `target_bins`, the thresholds of one-feature trees
  fitted to the same training rows' labels (`quantiles.tree_bin_edges`, leaves of at
  least `tree_min_leaf` rows). Validation and test rows never inform an edge.

  With a sharded `layout` the sums are taken per shard, then over shards in order
  (`Layout.sum_per_shard`), and the quantiles on the same gathered sample of training rows
  (`quantiles.training_values`), so one process and several give the same statistics.
  """
  if preprocess not in PREPROCESS:
    raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
  layout = shards.Layout.single(cohort.n) if layout is None else layout
  train_rows = np.asarray(train_rows)
  all_rows = np.arange(cohort.n)
  feats, stats, flagged = [], {}, []
  for m, (name, x) in enumerate(zip(cohort.modality_names, cohort.features)):
    fit_rows = quantiles.training_rows(cohort, m, train_rows)
    sample = quantiles.training_values(cohort, m, fit_rows)         # collective if sharded
    low_D, high_D = quantiles.robust_bounds(sample, extreme_factor)

    def clean(v: np.ndarray) -> np.ndarray:         # extreme or non-finite -> not measured
      with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(v) & (v >= low_D) & (v <= high_D), v, np.nan)

    def observed(rows: np.ndarray) -> np.ndarray:
      return clean(x[rows[cohort.present[rows, m]]]).astype(np.float64)

    def first(rows: np.ndarray) -> np.ndarray:        # [measured count; sum] per feature
      xt = observed(rows)
      return np.stack([(~np.isnan(xt)).sum(0), np.nansum(xt, 0)])

    measured_D, sum_D = layout.sum_per_shard(train_rows, first)
    with np.errstate(invalid="ignore", divide="ignore"):
      mean = np.where(measured_D > 0, sum_D / np.maximum(measured_D, 1), 0.0)
      ss_D = layout.sum_per_shard(train_rows,
                                  lambda rows: np.nansum((observed(rows) - mean) ** 2, 0))
      var = np.where(measured_D > 0, ss_D / np.maximum(measured_D, 1), 1.0)
    sd = np.sqrt(var)
    sd = np.where(sd > 1e-8, sd, 1.0)
    if preprocess == "standard":
      def fitted(v: np.ndarray) -> np.ndarray:
        return (v - mean) / sd
      raw_zero = -mean / sd
    else:
      q_QxD = quantiles.fit_quantile_normal(clean(sample))

      def fitted(v: np.ndarray) -> np.ndarray:
        return quantiles.quantile_normal(v, q_QxD)
      raw_zero = fitted(np.zeros((1, len(mean))))[0]

    def transform(x_local: np.ndarray, held: slice) -> np.ndarray:
      z = np.nan_to_num(fitted(clean(x_local)), nan=0.0).astype(np.float32)
      return np.where(cohort.present[held, m:m + 1], z, 0.0).astype(np.float32)

    feats.append(shards.map_rows(x, transform))

    def counts(rows: np.ndarray) -> np.ndarray:       # [NaN cells; extreme cells] per feature
      v = x[rows[cohort.present[rows, m]]]
      return np.stack([np.isnan(v).sum(0), (~np.isnan(v) & np.isnan(clean(v))).sum(0)])

    nan_D, extreme_D = layout.sum_per_shard(all_rows, counts)
    extreme = {column_name(cohort, m, j): int(extreme_D[j]) for j in np.flatnonzero(extreme_D)}
    flagged += [f"{name}/{col}: {k} patient{'s' if k > 1 else ''}"
                for col, k in extreme.items()]
    stats[name] = {"n_train_observed": int(cohort.present[train_rows, m].sum()),
                   "imputed_cells": int(nan_D.sum()), "extreme_cells": extreme,
                   "mean": mean, "sd": sd, "raw_zero": raw_zero,
                   "low": low_D, "high": high_D,      # the extreme bounds (`clean`)
                   # what `shift.compare` measures new patients against
                   "n_measured": measured_D.astype(np.int64),
                   "n_train_rows": np.int64(len(train_rows)),
                   **shift.training_reference(clean(sample), mean, sd)}
    if preprocess == "quantile_normal":
      stats[name]["quantiles"] = q_QxD
    if num_bins > 0 and target_bins:
      stats[name]["bin_edges"], stats[name]["n_bins"] = quantiles.tree_bin_edges(
          fitted(clean(sample)), cohort.labels[fit_rows], num_bins,
          tree_min_leaf(len(sample), num_bins))
    elif num_bins > 0:
      stats[name]["bin_edges"], stats[name]["n_bins"] = quantiles.bin_edges(
          fitted(clean(sample)), num_bins)
  if flagged:
    more = f" and {len(flagged) - 10} more columns" if len(flagged) > 10 else ""
    logging.warning("standardize: extreme or non-finite values (beyond median ± %g robust "
                    "sd of the training values) treated as not measured: %s%s",
                    extreme_factor, ", ".join(flagged[:10]), more)
  return dataclasses.replace(cohort, features=tuple(feats)), stats
