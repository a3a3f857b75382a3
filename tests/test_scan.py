"""The scanned epoch (`train/scan.py`, `train.scan_epoch`): the cohort on the device and
the epoch as one `lax.scan` equal the host loop (same batches, same steps) to float
tolerance, for one member and for stacked members with masked steps; the index matrix
against a naive loop; when the scan is used."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax import methods
from crl_mmnar_jax.batch import make_batch
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.losses import objective
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.train import optim
from crl_mmnar_jax.train import scan as scan_lib
from crl_mmnar_jax.train import step as step_lib
from crl_mmnar_jax.train.members import MemberAxis


def _cohort(n: int, seed: int) -> Cohort:
  rng = np.random.default_rng(seed)
  dims = (3, 5, 4)
  present = rng.uniform(size=(n, 3)) < 0.6
  present[:, 0] = True
  feats = tuple(np.where(present[:, m:m + 1], rng.normal(size=(n, d)), 0).astype(np.float32)
                for m, d in enumerate(dims))
  labels = (rng.uniform(size=(n, 2)) < 0.3).astype(np.float32)
  labels[rng.uniform(size=(n, 2)) < 0.1] = np.nan
  return Cohort(np.arange(n), feats, present, labels, ("a", "b", "c"), ("t0", "t1"))


def _setup(k: int, n: int = 50):
  from experiments.configs.base import get_base_config
  config = get_base_config()
  config.model.dim, config.model.proj_dim = 16, 8
  cohorts = [_cohort(n, seed) for seed in range(k)]       # each member its own features
  mesh = mesh_lib.make_mesh()
  tx = optim.make_optimizer(config, 100)
  mcfg = methods.model_config(config, cohorts[0])
  inits = [step_lib.create_state(mcfg, methods.loss_weights(config), tx, s, mesh) for s in range(k)]
  axis = MemberAxis(k)
  loss = objective(methods.loss_weights(config), mcfg.miss_head)
  state = axis.stack([s for _, s in inits])
  keys = jnp.stack([jax.random.key(s) for s in range(k)])
  return cohorts, mesh, axis, inits[0][0], loss, state, keys


@pytest.mark.parametrize("k", [1, 3])
def test_scanned_epoch_equals_the_host_loop(k):
  bs, n = 16, 50
  cohorts, mesh, axis, graphdef, loss, state, keys = _setup(k, n)
  rng = np.random.default_rng(0)
  n_batches = [4, 2, 3][:k] if k > 1 else [4]          # uneven: masked steps for k > 1
  orders = []
  for nb in n_batches:
    rows = rng.permutation(n)[:nb * bs - 5]               # the last batch padded
    orders.append(np.stack([np.pad(rows[i:i + bs], (0, bs - len(rows[i:i + bs])),
                                   constant_values=-1) for i in range(0, len(rows), bs)]))
  steps = max(n_batches)
  active_SxK = np.arange(steps)[:, None] < np.array(n_batches)[None]
  active_SxK[:, -1] &= k == 1 or np.arange(steps) != 1    # and one member skips step 1
  steps0 = np.arange(k, dtype=np.int32) * 7
  aux, pred = 0.5, 1.0

  step = axis.make_step(graphdef, loss, "float32")        # the host loop, step by step
  host, counters, host_parts = jax.tree.map(jnp.copy, state), steps0.copy(), []
  for s in range(steps):
    batch = axis.put_batches([make_batch(c, o[s] if s < len(o) else np.full(bs, -1), bs)
                              for c, o in zip(cohorts, orders)], mesh)
    host, parts = step(host, batch, keys, counters, active_SxK[s], jnp.float32(aux),
                       jnp.float32(pred))
    counters = counters + active_SxK[s]
    host_parts.append(jax.device_get(parts))

  epoch_fn = scan_lib.EpochProgram(axis.step_body(graphdef, loss, "float32"), k, mesh)
  data = scan_lib.device_cohort(cohorts, k, mesh)
  idx = scan_lib.epoch_indices(orders, steps, bs, n, k)
  scanned, parts = epoch_fn(state, data, idx, keys, steps0, active_SxK, aux, pred)
  for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(scanned)):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=1e-5, atol=1e-6)
  for name in ("total", "grad_norm"):
    np.testing.assert_allclose(parts[name], np.stack([p[name] for p in host_parts]),
                               rtol=1e-5, atol=1e-6)
  assert parts["total"].shape == (steps, k)
  if k > 1:
    assert np.all(parts["total"][~active_SxK] == 0)      # masked steps report nothing


def test_epoch_indices_against_a_loop():
  orders = [np.array([[3, 1], [4, -1]]), np.array([[0, 2]])]
  idx = scan_lib.epoch_indices(orders, 3, 2, 9, 2)
  expected = np.full((3, 2, 2), 9)
  for m, order in enumerate(orders):
    for s, row in enumerate(order):
      for b, r in enumerate(row):
        expected[s, m, b] = 9 if r < 0 else r
  np.testing.assert_array_equal(idx, expected)
  np.testing.assert_array_equal(scan_lib.epoch_indices(orders[:1], 2, 2, 9, 1),
                                [[3, 1], [4, 9]])


def test_padding_row_is_all_absent():
  c = _cohort(5, 0)
  data = scan_lib.device_cohort([c], 1, mesh_lib.make_mesh())
  assert data.present_BxM.shape == (6, 3)
  assert not np.asarray(data.present_BxM[5]).any() and float(data.weight_B[5]) == 0.0
  assert int(data.patient_B[5]) == -1 and not np.asarray(data.label_mask_BxT[5]).any()


def test_when_the_scan_is_used(monkeypatch):
  c = [_cohort(10, 0)]
  assert scan_lib.use_scan("auto", c, True, 0)
  assert scan_lib.use_scan("on", c, True, 0)
  assert not scan_lib.use_scan("off", c, True, 0)
  assert not scan_lib.use_scan("on", c, False, 0)         # rows on several processes
  assert not scan_lib.use_scan("auto", c, True, 100)      # mid-epoch checkpoints
  monkeypatch.setattr(scan_lib, "AUTO_MAX_BYTES", scan_lib.cohort_bytes(c) - 1)
  assert not scan_lib.use_scan("auto", c, True, 0) and scan_lib.use_scan("on", c, True, 0)
  with pytest.raises(ValueError, match="train.scan_epoch='yes'"):
    scan_lib.use_scan("yes", c, True, 0)


def test_a_run_scanned_and_on_the_host_predict_the_same(tmp_path):
  from crl_mmnar_jax.experiment import train_and_evaluate
  from experiments.configs import synthetic
  preds = {}
  for mode in ("on", "off"):
    config = synthetic.get_config("tiny")
    config.data.n = 300
    config.train.epochs = 3
    config.train.scan_epoch = mode
    config.eval.plots = False
    config.eval.n_boot = 0
    results = train_and_evaluate(config, str(tmp_path / mode), log=lambda _: None)
    preds[mode] = (pl.read_parquet(tmp_path / mode / "predictions.parquet"),
                   results["training"]["best_epoch"])
  (a, ea), (b, eb) = preds["on"], preds["off"]
  assert ea == eb
  for col in [c for c in a.columns if c.endswith("_prob")]:
    np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), atol=1e-5)
