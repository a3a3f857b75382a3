"""What every config of experiments/configs/ starts from: the schema's defaults
(`crl_mmnar_jax.config`, where every field is declared once with its type, range and
doc; the choices behind them: docs/design.md, "Choices the paper leaves open"), the
`tiny` smoke-run settings, the preset lookup, dotted-field access ("model.dim") and the
tuning search spaces. Not a runnable config itself."""

from __future__ import annotations

from typing import Callable

import ml_collections

from crl_mmnar_jax.config import default_config, get_field, set_fields, shared_data_dir

__all__ = ["CRL_ONLY", "GBT_SEARCH_SPACE", "MUSE_SEARCH", "SHARED_DATA", "apply_preset",
           "get_base_config", "get_field", "neural_search_space", "search_space",
           "set_fields", "tiny"]

# The open datasets' folder (`$CRL_MMNAR_DATA`, else `../shared/data` next to the
# repository where it exists; "" if neither): for notebooks. The configs' data defaults
# resolve it themselves (`crl_mmnar_jax.config.SharedData`).
SHARED_DATA = shared_data_dir() or ""


def get_base_config(source: str = "") -> ml_collections.ConfigDict:
  """The schema's defaults: every field every config has, plus data source `source`'s
  own fields ("" for none; `data.name` is set to it)."""
  return default_config(source)


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
