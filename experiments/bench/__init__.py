"""Micro-benchmarks of the library's hot paths.

  python -m experiments.bench [--only=train,scaling,...] [--out=FILE]   # usage: --help

Modules: `sections` (the `SECTIONS` table, the flags and `main`; `__main__` runs it),
`common` (options, timing, child processes, memory), `train` (sections `train`,
`scaling`, `rectifier`), `featurize`, `extraction` (`eicu`, `mimic`) and `shards`. The
note stage's peak RSS is `experiments.studies.note_memory`: importing this package loads
jax, which that measurement must not.

This package re-exports the names that child processes evaluate (`bench.load_case(...)`,
...; see `common.child`) and those that other code and tests use.
"""

from experiments.bench.common import Options, Result
from experiments.bench.extraction import eicu_case, load_case
from experiments.bench.featurize import featurize_case
from experiments.bench.sections import SCRIPT, SECTIONS, define_flags, main, print_table
from experiments.bench.shards import shard_load_case
from experiments.bench.train import PAPER_DIMS, train_step_throughput

__all__ = ["PAPER_DIMS", "SCRIPT", "SECTIONS", "Options", "Result", "define_flags",
           "eicu_case", "featurize_case", "load_case", "main", "print_table", "shard_load_case",
           "train_step_throughput"]
