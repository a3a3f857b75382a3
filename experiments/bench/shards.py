"""Benchmark section `shards`: what one process reads when it loads only its shard
(`train.data_shards`), each load in its own process."""

from __future__ import annotations

import os
import tempfile

from experiments.bench.common import PHYSIONET_DIR, Options, Result, child, folder_mb
from experiments.bench.extraction import load_case
from experiments.bench.train import PAPER_DIMS, random_cohort


def shard_load_case(source: str, folder: str, n_shards: int) -> Result:
  """Loads shard 0 of `n_shards` (what process 0 of a sharded run reads) in this fresh
  process: `load_case` with `shards.keep_fn`."""
  from crl_mmnar_jax.data import shards
  kwargs = {"keep": shards.keep_fn(n_shards, (0,))} if n_shards > 1 else {}
  if source == "physionet2012":
    kwargs["sets"] = ("a",)
  loader = {"tables": "tables.load_tables_with_info",
            "physionet2012": "physionet2012.load_physionet2012"}[source]
  return load_case(loader, folder, **kwargs)


def bench_shards(opts: Options) -> list[Result]:
  """Loading with `train.data_shards`: what one process reads when it loads only its
  shard, for 1 to 8 shards, from the generic tables (a synthetic cohort with the paper's
  MIMIC-IV shapes, CRL_BENCH_SHARD_N patients) and from PhysioNet 2012 set A."""

  from crl_mmnar_jax.data.sources import tables
  n = int(os.environ.get("CRL_BENCH_SHARD_N", "20000"))
  results = []
  with tempfile.TemporaryDirectory() as folder:
    tables.write_tables(random_cohort(n, PAPER_DIMS), folder)
    size = folder_mb(folder)
    for s in (1, 2, 4, 8):
      r = child(f"bench.shard_load_case('tables', {folder!r}, {s})")
      results.append({"section": "shards", "name": "tables", "n": n, "files_mb": size,
                      "data_shards": s, **r})
  if os.path.isdir(os.path.join(PHYSIONET_DIR, "set-a")):
    for s in (1, 4):
      r = child(f"bench.shard_load_case('physionet2012', {PHYSIONET_DIR!r}, {s})")
      results.append({"section": "shards", "name": "physionet2012_a", "data_shards": s, **r})
  return results
