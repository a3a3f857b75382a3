"""MUSE, a patient-modality graph with edge dropout and two-view contrast.

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
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from crl_mmnar_jax.layers import ModalityEncoders, NumEmbeddings, TaskHeads, l2_normalize
from crl_mmnar_jax.losses import LossFn, label_agreement_loss, paired_info_nce
from crl_mmnar_jax.methods.reference import ReferencePatients

Array = jax.Array


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
               rngs: nnx.Rngs, embedding: NumEmbeddings | None = None):
    if n_layers < 1:
      raise ValueError(f"baseline.muse_layers must be >= 1, got {n_layers}")
    self.encoders = ModalityEncoders(input_dims, dim, dropout, rngs=rngs, embedding=embedding)
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
      out["con_u_BxP"] = l2_normalize(jnp.tanh(self.con_proj(z_BxD)))
      out["con_au_BxP"] = l2_normalize(jnp.tanh(self.con_proj(az_BxD)))
    return out


def objective(supervised: LossFn, weight: float, temperature: float) -> LossFn:
  """MUSE's loss: `supervised` (L_pred on the full graph) + weight · (two-view InfoNCE +
  label-agreement loss)."""

  def loss(out, batch, aux_scale, pred_scale):
    total, parts = supervised(out, batch, aux_scale, pred_scale)
    u, au = out["con_u_BxP"], out["con_au_BxP"]
    parts["con_unsup"] = paired_info_nce(u, au, batch.weight_B, temperature)
    parts["con_sup"] = label_agreement_loss(u, au, batch.labels_BxT, batch.label_mask_BxT,
                                            batch.weight_B, temperature)
    parts["total"] = total + weight * (parts["con_unsup"] + parts["con_sup"])
    return parts["total"], parts

  return loss
