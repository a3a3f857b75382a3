r"""The learnable ceiling of the synthetic cohort: what its observed data allow.

  python -m experiments.studies.synthetic_ceiling --n_big=500000 --seeds=0,1,2,3,4 \
      --out=docs/synthetic_ceiling.json

The synthetic config's cohort (20,000 patients of world `data.seed`) is what every
method learns from. This script draws a much larger cohort of the SAME world
(`make_synthetic(world_seed=...)`, other patients), fits LightGBM on its observed data
(features with NaN where a modality is missing, plus the missingness indicators; 10%
of the large cohort early-stops it), and scores it on the test patients of the config's
split for each seed — the same patients the runs are scored on. With that many
patients a flexible model comes close to the best function of the observed data, so
its AUROC is the target a method trained on 20,000 patients can approach; the oracle
(the true probabilities, which use the latent state no model sees) is printed beside
it. Expected (n_big = 500,000, 2-core CPU): about 10 minutes.
"""

from __future__ import annotations

import json
import os
import time
from typing import Sequence

import numpy as np
from absl import flags

from crl_mmnar_jax import metrics as metrics_lib
from crl_mmnar_jax.data import load
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.data.splits import make_splits
from experiments.configs import cli, synthetic


def nan_design(features, present_NxM: np.ndarray) -> np.ndarray:
  """[features with NaN where the modality is missing, indicators] (N, F) float32."""
  cols = []
  for m, x in enumerate(features):
    x = np.asarray(x, np.float32).copy()
    x[~present_NxM[:, m]] = np.nan
    cols.append(x)
  return np.concatenate(cols + [present_NxM.astype(np.float32)], axis=1)


def fit_ceiling(x_NxF: np.ndarray, y_NxT: np.ndarray, seed: int, n_rounds: int,
                num_leaves: int, learning_rate: float) -> list:
  """One LightGBM booster per task, early-stopped on the last 10% of the rows."""
  import lightgbm
  n_val = len(x_NxF) // 10
  boosters = []
  for t in range(y_NxT.shape[1]):
    params = {"objective": "binary", "metric": "auc", "learning_rate": learning_rate,
              "num_leaves": num_leaves, "min_data_in_leaf": 50, "seed": seed,
              "deterministic": True, "force_row_wise": True, "verbosity": -1}
    train = lightgbm.Dataset(x_NxF[:-n_val], y_NxT[:-n_val, t])
    val = lightgbm.Dataset(x_NxF[-n_val:], y_NxT[-n_val:, t], reference=train)
    boosters.append(lightgbm.train(params, train, num_boost_round=n_rounds, valid_sets=[val],
                                   callbacks=[lightgbm.early_stopping(100, verbose=False)]))
  return boosters


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  del argv
  flags.DEFINE_integer("n_big", 500_000, "Patients of the same world to fit the ceiling on.",
                       flag_values=fv)
  flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Split seeds (config.seed) whose "
                    "test patients are scored.", flag_values=fv)
  flags.DEFINE_integer("n_rounds", 4000, "Most boosting rounds.", flag_values=fv)
  flags.DEFINE_integer("num_leaves", 63, "LightGBM leaves per tree.", flag_values=fv)
  flags.DEFINE_float("learning_rate", 0.05, "LightGBM learning rate.", flag_values=fv)
  flags.DEFINE_string("out", "", "Write the figures to this JSON file.", flag_values=fv)


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> dict:
  cli.no_positional(argv)
  config = synthetic.get_config()
  d = config.data
  world = int(d.seed) if d.world_seed < 0 else int(d.world_seed)
  start = time.perf_counter()
  big = make_synthetic(int(fv.n_big), n_modalities=int(d.n_modalities),
                       n_tasks=int(d.n_tasks), mechanism=str(d.mechanism),
                       prevalence=float(d.prevalence),
                       pattern_effect=None if d.pattern_effect < 0 else float(d.pattern_effect),
                       seed=world + 1_000_003, world_seed=world)
  boosters = fit_ceiling(nan_design(big.cohort.features, big.cohort.present),
                         big.cohort.labels, 0, int(fv.n_rounds), int(fv.num_leaves),
                         float(fv.learning_rate))
  del big
  loaded = load(config)
  cohort, names = loaded.cohort, loaded.cohort.task_names
  x = nan_design(cohort.features, cohort.present)
  probs = np.stack([b.predict(x, num_iteration=b.best_iteration or None) for b in boosters], 1)
  rows = []
  for s in fv.seeds:
    config.seed = int(s)
    test = np.flatnonzero(make_splits(config, cohort, loaded.test_mask_N) == "test")
    y = cohort.labels[test]
    ceiling = metrics_lib.task_metrics(y, probs[test], names)
    oracle = metrics_lib.task_metrics(y, loaded.true_prob_NxT[test], names)
    rows.append({"seed": int(s), "n_test": int(len(test)),
                 "ceiling": {t: ceiling[t]["auroc"] for t in [*names, "mean"]},
                 "oracle": {t: oracle[t]["auroc"] for t in [*names, "mean"]}})
  out = {"n_big": int(fv.n_big), "world_seed": world,
         "trees": [int(b.best_iteration) for b in boosters], "per_seed": rows,
         "ceiling_mean_auroc": float(np.mean([r["ceiling"]["mean"] for r in rows])),
         "oracle_mean_auroc": float(np.mean([r["oracle"]["mean"] for r in rows])),
         "seconds": time.perf_counter() - start}
  print("| seed | test n | ceiling (LightGBM, n_big) | oracle (true probabilities) |")
  print("|---|---|---|---|")
  for r in rows:
    print(f"| {r['seed']} | {r['n_test']} | {r['ceiling']['mean']:.4f} | "
          f"{r['oracle']['mean']:.4f} |")
  print(f"mean test AUROC over seeds: ceiling {out['ceiling_mean_auroc']:.4f}, oracle "
        f"{out['oracle_mean_auroc']:.4f} ({out['seconds']:.0f} s)")
  if fv.out:
    os.makedirs(os.path.dirname(os.path.abspath(fv.out)), exist_ok=True)
    with open(fv.out, "w") as f:
      json.dump(out, f, indent=2)
  return out


SCRIPT = cli.Script(main, define_flags, __doc__)

if __name__ == "__main__":
  SCRIPT.run()
