"""Which configs exist (the files of experiments/configs/) and the `--config=NAME[:ARGS]`
flag turned into the file path ml_collections reads."""

from __future__ import annotations

import os
import re
import sys

__all__ = ["CONFIG_DIR", "available_configs", "resolve_config_argv"]

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
_NOT_CONFIGS = {"__init__", "base", "cli", "lookup"}
_CONFIG_FLAG = re.compile(r"^--?config(=|$)")


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
