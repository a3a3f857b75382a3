"""Configs for `python -m experiments.run --config=NAME[:PRESET]`, one file per NAME.

Every config accepts the preset `tiny` (`--config=NAME:tiny`): a smoke run of a few
epochs of a small model, without the progress bar and with few bootstrap draws; an
unknown preset stops with one line naming the known ones (`base.apply_preset`). Each
file's docstring says how to run it and what to expect.

`crl_mmnar_jax.methods.RUN_METHODS` lists every name `--config.method=NAME` accepts
(CRL-MMNAR, the baselines and `stack`). `lookup.resolve_config_argv` turns
`--config=NAME[:ARGS]` (or `--config NAME[:ARGS]`) into the file path ml_collections reads (shared by `run`, `sweep`
and `mmnar_injection`); `cli` is the command-line plumbing of the experiment scripts;
`base` is what every config starts from: the schema's defaults (`crl_mmnar_jax.config`,
every field declared once), which each config overrides.
"""

from experiments.configs.lookup import CONFIG_DIR, available_configs, resolve_config_argv

__all__ = ["CONFIG_DIR", "available_configs", "resolve_config_argv"]
