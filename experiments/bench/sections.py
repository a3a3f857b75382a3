"""Micro-benchmarks of the library's hot paths.

Usage::

  python -m experiments.bench                       # every section
  python -m experiments.bench --only=rectifier --out=/tmp/bench.json
  python -m experiments.bench --only=mimic --out=docs/bench_mimic.json   # figure in docs/
  python -m experiments.bench --only=shards   # what one process reads with data_shards

Each section is a function of the options (`common.Options`, from the flags) returning a
list of flat result dicts (one per case); `SECTIONS` maps section names to them: `train`,
`scaling` and `rectifier` (`experiments.bench.train`), `featurize` (`.featurize`), `eicu`
and `mimic` (`.extraction`), `shards` (`.shards`). Timings separate the first call
(tracing and XLA compilation included, after `jax.clear_caches()`) from the median of
warm calls. Cases that must measure their own memory run in a child process that
evaluates a call of a function of the package (`bench.load_case(...)`,
`bench.shard_load_case(...)`, ...: re-exported by `experiments/bench/__init__.py`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import flags

from experiments.bench.common import Options, Result
from experiments.bench.extraction import bench_eicu, bench_mimic
from experiments.bench.featurize import bench_featurize
from experiments.bench.shards import bench_shards
from experiments.bench.train import bench_rectifier, bench_scaling, bench_train
from experiments.configs import cli

__all__ = ["SCRIPT", "SECTIONS", "define_flags", "main", "print_table"]

SECTIONS: dict[str, Callable[[Options], list[Result]]] = {
    "train": bench_train,
    "scaling": bench_scaling,
    "rectifier": bench_rectifier,
    "featurize": bench_featurize,
    "eicu": bench_eicu,
    "mimic": bench_mimic,
    "shards": bench_shards,
}


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  """The flags of `experiments.bench` on `fv` (`argv` unused: no config-file flag)."""
  del argv
  default = Options()
  flags.DEFINE_list("only", None, "Comma-separated section names (default: all): "
                    + ", ".join(SECTIONS) + ".", flag_values=fv)
  flags.DEFINE_string("out", None, "Optional path of a JSON file with the results.",
                      flag_values=fv)
  flags.DEFINE_integer("repeats", default.repeats,
                       "Warm calls per case; the median is shown.", flag_values=fv)
  flags.DEFINE_list("batch_sizes", [str(b) for b in default.batch_sizes],
                    "Train-step batch sizes.", flag_values=fv)
  flags.DEFINE_list("device_counts", [str(c) for c in default.device_counts],
                    "Simulated CPU device counts for the scaling section.", flag_values=fv)
  flags.DEFINE_integer("per_device_batch", default.per_device_batch,
                       "Weak scaling: batch per device.", flag_values=fv)
  flags.DEFINE_string("figure_dir", default.figure_dir,
                      "Folder of the figures some sections draw (relative paths are "
                      "relative to the repository root).", flag_values=fv)


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


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> None:
  cli.no_positional(argv)
  names = fv.only or list(SECTIONS)
  unknown = [n for n in names if n not in SECTIONS]
  if unknown:
    raise SystemExit(f"error: --only: unknown section(s) {unknown}; known: {list(SECTIONS)}")
  try:
    opts = Options(repeats=fv.repeats, batch_sizes=tuple(int(b) for b in fv.batch_sizes),
                   device_counts=tuple(int(c) for c in fv.device_counts),
                   per_device_batch=fv.per_device_batch, figure_dir=fv.figure_dir)
  except ValueError as e:
    raise SystemExit(f"error: --batch_sizes and --device_counts take integers: {e}") from None
  env = _environment()
  print(" ".join(f"{k}={v}" for k, v in env.items()))
  results: list[Result] = []
  for name in names:
    section = SECTIONS[name](opts)
    print(f"\n[{name}]")
    print_table(section)
    results += section
  if fv.out:
    os.makedirs(os.path.dirname(os.path.abspath(fv.out)), exist_ok=True)
    with open(fv.out, "w") as f:
      json.dump({"environment": env, "results": results}, f, indent=2)
    print(f"\nwrote {fv.out}")


SCRIPT = cli.Script(main, define_flags, __doc__)
