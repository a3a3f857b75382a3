"""CRL-MMNAR losses as pure functions of model outputs and a `Batch`.

Every loss takes `weight_B` (0 for padding rows) and ignores those rows completely: they
are neither positives nor negatives in InfoNCE and do not count in any denominator.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from crl_mmnar_jax.batch import Batch
from crl_mmnar_jax.layers import MASKED_LOGIT

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """Weights of the total loss (docs/design.md); the defaults are the command line's
  (`loss.*` in `crl_mmnar_jax.config`)."""

  pred: float = 1.0
  miss: float = 0.5
  rec: float = 1.0
  con: float = 0.3
  temperature: float = 0.1
  focal_gamma: float = 0.0        # 0 = plain binary cross-entropy
  rec_stop_gradient: bool = True  # the L_rec target e_m is stop-gradient (InfoNCE has
                                  # negatives, so it cannot collapse and trains both sides)


def _safe_div(num: Array, den: Array) -> Array:
  return num / jnp.maximum(den, 1e-12)


def pred_loss(logits_BxT: Array, labels_BxT: Array, label_mask_BxT: Array, weight_B: Array,
              focal_gamma: float = 0.0) -> Array:
  """Binary cross-entropy (or focal loss) per task, averaged over known labels of each
  task, then over the tasks that have at least one known label in the batch."""
  bce_BxT = optax.sigmoid_binary_cross_entropy(logits_BxT, labels_BxT)
  if focal_gamma > 0:
    p_BxT = jax.nn.sigmoid(logits_BxT)
    p_true = jnp.where(labels_BxT > 0.5, p_BxT, 1.0 - p_BxT)
    bce_BxT = bce_BxT * (1.0 - p_true) ** focal_gamma
  w_BxT = label_mask_BxT * weight_B[:, None]
  n_T = w_BxT.sum(0)
  per_task_T = _safe_div((bce_BxT * w_BxT).sum(0), n_T)
  has_T = n_T > 0
  return _safe_div(jnp.where(has_T, per_task_T, 0.0).sum(), has_T.sum())


def miss_loss(miss_logits: Array, present_BxM: Array, weight_B: Array,
              kind: str = "bce") -> Array:
  """L_miss: predict the pattern δ from z.

  kind="bce": mean over modalities of sigmoid cross-entropy; kind="pattern": softmax
  cross-entropy over the 2^M pattern ids.
  """
  present_BxM = present_BxM.astype(jnp.float32)
  if kind == "bce":
    per_B = optax.sigmoid_binary_cross_entropy(miss_logits, present_BxM).mean(-1)
  elif kind == "pattern":
    m = present_BxM.shape[-1]
    pattern_B = (present_BxM.astype(jnp.int32) << jnp.arange(m, dtype=jnp.int32)).sum(-1)
    per_B = optax.softmax_cross_entropy_with_integer_labels(miss_logits, pattern_B)
  else:
    raise ValueError(f"miss loss kind must be 'bce' or 'pattern', got {kind!r}")
  return _safe_div((per_B * weight_B).sum(), weight_B.sum())


def rec_loss(e_BxMxD: Array, rec_BxMxD: Array, valid_BxM: Array, weight_B: Array,
             stop_gradient: bool = True, draw_BxM: Array | None = None) -> Array:
  """L_rec: MSE (mean over D) between ê_m and e_m over valid (patient, modality) pairs.

  Valid = modality observed, patient has at least two observed modalities, real row.
  With random drops (`draw_BxM`: 1 / P(drawn) for the drawn pairs, 0 elsewhere;
  `model.CRLMMNAR.draw_drops`) the sum runs over the drawn pairs, weighted, and the
  denominator stays the number of valid pairs, so its expectation over the draw is the
  leave-one-out loss exactly.
  """
  target = jax.lax.stop_gradient(e_BxMxD) if stop_gradient else e_BxMxD
  mse_BxM = jnp.mean((rec_BxMxD - target) ** 2, axis=-1)
  w_BxM = valid_BxM * weight_B[:, None]
  num_BxM = w_BxM if draw_BxM is None else w_BxM * draw_BxM
  return _safe_div((mse_BxM * num_BxM).sum(), w_BxM.sum())


def info_nce(a_BxMxP: Array, b_BxMxP: Array, valid_BxM: Array, weight_B: Array,
             temperature: float = 0.1, draw_BxM: Array | None = None) -> Array:
  """Symmetric InfoNCE per modality with in-batch negatives.

  For modality m the candidates are the valid rows for m (observed, at least two
  observed modalities, real rows); positives are the same patient. Each direction's
  cross-entropy is averaged over valid rows, the two directions are averaged, then the
  result is averaged over modalities with at least two valid rows (a single candidate
  has no negative and carries no signal).

  With random drops (`draw_BxM` as in `rec_loss`) only the drawn rows have a
  reconstruction b_j. Each drawn row's terms are weighted by 1 / P(drawn) and divided by
  the number of valid rows, as in `rec_loss`. The b -> a direction (b_j against every
  valid a_i) is then unbiased for the leave-one-out one. In the a -> b direction the
  negatives are the other drawn b_j, each weighted by 1 / P(drawn) inside the
  log-sum-exp: an unbiased estimate of the sum of exponentials, whose log is biased low
  by a Jensen gap that shrinks as the batch grows (measured in tests/test_rec_drops.py).
  """
  valid_MxB = (valid_BxM & (weight_B[:, None] > 0)).T
  logits_MxBxB = jnp.einsum("imp,jmp->mij", a_BxMxP, b_BxMxP) / temperature
  if draw_BxM is not None:
    return _drawn_info_nce(logits_MxBxB, valid_MxB, draw_BxM.T)
  pair_MxBxB = valid_MxB[:, :, None] & valid_MxB[:, None, :]
  logits_MxBxB = jnp.where(pair_MxBxB, logits_MxBxB, MASKED_LOGIT)
  diag_MxB = jnp.diagonal(logits_MxBxB, axis1=1, axis2=2)
  ce_rows = jax.nn.logsumexp(logits_MxBxB, axis=2) - diag_MxB   # a_i against all b_j
  ce_cols = jax.nn.logsumexp(logits_MxBxB, axis=1) - diag_MxB   # b_j against all a_i
  n_M = valid_MxB.sum(-1)
  per_m = _safe_div(jnp.where(valid_MxB, 0.5 * (ce_rows + ce_cols), 0.0).sum(-1), n_M)
  use_M = n_M >= 2
  return _safe_div(jnp.where(use_M, per_m, 0.0).sum(), use_M.sum())


def _drawn_info_nce(logits_MxBxB: Array, valid_MxB: Array, draw_MxB: Array) -> Array:
  """`info_nce` with random drops (see there); logits[m, i, j] = a_i · b_j / τ."""
  w_MxB = jnp.where(valid_MxB, draw_MxB, 0.0)      # 1 / P(drawn) for drawn rows, else 0
  b = logits_MxBxB.shape[-1]
  eye = jnp.eye(b, dtype=bool)
  diag_MxB = jnp.diagonal(logits_MxBxB, axis1=1, axis2=2)
  # b_j against every valid a_i: the exact column of the leave-one-out loss.
  ce_cols = jax.nn.logsumexp(
      jnp.where(valid_MxB[:, :, None], logits_MxBxB, MASKED_LOGIT), axis=1) - diag_MxB
  # a_i against its own b_i and the other drawn b_j, each weighted by w_j:
  # X_i = exp(s_ii) + Σ_{j≠i} w_j exp(s_ij) is unbiased for the leave-one-out sum, and
  # log X_i is corrected by the delta method, + Var(X_i) / (2 X_i²) with Var(X_i)
  # estimated by Σ_{j≠i} (w_j² - w_j) exp(2 s_ij) (draws are independent across
  # patients), so that the bias left is of second order. One shared row maximum, then
  # weighted row sums (matrix-vector products), instead of three log-sum-exps.
  counted_MxBxB = (w_MxB > 0)[:, None, :] | eye
  top_MxB = jax.lax.stop_gradient(
      jnp.max(jnp.where(counted_MxBxB, logits_MxBxB, -jnp.inf), axis=2))
  e_MxBxB = jnp.where(counted_MxBxB, jnp.exp(logits_MxBxB - top_MxB[..., None]), 0.0)
  e_diag_MxB = jnp.exp(diag_MxB - top_MxB)
  x_MxB = jnp.einsum("mij,mj->mi", e_MxBxB, w_MxB) + (1.0 - w_MxB) * e_diag_MxB
  c_MxB = w_MxB * w_MxB - w_MxB
  v_MxB = jnp.maximum(jnp.einsum("mij,mj->mi", e_MxBxB * e_MxBxB, c_MxB)
                      - c_MxB * e_diag_MxB * e_diag_MxB, 0.0)
  ce_rows = jnp.log(x_MxB) + top_MxB + 0.5 * v_MxB / (x_MxB * x_MxB) - diag_MxB
  n_M = valid_MxB.sum(-1)
  per_m = _safe_div((w_MxB * 0.5 * (ce_rows + ce_cols)).sum(-1), n_M)
  use_M = n_M >= 2
  return _safe_div(jnp.where(use_M, per_m, 0.0).sum(), use_M.sum())


def total_loss(out: Mapping[str, Any], batch: Batch, w: LossWeights,
               aux_scale: Array | float = 1.0, pred_scale: Array | float = 1.0,
               miss_kind: str = "bce") -> tuple[Array, dict[str, Array]]:
  """Weighted sum of the losses present in `out`; returns (loss, parts).

  `aux_scale` multiplies the auxiliary terms (L_miss, L_rec, L_con) for annealing;
  `pred_scale` is 0 during self-supervised pre-training. Which terms are computed is
  fixed by `w` (a zero weight skips its term); their weights are `out["loss_weights_4"]`
  (pred, miss, rec, con: the model's data, `model.CRLMMNAR`) when the model returns
  them, else `w`'s.
  """
  held = out.get("loss_weights_4")
  w_pred, w_miss, w_rec, w_con = ((w.pred, w.miss, w.rec, w.con) if held is None else
                                  (held[0], held[1], held[2], held[3]))
  parts = {"pred": pred_loss(out["logits_BxT"], batch.labels_BxT, batch.label_mask_BxT,
                             batch.weight_B, w.focal_gamma)}
  total = pred_scale * w_pred * parts["pred"]
  if "miss_logits" in out and w.miss:
    parts["miss"] = miss_loss(out["miss_logits"], batch.present_BxM, batch.weight_B, miss_kind)
    total += aux_scale * w_miss * parts["miss"]
  if "rec_BxMxD" in out and w.rec:
    parts["rec"] = rec_loss(out["e_BxMxD"], out["rec_BxMxD"], out["rec_valid_BxM"],
                            batch.weight_B, w.rec_stop_gradient, out.get("rec_draw_BxM"))
    total += aux_scale * w_rec * parts["rec"]
  if "con_e_BxMxP" in out and w.con:
    parts["con"] = info_nce(out["con_e_BxMxP"], out["con_rec_BxMxP"], out["rec_valid_BxM"],
                            batch.weight_B, w.temperature, out.get("rec_draw_BxM"))
    total += aux_scale * w_con * parts["con"]
  parts["total"] = total
  return total, parts


LossFn = Callable[[Mapping[str, Any], Batch, Any, Any], tuple[Array, dict[str, Array]]]


def objective(w: LossWeights, miss_kind: str = "bce") -> LossFn:
  """`total_loss` with its weights bound: (out, batch, aux_scale, pred_scale) -> (loss,
  parts). For a model whose outputs hold only `logits_BxT` it is the weighted L_pred."""

  def loss(out, batch, aux_scale, pred_scale):
    return total_loss(out, batch, w, aux_scale, pred_scale, miss_kind)

  return loss


def paired_info_nce(a_BxP: Array, b_BxP: Array, weight_B: Array, temperature: float) -> Array:
  """Symmetric InfoNCE between two views of each patient (row i of `a` and of `b`), the
  other real rows of the batch as negatives (MUSE's unsupervised consistency loss)."""
  valid_Bx1 = jnp.ones((a_BxP.shape[0], 1), bool)
  return info_nce(a_BxP[:, None], b_BxP[:, None], valid_Bx1, weight_B, temperature)


def label_agreement_loss(u_BxP: Array, au_BxP: Array, labels_BxT: Array,
                         label_mask_BxT: Array, weight_B: Array, temperature: float) -> Array:
  """MUSE's supervised consistency loss: sigmoid cross-entropy of the scaled similarities
  u_i·u_j and u_i·au_j against "patients i and j have the same label".

  Per task over the pairs of real rows whose labels are both known, then averaged over
  the tasks with at least one such pair, then over the two similarity matrices.
  """
  labels_TxB = labels_BxT.T
  target_TxBxB = (labels_TxB[:, :, None] == labels_TxB[:, None, :]).astype(u_BxP.dtype)
  known_TxB = (label_mask_BxT & (weight_B[:, None] > 0)).T
  pair_TxBxB = known_TxB[:, :, None] & known_TxB[:, None, :]
  n_T = pair_TxBxB.sum((1, 2))
  has_T = n_T > 0

  def mean_bce(sim_BxB):
    ce = optax.sigmoid_binary_cross_entropy(
        jnp.broadcast_to(sim_BxB / temperature, target_TxBxB.shape), target_TxBxB)
    per_T = _safe_div(jnp.where(pair_TxBxB, ce, 0.0).sum((1, 2)), n_T)
    return _safe_div(jnp.where(has_T, per_T, 0.0).sum(), has_T.sum())

  return 0.5 * (mean_bce(u_BxP @ u_BxP.T) + mean_bce(u_BxP @ au_BxP.T))
