"""The config schema: every config field declared once (default, type, allowed values,
one-line doc), and the configs built from it.

`common.py` declares the fields every config has, `sources.py` each data source's own,
`field.py` what a declaration is, `schema.py` builds and reads configs from them, and
`paths.py` finds the shared data folder (`$CRL_MMNAR_DATA`, else `../shared/data` next
to the repository where it exists). `config_check` checks a config against the schema.
"""

from crl_mmnar_jax.config.common import FIELDS
from crl_mmnar_jax.config.field import Field, SharedData
from crl_mmnar_jax.config.paths import DATA_ENV, shared_data_dir
from crl_mmnar_jax.config.schema import (
  build,
  declared_names,
  default_config,
  field,
  fields_of,
  get_field,
  set_fields,
)
from crl_mmnar_jax.config.sources import SOURCES

__all__ = ["DATA_ENV", "FIELDS", "SOURCES", "Field", "SharedData", "build",
           "declared_names", "default_config", "field", "fields_of", "get_field",
           "set_fields", "shared_data_dir"]
