r"""Pattern stability of the rectifier and the long tail.

  python -m experiments.studies.pattern_stability WORKDIR [WORKDIR ...] [--repeats=50] \
      [--resample=folds|half] [--rare=50] [--out=DIR]

For each run (a workdir with `predictions.parquet` and `results.json`), the rectifier is
refitted `repeats` times on the run's VALIDATION predictions only, with the run's
rectifier settings (`results.json` → `rectifier.settings`) and fold seeds 0..R-1:

* `--resample=folds` (default): the same validation rows, new cross-fitting folds; this
  isolates the variability that cross-fitting itself adds (the κ/λ selection, and τ̂
  only through unequal fold sizes: with equal folds the mean of the K out-of-fold means
  is the plain pattern mean).
* `--resample=half`: in addition, each refit sees a random half of every pattern's
  validation rows (without replacement). This adds the sampling variability of the
  validation set: by the finite-population correction, the sd over half-samples of a
  pattern's mean residual equals the standard error of the full-sample mean. The
  refits decide (minimum count, shrinkage, κ, λ) at half the size, so they correct
  somewhat less often than a full-size fit would. (A with-replacement bootstrap is not
  offered: a duplicated row can land in two folds, its own label then enters its
  out-of-fold correction, and the cross-fitted selection corrects far too often.)

Reported per pattern and task: the validation count n (rare when n < `--rare`), mean
and sd over refits of τ̂ (the raw cross-fitted mean residual) and of the applied shift
λ·τ (after shrinkage, minimum count and gate), the standard error of τ̂ from all the
validation rows (sd / sqrt(n) of the residuals, as in the rectifier's table), and the
fraction of refits that correct the pattern. Then the long-tail question on TEST
(labels used for evaluation only): per pattern, Brier and mean residual y − p before the
rectifier, after the run's own rectifier, and after each refit (mean over refits), and
the spread of the rectified test predictions over refits (mean over the pattern's
patients of their sd). With several workdirs (seeds), the sd of τ̂ over runs per pattern.

Outputs in `--out` (default: the first workdir): `stability.md`, `stability.csv` (one row
per run, pattern and task), `stability.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Any, Sequence

import numpy as np
import polars as pl
from absl import flags

from crl_mmnar_jax import rectifier as rectifier_lib
from crl_mmnar_jax.cohort import pattern_label
from experiments.configs import cli

RESAMPLING = ("folds", "half")
_SETTINGS = ("n_folds", "kappa_grid", "lambda_grid", "z", "min_count", "shrinkage",
             "selection")


@dataclasses.dataclass(frozen=True)
class Split:
  probs_NxT: np.ndarray
  labels_NxT: np.ndarray       # NaN = unknown
  pattern_N: np.ndarray
  rectified_NxT: np.ndarray    # the run's own rectified predictions


@dataclasses.dataclass(frozen=True)
class Run:
  workdir: str
  tasks: tuple[str, ...]
  modalities: tuple[str, ...] | None
  settings: dict[str, Any]     # rectifier.fit keyword arguments (without seed)
  val: Split
  test: Split


@dataclasses.dataclass(frozen=True)
class Refits:
  """R refits of the rectifier on the validation rows of one run."""

  patterns_P: np.ndarray       # validation patterns, sorted (as in every refit)
  count_PxT: np.ndarray        # labelled validation patients (all of them)
  se_PxT: np.ndarray           # standard error of the pattern mean residual (all of them)
  tau_RxPxT: np.ndarray        # raw cross-fitted τ̂ of each refit
  shift_RxPxT: np.ndarray      # applied λ·τ
  corrected_RxPxT: np.ndarray
  test_RxNxT: np.ndarray       # rectified test predictions of each refit


# ----------------------------------------------------------------------------- loading


def _split(frame: pl.DataFrame, name: str, tasks: Sequence[str]) -> Split:
  d = frame.filter(pl.col("split") == name)
  col = lambda suffix: np.stack(
      [d[f"{t}_{suffix}"].cast(pl.Float64).fill_null(np.nan).to_numpy() for t in tasks], 1)
  return Split(col("prob"), col("label"), d["pattern_id"].to_numpy().astype(np.int64),
               col("prob_rectified"))


def load_run(workdir: str) -> Run:
  """Reads a run's predictions and rectifier settings; raises ValueError if unusable."""
  if not os.path.isdir(workdir):
    raise ValueError(f"workdir {workdir} does not exist")
  paths = {f: os.path.join(workdir, f) for f in ("predictions.parquet", "results.json")}
  for path in paths.values():
    if not os.path.exists(path):
      raise ValueError(f"{path} not found (run not finished?)")
  with open(paths["results.json"]) as f:
    results = json.load(f)
  rect = results.get("rectifier")
  if not rect or "settings" not in rect:
    raise ValueError(f"{paths['results.json']} has no fitted rectifier (rectifier.settings)")
  tasks = tuple(rect["task_names"])
  frame = pl.read_parquet(paths["predictions.parquet"])
  needed = ["split", "pattern_id"] + [f"{t}_{s}" for t in tasks
                                      for s in ("label", "prob", "prob_rectified")]
  missing = [c for c in needed if c not in frame.columns]
  if missing:
    raise ValueError(f"{paths['predictions.parquet']} lacks columns {missing}")
  settings = {k: rect["settings"][k] for k in _SETTINGS}
  settings["kappa_grid"] = tuple(settings["kappa_grid"])
  settings["lambda_grid"] = tuple(settings["lambda_grid"])
  val, test = _split(frame, "val", tasks), _split(frame, "test", tasks)
  if val.pattern_N.size == 0:
    raise ValueError(f"{paths['predictions.parquet']} has no validation rows to refit on")
  modalities = results.get("cohort", {}).get("modalities")
  return Run(workdir, tasks, tuple(modalities) if modalities else None, settings, val, test)


# ----------------------------------------------------------------------------- refits


def pattern_counts_and_se(split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Sorted patterns (P,), labelled count (P, T) and se of the mean residual (P, T)."""
  patterns_P, index_N = np.unique(split.pattern_N, return_inverse=True)
  r_NxT = split.labels_NxT - split.probs_NxT
  known_NxT = ~np.isnan(r_NxT)
  r_NxT = np.where(known_NxT, r_NxT, 0.0)
  sums = [np.stack([np.bincount(index_N, x_NxT[:, t], patterns_P.size)
                    for t in range(x_NxT.shape[1])], 1)
          for x_NxT in (known_NxT.astype(np.float64), r_NxT, r_NxT ** 2)]
  n_PxT, s1_PxT, s2_PxT = sums
  with np.errstate(invalid="ignore", divide="ignore"):
    var_PxT = (s2_PxT - s1_PxT ** 2 / n_PxT) / (n_PxT - 1)
    se_PxT = np.where(n_PxT > 1, np.sqrt(np.maximum(var_PxT, 0.0) / n_PxT), np.nan)
  return patterns_P, n_PxT.astype(np.int64), se_PxT


def half_rows(pattern_N: np.ndarray, seed: int) -> np.ndarray:
  """A random half (rounded up) of each pattern's rows, without replacement, sorted."""
  rng = np.random.default_rng(seed)
  key_N = rng.random(pattern_N.size)
  order_N = np.lexsort((key_N, pattern_N))
  _, first_P, count_P = np.unique(pattern_N[order_N], return_index=True, return_counts=True)
  rank_N = np.arange(order_N.size) - np.repeat(first_P, count_P)
  keep_N = rank_N < np.repeat((count_P + 1) // 2, count_P)
  return np.sort(order_N[keep_N])


def refit(run: Run, repeats: int, resample: str = "folds") -> Refits:
  """Refits the rectifier `repeats` times on validation rows (fold seed = repeat index)."""
  if resample not in RESAMPLING:
    raise ValueError(f"resample must be one of {RESAMPLING}, got {resample!r}")
  if repeats < 2:
    raise ValueError(f"repeats must be >= 2 (an sd needs two refits), got {repeats}")
  v = run.val
  fits = []
  for r in range(repeats):
    rows = (half_rows(v.pattern_N, r) if resample == "half"
            else np.arange(v.pattern_N.size))
    fits.append(rectifier_lib.fit(v.probs_NxT[rows], v.labels_NxT[rows], v.pattern_N[rows],
                                  seed=r, task_names=run.tasks, **run.settings))
  patterns_P, count_PxT, se_PxT = pattern_counts_and_se(v)
  return Refits(
      patterns_P=patterns_P, count_PxT=count_PxT, se_PxT=se_PxT,
      tau_RxPxT=np.stack([f.tau_raw_PxT for f in fits]),
      shift_RxPxT=np.stack([f.shift_PxT for f in fits]),
      corrected_RxPxT=np.stack([f.corrected_PxT for f in fits]),
      test_RxNxT=np.stack([f.apply(run.test.probs_NxT, run.test.pattern_N) for f in fits]))


# ----------------------------------------------------------------------------- tables


def _f(x) -> float | None:
  x = float(x)
  return None if math.isnan(x) else x


def _brier_resid(y_K: np.ndarray, p_K: np.ndarray) -> tuple[float, float]:
  return float(np.mean((y_K - p_K) ** 2)), float(np.mean(y_K - p_K))


def pattern_rows(run: Run, fits: Refits, rare_below: int = 50) -> list[dict[str, Any]]:
  """One row per (validation pattern, task): stability of τ̂ and the test consequences."""
  rows = []
  test = run.test
  for i, pattern in enumerate(fits.patterns_P.tolist()):
    on_N = test.pattern_N == pattern
    for t, task in enumerate(run.tasks):
      known_N = on_N & ~np.isnan(test.labels_NxT[:, t])
      n_val = int(fits.count_PxT[i, t])
      row: dict[str, Any] = {
          "workdir": run.workdir, "pattern": int(pattern), "task": task,
          "pattern_label": (pattern_label(pattern, run.modalities) if run.modalities
                            else str(pattern)),
          "n_val": n_val, "rare": n_val < rare_below, "n_test": int(known_N.sum()),
          "tau_mean": _f(np.mean(fits.tau_RxPxT[:, i, t])),
          "tau_sd": _f(np.std(fits.tau_RxPxT[:, i, t], ddof=1)),
          "se": _f(fits.se_PxT[i, t]),
          "shift_mean": _f(np.mean(fits.shift_RxPxT[:, i, t])),
          "shift_sd": _f(np.std(fits.shift_RxPxT[:, i, t], ddof=1)),
          "corrected_frac": float(np.mean(fits.corrected_RxPxT[:, i, t])),
      }
      if known_N.any():
        y_K = test.labels_NxT[known_N, t]
        refit_KxR = fits.test_RxNxT[:, known_N, t].T
        row["brier_before"], row["resid_before"] = _brier_resid(y_K, test.probs_NxT[known_N, t])
        row["brier_after"], row["resid_after"] = _brier_resid(
            y_K, test.rectified_NxT[known_N, t])
        row["brier_refit"] = float(np.mean((y_K[:, None] - refit_KxR) ** 2))
        row["resid_refit"] = float(np.mean(y_K[:, None] - refit_KxR))
        row["pred_sd_refit"] = float(np.mean(np.std(refit_KxR, axis=1, ddof=1)))
      rows.append(row)
  return rows


def long_tail(rows: list[dict]) -> list[dict[str, Any]]:
  """Rare vs common cells (pattern × task with test patients), test-patient weighted."""
  out = []
  for rare in (True, False):
    sel = [r for r in rows if r["rare"] == rare and r["n_test"] > 0]
    if not sel:
      continue
    w = np.array([r["n_test"] for r in sel], dtype=float)
    mean = lambda key: float(np.sum(w * [r[key] for r in sel]) / w.sum())
    absmean = lambda key: float(np.mean([abs(r[key]) for r in sel]))
    out.append({
        "group": "rare" if rare else "common", "cells": len(sel), "n_test": int(w.sum()),
        "brier_before": mean("brier_before"), "brier_after": mean("brier_after"),
        "brier_refit": mean("brier_refit"),
        "abs_resid_before": absmean("resid_before"), "abs_resid_after": absmean("resid_after"),
        "abs_resid_refit": absmean("resid_refit"),
        "pred_sd_refit": mean("pred_sd_refit"),
        "shift_sd": float(np.mean([r["shift_sd"] for r in sel])),
        "corrected_frac": float(np.mean([r["corrected_frac"] for r in sel])),
        "improved_frac": float(np.mean([r["brier_refit"] < r["brier_before"] for r in sel])),
    })
  return out


def across_runs(rows: list[dict]) -> list[dict[str, Any]]:
  """Per (pattern, task) seen in >= 2 runs: sd over runs of the mean refitted τ̂."""
  by: dict[tuple, list] = {}
  for r in rows:
    by.setdefault((r["pattern"], r["task"]), []).append(r)
  out = []
  for (pattern, task), sel in sorted(by.items()):
    taus = [r["tau_mean"] for r in sel if r["tau_mean"] is not None]
    if len(taus) < 2:
      continue
    out.append({"pattern": pattern, "task": task, "pattern_label": sel[0]["pattern_label"],
                "runs": len(taus), "n_val_mean": float(np.mean([r["n_val"] for r in sel])),
                "tau_mean": float(np.mean(taus)), "tau_sd_runs": float(np.std(taus, ddof=1)),
                "tau_sd_refits": float(np.mean([r["tau_sd"] for r in sel])),
                "shift_sd_refits": float(np.mean([r["shift_sd"] for r in sel])),
                "se_mean": float(np.mean([r["se"] for r in sel if r["se"] is not None]))})
  return out


# ----------------------------------------------------------------------------- report


def _n(x, d: int = 4) -> str:
  return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


def run_names(workdirs: Sequence[str]) -> dict[str, str]:
  """Each workdir without the part all of them share (the basename if there is one)."""
  unique = sorted(set(workdirs))
  if len(unique) == 1:
    return {unique[0]: os.path.basename(os.path.normpath(unique[0]))}
  common = os.path.commonpath([os.path.abspath(w) for w in unique])
  return {w: os.path.relpath(os.path.abspath(w), common) for w in unique}


def markdown(rows: list[dict], tail: list[dict], runs: list[dict], repeats: int,
             resample: str, rare_below: int, command: str) -> str:
  lines = [
      "# Rectifier pattern stability and the long tail", "", f"`{command}`", "",
      f"{repeats} refits per run on validation rows only (resampling: {resample}); test "
      f"labels are used for evaluation only. Rare = fewer than {rare_below} labelled "
      "validation patients. τ̂ = raw cross-fitted mean residual; shift = applied λ·τ; "
      "Brier and residual y − p on the pattern's test patients: before the rectifier, "
      "after the run's own rectifier, and after the refits (mean); pred sd = mean over the "
      "pattern's test patients of the sd of their rectified prediction over refits.", "",
      "## Long tail (test)", "",
      "| group | cells | test patients | Brier before | after (run) | after (refits) | "
      "mean abs residual before | after (refits) | pred sd over refits | shift sd | "
      "corrected (fraction of refits) | cells improved |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for g in tail:
    lines.append(
        f"| {g['group']} | {g['cells']} | {g['n_test']} | {_n(g['brier_before'])} | "
        f"{_n(g['brier_after'])} | {_n(g['brier_refit'])} | {_n(g['abs_resid_before'])} | "
        f"{_n(g['abs_resid_refit'])} | {_n(g['pred_sd_refit'])} | {_n(g['shift_sd'])} | "
        f"{g['corrected_frac']:.2f} | {g['improved_frac']:.2f} |")
  if runs:
    lines += ["", "## τ̂ over runs (seeds)", "",
              "| pattern | task | runs | mean n val | mean τ̂ | sd over runs | mean sd over "
              "refits | mean shift sd over refits | mean se |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
      lines.append(f"| {r['pattern']} ({r['pattern_label']}) | {r['task']} | {r['runs']} | "
                   f"{r['n_val_mean']:.0f} | {_n(r['tau_mean'])} | {_n(r['tau_sd_runs'])} | "
                   f"{_n(r['tau_sd_refits'])} | {_n(r['shift_sd_refits'])} | "
                   f"{_n(r['se_mean'])} |")
  lines += ["", "## Per run, pattern and task", "",
            "| run | pattern | task | n val | rare | τ̂ mean | τ̂ sd | se | shift mean | shift sd "
            "| corrected | n test | Brier before | after (refits) | residual before | "
            "after (refits) | pred sd |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  names = run_names([r["workdir"] for r in rows])
  for r in rows:
    lines.append(
        f"| {names[r['workdir']]} | {r['pattern']} "
        f"({r['pattern_label']}) | {r['task']} | {r['n_val']} | {'yes' if r['rare'] else ''} | "
        f"{_n(r['tau_mean'])} | {_n(r['tau_sd'])} | {_n(r['se'])} | {_n(r['shift_mean'])} | "
        f"{_n(r['shift_sd'])} | {r['corrected_frac']:.2f} | {r['n_test']} | "
        f"{_n(r.get('brier_before'))} | {_n(r.get('brier_refit'))} | "
        f"{_n(r.get('resid_before'))} | {_n(r.get('resid_refit'))} | "
        f"{_n(r.get('pred_sd_refit'))} |")
  return "\n".join(lines) + "\n"


def analyse(workdirs: Sequence[str], repeats: int = 50, resample: str = "folds",
            rare_below: int = 50) -> dict[str, Any]:
  rows = []
  for w in workdirs:
    run = load_run(w)
    rows.extend(pattern_rows(run, refit(run, repeats, resample), rare_below))
  return {"repeats": repeats, "resample": resample, "rare_below": rare_below,
          "workdirs": list(workdirs), "long_tail": long_tail(rows),
          "across_runs": across_runs(rows), "rows": rows}


def write_outputs(result: dict, out: str, command: str) -> None:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "stability.md"), "w") as f:
    f.write(markdown(result["rows"], result["long_tail"], result["across_runs"],
                     result["repeats"], result["resample"], result["rare_below"], command))
  pl.DataFrame(result["rows"], infer_schema_length=None).write_csv(
      os.path.join(out, "stability.csv"))
  with open(os.path.join(out, "stability.json"), "w") as f:
    json.dump({"command": command, **result}, f, indent=2)


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  """The flags of `experiments.studies.pattern_stability` on `fv` (`argv` unused: no
  config-file flag); the run directories are positional arguments."""
  del argv
  flags.DEFINE_integer("repeats", 50, "Refits per run.", flag_values=fv)
  flags.DEFINE_enum("resample", "folds", RESAMPLING, "What each refit redraws.",
                    flag_values=fv)
  flags.DEFINE_integer("rare", 50, "Rare: fewer labelled validation patients than this.",
                       flag_values=fv)
  flags.DEFINE_string("out", None, "Output directory (default: the first run).",
                      flag_values=fv)


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> None:
  workdirs = argv[1:]
  if not workdirs:
    sys.exit("error: give at least one run directory: python -m experiments.studies."
             "pattern_stability WORKDIR [WORKDIR ...] (--help lists the flags)")
  try:
    result = analyse(workdirs, fv.repeats, fv.resample, fv.rare)
  except ValueError as e:
    sys.exit(f"error: {e}")
  command = cli.command_line("experiments.studies.pattern_stability", argv, fv)
  out = fv.out or workdirs[0]
  write_outputs(result, out, command)
  with open(os.path.join(out, "stability.md")) as f:
    print(f.read())


SCRIPT = cli.Script(main, define_flags, __doc__)

if __name__ == "__main__":
  SCRIPT.run()
