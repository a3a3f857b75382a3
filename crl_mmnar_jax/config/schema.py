"""The config built and read from the declarations: the fields of a data source's
config, every config's defaults (`default_config`), dotted-field access.

A config is an `ml_collections.ConfigDict` holding every field the code reads: the
fields every config has (`common.FIELDS`) and those of its data source
(`sources.SOURCES[config.data.name]`). The command line's configs
(`experiments/configs/`) start from `default_config(source)` and override some values,
`config_check` checks each field against its declaration, and the code reads
`config.section.key` directly.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import ml_collections

from crl_mmnar_jax.config.common import FIELDS
from crl_mmnar_jax.config.field import Field
from crl_mmnar_jax.config.sources import SOURCES


def fields_of(source: str = "") -> tuple[Field, ...]:
  """The fields of a config of data source `source`: those every config has, then the
  source's own (none for "" or an unknown source)."""
  return FIELDS + SOURCES.get(source, ())


def declared_names() -> set[str]:
  """Every dotted name the schema declares, for any data source."""
  return {f.name for f in FIELDS} | {f.name for fs in SOURCES.values() for f in fs}


def field(name: str, source: str = "") -> Field:
  """The declaration of `name` in a config of data source `source`; KeyError(name) if
  there is none."""
  for f in fields_of(source):
    if f.name == name:
      return f
  raise KeyError(name)


def build(fields: Iterable[Field]) -> ml_collections.ConfigDict:
  """A ConfigDict holding each field's default (sections made as needed)."""
  config = ml_collections.ConfigDict()
  for f in fields:
    *parents, key = f.name.split(".")
    node = config
    for p in parents:
      if p not in node:
        node[p] = ml_collections.ConfigDict()
      node = node[p]
    node[key] = f.default_value()
  return config


def default_config(source: str = "") -> ml_collections.ConfigDict:
  """Every field's default for a run on data source `source` ("synthetic", "tables",
  ...; `data.name` is set to it), or the fields every config has for "" (no source
  chosen). An unknown source raises a one-line ValueError naming the known ones."""
  if source and source not in SOURCES:
    raise ValueError(f"unknown data source {source!r} (known: {', '.join(SOURCES)})")
  config = build(fields_of(source))
  config.data.name = source
  return config


def get_field(config: ml_collections.ConfigDict, name: str) -> Any:
  """The value of a dotted field ("model.dim"); KeyError(name) if the config lacks it."""
  node = config
  for key in name.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or key not in node:
      raise KeyError(name)
    node = node[key]
  return node


def set_fields(config: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
  """Sets dotted fields ("model.dim": 64, ...): a config's tuned settings, a trial's."""
  for name, value in values.items():
    *parents, key = name.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[key] = value
