"""Configs for `python -m experiments.run --config=NAME[:PRESET]`, one file per NAME.

Every config accepts the preset `tiny` (`--config=NAME:tiny`): a smoke run of a few
epochs of a small model, without the progress bar and with few bootstrap draws; an
unknown preset stops with one line naming the known ones (`base.apply_preset`). Each
file's docstring says how to run it and what to expect.

`METHODS` lists every name `--config.method=NAME` accepts (CRL-MMNAR and the baselines,
`crl_mmnar_jax/methods`). `resolve_config_argv` turns `--config=NAME[:ARGS]` (or
`--config NAME[:ARGS]`) into the file path ml_collections reads (shared by `run`, `sweep`
and `mmnar_injection`); `cli` is the command-line plumbing of the experiment scripts.
"""

import os
import re
import sys

__all__ = ["CONFIG_DIR", "METHODS", "available_configs", "resolve_config_argv"]

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
_NOT_CONFIGS = {"__init__", "base", "cli"}
_CONFIG_FLAG = re.compile(r"^--?config(=|$)")


def __getattr__(name: str):
  # METHODS is read on first use: importing the method registry imports JAX, which the
  # light scripts (`summarize`, `--help`) do not need.
  if name == "METHODS":
    from crl_mmnar_jax.methods import METHODS
    return METHODS
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def available_configs() -> list[str]:
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                if f.endswith(".py") and f[:-3] not in _NOT_CONFIGS)


def resolve_config_argv(argv: list[str]) -> list[str]:
  """Turns --config=NAME[:ARGS] and --config NAME[:ARGS] into --config=PATH[:ARGS], the
  path ml_collections expects; an unknown NAME, or --config without a value, exits with
  one line listing the available configs."""
  out = []
  args = iter(argv)
  for a in args:
    if a == "--":                 # what follows is positional
      out.append(a)
      out.extend(args)
      break
    match = _CONFIG_FLAG.match(a)
    if match:
      value = a[match.end():] if match.group(1) else next(args, None)
      if value is None or (not match.group(1) and value.startswith("-")):
        sys.exit(f"error: {a} needs a value: --config=NAME[:PRESET] with NAME one of "
                 f"{', '.join(available_configs())}")
      name, sep, rest = value.partition(":")
      if not name.endswith(".py"):
        if name not in available_configs():
          sys.exit(f"error: unknown config {name!r}; available: "
                   f"{', '.join(available_configs())}")
        name = os.path.join(CONFIG_DIR, name + ".py")
      a = f"--config={name}{sep}{rest}"
    out.append(a)
  return out
