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

import dataclasses
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
  job = single_job(config, data, predict_rows, workdir, config_hash)
  return fit_jobs(config, method, [job], mesh, log, on_epoch=on_epoch)[0]


@dataclasses.dataclass(frozen=True)
class NeuralJob:
  """One run's neural members (one model, or a cross-fitted ensemble's K), the rows each
  member predicts, the run's workdir, and how the members' predictions become the run's
  (`finish(outputs, stacked)`: ({"val", "test"} probabilities, the `training` record))."""
  members: list[Member]
  rows: list[dict[str, np.ndarray]]
  workdir: str
  finish: Callable[[list[tuple[dict[str, np.ndarray], dict]], bool],
                   tuple[dict[str, np.ndarray], dict]]


def fit_jobs(config: ml_collections.ConfigDict, method: NeuralMethod, jobs: list[NeuralJob],
             mesh: jax.sharding.Mesh, log: Callable[[str], None], shared: str | None = None,
             on_epoch: Callable[[int, float], None] | None = None
             ) -> list[tuple[dict[str, np.ndarray], dict]]:
  """Trains the members of every job together (one vmapped step per group of one model
  structure, `train.members.group_members`) and returns each job's `finish`. Several jobs (the seeds of a sweep, `train_and_evaluate_seeds`) keep their
  stacked checkpoints in `shared`; a lone member keeps its own in its own folder.
  Each group trains with its first member's config (the members of a group agree on
  the loop's and the loss's settings). `on_epoch` (`train.loop.fit`'s) is for a lone
  group."""
  members = [m for j in jobs for m in j.members]
  owner = [(i, n) for i, j in enumerate(jobs) for n in range(len(j.members))]
  groups, why = group_members(config, method, members)
  if why is not None:
    how = ("one after the other" if all(len(g) == 1 for g in groups) else
           f"in {len(groups)} groups")
    log(f"the {len(members)} members train {how}: {why}")
  whole = len(groups) == 1 and len(members) > 1
  base = os.path.join(jobs[0].workdir, "members")
  outputs: list[list] = [[None] * len(j.members) for j in jobs]
  group_of = {g: n for n, group in enumerate(groups) for g in group}
  for group in groups:
    suffix = "" if whole else "-" + "-".join(map(str, group))
    folder = (members[group[0]].workdir if len(group) == 1 else
              os.path.join(base, "stacked" + suffix) if shared is None else shared + suffix)
    fits = loop_lib.fit(members[group[0]].config, method, [members[g] for g in group],
                        folder, mesh, log, on_epoch if len(groups) == 1 else None)
    for index, (g, fit) in enumerate(zip(group, fits)):
      i, n = owner[g]
      m, rows = members[g], jobs[i].rows[n]
      where = {"dir": os.path.relpath(folder, jobs[i].workdir), "index": index,
               "size": len(group)}
      outputs[i][n] = (_predict_rows(m.config, fit, m.data, rows, mesh),
                       _neural_record(method, fit, mesh, where))
  starts = np.cumsum([0] + [len(j.members) for j in jobs])
  together = [len({group_of[g] for g in range(a, b)}) == 1 and len(groups[group_of[a]]) > 1
              for a, b in zip(starts[:-1], starts[1:])]
  return [j.finish(out, t) for j, out, t in zip(jobs, outputs, together)]


def cross_fitted_plans(config: ml_collections.ConfigDict, raw: Cohort,
                       nontest_rows: np.ndarray, workdir: str, log: Callable[[str], None]
                       ) -> tuple[list[ensemble.MemberPlan], np.ndarray, list[MethodData]]:
  """`train.cv_folds` members' plans (`ensemble.py`) on `nontest_rows` of the
  unstandardised cohort `raw`, each member standardised on its own training rows; the
  fold of each non-test row; each member's `MethodData`."""
  prepare = lambda cohort, train: standardize(cohort, train, None,
                                              **standardize_options(config))
  plans, fold = ensemble.plan_members(config, raw, nontest_rows, workdir, prepare, log)
  per_epoch = ensemble.schedule_steps_per_epoch(config, plans)
  datas = [MethodData(p.cohort, p.train, p.held, p.stats, schedule_steps_per_epoch=per_epoch)
           for p in plans]
  return plans, fold, datas


def _save_member_preprocessing(plans: list[ensemble.MemberPlan]) -> None:
  if jax.process_index() == 0:     # what `predictor.load` needs of each member
    for p in plans:
      predictor.save_preprocessing(p.workdir, p.stats, len(p.train), int(p.config.seed))


def cross_fitted_job(config: ml_collections.ConfigDict, raw: Cohort,
                     nontest_rows: np.ndarray, test_rows: np.ndarray, workdir: str,
                     config_hash: str, log: Callable[[str], None]) -> NeuralJob:
  """A neural method's cross-fitted ensemble as one `NeuralJob`."""
  plans, fold, datas = cross_fitted_plans(config, raw, nontest_rows, workdir, log)
  members = [Member(p.config, d, p.workdir, f"{config_hash}:member{p.fold}")
             for p, d in zip(plans, datas)]

  def finish(outputs, stacked):
    _save_member_preprocessing(plans)
    return ensemble.combine(plans, fold, len(test_rows), outputs, stacked)

  return NeuralJob(members, [{"val": p.held, "test": test_rows} for p in plans], workdir,
                   finish)


def single_job(config: ml_collections.ConfigDict, data: MethodData,
               predict_rows: dict[str, np.ndarray], workdir: str, config_hash: str
               ) -> NeuralJob:
  """One model trained on `data` as a `NeuralJob`."""
  return NeuralJob([Member(config, data, workdir, config_hash)], [predict_rows], workdir,
                   lambda outputs, stacked: outputs[0])


def fit_cross_fitted(config: ml_collections.ConfigDict, method: Method, raw: Cohort,
                     nontest_rows: np.ndarray, test_rows: np.ndarray, workdir: str,
                     mesh: jax.sharding.Mesh, config_hash: str, log: Callable[[str], None]
                     ) -> tuple[dict[str, np.ndarray], dict]:
  """`train.cv_folds` members (`ensemble.py`) on `nontest_rows` of the unstandardised
  cohort `raw`: out-of-fold probabilities for them, the members' mean for `test_rows`."""
  if isinstance(method, DirectMethod):
    plans, fold, datas = cross_fitted_plans(config, raw, nontest_rows, workdir, log)
    outputs = [fit_direct(p.config, method, d, {"val": p.held, "test": test_rows},
                          p.workdir, log) for p, d in zip(plans, datas)]
    _save_member_preprocessing(plans)
    return ensemble.combine(plans, fold, len(test_rows), outputs, False)
  job = cross_fitted_job(config, raw, nontest_rows, test_rows, workdir, config_hash, log)
  return fit_jobs(config, method, [job], mesh, log)[0]
