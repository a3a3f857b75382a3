"""Reference baselines that every run can report next to the model.

`logreg_mean_impute`: the practitioner's default, one L2-regularised logistic regression
per task on [features with missing modalities mean-imputed, missingness indicators].
Inputs are the standardised cohort (missing = 0 = the training mean), so mean
imputation is already done; the L2 strength is chosen on the validation AUROC.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crl_mmnar_jax.cohort import Cohort


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
                       l2_grid=(1e-4, 1e-3, 1e-2, 1e-1)) -> dict[str, np.ndarray]:
  """Fits per task on train, picks L2 on validation AUROC; returns probs per row set."""
  from crl_mmnar_jax.metrics import auroc
  x = design_matrix(cohort)
  out = {k: np.zeros((len(r), cohort.n_tasks), np.float32) for k, r in predict_rows.items()}
  for t in range(cohort.n_tasks):
    y = cohort.labels[:, t]
    known_tr = ~np.isnan(y[train_rows])
    xt = jnp.asarray(x[train_rows])
    yt = jnp.asarray(np.nan_to_num(y[train_rows]))
    best, best_auc = None, -np.inf
    for l2 in l2_grid:
      params = _fit_logreg(xt, yt, jnp.asarray(known_tr, jnp.float32), l2)
      yv = y[val_rows]
      pv = np.asarray(jax.nn.sigmoid(x[val_rows] @ params["w"] + params["b"]))
      known_v = ~np.isnan(yv)
      auc = auroc(yv[known_v], pv[known_v])
      if best is None or auc > best_auc:
        best, best_auc = params, auc
    for k, rows in predict_rows.items():
      out[k][:, t] = np.asarray(jax.nn.sigmoid(x[rows] @ best["w"] + best["b"]))
  return out
