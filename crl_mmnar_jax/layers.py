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


class Hyper(Constant):
  """A hyperparameter held as data of the model's state (a dropout rate, the loss
  weights), not as a constant of its compiled programs: models that differ only in it
  lower to the same program (one compile, then cache hits) and can be stacked on one
  vmapped step, each member with its own value."""


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


class ByteDropout(nnx.Module):
  """Inverted dropout with one random byte per element (`nnx.Dropout`'s interface and
  "dropout" stream): four elements share one 32-bit threefry draw, which makes the mask
  about 3x cheaper on CPU than `nnx.Dropout`'s 32-bit uniforms. The rate is rounded to
  a multiple of 1/256 (0.1 -> 26/256 ≈ 0.1016); kept values are scaled by the exact
  1 / P(keep), so the expectation is unchanged. A non-zero rate is data of the state
  (`Hyper`: rates 0.1 and 0.3 share one compiled program); a zero rate compiles no
  mask at all."""

  def __init__(self, rate: float):
    threshold = int(round(rate * 256))
    self.threshold = Hyper(jnp.asarray(threshold, jnp.int32)) if threshold else None

  def __call__(self, x: Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> Array:
    if deterministic or self.threshold is None:
      return x
    if rngs is None:
      raise ValueError("dropout with deterministic=False needs rngs (a 'dropout' stream)")
    *lead, last = x.shape
    words = -(-last // 4)
    bits = jax.random.bits(rngs.dropout(), (*lead, words), jnp.uint32)
    bytes_ = jax.lax.bitcast_convert_type(bits, jnp.uint8).reshape(*lead, 4 * words)
    t = self.threshold[...]
    keep = bytes_[..., :last].astype(jnp.int32) >= t
    scale = 256.0 / jnp.maximum(256 - t, 1).astype(jnp.float32)   # rate 1: nothing kept
    return jnp.where(keep, x * scale.astype(x.dtype), 0.0).astype(x.dtype)


class MLPBlock(nnx.Module):
  """in -> hidden (LayerNorm, GELU, dropout) -> out (LayerNorm)."""

  def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float, *, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(d_in, d_hidden, rngs=rngs)
    self.ln1 = nnx.LayerNorm(d_hidden, rngs=rngs)
    self.drop = ByteDropout(dropout)
    self.fc2 = nnx.Linear(d_hidden, d_out, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d_out, rngs=rngs)

  def __call__(self, x: Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> Array:
    y = nnx.gelu(self.ln1(self.fc1(x)))
    y = self.drop(y, deterministic=deterministic, rngs=rngs)
    return self.ln2(self.fc2(y))


class NumEmbeddings(Protocol):
  """Builds one numerical-feature embedding per modality (`embeddings.EmbeddingSpec`):
  each maps (B, F) to (B, F, K) and has the attribute `dim` (= K)."""

  def modules(self, input_dims: Sequence[int], *, rngs: nnx.Rngs) -> list[nnx.Module]: ...


class EmbeddedMLPBlock(nnx.Module):
  """A numerical-feature embedding (B, F) -> (B, F, K), flattened, then an `MLPBlock`
  `F·K -> hidden -> out`. Rows whose `present_Bx1` is False read neither their input nor
  their embedding: both are replaced by zeros (`jnp.where`, before and after the
  embedding, so NaN inputs are harmless and their gradients exactly zero)."""

  def __init__(self, embed: nnx.Module, n_features: int, d_hidden: int, d_out: int,
               dropout: float, *, rngs: nnx.Rngs):
    self.embed = embed
    self.mlp = MLPBlock(n_features * embed.dim, d_hidden, d_out, dropout, rngs=rngs)

  def __call__(self, x_BxF: Array, present_Bx1: Array, *, deterministic: bool,
               rngs: nnx.Rngs | None) -> Array:
    e_BxFxK = self.embed(jnp.where(present_Bx1, x_BxF, 0.0))
    e_BxFK = jnp.where(present_Bx1, e_BxFxK.reshape(x_BxF.shape[0], -1), 0.0)
    return self.mlp(e_BxFK, deterministic=deterministic, rngs=rngs)


def encoder_blocks(input_dims: Sequence[int], dim: int, dropout: float, *,
                   rngs: nnx.Rngs, embedding: NumEmbeddings | None = None) -> nnx.List:
  """One `in -> 2D (LayerNorm, GELU, dropout) -> D (LayerNorm)` MLPBlock per modality;
  with a numerical `embedding`, an `EmbeddedMLPBlock` whose MLP reads the F·K embedded
  features (the embeddings are created first, then the MLPs)."""
  if embedding is None:
    return nnx.List([MLPBlock(w, 2 * dim, dim, dropout, rngs=rngs) for w in input_dims])
  embeds = embedding.modules(input_dims, rngs=rngs)
  return nnx.List([EmbeddedMLPBlock(e, w, 2 * dim, dim, dropout, rngs=rngs)
                   for e, w in zip(embeds, input_dims)])


def encode_modalities(blocks: Sequence[MLPBlock | EmbeddedMLPBlock], x: Sequence[Array],
                      present_BxM: Array, *, deterministic: bool,
                      rngs: nnx.Rngs | None) -> Array:
  """Encodings e_BxMxD; a missing modality's input is replaced by zeros before its block
  (`jnp.where`, so NaN/Inf inputs are harmless and its gradients exactly zero)."""
  out = []
  for j, (block, x_BxDm) in enumerate(zip(blocks, x)):
    p_Bx1 = present_BxM[:, j:j + 1]
    if isinstance(block, EmbeddedMLPBlock):
      out.append(block(x_BxDm, p_Bx1, deterministic=deterministic, rngs=rngs))
    else:
      out.append(block(jnp.where(p_Bx1, x_BxDm, 0.0), deterministic=deterministic, rngs=rngs))
  return jnp.stack(out, axis=1)


class ModalityEncoders(nnx.Module):
  """One `in -> 2D -> D` MLP per modality (`encoder_blocks`, optionally after a numerical
  `embedding`); a missing modality's input is never read."""

  def __init__(self, input_dims: Sequence[int], dim: int, dropout: float, *, rngs: nnx.Rngs,
               embedding: NumEmbeddings | None = None):
    self.blocks = encoder_blocks(input_dims, dim, dropout, rngs=rngs, embedding=embedding)

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
    self.drop = ByteDropout(dropout)

  def __call__(self, x_BxMxD: Array, mask_BxM: Array, *, deterministic: bool,
               rngs: nnx.Rngs | None) -> Array:
    logits_BxHxMxM, v_BxMxHxC = self.attention_logits(x_BxMxD)
    return self.finish(x_BxMxD, logits_BxHxMxM, mask_BxM[:, None, None, :], v_BxMxHxC,
                       deterministic=deterministic, rngs=rngs)

  def attention_logits(self, x_BxMxD: Array) -> tuple[Array, Array]:
    """Scaled query-key logits (B, H, M, M) and values (B, M, H, C) of every token: the
    part of the layer that depends on the tokens only, never on the mask."""
    b, m, d = x_BxMxD.shape
    h = self.n_heads
    q, k, v = jnp.split(self.qkv(self.ln_attn(x_BxMxD)), 3, axis=-1)
    q, k, v = (a.reshape(b, m, h, d // h) for a in (q, k, v))
    scale = jnp.sqrt(d // h).astype(q.dtype)
    return jnp.einsum("bqhc,bkhc->bhqk", q, k) / scale, v

  def finish(self, x_NxJxD: Array, logits_NxHxJxM: Array, keys_NxHxJxM: Array,
             v_NxMxHxC: Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> Array:
    """The rest of the layer for J query tokens whose residual stream is `x_NxJxD`:
    masked softmax over the M keys (`keys_*` broadcastable, True = attend), attention
    output, MLP. Leading axes N may be several (e.g. copies × patients); `v` broadcasts
    against them, so copies share one value projection."""
    *lead, j, d = x_NxJxD.shape
    logits = jnp.where(keys_NxHxJxM, logits_NxHxJxM, MASKED_LOGIT)
    attn = jax.nn.softmax(logits, axis=-1)
    attn = self.drop(attn, deterministic=deterministic, rngs=rngs)
    y = jnp.einsum("...hjm,...mhc->...jhc", attn, v_NxMxHxC).reshape(*lead, j, d)
    x_NxJxD = x_NxJxD + self.drop(self.out(y), deterministic=deterministic, rngs=rngs)
    y = self.fc2(nnx.gelu(self.fc1(self.ln_mlp(x_NxJxD))))
    return x_NxJxD + self.drop(y, deterministic=deterministic, rngs=rngs)


def kept_positions(drop_KxB: Array, m: int) -> Array:
  """(K, B, M-1): the token positions a copy keeps when it drops `drop_KxB` (in order)."""
  j = jnp.arange(m - 1)
  return j + (j >= drop_KxB[..., None])


class GroupedRows:
  """N rows, each belonging to one of G groups (e.g. the modality whose decoder it
  needs), laid out in T tiles of R rows such that every tile holds one group only
  (each group's rows sorted together, padded to a multiple of R). Per-group weights are
  then applied tile by tile (`weights[group_T]`): about N + G·R rows of work instead of
  the G·N of applying every group's weights to every row. Static shapes:
  T = N // R + G bounds the tiles any assignment needs. Rows are placed by a sort
  over all N rows (under data parallelism, across devices).
  """

  def __init__(self, group_N: Array, n_groups: int):
    n, g = group_N.shape[0], n_groups
    self.rows = int(np.clip(2 ** round(np.log2(max(n / (2 * g), 1.0))), 16, 64))
    self.n_tiles = n // self.rows + g
    counts_G = jnp.bincount(group_N, length=g)
    padded_G = (counts_G + self.rows - 1) // self.rows * self.rows
    end_G = jnp.cumsum(padded_G)
    order_N = jnp.argsort(group_N, stable=True)
    sorted_N = group_N[order_N]
    rank_N = jnp.arange(n) - (jnp.cumsum(counts_G) - counts_G)[sorted_N]
    pos_sorted_N = (end_G - padded_G)[sorted_N] + rank_N
    self.pos_N = jnp.zeros(n, jnp.int32).at[order_N].set(pos_sorted_N.astype(jnp.int32))
    tile_start_T = jnp.arange(self.n_tiles) * self.rows
    self.group_T = jnp.minimum(jnp.searchsorted(end_G, tile_start_T, side="right"), g - 1)

  @staticmethod
  def worthwhile(n: int, n_groups: int) -> bool:
    """Whether tiles do less work than applying every group's weights to every row."""
    rows = int(np.clip(2 ** round(np.log2(max(n / (2 * n_groups), 1.0))), 16, 64))
    return (n // rows + n_groups) * rows < n_groups * n

  def to_tiles(self, x_NxF: Array) -> Array:
    """(T, R, F): the rows in their tiles, zeros in the padding."""
    buf = jnp.zeros((self.n_tiles * self.rows,) + x_NxF.shape[1:], x_NxF.dtype)
    return buf.at[self.pos_N].set(x_NxF).reshape(self.n_tiles, self.rows, *x_NxF.shape[1:])

  def from_tiles(self, y_TxRxF: Array) -> Array:
    """(N, F): each row's result, in the original order."""
    return y_TxRxF.reshape(self.n_tiles * self.rows, *y_TxRxF.shape[2:])[self.pos_N]


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
    return self.pool(x, mask_BxM)

  def pool(self, x_NxJxD: Array, mask_NxJ: Array) -> Array:
    """Final LayerNorm, then the mean over the tokens where `mask` is True."""
    x = jnp.where(mask_NxJ[..., None], self.ln(x_NxJxD), 0.0)
    count = jnp.maximum(mask_NxJ.sum(-1, keepdims=True), 1).astype(x.dtype)
    return x.sum(-2) / count

  def with_drops(self, tokens_BxMxD: Array, mask_BxM: Array, drop_KxB: Array, *,
                 deterministic: bool, rngs: nnx.Rngs | None) -> tuple[Array, Array]:
    """The fused `h_BxD` of every patient and, for each of K copies, `h_KxBxD` with the
    token `drop_KxB[k, b]` left out (masked from attention and pooling), in one pass.

    Equal to K masked calls of the fusion (to float tolerance, tested) but cheaper:
    the first layer's LayerNorm, QKV projection and query-key logits depend on the
    tokens only, so the full pass and every copy share them; a copy then runs the rest
    of the network on its M-1 kept tokens only (the dropped token's query, attention
    output and MLP are never computed).
    """
    b, m, d = tokens_BxMxD.shape
    k = drop_KxB.shape[0]
    keep_KxBxJ = kept_positions(drop_KxB, m)
    keys_KxBxM = mask_BxM[None] & (jnp.arange(m) != drop_KxB[..., None])
    qmask_KxBxJ = jnp.take_along_axis(jnp.broadcast_to(mask_BxM, (k, b, m)), keep_KxBxJ, -1)
    xc_KxBxJxD = jnp.take_along_axis(tokens_BxMxD[None], keep_KxBxJ[..., None], axis=2)
    x_BxMxD = tokens_BxMxD
    kw = dict(deterministic=deterministic, rngs=rngs)
    for i, layer in enumerate(self.layers):
      if i == 0:   # shared by the full pass and the copies
        logits_BxHxMxM, v_BxMxHxC = layer.attention_logits(x_BxMxD)
        x_BxMxD = layer.finish(x_BxMxD, logits_BxHxMxM, mask_BxM[:, None, None, :],
                               v_BxMxHxC, **kw)
        rows = keep_KxBxJ[:, :, None, :, None]             # the kept queries' rows
        logits_KxBxHxJxM = jnp.take_along_axis(logits_BxHxMxM[None], rows, axis=3)
        xc_KxBxJxD = layer.finish(xc_KxBxJxD, logits_KxBxHxJxM,
                                  keys_KxBxM[:, :, None, None, :], v_BxMxHxC, **kw)
      else:
        x_BxMxD = layer(x_BxMxD, mask_BxM, **kw)
        xc = layer(xc_KxBxJxD.reshape(k * b, m - 1, d), qmask_KxBxJ.reshape(k * b, m - 1),
                   **kw)
        xc_KxBxJxD = xc.reshape(k, b, m - 1, d)
    return self.pool(x_BxMxD, mask_BxM), self.pool(xc_KxBxJxD, qmask_KxBxJ)
