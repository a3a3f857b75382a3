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

Defaults that travel (docs/travelling.md): CRL-MMNAR's hand-set schema defaults (D = 128,
one fusion layer, dropout 0.1, no numerical embeddings, lr 2e-4, weight decay 1e-4,
loss weights miss 0.5 / rec 1.0 / con 0.3) with the wide path (`model.wide`), chosen by
`python -m experiments.studies.travelling` over four simulated cohorts (MCAR and MNAR,
nonlinearity 0 to 1, 5,000 and 20,000 patients) against PhysioNet 2012's tuned settings,
the defaults before; then checked on six other simulated cohorts, never used in
choosing: above logistic regression + indicators on every one (paired over 5 seeds).
LightGBM keeps PhysioNet 2012's tuned settings (`baseline.gbt_*`, not re-chosen).
Search your own cohort with `python -m experiments.tune --config=tables --config.data.dir=DIR`.

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
  set_fields,
  tiny,
)


def get_config(arg: str = ""):
  c = get_base_config("tables")   # data.dir, data.tasks: crl_mmnar_jax/config/sources.py
  # The schema's hand-set settings travel better than PhysioNet's tuned ones (module
  # docstring); LightGBM keeps PhysioNet's.
  set_fields(c, physionet2012.GBT_TUNED)
  return apply_preset(c, "tables", arg, {"tiny": tiny},
                      hint="; the cohort folder goes in --config.data.dir=DIR")


def get_search_space(method: str = "crl_mmnar") -> dict[str, tuple]:
  """What `python -m experiments.tune --config=tables` searches for `method`
  (docs/tuning.md); a cohort of unknown size: the base space."""
  return search_space(method, neural_search_space(dims=(32, 64, 128, 256), max_layers=3))
