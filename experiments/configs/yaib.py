r"""YAIB `mortality24` demo cohorts: MIMIC-III demo (99 stays) and eICU demo (1,367 stays).

Run (both databases pooled, random split):
  python -m experiments.run --config=yaib --workdir=/tmp/crl_yaib
External validation (train and validate on eICU, test on MIMIC):
  python -m experiments.run --config=yaib --config.data.test_database=mimic_demo \
      --workdir=/tmp/crl_yaib_ext

Modalities: static (age, sex, height, weight; always observed) and ten virtual
modalities of the 48 hourly variables of the first 24 h (see `crl_mmnar_jax/data/sources/yaib.py`),
the same feature space in both databases. Task: death (`mortality24`). These are demo
cohorts: with 91 deaths in total, every interval is wide; seed 0 gives test AUROC 0.77
[0.58, 0.93] pooled and 0.71 [0.57, 0.83] external (about 1.5 minutes each). They
exist to exercise real harmonised data from two databases, not to rank methods.

Preset `tiny` (smoke runs): the same cohorts, 2 epochs of a D = 32 model, 50 bootstrap
draws, no progress bar:
  python -m experiments.run --config=yaib:tiny --workdir=/tmp/crl_yaib_tiny
About 45 seconds of CPU on a 2-core machine; seed 0: test AUROC 0.64 (2 epochs, against
0.77 above).
"""

import os

from experiments.configs.base import (
  SHARED_DATA,
  apply_preset,
  get_base_config,
  neural_search_space,
  search_space,
  tiny,
)


def get_config(arg: str = ""):
  c = get_base_config()
  c.data.name = "yaib"
  c.data.dir = os.path.normpath(os.path.join(SHARED_DATA, "yaib-demo"))
  c.data.databases = "mimic_demo,eicu_demo"
  c.data.strict = False      # True: refuse imperfect rows (file:line) instead of counting
  c.data.task = "mortality24"
  c.data.window_hours = 24.0
  c.data.test_database = ""   # e.g. "mimic_demo": external validation
  c.data.val_fraction = 0.2
  c.data.test_fraction = 0.2
  c.model.dim = 64
  c.model.dropout = 0.2
  c.train.batch_size = 64
  c.train.epochs = 40
  c.train.patience = 8
  c.train.warmup_steps = 20
  c.train.lr = 5e-4
  c.rectifier.min_count = 30
  c.eval.min_pattern_count = 30
  return apply_preset(c, "yaib", arg, {"tiny": tiny})


def get_search_space(method: str = "crl_mmnar") -> dict[str, tuple]:
  """What `python -m experiments.tune --config=yaib` searches for `method`
  (docs/tuning.md); about 900 training stays of the demo cohorts: D <= 128, <= 2 layers."""
  return search_space(method, neural_search_space(dims=(32, 64, 128), max_layers=2))
