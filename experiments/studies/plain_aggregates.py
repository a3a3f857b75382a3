r"""The featuriser against the simplest peer: LightGBM on plain per-variable aggregates.

  python -m experiments.studies.plain_aggregates --seeds=0,1,2,3,4 \
      --out=docs/plain_aggregates.json

On PhysioNet 2012 (`--config=physionet2012`'s data and splits, one split per seed),
compares two LightGBM models with identical settings (`config.baseline.gbt_*`, early
stopping on the validation split):

* **plain**: per record, for every time-series variable, the last, mean, min and max
  value and the number of measurements, plus the descriptors (age, gender, height, ICU
  type, weight); -1 (the challenge's "not recorded") and empty values are missing.
  Written here from the raw files, independently of the library's loader;
* **project**: `--config.method=gbt`, the project's features (`data/featurize.py`).

It prints the test AUROC per seed and the paired difference (project − plain). If
plain wins, the featuriser loses information a tree model can use. docs/plain_aggregates.md
has the figures and what closed the gap.

Both models run LightGBM on one thread (`OMP_NUM_THREADS=1` unless set): its results
depend slightly on the thread count, and on a loaded machine OpenMP's spinning threads
make a multi-threaded fit of this small table many times slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")   # before LightGBM's OpenMP starts

import glob
import json
import tempfile
from typing import Sequence

import numpy as np
import polars as pl
from absl import flags

from crl_mmnar_jax import data as data_lib
from crl_mmnar_jax import metrics as metrics_lib
from crl_mmnar_jax.data.io import write_atomic
from crl_mmnar_jax.data.splits import make_splits
from crl_mmnar_jax.experiment import train_and_evaluate
from experiments.configs import cli, physionet2012

DESCRIPTORS = ("Age", "Gender", "Height", "ICUType", "Weight")


def plain_aggregates(directory: str) -> pl.DataFrame:
  """One row per record: descriptors and last/mean/min/max/count per variable."""
  frames = []
  for path in sorted(glob.glob(os.path.join(directory, "set-*", "*.txt"))):
    df = pl.read_csv(path, schema={"Time": pl.String, "Parameter": pl.String,
                                   "Value": pl.Float64})
    rid = int(df.filter(pl.col("Parameter") == "RecordID")["Value"][0])
    frames.append(df.with_columns(pl.lit(rid).alias("record_id")))
  events = pl.concat(frames).filter(pl.col("Parameter").is_not_null()
                                    & (pl.col("Parameter") != "RecordID")
                                    & (pl.col("Value") != -1))
  events = events.with_columns(
      (pl.col("Time").str.slice(0, 2).cast(pl.Int32) * 60
       + pl.col("Time").str.slice(3, 2).cast(pl.Int32)).alias("minute"))
  desc = (events.filter(pl.col("Parameter").is_in(DESCRIPTORS))
          .sort("minute").group_by("record_id", "Parameter").agg(pl.col("Value").first())
          .pivot(on="Parameter", index="record_id", values="Value"))
  series = events.filter(~pl.col("Parameter").is_in(DESCRIPTORS))
  agg = (series.sort("minute").group_by("record_id", "Parameter").agg(
      pl.col("Value").last().alias("last"), pl.col("Value").mean().alias("mean"),
      pl.col("Value").min().alias("min"), pl.col("Value").max().alias("max"),
      pl.len().cast(pl.Float64).alias("count"))
         .pivot(on="Parameter", index="record_id", values=["last", "mean", "min", "max", "count"]))
  out = desc.join(agg, on="record_id", how="full", coalesce=True)
  counts = [c for c in out.columns if c.startswith("count")]
  return out.with_columns(pl.col(counts).fill_null(0.0))


def fit_lightgbm(x_tr, y_tr, x_va, y_va, b, seed: int):
  import lightgbm
  params = {"objective": "binary", "metric": "auc", "learning_rate": float(b.gbt_learning_rate),
            "num_leaves": int(b.gbt_num_leaves), "min_data_in_leaf": int(b.gbt_min_child_samples),
            "seed": seed, "deterministic": True, "force_row_wise": True, "verbosity": -1}
  train = lightgbm.Dataset(x_tr, y_tr)
  booster = lightgbm.train(params, train, num_boost_round=int(b.gbt_n_estimators),
                           valid_sets=[lightgbm.Dataset(x_va, y_va, reference=train)],
                           callbacks=[lightgbm.early_stopping(int(b.gbt_early_stopping),
                                                              verbose=False)])
  return booster


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  del argv
  flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Split seeds.", flag_values=fv)
  flags.DEFINE_string("out", "", "Write the figures to this JSON file.", flag_values=fv)


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> dict:
  cli.no_positional(argv)
  config = physionet2012.get_config()
  config.eval.plots = False
  loaded = data_lib.load(config)
  cohort = loaded.cohort
  table = plain_aggregates(str(config.data.dir))
  ids = pl.DataFrame({"record_id": cohort.patient_id.astype(np.int64)})
  x = ids.join(table, on="record_id", how="left").drop("record_id").to_numpy().astype(np.float32)
  y = cohort.labels[:, 0]
  rows = []
  for s in fv.seeds:
    config.seed = int(s)
    split = make_splits(config, cohort, loaded.test_mask_N)
    tr, va, te = (np.flatnonzero(split == k) for k in ("train", "val", "test"))
    booster = fit_lightgbm(x[tr], y[tr], x[va], y[va], config.baseline, int(s))
    plain = metrics_lib.auroc(y[te], booster.predict(x[te], num_iteration=booster.best_iteration))
    gbt = config.copy_and_resolve_references()
    gbt.method = "gbt"
    gbt.eval.update(n_boot=0, reference_logreg=False)   # the point AUROC only
    with tempfile.TemporaryDirectory() as workdir:
      results = train_and_evaluate(gbt, workdir, log=lambda m: None)
    project = results["metrics"]["test"]["mean"]["auroc"]
    rows.append({"seed": int(s), "plain": float(plain), "project": float(project),
                 "project_minus_plain": float(project - plain),
                 "plain_features": int(x.shape[1]),
                 "plain_trees": int(booster.best_iteration)})
    print(f"seed {s}: plain {plain:.4f}, project {project:.4f}, "
          f"difference {project - plain:+.4f}")
  d = np.array([r["project_minus_plain"] for r in rows])
  out = {"per_seed": rows, "plain_mean": float(np.mean([r["plain"] for r in rows])),
         "project_mean": float(np.mean([r["project"] for r in rows])),
         "difference_mean": float(d.mean()),
         "difference_sd": float(d.std(ddof=1)) if len(d) > 1 else None}
  print(f"mean test AUROC: plain {out['plain_mean']:.4f}, project {out['project_mean']:.4f}; "
        f"project − plain {out['difference_mean']:+.4f} ± {out['difference_sd'] or 0:.4f} (sd)")
  if fv.out:
    write_atomic(fv.out, json.dumps(out, indent=2) + "\n")
  return out


SCRIPT = cli.Script(main, define_flags, __doc__)

if __name__ == "__main__":
  SCRIPT.run()
