"""The wide path (`model.wide`): Wide & Deep (Cheng et al., 2016) for any neural method.

A linear logit per task on the standardised features (zero where the modality is
missing) and the modality-observed indicators, the model that logistic regression with
indicators fits, added to the deep model's logits and trained with it:

  logit_BxT = deep(x, present)["logits_BxT"] + [x_1·δ_1, ..., x_M·δ_M, δ] @ W

W starts at zero, so training starts from the deep model alone, and takes the optimizer's
weight decay like every parameter. Every other output of the deep model is passed on
unchanged (`wide_logits_BxT` is added), so every method's losses apply as they are.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


class Wide(nnx.Module):
  """`deep` plus the wide linear logit; called as `deep` is."""

  def __init__(self, deep: nnx.Module, input_dims: Sequence[int], n_tasks: int):
    self.deep = deep
    self.w_FxT = nnx.Param(jnp.zeros((sum(input_dims) + len(input_dims), n_tasks)))

  def wide_logits(self, x: Sequence[Array], present_BxM: Array) -> Array:
    present_BxM = present_BxM.astype(bool)
    parts = [jnp.where(present_BxM[:, m, None], x_BxF, 0.0) for m, x_BxF in enumerate(x)]
    parts.append(present_BxM.astype(x[0].dtype))
    return jnp.concatenate(parts, axis=-1) @ self.w_FxT[...].astype(x[0].dtype)

  def __call__(self, x: Sequence[Array], present_BxM: Array, **kw) -> dict[str, Any]:
    out = self.deep(x, present_BxM, **kw)
    wide_BxT = self.wide_logits(x, present_BxM)
    return dict(out, logits_BxT=out["logits_BxT"] + wide_BxT, wide_logits_BxT=wide_BxT)
