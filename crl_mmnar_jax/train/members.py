"""K members of one neural method in one pytree and one jitted step.

A training run is K >= 1 members that share a model structure: a single run is K = 1,
the cross-fitted members of `train.cv_folds=K` are K > 1. For K > 1 their parameters
and optimizer states are stacked on a leading member axis and one compiled step
(`jax.vmap` of `step.step_fn`) updates all of them: one dispatch per step instead of K,
K times the work per kernel. For K = 1 the state is the member's own, without the axis,
and the step is `step_fn` itself: one member compiles exactly the program of a single
model, so its results are bit for bit those of a plain jitted step.

A member that is not active at a step (its epoch has fewer batches, or it has stopped
early) is masked out: its state is left as it was and its loss terms are 0.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from crl_mmnar_jax.batch import Batch
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.train.step import step_fn

if TYPE_CHECKING:
  from crl_mmnar_jax.methods import MethodData, NeuralMethod


@dataclasses.dataclass(frozen=True)
class Member:
  """One model to train: its config (seed set), its data (standardised cohort, training
  rows, validation rows), the folder of its metrics.jsonl (and TensorBoard events),
  and the config hash its checkpoints are checked against."""
  config: ml_collections.ConfigDict
  data: MethodData
  workdir: str
  config_hash: str


@jax.jit
def _set_member(best: Any, state: Any, k: jax.Array) -> Any:
  return jax.tree.map(lambda b, s: b.at[k].set(s[k]), best, state)


@dataclasses.dataclass(frozen=True)
class MemberAxis:
  """How the states of `k` members share one pytree (see the module docstring)."""
  k: int

  def stack(self, states: list[Any]) -> Any:
    if self.k == 1:
      return states[0]
    return jax.tree.map(lambda *a: jnp.stack(a), *states)

  def take(self, state: Any, i: int) -> Any:
    """Member i's state."""
    return state if self.k == 1 else jax.tree.map(lambda a: a[i], state)

  def replace(self, best: Any, state: Any, i: int) -> Any:
    """`best` with member i's state taken from `state` (a new pytree)."""
    if self.k == 1:
      return jax.tree.map(jnp.copy, state)
    return _set_member(best, state, jnp.int32(i))

  def put_batches(self, batches: list[Batch], mesh: jax.sharding.Mesh) -> Batch:
    """The members' host batches as one global batch sharded over its rows: (B, ...)
    for K = 1, (K, B, ...) otherwise."""
    if self.k == 1:
      return mesh_lib.put_batch(batches[0], mesh)
    sharding = NamedSharding(mesh, P(None, mesh_lib.DATA))
    stacked = jax.tree.map(lambda *a: np.stack(a), *batches)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a),
                        stacked)

  def make_step(self, graphdef: nnx.GraphDef, loss: Callable, compute_dtype: str
                ) -> Callable:
    """(state, batch, keys_K, steps_K, active_K, aux, pred) -> (state, parts_K), jitted
    with the state donated; every part has a leading axis of size K."""
    return jax.jit(self.step_body(graphdef, loss, compute_dtype), donate_argnums=0)

  def step_body(self, graphdef: nnx.GraphDef, loss: Callable, compute_dtype: str
                ) -> Callable:
    """`make_step`'s function before `jax.jit` (the scanned epoch calls it inside
    `jax.lax.scan`)."""
    one = step_fn(graphdef, loss, compute_dtype)
    if self.k == 1:
      def single(state, batch, keys, steps, active, aux, pred):
        del active        # a lone member is stepped only while it trains
        new, parts = one(state, batch, keys[0], steps[0], aux, pred)
        return new, jax.tree.map(lambda v: v[None], parts)
      return single

    def stacked(state, batch, keys, steps, active, aux, pred):
      new, parts = jax.vmap(one, in_axes=(0, 0, 0, 0, None, None))(state, batch, keys,
                                                                    steps, aux, pred)
      keep = lambda n, o: jnp.where(active.reshape(active.shape + (1,) * (n.ndim - 1)), n, o)
      parts = {k: (v | ~active) if k == "finite" else jnp.where(active, v, 0.0)
               for k, v in parts.items()}
      return jax.tree.map(keep, new, state), parts

    return stacked


# The loss weights a model may hold as data (`model.CRLMMNAR`, `losses.total_loss`): only
# whether each is zero (its term skipped) is part of the compiled loss.
HELD_LOSS_WEIGHTS = ("pred", "miss", "rec", "con")
# The `train.*` fields each member's optimizer holds as data (`train/optim.py`); the
# others (epochs, batch size, patience, ...) are the loop's and must agree.
OPTIMIZER_FIELDS = ("lr", "final_lr_fraction", "warmup_steps", "warmup_max_fraction",
                    "weight_decay", "clip_norm")


def _abstract(method: NeuralMethod, config: ml_collections.ConfigDict, data: MethodData
              ) -> nnx.Module:
  return nnx.eval_shape(lambda: method.build(config, data, nnx.Rngs(params=0)))


def _rate_as_data(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with a non-zero `model.dropout` replaced by one stand-in value: for a model
  whose every dropout rate is data (`layers.ByteDropout`), the graph it builds then no
  longer differs with the rate (its `ModelConfig` records it)."""
  out = config.copy_and_resolve_references()
  out.model.dropout = 0.5 if float(config.model.dropout) > 0 else 0.0
  return out


def structure_of(method: NeuralMethod, member: Member) -> tuple:
  """What must agree for members to share a stacked state and one compiled step: the
  graph and the shapes and dtypes of every leaf (computed abstractly, nothing is
  initialised), the loop's and the loss's settings (`train.*` but the optimizer's,
  `loss.*`, `baseline.*`), but of the loss weights and the dropout rate a model holds
  as data only which are zero (built once with a stand-in rate; a model with an
  `nnx.Dropout`, whose rate is a constant of the program, is built with its own).
  The leaf shapes do not depend on the rate, only on whether it is zero."""
  abstract = _abstract(method, _rate_as_data(member.config), member.data)
  nodes = [node for _, node in nnx.iter_graph(abstract)]
  if any(isinstance(node, nnx.Dropout) for node in nodes):   # its rate is compiled in
    abstract = _abstract(method, member.config, member.data)
  graphdef, state = nnx.split(abstract)
  held = any(hasattr(node, "loss_weights_4") for node in nodes)   # also inside `Wide`
  loss = {k: (bool(v) if held and k in HELD_LOSS_WEIGHTS else v)
          for k, v in member.config.loss.items()}
  train = {k: v for k, v in member.config.train.items() if k not in OPTIMIZER_FIELDS}
  return (graphdef, jax.tree.structure(state),
          tuple((a.shape, a.dtype) for a in jax.tree.leaves(state)),
          repr(sorted(loss.items())), repr(sorted(member.config.baseline.items())),
          repr(sorted(train.items())))


def group_members(config: ml_collections.ConfigDict, method: NeuralMethod,
                  members: list[Member]) -> tuple[list[list[int]], str | None]:
  """Which members train together: groups of member indices (each group one run of the
  loop, `train.loop.fit`) of one model structure, and why they are not all one group
  (None when they are). Members may differ in their optimizer's hyperparameters
  (learning rate, its schedule, weight decay: data in the state, `train/optim.py`), in
  a non-zero dropout rate (`layers.ByteDropout`) and in the non-zero loss weights
  CRL-MMNAR holds (`model.CRLMMNAR`)."""
  if len(members) == 1:
    return [[0]], None
  if not bool(config.train.stack_members):
    return [[k] for k in range(len(members))], "train.stack_members=False"
  groups: dict[tuple, list[int]] = {}
  for k, m in enumerate(members):
    groups.setdefault(structure_of(method, m), []).append(k)
  out = list(groups.values())
  return out, None if len(out) == 1 else "the members' models differ in structure"
