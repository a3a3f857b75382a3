"""Every setting checked in one place, before anything is read or written.

`check_config(config)` raises `ConfigError` with one line naming the field, its value and
what is allowed. Each field is checked against its declaration in the schema
(`crl_mmnar_jax.config`: type, range or choices), the fields every config has and those
of its data source (`data.name`), and then the relations between fields (heads divide
the width, the validation and test fractions leave training rows). What needs the data
(task and set names, folders) is checked by the loaders, which know their files.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import ml_collections

from crl_mmnar_jax.config import fields_of

_MISSING = object()


class ConfigError(ValueError):
  """A setting out of range; the message names the field (`--config.a.b`)."""


def _get(config: ml_collections.ConfigDict, name: str) -> Any:
  node = config
  for key in name.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or key not in node:
      return _MISSING
    node = node[key]
  return node


def _fail(name: str, value: Any, what: str) -> None:
  raise ConfigError(f"--config.{name}={value!r}: must be {what}")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` naming the first bad field, or a field the config lacks."""
  source = _get(config, "data.name")
  values = {}
  for f in fields_of(source if isinstance(source, str) else ""):
    value = _get(config, f.name)
    if value is _MISSING:
      raise ConfigError(f"--config.{f.name}: missing; every config has it "
                        f"({f.doc}; default {f.default_value()!r})")
    if not f.allows(value):
      _fail(f.name, value, f.allowed())
    values[f.name] = value
  if values["model.dim"] % values["model.n_heads"]:
    _fail("model.n_heads", values["model.n_heads"],
          f"a divisor of model.dim={values['model.dim']}")
  if values["data.val_fraction"] + values["data.test_fraction"] >= 1.0:
    _fail("data.val_fraction", values["data.val_fraction"],
          f"below 1 - data.test_fraction={values['data.test_fraction']} (no rows "
          f"would be left for training)")
  if values["train.tensorboard"] and importlib.util.find_spec("tensorboardX") is None:
    _fail("train.tensorboard", True, "False unless tensorboardX is installed "
          "(pip install -e '.[tensorboard]')")
  if values["train.cv_folds"] > 1 and values["train.data_shards"] > 1:
    _fail("train.cv_folds", values["train.cv_folds"],
          "1 with train.data_shards > 1 (each member standardises every training row)")
