"""The metrics of results.json, from the labels and probabilities of one run.

`evaluate` assembles them per row set ("val": the rows validation predictions are made
for; "test"): task metrics with bootstrap intervals (`with_ci`), per-pattern metrics
with small patterns pooled (`per_pattern`, `cells.py`), the fitted rectifier and its
bootstrap intervals (`rectifier_intervals`), the reference model and the oracle where
there is one, and the paired comparisons of `report.comparisons`. `modality_table`
describes the cohort's modalities. The metrics themselves are `metrics.py`'s.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from crl_mmnar_jax import cells, report
from crl_mmnar_jax import metrics as metrics_lib
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.rectifier import Rectifier
from crl_mmnar_jax.rectifier import bootstrap as rectifier_bootstrap

RowSets = dict[str, np.ndarray]    # "val", "test" -> an array over that set's rows


def with_ci(labels_NxT, probs_NxT, task_names, n_boot: int, seed: int) -> dict:
  """Per task, `metrics.task_metrics` and (n_boot > 0) their 95% bootstrap intervals."""
  out = metrics_lib.task_metrics(labels_NxT, probs_NxT, task_names)
  for t, name in enumerate(task_names):
    if n_boot > 0:
      ci = metrics_lib.bootstrap_ci(labels_NxT[:, t], probs_NxT[:, t], n_boot=n_boot,
                                    seed=seed + t)
      out[name]["ci95"] = {k: [float(lo), float(hi)] for k, (lo, hi) in ci.items()}
  return out


def per_pattern(labels_NxT, probs_NxT, pattern_N, task_names, min_count) -> dict:
  """Per task, the metrics of each pattern with `min_count` known labels, and of the
  smaller patterns pooled into one "other" row (`cells.py`)."""
  out = {}
  for t, name in enumerate(task_names):
    pooled = cells.pool_small_patterns(pattern_N, ~np.isnan(labels_NxT[:, t]), min_count)
    out[name] = cells.label_pooled(metrics_lib.per_pattern_metrics(
        labels_NxT[:, t], probs_NxT[:, t], pooled, min_count=min_count), pattern_N, pooled)
  return out


def modality_table(cohort: Cohort) -> list[dict]:
  """Per modality and task: observed fraction and outcome rate when observed vs not.

  Computed on whatever labels `cohort` holds; `train_and_evaluate` calls it after the
  test labels are sealed, so it describes training and validation patients only.
  """
  rows = []
  for m, name in enumerate(cohort.modality_names):
    obs = cohort.present[:, m]
    for t, task in enumerate(cohort.task_names):
      y = cohort.labels[:, t]
      known = ~np.isnan(y)
      rate = lambda sel: float(y[sel & known].mean()) if (sel & known).any() else None
      rows.append({"modality": name, "task": task, "observed_fraction": float(obs[known].mean()),
                   "n": int(known.sum()), "n_observed": int((obs & known).sum()),
                   "n_not_observed": int((~obs & known).sum()), "rate_observed": rate(obs),
                   "rate_not_observed": rate(~obs)})
  return rows


def rectifier_intervals(labels, probs, rectified, pattern, names, n_boot: int, seed: int,
                        min_count: int) -> dict:
  """Bootstrap intervals of τ̂ per pattern (validation) and paired intervals of
  rectified − raw (test; validation too, which is in-sample for the choice of κ, λ)."""
  def delta(s):
    return rectifier_bootstrap.paired_delta_intervals(
        labels[s], probs[s], rectified[s], pattern[s], n_boot=n_boot, seed=seed,
        task_names=names, min_pattern_count=min_count)
  return {"tau_val": rectifier_bootstrap.tau_intervals(
              probs["val"], labels["val"], pattern["val"], n_boot=n_boot, seed=seed,
              task_names=names),
          "delta_test": delta("test"), "delta_val_in_sample": delta("val")}


def evaluate(labels: RowSets, probs: RowSets, rectified: RowSets, pattern: RowSets,
             rect: Rectifier, reference: dict[str, RowSets], oracle: RowSets | None,
             names: Sequence[str], n_boot: int, seed: int, min_count: int) -> dict[str, Any]:
  """The metric sections of results.json, in their order: metrics, per_pattern,
  rectifier, rectifier_intervals (n_boot > 0), reference, oracle (where given) and
  `report.comparisons`'s. `reference` maps a reference model's name to its
  probabilities; `min_count` is `eval.min_pattern_count`."""
  out: dict[str, Any] = {
      "metrics": {
          "val": with_ci(labels["val"], probs["val"], names, n_boot, seed),
          "val_rectified": with_ci(labels["val"], rectified["val"], names, n_boot, seed),
          "test": with_ci(labels["test"], probs["test"], names, n_boot, seed),
          "test_rectified": with_ci(labels["test"], rectified["test"], names, n_boot, seed),
      },
      "per_pattern": {
          "val": per_pattern(labels["val"], probs["val"], pattern["val"], names, min_count),
          "test": per_pattern(labels["test"], probs["test"], pattern["test"], names,
                              min_count),
          "test_rectified": per_pattern(labels["test"], rectified["test"], pattern["test"],
                                        names, min_count),
      },
      "rectifier": rect.to_dict(),
  }
  if n_boot > 0:
    out["rectifier_intervals"] = rectifier_intervals(
        labels, probs, rectified, pattern, names, int(n_boot), seed, int(min_count))
  for ref_name, ref_probs in reference.items():
    out.setdefault("reference", {})[ref_name] = with_ci(
        labels["test"], ref_probs["test"], names, n_boot, seed)
  if oracle is not None:
    out["oracle"] = {"test": metrics_lib.task_metrics(labels["test"], oracle["test"], names)}
  out.update(report.comparisons(labels, probs, rectified, reference, oracle, names,
                                n_boot=int(n_boot), seed=seed))
  return out


def paired_auroc_draws(labels_N: np.ndarray, base_N: np.ndarray, other_N: np.ndarray,
                       n_boot: int, seed: int) -> np.ndarray:
  """(n_boot,) AUROC(other) − AUROC(base) on the same patient resamples of the rows with
  a known label (`metrics.bootstrap_samples`' protocol; NaN where undefined)."""
  known = ~np.isnan(labels_N)
  a, b = (metrics_lib.bootstrap_samples(labels_N[known], p[known], n_boot=n_boot, seed=seed,
                                        metrics=("auroc",))["auroc"] for p in (base_N, other_N))
  return b - a


def paired_auroc_delta(labels_N: np.ndarray, base_N: np.ndarray, other_N: np.ndarray,
                       n_boot: int, seed: int, alpha: float = 0.05) -> dict[str, Any]:
  """AUROC of `other` minus that of `base` on the same patients, with the percentile
  interval of a paired bootstrap (`paired_auroc_draws`):
  {"base", "other", "delta", "lo", "hi", "n"}; no interval when n_boot is 0."""
  known = ~np.isnan(labels_N)
  y = labels_N[known]
  base, other = metrics_lib.auroc(y, base_N[known]), metrics_lib.auroc(y, other_N[known])
  out = {"base": float(base), "other": float(other), "delta": float(other - base),
         "lo": None, "hi": None, "n": int(known.sum())}
  if n_boot > 0:
    d = paired_auroc_draws(labels_N, base_N, other_N, n_boot, seed)
    d = d[np.isfinite(d)]
    if len(d):
      out["lo"], out["hi"] = (float(q) for q in np.quantile(d, [alpha / 2, 1 - alpha / 2]))
  return out


def stack_members(labels: RowSets, probs: RowSets, member_probs: dict[str, RowSets],
                  member_rectified_test: dict[str, np.ndarray], best_member: Sequence[str],
                  names: Sequence[str], n_boot: int, seed: int) -> dict[str, Any]:
  """The `stack` section of results.json: every member's out-of-fold ("val") and test
  metrics, its test metrics after its own rectifier (fitted on its out-of-fold rows like
  the stack's), and per task the paired test difference stack − best member (the member
  with the best out-of-fold AUROC, `best_member[t]`) with its interval."""
  members = {}
  for name, p in member_probs.items():
    members[name] = {
        "val": metrics_lib.task_metrics(labels["val"], p["val"], names),
        "test": with_ci(labels["test"], p["test"], names, n_boot, seed),
        "test_rectified": metrics_lib.task_metrics(labels["test"],
                                                   member_rectified_test[name], names)}
  versus = {task: dict(paired_auroc_delta(labels["test"][:, t],
                                          member_probs[best_member[t]]["test"][:, t],
                                          probs["test"][:, t], n_boot, seed + t),
                       best_member=best_member[t])
            for t, task in enumerate(names)}
  return {"members": members, "stack_minus_best_member_test": versus}
