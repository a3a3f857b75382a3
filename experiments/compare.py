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
and how many seeds it was ahead, the rectified − raw difference, and (`--n_boot` > 0)
the 95% interval of the paired difference over the test patients: per seed, a paired
bootstrap of the two runs' predictions.parquet (the same patient resamples for both runs,
`metrics.bootstrap_samples`' protocol, seed = the run's seed), of the AUROC difference
averaged over tasks; with several seeds, the mean of the per-seed bounds. With one seed
(e.g. a fixed test set such as PhysioNet set B) that interval is what separates two runs.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import polars as pl
from absl import flags

from crl_mmnar_jax import evaluation
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


def test_probabilities(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
  """(patient_id, labels_NxT, probs_NxT) of the test rows of a run's predictions.parquet
  (sorted by patient), or None when the file is absent."""
  path = os.path.join(folder, "predictions.parquet")
  if not os.path.exists(path):
    return None
  p = pl.read_parquet(path).filter(pl.col("split") == "test").sort("patient_id")
  tasks = [c[:-len("_prob")] for c in p.columns if c.endswith("_prob")]
  as_array = lambda suffix: np.stack(
      [p[f"{t}{suffix}"].cast(pl.Float64).fill_null(np.nan).to_numpy() for t in tasks], 1)
  return p["patient_id"].to_numpy(), as_array("_label"), as_array("_prob")


def paired_patient_interval(base: str, other: str, n_boot: int, seed: int
                            ) -> tuple[float, float] | None:
  """The 95% percentile interval of AUROC(other) − AUROC(base), averaged over tasks, on
  paired bootstrap resamples of the test patients (None without predictions)."""
  a, b = test_probabilities(base), test_probabilities(other)
  if a is None or b is None:
    return None
  if not np.array_equal(a[0], b[0]):
    raise SystemExit(f"error: {base} and {other} predict different test patients")
  d = np.mean([evaluation.paired_auroc_draws(a[1][:, t], a[2][:, t], b[2][:, t], n_boot, seed)
               for t in range(a[1].shape[1])], axis=0)
  d = d[np.isfinite(d)]
  return (float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))) if len(d) else None


def table(results: dict[str, list[dict]], folders: dict[str, list[str]] | None = None,
          seeds: Sequence[int] = (), n_boot: int = 0) -> str:
  auroc = lambda r, key: r["metrics"][key]["mean"]["auroc"]
  ci = lambda r: np.mean([v["ci95"]["auroc"] for k, v in r["metrics"]["test"].items()
                          if k != "mean" and (v.get("ci95") or {}).get("auroc")], axis=0)
  labels = list(results)
  base = np.array([auroc(r, "test") for r in results[labels[0]]])
  lines = ["| run | test AUROC | + rectifier | rectified − raw | mean bootstrap 95% CI | "
           f"paired Δ vs {labels[0]} | seeds ahead | Δ 95% CI over test patients |",
           "|---|---|---|---|---|---|---|---|"]
  for label in labels:
    raw = np.array([auroc(r, "test") for r in results[label]])
    rect = np.array([auroc(r, "test_rectified") for r in results[label]])
    cis = [ci(r) for r in results[label]]
    band = "" if any(np.ndim(c) == 0 for c in cis) else \
        f"[{np.mean([c[0] for c in cis]):.3f}, {np.mean([c[1] for c in cis]):.3f}]"
    d = raw - base
    spread = lambda x, sign="": (f"{x.mean():{sign}.4f} ± {np.std(x, ddof=1):.4f}"
                                 if len(x) > 1 else f"{x.mean():{sign}.4f}")  # one seed: no sd
    paired = "—" if label == labels[0] else spread(d, "+")
    ahead = "" if label == labels[0] else f"{int((d > 0).sum())} of {len(d)}"
    patients = ""
    if label != labels[0] and folders and n_boot > 0:
      bounds = [paired_patient_interval(folders[labels[0]][i], folders[label][i], n_boot, s)
                for i, s in enumerate(seeds)]
      if all(x is not None for x in bounds):
        patients = (f"[{np.mean([x[0] for x in bounds]):+.4f}, "
                    f"{np.mean([x[1] for x in bounds]):+.4f}]")
    lines.append(f"| {label} | {spread(raw)} | {rect.mean():.4f} | "
                 f"{(rect - raw).mean():+.4f} | {band} | {paired} | {ahead} | {patients} |")
  return "\n".join(lines)


def define_flags(fv: flags.FlagValues, argv: Sequence[str] = ()) -> None:
  flags.DEFINE_multi_string("run", [], "LABEL=PATH with {seed} in PATH (repeatable; the "
                            "first is the reference).", flag_values=fv)
  flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds.", flag_values=fv)
  flags.DEFINE_integer("n_boot", 1000, "Paired bootstrap draws over the test patients "
                       "(0: no per-patient interval).", flag_values=fv)


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
  if fv.n_boot < 0:
    raise SystemExit(f"error: --n_boot must be >= 0, got {fv.n_boot}")
  folders = {label: [path.format(seed=s) for s in seeds] for label, path in runs}
  text = table(load_runs(runs, seeds), folders, seeds, int(fv.n_boot))
  print(text)
  return text


SCRIPT = cli.Script(main, define_flags, __doc__)

if __name__ == "__main__":
  SCRIPT.run()
