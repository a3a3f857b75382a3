"""Benchmark section `featurize`: loading and featurising PhysioNet 2012 set A, and
featurising synthetic long tables of 1x and 10x its size (time and memory)."""

from __future__ import annotations

import gc
import os
import statistics
import threading
import time
import tracemalloc

import numpy as np

from experiments.bench.common import PHYSIONET_DIR, Options, Result, child, rss_bytes

SET_A_MEASUREMENTS = 1_733_980   # time-series values in PhysioNet 2012 set A
SET_A_STAYS = 4_000


def _synthetic_measurements(n: int, n_stays: int, seed: int = 0, shuffled: bool = False):
  """A long table like set A's: PhysioNet variables, values inside their valid ranges
  (1% outside), times over 0-50 h (4% outside the 48 h window). Rows are ordered by
  stay and time, as EHR extracts are (per-stay files, MEDS, YAIB), or shuffled."""
  import polars as pl

  from crl_mmnar_jax.data.sources import physionet2012
  rng = np.random.default_rng(seed)
  names = [v for g in physionet2012.GROUPS for v in g.variables]
  lo_V, hi_V = np.array([physionet2012.VALID_RANGES[v] for v in names]).T
  var_n = rng.integers(0, len(names), n)
  value_n = lo_V[var_n] + (hi_V[var_n] - lo_V[var_n]) * rng.uniform(-0.005, 1.005, n)
  stay_n = rng.integers(0, n_stays, n).astype(np.int64)
  time_n = np.round(rng.uniform(0.0, 50.0, n) * 60.0) / 60.0
  order_n = rng.permutation(n) if shuffled else np.lexsort((time_n, stay_n))
  return pl.DataFrame({
      "stay_id": stay_n[order_n],
      "time": time_n[order_n],
      "variable": pl.Series(names).gather(var_n[order_n]),
      "value": value_n[order_n],
  })


def featurize_case(case: str, scale: int = 1, repeats: int = 3) -> Result:
  """One featurisation case, meant to run in a fresh process (`bench_featurize`).

  Memory: peak RSS during the first call minus RSS just before it (sampled every 2 ms
  by a thread: sees polars' Rust allocations), and tracemalloc's peak on a separate
  call (Python allocations only, e.g. numpy outputs).
  """

  from crl_mmnar_jax.data import featurize as featurize_lib
  from crl_mmnar_jax.data.sources import physionet2012
  if case == "physionet_set_a":
    fn = lambda: physionet2012.load_physionet2012(PHYSIONET_DIR, sets=("a",))
    n, stays = SET_A_MEASUREMENTS, SET_A_STAYS
  else:
    n, stays = SET_A_MEASUREMENTS * scale, SET_A_STAYS * scale
    table = _synthetic_measurements(n, stays, shuffled=case == "synthetic_shuffled")
    fn = lambda: featurize_lib.featurize(
        table, physionet2012.GROUPS, valid_ranges=physionet2012.VALID_RANGES)
  gc.collect()
  rss0 = rss_bytes()
  peak, done = [rss0], threading.Event()

  def sample():
    while not done.is_set():
      peak[0] = max(peak[0], rss_bytes())
      time.sleep(0.002)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  done.set()
  sampler.join()
  warm = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    warm.append(time.perf_counter() - start)
  gc.collect()
  tracemalloc.start()
  fn()
  traced_peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  return {"section": "featurize", "case": case, "scale": scale, "measurements": n,
          "stays": stays, "first_s": first, "warm_median_s": statistics.median(warm),
          "rss_peak_delta_mb": (peak[0] - rss0) / 2**20,
          "tracemalloc_peak_mb": traced_peak / 2**20,
          "measurements_per_s": n / statistics.median(warm)}


def bench_featurize(opts: Options) -> list[Result]:
  """Loading + featurising PhysioNet 2012 set A (when present), and featurising a
  synthetic long table at 1x and 10x set A's size, ordered by stay (as real extracts
  are) and shuffled (a stress case: the per-(stay, variable) groups then no longer fit
  in the CPU caches at 10x, so time grows faster than the work); each case in its own
  process so that memory deltas are not hidden by an earlier case's peak."""
  cases = [("synthetic", 1), ("synthetic", 10), ("synthetic_shuffled", 1),
           ("synthetic_shuffled", 10)]
  if os.path.isdir(os.path.join(PHYSIONET_DIR, "set-a")):
    cases.insert(0, ("physionet_set_a", 1))
  else:
    print(f"featurize: {os.path.abspath(PHYSIONET_DIR)} not found; skipping set A")
  results = []
  for case, scale in cases:
    results.append(child(f"bench.featurize_case({case!r}, {scale}, {opts.repeats})"))
  for case in ("synthetic", "synthetic_shuffled"):
    one, ten = (next(r for r in results if r["case"] == case and r["scale"] == k)
                for k in (1, 10))
    results.append({"section": "featurize", "case": f"{case} 10x / 1x", "scale": 10,
                    "time_ratio": ten["warm_median_s"] / one["warm_median_s"],
                    "rss_peak_ratio": ten["rss_peak_delta_mb"] / one["rss_peak_delta_mb"],
                    "tracemalloc_ratio": ten["tracemalloc_peak_mb"] /
                                         one["tracemalloc_peak_mb"]})
  return results
