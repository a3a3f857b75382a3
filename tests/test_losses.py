"""Each loss equals a naive per-example numpy reference on random inputs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_mmnar_jax import losses

B, M, T, D, P = 9, 4, 3, 6, 5


def _sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x))


def _bce(logit, y):
  p = _sigmoid(logit)
  return -(y * math.log(p) + (1 - y) * math.log(1 - p))


@pytest.fixture
def data():
  rng = np.random.default_rng(0)
  present = rng.random((B, M)) < 0.6
  present[:, 0] = True
  present[2] = [True, False, False, False]
  weight = np.ones(B, np.float32)
  weight[-2:] = 0.0                      # two padding rows
  label_mask = rng.random((B, T)) < 0.7
  label_mask[:, 2] = False               # a task with no known label in this batch
  label_mask[0, 2] = True
  return dict(
      logits=rng.normal(size=(B, T)).astype(np.float32),
      labels=rng.integers(0, 2, (B, T)).astype(np.float32),
      label_mask=label_mask, weight=weight, present=present,
      miss_logits=rng.normal(size=(B, M)).astype(np.float32),
      pattern_logits=rng.normal(size=(B, 2 ** M)).astype(np.float32),
      e=rng.normal(size=(B, M, D)).astype(np.float32),
      rec=rng.normal(size=(B, M, D)).astype(np.float32),
      a=rng.normal(size=(B, M, P)).astype(np.float32),
      b=rng.normal(size=(B, M, P)).astype(np.float32),
  )


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_pred_loss_matches_naive(data, gamma):
  per_task = []
  for t in range(T):
    terms = []
    for i in range(B):
      if data["label_mask"][i, t] and data["weight"][i] > 0:
        y = data["labels"][i, t]
        p = _sigmoid(data["logits"][i, t])
        pt = p if y == 1 else 1 - p
        terms.append(_bce(data["logits"][i, t], y) * (1 - pt) ** gamma)
    if terms:
      per_task.append(np.mean(terms))
  expected = np.mean(per_task)
  got = losses.pred_loss(jnp.asarray(data["logits"]), jnp.asarray(data["labels"]),
                         jnp.asarray(data["label_mask"]), jnp.asarray(data["weight"]), gamma)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_miss_loss_bce_matches_naive(data):
  terms = [np.mean([_bce(data["miss_logits"][i, m], float(data["present"][i, m]))
                    for m in range(M)]) for i in range(B) if data["weight"][i] > 0]
  got = losses.miss_loss(jnp.asarray(data["miss_logits"]), jnp.asarray(data["present"]),
                         jnp.asarray(data["weight"]), "bce")
  np.testing.assert_allclose(float(got), np.mean(terms), rtol=1e-5)


def test_miss_loss_pattern_matches_naive(data):
  terms = []
  for i in range(B):
    if data["weight"][i] > 0:
      pid = sum(int(data["present"][i, m]) << m for m in range(M))
      z = data["pattern_logits"][i].astype(np.float64)
      terms.append(np.log(np.exp(z).sum()) - z[pid])
  got = losses.miss_loss(jnp.asarray(data["pattern_logits"]), jnp.asarray(data["present"]),
                         jnp.asarray(data["weight"]), "pattern")
  np.testing.assert_allclose(float(got), np.mean(terms), rtol=1e-5)


def _valid(data):
  p = data["present"]
  return p & (p.sum(1, keepdims=True) >= 2)


def test_rec_loss_matches_naive(data):
  valid = _valid(data)
  terms = [np.mean((data["rec"][i, m] - data["e"][i, m]) ** 2)
           for i in range(B) for m in range(M) if valid[i, m] and data["weight"][i] > 0]
  got = losses.rec_loss(jnp.asarray(data["e"]), jnp.asarray(data["rec"]), jnp.asarray(valid),
                        jnp.asarray(data["weight"]))
  np.testing.assert_allclose(float(got), np.mean(terms), rtol=1e-5)


def test_rec_loss_stop_gradient_blocks_target():
  e = jnp.ones((2, 2, 3))
  rec = jnp.zeros((2, 2, 3))
  valid = jnp.ones((2, 2), bool)
  w = jnp.ones(2)
  g = jax.grad(lambda e: losses.rec_loss(e, rec, valid, w, stop_gradient=True))(e)
  np.testing.assert_array_equal(g, 0.0)
  g = jax.grad(lambda e: losses.rec_loss(e, rec, valid, w, stop_gradient=False))(e)
  assert np.abs(g).sum() > 0


@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_info_nce_matches_naive(data, temperature):
  valid = _valid(data) & (data["weight"][:, None] > 0)
  a, b = data["a"].astype(np.float64), data["b"].astype(np.float64)
  per_m = []
  for m in range(M):
    rows = [i for i in range(B) if valid[i, m]]
    if len(rows) < 2:
      continue
    terms = []
    for i in rows:
      s_ab = np.array([a[i, m] @ b[j, m] for j in rows]) / temperature
      s_ba = np.array([b[i, m] @ a[j, m] for j in rows]) / temperature
      k = rows.index(i)
      ce_ab = np.log(np.exp(s_ab).sum()) - s_ab[k]
      ce_ba = np.log(np.exp(s_ba).sum()) - s_ba[k]
      terms.append(0.5 * (ce_ab + ce_ba))
    per_m.append(np.mean(terms))
  got = losses.info_nce(jnp.asarray(data["a"]), jnp.asarray(data["b"]),
                        jnp.asarray(_valid(data)), jnp.asarray(data["weight"]), temperature)
  np.testing.assert_allclose(float(got), np.mean(per_m), rtol=1e-5)


def test_padding_rows_are_ignored_even_with_garbage(data):
  """Rows with weight 0 change no loss, whatever their contents."""
  valid = _valid(data)
  def all_losses(d):
    return np.array([
        losses.pred_loss(d["logits"], d["labels"], d["label_mask"], d["weight"]),
        losses.miss_loss(d["miss_logits"], d["present"], d["weight"]),
        losses.rec_loss(d["e"], d["rec"], valid, d["weight"]),
        losses.info_nce(d["a"], d["b"], valid, d["weight"]),
    ])
  ref = all_losses({k: jnp.asarray(v) for k, v in data.items()})
  noisy = {k: np.array(v) for k, v in data.items()}
  for k in ("logits", "miss_logits", "e", "rec", "a", "b"):
    noisy[k][-2:] = 1e3
  noisy["labels"][-2:] = 1.0
  got = all_losses({k: jnp.asarray(v) for k, v in noisy.items()})
  np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_total_loss_weights_and_scales(data):
  from crl_mmnar_jax.batch import Batch
  valid = _valid(data)
  out = {"logits_BxT": data["logits"], "miss_logits": data["miss_logits"], "e_BxMxD": data["e"],
         "rec_BxMxD": data["rec"], "rec_valid_BxM": valid, "con_e_BxMxP": data["a"],
         "con_rec_BxMxP": data["b"]}
  out = {k: jnp.asarray(v) for k, v in out.items()}
  batch = Batch(x=(), present_BxM=jnp.asarray(data["present"]),
                labels_BxT=jnp.asarray(data["labels"]),
                label_mask_BxT=jnp.asarray(data["label_mask"]), pattern_B=jnp.zeros(B, int),
                patient_B=jnp.arange(B), weight_B=jnp.asarray(data["weight"]))
  w = losses.LossWeights(pred=1.0, miss=0.5, rec=1.0, con=0.3)
  total, parts = losses.total_loss(out, batch, w, aux_scale=0.25, pred_scale=1.0)
  expected = parts["pred"] + 0.25 * (0.5 * parts["miss"] + parts["rec"] + 0.3 * parts["con"])
  np.testing.assert_allclose(float(total), float(expected), rtol=1e-6)
  total0, _ = losses.total_loss(out, batch, w, aux_scale=1.0, pred_scale=0.0)
  np.testing.assert_allclose(float(total0),
                             float(0.5 * parts["miss"] + parts["rec"] + 0.3 * parts["con"]),
                             rtol=1e-6)
