"""The direct baselines: fitted in one call on the training rows, selected on the
validation rows, no training loop and no checkpoints.

`logreg` (the practitioner's default): one L2-regularised logistic regression per task on
[mean-imputed features, indicators], fitted by full-batch L-BFGS, L2 chosen on the
validation AUROC (`logreg_mean_impute`; also reported as `reference.logreg_mean_impute`
in every run).

`gbt` (optional; `pip install -e ".[gbt]"`): gradient-boosted trees per task on all
features with NaN where a modality is missing (the trees learn where missing values go),
LightGBM if installed, else XGBoost; early stopping on the validation AUROC.
`data.standardize` sets cells "not measured" inside an observed modality to the training
mean, which a tree cannot tell from a measured average value. For the summaries of
`data.featurize` (columns `<variable>_<stat>` for every stat in `featurize.STATS`) the
trees get NaN back wherever the variable's count is 0 (`featurized_not_measured`; with
`data.preprocess="standard"`, whose z-score is invertible), as they would on the raw
summaries; other imputed cells keep the training mean. The fitted trees of every task
are handed back as text (`gbt_nan_missing(..., fitted=)`; LightGBM's model string,
XGBoost's JSON) with their number of trees, for `predictor.save_direct_model`;
`gbt_predict` scores new rows of `gbt_design_matrix` with them.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.featurize import STATS
from crl_mmnar_jax.metrics import auroc


def design_matrix(cohort: Cohort) -> np.ndarray:
  """[all features (zeros where missing), missingness indicators] as float32 (N, F)."""
  return np.concatenate(list(cohort.features) + [cohort.present.astype(np.float32)], axis=1)


@jax.jit
def _fit_logreg(x_NxF, y_N, w_N, l2):
  """Full-batch L-BFGS on the weighted, L2-penalised logistic loss (bias unpenalised)."""
  f = x_NxF.shape[1]

  def loss(params):
    logits = x_NxF @ params["w"] + params["b"]
    nll = optax.sigmoid_binary_cross_entropy(logits, y_N)
    return (nll * w_N).sum() / w_N.sum() + 0.5 * l2 * jnp.sum(params["w"] ** 2)

  params = {"w": jnp.zeros(f), "b": jnp.zeros(())}
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def body(carry, _):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=200)
  return params


def logreg_mean_impute(cohort: Cohort, train_rows: np.ndarray, val_rows: np.ndarray,
                       predict_rows: dict[str, np.ndarray],
                       l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
                       fitted: list | None = None,
                       ) -> tuple[dict[str, np.ndarray], list[float]]:
  """Fits per task on train, picks L2 on validation AUROC.

  Returns (probabilities (len(rows), T) per row set, the chosen L2 per task). A list
  `fitted` receives each task's chosen (w (F,), b) on the `design_matrix` columns.
  """
  x = design_matrix(cohort)
  out = {k: np.zeros((len(r), cohort.n_tasks), np.float32) for k, r in predict_rows.items()}
  chosen = []
  for t in range(cohort.n_tasks):
    y = cohort.labels[:, t]
    known_tr = ~np.isnan(y[train_rows])
    xt = jnp.asarray(x[train_rows])
    yt = jnp.asarray(np.nan_to_num(y[train_rows]))
    best, best_auc, best_l2 = None, -np.inf, None
    for l2 in l2_grid:
      params = _fit_logreg(xt, yt, jnp.asarray(known_tr, jnp.float32), l2)
      yv = y[val_rows]
      pv = np.asarray(jax.nn.sigmoid(x[val_rows] @ params["w"] + params["b"]))
      known_v = ~np.isnan(yv)
      auc = auroc(yv[known_v], pv[known_v])
      if best is None or auc > best_auc:
        best, best_auc, best_l2 = params, auc, float(l2)
    chosen.append(best_l2)
    if fitted is not None:
      fitted.append((np.asarray(best["w"]), float(best["b"])))
    for k, rows in predict_rows.items():
      out[k][:, t] = np.asarray(jax.nn.sigmoid(x[rows] @ best["w"] + best["b"]))
  return out, chosen


def gbt_backend() -> str:
  """'lightgbm' if installed, else 'xgboost'; a clear error if neither is."""
  for name in ("lightgbm", "xgboost"):
    if importlib.util.find_spec(name) is not None:
      return name
  raise ValueError("method 'gbt' needs LightGBM (or XGBoost): pip install -e \".[gbt]\"")


def _fit_lightgbm(x, y, x_val, y_val, b: ml_collections.ConfigDict, seed: int):
  """(predict_proba_fn, number of trees, the model as text) of a LightGBM model,
  early-stopped on val AUROC."""
  import lightgbm
  params = {"objective": "binary", "metric": "auc", "learning_rate": float(b.gbt_learning_rate),
            "num_leaves": int(b.gbt_num_leaves),
            "min_data_in_leaf": int(b.gbt_min_child_samples), "seed": seed,
            "feature_fraction": float(b.gbt_feature_fraction),
            "lambda_l2": float(b.gbt_lambda_l2),
            "deterministic": True, "force_row_wise": True, "verbosity": -1}
  train = lightgbm.Dataset(x, y)
  booster = lightgbm.train(
      params, train, num_boost_round=int(b.gbt_n_estimators),
      valid_sets=[lightgbm.Dataset(x_val, y_val, reference=train)],
      callbacks=[lightgbm.early_stopping(int(b.gbt_early_stopping), verbose=False)])
  n_trees = int(booster.best_iteration) or booster.current_iteration()
  return (lambda x_new: booster.predict(x_new, num_iteration=n_trees), n_trees,
          booster.model_to_string(num_iteration=n_trees))


def _fit_xgboost(x, y, x_val, y_val, b: ml_collections.ConfigDict, seed: int):
  """As `_fit_lightgbm`, with XGBoost (leaf-wise growth, the same number of leaves); the
  model's text is its JSON, cut to the early-stopped trees."""
  import xgboost
  model = xgboost.XGBClassifier(
      n_estimators=int(b.gbt_n_estimators), learning_rate=float(b.gbt_learning_rate),
      max_leaves=int(b.gbt_num_leaves), grow_policy="lossguide", tree_method="hist",
      colsample_bytree=float(b.gbt_feature_fraction),
      reg_lambda=float(b.gbt_lambda_l2),
      eval_metric="auc", early_stopping_rounds=int(b.gbt_early_stopping), random_state=seed)
  model.fit(x, y, eval_set=[(x_val, y_val)], verbose=False)
  n_trees = int(model.best_iteration) + 1
  text = bytes(model.get_booster()[:n_trees].save_raw("json")).decode()
  return lambda x_new: model.predict_proba(x_new)[:, 1], n_trees, text


def gbt_predict(backend: str, model: str, n_trees: int, x_NxF: np.ndarray) -> np.ndarray:
  """(N,) probabilities of a model saved as text by `gbt_nan_missing` (`fitted`), on
  rows of `gbt_design_matrix`, with its first `n_trees` trees."""
  if backend == "lightgbm":
    import lightgbm
    return lightgbm.Booster(model_str=model).predict(x_NxF, num_iteration=int(n_trees))
  if backend == "xgboost":
    import xgboost
    booster = xgboost.Booster()
    booster.load_model(bytearray(model.encode()))
    return booster.predict(xgboost.DMatrix(x_NxF, missing=np.nan),
                           iteration_range=(0, int(n_trees)))
  raise ValueError(f"unknown gbt backend {backend!r}; expected lightgbm or xgboost")


def featurized_not_measured(cohort: Cohort, stats: Mapping[str, Mapping[str, Any]]
                            ) -> list[np.ndarray]:
  """Per modality, (N, d_m) bool: the cells of `data.featurize` summaries of a variable
  with count 0 in an observed row (its statistics other than the count; the count
  itself stays). `cohort` is z-scored (`data.preprocess="standard"`) with the training
  `mean` and `sd` in `stats`, so the raw count is recovered exactly. Modalities without
  such columns get an all-False mask."""
  out = []
  for m, name in enumerate(cohort.modality_names):
    x = cohort.features[m]
    mask = np.zeros(x.shape, bool)
    names = cohort.feature_names[m] if cohort.feature_names else ()
    index = {str(n): j for j, n in enumerate(names)}
    s = stats.get(name, {})
    for col, j in index.items():
      if not col.endswith("_count") or "mean" not in s:
        continue
      var = col[:-len("_count")]
      others = [index.get(f"{var}_{stat}") for stat in STATS if stat != "count"]
      if any(k is None for k in others):
        continue
      raw_count = x[:, j].astype(np.float64) * float(s["sd"][j]) + float(s["mean"][j])
      unmeasured = cohort.present[:, m] & (raw_count < 0.5)
      mask[np.ix_(unmeasured, others)] = True
    out.append(mask)
  return out


def gbt_design_matrix(cohort: Cohort, not_measured: Sequence[np.ndarray] | None = None
                      ) -> np.ndarray:
  """All features as float32 (N, F), NaN where a modality is missing and in the cells of
  `not_measured` (one (N, d_m) mask per modality, `featurized_not_measured`)."""
  x = np.concatenate([np.where(cohort.present[:, m:m + 1], f, np.nan)
                      for m, f in enumerate(cohort.features)], axis=1).astype(np.float32)
  if not_measured is not None:
    x[np.concatenate([np.asarray(k, bool) for k in not_measured], axis=1)] = np.nan
  return x


def gbt_nan_missing(cohort: Cohort, train_rows: np.ndarray, val_rows: np.ndarray,
                    predict_rows: dict[str, np.ndarray], b: ml_collections.ConfigDict,
                    seed: int, not_measured: Sequence[np.ndarray] | None = None,
                    fitted: list | None = None) -> tuple[dict[str, np.ndarray], dict]:
  """Gradient-boosted trees per task on `gbt_design_matrix(cohort, not_measured)`,
  early-stopped on the validation AUROC. Returns (probabilities per row set, what was
  fitted: backend and number of trees per task). A list `fitted` receives each task's
  (model as text, number of trees) for `gbt_predict`."""
  backend = gbt_backend()
  fit = _fit_lightgbm if backend == "lightgbm" else _fit_xgboost
  x = gbt_design_matrix(cohort, not_measured)
  out = {k: np.zeros((len(r), cohort.n_tasks), np.float32) for k, r in predict_rows.items()}
  n_trees = {}
  for t, name in enumerate(cohort.task_names):
    y = cohort.labels[:, t]
    tr = train_rows[~np.isnan(y[train_rows])]
    va = val_rows[~np.isnan(y[val_rows])]
    predict, n_trees[name], text = fit(x[tr], y[tr].astype(np.int32), x[va],
                                       y[va].astype(np.int32), b, seed)
    if fitted is not None:
      fitted.append((text, n_trees[name]))
    for k, rows in predict_rows.items():
      out[k][:, t] = predict(x[rows])
  return out, {"backend": backend, "n_trees": n_trees}
