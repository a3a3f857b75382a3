"""The CRL-MMNAR model (Flax NNX): parameters only; losses live in `losses.py`.

Shapes: B patients, M modalities, T tasks, D model width, P contrastive width.

    e_m      = Enc_m(x_m)                                  (encoders, one per modality)
    z        = MissEmb(δ)                                  (missingness embedding)
    token_m  = (e_m ⊙ σ(W_m z + b_m) + t_m) · δ_m          (gating + modality tokens)
    h        = masked_mean(Fusion(tokens, mask=δ), δ)      (masked transformer fusion)
    logit_t  = Head_t(h)                                   (one head per task)
    ê_m      = Rec_m(h_{-m})   with h_{-m} the fusion of the observed tokens except m
    (a_m, b_m) = (normalize(P_m e_m), normalize(P'_m ê_m))  (InfoNCE pair)

A missing modality contributes nothing: its input is replaced by zeros before its
encoder (`jnp.where`, so even NaN/Inf inputs are harmless and gradients are exactly
zero), its token is zeroed, and it is masked out of attention and pooling.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array
_NEG = -1e9  # attention logit for masked keys (finite: an all-masked row stays finite)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture; the `use_*` switches are the paper's ablations."""

  input_dims: tuple[int, ...]
  n_tasks: int
  dim: int = 128
  n_layers: int = 1
  n_heads: int = 8
  mlp_ratio: int = 4
  dropout: float = 0.1
  proj_dim: int = 64
  use_missingness_embedding: bool = True   # z, gating and the L_miss head
  use_modality_tokens: bool = True         # learned t_m
  use_reconstruction: bool = True          # Rec_m decoders (L_rec)
  use_contrastive: bool = True             # P_m, P'_m projections (L_con)
  miss_head: str = "bce"                   # "bce": per-modality; "pattern": 2^M softmax

  def __post_init__(self):
    if not self.input_dims or any(d < 1 for d in self.input_dims):
      raise ValueError(f"input_dims must be positive widths, got {self.input_dims}")
    if self.dim % self.n_heads:
      raise ValueError(f"dim={self.dim} must be divisible by n_heads={self.n_heads}")
    if self.miss_head not in ("bce", "pattern"):
      raise ValueError(f"miss_head must be 'bce' or 'pattern', got {self.miss_head!r}")
    if self.miss_head == "pattern" and len(self.input_dims) > 12:
      raise ValueError("miss_head='pattern' needs 2^M classes: use 'bce' for M > 12")
    if self.use_contrastive and not self.use_reconstruction:
      # L_con compares e_m with the reconstruction ê_m, so it needs the decoders.
      raise ValueError("use_contrastive=True requires use_reconstruction=True")

  @property
  def n_modalities(self) -> int:
    return len(self.input_dims)


def _stacked(key: Array, shape: Sequence[int]) -> nnx.Param:
  """A (G, fan_in, fan_out) kernel stack, LeCun-normal per group."""
  init = jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
  return nnx.Param(init(key, tuple(shape), jnp.float32))


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
    logits_BxHxMxM = jnp.where(mask_BxM[:, None, None, :], logits_BxHxMxM, _NEG)
    attn = jax.nn.softmax(logits_BxHxMxM, axis=-1)
    attn = self.drop(attn, deterministic=deterministic, rngs=rngs)
    y = jnp.einsum("bhqk,bkhc->bqhc", attn, v).reshape(b, m, d)
    x_BxMxD = x_BxMxD + self.drop(self.out(y), deterministic=deterministic, rngs=rngs)
    y = self.fc2(nnx.gelu(self.fc1(self.ln_mlp(x_BxMxD))))
    return x_BxMxD + self.drop(y, deterministic=deterministic, rngs=rngs)


class Fusion(nnx.Module):
  """L fusion layers, final LayerNorm, masked mean over the observed tokens."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
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


class CRLMMNAR(nnx.Module):
  """CRL-MMNAR: encoders, missingness gating, masked fusion, LOO reconstruction, heads."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    m, d, t = cfg.n_modalities, cfg.dim, cfg.n_tasks
    self.encoders = nnx.List([MLPBlock(w, 2 * d, d, cfg.dropout, rngs=rngs)
                              for w in cfg.input_dims])
    if cfg.use_missingness_embedding:
      self.miss_embed = MLPBlock(m, d, d, cfg.dropout, rngs=rngs)
      self.gate_w_MxDxD = _stacked(rngs.params(), (m, d, d))
      self.gate_b_MxD = nnx.Param(jnp.zeros((m, d)))
      n_miss_out = m if cfg.miss_head == "bce" else 2 ** m
      self.miss_out = nnx.Linear(d, n_miss_out, rngs=rngs)
    if cfg.use_modality_tokens:
      self.modality_emb_MxD = nnx.Param(0.02 * jax.random.normal(rngs.params(), (m, d)))
    self.fusion = Fusion(cfg, rngs=rngs)
    if cfg.use_reconstruction:
      self.rec_w1 = _stacked(rngs.params(), (m, d, 2 * d))
      self.rec_b1 = nnx.Param(jnp.zeros((m, 2 * d)))
      self.rec_w2 = _stacked(rngs.params(), (m, 2 * d, d))
      self.rec_b2 = nnx.Param(jnp.zeros((m, d)))
    if cfg.use_contrastive:
      self.proj_e = _stacked(rngs.params(), (m, d, cfg.proj_dim))
      self.proj_rec = _stacked(rngs.params(), (m, d, cfg.proj_dim))
    self.head_w1 = _stacked(rngs.params(), (t, d, d // 2))
    self.head_b1 = nnx.Param(jnp.zeros((t, d // 2)))
    self.head_w2 = _stacked(rngs.params(), (t, d // 2, 1))
    self.head_b2 = nnx.Param(jnp.zeros((t, 1)))

  def encode(self, x: Sequence[Array], present_BxM: Array, *, deterministic: bool,
             rngs: nnx.Rngs | None) -> Array:
    """Per-modality encodings e_BxMxD; missing inputs are never read."""
    es = []
    for j, (enc, x_BxDm) in enumerate(zip(self.encoders, x)):
      x_BxDm = jnp.where(present_BxM[:, j:j + 1], x_BxDm, 0.0)
      es.append(enc(x_BxDm, deterministic=deterministic, rngs=rngs))
    return jnp.stack(es, axis=1)

  def tokens(self, e_BxMxD: Array, present_BxM: Array, *, deterministic: bool,
             rngs: nnx.Rngs | None) -> tuple[Array, Array | None]:
    """Gated modality tokens (zero where missing) and the missingness embedding z."""
    cfg, tok, z_BxD = self.cfg, e_BxMxD, None
    if cfg.use_missingness_embedding:
      z_BxD = self.miss_embed(present_BxM.astype(e_BxMxD.dtype), deterministic=deterministic,
                              rngs=rngs)
      gate_BxMxD = jax.nn.sigmoid(
          jnp.einsum("bd,mde->bme", z_BxD, self.gate_w_MxDxD[...]) + self.gate_b_MxD[...])
      tok = tok * gate_BxMxD
    if cfg.use_modality_tokens:
      tok = tok + self.modality_emb_MxD[...]
    return jnp.where(present_BxM[..., None], tok, 0.0), z_BxD

  def heads(self, h_BxD: Array) -> Array:
    """Task logits (B, T): one D -> D/2 -> 1 MLP per task, vectorised over tasks."""
    y = nnx.gelu(jnp.einsum("bd,tdk->btk", h_BxD, self.head_w1[...]) + self.head_b1[...])
    return jnp.einsum("btk,tko->bto", y, self.head_w2[...])[..., 0] + self.head_b2[...][:, 0]

  def __call__(self, x: Sequence[Array], present_BxM: Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None, with_aux: bool = True) -> dict[str, Any]:
    """Forward pass. Returns a dict of named arrays (see module docstring).

    With `with_aux=False` only what prediction needs is computed (no leave-one-out
    copies), which is what evaluation uses.
    """
    cfg = self.cfg
    if len(x) != cfg.n_modalities:
      raise ValueError(f"got {len(x)} modality arrays, model has {cfg.n_modalities}")
    present_BxM = present_BxM.astype(bool)
    kw = dict(deterministic=deterministic, rngs=rngs)
    e_BxMxD = self.encode(x, present_BxM, **kw)
    tok_BxMxD, z_BxD = self.tokens(e_BxMxD, present_BxM, **kw)
    h_BxD = self.fusion(tok_BxMxD, present_BxM, **kw)
    out: dict[str, Any] = {"logits_BxT": self.heads(h_BxD), "h_BxD": h_BxD}
    if z_BxD is not None:
      out["z_BxD"] = z_BxD
      out["miss_logits"] = self.miss_out(z_BxD)
    if with_aux and cfg.use_reconstruction:
      out.update(self.leave_one_out(e_BxMxD, tok_BxMxD, present_BxM, **kw))
    return out

  def leave_one_out(self, e_BxMxD: Array, tok_BxMxD: Array, present_BxM: Array, *,
                    deterministic: bool, rngs: nnx.Rngs | None) -> dict[str, Array]:
    """Drops each modality in turn (M masked copies of the batch, one fusion call)."""
    b, m, d = tok_BxMxD.shape
    keep_MxM = ~jnp.eye(m, dtype=bool)                        # copy j drops modality j
    mask_MxBxM = present_BxM[None] & keep_MxM[:, None, :]
    tok_MxBxMxD = jnp.where(mask_MxBxM[..., None], tok_BxMxD[None], 0.0)
    h_loo = self.fusion(tok_MxBxMxD.reshape(m * b, m, d), mask_MxBxM.reshape(m * b, m),
                        deterministic=deterministic, rngs=rngs)
    h_loo_MxBxD = h_loo.reshape(m, b, d)
    y = nnx.gelu(jnp.einsum("mbd,mdk->mbk", h_loo_MxBxD, self.rec_w1[...])
                 + self.rec_b1[...][:, None])
    rec_MxBxD = jnp.einsum("mbk,mkd->mbd", y, self.rec_w2[...]) + self.rec_b2[...][:, None]
    rec_BxMxD = rec_MxBxD.transpose(1, 0, 2)
    n_obs_B = present_BxM.sum(-1)
    out = {"e_BxMxD": e_BxMxD, "rec_BxMxD": rec_BxMxD,
           "rec_valid_BxM": present_BxM & (n_obs_B >= 2)[:, None]}
    if self.cfg.use_contrastive:
      out["con_e_BxMxP"] = _normalize(jnp.einsum("bmd,mdp->bmp", e_BxMxD, self.proj_e[...]))
      out["con_rec_BxMxP"] = _normalize(
          jnp.einsum("bmd,mdp->bmp", rec_BxMxD, self.proj_rec[...]))
    return out


def _normalize(x: Array, eps: float = 1e-6) -> Array:
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)
