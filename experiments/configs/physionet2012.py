r"""PhysioNet/CinC Challenge 2012: in-hospital mortality from the first 48 h of an ICU stay.

Run (set A from ../shared/data, random patient-level split; getting the data: docs/data.md):
  python -m experiments.run --config=physionet2012 --workdir=/tmp/crl_p12

The challenge's protocol when you have sets A, B and C (train and validate on A and B,
test on C):
  python -m experiments.run --config=physionet2012 --config.data.dir=/path/to/p12 \
      --config.data.train_sets=a,b --config.data.test_sets=c --workdir=/tmp/crl_p12_abc

Defaults: tuned. `python -m experiments.tune --config=physionet2012 --trials=30` (Optuna
TPE, median pruning, seed 0's validation stays only) chose D = 64, one fusion layer,
dropout 0.085, periodic numerical embeddings, lr 1.3e-3, weight decay 5.3e-5 and loss
weights miss 0.12 / rec 0.61 / con 0.063; the same 30-trial search for
`--config.method=gbt` set the `baseline.gbt_*` values below (docs/tuning.md). Expected
on set A, 5 seeds (docs/cohorts.md): CRL-MMNAR 0.840 ± 0.016 test AUROC as one model
and 0.849 ± 0.016 with --config.train.cv_folds=5; LightGBM 0.850 ± 0.020 and 0.859 ±
0.015. About 1.5 minutes per seed on a 2-core CPU (7 with cv_folds=5).

Modalities: the descriptors (always observed) and about ten virtual modalities of the
37 time series grouped by what a clinician orders together (see
`crl_mmnar_jax/data/sources/physionet2012.py`); each variable summarised by last, mean, min, max,
sd, count, time of last measurement and slope. Tasks: `in_hospital_death` (add
`los_gt_7` with --config.data.tasks=in_hospital_death,los_gt_7). Set A: 4,000 records,
3,997 with time series, 554 deaths; 600 test stays per seed.

Preset `tiny` (smoke runs): the same data, 2 epochs of a D = 32 model, 50 bootstrap
draws, no progress bar:
  python -m experiments.run --config=physionet2012:tiny --workdir=/tmp/crl_p12_tiny
About a minute of CPU on a 2-core machine, much of it reading and featurising set A;
2 epochs are far from converged (its AUROC means nothing, against 0.84-0.86 above).
"""

from experiments.configs.base import (
  apply_preset,
  get_base_config,
  neural_search_space,
  search_space,
  set_fields,
  tiny,
)


def get_config(arg: str = ""):
  c = get_base_config("physionet2012")   # data.*: crl_mmnar_jax/config/sources.py
  # 12 modalities and 2,800 training stays: a narrow model (D = 64, found by the search
  # too) is plenty.
  c.model.mlp_ratio = 2
  c.model.proj_dim = 32
  c.train.epochs = 40
  c.train.patience = 8
  c.train.warmup_steps = 50
  tuned(c)
  return apply_preset(c, "physionet2012", arg, {"tiny": tiny})


# The settings the searches found on set A (module docstring, docs/tuning.md): the best
# of 30 Optuna trials on seed 0's validation stays for CRL-MMNAR and, with the same
# budget, for LightGBM (--config.method=gbt). `tables` starts from them too.
TUNED = {
    "model.dim": 64,
    "model.n_layers": 1,
    "model.dropout": 0.085,
    "model.num_embedding": "periodic",
    "train.lr": 1.3e-3,
    "train.weight_decay": 5.3e-5,
    "loss.miss": 0.12,
    "loss.rec": 0.61,
    "loss.con": 0.063,
    "baseline.gbt_num_leaves": 22,
    "baseline.gbt_learning_rate": 0.015,
    "baseline.gbt_min_child_samples": 5,
    "baseline.gbt_feature_fraction": 0.66,
    "baseline.gbt_lambda_l2": 0.038,
}


GBT_TUNED = {k: v for k, v in TUNED.items() if k.startswith("baseline.gbt_")}


def tuned(c) -> None:
  """Sets the `TUNED` fields."""
  set_fields(c, TUNED)


def get_search_space(method: str = "crl_mmnar") -> dict[str, tuple]:
  """What `python -m experiments.tune --config=physionet2012` searches for `method`
  (docs/tuning.md); 2,800 training stays and 12 modalities: D <= 128, <= 2 layers."""
  return search_space(method, neural_search_space(dims=(32, 64, 128), max_layers=2))
