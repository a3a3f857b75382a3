"""Configs for `python -m experiments.run --config=NAME[:PRESET]`, one file per NAME.

Every config accepts the preset `tiny` (`--config=NAME:tiny`): a smoke run of a few
epochs of a small model, without the progress bar and with few bootstrap draws; an
unknown preset stops with one line naming the known ones (`base.apply_preset`). Each
file's docstring says how to run it and what to expect.

`METHODS` lists every name `--config.method=NAME` accepts (CRL-MMNAR and the baselines,
`crl_mmnar_jax/methods`). `lookup.resolve_config_argv` turns `--config=NAME[:ARGS]` (or
`--config NAME[:ARGS]`) into the file path ml_collections reads (shared by `run`, `sweep`
and `mmnar_injection`); `cli` is the command-line plumbing of the experiment scripts;
`base` is what every config starts from: the schema's defaults (`crl_mmnar_jax.config`,
every field declared once), which each config overrides.
"""

from experiments.configs.lookup import CONFIG_DIR, available_configs, resolve_config_argv

__all__ = ["CONFIG_DIR", "METHODS", "available_configs", "resolve_config_argv"]


def __getattr__(name: str):
  # METHODS is read on first use: importing the method registry imports JAX (seconds),
  # which the light scripts (`summarize`, `--help`) do not need.
  if name == "METHODS":
    from crl_mmnar_jax.methods import METHODS
    return METHODS
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
