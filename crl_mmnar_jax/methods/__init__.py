"""Every method `--config.method=NAME` accepts, behind one interface.

A method is either

* neural (`NeuralMethod`): `build(config, data, rngs)` returns an NNX module whose
  `__call__(x, present_BxM, *, deterministic, rngs, with_aux)` returns a dict with at least
  `logits_BxT`, and `make_loss(config)` returns its loss
  `(out, batch, aux_scale, pred_scale) -> (total, parts)`. It is trained by `train.fit`
  (early stopping on validation AUROC, checkpoints, resume) exactly like CRL-MMNAR; or
* direct (`DirectMethod`): `fit_predict(config, data, predict_rows)` fits on the training
  rows, selects on the validation rows and returns probabilities per row set plus a
  JSON-able record of what was selected; no training loop, no checkpoints.

Either way `experiment.train_and_evaluate` runs it on the same splits, fits the same
rectifier on its validation predictions and writes the same outputs.

Where each method lives (what it is, and how it follows its paper, is documented there):

* `crl_mmnar`: `model.CRLMMNAR` (docs/design.md), built in `registry.py`;
* `masked_transformer`: CRL-MMNAR's fusion without the missingness embedding, the gates
  and the auxiliary losses, i.e. `CRLMMNAR` with
  `use_missingness_embedding=use_reconstruction=use_contrastive=False`: encoders +
  modality embeddings + a transformer whose attention and pooling skip missing
  modalities; built in `registry.py`;
* `zero_impute_mlp`, `mean_impute_mlp`, `late_fusion`, `missing_token`: `neural.py`;
* `muse`: `muse.py`; `m3care`: `m3care.py` (both read `reference.py`'s fixed sample of
  training patients at evaluation);
* `logreg`, `gbt`: `direct.py`.

Every neural baseline shares CRL-MMNAR's building blocks (`layers.py`) and capacity
(`model.dim`, `model.dropout`, `model.n_layers`, `model.n_heads`): per-modality encoders
`in -> 2D (LayerNorm, GELU, dropout) -> D (LayerNorm)` and one `D -> D/2 -> 1` head per
task, so that the comparison is about how each method treats missing modalities. Inputs
are standardised with training statistics (`data.standardize`), so a standardised 0 is
the training mean. No baseline ever reads a missing modality's input: it is replaced
(`jnp.where`, so NaN or 1e6 garbage is harmless) before anything else sees it.
"""

from crl_mmnar_jax.methods import direct, m3care, muse, neural, reference
from crl_mmnar_jax.methods.registry import (
  METHODS,
  RUN_METHODS,
  STACK,
  DirectMethod,
  Method,
  MethodData,
  NeuralMethod,
  embedding_spec,
  get_method,
  loss_weights,
  model_config,
)

__all__ = ["METHODS", "RUN_METHODS", "STACK", "DirectMethod", "Method", "MethodData",
           "NeuralMethod", "direct", "embedding_spec", "get_method", "loss_weights",
           "m3care", "model_config", "muse", "neural", "reference"]
