"""Micro-benchmarks of the library's hot paths.

Usage::

  python -m experiments.bench                       # every section
  python -m experiments.bench --only=rectifier --out=/tmp/bench.json
  python -m experiments.bench --only=mimic --out=docs/bench_mimic.json   # figure in docs/
  python -m experiments.bench --only=shards   # what one process reads with data_shards

Each section is a function returning a list of flat result dicts (one per case);
`SECTIONS` maps section names to them. Timings separate the first call (tracing and
XLA compilation included, after `jax.clear_caches()`) from the median of warm calls.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np
from absl import app, flags

from crl_mmnar_jax import methods, rectifier
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.train import optim
from crl_mmnar_jax.train import step as step_lib

_ONLY = flags.DEFINE_list("only", None, "Comma-separated section names (default: all).")
_OUT = flags.DEFINE_string("out", None, "Optional path of a JSON file with the results.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Warm calls per case; the median is shown.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["128", "512", "1024", "4096"],
                                 "Train-step batch sizes.")
_DEVICE_COUNTS = flags.DEFINE_list("device_counts", ["1", "2", "4", "8"],
                                   "Simulated CPU device counts for the scaling section.")
_PER_DEVICE_BATCH = flags.DEFINE_integer("per_device_batch", 128,
                                         "Weak scaling: batch per device.")
_FIGURE_DIR = flags.DEFINE_string("figure_dir", "docs",
                                  "Folder of the figures some sections draw (relative "
                                  "paths are relative to the repository root).")

# The paper's MIMIC-IV shapes: structured EHR, chest X-ray embedding, two note embeddings.
PAPER_DIMS = (30, 1024, 768, 768)

Result = dict[str, Any]


def _time_calls(fn: Callable[[], Any], repeats: int) -> Result:
  """First-call (cold) seconds and warm-call seconds of `fn` (blocking on its output)."""
  jax.clear_caches()
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  warm = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    warm.append(time.perf_counter() - start)
  return {"first_call_s": first, "warm_median_s": statistics.median(warm),
          "warm_s": warm}


def _rectifier_data(n: int, n_tasks: int, n_patterns: int, seed: int = 0):
  """Random predictions, labels with per-pattern shifts and 10% unknown, patterns."""
  rng = np.random.default_rng(seed)
  ids_P = np.sort(rng.choice(1 << 12, size=n_patterns, replace=False))
  which_N = rng.integers(0, n_patterns, size=n)
  which_N[:n_patterns] = np.arange(n_patterns)          # every pattern occurs
  probs_NxT = rng.uniform(size=(n, n_tasks)).astype(np.float32)
  shift_PxT = rng.normal(0.0, 0.05, size=(n_patterns, n_tasks))
  truth_NxT = np.clip(probs_NxT + shift_PxT[which_N], 0.0, 1.0)
  labels_NxT = (rng.uniform(size=(n, n_tasks)) < truth_NxT).astype(np.float32)
  labels_NxT[rng.uniform(size=(n, n_tasks)) < 0.1] = np.nan
  return probs_NxT, labels_NxT, ids_P[which_N]


def bench_rectifier() -> list[Result]:
  """`rectifier.fit` (cross-fitting, grid selection, final table) and `apply`."""
  cases = [
      dict(n=10_000_000, n_tasks=3, n_folds=5, n_patterns=1024, selection="brier"),
      dict(n=1_000_000, n_tasks=3, n_folds=5, n_patterns=1024, selection="brier"),
      dict(n=1_000_000, n_tasks=3, n_folds=5, n_patterns=1024, selection="logloss"),
      dict(n=100_000, n_tasks=3, n_folds=5, n_patterns=1024, selection="brier"),
  ]
  results = []
  for case in cases:
    probs, labels, pattern = _rectifier_data(case["n"], case["n_tasks"],
                                             case["n_patterns"])
    fit = lambda: rectifier.fit(probs, labels, pattern, n_folds=case["n_folds"],
                                selection=case["selection"]).tau_PxT
    timing = _time_calls(fit, _REPEATS.value)
    rect = rectifier.fit(probs, labels, pattern, n_folds=case["n_folds"],
                         selection=case["selection"])
    results.append({"section": "rectifier", "name": "fit", **case,
                    "grid": len(rect.kappa_grid) * len(rect.lambda_grid), **timing,
                    "rows_per_s": case["n"] / timing["warm_median_s"]})
    if case["selection"] == "brier":
      apply_timing = _time_calls(lambda: rect.apply(probs, pattern), _REPEATS.value)
      results.append({"section": "rectifier", "name": "apply", **case, **apply_timing,
                      "rows_per_s": case["n"] / apply_timing["warm_median_s"]})
  return results


def _random_cohort(n: int, dims: tuple[int, ...], n_tasks: int = 3, seed: int = 0) -> Cohort:
  rng = np.random.default_rng(seed)
  present = rng.uniform(size=(n, len(dims))) < 0.6
  present[:, 0] = True
  feats = tuple(np.where(present[:, m:m + 1], rng.normal(size=(n, d)), 0).astype(np.float32)
                for m, d in enumerate(dims))
  labels = (rng.uniform(size=(n, n_tasks)) < 0.2).astype(np.float32)
  return Cohort(np.arange(n), feats, present, labels, tuple(f"m{i}" for i in range(len(dims))),
                tuple(f"task{t}" for t in range(n_tasks)))


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
  """Measured float32 matmul FLOP/s of the default device (the roofline we compare to)."""
  a = jax.random.normal(jax.random.key(0), (n, n), np.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(f(a))
    times.append(time.perf_counter() - start)
  return 2 * n ** 3 / statistics.median(times)


def train_step_throughput(batch_size: int, dims: tuple[int, ...], n_steps: int | None = None,
                          devices=None) -> Result:
  """Compile time, warm step time, patients/s and XLA FLOPs of the real train step
  (default model: D=128, 8 heads, 1 layer, every auxiliary loss on)."""
  from experiments.configs.base import get_base_config
  n_steps = n_steps or max(3, min(20, 2560 // batch_size))   # about the same patients each
  config = get_base_config()
  config.train.batch_size = batch_size
  cohort = _random_cohort(max(4 * batch_size, 1024), dims)
  mesh = mesh_lib.make_mesh(devices)
  tx = optim.make_optimizer(config, 1000)
  mcfg = methods.model_config(config, cohort)
  graphdef, state = step_lib.create_state(mcfg, tx, 0, mesh)
  step = step_lib.make_train_step(graphdef, methods.loss_weights(config), mcfg.miss_head)
  batches = [mesh_lib.put_batch(mesh_lib.local_batch(cohort, np.arange(i, i + batch_size) %
                                                     cohort.n, batch_size), mesh)
             for i in range(0, 4 * batch_size, batch_size)]
  one = np.float32(1.0)
  args = (state, batches[0], jax.random.key(0), one, one)
  start = time.perf_counter()
  compiled = step.lower(*args).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan")))
  mem = compiled.memory_analysis()
  peak_mb = float("nan") if mem is None else (
      mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
      - mem.alias_size_in_bytes) / 2**20
  state, parts = step(*args)
  jax.block_until_ready(parts)
  times = []
  for i in range(n_steps):
    start = time.perf_counter()
    state, parts = step(state, batches[i % 4], jax.random.key(i), one, one)
    jax.block_until_ready(parts)
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  # The whole loop as training runs it: host batch gather + transfer + step.
  order = np.random.default_rng(0).permutation(cohort.n)
  start = time.perf_counter()
  for i in range(n_steps):
    rows = order[(i * batch_size) % cohort.n:][:batch_size]
    batch = mesh_lib.put_batch(mesh_lib.local_batch(cohort, rows, batch_size), mesh)
    state, parts = step(state, batch, jax.random.key(i), one, one)
  jax.block_until_ready(parts)
  loop_s = (time.perf_counter() - start) / n_steps
  return {"batch_size": batch_size, "dims": list(dims), "devices": int(mesh.devices.size),
          "compile_s": compile_s, "step_s": step_s, "patients_per_s": batch_size / step_s,
          "loop_patients_per_s": batch_size / loop_s, "gflop_per_step": flops / 1e9,
          "step_memory_mb": peak_mb,
          "achieved_gflop_s": flops / step_s / 1e9}


def _child(expression: str, **env: str) -> Result:
  """Evaluates `expression` (a bench function call returning a JSON-able dict) in a
  fresh Python process, so that its peak RSS and device count are its own."""
  import subprocess
  import sys
  code = f"import json; from experiments import bench; print(json.dumps({expression}))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu", **env),
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if out.returncode:
    raise RuntimeError(out.stderr[-2000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def bench_train() -> list[Result]:
  peak = matmul_peak_flops()
  results = []
  for dims, label in ((PAPER_DIMS, "M=4, paper MIMIC-IV shapes"),
                      ((8,) + (40,) * 9, "M=10, PhysioNet-like")):
    for bs in [int(b) for b in _BATCH_SIZES.value]:
      r = train_step_throughput(bs, dims)
      results.append({"section": "train", "shapes": label, **r,
                      "peak_gflop_s": peak / 1e9,
                      "fraction_of_peak": r["achieved_gflop_s"] * 1e9 / peak})
  return results


def bench_scaling() -> list[Result]:
  """Weak scaling: the same batch per device on 1, 2, 4, 8 simulated CPU devices (each
  count in its own process). Efficiency = patients/s / (devices × patients/s on one)."""
  results = []
  for n in [int(c) for c in _DEVICE_COUNTS.value]:
    r = _child(f"bench.train_step_throughput({n * _PER_DEVICE_BATCH.value}, bench.PAPER_DIMS)",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    results.append({"section": "scaling", "devices": n, "batch_size": r["batch_size"],
                    "patients_per_s": r["patients_per_s"], "compile_s": r["compile_s"]})
  base = results[0]["patients_per_s"]
  for r in results:
    r["ratio_to_1_device"] = r["patients_per_s"] / base
    r["weak_scaling_efficiency"] = r["ratio_to_1_device"] / r["devices"]
  return results


def _figure_path(name: str) -> str:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  folder = _FIGURE_DIR.value if flags.FLAGS.is_parsed() else "docs"
  return os.path.join(root, folder, name)


PHYSIONET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "..", "shared", "data", "physionet2012")
SET_A_MEASUREMENTS = 1_733_980   # time-series values in PhysioNet 2012 set A
SET_A_STAYS = 4_000


def _peak_rss_bytes() -> int:
  """This process's peak resident set size: VmHWM of /proc/self/status, which starts
  afresh at exec. (getrusage's ru_maxrss does not: a child started by a large parent
  reports at least the parent's size at fork.) Elsewhere, ru_maxrss."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_bytes() -> int:
  """Current resident set size of this process (Linux /proc; else the peak so far)."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except OSError:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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


def _featurize_case(case: str, scale: int = 1, repeats: int = 3) -> Result:
  """One featurisation case, meant to run in a fresh process (`bench_featurize`).

  Memory: peak RSS during the first call minus RSS just before it (sampled every 2 ms
  by a thread: sees polars' Rust allocations), and tracemalloc's peak on a separate
  call (Python allocations only, e.g. numpy outputs).
  """
  import gc
  import threading
  import tracemalloc

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
  rss0 = _rss_bytes()
  peak, done = [rss0], threading.Event()

  def sample():
    while not done.is_set():
      peak[0] = max(peak[0], _rss_bytes())
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


def bench_featurize() -> list[Result]:
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
    results.append(_child(f"bench._featurize_case({case!r}, {scale}, {int(_REPEATS.value)})"))
  for case in ("synthetic", "synthetic_shuffled"):
    one, ten = (next(r for r in results if r["case"] == case and r["scale"] == k)
                for k in (1, 10))
    results.append({"section": "featurize", "case": f"{case} 10x / 1x", "scale": 10,
                    "time_ratio": ten["warm_median_s"] / one["warm_median_s"],
                    "rss_peak_ratio": ten["rss_peak_delta_mb"] / one["rss_peak_delta_mb"],
                    "tracemalloc_ratio": ten["tracemalloc_peak_mb"] /
                                         one["tracemalloc_peak_mb"]})
  return results


# Synthetic eICU-CRD scales (patients) for `bench_eicu`; override with
# CRL_BENCH_EICU_PATIENTS=1000,20000.
EICU_BENCH_PATIENTS = (1_000, 10_000)


def _write_synthetic_eicu(folder: str, n_patients: int, seed: int = 0) -> dict[str, int]:
  """A synthetic eICU-CRD v2.0 directory (gzipped CSVs, the columns `load_eicu` reads).

  1.25 unit stays per patient; periodic vitals every 5 min for 36 h (every variable
  20% missing), aperiodic vitals every 30 min for 60% of stays, 30 labs, 10
  medication orders, 4 infusion records, 6 intake/output rows, 5 diagnoses, 4
  treatments, 10 respiratory chart rows and 1 culture per stay on average, with
  offsets from -6 h to 48 h. Returns rows per table.
  """
  import polars as pl

  from crl_mmnar_jax.data.sources import eicu
  rng = np.random.default_rng(seed)
  n_stays = int(n_patients * 1.25)
  stay = np.arange(1, n_stays + 1, dtype=np.int64) + 100_000
  pid = rng.integers(0, n_patients, n_stays)
  pid[:n_patients] = np.arange(n_patients)
  hs = pid * 10 + rng.integers(0, 2, n_stays)
  ages = rng.integers(10, 95, n_stays)
  patient = pl.DataFrame({
      "patientunitstayid": stay, "patienthealthsystemstayid": hs,
      "gender": np.where(rng.random(n_stays) < 0.5, "Male", "Female"),
      "age": np.where(ages > 89, "> 89", ages.astype(str)),
      "admissionheight": rng.normal(170, 10, n_stays).round(1),
      "admissionweight": rng.normal(80, 15, n_stays).round(1),
      "hospitaladmitoffset": -rng.integers(0, 3000, n_stays),
      "hospitaldischargeyear": 2014 + hs % 10 % 2,
      "hospitaldischargestatus": np.where(rng.random(n_stays) < 0.1, "Expired", "Alive"),
      "unittype": np.asarray(eicu.UNIT_TYPES)[rng.integers(0, 8, n_stays)],
      "unitadmitsource": np.asarray(eicu.ADMIT_SOURCES)[rng.integers(0, 8, n_stays)],
      "unitvisitnumber": rng.integers(1, 3, n_stays),
      "uniquepid": np.char.add("0", pid.astype(str)),
  })
  tables = {"patient": patient}

  def events(per_stay: float, every: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    if every is not None:                      # a regular grid from 0 to 36 h
      k = int(36 * 60 / every)
      return np.repeat(stay, k), np.tile(np.arange(k) * int(every), n_stays)
    counts = rng.poisson(per_stay, n_stays)
    return np.repeat(stay, counts), rng.integers(-360, 48 * 60, int(counts.sum()))

  def maybe(x: np.ndarray, p: float = 0.2) -> np.ndarray:
    return np.where(rng.random(len(x)) < p, np.nan, x)

  s, t = events(0, every=5)
  tables["vitalPeriodic"] = pl.DataFrame(
      {"patientunitstayid": s, "observationoffset": t,
       **{v: maybe(rng.normal(80, 10, len(s)).round(1)) for v in eicu.PERIODIC_VITALS}})
  s, t = events(0, every=30)
  keep = np.isin(s, stay[rng.random(n_stays) < 0.6])
  tables["vitalAperiodic"] = pl.DataFrame(
      {"patientunitstayid": s[keep], "observationoffset": t[keep],
       **{v: rng.normal(90, 15, int(keep.sum())).round() for v in eicu.APERIODIC_VITALS}})
  s, t = events(30)
  tables["lab"] = pl.DataFrame({
      "patientunitstayid": s, "labresultoffset": t,
      "labname": np.asarray(eicu.LAB_NAMES + ("rare lab",))[
          rng.integers(0, len(eicu.LAB_NAMES) + 1, len(s))],
      "labresult": rng.normal(50, 20, len(s)).round(2)})
  drugs = np.asarray([f"DRUG {k} MG" for k in range(300)])
  s, t = events(10)
  tables["medication"] = pl.DataFrame({
      "patientunitstayid": s, "drugorderoffset": t,
      "drugordercancelled": np.where(rng.random(len(s)) < 0.05, "Yes", "No"),
      "drugname": drugs[rng.integers(0, 300, len(s))]})
  s, t = events(4)
  tables["infusionDrug"] = pl.DataFrame({"patientunitstayid": s, "infusionoffset": t,
                                         "drugname": drugs[rng.integers(0, 40, len(s))]})
  s, t = events(6)
  tables["intakeOutput"] = pl.DataFrame({
      "patientunitstayid": s, "intakeoutputoffset": t,
      "intaketotal": rng.integers(0, 2000, len(s)).astype(float),
      "outputtotal": rng.integers(0, 2000, len(s)).astype(float),
      "nettotal": rng.integers(-1000, 1000, len(s)).astype(float)})
  s, t = events(5)
  tables["diagnosis"] = pl.DataFrame({
      "patientunitstayid": s, "diagnosisoffset": t,
      "diagnosisstring": np.char.add("system|problem ",
                                     rng.integers(0, 500, len(s)).astype(str)),
      "icd9code": np.char.add("4", rng.integers(10, 99, len(s)).astype(str))})
  s, t = events(4)
  tables["treatment"] = pl.DataFrame({
      "patientunitstayid": s, "treatmentoffset": t,
      "treatmentstring": np.char.add("therapy|", rng.integers(0, 200, len(s)).astype(str))})
  s, t = events(10)
  tables["respiratoryCharting"] = pl.DataFrame({
      "patientunitstayid": s, "respchartoffset": t,
      "respchartvaluelabel": np.char.add("label ", rng.integers(0, 20, len(s)).astype(str))})
  s, t = events(1)
  tables["microLab"] = pl.DataFrame({
      "patientunitstayid": s, "culturetakenoffset": t,
      "culturesite": np.char.add("site ", rng.integers(0, 10, len(s)).astype(str)),
      "organism": np.where(rng.random(len(s)) < 0.5, "no growth", "Escherichia coli")})
  import gzip
  os.makedirs(folder, exist_ok=True)
  for name, df in tables.items():
    with gzip.open(os.path.join(folder, f"{name}.csv.gz"), "wb", compresslevel=1) as f:
      df.write_csv(f)
  return {name: len(df) for name, df in tables.items()}


def _load_case(loader: str, folder: str, **kwargs: Any) -> Result:
  """`loader` ("module.function" of crl_mmnar_jax, returning (Cohort, info)) on
  `folder` in this (fresh) process: wall time, CPU time (user + system, all threads:
  less sensitive than the wall time to other jobs on a shared machine) and peak RSS
  (the process's high-water mark, so the interpreter and the imports are included:
  see `rss_before_mb`)."""
  import importlib
  import resource
  module, function = loader.rsplit(".", 1)
  fn = getattr(importlib.import_module(f"crl_mmnar_jax.{module}"), function)
  rss0 = _rss_bytes()
  cpu0 = resource.getrusage(resource.RUSAGE_SELF)
  start = time.perf_counter()
  cohort, _ = fn(folder, **kwargs)
  wall = time.perf_counter() - start
  usage = resource.getrusage(resource.RUSAGE_SELF)
  cpu = usage.ru_utime + usage.ru_stime - cpu0.ru_utime - cpu0.ru_stime
  return {"load_s": wall, "cpu_s": cpu, "rss_peak_mb": _peak_rss_bytes() / 2**20,
          "rss_before_mb": rss0 / 2**20, "patients_kept": cohort.n}


def _eicu_case(folder: str) -> Result:
  """`load_eicu` on `folder` in this (fresh) process: wall time and peak RSS."""
  return _load_case("eicu.load_eicu", folder, cache_dir=None)


def _folder_mb(folder: str) -> float:
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(folder) for f in files) / 2**20


def _extraction_bench(section: str, sizes, write: Callable[[str, Any], Result],
                      case: Callable[[str, Result], str]) -> list[Result]:
  """For each size: `write(folder, size)` generates a raw dataset in a fresh temporary
  folder (not timed; returns the row fields of the result), then the expression
  `case(folder, written)` (a `bench._load_case(...)` call) runs in its own process so
  that its peak RSS is its own. Temporary folders go under $CRL_BENCH_TMP if set."""
  import tempfile
  results = []
  for size in sizes:
    with tempfile.TemporaryDirectory(prefix=f"bench_{section}_",
                                     dir=os.environ.get("CRL_BENCH_TMP")) as folder:
      written = write(folder, size)
      mb = _folder_mb(folder)
      r = _child(case(folder, written))
    results.append({"section": section, **written, "gz_mb": mb, **r})
  return results


def _env_sizes(name: str, default: tuple, kind: Callable[[str], Any]) -> list:
  sizes = [kind(x) for x in os.environ.get(name, "").split(",") if x]
  return sizes or list(default)


def bench_eicu() -> list[Result]:
  """`load_eicu` on synthetic eICU-CRD directories (`EICU_BENCH_PATIENTS`), each load in
  its own process so that its peak RSS is its own."""

  def write(folder: str, n_patients: int) -> Result:
    rows = _write_synthetic_eicu(folder, n_patients)
    return {"patients": n_patients, "unit_stays": rows["patient"],
            "table_rows": sum(rows.values()), "vital_periodic_rows": rows["vitalPeriodic"]}

  return _extraction_bench("eicu", _env_sizes("CRL_BENCH_EICU_PATIENTS",
                                              EICU_BENCH_PATIENTS, int),
                           write, lambda folder, _: f"bench._eicu_case({folder!r})")


# Generated MIMIC-IV scales (fractions of the full database: 1/80 ... 1/10) for
# `bench_mimic`; override with CRL_BENCH_MIMIC_SCALES=0.0125,0.1.
MIMIC_BENCH_SCALES = (0.0125, 0.025, 0.05, 0.1)
MIMIC_MEMORY_BUDGET_GIB = 4.0


def bench_mimic() -> list[Result]:
  """`load_mimic` (every table, notes and CXR included, fresh cache) on generated
  MIMIC-IV v2.2 directories (`experiments.mimic_fake`) at `MIMIC_BENCH_SCALES`, each
  extraction in its own process. Adds a row comparing the largest and the smallest
  scale, a least-squares line time = a + b · lab rows, and draws
  `<figure_dir>/bench_mimic.png` (time and peak RSS against lab rows)."""
  from experiments import mimic_fake

  def write(folder: str, scale: float) -> Result:
    info = mimic_fake.write_fake_mimic(os.path.join(folder, "mimic"), scale=scale)
    rows = info["rows"]
    return {"scale": scale, "patients": info["patients"],
            "admissions": rows["admissions"], "lab_rows": rows["labevents"],
            "chart_rows": rows["chartevents"],
            "table_rows": sum(v for k, v in rows.items() if k != "cxr_embeddings"),
            "generate_s": info["seconds"], "_info": info}

  def case(folder: str, written: Result) -> str:
    info = written.pop("_info")
    kwargs = dict(version="2.2", cache_dir=os.path.join(folder, "cache"),
                  cxr_embeddings=info["cxr_embeddings"], cxr_metadata=info["cxr_metadata"])
    return f"bench._load_case('mimic.load_mimic', {info['directory']!r}, **{kwargs!r})"

  results = _extraction_bench("mimic", _env_sizes("CRL_BENCH_MIMIC_SCALES",
                                                  MIMIC_BENCH_SCALES, float), write, case)
  if len(results) >= 2:
    summary = mimic_summary(results)
    plot_mimic(results, summary, _figure_path("bench_mimic.png"))
    results.append(summary)
  return results


def shard_load_case(source: str, folder: str, n_shards: int) -> Result:
  """Loads shard 0 of `n_shards` (what process 0 of a sharded run reads) in this fresh
  process: `_load_case` with `shards.keep_fn`."""
  from crl_mmnar_jax.data import shards
  kwargs = {"keep": shards.keep_fn(n_shards, (0,))} if n_shards > 1 else {}
  if source == "physionet2012":
    kwargs["sets"] = ("a",)
  loader = {"tables": "tables.load_tables_with_info",
            "physionet2012": "physionet2012.load_physionet2012"}[source]
  return _load_case(loader, folder, **kwargs)


def bench_shards() -> list[Result]:
  """Loading with `train.data_shards`: what one process reads when it loads only its
  shard, for 1 to 8 shards, from the generic tables (a synthetic cohort with the paper's
  MIMIC-IV shapes, CRL_BENCH_SHARD_N patients) and from PhysioNet 2012 set A."""
  import tempfile

  from crl_mmnar_jax.data.sources import tables
  n = int(os.environ.get("CRL_BENCH_SHARD_N", "20000"))
  results = []
  with tempfile.TemporaryDirectory() as folder:
    tables.write_tables(_random_cohort(n, PAPER_DIMS), folder)
    size = _folder_mb(folder)
    for s in (1, 2, 4, 8):
      r = _child(f"bench.shard_load_case('tables', {folder!r}, {s})")
      results.append({"section": "shards", "name": "tables", "n": n, "files_mb": size,
                      "data_shards": s, **r})
  if os.path.isdir(os.path.join(PHYSIONET_DIR, "set-a")):
    for s in (1, 4):
      r = _child(f"bench.shard_load_case('physionet2012', {PHYSIONET_DIR!r}, {s})")
      results.append({"section": "shards", "name": "physionet2012_a", "data_shards": s, **r})
  return results


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
  """Least-squares y = a + b·x: (a, b, R²)."""
  b, a = np.polyfit(x, y, 1)
  r2 = 1 - np.sum((y - (a + b * x)) ** 2) / np.sum((y - y.mean()) ** 2)
  return float(a), float(b), float(r2)


def mimic_summary(results: list[Result]) -> Result:
  """The largest scale against the smallest (rows, wall and CPU time, peak RSS), and
  straight-line fits of wall and CPU time against lab rows."""
  x = np.array([r["lab_rows"] for r in results], float)
  a, b, r2 = _line_fit(x, np.array([r["load_s"] for r in results]))
  ca, cb, cr2 = _line_fit(x, np.array([r["cpu_s"] for r in results]))
  lo, hi = min(results, key=lambda r: r["scale"]), max(results, key=lambda r: r["scale"])
  return {
      "section": "mimic", "scale": f"{hi['scale']:g} / {lo['scale']:g}",
      "lab_rows_ratio": hi["lab_rows"] / lo["lab_rows"],
      "table_rows_ratio": hi["table_rows"] / lo["table_rows"],
      "time_ratio": hi["load_s"] / lo["load_s"], "cpu_ratio": hi["cpu_s"] / lo["cpu_s"],
      "rss_peak_ratio": hi["rss_peak_mb"] / lo["rss_peak_mb"],
      "fit_s_per_million_lab_rows": b * 1e6, "fit_intercept_s": a, "fit_r2": r2,
      "cpu_fit_s_per_million_lab_rows": cb * 1e6, "cpu_fit_intercept_s": ca,
      "cpu_fit_r2": cr2,
      "largest_under_memory_budget": hi["rss_peak_mb"] < MIMIC_MEMORY_BUDGET_GIB * 1024}


def plot_mimic(results: list[Result], summary: Result, path: str) -> None:
  """Extraction wall and CPU time (with their fitted lines) and peak RSS against lab
  rows; `results` are the per-scale rows of `bench_mimic`."""
  from matplotlib.figure import Figure
  x = np.array([r["lab_rows"] for r in results]) / 1e6
  fig = Figure(figsize=(9.5, 4))
  ax_t, ax_m = fig.subplots(1, 2)
  grid = np.linspace(0, x.max() * 1.05, 50)
  for key, fit, marker, label in (("load_s", "", "o", "wall time"),
                                  ("cpu_s", "cpu_", "s", "CPU time (user + system)")):
    y = [r[key] for r in results]
    points = ax_t.plot(x, y, marker, label=label)[0]
    a, b = summary[f"{fit}fit_intercept_s"], summary[f"{fit}fit_s_per_million_lab_rows"]
    a = 0.0 if abs(a) < 0.05 else a                      # no "-0.0 s"
    ax_t.plot(grid, a + b * grid, "-", lw=1, color=points.get_color(),
              label=f"{a:.1f} s + {b:.2f} s per M lab rows "
                    f"($R^2$ = {summary[f'{fit}fit_r2']:.3f})")
  for xi, r in zip(x, results):
    ax_t.annotate(f"1/{1 / r['scale']:.0f}", (xi, r["load_s"]), textcoords="offset points",
                  xytext=(4, 4), fontsize=8)
  ax_t.set(xlabel="labevents rows (millions)", ylabel="extraction time (s)",
           title="load_mimic on generated MIMIC-IV", xlim=(0, None), ylim=(0, None))
  ax_t.legend(fontsize=7, loc="upper left")
  ax_m.plot(x, [r["rss_peak_mb"] / 1024 for r in results], "o-", label="peak RSS")
  ax_m.axhline(MIMIC_MEMORY_BUDGET_GIB, color="k", ls=":", lw=1,
               label=f"{MIMIC_MEMORY_BUDGET_GIB:g} GiB budget")
  ax_m.set(xlabel="labevents rows (millions)", ylabel="GiB", title="peak resident memory",
           xlim=(0, None), ylim=(0, None))
  ax_m.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  print(f"mimic: wrote {path}")


SECTIONS: dict[str, Callable[[], list[Result]]] = {
    "train": bench_train,
    "scaling": bench_scaling,
    "rectifier": bench_rectifier,
    "featurize": bench_featurize,
    "eicu": bench_eicu,
    "mimic": bench_mimic,
    "shards": bench_shards,
}


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  if isinstance(value, list):
    return "[" + ", ".join(_format(v) for v in value) + "]"
  return str(value)


def print_table(results: list[Result]) -> None:
  """Prints the results as aligned columns (the union of their keys)."""
  columns: list[str] = []
  for r in results:
    columns += [k for k in r if k not in columns]
  rows = [[_format(r.get(c, "")) for c in columns] for r in results]
  widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
  print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
  print("  ".join("-" * w for w in widths))
  for row in rows:
    print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _environment() -> Result:
  device = jax.devices()[0]
  return {
      "jax": jax.__version__,
      "numpy": np.__version__,
      "backend": jax.default_backend(),
      "device": getattr(device, "device_kind", str(device)),
      "n_devices": jax.device_count(),
      "cpu_count": os.cpu_count(),
      "python": platform.python_version(),
      "machine": platform.machine(),
      "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
  }


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  names = _ONLY.value or list(SECTIONS)
  unknown = [n for n in names if n not in SECTIONS]
  if unknown:
    raise app.UsageError(f"--only: unknown section(s) {unknown}; known: {list(SECTIONS)}")
  env = _environment()
  print(" ".join(f"{k}={v}" for k, v in env.items()))
  results: list[Result] = []
  for name in names:
    section = SECTIONS[name]()
    print(f"\n[{name}]")
    print_table(section)
    results += section
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w") as f:
      json.dump({"environment": env, "results": results}, f, indent=2)
    print(f"\nwrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
