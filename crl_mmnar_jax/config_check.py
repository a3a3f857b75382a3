"""Every setting checked in one place, before anything is read or written.

`check_config(config)` raises `ConfigError` with one line naming the field, its value and
what is allowed. It covers the fields every config shares (`experiments/configs/base.py`):
types, ranges and the relations between fields (heads divide the width, the validation
and test fractions leave training rows, grids are non-empty). Data-source fields are
checked by their loaders, which know their files.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any, Callable

import ml_collections


class ConfigError(ValueError):
  """A setting out of range; the message names the field (`--config.a.b`)."""


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return (isinstance(v, (int, float)) and not isinstance(v, bool)
          and math.isfinite(float(v)))


def integer(low: int, high: int | None = None) -> tuple[Callable[[Any], bool], str]:
  upper = "" if high is None else f" and <= {high}"
  return (lambda v: _is_int(v) and v >= low and (high is None or v <= high),
          f"an integer >= {low}{upper}")


def number(low: float, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> tuple[Callable[[Any], bool], str]:
  def ok(v):
    if not _is_number(v):
      return False
    v = float(v)
    above = v > low if low_open else v >= low
    below = high is None or (v < high if high_open else v <= high)
    return above and below
  what = f"{'>' if low_open else '>='} {low}"
  if high is not None:
    what += f" and {'<' if high_open else '<='} {high}"
  return ok, f"a finite number {what}"


def boolean() -> tuple[Callable[[Any], bool], str]:
  return (lambda v: isinstance(v, bool)), "True or False"


def one_of(*choices: str) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: v in choices), f"one of {', '.join(repr(c) for c in choices)}"


def grid(low: float, high: float | None = None) -> tuple[Callable[[Any], bool], str]:
  inner, what = number(low, high)
  return (lambda v: isinstance(v, (tuple, list)) and len(v) > 0
          and all(inner(x) for x in v)), f"a non-empty list, each value {what}"


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": integer(0),
    "data.val_fraction": number(0.0, 1.0, low_open=True, high_open=True),
    "data.test_fraction": number(0.0, 1.0, low_open=True, high_open=True),
    "data.preprocess": one_of("standard", "quantile_normal"),
    "data.extreme_factor": number(0.0),
    "model.dim": integer(1),
    "model.n_layers": integer(0),
    "model.n_heads": integer(1),
    "model.mlp_ratio": number(0.0, low_open=True),
    "model.dropout": number(0.0, 1.0, high_open=True),
    "model.proj_dim": integer(1),
    "model.use_missingness_embedding": boolean(),
    "model.use_modality_tokens": boolean(),
    "model.use_reconstruction": boolean(),
    "model.use_contrastive": boolean(),
    "model.miss_head": one_of("bce", "pattern"),
    "model.num_embedding": one_of("none", "ple", "ple_tree", "periodic"),
    "model.num_bins": integer(1),
    "model.num_embedding_dim": integer(1),
    "model.frequency_scale": number(0.0, low_open=True),
    "loss.pred": number(0.0),
    "loss.miss": number(0.0),
    "loss.rec": number(0.0),
    "loss.con": number(0.0),
    "loss.temperature": number(0.0, low_open=True),
    "loss.focal_gamma": number(0.0),
    "loss.rec_stop_gradient": boolean(),
    "loss.rec_drops": integer(0),
    "train.batch_size": integer(1),
    "train.eval_batch_size": integer(1),
    "train.epochs": integer(1),
    "train.pretrain_epochs": integer(0),
    # Above 1, AdamW steps are larger than any standardised feature: the run diverges
    # or saturates (AUROC exactly 0.5) while the loss stays finite.
    "train.lr": number(0.0, 1.0, low_open=True),
    "train.final_lr_fraction": number(0.0, 1.0),
    "train.warmup_steps": integer(0),
    "train.weight_decay": number(0.0),
    "train.clip_norm": number(0.0, low_open=True),
    "train.aux_final": number(0.0, 1.0),
    "train.patience": integer(1),
    "train.log_every": integer(1),
    "train.checkpoint_every": integer(0),
    "train.progress": boolean(),
    "train.tensorboard": boolean(),
    "train.compute_dtype": one_of("float32", "bfloat16"),
    "train.data_shards": integer(1),
    "train.cv_folds": integer(1, 20),
    "train.stack_members": boolean(),
    "rectifier.n_folds": integer(2),
    "rectifier.kappa_grid": grid(0.0),
    "rectifier.lambda_grid": grid(0.0, 1.0),
    "rectifier.z": number(0.0),
    "rectifier.min_count": integer(1),
    "rectifier.shrinkage": number(0.0),
    "rectifier.rule": one_of("lcb", "one_se", "min"),
    "rectifier.rule_z": number(0.0),
    "rectifier.auroc_guard": boolean(),
    "eval.n_boot": integer(0),
    "eval.min_pattern_count": integer(1),
    "eval.plots": boolean(),
    "eval.smoke": boolean(),
    "baseline.reference_size": integer(1),
    "baseline.muse_layers": integer(0),
    "baseline.muse_edge_dropout": number(0.0, 1.0, high_open=True),
    "baseline.muse_con_weight": number(0.0),
    "baseline.muse_temperature": number(0.0, low_open=True),
    "baseline.m3care_temperature": number(0.0, low_open=True),
    "baseline.logreg_l2_grid": grid(0.0),
    "baseline.gbt_n_estimators": integer(1),
    "baseline.gbt_learning_rate": number(0.0, 1.0, low_open=True),
    "baseline.gbt_num_leaves": integer(2),
    "baseline.gbt_min_child_samples": integer(1),
    "baseline.gbt_early_stopping": integer(1),
    "baseline.gbt_feature_fraction": number(0.0, 1.0, low_open=True),
    "baseline.gbt_lambda_l2": number(0.0),
}


def _get(config: ml_collections.ConfigDict, path: str) -> tuple[bool, Any]:
  node = config
  for key in path.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or key not in node:
      return False, None
    node = node[key]
  return True, node


def _fail(field: str, value: Any, what: str) -> None:
  raise ConfigError(f"--config.{field}={value!r}: must be {what}")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` naming the first bad field; fields a config lacks are skipped."""
  for field, (ok, what) in RULES.items():
    present, value = _get(config, field)
    if present and not ok(value):
      _fail(field, value, what)
  values = {f: _get(config, f)[1] for f in RULES if _get(config, f)[0]}
  if "model.dim" in values and "model.n_heads" in values:
    if values["model.dim"] % values["model.n_heads"]:
      _fail("model.n_heads", values["model.n_heads"],
            f"a divisor of model.dim={values['model.dim']}")
  if values.get("data.val_fraction") is not None and values.get("data.test_fraction"):
    if values["data.val_fraction"] + values["data.test_fraction"] >= 1.0:
      _fail("data.val_fraction", values["data.val_fraction"],
            f"below 1 - data.test_fraction={values['data.test_fraction']} (no rows "
            f"would be left for training)")
  if values.get("train.tensorboard") and importlib.util.find_spec("tensorboardX") is None:
    _fail("train.tensorboard", True, "False unless tensorboardX is installed "
          "(pip install -e '.[tensorboard]')")
  if values.get("train.cv_folds", 1) > 1 and values.get("train.data_shards", 1) > 1:
    _fail("train.cv_folds", values["train.cv_folds"],
          "1 with train.data_shards > 1 (each member standardises every training row)")
