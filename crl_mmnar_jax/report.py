"""`report.md` and its PNG plots from a run's outputs (what they hold: docs/report.md).

It is written from the results as results.json holds them (`cells.suppress`): patterns
below the minimum cell size K appear as one "other" row and small counts as "<K"; the
plots follow the same rule (calibration bins and histogram bars of fewer than K
patients are not drawn). Every PNG is at most `MAX_PX` - 1 pixels wide and tall.

`comparisons` computes the sections of results.json the report adds to the metrics
(operating points, method − reference); `experiment.py` calls it before the test
labels leave the run.
"""

from __future__ import annotations

import io
import json
import math
import os
from typing import Any, Sequence

import numpy as np
import polars as pl

from crl_mmnar_jax import cells
from crl_mmnar_jax import metrics as metrics_lib
from crl_mmnar_jax.cohort import pattern_label
from crl_mmnar_jax.data.io import write_atomic
from crl_mmnar_jax.rectifier import bootstrap as rectifier_bootstrap

THRESHOLDS = (0.1, 0.2, 0.3, 0.5)
TARGET_SENSITIVITY = 0.9
DELTA_METRICS = ("auroc", "auprc", "brier")
TOP_PATTERNS = 15            # τ̂ plot: the largest patterns, then the pooled "other" row
MAX_PX = 2000                # every PNG is smaller than this in both directions
DPI = 100
SMOKE_NOTE = ("SMOKE RUN (a `tiny` preset, eval.smoke=True): a few epochs of a small "
              "model on few patients; it checks the pipeline, and its numbers mean nothing.")

_VIEWS = (("val", "validation"),
          ("val_rectified", "validation, rectified (cross-fitted τ̂; κ, λ chosen in-sample)"),
          ("test", "test"), ("test_rectified", "test, rectified"))
_CURVES = (("prob", "model"), ("prob_rectified", "rectified"),
           ("prob_reference", "reference (logistic regression)"),
           ("prob_oracle", "oracle (true probabilities)"))


# ----------------------------------------------------------------------------- results


def operating_points(y_val, p_val, y_test, p_test,
                     thresholds: Sequence[float] = THRESHOLDS,
                     target: float = TARGET_SENSITIVITY) -> list[dict]:
  """Test sensitivity, specificity and PPV (`metrics.threshold_metrics`) at the fixed
  `thresholds` and at the threshold reaching `target` sensitivity on validation."""
  rows = [{**r, "chosen": "fixed"} for r in
          metrics_lib.threshold_metrics(y_test, p_test, thresholds)]
  t = metrics_lib.threshold_for_sensitivity(y_val, p_val, target)
  if math.isfinite(t):
    rows += [{**r, "chosen": f"sensitivity {target:.0%} on validation"}
             for r in metrics_lib.threshold_metrics(y_test, p_test, [t])]
  return rows


def comparisons(labels: dict, probs: dict, rectified: dict, reference: dict,
                oracle: dict | None, task_names: Sequence[str], *, n_boot: int,
                seed: int) -> dict[str, Any]:
  """results.json's "operating_points" (every model, per task) and, with a reference
  model and n_boot > 0, "reference_delta": method − reference on the test patients with
  a paired bootstrap interval (`rectifier.bootstrap.paired_delta_intervals`, the same
  resamples for both).

  `labels`, `probs`, `rectified`, each of `reference`'s values and `oracle` map "val"
  and "test" to (N, T) arrays of the same rows."""
  models = {"model": probs, "rectified": rectified, **reference}
  if oracle is not None:
    models["oracle"] = oracle
  out: dict[str, Any] = {"operating_points": {
      "thresholds": list(THRESHOLDS), "target_sensitivity": TARGET_SENSITIVITY,
      "rule": "a patient is flagged when p >= threshold; rates on the test patients",
      "models": {name: {t: operating_points(labels["val"][:, j], p["val"][:, j],
                                            labels["test"][:, j], p["test"][:, j])
                        for j, t in enumerate(task_names)} for name, p in models.items()}}}
  if n_boot > 0 and reference:
    out["reference_delta"] = {}
    for name, ref in reference.items():
      d = rectifier_bootstrap.paired_delta_intervals(
          labels["test"], ref["test"], probs["test"], n_boot=n_boot, seed=seed,
          task_names=list(task_names), metrics=DELTA_METRICS)
      for entry in d["overall"].values():
        for m in DELTA_METRICS:
          v = entry[m]
          entry[m] = {"method": v["rectified"], "reference": v["raw"], "delta": v["delta"],
                      "lo": v["lo"], "hi": v["hi"]}
      d["interval"] = ("paired percentile bootstrap of test patients (the same resamples "
                       "for the method and the reference)")
      d.pop("method")
      out["reference_delta"][name] = d
  return out


# ----------------------------------------------------------------------------- tables


def _f(x, digits: int = 3, sign: bool = False) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "n/a"
  return f"{x:{'+' if sign else ''}.{digits}f}" if isinstance(x, (int, float)) else str(x)


def _interval(lo, hi, digits: int = 3, sign: bool = False) -> str:
  return "" if lo is None or hi is None else f" [{_f(lo, digits, sign)}, {_f(hi, digits, sign)}]"


def _pattern(r: dict, modality_names: Sequence[str], results: dict) -> str:
  """The observed modalities of a row's pattern, or what the pooled "other" row holds."""
  if r["pattern"] == cells.OTHER:
    return (f"other: {r.get('patterns', '?')} patterns with fewer than "
            f"{results.get('min_cell_size', '?')} patients, pooled")
  return pattern_name(r["pattern"], modality_names)


def _by_size(rows: list[dict]) -> list[dict]:
  """Patterns by size (largest first), the pooled "other" row last."""
  return sorted(rows, key=lambda r: (r["pattern"] == cells.OTHER,
                                     -r["n"] if isinstance(r["n"], int) else 0))


def _with_ci(m: dict, key: str) -> str:
  ci = m.get("ci95", {}).get(key) or [None, None]
  return _f(m.get(key)) + _interval(*ci)


def results_table(results: dict) -> list[str]:
  tasks = results["cohort"]["tasks"]
  lines = ["| split | task | n | n_pos | AUROC [95% CI] | AUPRC [95% CI] | Brier | ECE |",
           "|---|---|---|---|---|---|---|---|"]
  for key, label in _VIEWS:
    view = results["metrics"][key]
    for t in tasks + ["mean"]:
      m = view[t]
      lines.append(f"| {label} | {t} | {m.get('n', '')} | {m.get('n_pos', '')} | "
                   f"{_with_ci(m, 'auroc')} | {_with_ci(m, 'auprc')} | {_f(m.get('brier'))} "
                   f"| {_f(m.get('ece'))} |")
  return lines


def reference_tables(results: dict) -> list[str]:
  tasks = results["cohort"]["tasks"]
  lines = ["| model | task | AUROC [95% CI] | AUPRC [95% CI] | Brier |", "|---|---|---|---|---|"]
  views = [(name, v) for name, v in results.get("reference", {}).items()]
  views += [("oracle: true probabilities", v) for v in results.get("oracle", {}).values()]
  views.insert(0, (f"{results['method']} (this run)", results["metrics"]["test"]))
  for name, view in views:
    for t in tasks + ["mean"]:
      m = view[t]
      lines.append(f"| {name} | {t} | {_with_ci(m, 'auroc')} | {_with_ci(m, 'auprc')} | "
                   f"{_f(m.get('brier'))} |")
  for name, d in results.get("reference_delta", {}).items():
    level = round(100 * (1 - d["alpha"]))
    lines += ["", f"{results['method']} − {name} on the same test patients ({d['interval']}, "
              f"{d['n_boot']} resamples):", "",
              f"| task | n | metric | {results['method']} | {name} | Δ [{level}% CI] |",
              "|---|---|---|---|---|---|"]
    for t, e in d["overall"].items():
      for m in d["metrics"]:
        v = e[m]
        lines.append(f"| {t} | {e['n']} | {m} | {_f(v['method'])} | {_f(v['reference'])} | "
                     f"{_f(v['delta'], sign=True)}{_interval(v['lo'], v['hi'], sign=True)} |")
  return lines


def operating_table(results: dict) -> list[str]:
  op = results["operating_points"]
  lines = ["| model | task | threshold | chosen | sensitivity | specificity | PPV |",
           "|---|---|---|---|---|---|---|"]
  for name, by_task in op["models"].items():
    for t, rows in by_task.items():
      for r in rows:
        lines.append(f"| {name} | {t} | {_f(r['threshold'])} | {r['chosen']} | "
                     f"{_f(r['sensitivity'])} | {_f(r['specificity'])} | {_f(r['ppv'])} |")
  return lines


def pattern_table(results: dict, modality_names: Sequence[str]) -> list[str]:
  """Test metrics per pattern of at least K patients (and the pooled rest), with the
  rectified − raw Brier change and its paired interval where results.json has it (a
  shift within one pattern leaves that pattern's AUROC unchanged)."""
  tasks = results["cohort"]["tasks"]
  delta = results.get("rectifier_intervals", {}).get("delta_test", {}).get("per_pattern", {})
  lines = ["| task | observed modalities | n (test) | n_pos | AUROC | AUROC rectified | "
           "Brier | Brier rectified | Δ Brier [95% CI] |", "|---|---|---|---|---|---|---|---|---|"]
  for t in tasks:
    rect = {r["pattern"]: r for r in results["per_pattern"]["test_rectified"][t]}
    d = {e["pattern"]: e["brier"] for e in delta.get(t, []) if "brier" in e}
    for r in _by_size(results["per_pattern"]["test"][t]):
      rr, dd = rect.get(r["pattern"], {}), d.get(r["pattern"], {})
      change = (_f(dd.get("delta"), 4, True) + _interval(dd.get("lo"), dd.get("hi"), 4,
                                                         True)) if dd else ""
      lines.append(f"| {t} | {_pattern(r, modality_names, results)} | {r['n']} | "
                   f"{r.get('n_pos', '')} | {_f(r.get('auroc'))} | {_f(rr.get('auroc'))} | "
                   f"{_f(r.get('brier'), 4)} | {_f(rr.get('brier'), 4)} | {change} |")
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
    if s.get("passed") and s.get("dropped_by_auroc_guard"):
      passed = "yes, dropped by the AUROC guard (not corrected)"
    lines.append(f"| {t} | {_f(rect['kappa'][t])} | {_f(rect['lambda'][t])} | {pair} | "
                 f"{_f(s.get('cv_delta'), 5)} | {_f(s.get('bound'), 5)} | {passed} |")
  tau = results.get("rectifier_intervals", {}).get("tau_val", {}).get("tasks", {})
  ci = {(t, r["pattern"]): r for t, rows in tau.items() for r in rows}
  lines += ["", "| task | observed modalities | n (val) | τ̂ raw [95% CI] | se | τ̂ applied | "
            "corrected |", "|---|---|---|---|---|---|---|"]
  for r in _by_size(rect["table"]):
    corrected = (f"{r['corrected']} of {r['patterns']}" if r["pattern"] == cells.OTHER
                 else "yes" if r["corrected"] else "no")
    c = ci.get((r["task"], r["pattern"]), {})
    lines.append(f"| {r['task']} | {_pattern(r, modality_names, results)} | {r['n']} | "
                 f"{_f(r['tau_raw'], 4, True)}{_interval(c.get('lo'), c.get('hi'), 4, True)} | "
                 f"{_f(r['se'], 4)} | {_f(r['tau'], 4, True)} | {corrected} |")
  return lines


def stack_tables(results: dict) -> list[str]:
  """Per task: the no-harm rule (docs/stack.md) on the out-of-fold rows, the stacker's
  weights, and on test every member's AUROC and the stack − best member difference."""
  tasks = results["training"]["stack"]["tasks"]
  members = results["training"]["members"]
  lines = ["| task | rule | OOF AUROC: stack | best member | gain (LCB) | weights |",
           "|---|---|---|---|---|---|"]
  for name, r in tasks.items():
    weights = ", ".join(f"{m} {r['weights'][m]:+.2f}" for m in members)
    lines.append(f"| {name} | {r['rule']} ({r['reason']}) | {_f(r['stack_auroc'])} | "
                 f"{r['best_member']} {_f(r['best_member_auroc'])} | "
                 f"{_f(r['gain'], sign=True)} ({_f(r['gain_lcb'], sign=True)}) | {weights} |")
  lines += ["", "| task | " + " | ".join(f"{m} test AUROC" for m in members)
            + " | used − best member (95% CI) |", "|---|" + "---|" * (len(members) + 1)]
  st = results["stack"]
  for name in tasks:
    d = st["stack_minus_best_member_test"][name]
    lines.append(f"| {name} | " + " | ".join(
        _f(st["members"][m]["test"][name]["auroc"]) for m in members)
        + f" | {_f(d['delta'], sign=True)}{_interval(d['lo'], d['hi'], sign=True)} |")
  return lines


def provenance_lines(results: dict) -> list[str]:
  p = results.get("provenance")
  if not p:
    return ["Not recorded."]
  git = p.get("git", {})
  dirty = {True: " (uncommitted changes)", False: "", None: ""}[git.get("dirty")]
  commit = f"`{git['commit']}`{dirty}" if git.get("commit") else "not a git checkout"
  packages = ", ".join(f"{k} {v or 'absent'}" for k, v in p.get("packages", {}).items())
  return [f"- commit: {commit}", f"- packages: {packages}",
          f"- command: `{' '.join(p.get('argv', []))}`",
          f"- config hash `{results.get('config_hash', '')}`; platform "
          f"{p.get('platform', '')}"]


# ----------------------------------------------------------------------------- plots


def _figure(width_in: float, height_in: float, dpi: int = DPI):
  """A matplotlib Figure (no pyplot: no global backend switch in the caller's process)
  scaled down so that it stays under MAX_PX pixels in both directions."""
  from matplotlib.figure import Figure
  scale = min(1.0, (MAX_PX - 10) / (dpi * max(width_in, height_in)))
  return Figure(figsize=(width_in * scale, height_in * scale), dpi=dpi)


def _save(fig, workdir: str, name: str) -> str:
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=fig.dpi)
  write_atomic(os.path.join(workdir, name), buf.getvalue())
  return name


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
  cols = max(1, min(n, max_cols))
  return math.ceil(n / cols), cols


def pattern_name(p, modality_names: Sequence[str], width: int | None = None) -> str:
  """A pattern by its observed modalities ("labs+notes"), or "all but X" when more than
  half of more than 3 modalities are observed; cut to `width` characters if given."""
  if p == cells.OTHER:
    return "other (pooled)"
  m = len(modality_names)
  missing = [n for i, n in enumerate(modality_names) if not (int(p) >> i) & 1]
  text = pattern_label(p, modality_names)
  if not missing:
    text = "all"
  elif m - len(missing) > len(missing) and m > 3:
    text = "all but " + "+".join(missing)
  return text if width is None or len(text) <= width else text[:width - 1] + "…"


def _curves(test: pl.DataFrame, t: str):
  """(label, y, p) per prediction column of task t present in `test`, known labels only."""
  y = test[f"{t}_label"].to_numpy().astype(float)
  known = ~np.isnan(y)
  for suffix, label in _CURVES:
    col = f"{t}_{suffix}"
    if col in test.columns:
      yield label, y[known], test[col].to_numpy().astype(float)[known]


def roc_plot(workdir: str, results: dict, test: pl.DataFrame) -> str:
  tasks = results["cohort"]["tasks"]
  rows, cols = _grid(len(tasks))
  fig = _figure(4.6 * cols, 4.4 * rows)
  axes = fig.subplots(rows, cols, squeeze=False).ravel()
  for ax, t in zip(axes, tasks):
    for label, y, p in _curves(test, t):
      if len(np.unique(y)) == 2:
        fpr, tpr = metrics_lib.roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1.2, label=f"{label} ({metrics_lib.auroc(y, p):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(title=f"{t}: test ROC", xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(loc="lower right", fontsize=7, title="AUROC", title_fontsize=7)
  for ax in axes[len(tasks):]:
    ax.set_visible(False)
  return _save(fig, workdir, "roc.png")


def calibration_plot(workdir: str, results: dict, test: pl.DataFrame, k: int) -> str:
  """Reliability curves over 10 bins and, underneath, histograms of the predictions;
  bins of fewer than k patients are left out of both."""
  tasks = results["cohort"]["tasks"]
  rows, cols = _grid(len(tasks))
  fig = _figure(4.6 * cols, 5.6 * rows)
  grid = fig.add_gridspec(2 * rows, cols, height_ratios=[3, 1.1] * rows)
  edges = np.linspace(0, 1, 21)
  for i, t in enumerate(tasks):
    r, c = divmod(i, cols)
    ax, hist = fig.add_subplot(grid[2 * r, c]), fig.add_subplot(grid[2 * r + 1, c])
    for j, (label, y, p) in enumerate(_curves(test, t)):
      color = f"C{j}"
      mean_p, frac, count = metrics_lib.calibration_curve(y, p) if len(y) else ([], [], [])
      keep = np.asarray(count) >= k
      ax.plot(np.asarray(mean_p)[keep], np.asarray(frac)[keep], "o-", ms=3, lw=1.2,
              color=color, label=label)
      heights = np.histogram(p, edges)[0].astype(float)
      heights[heights < k] = 0.0
      hist.stairs(heights, edges, color=color, lw=1.0)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(title=f"{t}: test calibration", ylabel="observed fraction", xlim=(0, 1),
           ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=7)
    hist.set(xlabel="predicted probability", ylabel="patients", xlim=(0, 1))
  fig.suptitle(f"bins and bars of fewer than {k} patients are not drawn", fontsize=8)
  return _save(fig, workdir, "calibration.png")


def tau_plot(workdir: str, results: dict, modality_names: Sequence[str]) -> str:
  """τ̂ per pattern (validation, cross-fitted) as horizontal bars, the TOP_PATTERNS
  largest patterns and the pooled rest, with bootstrap intervals where computed (else
  ±1.96·se); faded bars were not corrected."""
  tasks = results["cohort"]["tasks"]
  rect = results["rectifier"]["table"]
  tau = results.get("rectifier_intervals", {}).get("tau_val", {}).get("tasks", {})
  ci = {(t, r["pattern"]): r for t, rows in tau.items() for r in rows}
  per_task = {}
  for t in tasks:
    rows = _by_size([r for r in rect if r["task"] == t])
    named = [r for r in rows if r["pattern"] != cells.OTHER][:TOP_PATTERNS]
    per_task[t] = named + [r for r in rows if r["pattern"] == cells.OTHER]
  n_bars = max([len(v) for v in per_task.values()] + [1])
  rows_, cols = _grid(len(tasks), max_cols=2)
  fig = _figure(8.0 * cols, max(3.0, 0.3 * n_bars + 1.6) * rows_)
  axes = fig.subplots(rows_, cols, squeeze=False).ravel()
  for ax, t in zip(axes, tasks):
    rows = per_task[t]
    y_pos = np.arange(len(rows))[::-1]
    values = [np.nan if r["tau_raw"] is None else r["tau_raw"] for r in rows]
    err = np.zeros((2, len(rows)))
    for i, r in enumerate(rows):
      c = ci.get((t, r["pattern"]), {})
      values[i] = c["tau"] if c.get("tau") is not None else values[i]
      if c.get("lo") is not None and c.get("hi") is not None:
        err[:, i] = values[i] - c["lo"], c["hi"] - values[i]
      elif r.get("se") is not None:
        err[:, i] = 1.96 * r["se"]
    bars = ax.barh(y_pos, values, xerr=np.clip(np.nan_to_num(err), 0, None), capsize=2,
                   color="C0", error_kw={"lw": 0.8})
    for b, r in zip(bars, rows):
      if not r.get("corrected") or r["pattern"] == cells.OTHER:
        b.set_alpha(0.4)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y_pos)
    ax.set_yticklabels([f"{pattern_name(r['pattern'], modality_names, 42)} (n={r['n']})"
                        for r in rows], fontsize=7)
    ax.set(title=f"{t} (validation)", xlabel="τ̂ = mean(y − p)")
  for ax in axes[len(tasks):]:
    ax.set_visible(False)
  fig.suptitle(f"τ̂ per pattern: the {TOP_PATTERNS} largest patterns with at least "
               f"{results.get('min_cell_size', '?')} patients and the pooled rest, 95% "
               f"intervals; faded: not corrected", fontsize=9)
  return _save(fig, workdir, "tau.png")


def learning_history(workdir: str, results: dict) -> dict[str, dict[int, float]]:
  """Per-epoch series (epochs numbered from 1) for the learning curve: the epoch means
  of the training losses and the validation metrics from metrics.jsonl; the validation
  mean AUROC from results.json's training history when metrics.jsonl lacks it."""
  records = []
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          records.append(json.loads(line))
        except ValueError:
          continue        # a torn last line
  one_based = any("kind" in r for r in records)   # older files numbered epochs from 0
  sums: dict[str, dict[int, list[float]]] = {}
  for r in records:
    epoch = int(r.get("epoch", 0)) + (0 if one_based else 1)
    if one_based and r.get("kind") != "epoch":
      continue            # step lines: the epoch lines hold the epoch means
    for key, v in r.items():
      if ((key.startswith("train/") and not key.endswith(("patients_per_s", "grad_norm")))
          or key.startswith("val/")) and isinstance(v, (int, float)) and math.isfinite(v):
        sums.setdefault(key, {}).setdefault(epoch, []).append(float(v))
  series = {k: {e: float(np.mean(v)) for e, v in by.items()} for k, by in sums.items()}
  if "val/mean_auroc" not in series:
    hist = results.get("training", {}).get("history") or []
    if hist:
      base = 0 if min(int(h["epoch"]) for h in hist) >= 1 else 1
      series["val/mean_auroc"] = {int(h["epoch"]) + base: float(h["val_mean_auroc"])
                                  for h in hist if h.get("val_mean_auroc") is not None}
  return series


def learning_curve_plot(workdir: str, results: dict) -> str | None:
  if results.get("training", {}).get("best_epoch") is None:   # fitted without epochs
    return None
  series = learning_history(workdir, results)
  if not series.get("val/mean_auroc"):
    return None
  fig = _figure(11.0, 4.2)
  loss_ax, auc_ax = fig.subplots(1, 2)
  for key, by in sorted(series.items()):
    if key.startswith("train/") or key.endswith("/loss"):
      epochs = sorted(by)
      loss_ax.plot(epochs, [by[e] for e in epochs], marker="o" if len(epochs) < 30 else "",
                   ms=3, lw=1.2, label=key, ls="--" if key.startswith("val/") else "-")
  loss_ax.set(title="losses per epoch (train: epoch means)", xlabel="epoch", ylabel="loss")
  if loss_ax.lines:
    loss_ax.legend(fontsize=7)
  else:
    loss_ax.text(0.5, 0.5, "no training-loss lines in metrics.jsonl\n(train.log_every > steps)",
                 ha="center", va="center", transform=loss_ax.transAxes, fontsize=8)
  for key in sorted(k for k in series if k.startswith("val/") and k.endswith("auroc")):
    by = series[key]
    epochs = sorted(by)
    auc_ax.plot(epochs, [by[e] for e in epochs], "o-", ms=3, lw=1.5 if "mean" in key else 0.8,
                label=key.removeprefix("val/"))
  best = results.get("training", {}).get("best_epoch")
  if isinstance(best, int):
    auc_ax.axvline(best, color="k", lw=0.8, ls=":", label=f"best epoch {best}")
  auc_ax.set(title="validation AUROC per epoch", xlabel="epoch", ylabel="AUROC")
  auc_ax.legend(fontsize=7)
  for ax in (loss_ax, auc_ax):
    ax.xaxis.get_major_locator().set_params(integer=True)
  return _save(fig, workdir, "learning_curve.png")


# ----------------------------------------------------------------------------- report


def write_report(workdir: str, results: dict, predictions: pl.DataFrame,
                 modality_names: Sequence[str], plots: bool = True) -> str:
  """Writes WORKDIR/report.md (and its PNGs) from the suppressed results; returns its
  path. `predictions` may carry `{task}_prob_reference` and `{task}_prob_oracle`."""
  c, tr = results["cohort"], results["training"]
  k = int(results.get("min_cell_size", 1))
  if tr.get("kind") == "stack":
    fitted = f"A stack of {', '.join(tr['members'])}, each cross-fitted on {tr['cv_folds']} folds"
  elif tr.get("best_epoch") is None:    # a direct method: no training loop
    fitted = f"Fitted without a training loop: {tr.get('model', '')} ({tr.get('fitted', {})})"
  else:
    fitted = f"Best epoch {tr['best_epoch']}"
  lines = [f"# {results['method']} on {c['name']} (seed {results['seed']})", ""]
  if results.get("smoke"):
    lines += [f"> **{SMOKE_NOTE}**", ""]
  lines += [f"Cohort: {c['n']} patients (train {c['n_train']}, val {c['n_val']}, test "
            f"{c['n_test']}), fingerprint `{c['fingerprint']}`, modalities "
            f"{', '.join(c['modalities'])}. {fitted} (validation mean AUROC "
            f"{_f(tr['best_val_mean_auroc'], 4)}), {tr['devices']} device(s). Counts below "
            f"{k} are shown as \"<{k}\" and patterns with fewer than {k} patients are "
            f"pooled (docs/report.md).", "",
            "## Provenance", "", *provenance_lines(results), "",
            "## Results", "", *results_table(results), ""]
  if "reference" in results or "oracle" in results:
    lines += ["## Against the reference model and the oracle (test)", "",
              *reference_tables(results), ""]
  if "stack" in results:
    lines += ["## The stack and its members", "", *stack_tables(results), ""]
  if "operating_points" in results:
    op = results["operating_points"]
    lines += ["## Operating points (test)", "",
              f"Flagged when p >= threshold; the last threshold per model reaches "
              f"{op['target_sensitivity']:.0%} sensitivity on the validation patients.", "",
              *operating_table(results), ""]
  lines += ["## Is missingness informative? (train and validation patients)", "",
            *modality_table(results), "",
            f"## Per pattern (test; patterns of at least {k} patients)", "",
            *pattern_table(results, modality_names), "",
            "## Rectifier (fitted on validation only)", "",
            *rectifier_table(results, modality_names), ""]
  if "rectifier_intervals" in results:
    iv = results["rectifier_intervals"]
    lines += ["### Rectified − raw, paired bootstrap (test, all patients)", "",
              *rectifier_bootstrap.report_lines(delta={**iv["delta_test"], "per_pattern": {}}),
              ""]
  if plots:
    test = predictions.filter(pl.col("split") == "test")
    files = [roc_plot(workdir, results, test), calibration_plot(workdir, results, test, k),
             tau_plot(workdir, results, modality_names), learning_curve_plot(workdir, results)]
    lines += ["## Plots", ""] + [f"![{f}]({f})" for f in files if f]
  if results.get("smoke"):
    lines += ["", f"> **{SMOKE_NOTE}**"]
  path = os.path.join(workdir, "report.md")
  write_atomic(path, "\n".join(lines) + "\n")
  return path
