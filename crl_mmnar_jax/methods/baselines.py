"""Baselines: the models `--config.method=NAME` selects besides CRL-MMNAR (`methods.py`).

Every neural baseline shares CRL-MMNAR's building blocks and capacity (`model.dim`,
`model.dropout`, `model.n_layers`, `model.n_heads`): per-modality encoders
`in -> 2D (LayerNorm, GELU, dropout) -> D (LayerNorm)` and one `D -> D/2 -> 1` head per
task, so that the comparison is about how each method treats missing modalities. Inputs
are standardised with training statistics (`data.standardize`), so a standardised 0 is
the training mean. No baseline ever reads a missing modality's input: it is replaced
(`jnp.where`, so NaN or 1e6 garbage is harmless) before anything else sees it.

`zero_impute_mlp` (early fusion, zero imputation): a missing modality's features are set
to the standardised value of a raw 0, `(0 - mean) / sd` per feature (training
statistics), then all features are concatenated into an MLP (`in -> D -> D`, LayerNorm,
GELU, dropout) and the task heads. This is `fillna(0)` on the raw features: for a
variable whose normal range is far from 0 (a heart rate) the fill value is extreme, which
is how the network can tell that the modality was missing. No indicators.

`mean_impute_mlp` (early fusion, mean imputation with missingness indicators): missing
features are the training mean (standardised 0) and the M indicators δ are appended.

`logreg` (the practitioner's default): one L2-regularised logistic regression per task on
[mean-imputed features, indicators], fitted by full-batch L-BFGS, L2 chosen on the
validation AUROC (`logreg_mean_impute`; also reported as `reference.logreg_mean_impute`
in every run).

`late_fusion`: one encoder and one set of task heads per modality; a patient's logit is
the mean of the logits of its observed modalities (missing ones are excluded exactly),
trained end to end on that mean logit.

`masked_transformer` (in `methods.py`): CRL-MMNAR's fusion without the missingness
embedding, the gates and the auxiliary losses, i.e. `CRLMMNAR` with
`use_missingness_embedding=use_reconstruction=use_contrastive=False`: encoders + modality
embeddings + a transformer whose attention and pooling skip missing modalities.

`missing_token` (the missing embeddings of FuseMoE, Han et al., NeurIPS 2024, and
Flex-MoE, Yun et al., NeurIPS 2024): every modality contributes a token; an absent
modality's token is a learned per-modality "missing" embedding (its input is never
read); tokens get modality embeddings and go through an unmasked transformer, mean
pooling over all M tokens, heads. Simplification: one embedding per modality (Flex-MoE
also indexes its bank by the observed combination) and no mixture-of-experts layer.

`muse` (Wu, Dadu, Tustison, Avants, Nalls, Sun, Faghri, "Multimodal Patient
Representation Learning with Missing Modalities and Labels", ICLR 2024): a bipartite
graph of patient nodes (initialised to ones) and M modality nodes (learned embeddings)
with an edge (i, m) only where patient i has modality m observed; the edge feature is the
modality's encoding. L layers of GraphSAGE-style message passing with edge features (the
message is ReLU(W [neighbour node, edge]), mean-aggregated, the update is
ReLU(W' [aggregate, node]); between layers node dropout and an edge update
ReLU(W'' [source, target, edge]) per direction) give the patient representation. During
training a second view drops edges as MUSE does (each patient with at least two edges,
with probability `baseline.muse_edge_dropout`, keeps a uniformly drawn 1..n-1 of its n
edges); the loss is the supervised loss on the full graph plus `baseline.muse_con_weight`
times the sum of MUSE's unsupervised consistency loss (symmetric InfoNCE between the two
views' projections, temperature `baseline.muse_temperature`, the batch as negatives)
and its supervised consistency loss (sigmoid cross-entropy of the view similarities
against "same label", pairs with both labels known, averaged over tasks).
Our choice for evaluation: in MUSE the modality nodes aggregate every patient of the
(mini-batch) graph, so a patient's prediction depends on who else is in the batch. Here
the graph is the training batch while training, as in MUSE, and at evaluation the
modality nodes aggregate a fixed reference sample of training patients
(`baseline.reference_size`, drawn by seed, stored with the model) and never the
evaluated patients: a patient's output is a function of its own observed modalities, the
parameters and that fixed training sample only. Simplifications: the shared encoders
and task heads stand in for MUSE's modality-specific extractors and classifier; the
supervised consistency loss is averaged over tasks (MUSE has one).

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

`gbt` (optional; `pip install -e ".[gbt]"`): gradient-boosted trees per task on all
features with NaN where a modality is missing (the trees learn where missing values go),
LightGBM if installed, else XGBoost; early stopping on the validation AUROC. Cells that
were "not measured" inside an observed modality were already set to the training mean by
`data.standardize`, so only whole missing modalities are NaN.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data import shards
from crl_mmnar_jax.model import Fusion, MLPBlock, ModelConfig

Array = jax.Array
_NEG = -1e9


# ----------------------------------------------------------------------------- blocks


class Constant(nnx.Variable):
  """A fixed array a model reads but never trains (zero-imputation fill values, reference
  training patients). Saved in checkpoints with the parameters; gradients and the
  optimizer (`wrt=nnx.Param`) ignore it."""


def _init(key: Array, shape: Sequence[int]) -> nnx.Param:
  """A (G, T, fan_in, fan_out) kernel stack, LeCun-normal per (group, task)."""
  init = jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0, 1))
  return nnx.Param(init(key, tuple(shape), jnp.float32))


def _split_points(input_dims: Sequence[int]) -> tuple[int, ...]:
  """Where the concatenated features of the modalities start (after the first)."""
  return tuple(int(i) for i in np.cumsum(input_dims)[:-1])


def _normalize(x: Array, eps: float = 1e-6) -> Array:
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class ModalityEncoders(nnx.Module):
  """One `in -> 2D -> D` MLP per modality; a missing modality's input is never read."""

  def __init__(self, input_dims: Sequence[int], dim: int, dropout: float, *, rngs: nnx.Rngs):
    self.blocks = nnx.List([MLPBlock(w, 2 * dim, dim, dropout, rngs=rngs) for w in input_dims])

  def __call__(self, x: Sequence[Array], present_BxM: Array, *, deterministic: bool,
               rngs: nnx.Rngs | None) -> Array:
    """Encodings e_BxMxD (rows of missing modalities encode zeros, never their input)."""
    return jnp.stack([block(jnp.where(present_BxM[:, j:j + 1], x_BxDm, 0.0),
                            deterministic=deterministic, rngs=rngs)
                      for j, (block, x_BxDm) in enumerate(zip(self.blocks, x))], axis=1)


class TaskHeads(nnx.Module):
  """One `D -> D/2 -> 1` MLP per (group, task), vectorised (groups: 1, or one per modality)."""

  def __init__(self, n_groups: int, n_tasks: int, dim: int, *, rngs: nnx.Rngs):
    g, t, k = n_groups, n_tasks, dim // 2
    self.w1_GxTxDxK = _init(rngs.params(), (g, t, dim, k))
    self.b1_GxTxK = nnx.Param(jnp.zeros((g, t, k)))
    self.w2_GxTxKx1 = _init(rngs.params(), (g, t, k, 1))
    self.b2_GxT = nnx.Param(jnp.zeros((g, t)))

  def __call__(self, h_BxGxD: Array) -> Array:
    """Logits (B, G, T)."""
    y = nnx.gelu(jnp.einsum("bgd,gtdk->bgtk", h_BxGxD, self.w1_GxTxDxK[...]) + self.b1_GxTxK[...])
    return jnp.einsum("bgtk,gtko->bgto", y, self.w2_GxTxKx1[...])[..., 0] + self.b2_GxT[...]


class ReferencePatients(nnx.Module):
  """A fixed sample of training patients (inputs and presence) that MUSE and M3Care read
  at evaluation instead of the other evaluated patients."""

  def __init__(self, cohort: Cohort, rows: np.ndarray):
    x = [shards.gather_rows(f, rows) for f in cohort.features]   # wherever they are held
    self.x_RxF = Constant(jnp.asarray(np.concatenate(x, 1)))
    self.present_RxM = Constant(jnp.asarray(cohort.present[rows]))
    self.split_at = _split_points(cohort.input_dims)

  def inputs(self) -> tuple[tuple[Array, ...], Array]:
    return tuple(jnp.split(self.x_RxF[...], self.split_at, axis=1)), self.present_RxM[...]


def reference_rows(train_rows: np.ndarray, size: int, seed: int) -> np.ndarray:
  """Up to `size` training rows drawn without replacement by `seed`, sorted."""
  rng = np.random.default_rng([seed, 0x5EF])
  n = min(int(size), len(train_rows))
  return np.sort(rng.choice(np.asarray(train_rows), size=n, replace=False))


# ----------------------------------------------------------------------------- models


class ImputeMLP(nnx.Module):
  """Early fusion: impute missing modalities with `fill_F`, concatenate (optionally with
  the indicators δ), `in -> D -> D` MLP, heads."""

  def __init__(self, input_dims: Sequence[int], n_tasks: int, dim: int, dropout: float,
               fill_F: np.ndarray, indicators: bool, *, rngs: nnx.Rngs):
    self.fill_F = Constant(jnp.asarray(fill_F, jnp.float32))
    self.split_at = _split_points(input_dims)
    self.indicators = indicators
    d_in = sum(input_dims) + (len(input_dims) if indicators else 0)
    self.mlp = MLPBlock(d_in, dim, dim, dropout, rngs=rngs)
    self.heads = TaskHeads(1, n_tasks, dim, rngs=rngs)

  def __call__(self, x: Sequence[Array], present_BxM: Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None, with_aux: bool = True) -> dict[str, Any]:
    del with_aux  # no auxiliary outputs
    present_BxM = present_BxM.astype(bool)
    fills = jnp.split(self.fill_F[...], self.split_at)
    cols = [jnp.where(present_BxM[:, j:j + 1], x_BxDm, fill_Dm)
            for j, (x_BxDm, fill_Dm) in enumerate(zip(x, fills))]
    if self.indicators:
      cols.append(present_BxM.astype(cols[0].dtype))
    h_BxD = self.mlp(jnp.concatenate(cols, axis=-1), deterministic=deterministic, rngs=rngs)
    return {"logits_BxT": self.heads(h_BxD[:, None])[:, 0], "h_BxD": h_BxD}


class LateFusion(nnx.Module):
  """Per-modality encoders and heads; the logit is the mean over observed modalities."""

  def __init__(self, input_dims: Sequence[int], n_tasks: int, dim: int, dropout: float, *,
               rngs: nnx.Rngs):
    self.encoders = ModalityEncoders(input_dims, dim, dropout, rngs=rngs)
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

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    m, d = cfg.n_modalities, cfg.dim
    self.encoders = ModalityEncoders(cfg.input_dims, d, cfg.dropout, rngs=rngs)
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


def muse_edge_dropout(present_BxM: Array, key: Array, rate: float) -> Array:
  """MUSE's augmented edge set: each patient with n >= 2 edges, with probability `rate`,
  keeps a uniformly drawn number in 1..n-1 of its edges (a uniformly random subset)."""
  k_order, k_keep, k_pick = jax.random.split(key, 3)
  n_B = present_BxM.sum(-1)
  score_BxM = jnp.where(present_BxM, jax.random.uniform(k_order, present_BxM.shape), 2.0)
  rank_BxM = jnp.argsort(jnp.argsort(score_BxM, axis=1), axis=1)   # edges first, random order
  keep_B = 1 + jnp.floor(jax.random.uniform(k_keep, n_B.shape) * (n_B - 1)).astype(jnp.int32)
  drop_B = (jax.random.uniform(k_pick, n_B.shape) < rate) & (n_B >= 2)
  return present_BxM & (~drop_B[:, None] | (rank_BxM < keep_B[:, None]))


class MUSE(nnx.Module):
  """Patient-modality bipartite graph, edge-feature GraphSAGE layers, two-view contrast.

  Training mode (`deterministic=False`): the batch is the graph; with `with_aux` also the
  edge-dropped view and the contrastive projections. Evaluation (`deterministic=True`):
  modality nodes aggregate the reference training patients only.
  """

  def __init__(self, input_dims: Sequence[int], n_tasks: int, dim: int, n_layers: int,
               dropout: float, edge_dropout: float, reference: ReferencePatients, *,
               rngs: nnx.Rngs):
    if n_layers < 1:
      raise ValueError(f"baseline.muse_layers must be >= 1, got {n_layers}")
    self.encoders = ModalityEncoders(input_dims, dim, dropout, rngs=rngs)
    self.modality_nodes_MxD = nnx.Param(jax.random.normal(rngs.params(), (len(input_dims), dim)))
    self.message = nnx.List([nnx.Linear(2 * dim, dim, rngs=rngs) for _ in range(n_layers)])
    self.node_update = nnx.List([nnx.Linear(2 * dim, dim, rngs=rngs) for _ in range(n_layers)])
    self.edge_update = nnx.List([nnx.Linear(3 * dim, dim, rngs=rngs)
                                 for _ in range(n_layers - 1)])
    self.drop = nnx.Dropout(dropout)
    self.con_proj = nnx.Linear(dim, dim, rngs=rngs)
    self.heads = TaskHeads(1, n_tasks, dim, rngs=rngs)
    self.edge_dropout = edge_dropout
    self.reference = reference

  def propagate(self, e_NxMxD: Array, edges_NxM: Array, feeds_N: Array, *,
                deterministic: bool, rngs: nnx.Rngs | None) -> Array:
    """Message passing; returns the patient nodes (N, D).

    Edge (i, m) exists only where `edges_NxM`; modality nodes aggregate only the
    patients with `feeds_N` (and an edge). Both node types share each layer's weights.
    """
    n, m, d = e_NxMxD.shape
    w_NxMx1 = edges_NxM[..., None].astype(e_NxMxD.dtype)
    w_feed_NxMx1 = w_NxMx1 * feeds_N[:, None, None].astype(e_NxMxD.dtype)
    p_NxD = jnp.ones((n, d), e_NxMxD.dtype)
    u_MxD = self.modality_nodes_MxD[...]
    e_to_patient, e_to_modality = e_NxMxD, e_NxMxD

    def nodes(p_NxD, u_MxD):   # both node states broadcast to the (patient, modality) pairs
      return jnp.broadcast_to(p_NxD[:, None], (n, m, d)), jnp.broadcast_to(u_MxD, (n, m, d))

    for layer in range(len(self.message)):
      p_b, u_b = nodes(p_NxD, u_MxD)
      msg = self.message[layer]
      to_patient = nnx.relu(msg(jnp.concatenate([u_b, e_to_patient], -1)))
      to_modality = nnx.relu(msg(jnp.concatenate([p_b, e_to_modality], -1)))
      agg_NxD = (to_patient * w_NxMx1).sum(1) / jnp.maximum(w_NxMx1.sum(1), 1.0)
      agg_MxD = (to_modality * w_feed_NxMx1).sum(0) / jnp.maximum(w_feed_NxMx1.sum(0), 1.0)
      upd = self.node_update[layer]
      p_NxD = nnx.relu(upd(jnp.concatenate([agg_NxD, p_NxD], -1)))
      u_MxD = nnx.relu(upd(jnp.concatenate([agg_MxD, u_MxD], -1)))
      if layer < len(self.edge_update):
        p_NxD = self.drop(p_NxD, deterministic=deterministic, rngs=rngs)
        u_MxD = self.drop(u_MxD, deterministic=deterministic, rngs=rngs)
        p_b, u_b = nodes(p_NxD, u_MxD)
        edge = self.edge_update[layer]
        e_to_modality = nnx.relu(edge(jnp.concatenate([p_b, u_b, e_to_modality], -1)))
        e_to_patient = nnx.relu(edge(jnp.concatenate([u_b, p_b, e_to_patient], -1)))
    return p_NxD

  def __call__(self, x: Sequence[Array], present_BxM: Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None, with_aux: bool = True) -> dict[str, Any]:
    present_BxM = present_BxM.astype(bool)
    kw = dict(deterministic=deterministic, rngs=rngs)
    e_BxMxD = self.encoders(x, present_BxM, **kw)
    b = e_BxMxD.shape[0]
    if deterministic:
      ref_x, ref_present_RxM = self.reference.inputs()
      r = ref_present_RxM.shape[0]
      e_NxMxD = jnp.concatenate([self.encoders(ref_x, ref_present_RxM, **kw), e_BxMxD])
      feeds_N = jnp.arange(r + b) < r
      z_BxD = self.propagate(e_NxMxD, jnp.concatenate([ref_present_RxM, present_BxM]),
                             feeds_N, **kw)[r:]
    else:
      z_BxD = self.propagate(e_BxMxD, present_BxM, jnp.ones(b, bool), **kw)
    out: dict[str, Any] = {"logits_BxT": self.heads(z_BxD[:, None])[:, 0], "h_BxD": z_BxD,
                           "edges_BxM": present_BxM}
    if with_aux and not deterministic:
      aug_BxM = muse_edge_dropout(present_BxM, rngs.dropout(), self.edge_dropout)
      az_BxD = self.propagate(e_BxMxD, aug_BxM, jnp.ones(b, bool), **kw)
      out["aug_edges_BxM"] = aug_BxM
      out["con_u_BxP"] = _normalize(jnp.tanh(self.con_proj(z_BxD)))
      out["con_au_BxP"] = _normalize(jnp.tanh(self.con_proj(az_BxD)))
    return out


class M3Care(nnx.Module):
  """Similar-patient imputation in latent space, masked transformer fusion.

  Similar patients: the rest of the batch in training mode (`deterministic=False`), the
  reference training patients at evaluation.
  """

  def __init__(self, cfg: ModelConfig, temperature: float, reference: ReferencePatients, *,
               rngs: nnx.Rngs):
    m, d = cfg.n_modalities, cfg.dim
    self.encoders = ModalityEncoders(cfg.input_dims, d, cfg.dropout, rngs=rngs)
    init = jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    self.kernel_w1_MxDxD = nnx.Param(init(rngs.params(), (m, d, d), jnp.float32))
    self.kernel_b1_MxD = nnx.Param(jnp.zeros((m, d)))
    self.kernel_w2_MxDxD = nnx.Param(init(rngs.params(), (m, d, d), jnp.float32))
    self.kernel_mix_M = nnx.Param(jnp.zeros((m,)))
    self.log_temperature = nnx.Param(jnp.log(jnp.float32(temperature)))
    self.adapt_self_MxD = nnx.Param(init(rngs.params(), (m, d, 1), jnp.float32)[..., 0])
    self.adapt_aux_MxD = nnx.Param(init(rngs.params(), (m, d, 1), jnp.float32)[..., 0])
    self.adapt_b_Mx2 = nnx.Param(jnp.zeros((m, 2)))
    self.modality_emb_MxD = nnx.Param(0.02 * jax.random.normal(rngs.params(), (m, d)))
    self.fusion = Fusion(cfg, rngs=rngs)
    self.heads = TaskHeads(1, cfg.n_tasks, d, rngs=rngs)
    self.reference = reference

  def similarity(self, a_BxMxD: Array, c_CxMxD: Array) -> Array:
    """Per-modality deep-kernel similarity (B, C, M), in [-1, 1]."""

    def deep(e_NxMxD):   # φ_m: a per-modality D -> D -> D MLP, then unit norm
      y = jnp.einsum("nmd,mde->nme", e_NxMxD, self.kernel_w1_MxDxD[...]) + self.kernel_b1_MxD[...]
      return _normalize(jnp.einsum("nmd,mde->nme", nnx.relu(y), self.kernel_w2_MxDxD[...]))

    mix_M = jax.nn.sigmoid(self.kernel_mix_M[...])
    cos_deep = jnp.einsum("bmp,cmp->bcm", deep(a_BxMxD), deep(c_CxMxD))
    cos_raw = jnp.einsum("bmp,cmp->bcm", _normalize(a_BxMxD), _normalize(c_CxMxD))
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
                             _NEG)
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


# ----------------------------------------------------------------------------- direct


def design_matrix(cohort: Cohort) -> np.ndarray:
  """[all features (zeros where missing), missingness indicators] as float32 (N, F)."""
  return np.concatenate(list(cohort.features) + [cohort.present.astype(np.float32)], axis=1)


@jax.jit
def _fit_logreg(x_NxF, y_N, w_N, l2):
  """Full-batch L-BFGS on the weighted, L2-penalised logistic loss (bias unpenalised)."""
  f = x_NxF.shape[1]

  def loss(params):
    logits = x_NxF @ params["w"] + params["b"]
    nll = optax.sigmoid_binary_cross_entropy(logits, y_N)
    return (nll * w_N).sum() / w_N.sum() + 0.5 * l2 * jnp.sum(params["w"] ** 2)

  params = {"w": jnp.zeros(f), "b": jnp.zeros(())}
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def body(carry, _):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=200)
  return params


def logreg_mean_impute(cohort: Cohort, train_rows: np.ndarray, val_rows: np.ndarray,
                       predict_rows: dict[str, np.ndarray],
                       l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
                       ) -> tuple[dict[str, np.ndarray], list[float]]:
  """Fits per task on train, picks L2 on validation AUROC.

  Returns (probabilities (len(rows), T) per row set, the chosen L2 per task).
  """
  from crl_mmnar_jax.metrics import auroc
  x = design_matrix(cohort)
  out = {k: np.zeros((len(r), cohort.n_tasks), np.float32) for k, r in predict_rows.items()}
  chosen = []
  for t in range(cohort.n_tasks):
    y = cohort.labels[:, t]
    known_tr = ~np.isnan(y[train_rows])
    xt = jnp.asarray(x[train_rows])
    yt = jnp.asarray(np.nan_to_num(y[train_rows]))
    best, best_auc, best_l2 = None, -np.inf, None
    for l2 in l2_grid:
      params = _fit_logreg(xt, yt, jnp.asarray(known_tr, jnp.float32), l2)
      yv = y[val_rows]
      pv = np.asarray(jax.nn.sigmoid(x[val_rows] @ params["w"] + params["b"]))
      known_v = ~np.isnan(yv)
      auc = auroc(yv[known_v], pv[known_v])
      if best is None or auc > best_auc:
        best, best_auc, best_l2 = params, auc, float(l2)
    chosen.append(best_l2)
    for k, rows in predict_rows.items():
      out[k][:, t] = np.asarray(jax.nn.sigmoid(x[rows] @ best["w"] + best["b"]))
  return out, chosen


def gbt_backend() -> str:
  """'lightgbm' if installed, else 'xgboost'; a clear error if neither is."""
  for name in ("lightgbm", "xgboost"):
    if importlib.util.find_spec(name) is not None:
      return name
  raise ValueError("method 'gbt' needs LightGBM (or XGBoost): pip install -e \".[gbt]\"")


def _fit_lightgbm(x, y, x_val, y_val, b: ml_collections.ConfigDict, seed: int):
  """(predict_proba_fn, number of trees) of a LightGBM model, early-stopped on val AUROC."""
  import lightgbm
  params = {"objective": "binary", "metric": "auc", "learning_rate": float(b.gbt_learning_rate),
            "num_leaves": int(b.gbt_num_leaves),
            "min_data_in_leaf": int(b.gbt_min_child_samples), "seed": seed,
            "deterministic": True, "force_row_wise": True, "verbosity": -1}
  train = lightgbm.Dataset(x, y)
  booster = lightgbm.train(
      params, train, num_boost_round=int(b.gbt_n_estimators),
      valid_sets=[lightgbm.Dataset(x_val, y_val, reference=train)],
      callbacks=[lightgbm.early_stopping(int(b.gbt_early_stopping), verbose=False)])
  n_trees = int(booster.best_iteration) or booster.current_iteration()
  return lambda x_new: booster.predict(x_new, num_iteration=n_trees), n_trees


def _fit_xgboost(x, y, x_val, y_val, b: ml_collections.ConfigDict, seed: int):
  """As `_fit_lightgbm`, with XGBoost (leaf-wise growth, the same number of leaves)."""
  import xgboost
  model = xgboost.XGBClassifier(
      n_estimators=int(b.gbt_n_estimators), learning_rate=float(b.gbt_learning_rate),
      max_leaves=int(b.gbt_num_leaves), grow_policy="lossguide", tree_method="hist",
      eval_metric="auc", early_stopping_rounds=int(b.gbt_early_stopping), random_state=seed)
  model.fit(x, y, eval_set=[(x_val, y_val)], verbose=False)
  return lambda x_new: model.predict_proba(x_new)[:, 1], int(model.best_iteration) + 1


def gbt_nan_missing(cohort: Cohort, train_rows: np.ndarray, val_rows: np.ndarray,
                    predict_rows: dict[str, np.ndarray], b: ml_collections.ConfigDict,
                    seed: int) -> tuple[dict[str, np.ndarray], dict]:
  """Gradient-boosted trees per task on the features with NaN for missing modalities,
  early-stopped on the validation AUROC. Returns (probabilities per row set, what was
  fitted: backend and number of trees per task)."""
  backend = gbt_backend()
  fit = _fit_lightgbm if backend == "lightgbm" else _fit_xgboost
  x = np.concatenate([np.where(cohort.present[:, m:m + 1], f, np.nan)
                      for m, f in enumerate(cohort.features)], axis=1).astype(np.float32)
  out = {k: np.zeros((len(r), cohort.n_tasks), np.float32) for k, r in predict_rows.items()}
  n_trees = {}
  for t, name in enumerate(cohort.task_names):
    y = cohort.labels[:, t]
    tr = train_rows[~np.isnan(y[train_rows])]
    va = val_rows[~np.isnan(y[val_rows])]
    predict, n_trees[name] = fit(x[tr], y[tr].astype(np.int32), x[va],
                                 y[va].astype(np.int32), b, seed)
    for k, rows in predict_rows.items():
      out[k][:, t] = predict(x[rows])
  return out, {"backend": backend, "n_trees": n_trees}
