r"""Any MEDS dataset with labels in the MEDS label schema (docs/meds.md).

Run:
  python -m experiments.run --config=meds --config.data.meds_root=/path/to/meds_root \
      --config.data.task=/path/to/mortality.parquet --workdir=/tmp/crl_meds
  python -m experiments.run --config=meds:tiny --config.data.meds_root=DIR \
      --config.data.task=a.parquet,b.parquet --workdir=/tmp/crl_meds_tiny   # smoke run

`data.meds_root`: a MEDS root (`data/**/*.parquet` with subject_id, time, code,
numeric_value; `metadata/subject_splits.parquet` used when present: train / tuning /
held_out -> train / val / test); default: the MIMIC-IV demo of the shared data folder.
`data.task`: one or more labels parquet files (subject_id, prediction_time,
boolean_value) or ACES task configs (*.yaml, extracted by aces-cli from
$CRL_MMNAR_ACES; the MIMIC-IV tasks: experiments/configs/aces/), one task each, named
by file stem; one cohort row per (subject, prediction time). Features come from the events strictly before each prediction time
(`data.window_hours` > 0: only that many hours before it), one modality per group of
code prefixes (`data.modalities`, default the MIMIC-IV MEDS ETL's: labs, vitals,
medications, diagnoses, procedures) plus an always-observed demographics modality.

Expected result: depends on your data; results.json compares validation and test, with
and without the rectifier. On the 100-subject MIMIC-IV demo the figures mean nothing
(9 held_out subjects).

Defaults: the travelling defaults of `tables` (docs/travelling.md). Preset `tiny`: 2 epochs
of a D = 32 model, 50 bootstrap draws, no progress bar: does the root load and train
end to end? Its metrics mean little. `data.task` has no default.
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
  c = get_base_config("meds")   # data.meds_root, data.task, ...: crl_mmnar_jax/config/sources.py
  set_fields(c, physionet2012.GBT_TUNED)   # as `tables`: CRL-MMNAR's hand-set defaults
  return apply_preset(c, "meds", arg, {"tiny": tiny},
                      hint="; the labels go in --config.data.task=FILE.parquet")


def get_search_space(method: str = "crl_mmnar") -> dict[str, tuple]:
  """What `python -m experiments.tune --config=meds` searches for `method` (docs/tuning.md);
  a cohort of unknown size: the base space."""
  return search_space(method, neural_search_space(dims=(32, 64, 128, 256), max_layers=3))
