"""`report.md` and its PNG plots (ROC, calibration, τ̂ per pattern) from a run's outputs.

It is written from the results as results.json holds them (`cells.suppress`): patterns
below the minimum cell size appear as one "other" row and small counts as "<K".
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import polars as pl

from crl_mmnar_jax import cells
from crl_mmnar_jax import metrics as metrics_lib
from crl_mmnar_jax.cohort import pattern_label
from crl_mmnar_jax.rectifier import bootstrap as rectifier_bootstrap

_VIEWS = (("val", "validation"),
          ("val_rectified", "validation, rectified (cross-fitted τ̂; κ, λ chosen in-sample)"),
          ("test", "test"), ("test_rectified", "test, rectified"))


def _f(x, digits: int = 3) -> str:
  return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pattern(p, modality_names: Sequence[str], results: dict) -> str:
  """The observed modalities of a pattern id, or what the pooled "other" row holds."""
  if p == cells.OTHER:
    return f"patterns with fewer than {results.get('min_cell_size', '?')} patients, pooled"
  return pattern_label(p, modality_names)


def _with_ci(m: dict, key: str) -> str:
  ci = m.get("ci95", {}).get(key)
  s = _f(m.get(key))
  if ci and ci[0] is not None and not (isinstance(ci[0], float) and math.isnan(ci[0])):
    s += f" [{_f(ci[0])}, {_f(ci[1])}]"
  return s


def results_table(results: dict) -> list[str]:
  tasks = results["cohort"]["tasks"]
  lines = ["| split | task | n | n_pos | AUROC [95% CI] | AUPRC [95% CI] | Brier | ECE |",
           "|---|---|---|---|---|---|---|---|"]
  for key, label in _VIEWS:
    view = results["metrics"][key]
    for t in tasks + ["mean"]:
      m = view[t]
      n = m.get("n", "")
      lines.append(f"| {label} | {t} | {n} | {m.get('n_pos', '')} | {_with_ci(m, 'auroc')} | "
                   f"{_with_ci(m, 'auprc')} | {_f(m.get('brier'))} | {_f(m.get('ece'))} |")
  return lines


def pattern_table(results: dict, modality_names: Sequence[str]) -> list[str]:
  tasks = results["cohort"]["tasks"]
  lines = ["| task | pattern | observed modalities | n (test) | AUROC | AUROC rectified | "
           "Brier | Brier rectified |", "|---|---|---|---|---|---|---|---|"]
  for t in tasks:
    rect = {r["pattern"]: r for r in results["per_pattern"]["test_rectified"][t]}
    for r in results["per_pattern"]["test"][t]:
      rr = rect.get(r["pattern"], {})
      lines.append(f"| {t} | {r['pattern']} | {_pattern(r['pattern'], modality_names, results)} | "
                   f"{r['n']} | {_f(r.get('auroc'))} | {_f(rr.get('auroc'))} | "
                   f"{_f(r.get('brier'))} | {_f(rr.get('brier'))} |")
  return lines


def modality_table(results: dict) -> list[str]:
  lines = ["| modality | task | observed | outcome rate when observed | when not observed |",
           "|---|---|---|---|---|"]
  for r in results["cohort"].get("modality_table", []):
    lines.append(f"| {r['modality']} | {r['task']} | {_f(r['observed_fraction'])} | "
                 f"{_f(r['rate_observed'])} | {_f(r['rate_not_observed'])} |")
  return lines


def rectifier_table(results: dict, modality_names: Sequence[str]) -> list[str]:
  rect = results["rectifier"]
  tested = rect.get("selection_test", {})
  lines = ["| task | κ | λ | tested (κ, λ) | cross-fitted Δloss | bound | passed |",
           "|---|---|---|---|---|---|---|"]
  for t in rect["task_names"]:
    s = tested.get(t, {})
    pair = f"({_f(s.get('kappa'))}, {_f(s.get('lambda'))})" if s else "n/a"
    passed = {True: "yes", False: "no"}.get(s.get("passed"), "n/a")
    lines.append(f"| {t} | {_f(rect['kappa'][t])} | {_f(rect['lambda'][t])} | {pair} | "
                 f"{_f(s.get('cv_delta'), 5)} | {_f(s.get('bound'), 5)} | {passed} |")
  lines += ["", "| task | pattern | observed modalities | n (val) | τ̂ raw | se | τ̂ applied | "
            "corrected |", "|---|---|---|---|---|---|---|---|"]
  for r in rect["table"]:
    corrected = (f"{r['corrected']} of {r['patterns']}" if r["pattern"] == cells.OTHER
                 else "yes" if r["corrected"] else "no")
    lines.append(f"| {r['task']} | {r['pattern']} | "
                 f"{_pattern(r['pattern'], modality_names, results)} | {r['n']} | "
                 f"{_f(r['tau_raw'], 4)} | {_f(r['se'], 4)} | {_f(r['tau'], 4)} | "
                 f"{corrected} |")
  return lines


def _plots(workdir: str, results: dict, predictions: pl.DataFrame) -> list[str]:
  # Figure objects, not pyplot: no global backend switch in the caller's process.
  from matplotlib.figure import Figure

  def subplots(n_cols: int, figsize):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(1, n_cols, squeeze=False)

  tasks = results["cohort"]["tasks"]
  test = predictions.filter(pl.col("split") == "test")
  files = []

  fig, axes = subplots(len(tasks), (4 * len(tasks), 4))
  for ax, t in zip(axes[0], tasks):
    y = test[f"{t}_label"].to_numpy().astype(float)
    for col, label in ((f"{t}_prob", "model"), (f"{t}_prob_rectified", "rectified")):
      p = test[col].to_numpy().astype(float)
      known = ~np.isnan(y)
      if len(np.unique(y[known])) == 2:
        fpr, tpr = metrics_lib.roc_curve(y[known], p[known])
        auc = metrics_lib.auroc(y[known], p[known])
        ax.plot(fpr, tpr, label=f"{label} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(title=f"{t}: test ROC", xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "roc.png"), dpi=110)
  files.append("roc.png")

  fig, axes = subplots(len(tasks), (4 * len(tasks), 4))
  for ax, t in zip(axes[0], tasks):
    y = test[f"{t}_label"].to_numpy().astype(float)
    known = ~np.isnan(y)
    for col, label in ((f"{t}_prob", "model"), (f"{t}_prob_rectified", "rectified")):
      p = test[col].to_numpy().astype(float)
      if known.any():
        mp, fp, _ = metrics_lib.calibration_curve(y[known], p[known])
        ax.plot(mp, fp, "o-", ms=3, label=label)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(title=f"{t}: test calibration", xlabel="mean predicted probability",
           ylabel="observed fraction")
    ax.legend(loc="upper left", fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "calibration.png"), dpi=110)
  files.append("calibration.png")

  rows = results["rectifier"]["table"]
  patterns = sorted({r["pattern"] for r in rows},
                    key=lambda p: (isinstance(p, str), p if isinstance(p, int) else 0))
  fig, axes = subplots(1, (max(6, 0.5 * len(patterns) * len(tasks)), 4))
  ax = axes[0, 0]
  width = 0.8 / max(len(tasks), 1)
  for j, t in enumerate(tasks):
    by = {r["pattern"]: r for r in rows if r["task"] == t}
    x = np.arange(len(patterns)) + j * width
    get = lambda p, key, default: (by.get(p, {}).get(key) if by.get(p, {}).get(key)
                                   is not None else default)
    tau = [get(p, "tau_raw", np.nan) for p in patterns]
    se = [get(p, "se", 0.0) for p in patterns]
    bars = ax.bar(x, tau, width, yerr=se, capsize=2, label=t)
    for b, p in zip(bars, patterns):
      if not get(p, "corrected", False) or p == cells.OTHER:
        b.set_alpha(0.35)
  ax.axhline(0, color="k", lw=0.8)
  ax.set_xticks(np.arange(len(patterns)) + 0.4 - width / 2)
  ax.set_xticklabels([str(p) for p in patterns], rotation=90, fontsize=7)
  ax.set(title="τ̂ per pattern (validation, cross-fitted; faded = not corrected)",
         xlabel="pattern id", ylabel="mean(y − p)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "tau.png"), dpi=110)
  files.append("tau.png")
  return files


def write_report(workdir: str, results: dict, predictions: pl.DataFrame,
                 modality_names: Sequence[str], plots: bool = True) -> str:
  """Writes WORKDIR/report.md (and PNGs); returns its path."""
  c, tr = results["cohort"], results["training"]
  if tr.get("best_epoch") is None:    # a direct method: no training loop
    fitted = f"Fitted without a training loop: {tr.get('model', '')} ({tr.get('fitted', {})})"
  else:
    fitted = f"Best epoch {tr['best_epoch']}"
  lines = [f"# {results['method']} on {c['name']} (seed {results['seed']})", "",
           f"Cohort: {c['n']} patients (train {c['n_train']}, val {c['n_val']}, test "
           f"{c['n_test']}), fingerprint `{c['fingerprint']}`, modalities "
           f"{', '.join(c['modalities'])}. {fitted} (validation mean AUROC "
           f"{_f(tr['best_val_mean_auroc'], 4)}), {tr['devices']} device(s).", "",
           "## Results", "", *results_table(results), ""]
  for key, title in (("reference", "Reference baselines (test)"),
                     ("oracle", "Oracle: the true probabilities (synthetic data only)")):
    if key in results:
      lines += [f"## {title}", "", "| model | task | AUROC | AUPRC | Brier |", "|---|---|---|---|---|"]
      for name, view in results[key].items():
        name = "true probabilities, test" if key == "oracle" else name
        for t in c["tasks"] + ["mean"]:
          m = view[t]
          lines.append(f"| {name} | {t} | {_f(m.get('auroc'))} | {_f(m.get('auprc'))} | "
                       f"{_f(m.get('brier'))} |")
      lines.append("")
  lines += ["## Is missingness informative? (train and validation patients)", "",
            *modality_table(results), "",
            "## Per pattern (test)", "", *pattern_table(results, modality_names), "",
            "## Rectifier (fitted on validation only)", "",
            *rectifier_table(results, modality_names), ""]
  if "rectifier_intervals" in results:
    iv = results["rectifier_intervals"]
    lines += ["### Rectified − raw, paired bootstrap (test)", "",
              *rectifier_bootstrap.report_lines(delta=iv["delta_test"]), "",
              "### τ̂ per pattern, bootstrap intervals (validation)", "",
              *rectifier_bootstrap.report_lines(tau=iv["tau_val"]), ""]
  if plots:
    lines += ["## Plots", ""] + [f"![{f}]({f})" for f in _plots(workdir, results, predictions)]
  path = os.path.join(workdir, "report.md")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(tmp, path)
  return path
