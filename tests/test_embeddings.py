"""Numerical feature embeddings (`embeddings.py`): PLE against the paper's per-bin formula,
bin edges from training rows only, periodic frequencies that learn, and a missing
modality that still contributes exactly nothing with either embedding."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crl_mmnar_jax import methods
from crl_mmnar_jax.batch import make_batch
from crl_mmnar_jax.data import quantiles
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.data.standardize import standardize
from crl_mmnar_jax.embeddings import EmbeddingSpec, Periodic, PiecewiseLinear, ple_encode
from crl_mmnar_jax.model import CRLMMNAR, ModelConfig
from experiments.configs import synthetic


def _naive_ple(x: float, edges: list[float]) -> list[float]:
  """The paper's definition for one value and one feature's distinct edges b_0..b_T."""
  t_max = len(edges) - 1
  out = []
  for t in range(1, t_max + 1):
    lo, hi = edges[t - 1], edges[t]
    if x < lo and t > 1:
      out.append(0.0)
    elif x >= hi and t < t_max:
      out.append(1.0)
    else:
      out.append((x - lo) / (hi - lo))
  return out


def test_ple_equals_the_per_bin_formula_and_reconstructs_the_value():
  rng = np.random.default_rng(0)
  values = np.concatenate([rng.normal(size=(300, 3)), [[0, 0, 0]]], 0)
  values[:, 1] = np.round(values[:, 1])            # ties: fewer distinct edges
  values[:, 2] = (values[:, 2] > 1.9)              # rare binary: one bin
  edges, counts = quantiles.bin_edges(values, 6)
  assert counts[0] == 6 and counts[1] < 6 and counts[2] == 1
  module = PiecewiseLinear(edges, counts, 4, rngs=nnx.Rngs(0))
  x = np.array([[-9.0, -9.0, -2.0], [edges[0, 2], 0.0, 0.5], [0.1, 0.4, 1.0],
                [9.0, 9.0, 3.0]], np.float32)
  x[1, 0] = edges[0, 2]                                 # exactly on an inner edge
  got = np.asarray(ple_encode(jnp.asarray(x), module.lower_FxT[...], module.inv_width_FxT[...],
                              module.clip_low_FxT[...], module.clip_high_FxT[...]))
  for i in range(x.shape[0]):
    for f in range(3):
      e = list(edges[f, :counts[f] + 1])
      want = _naive_ple(float(x[i, f]), e) + [0.0] * (6 - counts[f])
      np.testing.assert_allclose(got[i, f], want, rtol=1e-5, atol=1e-5)
      # The encoding is a piecewise-linear code of the value: b_0 + sum_t e_t w_t = x.
      width = np.diff(e)
      assert e[0] + float(np.dot(got[i, f, :counts[f]], width)) == pytest.approx(
          float(x[i, f]), abs=1e-4)
  # The module: per-feature linear layer on the code, then ReLU.
  y = np.asarray(module(jnp.asarray(x)))
  want = np.maximum(np.einsum("bft,ftk->bfk", got, module.w_FxTxK[...]) + module.b_FxK[...], 0)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def _cohort():
  c = make_synthetic(400, n_modalities=3, n_tasks=2, seed=4).cohort
  rows = np.arange(c.n)
  return c, rows[rows % 4 != 0], rows[rows % 4 == 0]


@pytest.mark.parametrize("preprocess", ["standard", "quantile_normal"])
def test_bin_edges_come_from_observed_training_rows_only(preprocess):
  c, train, other = _cohort()
  out, stats = standardize(c, train, preprocess=preprocess, num_bins=8)
  # Independent computation: quantiles of the transformed, measured training values.
  for m, name in enumerate(c.modality_names):
    fit = train[c.present[train, m]]
    z = out.features[m][fit].astype(np.float64)
    measured = ~np.isnan(c.features[m][fit])
    for j in range(z.shape[1]):
      want = np.unique(np.quantile(z[measured[:, j], j], np.linspace(0, 1, 9)))
      got = stats[name]["bin_edges"][j, :stats[name]["n_bins"][j] + 1]
      if len(want) == len(got):
        np.testing.assert_allclose(got, want, atol=1e-5)
      else:    # float32 rounding of the output can merge two nearly equal quantiles
        assert abs(len(want) - len(got)) == 1
  # Changing every validation and test value changes no edge ...
  rng = np.random.default_rng(1)
  feats = tuple(np.where(np.isin(np.arange(c.n), other)[:, None] & c.present[:, [m]],
                         rng.normal(50.0, 30.0, f.shape), f).astype(np.float32)
                for m, f in enumerate(c.features))
  _, stats2 = standardize(dataclasses.replace(c, features=feats), train,
                          preprocess=preprocess, num_bins=8)
  for name in c.modality_names:
    np.testing.assert_array_equal(stats2[name]["bin_edges"], stats[name]["bin_edges"])
  # ... while changing training values does (the test can fail): ties in half of them.
  feats = list(c.features)
  feats[0] = feats[0].copy()
  feats[0][train[:len(train) // 2]] = np.where(c.present[train[:len(train) // 2], :1], 1.0, 0.0)
  feats = tuple(feats)
  _, stats3 = standardize(dataclasses.replace(c, features=feats), train,
                          preprocess=preprocess, num_bins=8)
  assert not np.allclose(stats3[c.modality_names[0]]["bin_edges"],
                         stats[c.modality_names[0]]["bin_edges"])


def test_tree_bin_edges_match_a_best_first_regression_tree():
  """Oracle: scikit-learn's best-first tree (max_leaf_nodes) on each column alone."""
  from sklearn.tree import DecisionTreeRegressor
  rng = np.random.default_rng(3)
  x = rng.normal(size=(600, 3))
  y = np.sin(2 * x[:, :1]) + 0.5 * (x[:, 1:2] > 0.4) + 0.1 * rng.normal(size=(600, 1))
  for n_bins, min_leaf in [(6, 20), (12, 5), (2, 50)]:
    edges, counts = quantiles.tree_bin_edges(x, y, n_bins, min_leaf)
    for j in range(3):
      tree = DecisionTreeRegressor(max_leaf_nodes=n_bins, min_samples_leaf=min_leaf,
                                   random_state=0).fit(x[:, j:j + 1], y[:, 0])
      cuts = tree.tree_.threshold[tree.tree_.feature >= 0]
      want = np.unique(np.concatenate([[x[:, j].min()], cuts, [x[:, j].max()]]))
      np.testing.assert_allclose(edges[j, :counts[j] + 1], want, rtol=1e-6)
      assert counts[j] == min(n_bins, len(want) - 1)


def test_tree_bin_edges_find_a_step_and_stop_when_nothing_is_left_to_gain():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2000, 2))
  x[rng.random(2000) < 0.2, 1] = np.nan                 # not measured: left out
  y = ((x[:, :1] > 0.3) | (x[:, :1] < -1.2)).astype(np.float64)
  y2 = np.concatenate([y, np.full_like(y, np.nan)], 1)  # a task with no label: no effect
  edges, counts = quantiles.tree_bin_edges(x, y2, 8, 20)
  assert counts[0] == 3                                 # pure leaves: no further split
  cuts = edges[0, 1:3]
  assert np.all(np.abs(cuts - [-1.2, 0.3]) < 0.02), cuts
  assert np.isfinite(edges).all()
  # No labels at all: one bin [min, max].
  _, counts = quantiles.tree_bin_edges(x, np.full((2000, 1), np.nan), 8, 20)
  np.testing.assert_array_equal(counts, [1, 1])


def test_target_aware_bin_edges_read_training_rows_only():
  c, train, other = _cohort()
  _, stats = standardize(c, train, num_bins=8, target_bins=True)
  # Changing every validation and test value and label changes no edge ...
  rng = np.random.default_rng(1)
  held = np.isin(np.arange(c.n), other)
  feats = tuple(np.where(held[:, None] & c.present[:, [m]], rng.normal(50.0, 30.0, f.shape),
                         f).astype(np.float32) for m, f in enumerate(c.features))
  labels = np.where(held[:, None], 1.0 - np.nan_to_num(c.labels), c.labels)
  _, stats2 = standardize(dataclasses.replace(c, features=feats, labels=labels), train,
                          num_bins=8, target_bins=True)
  for name in c.modality_names:
    np.testing.assert_array_equal(stats2[name]["bin_edges"], stats[name]["bin_edges"])
  # ... while flipping the training labels does (the test can fail), and the edges
  # differ from the quantile edges.
  labels = np.where(held[:, None], c.labels, 1.0 - np.nan_to_num(c.labels))
  labels[::3] = 0.0
  _, stats3 = standardize(dataclasses.replace(c, labels=labels), train, num_bins=8,
                          target_bins=True)
  _, quant = standardize(c, train, num_bins=8)
  name = c.modality_names[0]
  assert not np.array_equal(stats3[name]["bin_edges"], stats[name]["bin_edges"])
  assert not np.array_equal(quant[name]["bin_edges"], stats[name]["bin_edges"])


def test_periodic_shape_finiteness_and_gradient_to_frequencies():
  module = Periodic(5, 8, 0.1, rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(7, 5)) * [1, 10, 100, 1e3, 1e4],
                  jnp.float32)
  y = module(x)
  assert y.shape == (7, 5, 8) and bool(jnp.all(jnp.isfinite(y))) and bool(jnp.all(y >= 0))
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)

  def loss(p):
    return jnp.sum(nnx.merge(graphdef, p, rest)(x) ** 2)

  g = jax.grad(loss)(params)
  g_freq = np.asarray(g["freq_FxC"][...])
  assert g_freq.shape == (5, 48) and np.all(np.isfinite(g_freq))
  assert np.all(np.abs(g_freq).sum(1) > 0)          # every feature's frequencies learn


# ----------------------------------------------------------------------------- models


DIMS = (3, 5, 4)


def _spec(kind):
  if kind == "periodic":
    return EmbeddingSpec("periodic", dim=4, frequency_scale=0.5)
  rng = np.random.default_rng(0)
  bins = tuple(quantiles.bin_edges(rng.normal(size=(100, d)), 5) for d in DIMS)
  return EmbeddingSpec("ple", dim=4, bins=bins)


def _inputs(b=8):
  rng = np.random.default_rng(0)
  x = tuple(jnp.asarray(rng.normal(size=(b, d)), jnp.float32) for d in DIMS)
  present = rng.random((b, len(DIMS))) < 0.55
  present[:, 0] = True
  present[1] = True
  return x, jnp.asarray(present)


@pytest.mark.parametrize("kind", ["ple", "periodic"])
def test_missing_modality_has_exactly_zero_gradient_with_each_embedding(kind):
  cfg = ModelConfig(input_dims=DIMS, n_tasks=2, dim=16, n_heads=4, proj_dim=8)
  model = CRLMMNAR(cfg, rngs=nnx.Rngs(0), embedding=_spec(kind))
  x, present = _inputs()

  def scalar(x, dropout_seed):
    out = model(x, present, deterministic=False, rngs=nnx.Rngs(dropout=dropout_seed))
    return sum(jnp.sum(jax.random.normal(jax.random.key(i), v.shape) * v)
               for i, (k, v) in enumerate(sorted(out.items()))
               if jnp.issubdtype(v.dtype, jnp.floating))

  grads = jax.jit(jax.grad(scalar), static_argnums=1)(x, 3)
  for m, g in enumerate(grads):
    missing = ~np.asarray(present[:, m])
    assert missing.any() or m == 0
    np.testing.assert_array_equal(np.asarray(g)[missing], 0.0)
    assert np.abs(np.asarray(g)[~missing]).sum() > 0
  # NaN in a missing row changes no output and no parameter gradient.
  bad = tuple(jnp.where(present[:, m:m + 1], xm, jnp.nan) for m, xm in enumerate(x))
  forward = nnx.jit(lambda mdl, x: mdl(x, present))
  out_ok, out_bad = forward(model, x), forward(model, bad)
  for k, v in out_ok.items():
    np.testing.assert_array_equal(np.asarray(v), np.asarray(out_bad[k]), err_msg=k)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def param_loss(p, x):
    return jnp.sum(nnx.merge(graphdef, p, rest)(x, present)["logits_BxT"])

  param_grad = jax.jit(jax.grad(param_loss))
  g_ok, g_bad = (param_grad(params, xx) for xx in (x, bad))
  for a, b in zip(jax.tree.leaves(g_ok), jax.tree.leaves(g_bad)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


NEURAL = ("crl_mmnar", "masked_transformer", "zero_impute_mlp", "mean_impute_mlp",
          "late_fusion", "missing_token", "muse", "m3care")


def test_every_neural_method_builds_with_an_embedding_and_ignores_missing_inputs():
  """Each method with one of the two embeddings, alternating (half the compilations)."""
  c = make_synthetic(160, seed=2).cohort
  rows = np.arange(c.n)
  std, stats = standardize(c, rows[:120], num_bins=6)
  data = methods.MethodData(std, rows[:120], rows[120:], stats)
  config = synthetic.get_config("tiny")
  config.model.update(dim=16, n_heads=2, proj_dim=8, num_bins=6, num_embedding_dim=4)
  config.baseline.reference_size = 16
  order = rows[120:][np.argsort(std.present[120:].sum(1), kind="stable")]
  batch = make_batch(std, np.concatenate([order[:6], order[-2:]]))
  bad = tuple(jnp.where(batch.present_BxM[:, m:m + 1], x, jnp.nan)
              for m, x in enumerate(batch.x))
  for i, name in enumerate(NEURAL):
    config.model.num_embedding = ("ple", "periodic")[i % 2]
    model = methods.get_method(name).build(config, data, nnx.Rngs(params=0))
    embeds = [v for p, v in nnx.iter_graph(model) if type(v).__name__ in
              ("PiecewiseLinear", "Periodic")]
    assert embeds, name                          # the embedding is really there
    forward = nnx.jit(lambda mdl, x: mdl(x, batch.present_BxM)["logits_BxT"])
    ref = forward(model, batch.x)
    assert np.all(np.isfinite(np.asarray(ref))), name
    np.testing.assert_array_equal(np.asarray(ref), np.asarray(forward(model, bad)),
                                  err_msg=name)


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("kind,preprocess", [("ple", "quantile_normal"),
                                             ("ple_tree", "standard"),
                                             ("periodic", "standard")])
def test_jitted_training_step_runs_with_each_option_and_moves_the_embedding(kind, preprocess):
  from crl_mmnar_jax.data.standardize import options
  from crl_mmnar_jax.train import mesh as mesh_lib
  from crl_mmnar_jax.train import optim, step
  c = make_synthetic(96, seed=3).cohort
  rows = np.arange(c.n)
  config = synthetic.get_config("tiny")
  config.model.update(dim=16, n_heads=2, proj_dim=8, num_embedding=kind, num_bins=6,
                      num_embedding_dim=4)
  config.data.preprocess = preprocess
  opts = options(config)            # what train_and_evaluate passes to standardize
  assert (opts["num_bins"], opts["target_bins"]) == (
      (0, False) if kind == "periodic" else (6, kind == "ple_tree"))
  std, stats = standardize(c, rows[:64], **opts)
  data = methods.MethodData(std, rows[:64], rows[64:], stats)
  method = methods.get_method("crl_mmnar")
  mesh = mesh_lib.make_mesh()
  graphdef, state = step.init_state(lambda r: method.build(config, data, r),
                                    optim.make_optimizer(config, 10), 0, mesh)
  train_step = step.make_step(graphdef, method.make_loss(config))
  before = jax.tree.map(np.asarray, nnx.state(nnx.merge(graphdef, state)[0], nnx.Param))
  key = jax.random.key(0)
  for i in range(2):
    batch = make_batch(std, rows[32 * i:32 * (i + 1)])
    state, parts = train_step(state, batch, key, i, 1.0, 1.0)
    assert np.isfinite(float(parts["total"])) and bool(parts["finite"]), (kind, i)
  after = nnx.state(nnx.merge(graphdef, state)[0], nnx.Param)
  moved = {jax.tree_util.keystr(path) for (path, a), b in zip(
      jax.tree_util.tree_flatten_with_path(before)[0], jax.tree.leaves(after))
      if not np.allclose(a, b)}
  embedded = [p for p in moved if "['embed']" in p]      # EmbeddedMLPBlock.embed
  assert embedded, sorted(moved)[:5]
  if kind == "periodic":
    assert any("freq_FxC" in p for p in embedded)


# End to end: tests/test_predict.py trains a cross-fitted ensemble with PLE and
# quantile_normal through train_and_evaluate and replays its predictions.
