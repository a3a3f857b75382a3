"""The jit-compiled, donated train step and the batched prediction function."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

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


def create_state(mcfg: ModelConfig, weights: LossWeights, tx: optax.GradientTransformation,
                 seed: int, mesh: jax.sharding.Mesh) -> tuple[nnx.GraphDef, nnx.State]:
  """`init_state` of CRL-MMNAR from a `ModelConfig` and the loss weights it holds (the
  ones its training loss uses, whatever weights the loss function was built with)."""
  return init_state(lambda rngs: CRLMMNAR(mcfg, rngs=rngs, loss_weights=weights), tx,
                    seed, mesh)


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _cast_floats(tree: Any, dtype) -> Any:
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating)
                      else a, tree)


def make_step(graphdef: nnx.GraphDef, loss: LossFn, compute_dtype: str = "float32"
              ) -> Callable:
  """The jit-compiled step `step_fn(...)`, with the state donated."""
  return jax.jit(step_fn(graphdef, loss, compute_dtype), donate_argnums=0)


def step_fn(graphdef: nnx.GraphDef, loss: LossFn, compute_dtype: str = "float32"
            ) -> Callable:
  """The train step as a pure function (for `jax.jit`, or `jax.vmap` over members):
  (state, batch, base_key, step, aux_scale, pred_scale) -> (state, parts).

  The step's randomness (dropout, the random leave-one-out drops) comes from
  `fold_in(base_key, step)`, computed inside the step, so the host does no per-step key
  work and a resumed run draws exactly what the uninterrupted one drew. With
  `compute_dtype="bfloat16"` the forward and backward passes run on bfloat16 copies of
  the parameters and inputs (mixed precision for accelerators); the losses are
  computed in float32 from the outputs, and the parameters, their gradients and the
  optimizer state stay float32.
  """
  dtype = COMPUTE_DTYPES[compute_dtype]

  def train_step(state, batch: Batch, base_key, step, aux_scale, pred_scale):
    model, optimizer = nnx.merge(graphdef, state)
    key = jax.random.fold_in(base_key, step)

    if dtype == jnp.float32:
      def loss_fn(model):
        out = model(batch.x, batch.present_BxM, deterministic=False,
                    rngs=nnx.Rngs(dropout=key))
        return loss(out, batch, aux_scale, pred_scale)

      (_, parts), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    else:
      model_def, params, rest = nnx.split(model, nnx.Param, ...)
      x = _cast_floats(batch.x, dtype)

      def loss_fn(params):
        low = nnx.merge(model_def, _cast_floats(params, dtype), rest)
        out = low(x, batch.present_BxM, deterministic=False, rngs=nnx.Rngs(dropout=key))
        return loss(_cast_floats(out, jnp.float32), batch, aux_scale, pred_scale)

      (_, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    optimizer.update(model, grads)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    finite = jnp.isfinite(parts["total"]) & jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(p)) for p in params]))
    parts = dict(parts, grad_norm=optax.tree.norm(grads), finite=finite)
    return nnx.state((model, optimizer)), parts

  return train_step


def make_train_step(graphdef: nnx.GraphDef, weights: LossWeights, miss_kind: str,
                    compute_dtype: str = "float32") -> Callable:
  """`make_step` with CRL-MMNAR's total loss."""
  return make_step(graphdef, objective(weights, miss_kind), compute_dtype)


T = TypeVar("T")


def prefetched(load: Callable[[int], T], indices: Iterable[int]) -> Iterator[tuple[int, T]]:
  """Yields (i, load(i)) in order; load(i + 1) runs on a background thread while the
  caller works on item i (double buffering: the next batch is gathered and transferred
  while the current step runs). Loads are pure, so the order and values are those of a
  plain loop; an exception in `load` is raised where its item would be yielded."""
  indices = list(indices)
  if not indices:
    return
  with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
    ahead = pool.submit(load, indices[0])
    for n, i in enumerate(indices):
      item = ahead.result()
      if n + 1 < len(indices):
        ahead = pool.submit(load, indices[n + 1])
      yield i, item


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
