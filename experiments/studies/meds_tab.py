r"""MEDS-Tab (tabularised features + XGBoost), the MEDS community's baseline, on a MEDS root.

  python -m experiments.studies.meds_tab --meds_root=/work/runs/meds_synth_5000 \
      --labels=/work/runs/meds_synth_5000/labels/task0.parquet \
      --workdir=/work/runs/meds_tab_synth --meds_tab_bin=/work/venv-medstab/bin

MEDS-Tab (PyPI `meds-tab`, tested at 0.2.0) pins optuna < 3: it lives in its own venv
(`python3 -m venv ~/venv-medstab && ~/venv-medstab/bin/pip install meds-tab`) and runs
only through its executables, in `--meds_tab_bin=DIR` or `$CRL_MMNAR_MEDS_TAB`.

In WORKDIR: the root's events, resharded by its `metadata/subject_splits.parquet` into
`meds/data/{train,tuning,held_out}/<k>.parquet` (MEDS-Tab reads the split from the
folder); then `meds-tab-describe`, `-tabularize-static`, `-tabularize-time-series`,
`-cache-task` and `meds-tab-xgboost --multirun`: MEDS-Tab's Optuna sweep of its XGBoost
space (`--n_trials`, one at a time, TPE seeded), each trial trained on train and
early-stopped on tuning, the best tuning AUROC picking the trial; held_out only scores.
Settings: MEDS-Tab's aggregations (less those the data feeds no feature, e.g. static
ones without static codes), `min_code_inclusion_count` 10, window `full`: all history,
which in a `meds_synthetic` root lies in the 48 h before the prediction (real data:
MEDS-Tab's `1d,7d,30d,365d,full`). Logs: WORKDIR/logs/.

`--strictly_before` (default): MEDS-Tab reads events at or before a prediction time, this
project strictly before; MEDS-Tab's labels are moved 1 us earlier (predictions written
back at the true times). `--fix_meds_tab_bugs` (default) runs the time-series step with
three bugs of meds-tab 0.2.0 corrected in memory: `value/*` aggregations empty (codes
compared with feature names), `value/min|max` of every window piled into a shard's first
row (scipy's 1-D sparse min/max), and the last event of every timestamp dropped (an
off-by-one when events are merged per time). MEDS-Tab's semantics are otherwise kept
(min/max count absent events as 0). As released it sees only code counts.

Writes WORKDIR/meds_tab.json (held_out AUROC, null for one class; MEDS-Tab's own tuning
and held_out AUROC; rows, settings, seconds per step) and WORKDIR/meds_predictions/<task>
.parquet (held_out rows, MEDS prediction schema). Expected: `meds_synthetic --n=5000`
(mnar, seed 0), task0, 20 trials: about 2 minutes on a 2-core CPU, held_out AUROC 0.79-0.81
(3 runs: MEDS-Tab's row order is not seeded, so reruns differ); as released 0.71."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Sequence

import polars as pl
from absl import flags

from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.sources import meds, meds_root
from crl_mmnar_jax.data.sources.mimic.meds import scan_meds
from crl_mmnar_jax.metrics import auroc
from experiments.configs import cli

ENV_VAR = "CRL_MMNAR_MEDS_TAB"
STEPS = ("meds-tab-describe", "meds-tab-tabularize-static", "meds-tab-tabularize-time-series",
         "meds-tab-cache-task", "meds-tab-xgboost")
PREDICTION_COLUMNS = meds.PREDICTION_COLUMNS       # what it writes, as a `meds` run does
MEDS_TAB_AGGS = ("static/present,static/first,code/count,value/count,value/sum,"
                 "value/sum_sqd,value/min,value/max")
# python -c FIX EXECUTABLE ARGS... in MEDS-Tab's venv: the three fixes, then the executable.
FIX = """import runpy, sys
import numpy as np, polars as pl
import MEDS_tabular_automl.generate_summarized_reps as r
import MEDS_tabular_automl.generate_ts_features as g
def long_values(df, ts_columns):
  index = {g.feature_name_to_code(c): i for i, c in enumerate(ts_columns)}
  v = (df.with_row_index("index").drop_nulls("numeric_value")
       .filter(pl.col("code").is_in(list(index))).collect())
  return v["numeric_value"].to_numpy(), (v["index"].to_numpy(),
         v["code"].replace_strict(index, return_dtype=pl.Int64).to_numpy())
released = r.sparse_aggregate
def aggregate(m, agg):
  out = released(m, agg)
  return np.asarray(out.toarray()).ravel() if agg in ("min", "max") else out
def compute_agg(index_df, matrix, window_size, agg, num_features, label_df=None, use_tqdm=False):
  times = (index_df.with_row_index("index").group_by(["subject_id", "time"], maintain_order=True)
           .agg(pl.col("index").min().alias("min_index"),
                (pl.col("index").max() + 1).alias("max_index")).collect())
  matrix = r.aggregate_matrix(times.select("min_index", "max_index"), matrix, agg, num_features)
  windows = r.get_rolling_window_indicies(times.lazy().select("subject_id", "time"), window_size,
                                          label_df)
  return r.aggregate_matrix(windows, matrix, agg, num_features)
g.get_long_value_df, r.sparse_aggregate, r.compute_agg = long_values, aggregate, compute_agg
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def find_bin(flag: str) -> str:
  """The folder with MEDS-Tab's executables (`--meds_tab_bin`, else $CRL_MMNAR_MEDS_TAB)."""
  folder = os.path.expanduser(flag or os.environ.get(ENV_VAR, ""))
  hint = "the bin folder of a venv with `pip install meds-tab` (it pins optuna<3)"
  if not folder:
    raise DataError(f"MEDS-Tab not found: give --meds_tab_bin=DIR or set ${ENV_VAR} to {hint}")
  missing = [s for s in STEPS if not os.access(os.path.join(folder, s), os.X_OK)]
  if missing:
    raise DataError(f"{folder}: no executable {missing[0]} (--meds_tab_bin / ${ENV_VAR}: {hint})")
  return os.path.abspath(folder)


def reshard(root: str, splits: pl.DataFrame, out: str, per_shard: int) -> None:
  """The root's events as out/data/<split>/<k>.parquet, sorted by subject and time."""
  events = (scan_meds(os.path.join(root, "data")).collect()
            .join(splits, on="subject_id", how="inner")
            .with_columns(((pl.col("subject_id").rank("dense").over("split") - 1) // per_shard)
                          .alias("shard"))
            .select("subject_id", pl.col("time").cast(pl.Datetime("us")), "code",
                    pl.col("value").cast(pl.Float32).alias("numeric_value"), "split", "shard"))
  for (split, shard), part in events.group_by("split", "shard"):
    os.makedirs(os.path.join(out, "data", split), exist_ok=True)
    part.drop("split", "shard").sort("subject_id", "time", nulls_last=False).write_parquet(
        os.path.join(out, "data", split, f"{shard}.parquet"))


def usable_aggs(codes_parquet: str, aggs: list[str], min_count: int) -> list[str]:
  """`aggs` less those no described feature (count >= min_count) feeds, e.g. static/*."""
  kinds = {c.split("/")[-1] if c.endswith(("/code", "/value")) else "/".join(c.split("/")[-2:])
           for c in pl.read_parquet(codes_parquet).filter(pl.col("count") >= min_count)["code"]}
  return [a for a in aggs if (a if a.startswith("static/") else a.split("/")[0]) in kinds]


def run_step(cmd: list[str], log: str) -> float:
  """Runs one MEDS-Tab command (output to `log`); a failure is one line."""
  start = time.perf_counter()
  with open(log, "w") as f:
    code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False,
                          env={k: v for k, v in os.environ.items()
                               if k not in ("PYTHONPATH", "PYTHONHOME")}).returncode
  if code != 0:
    with open(log) as f:
      lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("Set the environ")]
    errors = [ln for ln in lines if "Error" in ln.split(":")[0] or "Exception" in ln]
    raise DataError(f"{os.path.basename(cmd[3] if cmd[1] == '-c' else cmd[0])} failed (exit "
                    f"{code}): {(errors or lines or ['no output'])[-1]} (log: {log})")
  return round(time.perf_counter() - start, 1)


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  del argv
  for name, help_ in (("meds_root", "A MEDS root with metadata/subject_splits.parquet."),
                      ("labels", "One labels parquet (MEDS label schema)."),
                      ("workdir", "Where MEDS-Tab's data, models and logs go."),
                      ("meds_tab_bin", f"MEDS-Tab's bin folder (default ${ENV_VAR}).")):
    flags.DEFINE_string(name, "", help_, flag_values=fv)
  flags.DEFINE_list("window_sizes", ["full"], "MEDS-Tab windows.", flag_values=fv)
  flags.DEFINE_list("aggs", MEDS_TAB_AGGS.split(","), "MEDS-Tab aggregations.", flag_values=fv)
  for name, default, help_ in (
      ("min_code_inclusion_count", 10, "Codes seen fewer times are dropped."),
      ("n_trials", 20, "Optuna trials of MEDS-Tab's XGBoost sweep."),
      ("seed", 0, "Seed of the sweep's TPE sampler."),
      ("subjects_per_shard", 10_000, "Subjects per resharded shard.")):
    flags.DEFINE_integer(name, default, help_, flag_values=fv)
  flags.DEFINE_bool("strictly_before", True, "Give MEDS-Tab the events strictly before "
                    "each prediction time (as this project reads them).", flag_values=fv)
  flags.DEFINE_bool("fix_meds_tab_bugs", True, "Correct three meds-tab 0.2.0 bugs of the "
                    "time-series step in memory (see above).", flag_values=fv)


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> dict:
  cli.no_positional(argv)
  try:
    return run(fv)
  except DataError as e:
    sys.exit(f"error: {e}")


def run(fv: flags.FlagValues) -> dict:
  for name in ("meds_root", "labels", "workdir"):
    if not getattr(fv, name):
      raise DataError(f"--{name} is required (--help lists the flags)")
  bin_dir = find_bin(fv.meds_tab_bin)
  with open(os.path.join(bin_dir, STEPS[0])) as f:
    python = f.readline()[2:].strip()      # MEDS-Tab's interpreter (its executables' #!)
  root, work = os.path.abspath(fv.meds_root), os.path.abspath(fv.workdir)
  if not os.path.isdir(os.path.join(root, "data")):
    raise DataError(f"{root}: no data/ folder (a MEDS root holds data/**/*.parquet)")
  labels, (task,) = meds.read_labels([fv.labels])
  labels = labels.filter(pl.col(task).is_not_null())
  split_N = meds_root.read_splits(root, labels["subject_id"])     # train / val / test per row
  if split_N is None:
    raise DataError(f"{root}/{meds_root.SPLITS_FILE}: not found (MEDS-Tab needs the splits)")
  splits = pl.read_parquet(os.path.join(root, meds_root.SPLITS_FILE)).select(
      pl.col("subject_id").cast(pl.Int64), "split")
  for sub in ("meds", "tab", f"labels/{task}", "model", "logs", "meds_predictions"):
    shutil.rmtree(os.path.join(work, sub), ignore_errors=True)     # a previous run's
    os.makedirs(os.path.join(work, sub))
  start = time.perf_counter()
  reshard(root, splits, os.path.join(work, "meds"), int(fv.subjects_per_shard))
  shift = pl.duration(microseconds=1 if fv.strictly_before else 0)
  labels.select("subject_id", pl.col("prediction_time") - shift,
                pl.col(task).cast(pl.Boolean).alias("boolean_value")).write_parquet(
      os.path.join(work, "labels", task, "0.parquet"))
  common = [f"input_dir={work}/meds/data", f"output_dir={work}/tab"]
  seconds, tab = {"reshard": round(time.perf_counter() - start, 1)}, []
  sweep = ["--multirun", f"output_model_dir={work}/model", f"task_name={task}",
           f"hydra.sweeper.n_trials={int(fv.n_trials)}", "hydra.sweeper.n_jobs=1",
           f"hydra.sweeper.sampler.seed={int(fv.seed)}", "hydra.launcher.n_jobs=1"]
  for step, extra in zip(STEPS, ([], [], [], [f"input_label_dir={work}/labels/{task}",
                                              f"task_name={task}"], sweep)):
    cmd = [os.path.join(bin_dir, step), *extra, *common, *tab]
    if step == "meds-tab-tabularize-time-series" and fv.fix_meds_tab_bugs:
      cmd = [python, "-c", FIX, *cmd]
    seconds[step] = run_step(cmd, os.path.join(work, "logs", step[len("meds-tab-"):] + ".log"))
    if step == STEPS[0]:      # the aggregations the described codes feed
      aggs = usable_aggs(os.path.join(work, "tab", "metadata", "codes.parquet"),
                         list(fv.aggs), int(fv.min_code_inclusion_count))
      tab = [f"tabularization.min_code_inclusion_count={int(fv.min_code_inclusion_count)}",
             f"tabularization.window_sizes=[{','.join(fv.window_sizes)}]",
             f"tabularization.aggs=[{','.join(aggs)}]"]
  best = sorted(glob.glob(os.path.join(work, "model", "*", "best_trial")))[-1:] or [work]
  if not os.path.isfile(os.path.join(best[-1], "held_out_predictions.parquet")):
    raise DataError(f"{work}/model: meds-tab-xgboost wrote no best_trial/held_out_predictions"
                    f".parquet (log: {work}/logs/xgboost.log)")
  perf = pl.read_csv(os.path.join(best[-1], "performance.log"))
  pred = (pl.read_parquet(os.path.join(best[-1], "held_out_predictions.parquet"))
          .with_columns(pl.col("prediction_time") + shift).select(PREDICTION_COLUMNS)
          .sort("subject_id", "prediction_time"))
  pred.write_parquet(os.path.join(work, "meds_predictions", f"{task}.parquet"))
  version = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version("
                            "'meds-tab'))"], capture_output=True, text=True, check=False)
  out = {"task": task, "meds_root": root, "labels": os.path.abspath(fv.labels),
         "meds_tab_version": version.stdout.strip() or "unknown",
         "held_out_auroc": float(auroc(pred["boolean_value"].cast(pl.Float64).to_numpy(),
                                       pred["predicted_boolean_probability"].to_numpy())),
         "meds_tab_tuning_auroc": float(perf["tuning_auc"][0]),
         "meds_tab_held_out_auroc": float(perf["test_auc"][0]),
         "rows": {s: int((split_N == v).sum()) for s, v in meds_root.SPLITS.items()},
         "held_out_predicted": len(pred),
         "settings": {"window_sizes": list(fv.window_sizes), "aggs": aggs,
                      **{k: fv[k].value for k in ("min_code_inclusion_count", "n_trials", "seed",
                                                  "strictly_before", "fix_meds_tab_bugs")}},
         "seconds": {**seconds, "total": round(time.perf_counter() - start, 1)}}
  if out["held_out_auroc"] != out["held_out_auroc"]:     # NaN: one class (MEDS-Tab says 0.0)
    out["held_out_auroc"] = None
  with open(os.path.join(work, "meds_tab.json"), "w") as f:
    json.dump(out, f, indent=2)
  print(f"MEDS-Tab {out['meds_tab_version']} on {task}: held_out AUROC {out['held_out_auroc']} "
        f"({len(pred)} of {out['rows']['held_out']} rows; tuning {out['meds_tab_tuning_auroc']})"
        f", {out['seconds']['total']} s: {work}/meds_tab.json")
  return out


SCRIPT = cli.Script(main, define_flags, __doc__)

if __name__ == "__main__":
  SCRIPT.run()
