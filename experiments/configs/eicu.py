r"""eICU-CRD v2.0 from its raw tables (credentialed: bring your own copy).

Run:
  python -m experiments.run --config=eicu --config.data.dir=/path/to/eicu-crd/2.0 \
      --config.data.cache_dir=/tmp/eicu_cache --workdir=/tmp/crl_eicu

Cohort: adults, first unit stay per patient (`uniquepid`, the split unit), still in the
unit and alive at the end of the window. Features
come from the first `data.window_hours` (24) hours of the unit stay, in ten virtual
modalities: demographics (always observed), periodic vitals, aperiodic vitals,
laboratory, medications, infusions, intake/output, diagnoses, treatments and
respiratory care, microbiology (see `crl_mmnar_jax/data/sources/eicu.py`). Tasks: in-hospital
`mortality`, `icu_readmission` (a return to an ICU in the same hospital stay at least
4 h after the unit episode ends; transfers are not returns), and
optionally `hospital_readmission` (a later hospital stay of the same patient; no dates in
eICU, so no 30-day window). `data.cache_dir` keeps each extraction stage as parquet so
a rerun skips finished stages; empty means a fresh temporary folder. Expected result: depends on
your copy; there is no shared copy of the full database to report numbers from. The
YAIB eICU demo (`--config=yaib`) runs on the open demo data.

Preset `tiny` (smoke run of the whole pipeline on your copy): the full extraction, then
2 epochs of a D = 32 model, 50 bootstrap draws, no progress bar:
  python -m experiments.run --config=eicu:tiny --config.data.dir=/path/to/eicu-crd/2.0 \
      --config.data.cache_dir=/tmp/eicu_cache --workdir=/tmp/crl_eicu_tiny
The extraction dominates (minutes on the full database; a rerun with the same
`data.cache_dir` skips it); the metrics of 2 epochs are below the full run's.
"""

from experiments.configs.base import apply_preset, get_base_config, tiny


def get_config(arg: str = ""):
  c = get_base_config("eicu")   # data.*: crl_mmnar_jax/config/sources.py
  c.model.dim = 64          # ten modalities: see the PhysioNet config for the cost
  c.model.mlp_ratio = 2
  c.model.proj_dim = 32
  c.train.lr = 5e-4
  return apply_preset(c, "eicu", arg, {"tiny": tiny})
