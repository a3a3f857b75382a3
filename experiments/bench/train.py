"""Benchmark sections of the train step and the rectifier: `train` (compile time, step
time, patients/s and FLOPs of the real train step against the measured matmul peak, for
random drops `loss.rec_drops=1` and the exact leave-one-out `rec_drops=0`, step alone
and whole loop; and the 5 members of `train.cv_folds=5` in one vmapped step, patients/s
per member), `scaling` (weak scaling over simulated CPU devices) and `rectifier` (`fit`
and `apply`).
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np

from crl_mmnar_jax import methods, rectifier
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.train import optim
from crl_mmnar_jax.train import step as step_lib
from experiments.bench.common import Options, Result, child, time_calls

# The paper's MIMIC-IV shapes: structured EHR, chest X-ray embedding, two note embeddings.
PAPER_DIMS = (30, 1024, 768, 768)


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


def bench_rectifier(opts: Options) -> list[Result]:
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
    timing = time_calls(fit, opts.repeats)
    rect = rectifier.fit(probs, labels, pattern, n_folds=case["n_folds"],
                         selection=case["selection"])
    results.append({"section": "rectifier", "name": "fit", **case,
                    "grid": len(rect.kappa_grid) * len(rect.lambda_grid), **timing,
                    "rows_per_s": case["n"] / timing["warm_median_s"]})
    if case["selection"] == "brier":
      apply_timing = time_calls(lambda: rect.apply(probs, pattern), opts.repeats)
      results.append({"section": "rectifier", "name": "apply", **case, **apply_timing,
                      "rows_per_s": case["n"] / apply_timing["warm_median_s"]})
  return results


def random_cohort(n: int, dims: tuple[int, ...], n_tasks: int = 3, seed: int = 0) -> Cohort:
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
                          devices=None, rec_drops: int | None = None,
                          compute_dtype: str = "float32") -> Result:
  """Compile time, warm step time, patients/s and XLA FLOPs of the real train step
  (default model: D=128, 8 heads, 1 layer, every auxiliary loss on; `rec_drops` None:
  the default config's, 0: the exact leave-one-out), and the whole loop as training
  runs it (`loop_patients_per_s`: batch gather, transfer and step, with the
  loop's prefetching)."""
  from experiments.configs.base import get_base_config
  n_steps = n_steps or max(5, min(20, 2560 // batch_size))   # about the same patients each
  config = get_base_config()
  config.train.batch_size = batch_size
  config.train.compute_dtype = compute_dtype
  if rec_drops is not None:
    config.loss.rec_drops = rec_drops
  cohort = random_cohort(max(4 * batch_size, 1024), dims)
  mesh = mesh_lib.make_mesh(devices)
  tx = optim.make_optimizer(config, 1000)
  mcfg = methods.model_config(config, cohort)
  graphdef, state = step_lib.create_state(mcfg, methods.loss_weights(config), tx, 0, mesh)
  step = step_lib.make_train_step(graphdef, methods.loss_weights(config), mcfg.miss_head,
                                  compute_dtype)
  batches = [mesh_lib.put_batch(mesh_lib.local_batch(cohort, np.arange(i, i + batch_size) %
                                                     cohort.n, batch_size), mesh)
             for i in range(0, 4 * batch_size, batch_size)]
  one, key = np.float32(1.0), jax.random.key(0)
  args = (state, batches[0], key, np.int32(0), one, one)
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
  times, cpu = [], []
  for i in range(n_steps):
    start, cpu_start = time.perf_counter(), time.process_time()
    state, parts = step(state, batches[i % 4], key, np.int32(i), one, one)
    jax.block_until_ready(parts)
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - cpu_start)
  step_s = statistics.median(times)
  # The whole loop as `train.loop.fit` runs it: host gather + transfer of the next batch
  # on the prefetch thread while the current step runs, steps dispatched without waiting.
  order = np.random.default_rng(0).permutation(cohort.n)
  load = lambda i: mesh_lib.put_batch(mesh_lib.local_batch(
      cohort, order[(i * batch_size) % cohort.n:][:batch_size], batch_size), mesh)
  loops = []
  for _ in range(3):
    start = time.perf_counter()
    for i, batch in step_lib.prefetched(load, range(n_steps)):
      state, parts = step(state, batch, key, np.int32(i), one, one)
    jax.block_until_ready(parts)
    loops.append((time.perf_counter() - start) / n_steps)
  loop_s = statistics.median(loops)
  return {"batch_size": batch_size, "dims": list(dims), "devices": int(mesh.devices.size),
          "rec_drops": int(config.loss.rec_drops), "compute_dtype": compute_dtype,
          "compile_s": compile_s, "step_s": step_s, "patients_per_s": batch_size / step_s,
          "step_cpu_s": statistics.median(cpu),   # CPU seconds of all threads: less noisy
                                                  # than wall time on a shared machine
          "loop_patients_per_s": batch_size / loop_s, "gflop_per_step": flops / 1e9,
          "step_memory_mb": peak_mb,
          "achieved_gflop_s": flops / step_s / 1e9}


def stacked_step_throughput(batch_size: int, dims: tuple[int, ...], members: int = 5,
                            n_steps: int | None = None) -> Result:
  """The cross-fitted members' vmapped step (`train/members.py`, `train.cv_folds`):
  `members` default models, each with its own batch of `batch_size`; patients/s per
  member (median of warm steps) and all members together."""
  from crl_mmnar_jax.losses import objective
  from crl_mmnar_jax.train.members import MemberAxis
  from experiments.configs.base import get_base_config
  n_steps = n_steps or max(5, min(20, 2560 // batch_size))
  config = get_base_config()
  cohort = random_cohort(max(4 * batch_size, 1024), dims)
  mesh = mesh_lib.make_mesh()
  tx = optim.make_optimizer(config, 1000)
  mcfg = methods.model_config(config, cohort)
  inits = [step_lib.create_state(mcfg, methods.loss_weights(config), tx, k, mesh) for k in range(members)]
  axis = MemberAxis(members)
  state = axis.stack([s for _, s in inits])
  step = axis.make_step(inits[0][0], objective(methods.loss_weights(config), mcfg.miss_head),
                        "float32")
  batch = axis.put_batches([mesh_lib.local_batch(
      cohort, (np.arange(batch_size) + k * batch_size) % cohort.n, batch_size)
      for k in range(members)], mesh)
  keys = jax.numpy.stack([jax.random.key(k) for k in range(members)])
  active, one = np.ones(members, bool), np.float32(1.0)
  times, cpu = [], []
  for i in range(n_steps + 1):
    start, cpu_start = time.perf_counter(), time.process_time()
    state, parts = step(state, batch, keys, np.full(members, i, np.int32), active, one, one)
    jax.block_until_ready(parts)
    if i:                                  # the first call compiles
      times.append(time.perf_counter() - start)
      cpu.append(time.process_time() - cpu_start)
  step_s = statistics.median(times)
  return {"batch_size": batch_size, "dims": list(dims), "members": members,
          "step_s": step_s, "step_cpu_s": statistics.median(cpu),
          "patients_per_s": members * batch_size / step_s,
          "patients_per_s_per_member": batch_size / step_s}


def scanned_epoch_throughput(batch_size: int, dims: tuple[int, ...], n: int = 4096,
                             repeats: int = 3) -> Result:
  """A whole epoch of `n` patients: patients/s of the host loop (`train.loop`: host
  gather and transfer on the prefetch thread, one dispatch per step) against the
  device loop (`train/scan.py`: the cohort on the device, the epoch one `lax.scan`),
  median of `repeats` warm epochs each, the same model, step and batches."""
  from crl_mmnar_jax.losses import objective
  from crl_mmnar_jax.train import scan as scan_lib
  from crl_mmnar_jax.train.members import MemberAxis
  from experiments.configs.base import get_base_config
  config = get_base_config()
  config.train.batch_size = batch_size
  cohort = random_cohort(n, dims)
  mesh = mesh_lib.make_mesh()
  tx = optim.make_optimizer(config, 1000)
  mcfg = methods.model_config(config, cohort)
  graphdef, state = step_lib.create_state(mcfg, methods.loss_weights(config), tx, 0, mesh)
  axis, loss = MemberAxis(1), objective(methods.loss_weights(config), mcfg.miss_head)
  step = axis.make_step(graphdef, loss, "float32")
  epoch_fn = scan_lib.EpochProgram(axis.step_body(graphdef, loss, "float32"), 1, mesh)
  data = scan_lib.device_cohort([cohort], 1, mesh)
  rows = np.random.default_rng(0).permutation(n)
  batches = [rows[i:i + batch_size] for i in range(0, n, batch_size)]
  idx = scan_lib.epoch_indices([np.stack([np.pad(b, (0, batch_size - len(b)),
                                                 constant_values=-1) for b in batches])],
                               len(batches), batch_size, n, 1)
  keys, one = jax.numpy.stack([jax.random.key(0)]), np.float32(1.0)
  active = np.ones((len(batches), 1), bool)

  def host_epoch(state):
    load = lambda i: axis.put_batches([mesh_lib.local_batch(cohort, batches[i], batch_size)],
                                      mesh)
    for i, batch in step_lib.prefetched(load, range(len(batches))):
      state, parts = step(state, batch, keys, np.array([i], np.int32), active[i], one, one)
    jax.block_until_ready(parts)
    return state

  def device_epoch(state):
    state, _ = epoch_fn(state, data, idx, keys, np.zeros(1, np.int32), active, 1.0, 1.0)
    return state

  out = {}
  for name, run in (("host", host_epoch), ("device", device_epoch)):
    state = run(state)                     # compiles
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      state = run(state)
      times.append(time.perf_counter() - start)
    out[f"{name}_epoch_patients_per_s"] = n / statistics.median(times)
  return {"batch_size": batch_size, "dims": list(dims), "patients": n, **out,
          "device_over_host": out["device_epoch_patients_per_s"]
          / out["host_epoch_patients_per_s"]}


def bench_train(opts: Options) -> list[Result]:
  """The train step at each batch size, for M = 4 (the paper's MIMIC-IV shapes) and
  M = 10 (PhysioNet-like), with random drops (`loss.rec_drops=1`, the default) and with
  the exact leave-one-out (`rec_drops=0`): patients/s of the step alone (median of
  warm steps) and of the whole loop (median of 3 passes); the 5 stacked members' step;
  a whole epoch of 4,096 patients in the host loop and as one scanned program."""
  peak = matmul_peak_flops()
  results = []
  for dims, label in ((PAPER_DIMS, "M=4, paper MIMIC-IV shapes"),
                      ((8,) + (40,) * 9, "M=10, PhysioNet-like")):
    for bs in opts.batch_sizes:
      for rec_drops in (1, 0):
        r = train_step_throughput(bs, dims, rec_drops=rec_drops)
        results.append({"section": "train", "shapes": label, **r,
                        "peak_gflop_s": peak / 1e9,
                        "fraction_of_peak": r["achieved_gflop_s"] * 1e9 / peak})
    for bs in opts.batch_sizes:          # train.cv_folds=5: the members' vmapped step
      r = stacked_step_throughput(bs, dims, members=5)
      results.append({"section": "train", "shapes": label + ", 5 stacked members", **r})
    for bs in opts.batch_sizes:          # train.scan_epoch: a whole epoch, host vs device
      r = scanned_epoch_throughput(bs, dims)
      results.append({"section": "train", "shapes": label + ", whole epoch", **r})
  return results


def bench_scaling(opts: Options) -> list[Result]:
  """Weak scaling: the same batch per device on 1, 2, 4, 8 simulated CPU devices (each
  count in its own process). Efficiency = patients/s / (devices × patients/s on one)."""
  results = []
  for n in opts.device_counts:
    r = child(f"bench.train_step_throughput({n * opts.per_device_batch}, bench.PAPER_DIMS)",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    results.append({"section": "scaling", "devices": n, "batch_size": r["batch_size"],
                    "patients_per_s": r["patients_per_s"], "compile_s": r["compile_s"]})
  base = results[0]["patients_per_s"]
  for r in results:
    r["ratio_to_1_device"] = r["patients_per_s"] / base
    r["weak_scaling_efficiency"] = r["ratio_to_1_device"] / r["devices"]
  return results
