"""The simple neural baselines: early fusion with imputation, late fusion, missing tokens.

Like every neural baseline they share CRL-MMNAR's building blocks (`layers.py`) and
capacity (`model.dim`, `model.dropout`, `model.n_layers`, `model.n_heads`); see
`methods/__init__.py`.

`zero_impute_mlp` (early fusion, zero imputation): a missing modality's features are set
to the standardised value of a raw 0, `(0 - mean) / sd` per feature (training
statistics), then all features are concatenated into an MLP (`in -> D -> D`, LayerNorm,
GELU, dropout) and the task heads. This is `fillna(0)` on the raw features: for a
variable whose normal range is far from 0 (a heart rate) the fill value is extreme, which
is how the network can tell that the modality was missing. No indicators.

`mean_impute_mlp` (early fusion, mean imputation with missingness indicators): missing
features are the training mean (standardised 0) and the M indicators δ are appended.

`late_fusion`: one encoder and one set of task heads per modality; a patient's logit is
the mean of the logits of its observed modalities (missing ones are excluded exactly),
trained end to end on that mean logit.

`missing_token` (the missing embeddings of FuseMoE, Han et al., NeurIPS 2024, and
Flex-MoE, Yun et al., NeurIPS 2024): every modality contributes a token; an absent
modality's token is a learned per-modality "missing" embedding (its input is never
read); tokens get modality embeddings and go through an unmasked transformer, mean
pooling over all M tokens, heads. Simplification: one embedding per modality (Flex-MoE
also indexes its bank by the observed combination) and no mixture-of-experts layer.

With `model.num_embedding` != "none" every one of them embeds its numerical features
first (`embeddings.py`, the same embedding as CRL-MMNAR's encoders): the per-modality
encoders through `ModalityEncoders`, the early-fusion MLPs over the concatenated imputed
features (a missing modality's fill value is embedded, never its input).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crl_mmnar_jax.embeddings import EmbeddingSpec
from crl_mmnar_jax.layers import (
  Constant,
  Fusion,
  MLPBlock,
  ModalityEncoders,
  TaskHeads,
  split_points,
)
from crl_mmnar_jax.model import ModelConfig

Array = jax.Array


class ImputeMLP(nnx.Module):
  """Early fusion: impute missing modalities with `fill_F`, concatenate (optionally with
  the indicators δ), `in -> D -> D` MLP, heads."""

  def __init__(self, input_dims: Sequence[int], n_tasks: int, dim: int, dropout: float,
               fill_F: np.ndarray, indicators: bool, *, rngs: nnx.Rngs,
               embedding: EmbeddingSpec | None = None):
    self.fill_F = Constant(jnp.asarray(fill_F, jnp.float32))
    self.split_at = split_points(input_dims)
    self.indicators = indicators
    n_features = sum(input_dims)    # one embedding over the concatenated (imputed) features
    self.embed = (None if embedding is None else
                  nnx.data(embedding.concatenated().modules((n_features,), rngs=rngs)[0]))
    if self.embed is not None:
      n_features *= self.embed.dim
    d_in = n_features + (len(input_dims) if indicators else 0)
    self.mlp = MLPBlock(d_in, dim, dim, dropout, rngs=rngs)
    self.heads = TaskHeads(1, n_tasks, dim, rngs=rngs)

  def __call__(self, x: Sequence[Array], present_BxM: Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None, with_aux: bool = True) -> dict[str, Any]:
    del with_aux  # no auxiliary outputs
    present_BxM = present_BxM.astype(bool)
    fills = jnp.split(self.fill_F[...], self.split_at)
    cols = [jnp.where(present_BxM[:, j:j + 1], x_BxDm, fill_Dm)
            for j, (x_BxDm, fill_Dm) in enumerate(zip(x, fills))]
    if self.embed is not None:
      x_BxF = jnp.concatenate(cols, axis=-1)
      cols = [self.embed(x_BxF).reshape(x_BxF.shape[0], -1)]
    if self.indicators:
      cols.append(present_BxM.astype(cols[0].dtype))
    h_BxD = self.mlp(jnp.concatenate(cols, axis=-1), deterministic=deterministic, rngs=rngs)
    return {"logits_BxT": self.heads(h_BxD[:, None])[:, 0], "h_BxD": h_BxD}


class LateFusion(nnx.Module):
  """Per-modality encoders and heads; the logit is the mean over observed modalities."""

  def __init__(self, input_dims: Sequence[int], n_tasks: int, dim: int, dropout: float, *,
               rngs: nnx.Rngs, embedding: EmbeddingSpec | None = None):
    self.encoders = ModalityEncoders(input_dims, dim, dropout, rngs=rngs, embedding=embedding)
    self.heads = TaskHeads(len(input_dims), n_tasks, dim, rngs=rngs)

  def __call__(self, x: Sequence[Array], present_BxM: Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None, with_aux: bool = True) -> dict[str, Any]:
    del with_aux  # no auxiliary outputs
    present_BxM = present_BxM.astype(bool)
    e_BxMxD = self.encoders(x, present_BxM, deterministic=deterministic, rngs=rngs)
    per_BxMxT = self.heads(e_BxMxD)
    count_Bx1 = jnp.maximum(present_BxM.sum(-1, keepdims=True), 1).astype(per_BxMxT.dtype)
    logits_BxT = jnp.where(present_BxM[..., None], per_BxMxT, 0.0).sum(1) / count_Bx1
    return {"logits_BxT": logits_BxT, "modality_logits_BxMxT": per_BxMxT}


class MissingToken(nnx.Module):
  """A learned token per absent modality, unmasked transformer over all M tokens."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs,
               embedding: EmbeddingSpec | None = None):
    m, d = cfg.n_modalities, cfg.dim
    self.encoders = ModalityEncoders(cfg.input_dims, d, cfg.dropout, rngs=rngs,
                                     embedding=embedding)
    self.missing_MxD = nnx.Param(0.02 * jax.random.normal(rngs.params(), (m, d)))
    self.modality_emb_MxD = nnx.Param(0.02 * jax.random.normal(rngs.params(), (m, d)))
    self.fusion = Fusion(cfg, rngs=rngs)
    self.heads = TaskHeads(1, cfg.n_tasks, d, rngs=rngs)

  def __call__(self, x: Sequence[Array], present_BxM: Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None, with_aux: bool = True) -> dict[str, Any]:
    del with_aux  # no auxiliary outputs
    present_BxM = present_BxM.astype(bool)
    kw = dict(deterministic=deterministic, rngs=rngs)
    e_BxMxD = self.encoders(x, present_BxM, **kw)
    tok_BxMxD = jnp.where(present_BxM[..., None], e_BxMxD, self.missing_MxD[...])
    tok_BxMxD = tok_BxMxD + self.modality_emb_MxD[...]
    h_BxD = self.fusion(tok_BxMxD, jnp.ones_like(present_BxM), **kw)
    return {"logits_BxT": self.heads(h_BxD[:, None])[:, 0], "h_BxD": h_BxD}
