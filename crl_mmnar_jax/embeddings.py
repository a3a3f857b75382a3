"""Embeddings for numerical features (Gorishniy, Rubachev, Babenko, NeurIPS 2022, "On
Embeddings for Numerical Features in Tabular Deep Learning"), in Flax NNX.

Each maps a modality's standardised features (B, F) to (B, F, K), one K-vector per
feature, which the modality encoder flattens into its MLP (`layers.EmbeddedMLPBlock`):

* `PiecewiseLinear` (`model.num_embedding="ple"`, the paper's PLE-Q-LR): the
  piecewise-linear encoding over quantile bins of the observed training values
  (`data.quantiles.bin_edges`, computed in numpy by `data.standardize` and held here as
  non-trainable `Constant`s, saved with the checkpoint), then a per-feature linear layer
  and ReLU. Bin t of a feature with edges b_0 < ... < b_T encodes
  (x - b_{t-1}) / (b_t - b_{t-1}) clipped to [0, 1], except that the first bin is not
  clipped below and the last not above (linear extrapolation).
* The same module with target-aware bins (`model.num_embedding="ple_tree"`, PLE-T):
  edges from one-feature regression trees on the training labels
  (`data.quantiles.tree_bin_edges`).
* `Periodic` (`model.num_embedding="periodic"`, PLR(lite)): cos and sin of 2π c x with
  N_FREQUENCIES trainable frequencies c per feature (initialised N(0, σ²) truncated at
  3σ, σ = `model.frequency_scale`), then one linear layer shared by the modality's
  features and ReLU.

`EmbeddingSpec` is what a model builder passes to the encoders (`None`: no embedding,
the plain MLP encoders, bit-identical to a model without this module).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crl_mmnar_jax.layers import Constant

Array = jax.Array

KINDS = ("none", "ple", "ple_tree", "periodic")
N_FREQUENCIES = 48   # PLR(lite)'s frequencies per feature (the published default)


@dataclasses.dataclass(frozen=True)
class EmbeddingSpec:
  """Which embedding, its width K per feature, and (PLE) each modality's bins: a pair
  (edges_FxE, n_bins_F) from `data.quantiles.bin_edges`."""

  kind: str
  dim: int = 16
  frequency_scale: float = 0.1
  bins: tuple[tuple[np.ndarray, np.ndarray], ...] | None = None

  def __post_init__(self):
    if self.kind not in KINDS[1:]:
      raise ValueError(f"embedding kind must be one of {KINDS[1:]}, got {self.kind!r}")
    if self.kind in ("ple", "ple_tree") and self.bins is None:
      raise ValueError("the piecewise-linear embedding needs bin edges (data.standardize "
                       "with num_bins > 0)")

  def modules(self, input_dims: Sequence[int], *, rngs: nnx.Rngs) -> list[nnx.Module]:
    """One embedding module per modality (widths `input_dims`)."""
    if self.kind == "periodic":
      return [Periodic(f, self.dim, self.frequency_scale, rngs=rngs) for f in input_dims]
    if len(self.bins) != len(input_dims):
      raise ValueError(f"bins for {len(self.bins)} modalities, model has {len(input_dims)}")
    out = []
    for f, (edges_FxE, n_bins_F) in zip(input_dims, self.bins):
      if np.shape(edges_FxE)[0] != f:
        raise ValueError(f"bin edges for {np.shape(edges_FxE)[0]} features, modality has {f}")
      out.append(PiecewiseLinear(edges_FxE, n_bins_F, self.dim, rngs=rngs))
    return out

  def concatenated(self) -> "EmbeddingSpec":
    """The spec for all modalities' features concatenated (early-fusion baselines)."""
    if self.bins is None:
      return self
    edges = np.concatenate([np.asarray(e) for e, _ in self.bins], axis=0)
    counts = np.concatenate([np.asarray(c) for _, c in self.bins])
    return dataclasses.replace(self, bins=((edges, counts),))


def spec_from_config(model_cfg, stats=None, modality_names: Sequence[str] = ()
                     ) -> EmbeddingSpec | None:
  """The spec of `config.model` (`num_embedding`, `num_embedding_dim`,
  `frequency_scale`), PLE bins read from `data.standardize`'s `stats`; None for "none"."""
  kind = str(model_cfg.num_embedding)
  if kind == "none":
    return None
  bins = None
  if kind in ("ple", "ple_tree"):
    missing = [n for n in modality_names if "bin_edges" not in (stats or {}).get(n, {})]
    if missing or not modality_names:
      raise ValueError(f"model.num_embedding={kind!r} needs the bin edges of data.standardize "
                       "(standardize(..., num_bins=model.num_bins))")
    bins = tuple((stats[n]["bin_edges"], stats[n]["n_bins"]) for n in modality_names)
  return EmbeddingSpec(kind, int(model_cfg.num_embedding_dim),
                       float(model_cfg.frequency_scale), bins)


def ple_encode(x_BxF: Array, lower_FxT: Array, inv_width_FxT: Array, clip_low_FxT: Array,
               clip_high_FxT: Array) -> Array:
  """The piecewise-linear encoding (B, F, T); bins past a feature's last have
  inv_width 0 and encode 0."""
  r = (x_BxF[..., None] - lower_FxT) * inv_width_FxT
  r = jnp.where(clip_low_FxT > 0, jnp.maximum(r, 0.0), r)
  return jnp.where(clip_high_FxT > 0, jnp.minimum(r, 1.0), r)


class PiecewiseLinear(nnx.Module):
  """PLE over fixed quantile bins, per-feature linear T -> K, ReLU: (B, F) -> (B, F, K)."""

  def __init__(self, edges_FxE: np.ndarray, n_bins_F: np.ndarray, dim: int, *,
               rngs: nnx.Rngs):
    edges_FxE = np.asarray(edges_FxE, np.float64)
    n_bins_F = np.asarray(n_bins_F, np.int64)
    f, t = edges_FxE.shape[0], edges_FxE.shape[1] - 1
    if t < 1 or np.any(n_bins_F < 1) or np.any(n_bins_F > t):
      raise ValueError(f"bad bin counts for {t} bins: {np.unique(n_bins_F)}")
    idx_T = np.arange(t)
    valid = idx_T[None] < n_bins_F[:, None]
    width = edges_FxE[:, 1:] - edges_FxE[:, :-1]
    inv_width = np.where(valid & (width > 0), 1.0 / np.where(width > 0, width, 1.0), 0.0)
    self.lower_FxT = Constant(jnp.asarray(edges_FxE[:, :-1], jnp.float32))
    self.inv_width_FxT = Constant(jnp.asarray(inv_width, jnp.float32))
    self.clip_low_FxT = Constant(jnp.asarray(valid & (idx_T[None] > 0), jnp.float32))
    self.clip_high_FxT = Constant(jnp.asarray(valid & (idx_T[None] < n_bins_F[:, None] - 1),
                                              jnp.float32))
    bound = 1.0 / math.sqrt(t)
    self.w_FxTxK = nnx.Param(jax.random.uniform(rngs.params(), (f, t, dim), jnp.float32,
                                                -bound, bound))
    self.b_FxK = nnx.Param(jax.random.uniform(rngs.params(), (f, dim), jnp.float32,
                                              -bound, bound))
    self.dim = dim

  def __call__(self, x_BxF: Array) -> Array:
    p_BxFxT = ple_encode(x_BxF, self.lower_FxT[...], self.inv_width_FxT[...],
                         self.clip_low_FxT[...], self.clip_high_FxT[...])
    y = jnp.einsum("bft,ftk->bfk", p_BxFxT, self.w_FxTxK[...]) + self.b_FxK[...]
    return jax.nn.relu(y)


class Periodic(nnx.Module):
  """PLR(lite): [cos, sin](2π c x) with trainable c (F, N_FREQUENCIES), one shared linear
  2·N_FREQUENCIES -> K, ReLU: (B, F) -> (B, F, K)."""

  def __init__(self, n_features: int, dim: int, frequency_scale: float, *, rngs: nnx.Rngs):
    c = jax.random.truncated_normal(rngs.params(), -3.0, 3.0, (n_features, N_FREQUENCIES))
    self.freq_FxC = nnx.Param(frequency_scale * c)
    self.linear = nnx.Linear(2 * N_FREQUENCIES, dim, rngs=rngs)
    self.dim = dim

  def __call__(self, x_BxF: Array) -> Array:
    v_BxFxC = 2.0 * jnp.pi * self.freq_FxC[...] * x_BxF[..., None]
    return jax.nn.relu(self.linear(jnp.concatenate([jnp.cos(v_BxFxC), jnp.sin(v_BxFxC)], -1)))
