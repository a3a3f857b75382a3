r"""Model and training settings of the MMNAR injection experiment (issue 6, item 4).

Not meant for `experiments.run` on its own: `experiments.mmnar_injection` writes each
injected cohort as a tables directory and fills in `data.dir`, `seed` and `method`.

  python -m experiments.mmnar_injection --workdir=/tmp/injection_run
  python -m experiments.mmnar_injection --workdir=/tmp/inj_smoke --config=injection:smoke \
      --n=400 --strengths=2 --seeds=1

Presets: "" (a small model, early stopping; about 1 minute per run of 6,000 patients
on a 2-core CPU) and "smoke" (one epoch of a minuscule model, for tests).
"""

from experiments.configs.base import get_base_config


def get_config(arg: str = ""):
  c = get_base_config()
  c.data.name = "tables"
  c.data.dir = ""              # set per injected cohort by experiments.mmnar_injection
  c.data.tasks = ""
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
  if arg == "smoke":
    c.model.dim = 16
    c.model.n_heads = 2
    c.model.proj_dim = 8
    c.train.batch_size = 64
    c.train.epochs = 1
    c.train.warmup_steps = 2
    c.eval.n_boot = 0
    c.rectifier.min_count = 5
    c.rectifier.shrinkage = 5.0
  elif arg:
    raise ValueError(f"unknown injection preset {arg!r} (known: 'smoke')")
  return c
