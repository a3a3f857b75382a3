"""What the benchmark sections share: their options, timing, child processes, memory.

`python -m experiments.bench` is the entry point (`sections`); the sections live in
`experiments.bench.train`, `.featurize`, `.extraction` and `.shards`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import jax

Result = dict[str, Any]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PHYSIONET_DIR = os.path.join(ROOT, "..", "shared", "data", "physionet2012")


@dataclasses.dataclass(frozen=True)
class Options:
  """What the sections read from the command line (the flags of `experiments.bench`)."""

  repeats: int = 3                                    # warm calls per case
  batch_sizes: tuple[int, ...] = (128, 512)            # train section
  device_counts: tuple[int, ...] = (1, 2, 4, 8)      # simulated CPU devices (scaling)
  per_device_batch: int = 128                         # weak scaling: batch per device
  figure_dir: str = "docs"                            # relative to the repository root

  def figure_path(self, name: str) -> str:
    return os.path.join(ROOT, self.figure_dir, name)


def time_calls(fn: Callable[[], Any], repeats: int) -> Result:
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


def child(expression: str, **env: str) -> Result:
  """Evaluates `expression` (a call of a function of `experiments.bench`, which re-exports
  the sections' child functions, returning a JSON-able dict) in a fresh Python process,
  so that its peak RSS and device count are its own. The child imports
  `experiments.bench` as the parent does, so a peak RSS includes the same imports."""
  code = f"import json; from experiments import bench; print(json.dumps({expression}))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu", **env),
                       cwd=ROOT)
  if out.returncode:
    raise RuntimeError(out.stderr[-2000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_bytes() -> int:
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
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
  """Current resident set size of this process (Linux /proc; else the peak so far)."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except OSError:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def folder_mb(folder: str) -> float:
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(folder) for f in files) / 2**20


def env_sizes(name: str, default: tuple, kind: Callable[[str], Any]) -> list:
  sizes = [kind(x) for x in os.environ.get(name, "").split(",") if x]
  return sizes or list(default)
