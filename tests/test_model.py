"""Model tests: a missing modality cannot influence anything, LOO isolation, shapes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from crl_mmnar_jax.batch import Batch
from crl_mmnar_jax.losses import LossWeights, total_loss
from crl_mmnar_jax.model import CRLMMNAR, ModelConfig

DIMS = (3, 5, 7, 4)
B = 8


def _inputs(seed=0, b=B):
  rng = np.random.default_rng(seed)
  x = tuple(jnp.asarray(rng.normal(size=(b, d)), jnp.float32) for d in DIMS)
  present = rng.random((b, len(DIMS))) < 0.55
  present[:, 0] = True
  present[0] = [True, False, False, False]   # a single observed modality
  present[1] = True                          # everything observed
  return x, jnp.asarray(present)


def _model(**kw):
  kw = {"n_layers": 2, **kw}
  cfg = ModelConfig(input_dims=DIMS, n_tasks=3, dim=16, n_heads=4, proj_dim=8, **kw)
  return CRLMMNAR(cfg, rngs=nnx.Rngs(0))


def _outputs_as_scalar(model, x, present, dropout_seed=None):
  """A scalar that depends on every float output of the model (random projection)."""
  rngs = None if dropout_seed is None else nnx.Rngs(dropout=dropout_seed)
  out = model(x, present, deterministic=dropout_seed is None, rngs=rngs)
  total = 0.0
  for i, (k, v) in enumerate(sorted(out.items())):
    if jnp.issubdtype(v.dtype, jnp.floating):
      w = jax.random.normal(jax.random.key(i), v.shape)
      total = total + jnp.sum(w * v)
  return total


@pytest.mark.parametrize("dropout_seed", [None, 3])
def test_missing_modality_has_exactly_zero_gradient(dropout_seed):
  model = _model()
  x, present = _inputs()
  grads = jax.jit(jax.grad(lambda x: _outputs_as_scalar(model, x, present, dropout_seed)))(x)
  for m, g in enumerate(grads):
    missing = ~np.asarray(present[:, m])
    assert missing.any() or m == 0
    np.testing.assert_array_equal(np.asarray(g)[missing], 0.0)
    # ... while observed inputs do matter (the test can fail).
    assert np.abs(np.asarray(g)[~missing]).sum() > 0


@pytest.mark.parametrize("garbage", [1e6, np.nan, np.inf])
def test_missing_modality_garbage_changes_nothing(garbage):
  model = _model()
  x, present = _inputs()
  forward = jax.jit(lambda x: model(x, present))
  ref = forward(x)
  x_bad = tuple(jnp.where(present[:, m:m + 1], xm, garbage) for m, xm in enumerate(x))
  bad = forward(x_bad)
  for k in ref:
    np.testing.assert_array_equal(np.asarray(ref[k]), np.asarray(bad[k]), err_msg=k)
    assert np.all(np.isfinite(np.asarray(bad[k], dtype=np.float32))), k


def test_observed_modality_garbage_does_change_outputs():
  """Control for the test above: the same replacement on an observed modality matters."""
  model = _model()
  x, present = _inputs()
  ref = model(x, present)["logits_BxT"]
  x_bad = (x[0] + 1.0,) + x[1:]
  assert not np.allclose(ref, model(x_bad, present)["logits_BxT"])


def test_leave_one_out_never_uses_dropped_modality():
  model = _model()
  x, present = _inputs()
  def rec_grads(x):
    """d(reconstruction of modality m) / d(input of modality m), for every m."""
    def rec_m(xm, m):
      xs = x[:m] + (xm,) + x[m + 1:]
      out = model(xs, present)
      return jnp.sum(jax.random.normal(jax.random.key(m), (B, 16)) * out["rec_BxMxD"][:, m])
    return [jax.grad(rec_m)(x[m], m) for m in range(len(DIMS))]
  for g in jax.jit(rec_grads)(x):
    np.testing.assert_array_equal(np.asarray(g), 0.0)
  # Reconstruction of modality 1 does use the other observed modalities.
  g0 = jax.grad(lambda x0: jnp.sum(model((x0,) + x[1:], present)["rec_BxMxD"][:, 1]))(x[0])
  rows = np.asarray(present[:, 1]) & (np.asarray(present).sum(1) >= 2)
  assert np.abs(np.asarray(g0)[rows]).sum() > 0


def test_rec_valid_mask():
  model = _model()
  x, present = _inputs()
  valid = np.asarray(model(x, present)["rec_valid_BxM"])
  p = np.asarray(present)
  np.testing.assert_array_equal(valid, p & (p.sum(1, keepdims=True) >= 2))


def test_patients_do_not_interact_in_the_forward_pass():
  """Causality-style test: patient i's outputs do not depend on patient j's inputs."""
  model = _model()
  x, present = _inputs()
  i = 3
  def out_i(x):
    out = model(x, present)
    return sum(jnp.sum(v[i]) for k, v in out.items() if jnp.issubdtype(v.dtype, jnp.floating))
  grads = jax.jit(jax.grad(out_i))(x)
  for m, g in enumerate(grads):
    g = np.asarray(g)
    others = np.delete(g, i, axis=0)
    np.testing.assert_array_equal(others, 0.0)


def test_all_missing_padding_row_stays_finite():
  model = _model()
  x, present = _inputs()
  present = present.at[-1].set(False)
  out = model(x, present)
  for k, v in out.items():
    assert np.all(np.isfinite(np.asarray(v, np.float32))), k


@pytest.mark.parametrize("kw", [
    dict(),
    dict(use_missingness_embedding=False),
    dict(use_modality_tokens=False),
    dict(use_contrastive=False),
    dict(use_reconstruction=False, use_contrastive=False),
    dict(n_layers=0),
    dict(miss_head="pattern"),
])
def test_ablations_forward_and_jitted_gradient_step(kw):
  model = _model(rec_drops=0, **kw)          # exact L_rec: the loss falls in 5 steps
  x, present = _inputs()
  rng = np.random.default_rng(1)
  labels = jnp.asarray(rng.integers(0, 2, (B, 3)), jnp.float32)
  batch = Batch(x=x, present_BxM=present, labels_BxT=labels,
                label_mask_BxT=jnp.ones((B, 3), bool), pattern_B=jnp.zeros(B, jnp.int32),
                patient_B=jnp.arange(B, dtype=jnp.int32), weight_B=jnp.ones(B))
  out = model(x, present)
  chex.assert_shape(out["logits_BxT"], (B, 3))
  chex.assert_shape(out["h_BxD"], (B, 16))
  assert ("z_BxD" in out) == model.cfg.use_missingness_embedding
  assert ("rec_BxMxD" in out) == model.cfg.use_reconstruction
  assert ("con_e_BxMxP" in out) == model.cfg.use_contrastive
  if model.cfg.use_missingness_embedding:
    n_miss = 2 ** len(DIMS) if model.cfg.miss_head == "pattern" else len(DIMS)
    chex.assert_shape(out["miss_logits"], (B, n_miss))

  tx = optax.adamw(1e-2)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))

  @jax.jit
  def step(state, batch, key):
    model, optimizer = nnx.merge(graphdef, state)
    def loss_fn(model):
      out = model(batch.x, batch.present_BxM, deterministic=False, rngs=nnx.Rngs(dropout=key))
      return total_loss(out, batch, LossWeights(), miss_kind=model.cfg.miss_head)
    (loss, parts), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss, parts

  losses = []
  for s in range(5):
    state, loss, parts = step(state, batch, jax.random.key(s))
    chex.assert_tree_all_finite(parts)
    losses.append(float(loss))
  chex.assert_tree_all_finite(state)
  assert losses[-1] < losses[0]


def test_config_validation():
  with pytest.raises(ValueError, match="divisible"):
    ModelConfig(input_dims=(3,), n_tasks=1, dim=10, n_heads=4)
  with pytest.raises(ValueError, match="use_contrastive"):
    ModelConfig(input_dims=(3,), n_tasks=1, use_reconstruction=False)
  with pytest.raises(ValueError, match="miss_head"):
    ModelConfig(input_dims=(3,), n_tasks=1, miss_head="nope")
  model = _model()
  x, present = _inputs()
  with pytest.raises(ValueError, match="modality arrays"):
    model(x[:2], present)
