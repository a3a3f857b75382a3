r"""Your own cohort in the generic tables layout (DESIGN.md section 5).

Run:
  python -m experiments.run --config=tables --config.data.dir=/path/to/cohort \
      --workdir=/tmp/crl_tables

`DIR/labels.parquet`: `patient_id`, one 0/1 column per task (null = unknown), optional
`split` (train/val/test) and `group_id`; `DIR/<modality>.parquet` for every other
parquet file: `patient_id` + numeric feature columns, a row only where the modality was
observed. See the README section "Your own data". Expected result: depends on your data;
results.json compares validation and test, with and without the rectifier.
"""

from experiments.configs.base import get_base_config


def get_config(arg: str = ""):
  c = get_base_config()
  c.data.name = "tables"
  c.data.dir = arg or ""
  c.data.tasks = ""        # comma-separated subset of label columns ("" = all)
  return c
