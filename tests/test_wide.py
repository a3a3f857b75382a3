"""The wide path (`model.wide`, crl_mmnar_jax/wide.py): a linear logit on the observed
features and the modality indicators added to every neural method's logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crl_mmnar_jax import methods
from crl_mmnar_jax.batch import make_batch
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.data.standardize import standardize
from crl_mmnar_jax.methods import METHODS
from crl_mmnar_jax.wide import Wide
from experiments.configs import synthetic

NEURAL = [m for m in METHODS if isinstance(methods.get_method(m), methods.NeuralMethod)]


@pytest.fixture(scope="module")
def tiny():
  cohort = make_synthetic(160, seed=2).cohort
  rows = np.arange(cohort.n)
  std, stats = standardize(cohort, rows[:120])
  data = methods.MethodData(std, rows[:120], rows[120:], stats)
  batch = make_batch(std, rows[120:136])
  assert (~batch.present_BxM).any()                   # some modalities are missing
  config = synthetic.get_config("tiny")
  config.model.dim, config.model.n_heads, config.model.proj_dim = 16, 2, 8
  config.baseline.reference_size = 32
  return config, data, batch


def _random_wide(model, seed):
  w = jax.random.normal(jax.random.key(seed), model.w_FxT[...].shape)
  model.w_FxT[...] = w
  return np.asarray(w)


def test_the_wide_logit_is_the_linear_model_on_observed_features_and_indicators(tiny):
  config, data, batch = tiny
  deep = methods.get_method("crl_mmnar").build(config, data, nnx.Rngs(params=0))
  model = Wide(deep, data.cohort.input_dims, data.cohort.n_tasks)
  base = deep(batch.x, batch.present_BxM)["logits_BxT"]
  np.testing.assert_array_equal(model(batch.x, batch.present_BxM)["logits_BxT"], base)
  w = _random_wide(model, 1)
  want = np.zeros(base.shape)                          # a naive loop over the inputs
  for b in range(base.shape[0]):
    j = 0
    for m, x in enumerate(batch.x):
      for f in range(x.shape[1]):
        if batch.present_BxM[b, m]:
          want[b] += float(x[b, f]) * w[j]
        j += 1
    for m in range(len(batch.x)):
      want[b] += float(batch.present_BxM[b, m]) * w[j + m]
  out = model(batch.x, batch.present_BxM)
  np.testing.assert_allclose(out["wide_logits_BxT"], want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["logits_BxT"], np.asarray(base) + want, rtol=1e-5,
                             atol=1e-5)


def test_a_missing_modality_s_values_never_reach_the_wide_logit(tiny):
  config, data, batch = tiny
  model = Wide(methods.get_method("mean_impute_mlp").build(config, data, nnx.Rngs(params=0)),
               data.cohort.input_dims, data.cohort.n_tasks)
  _random_wide(model, 2)
  present = jnp.asarray(batch.present_BxM)
  grads = jax.jacrev(lambda x: model.wide_logits(x, present).sum())(
      tuple(jnp.asarray(x) for x in batch.x))
  for m, g in enumerate(grads):
    missing = ~np.asarray(batch.present_BxM[:, m])
    assert np.all(np.asarray(g)[missing] == 0) and np.any(np.asarray(g)[~missing] != 0)
  noisy = tuple(np.where(batch.present_BxM[:, m, None], x, 1e6).astype(np.float32)
                for m, x in enumerate(batch.x))
  np.testing.assert_array_equal(model.wide_logits(noisy, present),
                                model.wide_logits(batch.x, present))


@pytest.mark.parametrize("method", NEURAL)
def test_every_neural_method_takes_the_wide_path(tiny, method):
  config, data, batch = tiny
  config = config.copy_and_resolve_references()
  config.model.wide = True
  model = methods.get_method(method).build(config, data, nnx.Rngs(params=0))
  assert isinstance(model, Wide)
  _random_wide(model, 3)
  out = model(batch.x, batch.present_BxM)
  deep = model.deep(batch.x, batch.present_BxM)
  np.testing.assert_allclose(out["logits_BxT"], deep["logits_BxT"] + out["wide_logits_BxT"],
                             rtol=1e-5, atol=1e-5)
  config.model.wide = False
  assert not isinstance(methods.get_method(method).build(config, data, nnx.Rngs(params=0)),
                        Wide)


def test_a_wide_run_trains_learns_its_wide_weights_and_predict_reproduces_it(tmp_path):
  import polars as pl

  import crl_mmnar_jax
  from crl_mmnar_jax import data as data_lib
  from crl_mmnar_jax.experiment import train_and_evaluate
  config = synthetic.get_config("tiny")
  config.data.n, config.train.epochs, config.eval.plots = 300, 2, False
  config.model.dim, config.model.n_heads, config.model.proj_dim = 16, 2, 8
  config.model.wide = True
  train_and_evaluate(config, str(tmp_path), log=lambda s: None)
  loaded = crl_mmnar_jax.load(str(tmp_path))
  frame = loaded.predict(data_lib.load(config).cohort)
  ref = pl.read_parquet(tmp_path / "predictions.parquet").filter(pl.col("split") == "test")
  j = ref.join(frame, on="patient_id", suffix="_new")
  assert j.height == ref.height > 0
  for t in loaded.schema.tasks:
    np.testing.assert_allclose(j[f"{t}_prob_new"], j[f"{t}_prob"], atol=1e-6)
  state = loaded.units[0].state
  wide = [np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(state)
          if "w_FxT" in (k := jax.tree_util.keystr(p)) and "opt_state" not in k]
  assert len(wide) == 1 and np.abs(wide[0]).max() > 0   # trained away from its zero start
