"""Random-drop reconstruction (`loss.rec_drops`), the shared-QKV leave-one-out fusion, the
prefetching loop helper and mixed precision."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from crl_mmnar_jax.batch import Batch
from crl_mmnar_jax.losses import LossWeights, info_nce, objective, total_loss
from crl_mmnar_jax.model import CRLMMNAR, ModelConfig
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.train import step as step_lib

DIMS = (3, 5, 7, 4)


def _inputs(b, seed=0, p=0.6):
  rng = np.random.default_rng(seed)
  x = tuple(jnp.asarray(rng.normal(size=(b, d)), jnp.float32) for d in DIMS)
  present = rng.random((b, len(DIMS))) < p
  present[:, 0] = True
  present[0] = [True, False, False, False]   # a single observed modality: never drawn
  present[1] = True                          # everything observed
  present[-1] = False                        # a padding row
  weight = np.ones(b, np.float32)
  weight[-1] = 0.0
  labels = rng.integers(0, 2, (b, 3)).astype(np.float32)
  batch = Batch(x=x, present_BxM=jnp.asarray(present), labels_BxT=jnp.asarray(labels),
                label_mask_BxT=jnp.ones((b, 3), bool), pattern_B=jnp.zeros(b, jnp.int32),
                patient_B=jnp.arange(b, dtype=jnp.int32), weight_B=jnp.asarray(weight))
  return batch


def _model(n_layers=1, dropout=0.1, rec_drops=0, seed=0):
  cfg = ModelConfig(input_dims=DIMS, n_tasks=3, dim=16, n_heads=4, proj_dim=8,
                    n_layers=n_layers, dropout=dropout, rec_drops=rec_drops)
  return CRLMMNAR(cfg, rngs=nnx.Rngs(seed))


def _naive_copies(model, tok, mask, drop_KxB):
  """K masked calls of the fusion: copy k zeroes and masks token drop_KxB[k, b]."""
  m = tok.shape[1]
  hs = []
  for drop_B in drop_KxB:
    keep = mask & (jnp.arange(m) != drop_B[:, None])
    hs.append(model.fusion(jnp.where(keep[..., None], tok, 0.0), keep, deterministic=True,
                           rngs=None))
  return jnp.stack(hs)


@pytest.mark.parametrize("n_layers", [0, 1, 2])
def test_shared_qkv_fusion_equals_naive_masked_copies(n_layers):
  model = _model(n_layers)
  batch = _inputs(16)
  present = batch.present_BxM
  e = model.encode(batch.x, present, deterministic=True, rngs=None)
  tok, _ = model.tokens(e, present, deterministic=True, rngs=None)
  m, b = len(DIMS), tok.shape[0]
  rng = np.random.default_rng(1)
  for drop_KxB in (np.broadcast_to(np.arange(m)[:, None], (m, b)),   # the exact path
                   rng.integers(0, m, (2, b))):                       # random drops
    drop_KxB = jnp.asarray(drop_KxB, jnp.int32)
    h, h_k = jax.jit(lambda t, d: model.fusion.with_drops(t, present, d, deterministic=True,
                                                          rngs=None))(tok, drop_KxB)
    np.testing.assert_allclose(h, model.fusion(tok, present, deterministic=True, rngs=None),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_k, _naive_copies(model, tok, present, drop_KxB),
                               rtol=1e-5, atol=1e-5)


def test_draws_are_observed_distinct_and_weighted_by_inverse_probability():
  model = _model(rec_drops=2, dropout=0.0)
  batch = _inputs(64)
  present = np.asarray(batch.present_BxM)
  n = present.sum(1)
  draw = jax.jit(lambda k: model.draw_drops(batch.present_BxM, deterministic=False,
                                            rngs=nnx.Rngs(dropout=k))[1])
  for s in range(5):
    w = np.asarray(draw(jax.random.key(s)))
    hit = w > 0
    assert not (hit & ~present).any()                         # only observed modalities
    np.testing.assert_array_equal(hit.sum(1), np.where(n >= 2, np.minimum(2, n), 0))
    np.testing.assert_allclose(w[hit], (n / np.clip(n, 1, 2))[np.nonzero(hit)[0]])


def _aux_losses(model, batch, w):
  """(L_rec, L_con) of one forward pass with the model's draw (random when rngs given)."""

  def f(key):
    rngs = None if key is None else nnx.Rngs(dropout=key)
    out = model(batch.x, batch.present_BxM, deterministic=key is None, rngs=rngs)
    _, parts = total_loss(out, batch, w)
    return parts["rec"], parts["con"]

  return f


@pytest.mark.parametrize("rec_drops", [1, 2])
def test_random_drop_losses_average_to_the_leave_one_out_losses(rec_drops):
  """Over many draws on a fixed batch, the random-drop L_rec averages to the exact
  leave-one-out L_rec (its estimator is unbiased: inverse-probability weights, the
  denominator the number of valid pairs). The tolerance is 4 standard errors of the mean
  of N draws (a false failure has probability ~6e-5).

  L_con is unbiased in its b -> a half. In its a -> b half the log of the importance-
  weighted sum over the drawn negatives is biased low (Jensen); the delta-method term
  removes the first-order part. Measured at initialisation (temperature 0.1, the
  sharpest case) with 1000 draws: -0.7% (B = 128, one drop), -0.3% (B = 256), -2.1%
  (B = 64), ~0% with two drops; it shrinks as 1/B. Bounded here at 1.5% of the loss
  plus the same 4 standard errors."""
  n_draws = 2000
  model = _model(rec_drops=rec_drops, dropout=0.0)   # dropout off: only the draw varies
  batch = _inputs(128)
  w = LossWeights()
  exact_rec, exact_con = jax.jit(_aux_losses(model, batch, w))(None)
  exact_rec2, exact_con2 = jax.jit(_aux_losses(_model(rec_drops=0, dropout=0.0), batch, w))(None)
  np.testing.assert_allclose([exact_rec, exact_con], [exact_rec2, exact_con2], rtol=1e-6)
  keys = jax.random.split(jax.random.key(123), n_draws)
  rec, con = jax.jit(jax.vmap(_aux_losses(model, batch, w)))(keys)
  rec, con = np.asarray(rec, np.float64), np.asarray(con, np.float64)
  assert rec.std() > 0 and con.std() > 0                    # the draw does vary
  se_rec, se_con = rec.std(ddof=1) / np.sqrt(n_draws), con.std(ddof=1) / np.sqrt(n_draws)
  assert abs(rec.mean() - float(exact_rec)) <= 4 * se_rec, (rec.mean(), exact_rec, se_rec)
  assert abs(con.mean() - float(exact_con)) <= 0.015 * float(exact_con) + 4 * se_con, \
      (con.mean(), exact_con, se_con)


def test_drawn_info_nce_with_every_row_drawn_is_the_exact_info_nce():
  rng = np.random.default_rng(0)
  b, m, p = 12, 3, 5
  a = jnp.asarray(rng.normal(size=(b, m, p)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(b, m, p)), jnp.float32)
  valid = jnp.asarray(rng.random((b, m)) < 0.7)
  weight = jnp.ones(b).at[-1].set(0.0)
  exact = info_nce(a, c, valid, weight, 0.5)
  drawn = info_nce(a, c, valid, weight, 0.5, draw_BxM=valid.astype(jnp.float32))
  np.testing.assert_allclose(drawn, exact, rtol=1e-6)


@pytest.mark.parametrize("rec_drops", [0, 1])
def test_missing_modality_has_exactly_zero_gradient_in_training(rec_drops):
  model = _model(n_layers=2, rec_drops=rec_drops)
  batch = _inputs(16)
  present = batch.present_BxM

  def scalar(x):
    out = model(x, present, deterministic=False, rngs=nnx.Rngs(dropout=3))
    _, parts = total_loss(out, batch, LossWeights())
    return parts["total"] + sum(jnp.sum(v) for v in out.values()
                                if jnp.issubdtype(v.dtype, jnp.floating))

  grads = jax.jit(jax.grad(scalar))(batch.x)
  for mod, g in enumerate(grads):
    missing = ~np.asarray(present[:, mod])
    np.testing.assert_array_equal(np.asarray(g)[missing], 0.0)
    assert np.abs(np.asarray(g)[~missing]).sum() > 0


def test_prefetched_keeps_order_and_raises_load_errors():
  assert list(step_lib.prefetched(lambda i: i * i, range(5))) == [(i, i * i) for i in range(5)]
  assert list(step_lib.prefetched(lambda i: i, [])) == []

  def load(i):
    if i == 2:
      raise ValueError("bad row")
    return i

  seen = []
  with pytest.raises(ValueError, match="bad row"):
    for i, _ in step_lib.prefetched(load, range(4)):
      seen.append(i)
  assert seen == [0, 1]


def _train(compute_dtype, n_steps=3):
  batch = _inputs(32)
  tx = optax.adamw(1e-3)
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  graphdef, state = step_lib.init_state(lambda rngs: _model(rec_drops=1), tx, 0, mesh)
  step = step_lib.make_step(graphdef, objective(LossWeights()), compute_dtype)
  losses = []
  for s in range(n_steps):
    state, parts = step(state, batch, jax.random.key(0), np.int32(s), np.float32(1.0),
                        np.float32(1.0))
    losses.append({k: float(v) for k, v in parts.items()})
  model, optimizer = nnx.merge(graphdef, state)
  return nnx.state(model, nnx.Param), nnx.state(optimizer), losses


def test_bfloat16_compute_is_finite_and_agrees_with_float32():
  """bfloat16 has an 8-bit mantissa (relative rounding 2^-9 ≈ 0.2% per operation); the
  loss terms, computed in float32 from bfloat16 activations, agree with float32 to
  about 0.1% (measured: at most 0.11% over three steps); we allow 1%. Parameters: AdamW
  moves every coordinate by about lr per step whatever its gradient's size, so a
  coordinate whose gradient is near zero can move the other way in bfloat16; each may
  differ by at most 2·lr per step, and 95% must agree to 0.1·lr per step (measured:
  98%, largest difference 1.2·lr per step)."""
  n_steps, lr = 3, 1e-3
  s32, _, l32 = _train("float32", n_steps)
  s16, opt16, l16 = _train("bfloat16", n_steps)
  for a, b in zip(l32, l16):
    assert b["finite"] and np.isfinite(b["total"])
    for k in ("pred", "miss", "rec", "con", "total"):
      np.testing.assert_allclose(b[k], a[k], rtol=1e-2, err_msg=k)
  p32, p16 = jax.tree.leaves(s32), jax.tree.leaves(s16)
  assert all(p.dtype == jnp.float32 for p in p16)            # parameters stay float32
  assert all(o.dtype == jnp.float32 for o in jax.tree.leaves(opt16)
             if jnp.issubdtype(o.dtype, jnp.floating))       # and the optimizer state
  diff = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel()
                         for a, b in zip(p32, p16)])
  assert diff.max() <= 2 * lr * n_steps
  assert np.mean(diff <= 0.1 * lr * n_steps) >= 0.95


@pytest.mark.parametrize("b,rec_drops", [(128, 1), (96, 2), (8, 1)])
def test_random_drop_reconstructions_equal_the_naive_decoders(b, rec_drops):
  """With random drops each drawn (patient, modality) gets Rec_m of the fusion without m
  (grouped into tiles for large batches, `layers.GroupedRows`; dense for small ones)."""
  model = _model(n_layers=1, rec_drops=rec_drops, dropout=0.0)
  batch = _inputs(b)
  present = batch.present_BxM
  key = jax.random.key(7)
  out = jax.jit(lambda k: model(batch.x, present, deterministic=False,
                                rngs=nnx.Rngs(dropout=k)))(key)
  drop_KxB, draw = model.draw_drops(present, deterministic=False, rngs=nnx.Rngs(dropout=key))
  np.testing.assert_array_equal(out["rec_draw_BxM"], draw)
  e = model.encode(batch.x, present, deterministic=True, rngs=None)
  tok, _ = model.tokens(e, present, deterministic=True, rngs=None)
  h_KxBxD = _naive_copies(model, tok, present, drop_KxB)
  w1, b1, w2, b2 = (np.asarray(p[...]) for p in (model.rec_w1, model.rec_b1, model.rec_w2,
                                                  model.rec_b2))
  checked = 0
  for k_, drop_B in enumerate(np.asarray(drop_KxB)):
    for i, m in enumerate(drop_B):
      if draw[i, m] == 0:
        continue
      y = np.asarray(nnx.gelu(h_KxBxD[k_, i] @ w1[m] + b1[m]))
      rec = y @ w2[m] + b2[m]
      np.testing.assert_allclose(out["rec_BxMxD"][i, m], rec, rtol=2e-4, atol=2e-5)
      proj = rec @ np.asarray(model.proj_rec[...][m])
      np.testing.assert_allclose(out["con_rec_BxMxP"][i, m], proj / np.linalg.norm(proj),
                                 rtol=2e-4, atol=2e-5)
      checked += 1
  assert checked >= b // 2
