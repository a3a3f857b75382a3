"""Defaults shared by every config (the choices behind them: docs/design.md, "Choices the
paper leaves open"), the `tiny` smoke-run settings, the preset lookup and dotted-field
access ("model.dim"). Not a runnable config itself."""

import os
from typing import Any, Callable, Mapping

import ml_collections

# `../shared/data` next to the repository root: the open datasets (docs/design.md, "Real data").
SHARED_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                           "shared", "data")


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = "crl_mmnar"        # or a baseline: experiments.configs.METHODS

  c.data = ml_collections.ConfigDict()
  c.data.name = ""              # set by each config
  c.data.val_fraction = 0.15
  c.data.test_fraction = 0.15
  c.data.splits_file = ""       # reuse another run's splits.parquet (joined on patient_id)
  c.data.preprocess = "standard"  # or "quantile_normal": per-feature quantile map to N(0, 1)
  c.data.extreme_factor = 1e3   # cells beyond median ± this·robust sd: not measured (0: off)

  c.model = ml_collections.ConfigDict()
  c.model.dim = 128
  c.model.n_layers = 1
  c.model.n_heads = 8
  c.model.mlp_ratio = 4
  c.model.dropout = 0.1
  c.model.proj_dim = 64
  c.model.use_missingness_embedding = True
  c.model.use_modality_tokens = True
  c.model.use_reconstruction = True
  c.model.use_contrastive = True
  c.model.miss_head = "bce"
  c.model.num_embedding = "none"  # numerical feature embeddings: "ple", "ple_tree", "periodic"
  c.model.num_bins = 48           # PLE: bins per feature at most (training rows)
  c.model.num_embedding_dim = 16  # width of each feature's embedding
  c.model.frequency_scale = 0.1   # periodic: sd of the initial frequencies

  c.loss = ml_collections.ConfigDict()
  c.loss.pred = 1.0
  c.loss.miss = 0.5
  c.loss.rec = 1.0
  c.loss.con = 0.3
  c.loss.temperature = 0.1
  c.loss.focal_gamma = 0.0
  c.loss.rec_stop_gradient = True
  c.loss.rec_drops = 1          # L_rec/L_con: random observed modalities each patient drops
                                # per step, one fusion pass each (0: all, exact leave-one-out)

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128
  c.train.eval_batch_size = 1024
  c.train.epochs = 30
  c.train.pretrain_epochs = 0
  c.train.lr = 2e-4
  c.train.final_lr_fraction = 0.05
  c.train.warmup_steps = 100
  c.train.weight_decay = 1e-4
  c.train.clip_norm = 1.0
  c.train.aux_final = 0.1       # auxiliary weights anneal from 1 to this
  c.train.patience = 5          # epochs without validation-AUROC improvement
  c.train.log_every = 50        # steps between metrics.jsonl lines
  c.train.checkpoint_every = 0  # steps between mid-epoch checkpoints (0: epoch ends only)
  c.train.progress = True       # a live progress bar when stderr is a terminal
  c.train.tensorboard = False   # also WORKDIR/tensorboard/ event files (extra `tensorboard`)
  c.train.compute_dtype = "float32"  # or "bfloat16": forward/backward; parameters stay float32
  c.train.cv_folds = 1          # >1: K cross-fitted members (ensemble.py), OOF validation
  c.train.stack_members = True  # cv_folds: train the members in one vmapped step (train/stacked.py)
  c.train.data_shards = 1       # >1: each process loads only its shards' patients (shards.py)

  # Baselines (`crl_mmnar_jax/methods/`); the neural ones share c.model's width,
  # depth, heads and dropout and c.train's schedule.
  c.baseline = ml_collections.ConfigDict()
  c.baseline.reference_size = 512       # MUSE, M3Care: training patients read at evaluation
  c.baseline.muse_layers = 2
  c.baseline.muse_edge_dropout = 0.5    # P(a patient's edges are dropped in the second view)
  c.baseline.muse_con_weight = 0.5      # weight of each consistency loss
  c.baseline.muse_temperature = 0.07
  c.baseline.m3care_temperature = 0.1   # initial (learned) similarity temperature
  c.baseline.logreg_l2_grid = (1e-4, 1e-3, 1e-2, 1e-1)
  c.baseline.gbt_n_estimators = 1000
  c.baseline.gbt_learning_rate = 0.05
  c.baseline.gbt_num_leaves = 31
  c.baseline.gbt_min_child_samples = 20
  c.baseline.gbt_early_stopping = 50    # rounds without validation-AUROC improvement
  c.baseline.gbt_feature_fraction = 1.0  # features sampled per tree (LightGBM feature_fraction)
  c.baseline.gbt_lambda_l2 = 0.0        # L2 penalty on leaf values (LightGBM lambda_l2)

  c.rectifier = ml_collections.ConfigDict()
  c.rectifier.n_folds = 5
  c.rectifier.kappa_grid = (0.0, 0.01, 0.02, 0.05, 0.1)
  c.rectifier.lambda_grid = (0.0, 0.25, 0.5, 0.75, 1.0)
  c.rectifier.z = 0.0
  c.rectifier.min_count = 20
  c.rectifier.shrinkage = 20.0
  c.rectifier.rule = "lcb"      # a correction only where its cross-fitted gain is sure
  c.rectifier.rule_z = 1.645    # (rectifier/select.py); "min" is the plain minimum
  c.rectifier.auroc_guard = True  # drop a correction that ranks the fitting rows worse

  c.eval = ml_collections.ConfigDict()
  c.eval.n_boot = 1000
  c.eval.min_pattern_count = 20  # per-pattern metrics are reported for patterns this large
  c.eval.plots = True
  c.eval.smoke = False           # True in the `tiny` presets: numbers that mean nothing
  return c


def apply_preset(c: ml_collections.ConfigDict, name: str, arg: str,
                 presets: dict[str, Callable[[ml_collections.ConfigDict], None]],
                 hint: str = "") -> ml_collections.ConfigDict:
  """Applies the preset `arg` ("" = none) of config `name` to `c` and returns `c`; an
  unknown preset raises a one-line ValueError naming the known ones (then `hint`)."""
  if arg:
    if arg not in presets:
      raise ValueError(f"unknown {name} preset {arg!r} (known: "
                       f"{', '.join(repr(k) for k in presets)}){hint}")
    presets[arg](c)
  return c


def get_field(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of a dotted field ("model.dim"); KeyError(field) if it does not exist."""
  node = config
  for key in field.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      raise KeyError(field)
    node = node[key]
  return node


def set_fields(config: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
  """Sets dotted fields ("model.dim": 64, ...): a config's tuned settings, a trial's."""
  for field, value in values.items():
    *parents, key = field.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[key] = value


def tiny(c: ml_collections.ConfigDict) -> None:
  """The smoke-run settings the real-data configs share: a small model (D = 32, 4 heads),
  2 epochs, no progress bar, 50 bootstrap draws."""
  c.model.dim = 32
  c.model.n_heads = 4
  c.model.proj_dim = 16
  c.train.epochs = 2
  c.train.progress = False
  c.eval.n_boot = 50
  c.eval.smoke = True


# ----------------------------------------------------------------------------- search spaces
# What `python -m experiments.tune` searches (docs/tuning.md): dotted config field ->
# (kind, args, log) with kind "float" or "int" (args = (low, high), log = sample on a log
# scale) or "categorical" (args = the choices). Each config's `get_search_space(method)`
# returns one of these, adapted to its cohort.

def neural_search_space(dims: tuple[int, ...] = (32, 64, 128, 256),
                        max_layers: int = 3) -> dict[str, tuple]:
  """CRL-MMNAR's space: capacity, regularisation, schedule, loss weights, feature
  embeddings and preprocessing."""
  return {
      "model.dim": ("categorical", dims, False),
      "model.n_layers": ("int", (1, max_layers), False),
      "model.dropout": ("float", (0.0, 0.4), False),
      "model.num_embedding": ("categorical", ("none", "ple", "periodic"), False),
      "data.preprocess": ("categorical", ("standard", "quantile_normal"), False),
      "train.lr": ("float", (1e-4, 3e-3), True),
      "train.weight_decay": ("float", (1e-6, 1e-2), True),
      "loss.miss": ("float", (0.05, 2.0), True),
      "loss.rec": ("float", (0.1, 3.0), True),
      "loss.con": ("float", (0.03, 1.0), True),
  }


GBT_SEARCH_SPACE: dict[str, tuple] = {   # trees' size is set by early stopping on validation
    "baseline.gbt_num_leaves": ("int", (7, 127), True),
    "baseline.gbt_learning_rate": ("float", (0.01, 0.2), True),
    "baseline.gbt_min_child_samples": ("int", (5, 100), True),
    "baseline.gbt_feature_fraction": ("float", (0.4, 1.0), False),
    "baseline.gbt_lambda_l2": ("float", (1e-3, 10.0), True),
}

# Loss weights only CRL-MMNAR computes; the other neural methods are searched without them
# (MUSE searches its own consistency weight instead).
CRL_ONLY = ("loss.miss", "loss.rec", "loss.con")
MUSE_SEARCH = {"baseline.muse_con_weight": ("float", (0.05, 2.0), True)}


def search_space(method: str, neural: dict[str, tuple]) -> dict[str, tuple]:
  """The space of `method`: `neural` for CRL-MMNAR, `neural` less its loss weights for
  the other neural methods (plus MUSE's weight), the trees' space for `gbt`; `logreg`
  selects its L2 on validation itself (`baseline.logreg_l2_grid`) and has none."""
  if method == "gbt":
    return dict(GBT_SEARCH_SPACE)
  if method == "logreg":
    return {}
  if method == "crl_mmnar":
    return dict(neural)
  space = {k: v for k, v in neural.items() if k not in CRL_ONLY}
  return {**space, **MUSE_SEARCH} if method == "muse" else space
