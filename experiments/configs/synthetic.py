r"""The embedded synthetic MMNAR cohort (the default; no data download needed).

Run:
  python -m experiments.run --config=synthetic --workdir=/tmp/crl_synthetic
  python -m experiments.run --config=synthetic:tiny --workdir=/tmp/crl_tiny
  python -m experiments.run --config=synthetic --config.data.mechanism=mcar ...

Cohort: 20,000 patients, M=4 modalities (m0 always observed), 3 tasks, missingness
driven by the latent severity (MNAR) plus a direct effect of the observation pattern
on the outcomes. Expected result (default, seed 0, 2-core CPU, about 2-3 minutes):
mean test AUROC over tasks 0.827, above the logistic regression with mean imputation
and missingness indicators (`reference.logreg_mean_impute`, 0.798) and below the oracle
ceiling of the true probabilities (`oracle.test`, 0.887); see docs/results.md.

Preset `tiny` (smoke runs and tests): 600 patients, 3 epochs of a D = 32 model, 100
bootstrap draws, no progress bar; about 30 seconds on a 2-core CPU, most of it
compiling. The validation and test sets hold 90 patients each and 3 epochs learn little,
so its AUROC is noise (seed 0: test mean 0.52); it checks the pipeline, not the method.
"""

from experiments.configs.base import (
  apply_preset,
  get_base_config,
  neural_search_space,
  search_space,
)


def get_config(arg: str = ""):
  c = get_base_config()
  c.data.name = "synthetic"
  c.data.n = 20_000
  c.data.n_modalities = 4
  c.data.n_tasks = 3
  c.data.mechanism = "mnar"
  c.data.prevalence = 0.2
  c.data.pattern_effect = -1.0   # < 0: the generator's default for the mechanism
  c.data.seed = 0                # the patients (and the world, unless world_seed >= 0)
  c.data.world_seed = -1         # >= 0: the generator's world alone (make_synthetic)
  return apply_preset(c, "synthetic", arg, {"tiny": _tiny})


def _tiny(c) -> None:
  """For tests and smoke runs: 600 patients, 3 epochs, seconds on a laptop."""
  c.data.n = 600
  c.model.dim = 32
  c.model.n_heads = 4
  c.model.proj_dim = 16
  c.train.batch_size = 64
  c.train.eval_batch_size = 128
  c.train.epochs = 3
  c.train.warmup_steps = 5
  c.train.lr = 1e-3
  c.train.log_every = 5
  c.train.progress = False
  c.eval.n_boot = 100
  c.eval.smoke = True
  c.rectifier.min_count = 5
  c.rectifier.shrinkage = 5.0


def get_search_space(method: str = "crl_mmnar") -> dict[str, tuple]:
  """What `python -m experiments.tune --config=synthetic` searches for `method`
  (docs/tuning.md); 20,000 patients and 4 modalities: up to D = 256 and 3 fusion layers."""
  return search_space(method, neural_search_space(dims=(64, 128, 256), max_layers=3))
