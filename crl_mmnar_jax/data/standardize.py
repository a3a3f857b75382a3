"""Standardisation whose statistics come from the observed training rows only."""

from __future__ import annotations

import dataclasses

import numpy as np

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data import shards


def standardize(cohort: Cohort, train_rows: np.ndarray,
                layout: shards.Layout | None = None) -> tuple[Cohort, dict]:
  """Z-scores every feature with mean/sd over the OBSERVED training rows of its modality
  and imputes NaN ("not measured" inside an observed row) with the training mean (0).

  Only training rows inform the statistics. Rows where a modality is missing stay
  exactly zero. Features constant (or never measured) on the training rows get mean 0
  and sd 1. Returns the new cohort and, per modality, counts (for the record) and the
  per-feature training `mean` and `sd` (float64 arrays of shape (d_m,)).

  With a sharded `layout` the sums are taken per shard, then over shards in order
  (`Layout.sum_per_shard`), so one process and several give the same statistics.
  """
  layout = shards.Layout.single(cohort.n) if layout is None else layout
  train_rows = np.asarray(train_rows)
  feats, stats = [], {}
  for m, (name, x) in enumerate(zip(cohort.modality_names, cohort.features)):

    def observed(rows: np.ndarray) -> np.ndarray:
      return x[rows[cohort.present[rows, m]]].astype(np.float64)

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

    def transform(x_local: np.ndarray, held: slice) -> np.ndarray:
      z = np.nan_to_num((x_local - mean) / sd, nan=0.0).astype(np.float32)
      return np.where(cohort.present[held, m:m + 1], z, 0.0).astype(np.float32)

    feats.append(shards.map_rows(x, transform))
    all_rows = np.arange(cohort.n)
    imputed = layout.sum_per_shard(
        all_rows, lambda rows: np.isnan(x[rows[cohort.present[rows, m]]]).sum())
    stats[name] = {"n_train_observed": int(cohort.present[train_rows, m].sum()),
                   "imputed_cells": int(imputed), "mean": mean, "sd": sd}
  return dataclasses.replace(cohort, features=tuple(feats)), stats
