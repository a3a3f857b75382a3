"""M3Care, similar-patient imputation in latent space.

`m3care` (Zhang et al., "M3Care: Learning with Missing Modalities in Multimodal Healthcare
Data", KDD 2022): encode observed modalities; per-modality patient similarity with a
task-guided deep kernel, here `(1 - σ(ε_m)) cos(φ_m(e_i), φ_m(e_j)) + σ(ε_m) cos(e_i, e_j)` with a learned MLP φ_m and
mixing weight ε_m, defined only for pairs that both observe m; the patient similarity is
its mean over the modalities both patients observe. For every modality m, the
auxiliary latent of patient i is the similarity-weighted mean of e_jm over the similar
patients j that observe m, with softmax weights at a learned temperature (initial
`baseline.m3care_temperature`). A missing modality's latent is that auxiliary latent
(imputation in latent space); an observed one is adaptively mixed with it,
`α e + (1 - α) aux` with `α = σ(a·e)/(σ(a·e) + σ(b·aux))`, as in M3Care. The completed
tokens get modality embeddings and go through the masked transformer (a modality that no
similar patient has stays masked), masked mean pooling and the heads. Similar patients
are the other patients of the batch while training and a fixed reference sample of
training patients at evaluation (as for MUSE), never other validation or test patients,
so evaluation is batch-independent. Simplifications: cosine kernels with a softmax
temperature replace M3Care's multi-bandwidth Gaussian kernels (whose bandwidth comes from
the batch) and its learned hard threshold on dissimilar patients; one similarity-weighted
mean replaces its two graph-convolution layers; no stabilisation loss; masked mean
pooling and the shared heads replace its concatenation head.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from crl_mmnar_jax.layers import (
  MASKED_LOGIT,
  Fusion,
  ModalityEncoders,
  NumEmbeddings,
  TaskHeads,
  l2_normalize,
  lecun_stack,
)
from crl_mmnar_jax.methods.reference import ReferencePatients
from crl_mmnar_jax.model import ModelConfig

Array = jax.Array


class M3Care(nnx.Module):
  """Similar-patient imputation in latent space, masked transformer fusion.

  Similar patients: the rest of the batch in training mode (`deterministic=False`), the
  reference training patients at evaluation.
  """

  def __init__(self, cfg: ModelConfig, temperature: float, reference: ReferencePatients, *,
               rngs: nnx.Rngs, embedding: NumEmbeddings | None = None):
    m, d = cfg.n_modalities, cfg.dim
    self.encoders = ModalityEncoders(cfg.input_dims, d, cfg.dropout, rngs=rngs,
                                     embedding=embedding)
    self.kernel_w1_MxDxD = nnx.Param(lecun_stack(rngs.params(), (m, d, d)))
    self.kernel_b1_MxD = nnx.Param(jnp.zeros((m, d)))
    self.kernel_w2_MxDxD = nnx.Param(lecun_stack(rngs.params(), (m, d, d)))
    self.kernel_mix_M = nnx.Param(jnp.zeros((m,)))
    self.log_temperature = nnx.Param(jnp.log(jnp.float32(temperature)))
    self.adapt_self_MxD = nnx.Param(lecun_stack(rngs.params(), (m, d, 1))[..., 0])
    self.adapt_aux_MxD = nnx.Param(lecun_stack(rngs.params(), (m, d, 1))[..., 0])
    self.adapt_b_Mx2 = nnx.Param(jnp.zeros((m, 2)))
    self.modality_emb_MxD = nnx.Param(0.02 * jax.random.normal(rngs.params(), (m, d)))
    self.fusion = Fusion(cfg, rngs=rngs)
    self.heads = TaskHeads(1, cfg.n_tasks, d, rngs=rngs)
    self.reference = reference

  def similarity(self, a_BxMxD: Array, c_CxMxD: Array) -> Array:
    """Per-modality deep-kernel similarity (B, C, M), in [-1, 1]."""

    def deep(e_NxMxD):   # φ_m: a per-modality D -> D -> D MLP, then unit norm
      y = jnp.einsum("nmd,mde->nme", e_NxMxD, self.kernel_w1_MxDxD[...]) + self.kernel_b1_MxD[...]
      return l2_normalize(jnp.einsum("nmd,mde->nme", nnx.relu(y), self.kernel_w2_MxDxD[...]))

    mix_M = jax.nn.sigmoid(self.kernel_mix_M[...])
    cos_deep = jnp.einsum("bmp,cmp->bcm", deep(a_BxMxD), deep(c_CxMxD))
    cos_raw = jnp.einsum("bmp,cmp->bcm", l2_normalize(a_BxMxD), l2_normalize(c_CxMxD))
    return (1.0 - mix_M) * cos_deep + mix_M * cos_raw

  def aggregate(self, e_BxMxD: Array, present_BxM: Array, c_CxMxD: Array, c_present_CxM: Array,
                allowed_BxC: Array) -> tuple[Array, Array]:
    """(aux_BxMxD, has_aux_BxM): per modality, the similarity-softmax-weighted mean of the
    candidates' latents over allowed candidates that observe it and share at least one
    observed modality with the patient."""
    shared_BxCxM = present_BxM[:, None] & c_present_CxM[None]
    n_shared_BxC = shared_BxCxM.sum(-1)
    sim_BxC = jnp.where(shared_BxCxM, self.similarity(e_BxMxD, c_CxMxD), 0.0).sum(-1) \
        / jnp.maximum(n_shared_BxC, 1).astype(e_BxMxD.dtype)
    ok_BxCxM = (allowed_BxC & (n_shared_BxC > 0))[..., None] & c_present_CxM[None]
    logits_BxCxM = jnp.where(ok_BxCxM, (sim_BxC / jnp.exp(self.log_temperature[...]))[..., None],
                             MASKED_LOGIT)
    w_BxCxM = jnp.where(ok_BxCxM, jax.nn.softmax(logits_BxCxM, axis=1), 0.0)
    return jnp.einsum("bcm,cmd->bmd", w_BxCxM, c_CxMxD), ok_BxCxM.any(1)

  def __call__(self, x: Sequence[Array], present_BxM: Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None, with_aux: bool = True) -> dict[str, Any]:
    del with_aux  # no auxiliary outputs
    present_BxM = present_BxM.astype(bool)
    kw = dict(deterministic=deterministic, rngs=rngs)
    e_BxMxD = self.encoders(x, present_BxM, **kw)
    b = e_BxMxD.shape[0]
    if deterministic:
      ref_x, c_present_CxM = self.reference.inputs()
      c_CxMxD = self.encoders(ref_x, c_present_CxM, **kw)
      allowed_BxC = jnp.ones((b, c_present_CxM.shape[0]), bool)
    else:
      c_CxMxD, c_present_CxM, allowed_BxC = e_BxMxD, present_BxM, ~jnp.eye(b, dtype=bool)
    aux_BxMxD, has_BxM = self.aggregate(e_BxMxD, present_BxM, c_CxMxD, c_present_CxM,
                                        allowed_BxC)
    score_self = jax.nn.sigmoid(jnp.einsum("bmd,md->bm", e_BxMxD, self.adapt_self_MxD[...])
                                + self.adapt_b_Mx2[...][:, 0])
    score_aux = jax.nn.sigmoid(jnp.einsum("bmd,md->bm", aux_BxMxD, self.adapt_aux_MxD[...])
                               + self.adapt_b_Mx2[...][:, 1])
    alpha_BxMx1 = (score_self / (score_self + score_aux))[..., None]
    mixed_BxMxD = jnp.where(has_BxM[..., None],
                            alpha_BxMx1 * e_BxMxD + (1.0 - alpha_BxMx1) * aux_BxMxD, e_BxMxD)
    tok_BxMxD = jnp.where(present_BxM[..., None], mixed_BxMxD, aux_BxMxD)
    mask_BxM = present_BxM | has_BxM
    tok_BxMxD = jnp.where(mask_BxM[..., None], tok_BxMxD + self.modality_emb_MxD[...], 0.0)
    h_BxD = self.fusion(tok_BxMxD, mask_BxM, **kw)
    return {"logits_BxT": self.heads(h_BxD[:, None])[:, 0], "h_BxD": h_BxD,
            "imputed_BxM": has_BxM & ~present_BxM}
