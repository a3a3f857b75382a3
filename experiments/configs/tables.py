r"""Your own cohort in the generic tables layout (docs/design.md, "Contracts").

Run:
  python -m experiments.run --config=tables --config.data.dir=/path/to/cohort \
      --workdir=/tmp/crl_tables
  python -m experiments.run --config=tables:tiny --config.data.dir=/path/to/cohort \
      --workdir=/tmp/crl_tables_tiny     # smoke run: does my folder load and train?

`DIR/labels.parquet`: `patient_id`, one 0/1 column per task (null = unknown), optional
`split` (train/val/test) and `group_id`; `DIR/<modality>.parquet` for every other
parquet file: `patient_id` + numeric feature columns, a row only where the modality was
observed. See docs/tables.md. Expected result: depends on your data;
results.json compares validation and test, with and without the rectifier.

Defaults: the settings tuned on PhysioNet 2012, the largest real cohort searched here
(`physionet2012.tuned`: D = 64, one layer, dropout 0.085, periodic numerical
embeddings, lr 1.3e-3, weight decay 5.3e-5, loss weights miss 0.12 / rec 0.61 / con
0.063, and LightGBM's tuned settings), chosen before checking them elsewhere. Checked
on the YAIB demo cohorts (5 seeds, 14 test deaths per seed, so only noise can be
seen): CRL-MMNAR −0.030 ± 0.062 test AUROC against yaib's earlier hand-set settings,
LightGBM +0.014 ± 0.057 (docs/tuning.md). Search your own cohort with
`python -m experiments.tune --config=tables --config.data.dir=DIR`.

Preset `tiny`: 2 epochs of a D = 32 model, 50 bootstrap draws, no progress bar; on a
few thousand patients, a minute or so on a laptop. It checks that the folder loads
and trains end to end; its metrics mean little. `data.dir` has no default: give it
with `--config.data.dir`.
"""

from experiments.configs import physionet2012
from experiments.configs.base import (
  apply_preset,
  get_base_config,
  neural_search_space,
  search_space,
  tiny,
)


def get_config(arg: str = ""):
  c = get_base_config("tables")   # data.dir, data.tasks: crl_mmnar_jax/config/sources.py
  # Start from the settings tuned on PhysioNet 2012 (module docstring); tune your own
  # cohort with `python -m experiments.tune --config=tables`.
  physionet2012.tuned(c)
  return apply_preset(c, "tables", arg, {"tiny": tiny},
                      hint="; the cohort folder goes in --config.data.dir=DIR")


def get_search_space(method: str = "crl_mmnar") -> dict[str, tuple]:
  """What `python -m experiments.tune --config=tables` searches for `method`
  (docs/tuning.md); a cohort of unknown size: the base space."""
  return search_space(method, neural_search_space(dims=(32, 64, 128, 256), max_layers=3))
