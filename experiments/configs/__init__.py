"""Configs for `python -m experiments.run --config=NAME[:ARGS]`, one file per NAME.

`METHODS` lists every name `--config.method=NAME` accepts (CRL-MMNAR and the baselines,
`crl_mmnar_jax/methods.py`). `resolve_config_argv` turns `--config=NAME[:ARGS]` into the
file path ml_collections reads (shared by `run`, `sweep` and `mmnar_injection`).
"""

import os
import sys

from crl_mmnar_jax.methods import METHODS

__all__ = ["CONFIG_DIR", "METHODS", "available_configs", "resolve_config_argv"]

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
_NOT_CONFIGS = {"__init__", "base"}


def available_configs() -> list[str]:
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                if f.endswith(".py") and f[:-3] not in _NOT_CONFIGS)


def resolve_config_argv(argv: list[str]) -> list[str]:
  """Turns --config=NAME[:ARGS] into the path ml_collections expects; an unknown NAME
  exits with one line listing the available ones."""
  out = []
  for a in argv:
    if a.startswith("--config="):
      name, sep, args = a.split("=", 1)[1].partition(":")
      if not name.endswith(".py"):
        if name not in available_configs():
          sys.exit(f"error: unknown config {name!r}; available: "
                   f"{', '.join(available_configs())}")
        a = f"--config={os.path.join(CONFIG_DIR, name + '.py')}{sep}{args}"
    out.append(a)
  return out
