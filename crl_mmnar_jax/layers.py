"""Building blocks shared by CRL-MMNAR (`model.py`) and the neural baselines (`methods/`).

Every block is Flax NNX; a block's parameter names are part of the checkpoint layout of
every model that holds it.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array

MASKED_LOGIT = -1e9  # logit of a masked key or candidate (finite: an all-masked row stays finite)


class Constant(nnx.Variable):
  """A fixed array a model reads but never trains (zero-imputation fill values, reference
  training patients). Saved in checkpoints with the parameters; gradients and the
  optimizer (`wrt=nnx.Param`) ignore it."""


def lecun_stack(key: Array, shape: Sequence[int], n_group_axes: int = 1) -> Array:
  """A kernel stack (*groups, fan_in, fan_out), LeCun-normal per group; the leading
  `n_group_axes` axes are the groups (e.g. modalities, or modalities and tasks)."""
  init = jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1,
                                          batch_axis=tuple(range(n_group_axes)))
  return init(key, tuple(shape), jnp.float32)


def l2_normalize(x: Array, eps: float = 1e-6) -> Array:
  """`x` scaled to unit L2 norm along the last axis (`eps` keeps a zero vector finite)."""
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def split_points(input_dims: Sequence[int]) -> tuple[int, ...]:
  """Where the concatenated features of the modalities start (after the first)."""
  return tuple(int(i) for i in np.cumsum(input_dims)[:-1])


class MLPBlock(nnx.Module):
  """in -> hidden (LayerNorm, GELU, dropout) -> out (LayerNorm)."""

  def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float, *, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(d_in, d_hidden, rngs=rngs)
    self.ln1 = nnx.LayerNorm(d_hidden, rngs=rngs)
    self.drop = nnx.Dropout(dropout)
    self.fc2 = nnx.Linear(d_hidden, d_out, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d_out, rngs=rngs)

  def __call__(self, x: Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> Array:
    y = nnx.gelu(self.ln1(self.fc1(x)))
    y = self.drop(y, deterministic=deterministic, rngs=rngs)
    return self.ln2(self.fc2(y))


def encoder_blocks(input_dims: Sequence[int], dim: int, dropout: float, *,
                   rngs: nnx.Rngs) -> nnx.List:
  """One `in -> 2D (LayerNorm, GELU, dropout) -> D (LayerNorm)` MLPBlock per modality."""
  return nnx.List([MLPBlock(w, 2 * dim, dim, dropout, rngs=rngs) for w in input_dims])


def encode_modalities(blocks: Sequence[MLPBlock], x: Sequence[Array], present_BxM: Array, *,
                      deterministic: bool, rngs: nnx.Rngs | None) -> Array:
  """Encodings e_BxMxD; a missing modality's input is replaced by zeros before its block
  (`jnp.where`, so NaN/Inf inputs are harmless and its gradients exactly zero)."""
  return jnp.stack([block(jnp.where(present_BxM[:, j:j + 1], x_BxDm, 0.0),
                          deterministic=deterministic, rngs=rngs)
                    for j, (block, x_BxDm) in enumerate(zip(blocks, x))], axis=1)


class ModalityEncoders(nnx.Module):
  """One `in -> 2D -> D` MLP per modality (`encoder_blocks`); a missing modality's input is
  never read."""

  def __init__(self, input_dims: Sequence[int], dim: int, dropout: float, *, rngs: nnx.Rngs):
    self.blocks = encoder_blocks(input_dims, dim, dropout, rngs=rngs)

  def __call__(self, x: Sequence[Array], present_BxM: Array, *, deterministic: bool,
               rngs: nnx.Rngs | None) -> Array:
    """Encodings e_BxMxD (rows of missing modalities encode zeros, never their input)."""
    return encode_modalities(self.blocks, x, present_BxM, deterministic=deterministic,
                             rngs=rngs)


class TaskHeads(nnx.Module):
  """One `D -> D/2 -> 1` MLP per (group, task), vectorised (groups: 1, or one per modality)."""

  def __init__(self, n_groups: int, n_tasks: int, dim: int, *, rngs: nnx.Rngs):
    g, t, k = n_groups, n_tasks, dim // 2
    self.w1_GxTxDxK = nnx.Param(lecun_stack(rngs.params(), (g, t, dim, k), n_group_axes=2))
    self.b1_GxTxK = nnx.Param(jnp.zeros((g, t, k)))
    self.w2_GxTxKx1 = nnx.Param(lecun_stack(rngs.params(), (g, t, k, 1), n_group_axes=2))
    self.b2_GxT = nnx.Param(jnp.zeros((g, t)))

  def __call__(self, h_BxGxD: Array) -> Array:
    """Logits (B, G, T)."""
    y = nnx.gelu(jnp.einsum("bgd,gtdk->bgtk", h_BxGxD, self.w1_GxTxDxK[...]) + self.b1_GxTxK[...])
    return jnp.einsum("bgtk,gtko->bgto", y, self.w2_GxTxKx1[...])[..., 0] + self.b2_GxT[...]


class FusionSpec(Protocol):
  """The fusion's width and depth (`model.ModelConfig` is one)."""

  dim: int
  n_layers: int
  n_heads: int
  mlp_ratio: int
  dropout: float


class FusionLayer(nnx.Module):
  """Pre-LN transformer layer over modality tokens; masked keys get no attention."""

  def __init__(self, dim: int, n_heads: int, mlp_ratio: int, dropout: float, *, rngs: nnx.Rngs):
    self.n_heads = n_heads
    self.ln_attn = nnx.LayerNorm(dim, rngs=rngs)
    self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)
    self.ln_mlp = nnx.LayerNorm(dim, rngs=rngs)
    self.fc1 = nnx.Linear(dim, mlp_ratio * dim, rngs=rngs)
    self.fc2 = nnx.Linear(mlp_ratio * dim, dim, rngs=rngs)
    self.drop = nnx.Dropout(dropout)

  def __call__(self, x_BxMxD: Array, mask_BxM: Array, *, deterministic: bool,
               rngs: nnx.Rngs | None) -> Array:
    b, m, d = x_BxMxD.shape
    h = self.n_heads
    q, k, v = jnp.split(self.qkv(self.ln_attn(x_BxMxD)), 3, axis=-1)
    q, k, v = (a.reshape(b, m, h, d // h) for a in (q, k, v))
    logits_BxHxMxM = jnp.einsum("bqhc,bkhc->bhqk", q, k) / jnp.sqrt(d // h).astype(q.dtype)
    logits_BxHxMxM = jnp.where(mask_BxM[:, None, None, :], logits_BxHxMxM, MASKED_LOGIT)
    attn = jax.nn.softmax(logits_BxHxMxM, axis=-1)
    attn = self.drop(attn, deterministic=deterministic, rngs=rngs)
    y = jnp.einsum("bhqk,bkhc->bqhc", attn, v).reshape(b, m, d)
    x_BxMxD = x_BxMxD + self.drop(self.out(y), deterministic=deterministic, rngs=rngs)
    y = self.fc2(nnx.gelu(self.fc1(self.ln_mlp(x_BxMxD))))
    return x_BxMxD + self.drop(y, deterministic=deterministic, rngs=rngs)


class Fusion(nnx.Module):
  """L fusion layers, final LayerNorm, masked mean over the observed tokens."""

  def __init__(self, cfg: FusionSpec, *, rngs: nnx.Rngs):
    self.layers = nnx.List([
        FusionLayer(cfg.dim, cfg.n_heads, cfg.mlp_ratio, cfg.dropout, rngs=rngs)
        for _ in range(cfg.n_layers)])
    self.ln = nnx.LayerNorm(cfg.dim, rngs=rngs)

  def __call__(self, tokens_BxMxD: Array, mask_BxM: Array, *, deterministic: bool,
               rngs: nnx.Rngs | None) -> Array:
    x = tokens_BxMxD
    for layer in self.layers:
      x = layer(x, mask_BxM, deterministic=deterministic, rngs=rngs)
    x = jnp.where(mask_BxM[..., None], self.ln(x), 0.0)
    count_Bx1 = jnp.maximum(mask_BxM.sum(-1, keepdims=True), 1).astype(x.dtype)
    return x.sum(1) / count_Bx1
