"""The jit-compiled, donated train step and the batched prediction function."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from crl_mmnar_jax.batch import Batch
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data import shards
from crl_mmnar_jax.losses import LossFn, LossWeights, objective
from crl_mmnar_jax.model import CRLMMNAR, ModelConfig
from crl_mmnar_jax.train import mesh as mesh_lib


def init_state(build: Callable[[nnx.Rngs], nnx.Module], tx: optax.GradientTransformation,
               seed: int, mesh: jax.sharding.Mesh) -> tuple[nnx.GraphDef, nnx.State]:
  """Builds a model and its optimizer; returns (graphdef, replicated state)."""
  model = build(nnx.Rngs(params=seed))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  return graphdef, jax.device_put(state, mesh_lib.replicated(mesh))


def create_state(mcfg: ModelConfig, tx: optax.GradientTransformation, seed: int,
                 mesh: jax.sharding.Mesh) -> tuple[nnx.GraphDef, nnx.State]:
  """`init_state` of CRL-MMNAR from a `ModelConfig`."""
  return init_state(lambda rngs: CRLMMNAR(mcfg, rngs=rngs), tx, seed, mesh)


def make_step(graphdef: nnx.GraphDef, loss: LossFn) -> Callable:
  """The jit-compiled step: (state, batch, key, aux_scale, pred_scale) -> (state, parts)."""

  def train_step(state, batch: Batch, key, aux_scale, pred_scale):
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
      out = model(batch.x, batch.present_BxM, deterministic=False, rngs=nnx.Rngs(dropout=key))
      return loss(out, batch, aux_scale, pred_scale)

    (_, parts), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    finite = jnp.isfinite(parts["total"]) & jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(p)) for p in params]))
    parts = dict(parts, grad_norm=optax.tree.norm(grads), finite=finite)
    return nnx.state((model, optimizer)), parts

  return jax.jit(train_step, donate_argnums=0)


def make_train_step(graphdef: nnx.GraphDef, weights: LossWeights, miss_kind: str) -> Callable:
  """`make_step` with CRL-MMNAR's total loss."""
  return make_step(graphdef, objective(weights, miss_kind))


def make_predict_fn(graphdef: nnx.GraphDef) -> Callable:
  """(state, x, present) -> probabilities (B, T), no dropout, no auxiliary branches."""

  @jax.jit
  def predict(state, x, present_BxM):
    model, _ = nnx.merge(graphdef, state)
    return jax.nn.sigmoid(model(x, present_BxM, with_aux=False)["logits_BxT"])

  return predict


def predict(predict_fn: Callable, state: Any, cohort: Cohort, rows: np.ndarray,
            batch_size: int, mesh: jax.sharding.Mesh,
            layout: shards.Layout | None = None) -> np.ndarray:
  """Probabilities (len(rows), T) for `rows` of the cohort, in row order, on every
  process (each process feeds the rows it holds; see `shards`)."""
  rows = np.asarray(rows)
  layout = shards.Layout.single(cohort.n) if layout is None else layout
  out = np.zeros((len(rows), cohort.n_tasks), np.float32)
  for items_B, rows_B in zip(layout.batch_items(rows, batch_size),
                             layout.batches(rows, batch_size)):
    real = items_B >= 0
    batch = mesh_lib.put_batch(mesh_lib.local_batch(cohort, rows_B, batch_size), mesh)
    probs = mesh_lib.to_host(predict_fn(state, batch.x, batch.present_BxM))
    out[items_B[real]] = probs[real]
  return out
