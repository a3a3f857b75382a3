"""Every config field is checked against its declaration in the schema, naming the field,
before anything is written."""

from __future__ import annotations

import importlib
import os

import pytest

from crl_mmnar_jax.config import FIELDS, SOURCES
from crl_mmnar_jax.config_check import ConfigError, check_config
from experiments.configs import synthetic

# One bad value per field, the kind a user really types (from a fault trial).
BAD = {
    "seed": -1, "data.val_fraction": 0.0, "data.test_fraction": 1.0,
    "data.preprocess": "quantile", "data.extreme_factor": -1.0,
    "model.num_embedding": "pl", "model.num_bins": 0, "model.num_embedding_dim": 0,
    "model.frequency_scale": 0.0,
    "model.dim": 0, "model.n_layers": -1, "model.n_heads": 0, "model.mlp_ratio": 0,
    "model.dropout": 1.5, "model.proj_dim": 0, "model.use_missingness_embedding": 1,
    "model.use_modality_tokens": "yes", "model.use_reconstruction": None,
    "model.use_contrastive": 0, "model.wide": "yes", "model.miss_head": "softmax",
    "loss.pred": -1.0,
    "loss.miss": float("nan"), "loss.rec": -0.5, "loss.con": float("inf"),
    "loss.temperature": 0.0, "loss.focal_gamma": -1.0, "loss.rec_stop_gradient": "no",
    "loss.rec_drops": -1, "train.compute_dtype": "float16",
    "train.batch_size": 0, "train.eval_batch_size": 0, "train.epochs": 0,
    "train.pretrain_epochs": -1, "train.lr": 1e3, "train.final_lr_fraction": 2.0,
    "train.warmup_steps": -5, "train.warmup_max_fraction": 1.5, "train.weight_decay": -1e-4,
    "train.clip_norm": -1.0,
    "train.aux_final": 1.5, "train.patience": 0, "train.log_every": 0,
    "train.checkpoint_every": -1, "train.progress": "true", "train.tensorboard": "yes",
    "train.data_shards": 0, "train.cv_folds": 0,
    "train.stack_members": "yes", "train.scan_epoch": "sometimes",
    "rectifier.n_folds": 1, "rectifier.kappa_grid": (), "rectifier.lambda_grid": (-5, 7),
    "rectifier.z": -1.0, "rectifier.min_count": 0, "rectifier.shrinkage": -2.0,
    "rectifier.rule": "best", "rectifier.rule_z": -1.0, "rectifier.auroc_guard": "no",
    "eval.n_boot": -1,
    "eval.min_pattern_count": 0, "eval.plots": 1, "eval.smoke": "yes", "baseline.reference_size": 0,
    "baseline.muse_layers": -1, "baseline.muse_edge_dropout": 1.0,
    "baseline.muse_con_weight": -1.0, "baseline.muse_temperature": 0.0,
    "baseline.m3care_temperature": -0.1, "baseline.logreg_l2_grid": (0.1, -1.0),
    "baseline.gbt_n_estimators": 0, "baseline.gbt_learning_rate": 0.0,
    "baseline.gbt_num_leaves": 1, "baseline.gbt_min_child_samples": 0,
    "baseline.gbt_early_stopping": 0, "baseline.gbt_feature_fraction": 0.0,
    "baseline.gbt_lambda_l2": -1.0, "eval.reference_logreg": "no", "method": None,
    "data.name": 3, "data.splits_file": 0,
    "stack.members": 1, "stack.l2": 0.0, "stack.n_boot": 1, "stack.z": -1.0,
}

# One bad value per data-source field, checked on that source's config.
BAD_SOURCE = {
    "synthetic": {"data.n": 5, "data.n_modalities": 1, "data.n_tasks": 0,
                  "data.mechanism": "nmar", "data.prevalence": 1.0,
                  "data.pattern_effect": float("nan"), "data.seed": -1,
                  "data.world_seed": -2},
    "tables": {"data.dir": None, "data.tasks": 1},
    "physionet2012": {"data.dir": 0, "data.strict": "no", "data.tasks": None,
                      "data.window_hours": 0.0, "data.train_sets": 1, "data.test_sets": 2},
    "yaib": {"data.dir": None, "data.databases": 0, "data.strict": 1, "data.task": None,
             "data.window_hours": -1.0, "data.test_database": 0},
    "eicu": {"data.dir": 1, "data.strict": "yes", "data.tasks": 0,
             "data.window_hours": float("inf"), "data.cache_dir": None},
    "meds": {"data.meds_root": 1, "data.task": None, "data.modalities": 0,
             "data.window_hours": -1.0, "data.subject_batch": -1, "data.text_dim": 0,
             "data.text_modalities": 3,
             "data.numeric_codes": -1, "data.count_codes": 1.5},
    "mimic": {"data.dir": 1, "data.meds": 2, "data.meds_splits": "yes", "data.demo_meds": None,
              "data.version": 3.1,
              "data.strict": 0, "data.tasks": 1, "data.cache_dir": 0,
              "data.text_encoder": "bert", "data.text_model_path": 1, "data.text_device": 0,
              "data.cxr_embeddings": 1, "data.cxr_metadata": 1, "data.anchor_years": 2019},
}


def _set(config, field, value):
  *parents, key = field.split(".")
  node = config
  for p in parents:
    node = node[p]
  with node.ignore_type():
    node[key] = value


def test_every_field_has_a_bad_value_and_the_defaults_pass():
  assert set(BAD) == {f.name for f in FIELDS}
  assert set(BAD_SOURCE) == set(SOURCES)
  for source, bad in BAD_SOURCE.items():
    assert set(bad) == {f.name for f in SOURCES[source]}, source
  for preset in ("", "tiny", "tuned"):
    check_config(synthetic.get_config(preset))


def test_synthetic_defaults_are_the_base_settings_and_tuned_sets_the_searched_ones():
  """The README's first command runs the fast hand-set settings; the searched
  ones are the `tuned` preset (its trade in the config's docstring)."""
  from experiments.configs.base import get_base_config
  from experiments.configs.base import get_field as read
  base, default = get_base_config(), synthetic.get_config()
  tuned, tiny = synthetic.get_config("tuned"), synthetic.get_config("tiny")
  assert len(synthetic.TUNED) == 15
  for field in synthetic.TUNED:
    assert read(default, field) == read(base, field), field
    assert read(tuned, field) == synthetic.TUNED[field] != read(base, field), field
    if field not in ("model.dim", "train.lr"):                  # tiny's own choices
      assert read(tiny, field) == read(base, field), field
  # Outside the tuned fields the preset leaves the config alone.
  assert default.data.to_dict() | {"preprocess": None} == tuned.data.to_dict() | {
      "preprocess": None}
  assert (tuned.model.dim, tuned.model.n_layers, tuned.model.num_embedding) == (
      256, 2, "periodic")


@pytest.mark.parametrize("field", sorted(BAD))
def test_bad_value_is_refused_naming_the_field(field):
  config = synthetic.get_config("tiny")
  _set(config, field, BAD[field])
  with pytest.raises(ConfigError) as e:
    check_config(config)
  message = str(e.value)
  assert message.startswith(f"--config.{field}=") and "\n" not in message


@pytest.mark.parametrize("source,field", sorted(
    (source, field) for source, bad in BAD_SOURCE.items() for field in bad))
def test_bad_source_value_is_refused_naming_the_field(source, field):
  config = importlib.import_module(f"experiments.configs.{source}").get_config("tiny")
  _set(config, field, BAD_SOURCE[source][field])
  with pytest.raises(ConfigError) as e:
    check_config(config)
  message = str(e.value)
  assert message.startswith(f"--config.{field}=") and "\n" not in message


def test_a_missing_field_is_refused_naming_it():
  config = synthetic.get_config("tiny")
  del config.eval["reference_logreg"]
  with pytest.raises(ConfigError, match=r"^--config\.eval\.reference_logreg: missing"):
    check_config(config)
  config = synthetic.get_config("tiny")
  del config.data["world_seed"]
  with pytest.raises(ConfigError, match=r"^--config\.data\.world_seed: missing"):
    check_config(config)


@pytest.mark.parametrize("field,value", [
    ("model.dropout", 0.0), ("model.n_layers", 0), ("train.lr", 1.0), ("eval.n_boot", 0),
    ("rectifier.lambda_grid", (0.0, 1.0)), ("train.checkpoint_every", 0)])
def test_edge_values_are_accepted(field, value):
  config = synthetic.get_config("tiny")
  _set(config, field, value)
  check_config(config)


def test_relations_between_fields():
  config = synthetic.get_config("tiny")
  config.model.n_heads = 3       # 32 is not a multiple of 3
  with pytest.raises(ConfigError, match=r"--config\.model\.n_heads=3: .*model\.dim=32"):
    check_config(config)
  config = synthetic.get_config("tiny")
  config.data.val_fraction, config.data.test_fraction = 0.5, 0.5
  with pytest.raises(ConfigError, match=r"--config\.data\.val_fraction"):
    check_config(config)


@pytest.mark.parametrize("field", ["train.batch_size", "rectifier.kappa_grid",
                                   "rectifier.n_folds", "train.lr"])
def test_refused_before_anything_is_written(tmp_path, field):
  from crl_mmnar_jax.experiment import train_and_evaluate
  config = synthetic.get_config("tiny")
  _set(config, field, BAD[field])
  workdir = str(tmp_path / "run")
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    train_and_evaluate(config, workdir)
  assert not os.path.exists(workdir) or not os.listdir(workdir)
