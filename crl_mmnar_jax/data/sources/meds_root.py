"""The MEDS root layout's subject splits, shared by the `meds` and `mimic` sources.

A MEDS root holds ``data/**/*.parquet`` (the events; read by
`crl_mmnar_jax.data.sources.mimic.meds.scan_meds`) and ``metadata/``, where
``subject_splits.parquet`` (``subject_id, split``) assigns each subject to train, tuning
or held_out: the run's train, val and test splits.
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl

from crl_mmnar_jax.data.errors import DataError

SPLITS = {"train": "train", "tuning": "val", "held_out": "test"}
SPLITS_FILE = os.path.join("metadata", "subject_splits.parquet")


def read_splits(root: str, subjects: pl.Series) -> np.ndarray | None:
  """train/val/test per labelled row from metadata/subject_splits.parquet, or None."""
  path = os.path.join(root, SPLITS_FILE)
  if not os.path.isfile(path):
    return None
  df = pl.read_parquet(path)
  if "subject_id" not in df.columns or "split" not in df.columns:
    raise DataError(f"{path}: needs columns subject_id, split (has {df.columns})")
  bad = df.filter(~pl.col("split").is_in(list(SPLITS)))
  if len(bad):
    raise DataError(f"{path}: {len(bad)} row(s) with a split other than {list(SPLITS)}")
  df = df.select(pl.col("subject_id").cast(pl.Int64),
                 pl.col("split").replace_strict(SPLITS)).unique("subject_id")
  split = pl.DataFrame({"subject_id": subjects}).join(df, on="subject_id", how="left")
  if split["split"].null_count():
    raise DataError(f"{path}: {split['split'].null_count()} labelled row(s) belong to "
                    f"subjects missing from it")
  return split["split"].to_numpy().astype("<U5")
