"""Micro-benchmarks of the library's hot paths.

Usage::

  python -m experiments.bench                       # every section
  python -m experiments.bench --only=rectifier --out=/tmp/bench.json

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

from absl import app
from absl import flags
import jax
import numpy as np

from crl_mmnar_jax import rectifier

_ONLY = flags.DEFINE_list("only", None, "Comma-separated section names (default: all).")
_OUT = flags.DEFINE_string("out", None, "Optional path of a JSON file with the results.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Warm calls per case; the median is shown.")

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


SECTIONS: dict[str, Callable[[], list[Result]]] = {
    "rectifier": bench_rectifier,
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
