r"""Summarises several runs (seeds) of one config: mean ± sd of the test metrics.

  python -m experiments.summarize /tmp/p12/seed0 /tmp/p12/seed1 ... [--task=NAME]

Prints a markdown table with, per model (CRL-MMNAR, CRL-MMNAR + rectifier, and the
reference baselines in results.json), the mean ± sd over runs of the test AUROC,
AUPRC, Brier and ECE, and the mean over runs of the bootstrap 95% AUROC interval.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
from absl import flags

from experiments.configs import cli


def load(workdirs: list[str]) -> list[dict]:
  out = []
  for d in workdirs:
    path = os.path.join(d, "results.json")
    if not os.path.exists(path):
      raise SystemExit(f"error: {path} does not exist (run not finished?)")
    with open(path) as f:
      out.append(json.load(f))
  return out


def summary_rows(results: list[dict], task: str = "mean") -> list[dict]:
  """One dict per model: name, n_runs, and (mean, sd) per metric, plus the mean CI."""
  views = [("CRL-MMNAR", lambda r: r["metrics"]["test"]),
           ("CRL-MMNAR + rectifier", lambda r: r["metrics"]["test_rectified"])]
  for name in results[0].get("reference", {}):
    views.append((f"{name} (reference)", lambda r, name=name: r["reference"][name]))
  rows = []
  for label, get in views:
    row = {"model": label, "n_runs": len(results)}
    for m in ("auroc", "auprc", "brier", "ece"):
      vals = np.array([get(r)[task][m] for r in results], dtype=float)
      row[m] = (float(np.nanmean(vals)), float(np.nanstd(vals, ddof=1)) if len(vals) > 1
                else float("nan"))
    cis = [get(r)[task].get("ci95", {}).get("auroc") for r in results]
    cis = [c for c in cis if c and c[0] is not None]
    row["auroc_ci95"] = tuple(np.mean(cis, axis=0)) if cis else None
    rows.append(row)
  return rows


def markdown(rows: list[dict]) -> str:
  lines = ["| model | runs | test AUROC | mean bootstrap 95% CI | AUPRC | Brier | ECE |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    ci = f"[{r['auroc_ci95'][0]:.3f}, {r['auroc_ci95'][1]:.3f}]" if r["auroc_ci95"] else "n/a"
    cell = lambda m, d=3: f"{r[m][0]:.{d}f} ± {r[m][1]:.{d}f}"
    lines.append(f"| {r['model']} | {r['n_runs']} | {cell('auroc')} | {ci} | {cell('auprc')} | "
                 f"{cell('brier', 4)} | {cell('ece', 4)} |")
  return "\n".join(lines)


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  """The flags of `experiments.summarize` on `fv` (`argv` unused: no config-file flag)."""
  del argv
  flags.DEFINE_string("task", "mean", "Task to summarise (a task name, or the mean over "
                      "tasks).", flag_values=fv)


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> None:
  dirs = argv[1:]
  if not dirs:
    raise SystemExit(__doc__)
  results = load(dirs)
  tasks = list(results[0]["metrics"]["test"])
  if fv.task not in tasks:
    raise SystemExit(f"error: --task={fv.task} is not in {dirs[0]}/results.json; "
                     f"known: {', '.join(tasks)}")
  print(markdown(summary_rows(results, fv.task)))


SCRIPT = cli.Script(main, define_flags, __doc__)

if __name__ == "__main__":
  SCRIPT.run()
