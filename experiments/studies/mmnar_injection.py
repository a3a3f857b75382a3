r"""MMNAR injection experiment: does the rectifier recover a known effect?

  python -m experiments.studies.mmnar_injection --workdir=/tmp/injection_run \
      [--strengths=0,1,2,3] [--seeds=3] [--n=6000] [--methods=crl_mmnar] [--effect=0.1] \
      [--config=injection[:tiny]] [--config.train.epochs=10] [--dry_run]

For every strength s and seed k: a synthetic cohort with random (MCAR) missingness
(`make_synthetic(n, mechanism="mcar", seed=k)`, no pattern effect) gets severity-driven
drops of modalities 1-3 (`injection.inject_mmnar`, drop probability
sigmoid(a_m + s · severity), mean `--drop_rate`; s = 0 is MCAR) and a direct effect
`--effect` (probability scale, every task) on the pattern `--target_pattern` (default 1:
only modality 0 left). The cohort is written as a tables directory
(`DIR/s{s}/seed{k}/data`, plus `truth.parquet` with the true probabilities before and
after the effect) and every method is trained on it through
`experiment.train_and_evaluate` into `DIR/s{s}/seed{k}/{method}` (a finished run, i.e.
one with `results.json`, is reused). Two predictors that need no training are added on
the same splits and written in the same format: `logreg_reference` (the logistic
regression with mean imputation and missingness indicators of `baselines.py`, plus the
rectifier fitted on its validation predictions) and `blind_oracle` (the true
probabilities before the effect: blind to it by construction, so its rectifier τ̂ should
equal the injected effect).

Outputs in DIR: `injection.md` (tables), `injection.csv` (one row per strength, seed,
method and task), `injection.json` and `injection.png` (AUROC gain of crl_mmnar over the
logistic regression vs strength; τ̂ vs the true effect).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Sequence

import numpy as np
import polars as pl
from absl import flags, logging
from ml_collections import config_flags

from experiments.configs import CONFIG_DIR, cli
from experiments.sweep import fmt, mean_sd

DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "injection.py")
REFERENCE = "logreg_reference"
ORACLE = "blind_oracle"
MAIN_METHOD = "crl_mmnar"


@dataclasses.dataclass(frozen=True)
class Setting:
  """What is injected (identical for every strength and seed of one experiment)."""

  n: int = 6000
  drop_modalities: tuple[int, ...] = (1, 2, 3)
  drop_rate: float = 0.3
  target_pattern: int = 1
  effect: float = 0.1


@dataclasses.dataclass(frozen=True)
class Cell:
  """One (strength, seed) cohort."""

  strength: float
  seed: int

  def dir(self, workdir: str) -> str:
    return os.path.join(workdir, f"s{self.strength:g}", f"seed{self.seed}")


def plan(strengths: Sequence[float], seeds: int) -> list[Cell]:
  """Seed-major, so that an interrupted run holds whole strength sweeps."""
  return [Cell(float(s), k) for k in range(seeds) for s in strengths]


# ----------------------------------------------------------------------------- cohorts


def make_cohort(cell: Cell, setting: Setting, cell_dir: str) -> str:
  """Writes the injected cohort (tables) and its truth once; returns the data dir."""
  from crl_mmnar_jax.data.sources.injection import inject_mmnar
  from crl_mmnar_jax.data.sources.synthetic import make_synthetic
  from crl_mmnar_jax.data.sources.tables import write_tables
  data_dir = os.path.join(cell_dir, "data")
  stamp_path = os.path.join(cell_dir, "injection.json")
  stamp = {"strength": cell.strength, "seed": cell.seed, **dataclasses.asdict(setting)}
  stamp["drop_modalities"] = list(setting.drop_modalities)
  if os.path.exists(stamp_path):
    with open(stamp_path) as f:
      old = json.load(f)
    if {k: old.get(k) for k in stamp} != stamp:
      raise ValueError(f"{cell_dir} holds a cohort injected with other settings "
                       f"({ {k: old.get(k) for k in stamp} }, not {stamp}); use a new "
                       "--workdir")
    return data_dir
  syn = make_synthetic(setting.n, mechanism="mcar", seed=cell.seed)
  inj = inject_mmnar(syn.cohort, syn.severity_N, modalities=setting.drop_modalities,
                     strength=cell.strength, drop_rate=setting.drop_rate,
                     target_pattern=setting.target_pattern, effect=setting.effect,
                     true_prob_NxT=syn.true_prob_NxT, seed=cell.seed)
  write_tables(inj.cohort, data_dir)
  truth = {"patient_id": inj.cohort.patient_id, "target": inj.target_N}
  for t, task in enumerate(inj.cohort.task_names):
    truth[f"{task}_base_prob"] = syn.true_prob_NxT[:, t]
    truth[f"{task}_true_prob"] = inj.true_prob_NxT[:, t]
  pl.DataFrame(truth).write_parquet(os.path.join(cell_dir, "truth.parquet"))
  stamp["effect_T"] = inj.effect_T.tolist()
  stamp["target_count"] = int(inj.target_N.sum())
  with open(stamp_path, "w") as f:
    json.dump(stamp, f, indent=2)
  return data_dir


def run_config(base, data_dir: str, seed: int, method: str):
  config = base.copy_and_resolve_references()
  config.data.dir = data_dir
  config.seed = seed
  config.method = method
  return config


# ----------------------------------------------------------------------------- predictors


def _write_run(out_dir: str, frame: pl.DataFrame, rect, method: str, cohort) -> None:
  """predictions.parquet + results.json in the format of `train_and_evaluate`."""
  from crl_mmnar_jax import metrics as metrics_lib
  from crl_mmnar_jax.data.io import write_atomic, write_parquet_atomic
  tasks = cohort.task_names
  os.makedirs(out_dir, exist_ok=True)
  frame = frame.with_columns([pl.col(f"{t}_label").fill_nan(None) for t in tasks])
  test = frame.filter(pl.col("split") == "test")
  labels = np.stack([test[f"{t}_label"].fill_null(np.nan).to_numpy() for t in tasks], 1)
  metrics = {key: metrics_lib.task_metrics(
      labels, np.stack([test[f"{t}_{col}"].to_numpy() for t in tasks], 1), tasks)
             for key, col in (("test", "prob"), ("test_rectified", "prob_rectified"))}
  results = {"method": method, "metrics": metrics, "rectifier": rect.to_dict(),
             "cohort": {"tasks": list(tasks), "modalities": list(cohort.modality_names)}}
  write_parquet_atomic(frame, os.path.join(out_dir, "predictions.parquet"))
  write_atomic(os.path.join(out_dir, "results.json"), json.dumps(results, indent=2))


def untrained_predictors(config, cell_dir: str) -> None:
  """`logreg_reference` and `blind_oracle` on the splits `train_and_evaluate` uses."""
  from crl_mmnar_jax import data as data_lib
  from crl_mmnar_jax import rectifier as rectifier_lib
  from crl_mmnar_jax.data.splits import make_splits
  from crl_mmnar_jax.data.standardize import standardize
  from crl_mmnar_jax.methods.direct import logreg_mean_impute
  todo = [m for m in (REFERENCE, ORACLE)
          if not os.path.exists(os.path.join(cell_dir, m, "results.json"))]
  if not todo:
    return
  loaded = data_lib.load(config)
  cohort = loaded.cohort.validate(config.data.name)
  split = make_splits(config, cohort, loaded.test_mask_N)
  rows = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
  sealed = cohort.labels.copy()
  sealed[rows["test"]] = np.nan                   # nothing below fits on test labels
  hidden = dataclasses.replace(cohort, labels=sealed)
  truth = pl.DataFrame({"patient_id": cohort.patient_id}).join(
      pl.read_parquet(os.path.join(cell_dir, "truth.parquet")), on="patient_id",
      how="left", maintain_order="left")
  tasks = cohort.task_names
  probs = {ORACLE: np.stack([truth[f"{t}_base_prob"].to_numpy() for t in tasks], 1)}
  if REFERENCE in todo:
    std, _ = standardize(hidden, rows["train"])
    ref = logreg_mean_impute(std, rows["train"], rows["val"],
                             {"val": rows["val"], "test": rows["test"]})
    if isinstance(ref, tuple):                    # newer signature: (probs, chosen L2)
      ref = ref[0]
    probs[REFERENCE] = np.zeros((cohort.n, len(tasks)), np.float32)
    for s in ("val", "test"):
      probs[REFERENCE][rows[s]] = ref[s]
  r = config.rectifier
  for method in todo:
    p_NxT = probs[method]
    rect = rectifier_lib.fit(
        p_NxT[rows["val"]], sealed[rows["val"]], cohort.pattern[rows["val"]],
        n_folds=int(r.n_folds), kappa_grid=tuple(r.kappa_grid),
        lambda_grid=tuple(r.lambda_grid), z=float(r.z), min_count=int(r.min_count),
        shrinkage=float(r.shrinkage), seed=int(config.seed), task_names=tasks)
    order = np.concatenate([rows["val"], rows["test"]])
    rectified = np.concatenate([rect.oof_probs_NxT,
                                rect.apply(p_NxT[rows["test"]], cohort.pattern[rows["test"]])])
    frame = {"patient_id": cohort.patient_id[order], "split": split[order].astype(str),
             "pattern_id": cohort.pattern[order].astype(np.int32)}
    for t, task in enumerate(tasks):
      frame[f"{task}_label"] = cohort.labels[order, t]
      frame[f"{task}_prob"] = p_NxT[order, t].astype(np.float32)
      frame[f"{task}_prob_rectified"] = rectified[:, t].astype(np.float32)
    _write_run(os.path.join(cell_dir, method), pl.DataFrame(frame), rect, method, cohort)


# ----------------------------------------------------------------------------- analysis


def run_rows(run_dir: str, truth: pl.DataFrame, target: int, cell: Cell,
             method: str) -> list[dict[str, Any]]:
  """Per task: test AUROC and Brier (plain, rectified) and the target pattern's numbers."""
  from crl_mmnar_jax import metrics as metrics_lib
  with open(os.path.join(run_dir, "results.json")) as f:
    results = json.load(f)
  rect = results["rectifier"]
  table = {(r["pattern"], r["task"]): r for r in rect["table"]}
  pred = pl.read_parquet(os.path.join(run_dir, "predictions.parquet")).join(
      truth, on="patient_id", how="left")
  out = []
  for task in rect["task_names"]:
    row: dict[str, Any] = {"strength": cell.strength, "seed": cell.seed, "method": method,
                           "task": task}
    for split in ("val", "test"):
      d = pred.filter((pl.col("split") == split) & pl.col(f"{task}_label").is_not_null())
      y, p = d[f"{task}_label"].to_numpy(), d[f"{task}_prob"].to_numpy()
      on = d["pattern_id"].to_numpy() == target
      effect_N = d[f"{task}_true_prob"].to_numpy() - d[f"{task}_base_prob"].to_numpy()
      row[f"n_target_{split}"] = int(on.sum())
      row[f"truth_{split}"] = float(effect_N[on].mean()) if on.any() else None
      if split == "test":
        q = d[f"{task}_prob_rectified"].to_numpy()
        row["auroc"] = float(metrics_lib.auroc(y, p))
        row["auroc_rectified"] = float(metrics_lib.auroc(y, q))
        row["brier"] = float(metrics_lib.brier(y, p))
        row["brier_rectified"] = float(metrics_lib.brier(y, q))
        row["resid_test"] = float(np.mean(y[on] - p[on])) if on.any() else None
        row["resid_test_rectified"] = float(np.mean(y[on] - q[on])) if on.any() else None
    fitted = table.get((target, task), {})
    row["tau"] = fitted.get("tau_raw")
    row["se"] = fitted.get("se")
    row["shift"] = fitted.get("shift")
    row["lambda"] = rect["lambda"][task]
    out.append(row)
  return out


def collect(workdir: str, cells: Sequence[Cell], methods: Sequence[str],
            target: int) -> list[dict[str, Any]]:
  rows = []
  for cell in cells:
    cell_dir = cell.dir(workdir)
    truth = pl.read_parquet(os.path.join(cell_dir, "truth.parquet"))
    for method in list(methods) + [REFERENCE, ORACLE]:
      rows.extend(run_rows(os.path.join(cell_dir, method), truth, target, cell, method))
  return rows


def _task_means(rows: list[dict], key: str) -> dict[tuple, float]:
  """(strength, seed, method) -> mean over tasks of rows[key]."""
  acc: dict[tuple, list] = {}
  for r in rows:
    acc.setdefault((r["strength"], r["seed"], r["method"]), []).append(r[key])
  return {k: float(np.mean([np.nan if x is None else x for x in v])) for k, v in acc.items()}


def _baselines(methods: Sequence[str]) -> list[str]:
  """What crl_mmnar's gain is measured against: every other method and the reference
  (the blind oracle is a ceiling, not a baseline)."""
  if MAIN_METHOD not in methods:
    return []
  return [m for m in methods if m != MAIN_METHOD] + [REFERENCE]


def summarize(rows: list[dict], methods: Sequence[str]) -> dict[str, Any]:
  """Per strength: AUROC per method (mean ± sd over seeds), gains, target-pattern τ̂."""
  strengths = sorted({r["strength"] for r in rows})
  all_methods = list(methods) + [REFERENCE, ORACLE]
  auc, auc_r = _task_means(rows, "auroc"), _task_means(rows, "auroc_rectified")
  out: dict[str, Any] = {"auroc": [], "target": []}
  for s in strengths:
    seeds = sorted({r["seed"] for r in rows if r["strength"] == s})
    entry: dict[str, Any] = {"strength": s, "seeds": len(seeds)}
    for m in all_methods:
      entry[m] = mean_sd([auc[(s, k, m)] for k in seeds])
      entry[f"{m}+rect"] = mean_sd([auc_r[(s, k, m)] for k in seeds])
    for m in _baselines(methods):
      entry[f"gain_vs_{m}"] = mean_sd([auc[(s, k, MAIN_METHOD)] - auc[(s, k, m)]
                                        for k in seeds])
      entry[f"gain_rect_vs_{m}"] = mean_sd(
          [auc_r[(s, k, MAIN_METHOD)] - auc_r[(s, k, m)] for k in seeds])
    out["auroc"].append(entry)
    for m in all_methods:
      sel = [r for r in rows if r["strength"] == s and r["method"] == m]
      z = [(r["tau"] - r["truth_val"]) / r["se"] for r in sel
           if r["tau"] is not None and r["se"]]
      out["target"].append({
          "strength": s, "method": m, "cells": len(sel),
          "truth_val": mean_sd([r["truth_val"] for r in sel])[0],
          "tau": mean_sd([r["tau"] for r in sel]),
          "se": mean_sd([r["se"] for r in sel])[0],
          "within_2se": float(np.mean(np.abs(z) < 2)) if z else float("nan"),
          "shift": mean_sd([r["shift"] for r in sel])[0],
          "resid_test": mean_sd([r["resid_test"] for r in sel]),
          "resid_test_rectified": mean_sd([r["resid_test_rectified"] for r in sel]),
      })
  return out


def markdown(summary: dict, methods: Sequence[str], setting: Setting, command: str) -> str:
  all_methods = list(methods) + [REFERENCE, ORACLE]
  others = _baselines(methods)
  lines = [
      "# MMNAR injection", "",
      f"`{command}`", "",
      f"Synthetic MCAR cohorts of {setting.n} patients; modalities "
      f"{list(setting.drop_modalities)} dropped with mean probability {setting.drop_rate} "
      f"and logit slope `strength` on the standardised severity (0 = MCAR); direct effect "
      f"{setting.effect:+g} (probability scale, every task) on pattern "
      f"{setting.target_pattern}. Test AUROC is the mean over tasks; ± is the sd over "
      "seeds. Gains are crl_mmnar minus the baseline, per seed. blind_oracle (the true "
      "probabilities before the effect) is a ceiling that is blind to the effect.", "",
      "## Test AUROC (mean over tasks)", "",
      "| strength | seeds | " + " | ".join(f"{m} | {m} + rect" for m in all_methods)
      + "".join(f" | gain vs {m}" for m in others) + " |",
      "|---|---|" + "---|---|" * len(all_methods) + "---|" * len(others),
  ]
  for e in summary["auroc"]:
    cells = " | ".join(f"{fmt(e[m])} | {fmt(e[m + '+rect'])}" for m in all_methods)
    gains = "".join(f" | {fmt(e['gain_vs_' + m])}" for m in others)
    lines.append(f"| {e['strength']:g} | {e['seeds']} | {cells}{gains} |")
  lines += [
      "", f"## Target pattern {setting.target_pattern}: τ̂ vs the injected effect", "",
      "Means over seeds × tasks. truth = mean injected shift over the validation "
      "patients of the pattern (what an effect-blind τ̂ estimates); τ̂ = the rectifier's "
      "cross-fitted mean residual on validation (± sd over seeds × tasks), se its mean "
      "standard error, 'within 2 se' the fraction of cells with |τ̂ − truth| < 2 se; shift "
      "= the correction applied (λ·τ after shrinkage and gating); residual = mean(y − p) "
      "over the pattern's test patients, before and after the rectifier.", "",
      "| strength | method | truth | τ̂ | se | within 2 se | applied shift | test residual "
      "| residual rectified |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for e in summary["target"]:
    lines.append(
        f"| {e['strength']:g} | {e['method']} | {e['truth_val']:.3f} | {fmt(e['tau'])} | "
        f"{e['se']:.3f} | {e['within_2se']:.2f} | {e['shift']:+.3f} | "
        f"{fmt(e['resid_test'])} | {fmt(e['resid_test_rectified'])} |")
  return "\n".join(lines) + "\n"


def plot(summary: dict, methods: Sequence[str], path: str) -> None:
  from matplotlib.figure import Figure
  fig = Figure(figsize=(10, 4))
  left, right = fig.subplots(1, 2)
  strengths = [e["strength"] for e in summary["auroc"]]
  for m in _baselines(methods):
    for key, style in ((f"gain_vs_{m}", "-o"), (f"gain_rect_vs_{m}", "--s")):
      mean, sd = np.array([e[key] for e in summary["auroc"]]).T
      left.errorbar(strengths, mean, yerr=np.nan_to_num(sd), fmt=style, capsize=3,
                    label=f"vs {m}" + (" (both rectified)" if "rect" in key else ""))
  left.axhline(0.0, color="grey", lw=0.8)
  left.set(xlabel="strength (0 = MCAR)", ylabel=f"test AUROC gain of {MAIN_METHOD}",
           title="Gain over baselines")
  left.legend(fontsize=7)
  for i, m in enumerate(list(methods) + [REFERENCE, ORACLE]):
    sel = [e for e in summary["target"] if e["method"] == m]
    x = np.array([e["strength"] for e in sel]) + 0.06 * (i - 1)
    right.errorbar(x, [e["tau"][0] for e in sel], yerr=[2 * e["se"] for e in sel],
                   fmt="o", capsize=3, label=f"{m} τ̂ ± 2 se")
  truth = [e for e in summary["target"] if e["method"] == ORACLE]
  right.plot([e["strength"] for e in truth], [e["truth_val"] for e in truth], "k--",
             label="true effect")
  right.axhline(0.0, color="grey", lw=0.8)
  right.set(xlabel="strength (0 = MCAR)", ylabel="τ̂ on the target pattern",
            title="Rectifier τ̂ vs the injected effect")
  right.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def write_outputs(workdir: str, rows: list[dict], methods: Sequence[str], setting: Setting,
                  command: str) -> dict:
  summary = summarize(rows, methods)
  with open(os.path.join(workdir, "injection.md"), "w") as f:
    f.write(markdown(summary, methods, setting, command))
  pl.DataFrame(rows, infer_schema_length=None).write_csv(
      os.path.join(workdir, "injection.csv"))
  payload = {"command": command, "setting": dataclasses.asdict(setting),
             "methods": list(methods), "summary": summary, "rows": rows}
  with open(os.path.join(workdir, "injection.json"), "w") as f:
    json.dump(payload, f, indent=2, default=float)
  plot(summary, methods, os.path.join(workdir, "injection.png"))
  return summary


# ----------------------------------------------------------------------------- driver


def run_experiment(workdir: str, cells: Sequence[Cell], methods: Sequence[str],
                   setting: Setting, base_config, log=print) -> list[dict]:
  """Builds every cohort, trains every method (reusing finished runs), returns the rows."""
  from crl_mmnar_jax.experiment import train_and_evaluate
  for cell in cells:
    cell_dir = cell.dir(workdir)
    os.makedirs(cell_dir, exist_ok=True)
    data_dir = make_cohort(cell, setting, cell_dir)
    for method in methods:
      run_dir = os.path.join(cell_dir, method)
      if os.path.exists(os.path.join(run_dir, "results.json")):
        log(f"reusing {run_dir}")
        continue
      log(f"training {run_dir}")
      train_and_evaluate(run_config(base_config, data_dir, cell.seed, method), run_dir,
                         log=lambda s: None)
    untrained_predictors(run_config(base_config, data_dir, cell.seed, MAIN_METHOD), cell_dir)
  return collect(workdir, cells, methods, setting.target_pattern)


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  """The flags of `experiments.studies.mmnar_injection` on `fv`; `argv` is the command
  line, where the config flag reads its `--config.a.b=value` overrides."""
  config_flags.DEFINE_config_file(
      "config", DEFAULT_CONFIG, "Model/training settings: NAME[:PRESET] of "
      "experiments/configs/ (configs/injection.py).", flag_values=fv, sys_argv=list(argv))
  flags.DEFINE_string("workdir", None, "Output directory (rerun = reuse).", flag_values=fv,
                      required=True)
  flags.DEFINE_list("strengths", ["0", "1", "2", "3"], "Drop-logit slopes.", flag_values=fv)
  flags.DEFINE_integer("seeds", 3, "Seeds 0..K-1 (cohort, split and training).",
                       flag_values=fv)
  flags.DEFINE_integer("n", Setting.n, "Patients per cohort.", flag_values=fv)
  flags.DEFINE_list("methods", [MAIN_METHOD], "config.method values to train.",
                    flag_values=fv)
  flags.DEFINE_float("effect", Setting.effect, "Injected effect (probability).",
                     flag_values=fv)
  flags.DEFINE_integer("target_pattern", Setting.target_pattern, "Pattern id.",
                       flag_values=fv)
  flags.DEFINE_float("drop_rate", Setting.drop_rate, "Mean drop probability.",
                     flag_values=fv)
  flags.DEFINE_list("drop_modalities", ["1", "2", "3"], "Modalities to drop from.",
                    flag_values=fv)
  flags.DEFINE_bool("dry_run", False, "Print the planned runs and exit.", flag_values=fv)


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> None:
  cli.no_positional(argv)
  logging.set_verbosity(logging.WARNING)
  try:
    cells = plan([float(s) for s in fv.strengths], fv.seeds)
    setting = Setting(n=fv.n, drop_modalities=tuple(int(m) for m in fv.drop_modalities),
                      drop_rate=fv.drop_rate, target_pattern=fv.target_pattern,
                      effect=fv.effect)
  except ValueError as e:
    sys.exit(f"error: bad flag value: {e}")
  methods, workdir = list(fv.methods), fv.workdir
  if not methods:
    sys.exit("error: --methods must name at least one method")
  if fv.dry_run:
    for cell in cells:
      for m in methods + [REFERENCE, ORACLE]:
        run_dir = os.path.join(cell.dir(workdir), m)
        done = os.path.exists(os.path.join(run_dir, "results.json"))
        print(f"strength={cell.strength:g} seed={cell.seed} method={m} -> {run_dir}"
              + (" (done)" if done else ""))
    return
  os.makedirs(workdir, exist_ok=True)
  try:
    rows = run_experiment(workdir, cells, methods, setting, fv.config)
  except ValueError as e:
    sys.exit(f"error: {e}")
  write_outputs(workdir, rows, methods, setting,
                cli.command_line("experiments.studies.mmnar_injection", argv, fv))
  with open(os.path.join(workdir, "injection.md")) as f:
    print(f.read())


SCRIPT = cli.Script(main, define_flags, __doc__, config_file=True)

if __name__ == "__main__":
  SCRIPT.run()
