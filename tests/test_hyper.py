"""Dropout rates and loss weights as data of the model's state (`layers.Hyper`): the mask
against numpy, the loss against its closed form, one compiled program for models that
differ only in them, and which members may share a stacked step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.73, 1.0])
def test_byte_dropout_equals_its_mask_recomputed_in_numpy(rate):
  from crl_mmnar_jax.layers import ByteDropout
  x = jax.random.normal(jax.random.key(0), (5, 3, 10))
  key = jax.random.key(7)
  got = np.asarray(ByteDropout(rate)(x, deterministic=False, rngs=nnx.Rngs(dropout=key)))
  # The same stream by hand: one 32-bit draw per four elements, little-endian bytes.
  bits = np.asarray(jax.random.bits(nnx.Rngs(dropout=key).dropout(), (5, 3, 3), jnp.uint32))
  bytes_ = bits.view(np.uint8).reshape(5, 3, 12)[..., :10]
  t = int(round(rate * 256))
  want = np.where(bytes_ >= t, np.asarray(x) * np.float32(256 / max(256 - t, 1)), 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  kept = (got != 0).mean()
  assert (kept == 0) if rate == 1.0 else abs(kept - (1 - t / 256)) < 0.15
  # Rate 1 keeps nothing and its gradient is finite (zero).
  g = jax.grad(lambda v: ByteDropout(rate)(v, deterministic=False,
                                           rngs=nnx.Rngs(dropout=key)).sum())(x)
  assert np.all(np.isfinite(np.asarray(g)))


def test_a_zero_rate_holds_no_variable_and_changes_nothing():
  from crl_mmnar_jax.layers import ByteDropout, Hyper
  drop = ByteDropout(0.0)
  x = jnp.arange(12.0).reshape(3, 4)
  assert drop.threshold is None and not jax.tree.leaves(nnx.state(drop, Hyper))
  np.testing.assert_array_equal(drop(x, deterministic=False, rngs=nnx.Rngs(dropout=1)), x)
  assert nnx.state(ByteDropout(0.2), Hyper)["threshold"][...] == 51   # round(0.2 * 256)


def _model(dropout: float, weights: tuple, **loss_kw):
  from crl_mmnar_jax.losses import LossWeights
  from crl_mmnar_jax.model import CRLMMNAR, ModelConfig
  cfg = ModelConfig(input_dims=(3, 4, 2), n_tasks=2, dim=16, n_heads=2, dropout=dropout,
                    proj_dim=8)
  w = LossWeights(**dict(zip(("pred", "miss", "rec", "con"), weights)), **loss_kw)
  return CRLMMNAR(cfg, rngs=nnx.Rngs(params=0), loss_weights=w), w


def _batch(b: int = 8):
  from crl_mmnar_jax.batch import make_batch
  from experiments.bench.train import random_cohort
  return make_batch(random_cohort(b, (3, 4, 2), n_tasks=2), np.arange(b))


def test_the_training_loss_weighs_its_terms_with_the_models_weights():
  """total = aux·(w_miss L_miss + w_rec L_rec + w_con L_con) + pred·w_pred L_pred with the
  weights the model holds, whatever (non-zero) weights the loss function was built with."""
  from crl_mmnar_jax.losses import LossWeights, objective
  model, _ = _model(0.1, (2.0, 0.7, 0.4, 0.9))
  batch = _batch()
  out = model(batch.x, batch.present_BxM, deterministic=False, rngs=nnx.Rngs(dropout=3))
  total, parts = objective(LossWeights())(out, batch, 0.5, 1.0)
  want = (2.0 * parts["pred"] + 0.5 * (0.7 * parts["miss"] + 0.4 * parts["rec"]
                                       + 0.9 * parts["con"]))
  np.testing.assert_allclose(float(total), float(want), rtol=1e-6)
  # An evaluation call returns no weights: the loss function's own are used.
  out = model(batch.x, batch.present_BxM, deterministic=True)
  assert "loss_weights_4" not in out
  total, parts = objective(LossWeights())(out, batch, 1.0, 1.0)
  want = parts["pred"] + 0.5 * parts["miss"] + 1.0 * parts["rec"] + 0.3 * parts["con"]
  np.testing.assert_allclose(float(total), float(want), rtol=1e-6)


def _lowered(dropout: float, weights: tuple) -> str:
  import optax

  from crl_mmnar_jax.losses import objective
  from crl_mmnar_jax.train.step import step_fn
  model, w = _model(dropout, weights)
  graphdef, state = nnx.split((model, nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)))
  fn = jax.jit(step_fn(graphdef, objective(w)))
  return fn.lower(state, _batch(), jax.random.key(0), jnp.int32(0), jnp.float32(1),
                  jnp.float32(1)).as_text()


def test_models_differing_only_in_dropout_and_loss_weights_lower_to_one_program():
  a = _lowered(0.1, (1.0, 0.5, 1.0, 0.3))
  assert a == _lowered(0.35, (2.0, 0.05, 3.0, 0.9))
  assert a != _lowered(0.0, (1.0, 0.5, 1.0, 0.3))      # no dropout: no mask compiled
  assert a != _lowered(0.1, (1.0, 0.0, 1.0, 0.3))      # a zero weight skips its term


def test_members_are_grouped_by_which_rates_and_loss_terms_are_on_not_by_their_values():
  from crl_mmnar_jax import methods
  from crl_mmnar_jax.methods import MethodData
  from crl_mmnar_jax.train.members import Member, group_members
  from experiments.bench.train import random_cohort
  from experiments.configs.base import get_base_config
  cohort = random_cohort(32, (3, 4, 2))
  data = MethodData(cohort=cohort, train_rows=np.arange(24), val_rows=np.arange(24, 32),
                    stats={n: {} for n in cohort.modality_names})

  def member(dropout: float = 0.1, **loss):
    config = get_base_config()
    config.model.dim, config.model.n_heads, config.model.dropout = 16, 2, dropout
    for k, v in loss.items():
      config.loss[k] = v
    return Member(config, data, "", "")

  def groups(name, members):
    return group_members(members[0].config, methods.get_method(name), members)

  members = [member(), member(miss=0.2, rec=2.5, con=0.01), member(miss=0.0),
             member(temperature=0.5), member(dropout=0.35, miss=3.0), member(dropout=0.0)]
  got, why = groups("crl_mmnar", members)
  assert got == [[0, 1, 4], [2], [3], [5]] and why
  # MUSE's node dropout is flax's `nnx.Dropout`, whose rate the program holds: kept apart.
  got, _ = groups("muse", [member(), member(dropout=0.35), member()])
  assert got == [[0, 2], [1]]
  # An MLP's dropout is all `ByteDropout`: one group.
  assert groups("mean_impute_mlp", [member(), member(dropout=0.35)]) == ([[0, 1]], None)


def test_configs_trained_together_each_keep_their_loss_terms(tmp_path):
  """`train_and_evaluate_many` of two configs whose loss terms and epochs differ (L_miss
  off and one more epoch in the second): two groups, each trained with its own
  config's loop and loss, as its own run."""
  from crl_mmnar_jax.experiment import train_and_evaluate, train_and_evaluate_many
  from experiments.configs import synthetic
  configs = []
  for miss, epochs in ((0.5, 2), (0.0, 3)):
    c = synthetic.get_config("tiny")
    c.train.epochs, c.eval.plots, c.eval.n_boot = epochs, False, 0
    c.loss.miss = miss
    configs.append(c)
  logs: list[str] = []
  together = train_and_evaluate_many(configs, [str(tmp_path / "a"), str(tmp_path / "b")],
                                     str(tmp_path / "shared"), log=logs.append)
  assert any("in 2 groups" in line for line in logs) or any(
      "one after the other" in line for line in logs)
  for c, r, name in zip(configs, together, "ab"):
    alone = train_and_evaluate(c, str(tmp_path / f"alone_{name}"), log=lambda _: None)
    assert r["training"]["history"] == alone["training"]["history"]
    assert r["metrics"]["val"]["mean"]["auroc"] == pytest.approx(
        alone["metrics"]["val"]["mean"]["auroc"], abs=1e-4)
    assert r["metrics"]["test"]["mean"]["auroc"] == pytest.approx(
        alone["metrics"]["test"]["mean"]["auroc"], abs=1e-4)
