"""`train_and_evaluate(config, workdir)`: data -> splits -> training -> rectifier -> outputs.

The order of operations is the honesty contract (docs/design.md, Evaluation):

1. Load and validate the cohort; split by patient (test carved out without reading any
   label, `data.splits`), write `splits.parquet`.
2. Seal the test labels: training, model selection and the rectifier see a copy of the
   test patients whose labels are all unknown.
3. Train the method (`--config.method`, see `methods`) on train rows, early-stop on
   validation AUROC and restore the best checkpoint; or, for a direct method (logistic
   regression, boosted trees), fit on train rows and select on validation rows
   (`fitting`).
4. Fit the rectifier (κ, λ, τ̂) on validation predictions only; apply it to test.
5. Open the test labels once, compute every test metric (`evaluation`), write the
   outputs (`outputs`).

The workdir's guards (one run at a time, no resume on another config or other data) are
`workdir_guard`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from crl_mmnar_jax import data as data_lib
from crl_mmnar_jax import (
  distributed,
  evaluation,
  fitting,
  outputs,
  predictor,
  provenance,
  stack_fit,
)
from crl_mmnar_jax import methods as methods_lib
from crl_mmnar_jax import rectifier as rectifier_lib
from crl_mmnar_jax import workdir as workdir_lib
from crl_mmnar_jax.cohort import Cohort, fingerprint
from crl_mmnar_jax.config_check import check_config
from crl_mmnar_jax.data import shards
from crl_mmnar_jax.data import splits as splits_lib
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.loaded import csv_list
from crl_mmnar_jax.data.sources import meds as meds_source
from crl_mmnar_jax.data.standardize import options as standardize_options
from crl_mmnar_jax.data.standardize import standardize
from crl_mmnar_jax.methods.direct import logreg_mean_impute
from crl_mmnar_jax.report import SMOKE_NOTE
from crl_mmnar_jax.train import checkpoint, records
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.workdir import config_hash, fault_point, training_hash
from crl_mmnar_jax.workdir_guard import lock_workdir, prepare_workdir

SPLITS = splits_lib.SPLIT_NAMES      # train, val, test
PREDICTED = ("val", "test")          # the row sets predictions are made for


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       log: Callable[[str], None] = print,
                       on_epoch: Callable[[int, float], None] | None = None) -> dict:
  """Runs one experiment end to end; returns the results dict (results.json holds it
  with counts below `eval.min_pattern_count` suppressed, `cells.py`). `on_epoch(epoch,
  val mean AUROC)` is called after each joint training epoch of a neural method without
  `train.cv_folds` (`train.loop.fit`; experiments/tune.py prunes with it)."""
  with contextlib.ExitStack() as stack:
    run = _prepare_run(config, workdir, log, stack)
    return _finish(run, *_fit(run, on_epoch))


def train_and_evaluate_seeds(config: ml_collections.ConfigDict, seeds: list[int],
                             workdir: str, log: Callable[[str], None] = print
                             ) -> list[dict]:
  """`train_and_evaluate` of `config` with each seed in `seeds`, in `workdir/seed<K>`
  (what `python -m experiments.run --config.seed=K --workdir=workdir/seed<K>` writes),
  with the seeds' neural models trained together: every seed's model (or its
  `train.cv_folds` members) in one vmapped step, their stacked checkpoints in
  `workdir/stacked-seeds-<seeds>`. Each seed's results equal its own run's to float
  tolerance (each model keeps its own learning-rate schedule: the optimizer's
  hyperparameters are data of its state, `train/optim.py`). A direct method or a stack
  runs its seeds one after the other."""
  if len(set(seeds)) != len(seeds) or not seeds:
    raise ValueError(f"seeds {seeds}: give distinct seeds")
  configs = []
  for s in seeds:
    c = config.copy_and_resolve_references()
    c.seed = int(s)
    configs.append(c)
  return train_and_evaluate_many(
      configs, [os.path.join(workdir, f"seed{s}") for s in seeds],
      os.path.join(workdir, "stacked-seeds-" + "-".join(map(str, seeds))), log)


def train_and_evaluate_many(configs: list[ml_collections.ConfigDict], workdirs: list[str],
                            shared: str, log: Callable[[str], None] = print) -> list[dict]:
  """`train_and_evaluate` of each config in its workdir, their neural models trained
  together where they can be (one method; `train/members.group_members`: the same
  shapes, the loss terms on, whatever their seeds, learning rates, schedules, weight
  decays, dropout rates and loss weights), stacked checkpoints in `shared`. Each
  result equals the config's own run's to float tolerance. Configs of a direct method
  or a stack run one after the other."""
  for c in configs:          # every config, before any workdir is written
    check_config(c)
  with contextlib.ExitStack() as stack:
    runs = [_prepare_run(c, w, log, stack) for c, w in zip(configs, workdirs)]
    method = runs[0].method
    if len(runs) == 1 or not isinstance(method, methods_lib.NeuralMethod) or any(
        r.method is not method or int(r.config.train.data_shards) > 1 for r in runs):
      return [_finish(r, *_fit(r, None)) for r in runs]
    jobs = [_neural_job(r) for r in runs]
    fitted = fitting.fit_jobs(configs[0], method, jobs, runs[0].mesh, log, shared=shared)
    out = []
    for r, (probs, training) in zip(runs, fitted):
      _after_fit(r)
      out.append(_finish(r, probs, training, None))
    return out


@dataclasses.dataclass
class _Run:
  """A prepared run (`_prepare_run`): its cohort split, test labels sealed, standardised."""
  config: ml_collections.ConfigDict
  workdir: str
  log: Callable[[str], None]
  method: Any                       # None for a stack
  stack_members: list[str] | None
  raw: Cohort                       # before standardisation (test labels hidden)
  cohort: Cohort                    # standardised with the training rows
  stats: dict
  layout: shards.Layout
  rows: dict[str, np.ndarray]
  predict_rows: dict[str, np.ndarray]
  sealed: splits_lib.SealedLabels
  modalities: list[dict]            # `evaluation.modality_table`
  extras: dict
  h: str                            # the config hash
  th: str                           # the training hash (what checkpoints depend on)
  mesh: jax.sharding.Mesh
  t_start: float


def _prepare_run(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None],
             stack: contextlib.ExitStack) -> _Run:
  """Steps 1 and 2: the checks, the cohort and its splits, the workdir (locked until
  `stack` closes), the test labels sealed, the training rows' standardisation."""
  check_config(config)                   # every setting, before anything is read or written
  stack_members = None                   # a bad method name fails before loading data
  if config.method == methods_lib.STACK:
    stack_members = stack_fit.check_members(config, csv_list(config.stack.members))
    method = None
  else:
    method = methods_lib.get_method(config.method)
  if config.eval.smoke:
    log(SMOKE_NOTE)     # again at the end
  checkpoint.check_directory(workdir)
  # Before any collective (the sharded loading is one): the same config everywhere.
  distributed.assert_same_on_all_processes(f"{config_hash(config)}:{config.seed}",
                                           "the config or seed")
  n_shards = int(config.train.data_shards)
  held_shards = shards.held_shards(n_shards)         # a bad shard count fails here too
  for key in ("batch_size", "eval_batch_size"):
    shards.check_batch_divides_shards(int(config.train[key]), n_shards, f"train.{key}")
  if n_shards > 1 and (stack_members or isinstance(method, methods_lib.DirectMethod)):
    raise ValueError(f"method {config.method!r} fits on one host from every patient's "
                     f"features; it needs train.data_shards=1")
  t_start = time.perf_counter()
  records.reset_first_step()

  # ---- 1. data and splits.
  info: dict = {}

  def load_local():
    loaded = data_lib.load(config, keep=shards.keep_fn(n_shards, held_shards))
    info.update(loaded.info)
    return loaded.cohort.validate(config.data.name), {"test_mask": loaded.test_mask_N,
                                                      "true_prob": loaded.true_prob_NxT}

  cohort, layout, extras = shards.assemble(load_local, n_shards)
  if n_shards > 1:
    log(shards.describe(layout, shards.n_local(cohort), cohort.n))
  split = splits_lib.make_splits(config, cohort, extras["test_mask"])
  rows = {s: np.flatnonzero(split == s) for s in SPLITS}
  for s in SPLITS:
    if len(rows[s]) == 0:
      raise DataError(f"the {s} split is empty ({cohort.n} patients)")
  splits_lib.check_validation_classes(cohort, rows["val"])
  splits_lib.check_test_classes(cohort, rows["test"])
  fault_point("data_loaded")
  stack.enter_context(lock_workdir(workdir, log))     # one run per workdir, from here on
  combine = distributed.allgather_bytes if layout.distributed else None
  h = prepare_workdir(config, workdir, log,
                      workdir_lib.data_fingerprint(cohort, split, combine))
  th = training_hash(config)                          # what the checkpoints depend on
  if jax.process_index() == 0:
    outputs.write_splits(workdir, cohort.patient_id, split)
    if n_shards > 1:   # the loader counted the patients of process 0's shards only
      info = {**info, "counts_cover_shards": list(layout.held), "data_shards": n_shards}
    outputs.write_data_info(workdir, info, int(config.eval.min_pattern_count))
  log(f"cohort '{config.data.name}': {cohort.n} patients, modalities "
      f"{list(cohort.modality_names)}, tasks {list(cohort.task_names)}; split "
      + ", ".join(f"{s} {len(rows[s])}" for s in SPLITS))

  # ---- 2. seal the test labels. From here until `final evaluation` nothing reads them.
  sealed = splits_lib.SealedLabels(cohort.labels[rows["test"]])
  hidden = cohort.labels.copy()
  hidden[rows["test"]] = np.nan
  cohort = dataclasses.replace(cohort, labels=hidden)
  modalities = evaluation.modality_table(cohort)        # train + validation patients only
  raw = cohort
  cohort, stats = standardize(cohort, rows["train"], layout, **standardize_options(config))
  # "val": the validation rows, or every non-test row out of fold (cross-fitting).
  predict_rows = {s: rows[s] for s in PREDICTED}
  if int(config.train.cv_folds) > 1:       # always for a stack (check_members)
    predict_rows["val"] = np.sort(np.concatenate([rows["train"], rows["val"]]))
  return _Run(config, workdir, log, method, stack_members, raw, cohort, stats, layout, rows,
              predict_rows, sealed, modalities, extras, h, th, mesh_lib.make_mesh(), t_start)


def _neural_job(run: _Run) -> fitting.NeuralJob:
  """A neural method's training of `run` as a `fitting.NeuralJob`."""
  if int(run.config.train.cv_folds) > 1:
    return fitting.cross_fitted_job(run.config, run.raw, run.predict_rows["val"],
                                    run.predict_rows["test"], run.workdir, run.th, run.log)
  data = methods_lib.MethodData(run.cohort, run.rows["train"], run.rows["val"], run.stats,
                                run.layout)
  return fitting.single_job(run.config, data, run.predict_rows, run.workdir, run.th)


def _after_fit(run: _Run) -> None:
  """What a single model's run keeps beside its model (what `predictor.load` needs,
  docs/predict.md)."""
  if int(run.config.train.cv_folds) == 1 and jax.process_index() == 0:
    predictor.save_preprocessing(run.workdir, run.stats, len(run.rows["train"]),
                                 int(run.config.seed))


def _fit(run: _Run, on_epoch: Callable[[int, float], None] | None
         ) -> tuple[dict[str, np.ndarray], dict, dict | None]:
  """Step 3: trains (or fits) the method; returns the {"val", "test"} probabilities, the
  `training` record and a stack's members' probabilities (None otherwise)."""
  config, method, log = run.config, run.method, run.log
  if run.stack_members:
    s = config.stack
    return stack_fit.fit_stack(
        config, run.stack_members, run.raw, run.predict_rows["val"],
        run.predict_rows["test"], run.workdir, run.mesh, run.th, log, l2=float(s.l2),
        n_boot=int(s.n_boot), z=float(s.z))
  if int(config.train.cv_folds) > 1:
    probs, training = fitting.fit_cross_fitted(config, method, run.raw,
                                               run.predict_rows["val"],
                                               run.predict_rows["test"], run.workdir,
                                               run.mesh, run.th, log)
  else:
    data = methods_lib.MethodData(run.cohort, run.rows["train"], run.rows["val"],
                                  run.stats, run.layout)
    probs, training = fitting.fit_and_predict(config, method, data, run.predict_rows,
                                              run.workdir, run.mesh, run.th, log, on_epoch)
  _after_fit(run)
  return probs, training, None


def _finish(run: _Run, probs: dict[str, np.ndarray], training: dict,
            member_probs: dict | None) -> dict:
  """Steps 4 and 5: the rectifier on validation predictions, then the one reading of the
  test labels, the metrics and the outputs."""
  config, cohort, rows, predict_rows = run.config, run.cohort, run.rows, run.predict_rows
  workdir, log, n_shards = run.workdir, run.log, int(run.config.train.data_shards)
  t_train = time.perf_counter() - run.t_start

  # ---- 4. the rectifier, fitted on the validation predictions only.
  pattern = {s: cohort.pattern[predict_rows[s]] for s in PREDICTED}
  val_labels = cohort.labels[predict_rows["val"]]
  r = config.rectifier

  def fit_rectifier(val_probs: np.ndarray) -> rectifier_lib.Rectifier:
    return rectifier_lib.fit(
        val_probs, val_labels, pattern["val"], n_folds=int(r.n_folds),
        kappa_grid=tuple(r.kappa_grid), lambda_grid=tuple(r.lambda_grid), z=float(r.z),
        min_count=int(r.min_count), shrinkage=float(r.shrinkage), seed=int(config.seed),
        task_names=cohort.task_names, rule=str(r.rule), rule_z=float(r.rule_z),
        auroc_guard=bool(r.auroc_guard))

  rect = fit_rectifier(probs["val"])
  rectified = {"val": rect.oof_probs_NxT, "test": rect.apply(probs["test"], pattern["test"])}
  member_rectified = {m: fit_rectifier(p["val"]).apply(p["test"], pattern["test"])
                      for m, p in (member_probs or {}).items()}   # each member's own

  reference = {}
  if config.eval.reference_logreg and n_shards == 1:   # needs every row
    reference["logreg_mean_impute"] = logreg_mean_impute(   # "val": for its thresholds
        cohort, rows["train"], rows["val"],
        {"val": predict_rows["val"], "test": rows["test"]})[0]
  oracle = None
  if run.extras["true_prob"] is not None:
    oracle = {s: run.extras["true_prob"][predict_rows[s]] for s in PREDICTED}

  # ---- 5. final evaluation: the only place test labels are read.
  labels = {"val": val_labels, "test": run.sealed.open()}
  names, e = cohort.task_names, config.eval
  seed = int(config.seed)
  results: dict[str, Any] = {
      "method": config.method, "seed": seed, "config_hash": run.h,
      "cohort": {"name": config.data.name, "n": cohort.n,
                 **{f"n_{s}": int(len(rows[s])) for s in SPLITS},
                 "n_out_of_fold": (int(len(predict_rows["val"])) if training.get("cv_folds")
                                   else None),
                 "fingerprint": fingerprint(cohort.patient_id),
                 "modalities": list(cohort.modality_names), "tasks": list(names),
                 "modality_table": run.modalities},
      "training": training,
  }
  results.update(evaluation.evaluate(
      labels, probs, rectified, pattern, rect, reference, oracle, names, n_boot=e.n_boot,
      seed=seed, min_count=e.min_pattern_count))
  if member_probs:
    best = [training["stack"]["tasks"][name]["best_member"] for name in names]
    results["stack"] = evaluation.stack_members(labels, probs, member_probs,
                                                member_rectified, best, names,
                                                n_boot=int(e.n_boot), seed=seed)
  results["provenance"] = provenance.gather()
  results["smoke"] = bool(e.smoke)
  first = records.first_step_at()        # data, model, compilation: what a cache shortens
  results["timing"] = {"train_s": t_train, "total_s": time.perf_counter() - run.t_start,
                       "first_step_s": None if first is None else first - run.t_start}

  if jax.process_index() == 0:
    ids = {s: cohort.patient_id[predict_rows[s]] for s in PREDICTED}
    others = {"reference": next(iter(reference.values()), None), "oracle": oracle,
              **{f"member_{m}": p for m, p in (member_probs or {}).items()}}
    predictions = outputs.write_predictions(workdir, ids, pattern, labels, probs, rectified,
                                            others, names)
    if config.data.name == "meds":     # the MEDS prediction schema too (docs/meds.md)
      meds_source.write_prediction_files(workdir, predictions, list(names))
    outputs.write_results(workdir, config, cohort, results, predictions, log)
  results["timing"]["total_s"] = time.perf_counter() - run.t_start
  return results
