"""Configs for `python -m experiments.run --config=NAME[:ARGS]`, one file per NAME.

`METHODS` lists every name `--config.method=NAME` accepts (CRL-MMNAR and the baselines,
`crl_mmnar_jax/methods.py`).
"""

from crl_mmnar_jax.methods import METHODS

__all__ = ["METHODS"]
