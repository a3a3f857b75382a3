"""Fitting a method and predicting with it: one model, or `train.cv_folds` members.

`fit_and_predict` trains a neural method through the training loop (`train/loop.py`,
one member) or fits a direct one, and returns its probabilities for the rows asked for.
`fit_cross_fitted` does the same for the K members of a cross-fitted ensemble
(`ensemble.py`): a neural method's members go through the same loop together (one
vmapped step per group of one model structure, `train.members`).

Each returns the `training` record of results.json; for a neural method it says where
the best model is kept (`checkpoint`: the folder of the checkpoints, relative to the
workdir, and the member's index in them), which `predictor.load` reads.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import ml_collections
import numpy as np

from crl_mmnar_jax import ensemble, predictor
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.standardize import options as standardize_options
from crl_mmnar_jax.data.standardize import standardize
from crl_mmnar_jax.methods import DirectMethod, Method, MethodData, NeuralMethod
from crl_mmnar_jax.train import loop as loop_lib
from crl_mmnar_jax.train import records
from crl_mmnar_jax.train.members import Member, group_members
from crl_mmnar_jax.train.step import predict


def fit_direct(config: ml_collections.ConfigDict, method: DirectMethod, data: MethodData,
               predict_rows: dict[str, np.ndarray], workdir: str,
               log: Callable[[str], None]) -> tuple[dict[str, np.ndarray], dict]:
  """Fits a direct method (selected on `data.val_rows`) and saves the fitted model."""
  probs, fitted = method.fit_predict(config, data, predict_rows)
  arrays, texts = fitted.pop("arrays", None), fitted.pop("texts", None)
  if jax.process_index() == 0:     # the fitted model: arrays (logreg), + texts (gbt)
    predictor.save_direct_model(workdir, method.name, arrays, texts)
  score = records.mean_auroc(data.cohort.labels[data.val_rows], probs["val"])
  log(f"fitted {method.name}: val mean AUROC {score:.4f}")
  records.MetricsWriter(os.path.join(workdir, "metrics.jsonl"), None).write(
      {"step": 0, "epoch": 0, "phase": "fit", "val/mean_auroc": score})
  return probs, {"kind": "direct", "model": method.summary, "fitted": fitted,
                 "best_epoch": None, "best_step": None, "best_val_mean_auroc": score,
                 "history": [], "resumed": False, "devices": 1}


def _neural_record(method: NeuralMethod, fit: loop_lib.FitResult, mesh: jax.sharding.Mesh,
                   checkpoint: dict) -> dict:
  return {"kind": "neural", "model": method.summary, "best_epoch": fit.best_epoch,
          "best_step": fit.best_step, "best_val_mean_auroc": fit.best_score,
          "history": fit.history, "resumed": fit.resumed,
          "devices": int(mesh.devices.size), "checkpoint": checkpoint}


def _predict_rows(config: ml_collections.ConfigDict, fit: loop_lib.FitResult,
                  data: MethodData, predict_rows: dict[str, np.ndarray],
                  mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  bs = int(config.train.eval_batch_size)
  return {s: predict(fit.predict_fn, fit.state, data.cohort, r, bs, mesh, data.layout)
          for s, r in predict_rows.items()}


def fit_and_predict(config: ml_collections.ConfigDict, method: Method, data: MethodData,
                    predict_rows: dict[str, np.ndarray], workdir: str,
                    mesh: jax.sharding.Mesh, config_hash: str,
                    log: Callable[[str], None],
                    on_epoch: Callable[[int, float], None] | None = None,
                    ) -> tuple[dict[str, np.ndarray], dict]:
  """Trains (neural) or fits (direct) `method` on `data`; returns its probabilities per
  row set and the `training` record of results.json."""
  if isinstance(method, DirectMethod):
    return fit_direct(config, method, data, predict_rows, workdir, log)
  member = Member(config, data, workdir, config_hash)
  fit = loop_lib.fit(config, method, [member], workdir, mesh, log, on_epoch)[0]
  return (_predict_rows(config, fit, data, predict_rows, mesh),
          _neural_record(method, fit, mesh, {"dir": ".", "index": 0, "size": 1}))


def fit_cross_fitted(config: ml_collections.ConfigDict, method: Method, raw: Cohort,
                     nontest_rows: np.ndarray, test_rows: np.ndarray, workdir: str,
                     mesh: jax.sharding.Mesh, config_hash: str, log: Callable[[str], None]
                     ) -> tuple[dict[str, np.ndarray], dict]:
  """`train.cv_folds` members (`ensemble.py`) on `nontest_rows` of the unstandardised
  cohort `raw`: out-of-fold probabilities for them, the members' mean for `test_rows`."""
  prepare = lambda cohort, train: standardize(cohort, train, None,
                                              **standardize_options(config))
  plans, fold = ensemble.plan_members(config, raw, nontest_rows, workdir, prepare, log)
  per_epoch = ensemble.schedule_steps_per_epoch(config, plans)
  datas = [MethodData(p.cohort, p.train, p.held, p.stats, schedule_steps_per_epoch=per_epoch)
           for p in plans]
  rows = [{"val": p.held, "test": test_rows} for p in plans]
  stacked = False
  if isinstance(method, DirectMethod):
    outputs = [fit_direct(p.config, method, d, r, p.workdir, log)
               for p, d, r in zip(plans, datas, rows)]
  else:
    members = [Member(p.config, d, p.workdir, f"{config_hash}:member{p.fold}")
               for p, d in zip(plans, datas)]
    groups, why = group_members(config, method, members)
    if why is not None:
      how = ("one after the other" if all(len(g) == 1 for g in groups) else
             f"in {len(groups)} groups of one structure")
      log(f"the {len(plans)} members train {how}: {why}")
    stacked = len(groups) == 1 and len(plans) > 1
    outputs = [None] * len(plans)
    for group in groups:
      folder = (members[group[0]].workdir if len(group) == 1 else os.path.join(
          workdir, "members", "stacked" + ("" if stacked else "-" + "-".join(map(str, group)))))
      fits = loop_lib.fit(config, method, [members[k] for k in group], folder, mesh, log)
      for index, (k, fit) in enumerate(zip(group, fits)):
        where = {"dir": os.path.relpath(folder, workdir), "index": index, "size": len(group)}
        outputs[k] = (_predict_rows(config, fit, datas[k], rows[k], mesh),
                      _neural_record(method, fit, mesh, where))
  if jax.process_index() == 0:     # what `predictor.load` needs of each member
    for p in plans:
      predictor.save_preprocessing(p.workdir, p.stats, len(p.train), int(p.config.seed))
  return ensemble.combine(plans, fold, len(test_rows), outputs, stacked)
