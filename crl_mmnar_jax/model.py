"""The CRL-MMNAR model (Flax NNX): parameters only; its building blocks live in
`layers.py`, its losses in `losses.py`.

Shapes: B patients, M modalities, T tasks, D model width, P contrastive width.

    e_m      = Enc_m(x_m)                                  (encoders, one per modality)
    z        = MissEmb(δ)                                  (missingness embedding)
    token_m  = (e_m ⊙ σ(W_m z + b_m) + t_m) · δ_m          (gating + modality tokens)
    h        = masked_mean(Fusion(tokens, mask=δ), δ)      (masked transformer fusion)
    logit_t  = Head_t(h)                                   (one head per task)
    ê_m      = Rec_m(h_{-m})   with h_{-m} the fusion of the observed tokens except m
    (a_m, b_m) = (normalize(P_m e_m), normalize(P'_m ê_m))  (InfoNCE pair)

In training, `cfg.rec_drops = k` in 1..M-1 draws k observed modalities per patient to
leave out (one fusion copy each) instead of every one; the losses reweight the drawn
pairs by 1 / P(drawn) (`draw_drops`, docs/design.md, "The method", 6-7).

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

from crl_mmnar_jax.layers import (
  Fusion,
  GroupedRows,
  Hyper,
  MLPBlock,
  NumEmbeddings,
  encode_modalities,
  encoder_blocks,
  l2_normalize,
  lecun_stack,
)
from crl_mmnar_jax.losses import LossWeights

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture; the `use_*` switches are the paper's ablations. The defaults are the
  command line's (`model.*` and `loss.rec_drops` in `crl_mmnar_jax.config`)."""

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
  rec_drops: int = 1                       # L_rec/L_con in training: each patient drops this
                                           # many random observed modalities (0 or >= M:
                                           # every one, the exact leave-one-out)

  def __post_init__(self):
    if not self.input_dims or any(d < 1 for d in self.input_dims):
      raise ValueError(f"input_dims must be positive widths, got {self.input_dims}")
    if self.dim % self.n_heads:
      raise ValueError(f"dim={self.dim} must be divisible by n_heads={self.n_heads}")
    if self.miss_head not in ("bce", "pattern"):
      raise ValueError(f"miss_head must be 'bce' or 'pattern', got {self.miss_head!r}")
    if self.miss_head == "pattern" and len(self.input_dims) > 12:
      raise ValueError("miss_head='pattern' needs 2^M classes: use 'bce' for M > 12")
    if self.rec_drops < 0:
      raise ValueError(f"rec_drops must be >= 0 (0: all), got {self.rec_drops}")
    if self.use_contrastive and not self.use_reconstruction:
      # L_con compares e_m with the reconstruction ê_m, so it needs the decoders.
      raise ValueError("use_contrastive=True requires use_reconstruction=True")

  @property
  def n_modalities(self) -> int:
    return len(self.input_dims)


class CRLMMNAR(nnx.Module):
  """CRL-MMNAR: encoders, missingness gating, masked fusion, LOO reconstruction, heads."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs,
               embedding: NumEmbeddings | None = None,
               loss_weights: LossWeights | None = None):
    """`embedding`: a numerical-feature embedding before each encoder
    (`embeddings.EmbeddingSpec`); None: plain MLP encoders. `loss_weights`: the
    training objective's weights (pred, miss, rec, con), held as data (`Hyper`) and
    returned by a training call as `loss_weights_4` for `losses.total_loss`, so runs
    that differ only in them share compiled programs; None: `LossWeights()`."""
    self.cfg = cfg
    w = LossWeights() if loss_weights is None else loss_weights
    self.loss_weights_4 = Hyper(jnp.asarray([w.pred, w.miss, w.rec, w.con], jnp.float32))
    m, d, t = cfg.n_modalities, cfg.dim, cfg.n_tasks
    self.encoders = encoder_blocks(cfg.input_dims, d, cfg.dropout, rngs=rngs,
                                   embedding=embedding)
    if cfg.use_missingness_embedding:
      self.miss_embed = MLPBlock(m, d, d, cfg.dropout, rngs=rngs)
      self.gate_w_MxDxD = nnx.Param(lecun_stack(rngs.params(), (m, d, d)))
      self.gate_b_MxD = nnx.Param(jnp.zeros((m, d)))
      n_miss_out = m if cfg.miss_head == "bce" else 2 ** m
      self.miss_out = nnx.Linear(d, n_miss_out, rngs=rngs)
    if cfg.use_modality_tokens:
      self.modality_emb_MxD = nnx.Param(0.02 * jax.random.normal(rngs.params(), (m, d)))
    self.fusion = Fusion(cfg, rngs=rngs)
    if cfg.use_reconstruction:
      self.rec_w1 = nnx.Param(lecun_stack(rngs.params(), (m, d, 2 * d)))
      self.rec_b1 = nnx.Param(jnp.zeros((m, 2 * d)))
      self.rec_w2 = nnx.Param(lecun_stack(rngs.params(), (m, 2 * d, d)))
      self.rec_b2 = nnx.Param(jnp.zeros((m, d)))
    if cfg.use_contrastive:
      self.proj_e = nnx.Param(lecun_stack(rngs.params(), (m, d, cfg.proj_dim)))
      self.proj_rec = nnx.Param(lecun_stack(rngs.params(), (m, d, cfg.proj_dim)))
    self.head_w1 = nnx.Param(lecun_stack(rngs.params(), (t, d, d // 2)))
    self.head_b1 = nnx.Param(jnp.zeros((t, d // 2)))
    self.head_w2 = nnx.Param(lecun_stack(rngs.params(), (t, d // 2, 1)))
    self.head_b2 = nnx.Param(jnp.zeros((t, 1)))

  def encode(self, x: Sequence[Array], present_BxM: Array, *, deterministic: bool,
             rngs: nnx.Rngs | None) -> Array:
    """Per-modality encodings e_BxMxD; missing inputs are never read."""
    return encode_modalities(self.encoders, x, present_BxM, deterministic=deterministic,
                             rngs=rngs)

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
    aux = with_aux and cfg.use_reconstruction
    if aux:
      drop_KxB, draw_BxM = self.draw_drops(present_BxM, **kw)
      h_BxD, h_KxBxD = self.fusion.with_drops(tok_BxMxD, present_BxM, drop_KxB, **kw)
    else:
      h_BxD = self.fusion(tok_BxMxD, present_BxM, **kw)
    out: dict[str, Any] = {"logits_BxT": self.heads(h_BxD), "h_BxD": h_BxD}
    if z_BxD is not None:
      out["z_BxD"] = z_BxD
      out["miss_logits"] = self.miss_out(z_BxD)
    if aux:
      out.update(self.reconstruct(e_BxMxD, h_KxBxD, drop_KxB, draw_BxM, present_BxM))
    if not deterministic:                      # a training call: the loss reads them
      out["loss_weights_4"] = self.loss_weights_4[...]
    return out

  def draw_drops(self, present_BxM: Array, *, deterministic: bool,
                 rngs: nnx.Rngs | None) -> tuple[Array, Array | None]:
    """Which modality each leave-one-out copy drops: `drop_KxB` (copy k of patient b
    drops modality `drop_KxB[k, b]`) and the importance weights `draw_BxM` of the drawn
    (patient, modality) pairs.

    Exact (`rec_drops` 0 or >= M, or a deterministic call): K = M copies, copy k drops
    modality k, weights None (all 1). Random (training with 0 < rec_drops = k < M):
    each patient drops min(k, n) of its n observed modalities, uniformly without
    replacement (Gumbel top-k on the "dropout" stream, so a pure function of the
    step's key); a drawn pair has weight n / min(k, n) = 1 / P(drawn) and an undrawn
    one 0, so weighted sums over drawn pairs are unbiased for sums over all pairs.
    Patients with fewer than two observed modalities draw nothing.
    """
    b, m = present_BxM.shape
    k = self.cfg.rec_drops
    if deterministic or k == 0 or k >= m:
      return jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32)[:, None], (m, b)), None
    if rngs is None:
      raise ValueError("random rec_drops need rngs (a 'dropout' stream)")
    g_BxM = jax.random.gumbel(rngs.dropout(), (b, m))
    _, drop_BxK = jax.lax.top_k(jnp.where(present_BxM, g_BxM, -jnp.inf), k)
    n_B = present_BxM.sum(-1)
    k_B = jnp.minimum(k, n_B)
    slot_BxK = (jnp.arange(k) < k_B[:, None]) & (n_B >= 2)[:, None]
    hit_BxM = jnp.any(jax.nn.one_hot(drop_BxK, m, dtype=bool) & slot_BxK[..., None], axis=1)
    ipw_B = n_B.astype(jnp.float32) / jnp.maximum(k_B, 1).astype(jnp.float32)
    return drop_BxK.T.astype(jnp.int32), jnp.where(hit_BxM, ipw_B[:, None], 0.0)

  def reconstruct(self, e_BxMxD: Array, h_KxBxD: Array, drop_KxB: Array,
                  draw_BxM: Array | None, present_BxM: Array) -> dict[str, Array]:
    """ê_m = Rec_m(h_{-m}) from the copies' fused `h_KxBxD` (see `draw_drops`), the
    contrastive projections, and the masks the losses need.

    Exact path: copy k is modality k's, one batched matmul per modality. Random drops:
    each copy row needs its own modality's decoder; the rows are grouped by modality
    into tiles (`layers.GroupedRows`) so that each row runs one decoder, not M."""
    b, m, d = e_BxMxD.shape
    k = h_KxBxD.shape[0]
    w1, b1, w2, b2 = (p[...] for p in (self.rec_w1, self.rec_b1, self.rec_w2, self.rec_b2))
    con_rec_BxMxP = None
    if draw_BxM is not None and GroupedRows.worthwhile(k * b, m):
      rows = GroupedRows(drop_KxB.reshape(-1), m)
      g_T = rows.group_T
      x_TxRxD = rows.to_tiles(h_KxBxD.reshape(k * b, d))
      y = nnx.gelu(jnp.einsum("trd,tdh->trh", x_TxRxD, w1[g_T]) + b1[g_T][:, None])
      rec_TxRxD = jnp.einsum("trh,thd->trd", y, w2[g_T]) + b2[g_T][:, None]
      slot_KxBxM = jax.nn.one_hot(drop_KxB, m, dtype=rec_TxRxD.dtype)   # no collisions:
      to_bm = lambda y_TxRxF: jnp.einsum(                             # drops are distinct
          "kbm,kbf->bmf", slot_KxBxM, rows.from_tiles(y_TxRxF).reshape(k, b, -1))
      rec_BxMxD = to_bm(rec_TxRxD)
      if self.cfg.use_contrastive:
        con_rec_BxMxP = to_bm(l2_normalize(
            jnp.einsum("trd,tdp->trp", rec_TxRxD, self.proj_rec[...][g_T])))
    else:
      if draw_BxM is None:                       # copy k dropped modality k
        h_loo_MxBxD = h_KxBxD
      else:                                      # each copy to its modality's slot
        h_loo_MxBxD = jnp.einsum("kbm,kbd->mbd",
                                 jax.nn.one_hot(drop_KxB, m, dtype=h_KxBxD.dtype), h_KxBxD)
      y = nnx.gelu(jnp.einsum("mbd,mdh->mbh", h_loo_MxBxD, w1) + b1[:, None])
      rec_BxMxD = (jnp.einsum("mbh,mhd->mbd", y, w2) + b2[:, None]).transpose(1, 0, 2)
      if self.cfg.use_contrastive:
        con_rec_BxMxP = l2_normalize(jnp.einsum("bmd,mdp->bmp", rec_BxMxD, self.proj_rec[...]))
    n_obs_B = present_BxM.sum(-1)
    out = {"e_BxMxD": e_BxMxD, "rec_BxMxD": rec_BxMxD,
           "rec_valid_BxM": present_BxM & (n_obs_B >= 2)[:, None]}
    if draw_BxM is not None:
      out["rec_draw_BxM"] = draw_BxM
    if self.cfg.use_contrastive:
      out["con_e_BxMxP"] = l2_normalize(jnp.einsum("bmd,mdp->bmp", e_BxMxD, self.proj_e[...]))
      out["con_rec_BxMxP"] = con_rec_BxMxP
    return out

