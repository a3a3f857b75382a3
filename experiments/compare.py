r"""Paired comparison of finished runs from different configs, seed by seed.

  python -m experiments.compare \
      --run="CRL-MMNAR tuned, cv_folds=5=/tmp/crl/runs/crl_mmnar/seed{seed}" \
      --run="LightGBM tuned=/tmp/gbt/runs/gbt/seed{seed}" --seeds=0,1,2,3,4

`experiments.sweep` compares methods of one config; this compares runs of different
configs (e.g. each method with its own tuned config), which must share their
patient-level splits: for each seed every run's `splits.parquet` must be identical
(same patients in train, validation and test), else it stops naming the two runs. Each
`--run` is LABEL=PATH with `{seed}` in PATH. Prints a markdown table: per run, the mean
± sd over seeds of the test AUROC (mean over tasks), raw and rectified, the mean
bootstrap 95% interval, the paired difference to the first run (mean ± sd over seeds)
and how many seeds it was ahead, and the rectified − raw difference.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import polars as pl
from absl import flags

from experiments.configs import cli


def load_runs(runs: list[tuple[str, str]], seeds: list[int]) -> dict[str, list[dict]]:
  """{label: [results.json per seed]}; checks that the splits agree seed by seed."""
  out: dict[str, list[dict]] = {}
  for seed in seeds:
    first = None
    for label, pattern in runs:
      d = pattern.format(seed=seed)
      path = os.path.join(d, "results.json")
      if not os.path.exists(path):
        raise SystemExit(f"error: {path} does not exist (run not finished?)")
      with open(path) as f:
        out.setdefault(label, []).append(json.load(f))
      split = pl.read_parquet(os.path.join(d, "splits.parquet")).sort("patient_id")
      if first is None:
        first = (label, split)
      elif not split.equals(first[1]):
        raise SystemExit(f"error: seed {seed}: {d}/splits.parquet differs from the run "
                         f"{first[0]!r}; compare runs on identical splits only")
  return out


def table(results: dict[str, list[dict]]) -> str:
  auroc = lambda r, key: r["metrics"][key]["mean"]["auroc"]
  ci = lambda r: np.mean([v["ci95"]["auroc"] for k, v in r["metrics"]["test"].items()
                          if k != "mean" and (v.get("ci95") or {}).get("auroc")], axis=0)
  labels = list(results)
  base = np.array([auroc(r, "test") for r in results[labels[0]]])
  lines = ["| run | test AUROC | + rectifier | rectified − raw | mean bootstrap 95% CI | "
           f"paired Δ vs {labels[0]} | seeds ahead |", "|---|---|---|---|---|---|---|"]
  for label in labels:
    raw = np.array([auroc(r, "test") for r in results[label]])
    rect = np.array([auroc(r, "test_rectified") for r in results[label]])
    cis = [ci(r) for r in results[label]]
    band = "" if any(np.ndim(c) == 0 for c in cis) else \
        f"[{np.mean([c[0] for c in cis]):.3f}, {np.mean([c[1] for c in cis]):.3f}]"
    d = raw - base
    sd = lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")
    paired = "—" if label == labels[0] else f"{d.mean():+.4f} ± {sd(d):.4f}"
    ahead = "" if label == labels[0] else f"{int((d > 0).sum())} of {len(d)}"
    lines.append(f"| {label} | {raw.mean():.4f} ± {sd(raw):.4f} | {rect.mean():.4f} | "
                 f"{(rect - raw).mean():+.4f} | {band} | {paired} | {ahead} |")
  return "\n".join(lines)


def define_flags(fv: flags.FlagValues, argv: Sequence[str] = ()) -> None:
  flags.DEFINE_multi_string("run", [], "LABEL=PATH with {seed} in PATH (repeatable; the "
                            "first is the reference).", flag_values=fv)
  flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds.", flag_values=fv)


def main(argv: Sequence[str], fv: flags.FlagValues = flags.FLAGS) -> str:
  if len(argv) > 1:
    raise SystemExit(f"error: unexpected arguments {argv[1:]}")
  runs = []
  for item in fv.run:
    label, sep, path = item.rpartition("=")
    if not sep or not label or "{seed}" not in path:
      raise SystemExit(f"error: --run {item!r} must look like LABEL=PATH with {{seed}} in PATH")
    runs.append((label, path))
  if len(runs) < 2:
    raise SystemExit("error: give at least two --run")
  try:
    seeds = [int(s) for s in fv.seeds]
  except ValueError:
    raise SystemExit(f"error: --seeds takes integers, got {fv.seeds}") from None
  text = table(load_runs(runs, seeds))
  print(text)
  return text


SCRIPT = cli.Script(main, define_flags, __doc__)

if __name__ == "__main__":
  SCRIPT.run()
