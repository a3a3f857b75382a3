"""CRL-MMNAR in JAX/Flax NNX (arXiv 2509.17228), with leak-free evaluation."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from crl_mmnar_jax.predictor import Predictor

__version__ = "0.1.0"


def load(workdir: str | os.PathLike) -> "Predictor":
  """The trained model of a finished run, to predict for new patients:
  `crl_mmnar_jax.load(workdir).predict(cohort_or_directory)` (docs/predict.md)."""
  # Imported on use, so that `import crl_mmnar_jax` stays light.
  from crl_mmnar_jax import predictor
  return predictor.load(workdir)
