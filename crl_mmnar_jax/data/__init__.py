"""Data sources by name, and preprocessing whose statistics come from training rows only.

`load(config)` reads the cohort `config.data.name` names (`registry`: the table of
sources; `loaded`: what a source hands over); `sources/` holds one module per released
data layout, `splits`, `shards`, `standardize` and the others the steps after loading.
"""

from __future__ import annotations

from crl_mmnar_jax.data.loaded import Keep, LoadedData, Loader
from crl_mmnar_jax.data.registry import SOURCES, get_source, load, reuse_loaded

__all__ = ["Keep", "LoadedData", "Loader", "SOURCES", "get_source", "load", "reuse_loaded"]
