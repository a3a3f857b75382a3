r"""Model and training settings of the MMNAR injection experiment.

Not meant for `experiments.run` on its own: `experiments.studies.mmnar_injection` writes each
injected cohort as a tables directory and fills in `data.dir`, `seed` and `method`.

  python -m experiments.studies.mmnar_injection --workdir=/tmp/injection_run
  python -m experiments.studies.mmnar_injection --workdir=/tmp/inj_tiny --config=injection:tiny \
      --n=400 --strengths=2 --seeds=1

Presets: "" (a small model, early stopping; about 1 minute per run of 6,000 patients
on a 2-core CPU) and "tiny" (one epoch of a minuscule model, no bootstrap, for tests
and smoke runs: the command above takes under a minute, and its AUROCs, from one
epoch on 400 patients, are noise).
"""

from experiments.configs.base import apply_preset, get_base_config


def get_config(arg: str = ""):
  c = get_base_config("tables")   # data.dir: set per injected cohort by mmnar_injection
  c.model.dim = 32
  c.model.n_heads = 4
  c.model.proj_dim = 16
  c.train.batch_size = 128
  c.train.eval_batch_size = 1024
  c.train.epochs = 30
  c.train.patience = 4
  c.train.warmup_steps = 20
  c.train.lr = 3e-3
  c.train.log_every = 50
  c.train.progress = False
  c.eval.n_boot = 200
  c.eval.plots = False
  return apply_preset(c, "injection", arg, {"tiny": _tiny})


def _tiny(c) -> None:
  """One epoch of a D = 16 model, no bootstrap (what the tests run)."""
  c.model.dim = 16
  c.model.n_heads = 2
  c.model.proj_dim = 8
  c.train.batch_size = 64
  c.train.epochs = 1
  c.train.warmup_steps = 2
  c.eval.n_boot = 0
  c.eval.smoke = True
  c.rectifier.min_count = 5
  c.rectifier.shrinkage = 5.0
