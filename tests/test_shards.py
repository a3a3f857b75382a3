"""Tests for `shards`: the fixed data shards that one process emulates and P processes
hold (the multi-process runs themselves are in test_multiprocess.py)."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest

from crl_mmnar_jax import data as data_lib
from crl_mmnar_jax.batch import make_batch
from crl_mmnar_jax.data import shards
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.data.standardize import standardize


def test_shard_of_is_crc32_of_the_id_text():
  ids = np.array([5, 17, 123456789012, 0])
  want = [zlib.crc32(str(i).encode()) % 4 for i in ids.tolist()]
  np.testing.assert_array_equal(shards.shard_of(ids, 4), want)
  sids = np.array(["p1", "abc", "p1"])
  want = [zlib.crc32(s.encode()) % 3 for s in sids.tolist()]
  np.testing.assert_array_equal(shards.shard_of(sids, 3), want)
  np.testing.assert_array_equal(shards.shard_of(ids, 1), 0)
  counts = np.bincount(shards.shard_of(np.arange(10_000), 8), minlength=8)
  assert counts.min() > 1100 and counts.max() < 1400          # roughly even


def test_held_shards():
  assert shards.held_shards(1, 1, 2) == (0,)                    # replicated
  assert shards.held_shards(4, 0, 2) == (0, 1)
  assert shards.held_shards(4, 1, 2) == (2, 3)
  assert shards.held_shards(2, 0, 1) == (0, 1)                  # one process emulates
  with pytest.raises(ValueError, match="multiple of the number of processes"):
    shards.held_shards(3, 0, 2)
  with pytest.raises(ValueError, match="data_shards=0"):
    shards.held_shards(0, 0, 1)


def _naive_layout(item_shard, n_shards, batch_size):
  block = batch_size // n_shards
  queues = [[i for i, s in enumerate(item_shard) if s == k] for k in range(n_shards)]
  out = []
  while any(queues):
    batch = []
    for k in range(n_shards):
      take, queues[k] = queues[k][:block], queues[k][block:]
      batch += take + [-1] * (block - len(take))
    out.append(batch)
  return np.array(out, np.int64).reshape(-1, batch_size)


@pytest.mark.parametrize("n_shards,batch_size,n", [(1, 8, 21), (2, 8, 21), (4, 12, 50),
                                                   (3, 6, 0), (2, 4, 3)])
def test_batch_layout_matches_a_naive_loop(n_shards, batch_size, n):
  item_shard = np.random.default_rng(n).integers(0, n_shards, n)
  got = shards.batch_layout(item_shard, n_shards, batch_size)
  np.testing.assert_array_equal(got, _naive_layout(item_shard, n_shards, batch_size))
  assert got.shape[1] == batch_size
  np.testing.assert_array_equal(np.sort(got[got >= 0]), np.arange(n))   # each item once


def test_one_shard_is_the_plain_shuffled_order():
  rows = np.arange(100, 137)
  layout = shards.Layout.single(200)
  order = layout.epoch_order(rows, 3, 2)
  np.testing.assert_array_equal(order, rows[np.random.default_rng([3, 2]).permutation(37)])
  b = layout.batches(order, 16)
  assert b.shape == (3, 16) and layout.n_batches(rows, 16) == 3
  np.testing.assert_array_equal(b.reshape(-1)[:37], order)
  assert (b.reshape(-1)[37:] == -1).all()


def test_sharded_epoch_blocks_come_from_their_shard():
  n, s_count, bs = 300, 4, 16
  shard_N = shards.shard_of(np.arange(n), s_count)
  layout = shards.Layout(s_count, shard_N, tuple(range(s_count)))
  rows = np.flatnonzero(np.arange(n) % 5 != 0)          # the training rows
  order = layout.epoch_order(rows, 7, 1)
  for s in range(s_count):                                # one stream per shard
    mine = rows[shard_N[rows] == s]
    np.testing.assert_array_equal(order[shard_N[order] == s],
                                  mine[np.random.default_rng([7, 1, s]).permutation(len(mine))])
  b = layout.batches(order, bs)
  assert b.shape[0] == layout.n_batches(rows, bs)
  blocks = b.reshape(b.shape[0], s_count, bs // s_count)
  for s in range(s_count):
    real = blocks[:, s][blocks[:, s] >= 0]
    assert (shard_N[real] == s).all()
  np.testing.assert_array_equal(np.sort(b[b >= 0]), np.sort(rows))
  assert not np.array_equal(order, layout.epoch_order(rows, 7, 2))
  with pytest.raises(ValueError, match="multiple of train.data_shards=4"):
    layout.check_batch_divides_shards(18, "train.batch_size")


def test_make_batch_pads_in_place():
  c = make_synthetic(40, n_modalities=3, n_tasks=2, seed=1).cohort
  rows = np.array([5, -1, 7, -1, 9, 2])
  b = make_batch(c, rows, 8)
  real = np.array([1, 0, 1, 0, 1, 1, 0, 0], bool)
  np.testing.assert_array_equal(b.weight_B, real.astype(np.float32))
  np.testing.assert_array_equal(b.patient_B, [5, -1, 7, -1, 9, 2, -1, -1])
  dense = make_batch(c, np.array([5, 7, 9, 2]))
  for m in range(3):
    np.testing.assert_array_equal(b.x[m][real], dense.x[m])
    assert not b.x[m][~real].any()
  assert not b.present_BxM[~real].any() and not b.label_mask_BxT[~real].any()
  np.testing.assert_array_equal(b.labels_BxT[real], dense.labels_BxT)
  np.testing.assert_array_equal(b.pattern_B[real], dense.pattern_B)


def test_held_rows_refuse_rows_of_other_processes():
  local = np.arange(12, dtype=np.float32).reshape(4, 3)
  h = shards.HeldRows(local, start=10, n=20)
  assert h.shape == (20, 3) and len(h) == 20
  np.testing.assert_array_equal(h[np.array([11, 13])], local[[1, 3]])
  mask = np.zeros(20, bool)
  mask[[10, 12]] = True
  np.testing.assert_array_equal(h[mask], local[[0, 2]])
  with pytest.raises(DataError, match="row 9 is held by another process"):
    h[np.array([10, 9])]
  with pytest.raises(DataError, match="data_shards=1"):
    np.asarray(h)
  with pytest.raises(DataError, match="data_shards=1"):
    np.concatenate([h, h], axis=1)
  doubled = shards.map_rows(h, lambda x, held: x * 2 + held.start)
  np.testing.assert_array_equal(doubled[np.array([10])], local[:1] * 2 + 10)
  np.testing.assert_array_equal(shards.gather_rows(local, np.array([3, 0])), local[[3, 0]])


def test_sum_per_shard_sums_shards_in_order():
  shard_N = np.array([0, 1, 2, 0, 1, 2, 2])
  layout = shards.Layout(3, shard_N, (0, 1, 2))
  calls = []
  total = layout.sum_per_shard(np.arange(7), lambda r: calls.append(r.tolist()) or len(r))
  assert total == 7 and calls == [[0, 3], [1, 4], [2, 5, 6]]


def test_standardize_with_shards_equals_one_shard():
  c = make_synthetic(500, n_modalities=4, n_tasks=2, seed=2).cohort
  feats = list(c.features)               # NaN inside observed rows: imputed and counted
  feats[1] = feats[1].copy()
  obs = np.flatnonzero(c.present[:, 1])
  feats[1][obs[:7], 0] = np.nan
  c = dataclasses.replace(c, features=tuple(feats))
  train = np.flatnonzero(np.arange(c.n) % 3 != 0)
  one, s1 = standardize(c, train)
  layout = shards.Layout(4, shards.shard_of(c.patient_id, 4), (0, 1, 2, 3))
  four, s4 = standardize(c, train, layout)
  for name in c.modality_names:
    np.testing.assert_allclose(s4[name]["mean"], s1[name]["mean"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s4[name]["sd"], s1[name]["sd"], rtol=1e-12)
    assert s4[name]["imputed_cells"] == s1[name]["imputed_cells"]
    assert s4[name]["n_train_observed"] == s1[name]["n_train_observed"]
  assert s1[c.modality_names[1]]["imputed_cells"] == 7
  for a, b in zip(one.features, four.features):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # The one-shard statistics are the naive formula exactly.
  x = c.features[2][train][c.present[train, 2]].astype(np.float64)
  np.testing.assert_array_equal(s1[c.modality_names[2]]["mean"], x.sum(0) / len(x))


def test_load_keep_selects_patients():
  from experiments.configs import synthetic
  config = synthetic.get_config("tiny")
  full = data_lib.load(config)
  keep = shards.keep_fn(2, (1,))
  part = data_lib.load(config, keep=keep)
  mask = shards.shard_of(full.cohort.patient_id, 2) == 1
  np.testing.assert_array_equal(part.cohort.patient_id, full.cohort.patient_id[mask])
  np.testing.assert_array_equal(part.true_prob_NxT, full.true_prob_NxT[mask])
  np.testing.assert_array_equal(part.cohort.features[0], full.cohort.features[0][mask])
  assert shards.keep_fn(1, (0,)) is None and shards.keep_fn(2, (0, 1)) is None


def test_two_real_processes():
  """Index gathering, held rows, gather_rows, standardisation and error propagation
  across two jax.distributed processes on localhost (tests/multiprocess_shards_check.py)."""
  import os
  import socket
  import subprocess
  import sys
  here = os.path.dirname(os.path.abspath(__file__))
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  procs = [subprocess.Popen([sys.executable, os.path.join(here, "multiprocess_shards_check.py"),
                             str(port), str(i)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for i, (p, (out, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, err[-3000:]
    assert f"process {i}: ok" in out


@pytest.mark.parametrize("overrides,match", [
    ({"method": "logreg", "train.data_shards": 2}, "needs train.data_shards=1"),
    ({"train.data_shards": 3, "train.batch_size": 64}, "batch_size=64 must be a multiple"),
    ({"train.data_shards": -1}, "data_shards=-1"),
])
def test_bad_shard_settings_are_refused(overrides, match, tmp_path):
  from crl_mmnar_jax.experiment import train_and_evaluate
  from experiments.configs import synthetic
  config = synthetic.get_config("tiny")
  config.data.n = 200
  config.train.epochs = 1
  for k, v in overrides.items():
    head, _, tail = k.rpartition(".")
    (config[head] if head else config)[tail] = v
  with pytest.raises(ValueError, match=match):
    train_and_evaluate(config, str(tmp_path / "run"), log=lambda s: None)
  assert not (tmp_path / "run").exists()       # refused before anything is written
