"""Baselines (`--config.method`): every baseline trains on a tiny cohort through the same
experiment machinery and writes the output contract on the same splits as CRL-MMNAR, and
each one handles missing modalities the way its paper describes.

CRL-MMNAR's own end-to-end run and its missing-modality tests are in test_experiment.py
and test_model.py; they are not repeated here (compilation dominates these tests).
"""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest
from flax import nnx

from crl_mmnar_jax import data as data_lib
from crl_mmnar_jax import methods
from crl_mmnar_jax.batch import make_batch
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.data.standardize import standardize
from crl_mmnar_jax.losses import label_agreement_loss
from crl_mmnar_jax.methods import METHODS, RUN_METHODS
from crl_mmnar_jax.methods.muse import muse_edge_dropout
from crl_mmnar_jax.methods.reference import reference_rows
from experiments.configs import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ["task0", "task1", "task2"]
DIRECT = ("logreg", "gbt")
NEURAL = [m for m in METHODS if m not in DIRECT]
HAS_GBT = any(importlib.util.find_spec(p) for p in ("lightgbm", "xgboost"))


def _config(method="crl_mmnar"):
  c = synthetic.get_config("tiny")
  c.method = method
  c.data.n = 300
  c.model.dim = 16
  c.model.n_heads = 2
  c.model.proj_dim = 8
  c.train.epochs = 2
  c.train.eval_batch_size = 64
  c.eval.n_boot = 10
  c.eval.plots = False
  c.eval.reference_logreg = False
  c.baseline.reference_size = 32
  c.model.wide = False   # these tests read each deep model's own parts (wide: test_wide.py)
  c.baseline.gbt_n_estimators = 50
  return c


# ----------------------------------------------------------------------------- end to end


_RUNS: dict = {}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """run(method) -> (workdir, results): one tiny run per method, shared by the tests."""
  from crl_mmnar_jax.experiment import train_and_evaluate

  def get(method):
    if method not in _RUNS:
      workdir = tmp_path_factory.mktemp(method)
      _RUNS[method] = workdir, train_and_evaluate(_config(method), str(workdir),
                                                  log=lambda s: None)
    return _RUNS[method]

  return get


def test_methods_lists_every_method_and_a_misspelt_name_is_refused():
  assert RUN_METHODS == (*METHODS, "stack")
  assert set(METHODS) == {"crl_mmnar", "zero_impute_mlp", "mean_impute_mlp", "logreg",
                          "late_fusion", "masked_transformer", "muse", "m3care",
                          "missing_token", "gbt"}
  for m in NEURAL:
    assert isinstance(methods.get_method(m), methods.NeuralMethod), m
  assert isinstance(methods.get_method("logreg"), methods.DirectMethod)
  with pytest.raises(ValueError, match="unknown method 'muse2'; valid: crl_mmnar, "):
    methods.get_method("muse2")


def test_misspelt_method_fails_in_one_line_before_loading_data(tmp_path):
  from crl_mmnar_jax.experiment import train_and_evaluate
  config = _config("late_fusoin")
  config.data.name = "no_such_source"     # loading it would fail differently
  with pytest.raises(ValueError, match="unknown method 'late_fusoin'"):
    train_and_evaluate(config, str(tmp_path / "work"))
  assert not (tmp_path / "work").exists()
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "experiments.run", "--config=synthetic:tiny",
                         "--config.method=late_fusoin", f"--workdir={tmp_path / 'work'}"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "error: unknown method 'late_fusoin'; valid: crl_mmnar, zero_impute_mlp,")


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.skipif(
    m == "gbt" and not HAS_GBT, reason="neither lightgbm nor xgboost is installed"))
    for m in METHODS if m != "crl_mmnar"])
def test_every_method_trains_and_writes_the_output_contract(method, run):
  workdir, results = run(method)
  on_disk = json.loads((workdir / "results.json").read_text())
  assert on_disk["method"] == results["method"] == method
  for view in ("val", "test", "test_rectified"):
    for t in TASKS:
      assert {"auroc", "auprc", "brier", "ece"} <= set(on_disk["metrics"][view][t]), (view, t)
      assert 0.0 <= on_disk["metrics"][view][t]["auroc"] <= 1.0
  pred = pl.read_parquet(workdir / "predictions.parquet")
  assert pred.columns == ["patient_id", "split", "pattern_id"] + [
      f"{t}_{c}" for t in TASKS for c in ("label", "prob", "prob_rectified")]
  probs = pred.select([f"{t}_prob" for t in TASKS]).to_numpy()
  assert np.all((probs >= 0) & (probs <= 1)) and np.unique(probs).size > 1
  for name in ("config.json", "splits.parquet", "metrics.jsonl", "report.md"):
    assert (workdir / name).exists(), name
  training = on_disk["training"]
  assert training["kind"] == ("neural" if method in NEURAL else "direct")
  assert (workdir / "checkpoints" / "best").is_dir() == (method in NEURAL)
  assert training["model"] == methods.get_method(method).summary
  if method not in NEURAL:     # what was selected on validation data
    assert set(training["fitted"]) == ({"l2"} if method == "logreg" else {"backend", "n_trees"})
    assert "Fitted without a training loop" in (workdir / "report.md").read_text()
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert any("val/mean_auroc" in l for l in lines)


def test_all_methods_share_identical_splits(run):
  from crl_mmnar_jax.data.splits import make_splits, splits_frame
  config = _config("crl_mmnar")
  cohort = data_lib.load(config).cohort
  crl = splits_frame(cohort.patient_id, make_splits(config, cohort))   # what CRL-MMNAR gets
  for method in ("logreg", "muse", *_RUNS):      # and every baseline that ran in this session
    assert pl.read_parquet(run(method)[0] / "splits.parquet").equals(crl), method


# ----------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def tiny():
  """(config, MethodData, a batch with missing modalities) on a small standardised cohort."""
  cohort = make_synthetic(160, seed=2).cohort
  rows = np.arange(cohort.n)
  train, val = rows[:120], rows[120:]
  std, stats = standardize(cohort, train)
  data = methods.MethodData(std, train, val, stats)
  by_count = val[np.argsort(std.present[val].sum(1), kind="stable")]
  batch_rows = np.concatenate([by_count[:12], by_count[-4:]])      # fewest and most observed
  batch = make_batch(std, batch_rows)
  assert (~batch.present_BxM).any(0)[1:].all()                    # m1..m3 each missing
  assert batch.present_BxM.all(1).any()                           # and a complete patient
  return _config(), data, batch


def _build(method, config, data):
  return methods.get_method(method).build(config, data, nnx.Rngs(params=0))


@dataclasses.dataclass
class Built:
  """A model split into (graphdef, state) and its jitted forward passes of (state, x,
  present): evaluation, and training mode with fixed dropout / edge-dropout keys."""

  graphdef: nnx.GraphDef
  state: nnx.State
  eval_fn: Callable
  train_fn: Callable

  def model(self):
    return nnx.merge(self.graphdef, self.state)

  def edited(self, edit):
    """The state of a private copy of the model after `edit(model)`."""
    model = nnx.merge(self.graphdef, jax.tree.map(jnp.array, self.state))
    edit(model)
    return nnx.state(model)


@pytest.fixture(scope="module")
def built(tiny):
  config, data, _ = tiny
  cache = {}

  def get(method):
    if method not in cache:
      graphdef, state = nnx.split(_build(method, config, data))

      def forward(train_mode):
        def f(state, x, present_BxM):
          model = nnx.merge(graphdef, state)
          if train_mode:
            return model(x, present_BxM, deterministic=False, rngs=nnx.Rngs(dropout=7))
          return model(x, present_BxM)
        return jax.jit(f)

      cache[method] = Built(graphdef, state, forward(False), forward(True))
    return cache[method]

  return get


def _garbage(batch, value):
  return tuple(jnp.where(batch.present_BxM[:, m:m + 1], x, value)
               for m, x in enumerate(batch.x))


# Training mode differs from evaluation by more than dropout only for MUSE and M3Care
# (the batch is the graph / the pool of similar patients).
@pytest.mark.parametrize("method,train_mode", [
    *((m, False) for m in NEURAL if m != "crl_mmnar"), ("muse", True), ("m3care", True)])
def test_missing_modality_input_never_changes_any_output(method, train_mode, tiny, built):
  _, _, batch = tiny
  b = built(method)
  forward = b.train_fn if train_mode else b.eval_fn
  ref = forward(b.state, batch.x, batch.present_BxM)
  for value in (1e6, np.nan):
    bad = forward(b.state, _garbage(batch, value), batch.present_BxM)
    for k in ref:
      np.testing.assert_array_equal(np.asarray(ref[k]), np.asarray(bad[k]), err_msg=k)
  # Control: the same change on an observed modality does change the predictions.
  x_obs = (batch.x[0] + 1.0,) + tuple(batch.x[1:])
  assert not np.allclose(ref["logits_BxT"],
                         forward(b.state, x_obs, batch.present_BxM)["logits_BxT"])


def test_muse_has_edges_only_for_observed_modalities(tiny, built):
  _, _, batch = tiny
  b = built("muse")
  present = np.asarray(batch.present_BxM)
  out = b.eval_fn(b.state, batch.x, batch.present_BxM)
  np.testing.assert_array_equal(out["edges_BxM"], present)
  aug = np.asarray(b.train_fn(b.state, batch.x, batch.present_BxM)["aug_edges_BxM"])
  assert not np.any(aug & ~present)                              # never a missing modality
  # MUSE's edge dropout: a perturbed patient keeps 1..n-1 of its n edges, uniformly.
  present_NxM = np.random.default_rng(0).random((4000, 5)) < 0.6
  kept = np.asarray(muse_edge_dropout(jnp.asarray(present_NxM), jax.random.key(0), 1.0))
  n, k = present_NxM.sum(1), kept.sum(1)
  assert not np.any(kept & ~present_NxM)
  np.testing.assert_array_equal(k[n <= 1], n[n <= 1])
  assert np.all((k[n >= 2] >= 1) & (k[n >= 2] <= n[n >= 2] - 1))
  for count in (2, 3, 4, 5):
    freq = np.bincount(k[n == count], minlength=count)[1:] / (n == count).sum()
    np.testing.assert_allclose(freq, 1.0 / (count - 1), atol=0.06)
  half = np.asarray(muse_edge_dropout(jnp.asarray(present_NxM), jax.random.key(1), 0.5))
  assert 0.45 < (half != present_NxM).any(1)[n >= 2].mean() < 0.55


@pytest.mark.parametrize("method", ["muse", "m3care"])
def test_eval_outputs_do_not_depend_on_the_rest_of_the_batch(method, tiny, built):
  _, data, batch = tiny
  b = built(method)
  others = make_batch(data.cohort, data.train_rows[:8])
  mixed = jax.tree.map(lambda u, v: np.concatenate([u[:8], v]), batch, others)
  same = b.eval_fn(b.state, batch.x, batch.present_BxM)["logits_BxT"][:8]
  np.testing.assert_allclose(
      same, b.eval_fn(b.state, mixed.x, mixed.present_BxM)["logits_BxT"][:8], rtol=1e-6,
      atol=1e-6)
  # Control: in training mode the batch is the graph / the pool of similar patients (the
  # dropout draws of rows 0..7 are the same in both batches, so only that differs).
  a = b.train_fn(b.state, batch.x, batch.present_BxM)["logits_BxT"][:8]
  assert not np.allclose(a, b.train_fn(b.state, mixed.x, mixed.present_BxM)["logits_BxT"][:8],
                         atol=1e-4)


def test_m3care_imputes_missing_modalities_from_the_training_reference(tiny, built):
  config, data, batch = tiny
  b = built("m3care")
  out = b.eval_fn(b.state, batch.x, batch.present_BxM)
  assert np.asarray(b.model().reference.present_RxM[...]).any(0).all()
  np.testing.assert_array_equal(out["imputed_BxM"], ~np.asarray(batch.present_BxM))
  rows = reference_rows(data.train_rows, config.baseline.reference_size, config.seed)
  assert set(rows) <= set(data.train_rows) and len(rows) == config.baseline.reference_size
  np.testing.assert_array_equal(b.model().reference.present_RxM[...], data.cohort.present[rows])

  def shift(model):
    model.reference.x_RxF[...] = model.reference.x_RxF[...] + 1.0

  # The reference is what the imputation reads: change it and the outputs change.
  moved = b.eval_fn(b.edited(shift), batch.x, batch.present_BxM)["logits_BxT"]
  assert not np.allclose(out["logits_BxT"], moved)


def test_late_fusion_logit_is_the_mean_over_observed_modalities(tiny, built):
  _, _, batch = tiny
  b = built("late_fusion")
  logits = np.asarray(b.eval_fn(b.state, batch.x, batch.present_BxM)["logits_BxT"])
  model = b.model()
  w1, b1 = model.heads.w1_GxTxDxK[...], model.heads.b1_GxTxK[...]
  w2, b2 = model.heads.w2_GxTxKx1[...][..., 0], model.heads.b2_GxT[...]
  for i in range(batch.size):
    per_modality = []
    for m in map(int, np.flatnonzero(batch.present_BxM[i])):
      e_D = model.encoders.blocks[m](jnp.asarray(batch.x[m][i:i + 1]), deterministic=True,
                                     rngs=None)[0]
      per_modality.append([float(jax.nn.gelu(e_D @ w1[m, t] + b1[m, t]) @ w2[m, t] + b2[m, t])
                           for t in range(len(TASKS))])
    np.testing.assert_allclose(logits[i], np.mean(per_modality, axis=0), rtol=1e-5, atol=1e-5)


def test_zero_imputation_is_a_raw_zero_and_mean_imputation_the_training_mean():
  rng = np.random.default_rng(0)
  n = 200
  present = np.ones((n, 2), bool)
  present[::3, 1] = False
  x0 = rng.normal(5.0, 2.0, (n, 3)).astype(np.float32)             # raw 0 is far from the mean
  x1 = np.where(present[:, 1:], rng.normal(-3.0, 0.5, (n, 2)), 0.0).astype(np.float32)
  labels = rng.integers(0, 2, (n, 1)).astype(np.float32)
  cohort = Cohort(np.arange(n), (x0, x1), present, labels, ("a", "b"), ("y",)).validate()
  rows = np.arange(n)
  std, stats = standardize(cohort, rows[:150])
  data = methods.MethodData(std, rows[:150], rows[150:], stats)
  config = _config()
  missing = np.flatnonzero(~present[:, 1])[:8]
  batch = make_batch(std, missing)
  as_if_zero = make_batch(std, missing)
  raw_zero_b = ((0.0 - stats["b"]["mean"]) / stats["b"]["sd"]).astype(np.float32)
  as_if_zero = as_if_zero.replace(x=(as_if_zero.x[0], np.tile(raw_zero_b, (8, 1))),
                                  present_BxM=np.ones((8, 2), bool))
  zero = _build("zero_impute_mlp", config, data)
  np.testing.assert_allclose(zero(batch.x, batch.present_BxM)["logits_BxT"],
                             zero(as_if_zero.x, as_if_zero.present_BxM)["logits_BxT"],
                             rtol=1e-6, atol=1e-6)
  assert np.all(np.abs(raw_zero_b) > 5)                           # genuinely not the mean
  mean = _build("mean_impute_mlp", config, data)
  np.testing.assert_array_equal(mean.fill_F[...], 0.0)            # standardised 0 = mean
  assert mean.mlp.fc1.in_features == 3 + 2 + 2                    # + the indicators
  assert zero.mlp.fc1.in_features == 3 + 2


def test_masked_transformer_is_crl_mmnar_without_missingness_parts(tiny, built):
  _, _, batch = tiny
  b = built("masked_transformer")
  cfg = b.model().cfg
  assert not (cfg.use_missingness_embedding or cfg.use_reconstruction or cfg.use_contrastive)
  assert cfg.use_modality_tokens
  assert set(b.eval_fn(b.state, batch.x, batch.present_BxM)) == {"logits_BxT", "h_BxD"}


def test_missing_token_reads_a_learned_token_for_each_absent_modality(tiny, built):
  _, _, batch = tiny
  b = built("missing_token")
  ref = np.asarray(b.eval_fn(b.state, batch.x, batch.present_BxM)["logits_BxT"])

  def shift(model):
    model.missing_MxD[...] = model.missing_MxD[...] + 1.0

  moved = np.asarray(b.eval_fn(b.edited(shift), batch.x, batch.present_BxM)["logits_BxT"])
  complete = np.asarray(batch.present_BxM).all(1)
  assert not np.allclose(ref[~complete], moved[~complete])
  np.testing.assert_array_equal(ref[complete], moved[complete])


def test_muse_label_agreement_loss_matches_a_naive_loop():
  rng = np.random.default_rng(0)
  b, p, t, temp = 6, 4, 2, 0.5
  u, au = rng.normal(size=(b, p)), rng.normal(size=(b, p))
  labels = rng.integers(0, 2, (b, t)).astype(np.float32)
  known = rng.random((b, t)) < 0.8
  known[:, 1] = False                                              # a task without pairs
  weight = np.array([1, 1, 1, 1, 1, 0], np.float32)                # a padding row
  got = label_agreement_loss(jnp.asarray(u), jnp.asarray(au), jnp.asarray(labels),
                             jnp.asarray(known), jnp.asarray(weight), temp)

  def bce(s, y):
    return max(s, 0) - s * y + np.log1p(np.exp(-abs(s)))

  per_sim = []
  for other in (u, au):
    per_task = []
    for k in range(t):
      vals = [bce(u[i] @ other[j] / temp, float(labels[i, k] == labels[j, k]))
              for i in range(b) for j in range(b)
              if known[i, k] and known[j, k] and weight[i] and weight[j]]
      if vals:
        per_task.append(np.mean(vals))
    per_sim.append(np.mean(per_task))
  np.testing.assert_allclose(float(got), np.mean(per_sim), rtol=1e-5)
