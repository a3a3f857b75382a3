"""The method registry: what a method is (`NeuralMethod`, `DirectMethod`), what it learns
from (`MethodData`), how each one is built from a config, and `get_method` (the package
docstring, `crl_mmnar_jax/methods/__init__.py`, says where each method lives)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np
from flax import nnx

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data import shards
from crl_mmnar_jax.embeddings import EmbeddingSpec, spec_from_config
from crl_mmnar_jax.losses import LossFn, LossWeights, objective
from crl_mmnar_jax.methods import direct, m3care, muse, neural, reference
from crl_mmnar_jax.model import CRLMMNAR, ModelConfig
from crl_mmnar_jax.wide import Wide

Config = ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class MethodData:
  """What a method may learn from.

  cohort:     standardised (`data.standardize`), test labels hidden (NaN).
  train_rows: rows to fit on; val_rows: rows for model selection.
  stats:      `data.standardize`'s per-modality statistics of the training rows.
  layout:     which process holds which rows (`shards`); None: one process holds all.
  schedule_steps_per_epoch: the learning-rate schedule's steps per epoch; None: this
              data's own (cross-fitted members share the largest member's, so that one
              vmapped step trains them all, `train.stacked`).
  """

  cohort: Cohort
  train_rows: np.ndarray
  val_rows: np.ndarray
  stats: Mapping[str, dict]
  layout: shards.Layout | None = None
  schedule_steps_per_epoch: int | None = None


@dataclasses.dataclass(frozen=True)
class NeuralMethod:
  name: str
  summary: str
  build: Callable[[Config, MethodData, nnx.Rngs], nnx.Module]
  make_loss: Callable[[Config], LossFn]


@dataclasses.dataclass(frozen=True)
class DirectMethod:
  name: str
  summary: str
  fit_predict: Callable[[Config, MethodData, dict[str, np.ndarray]],
                        tuple[dict[str, np.ndarray], dict[str, Any]]]
  check: Callable[[], Any] | None = None   # raises ValueError if it cannot run here


Method = NeuralMethod | DirectMethod


# ----------------------------------------------------------------------------- builders


def model_config(config: ml_collections.ConfigDict, cohort: Cohort) -> ModelConfig:
  fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"input_dims", "n_tasks"}
  kw = {k: v for k, v in config.model.items() if k in fields}
  kw["rec_drops"] = int(config.loss.rec_drops)   # a loss setting the model draws
  return ModelConfig(input_dims=cohort.input_dims, n_tasks=cohort.n_tasks, **kw)


def loss_weights(config: ml_collections.ConfigDict) -> LossWeights:
  fields = {f.name for f in dataclasses.fields(LossWeights)}
  return LossWeights(**{k: v for k, v in config.loss.items() if k in fields})


def embedding_spec(config: Config, data: MethodData) -> EmbeddingSpec | None:
  """The numerical-feature embedding every neural method's encoders use
  (`model.num_embedding`; PLE bins from `data.stats`); None for "none"."""
  return spec_from_config(config.model, data.stats, data.cohort.modality_names)


def _crl_mmnar(config: Config, data: MethodData, rngs: nnx.Rngs) -> CRLMMNAR:
  return CRLMMNAR(model_config(config, data.cohort), rngs=rngs,
                  embedding=embedding_spec(config, data), loss_weights=loss_weights(config))


def _transformer(config: Config, data: MethodData, rngs: nnx.Rngs) -> CRLMMNAR:
  """CRL-MMNAR's encoders, modality embeddings, masked fusion and heads; nothing else."""
  cfg = dataclasses.replace(model_config(config, data.cohort), use_missingness_embedding=False,
                            use_reconstruction=False, use_contrastive=False)
  return CRLMMNAR(cfg, rngs=rngs, embedding=embedding_spec(config, data),
                  loss_weights=loss_weights(config))


def _impute_mlp(indicators: bool) -> Callable[[Config, MethodData, nnx.Rngs], nnx.Module]:
  """Zero imputation in the raw scale without indicators, or mean imputation with them."""

  def build(config: Config, data: MethodData, rngs: nnx.Rngs) -> nnx.Module:
    c = data.cohort
    if indicators:   # the training mean: a standardised 0
      fill_F = np.zeros(sum(c.input_dims), np.float32)
    else:            # a raw 0, standardised with the training statistics
      fill_F = np.concatenate([data.stats[n].get("raw_zero",
                                                 -data.stats[n]["mean"] / data.stats[n]["sd"])
                               for n in c.modality_names])
    return neural.ImputeMLP(c.input_dims, c.n_tasks, int(config.model.dim),
                            float(config.model.dropout), fill_F, indicators, rngs=rngs,
                            embedding=embedding_spec(config, data))

  return build


def _reference(config: Config, data: MethodData) -> reference.ReferencePatients:
  rows = reference.reference_rows(data.train_rows, int(config.baseline.reference_size),
                                  int(config.seed))
  return reference.ReferencePatients(data.cohort, rows)


def _muse(config: Config, data: MethodData, rngs: nnx.Rngs) -> muse.MUSE:
  c, b = data.cohort, config.baseline
  return muse.MUSE(c.input_dims, c.n_tasks, int(config.model.dim), int(b.muse_layers),
                   float(config.model.dropout), float(b.muse_edge_dropout),
                   _reference(config, data), rngs=rngs, embedding=embedding_spec(config, data))


def _m3care(config: Config, data: MethodData, rngs: nnx.Rngs) -> m3care.M3Care:
  return m3care.M3Care(model_config(config, data.cohort),
                       float(config.baseline.m3care_temperature), _reference(config, data),
                       rngs=rngs, embedding=embedding_spec(config, data))


def _missing_token(config: Config, data: MethodData,
                   rngs: nnx.Rngs) -> neural.MissingToken:
  return neural.MissingToken(model_config(config, data.cohort), rngs=rngs,
                             embedding=embedding_spec(config, data))


def _late_fusion(config: Config, data: MethodData, rngs: nnx.Rngs) -> neural.LateFusion:
  c = data.cohort
  return neural.LateFusion(c.input_dims, c.n_tasks, int(config.model.dim),
                           float(config.model.dropout), rngs=rngs,
                           embedding=embedding_spec(config, data))


def _wide(build: Callable[[Config, MethodData, nnx.Rngs], nnx.Module]
          ) -> Callable[[Config, MethodData, nnx.Rngs], nnx.Module]:
  """`build`, wrapped in the wide linear path when `model.wide` (crl_mmnar_jax/wide.py)."""

  def wrapped(config: Config, data: MethodData, rngs: nnx.Rngs) -> nnx.Module:
    deep = build(config, data, rngs)
    if not bool(config.model.wide):
      return deep
    return Wide(deep, data.cohort.input_dims, data.cohort.n_tasks)

  return wrapped


# ----------------------------------------------------------------------------- losses


def _objective(config: Config) -> LossFn:
  """CRL-MMNAR's total loss; for prediction-only models, the weighted L_pred."""
  return objective(loss_weights(config), str(config.model.miss_head))


def _muse_loss(config: Config) -> LossFn:
  """L_pred on the full graph + weight · (two-view InfoNCE + label-agreement loss)."""
  b = config.baseline
  return muse.objective(_objective(config), float(b.muse_con_weight),
                        float(b.muse_temperature))


# ----------------------------------------------------------------------------- direct


def _logreg(config: Config, data: MethodData, predict_rows: dict[str, np.ndarray]):
  fitted: list = []
  probs, l2 = direct.logreg_mean_impute(data.cohort, data.train_rows, data.val_rows,
                                        predict_rows, tuple(config.baseline.logreg_l2_grid),
                                        fitted)
  # "arrays": the fitted model, saved by `experiment.fit_and_predict` (not in results.json)
  arrays = {"w_FxT": np.stack([w for w, _ in fitted], 1),
            "b_T": np.array([b for _, b in fitted], np.float32)}
  return probs, {"l2": dict(zip(data.cohort.task_names, l2)), "arrays": arrays}


def _gbt(config: Config, data: MethodData, predict_rows: dict[str, np.ndarray]):
  standard = str(config.data.preprocess) == "standard"
  unmeasured = direct.featurized_not_measured(data.cohort, data.stats) if standard else None
  fitted: list = []
  probs, record = direct.gbt_nan_missing(data.cohort, data.train_rows, data.val_rows,
                                         predict_rows, config.baseline, int(config.seed),
                                         unmeasured, fitted)
  # "arrays" and "texts" (one model per task): the fitted trees, saved by
  # `experiment.fit_and_predict` (not in results.json)
  record["arrays"] = {"backend": np.array(record["backend"]),
                      "n_trees_T": np.array([n for _, n in fitted], np.int64),
                      "nan_not_measured": np.array(standard)}
  record["texts"] = [text for text, _ in fitted]
  return probs, record


# ----------------------------------------------------------------------------- registry


_REGISTRY: dict[str, Method] = {m.name: m for m in (
    NeuralMethod("crl_mmnar", "CRL-MMNAR (docs/design.md)", _wide(_crl_mmnar), _objective),
    NeuralMethod("zero_impute_mlp", "raw-scale zero imputation, concatenation, MLP",
                 _wide(_impute_mlp(indicators=False)), _objective),
    NeuralMethod("mean_impute_mlp", "mean imputation + missingness indicators, MLP",
                 _wide(_impute_mlp(indicators=True)), _objective),
    DirectMethod("logreg", "L2 logistic regression per task on [mean-imputed features, "
                 "missingness indicators], L2 chosen on validation AUROC", _logreg),
    NeuralMethod("late_fusion", "per-modality models, logits averaged over observed ones",
                 _wide(_late_fusion), _objective),
    NeuralMethod("masked_transformer", "masked transformer fusion, no missingness embedding",
                 _wide(_transformer), _objective),
    NeuralMethod("muse", "MUSE: patient-modality graph, edge dropout, contrastive (ICLR 2024)",
                 _wide(_muse), _muse_loss),
    NeuralMethod("m3care", "M3Care: similar-patient imputation in latent space (KDD 2022)",
                 _wide(_m3care), _objective),
    NeuralMethod("missing_token", "a learned token per absent modality, transformer fusion",
                 _wide(_missing_token), _objective),
    DirectMethod("gbt", "gradient-boosted trees per task on features with NaN for missing "
                 "modalities, early stopping on validation AUROC", _gbt,
                 check=direct.gbt_backend),
)}

METHODS: tuple[str, ...] = tuple(_REGISTRY)
STACK = "stack"               # --config.method=stack: a stack of METHODS (stack_fit.py)
RUN_METHODS: tuple[str, ...] = (*METHODS, STACK)     # what --config.method accepts


def get_method(name: str) -> Method:
  """The method called `name`; a ValueError naming the valid ones otherwise, or if the
  method needs a package that is not installed."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
  method = _REGISTRY[name]
  if isinstance(method, DirectMethod) and method.check is not None:
    method.check()
  return method
