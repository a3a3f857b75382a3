"""`train_and_evaluate(config, workdir)`: data -> splits -> training -> rectifier -> outputs.

The order of operations is the honesty contract (docs/design.md, Evaluation):

1. Load and validate the cohort; split by patient (test carved out without reading any
   label), write `splits.parquet`.
2. Seal the test labels: training, model selection and the rectifier see a copy of the
   test patients whose labels are all unknown.
3. Train the method (`--config.method`, see `methods.py`) on train rows, early-stop on
   validation AUROC and restore the best checkpoint; or, for a direct method (logistic
   regression, boosted trees), fit on train rows and select on validation rows.
4. Fit the rectifier (κ, λ, τ̂) on validation predictions only; apply it to test.
5. Open the test labels once, compute every test metric, write the outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import ml_collections
import numpy as np
import polars as pl

from crl_mmnar_jax import cells, distributed, predictor
from crl_mmnar_jax import data as data_lib
from crl_mmnar_jax import metrics as metrics_lib
from crl_mmnar_jax import rectifier as rectifier_lib
from crl_mmnar_jax import workdir as workdir_lib
from crl_mmnar_jax.cohort import Cohort, fingerprint
from crl_mmnar_jax.config_check import check_config
from crl_mmnar_jax.data import shards
from crl_mmnar_jax.data import splits as splits_lib
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.io import write_atomic, write_parquet_atomic
from crl_mmnar_jax.data.standardize import options as standardize_options
from crl_mmnar_jax.data.standardize import standardize
from crl_mmnar_jax.rectifier import bootstrap as rectifier_bootstrap
from crl_mmnar_jax.train import checkpoint
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.workdir import (
  WorkdirError,
  config_hash,
  config_to_dict,
  fault_point,
  training_hash,
)

if TYPE_CHECKING:
  from crl_mmnar_jax.methods import Method, MethodData

SPLITS = ("train", "val", "test")
def prepare_workdir(config: ml_collections.ConfigDict, workdir: str,
                    log: Callable[[str], None] = print,
                    data_fingerprint: dict | None = None) -> str:
  """Checks that `workdir` holds no run of another training config (nor, given
  `data_fingerprint`, checkpoints trained on other data), then writes config.json;
  returns the config hash.

  Settings the trained checkpoint does not depend on (`rectifier.*`, `eval.*`) may
  change between runs: the checkpoint is reused and config.json rewritten. An
  unreadable config.json is rewritten with a warning (the checkpoints carry their own
  training hash, checked on restore)."""
  h = config_hash(config)
  path = os.path.join(workdir, "config.json")
  new = config_to_dict(config)
  if os.path.exists(path):
    try:
      old = workdir_lib.read_json(path)
      if not isinstance(old, dict):
        raise WorkdirError(f"{path}: not a JSON object")
    except WorkdirError as e:
      log(f"warning: {e}; rewriting it (the checkpoints' own config hash still guards "
          f"the resume)")
      old = None
    if old is not None:
      old_hash = old.pop("_config_hash", None)
      old_training = old.pop("_training_hash", None) or workdir_lib.training_hash_of_dict(old)
      diff = workdir_lib.config_differences(old, new)
      if old_training != training_hash(config):
        raise WorkdirError(
            f"workdir {workdir} holds a run of a different config; use a new --workdir or "
            f"delete it. Differences: " + "; ".join(diff[:10]))
      if old_hash != h:
        log(f"post-training settings changed ({'; '.join(diff[:10])}): reusing the "
            f"trained checkpoint")
  if data_fingerprint is not None:
    error = None
    if jax.process_index() == 0:
      try:
        workdir_lib.check_data(workdir, data_fingerprint, checkpoint.has_checkpoint(workdir),
                               log)
      except WorkdirError as e:
        error = e
    _fail_together(error)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    write_atomic(path, json.dumps({**new, "_config_hash": h,
                                   "_training_hash": training_hash(config)},
                                  indent=2, sort_keys=True))
  return h


def lock_workdir(workdir: str, log: Callable[[str], None]) -> contextlib.AbstractContextManager:
  """Process 0's exclusive lock on `workdir` (every process fails if it is busy); then
  the temporary files of killed writers are removed."""
  error, lock = None, None
  if jax.process_index() == 0:
    try:
      lock = workdir_lib.WorkdirLock(workdir, log)
      removed = workdir_lib.remove_stale_temporaries(workdir)
      if removed:
        log(f"removed {len(removed)} temporary file(s) of an interrupted run: {removed[:5]}")
    except WorkdirError as e:
      error = e
  _fail_together(error)
  return lock or contextlib.nullcontext()


def _fail_together(error: WorkdirError | None) -> None:
  """Raises process 0's `error` on every process (the others would wait in a collective)."""
  if jax.process_count() > 1:
    first = distributed.allgather_bytes(str(error or "").encode())[0].decode()
    if first and error is None:
      raise WorkdirError(first)
  if error is not None:
    raise error


# ----------------------------------------------------------------------------- splits


def make_splits(config: ml_collections.ConfigDict, cohort: Cohort,
                test_mask_N: np.ndarray | None = None) -> np.ndarray:
  """train/val/test per patient. `test_mask_N` fixes the test rows (a split by set or
  by database); the other rows are then split into train and validation."""
  d = config.data
  if d.splits_file:
    return splits_lib.read_splits(d.splits_file, cohort.patient_id)
  if test_mask_N is None:
    return splits_lib.assign_splits(
        cohort.patient_id, cohort.pattern, cohort.labels, val_fraction=float(d.val_fraction),
        test_fraction=float(d.test_fraction), seed=int(config.seed), group_id=cohort.group_id,
        predefined=cohort.split)
  split = np.full(cohort.n, "test", dtype="<U5")
  rest = ~test_mask_N
  split[rest] = splits_lib.assign_splits(
      cohort.patient_id[rest], cohort.pattern[rest], cohort.labels[rest],
      val_fraction=float(d.val_fraction), test_fraction=0.0, seed=int(config.seed),
      group_id=None if cohort.group_id is None else cohort.group_id[rest])
  return split


def check_validation_classes(cohort: Cohort, val_rows: np.ndarray) -> None:
  for t, name in enumerate(cohort.task_names):
    y = cohort.labels[val_rows, t]
    y = y[~np.isnan(y)]
    n_pos = int(y.sum())
    if len(y) == 0:
      raise DataError(
          f"task '{name}' has no known labels in the validation split: AUROC-based model "
          f"selection is impossible; check the label column, or drop the task (data.tasks)")
    if n_pos == 0 or n_pos == len(y):
      raise DataError(
          f"task '{name}' has only one class in the validation split (n_pos={n_pos} of "
          f"{len(y)}): AUROC-based model selection is impossible; use more patients, a "
          f"larger data.val_fraction, or drop the task (data.tasks)")


@dataclasses.dataclass(frozen=True)
class SealedLabels:
  """Test labels, kept apart from everything that trains or selects."""

  _labels_NxT: np.ndarray

  def open(self) -> np.ndarray:
    return self._labels_NxT.copy()


# ----------------------------------------------------------------------------- metrics


def _with_ci(labels_NxT, probs_NxT, task_names, n_boot: int, seed: int) -> dict:
  out = metrics_lib.task_metrics(labels_NxT, probs_NxT, task_names)
  for t, name in enumerate(task_names):
    if n_boot > 0:
      ci = metrics_lib.bootstrap_ci(labels_NxT[:, t], probs_NxT[:, t], n_boot=n_boot,
                                    seed=seed + t)
      out[name]["ci95"] = {k: [float(lo), float(hi)] for k, (lo, hi) in ci.items()}
  return out


def _per_pattern(labels_NxT, probs_NxT, pattern_N, task_names, min_count) -> dict:
  """Per task, the metrics of each pattern with `min_count` known labels, and of the
  smaller patterns pooled into one "other" row (`cells.py`)."""
  out = {}
  for t, name in enumerate(task_names):
    pooled = cells.pool_small_patterns(pattern_N, ~np.isnan(labels_NxT[:, t]), min_count)
    out[name] = cells.label_pooled(metrics_lib.per_pattern_metrics(
        labels_NxT[:, t], probs_NxT[:, t], pooled, min_count=min_count), pattern_N, pooled)
  return out


def modality_table(cohort: Cohort) -> list[dict]:
  """Per modality and task: observed fraction and outcome rate when observed vs not.

  Computed on whatever labels `cohort` holds; `train_and_evaluate` calls it after the
  test labels are sealed, so it describes training and validation patients only.
  """
  rows = []
  for m, name in enumerate(cohort.modality_names):
    obs = cohort.present[:, m]
    for t, task in enumerate(cohort.task_names):
      y = cohort.labels[:, t]
      known = ~np.isnan(y)
      rate = lambda sel: float(y[sel & known].mean()) if (sel & known).any() else None
      rows.append({"modality": name, "task": task, "observed_fraction": float(obs[known].mean()),
                   "n": int(known.sum()), "n_observed": int((obs & known).sum()),
                   "n_not_observed": int((~obs & known).sum()), "rate_observed": rate(obs),
                   "rate_not_observed": rate(~obs)})
  return rows


def rectifier_intervals(labels, probs, rectified, pattern, names, n_boot: int, seed: int,
                        min_count: int) -> dict:
  """Bootstrap intervals of τ̂ per pattern (validation) and paired intervals of
  rectified − raw (test; validation too, which is in-sample for the choice of κ, λ)."""
  def delta(s):
    return rectifier_bootstrap.paired_delta_intervals(
        labels[s], probs[s], rectified[s], pattern[s], n_boot=n_boot, seed=seed,
        task_names=names, min_pattern_count=min_count)
  return {"tau_val": rectifier_bootstrap.tau_intervals(
              probs["val"], labels["val"], pattern["val"], n_boot=n_boot, seed=seed,
              task_names=names),
          "delta_test": delta("test"), "delta_val_in_sample": delta("val")}


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, float)):
    return None if not np.isfinite(x) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  return x


# ----------------------------------------------------------------------------- main


def fit_and_predict(config: ml_collections.ConfigDict, method: Method, data: MethodData,
                    predict_rows: dict[str, np.ndarray], workdir: str,
                    mesh: jax.sharding.Mesh, config_hash: str,
                    log: Callable[[str], None],
                    on_epoch: Callable[[int, float], None] | None = None,
                    ) -> tuple[dict[str, np.ndarray], dict]:
  """Trains (neural) or fits (direct) `method` on `data`; returns its probabilities per
  row set and the `training` record of results.json."""
  from crl_mmnar_jax.methods import DirectMethod
  from crl_mmnar_jax.train import loop as train_lib
  from crl_mmnar_jax.train import step as step_lib
  if isinstance(method, DirectMethod):
    probs, fitted = method.fit_predict(config, data, predict_rows)
    arrays, texts = fitted.pop("arrays", None), fitted.pop("texts", None)
    if jax.process_index() == 0:     # the fitted model: arrays (logreg), + texts (gbt)
      predictor.save_direct_model(workdir, method.name, arrays, texts)
    score = train_lib.mean_auroc(data.cohort.labels[data.val_rows], probs["val"])
    log(f"fitted {method.name}: val mean AUROC {score:.4f}")
    train_lib.MetricsWriter(os.path.join(workdir, "metrics.jsonl"), None).write(
        {"step": 0, "epoch": 0, "phase": "fit", "val/mean_auroc": score})
    return probs, {"kind": "direct", "model": method.summary, "fitted": fitted,
                   "best_epoch": None, "best_step": None, "best_val_mean_auroc": score,
                   "history": [], "resumed": False, "devices": 1}
  fit = train_lib.fit(config, method, data, workdir, mesh, config_hash, log, on_epoch)
  bs = int(config.train.eval_batch_size)
  probs = {s: step_lib.predict(fit.predict_fn, fit.state, data.cohort, r, bs, mesh,
                                data.layout)
           for s, r in predict_rows.items()}
  return probs, {"kind": "neural", "model": method.summary, "best_epoch": fit.best_epoch,
                 "best_step": fit.best_step, "best_val_mean_auroc": fit.best_score,
                 "history": fit.history, "resumed": fit.resumed,
                 "devices": int(mesh.devices.size)}


def fit_cross_fitted(config: ml_collections.ConfigDict, method: Method, raw: Cohort,
                     held: dict[str, np.ndarray], workdir: str, mesh: jax.sharding.Mesh,
                     config_hash: str, log: Callable[[str], None]
                     ) -> tuple[dict[str, np.ndarray], dict]:
  """`train.cv_folds` members (`ensemble.py`) on the non-test rows `held["val"]`:
  out-of-fold probabilities for them, the members' mean for `held["test"]`."""
  from crl_mmnar_jax import ensemble
  from crl_mmnar_jax import methods as methods_lib

  member_hash = lambda folder: f"{config_hash}:member{os.path.basename(folder)}"

  def fit_member(member_config, member_cohort, stats, train, val, predict_rows, folder,
                 per_epoch):
    data = methods_lib.MethodData(member_cohort, train, val, stats,
                                  schedule_steps_per_epoch=per_epoch)
    out = fit_and_predict(member_config, method, data, predict_rows, folder, mesh,
                          member_hash(folder), log)
    if jax.process_index() == 0:     # what `predictor.load` needs of this member
      predictor.save_preprocessing(folder, stats, len(train), int(member_config.seed))
    return out

  def prepare(cohort, train):
    return standardize(cohort, train, None, **standardize_options(config))

  def train_together(plans, per_epoch):
    from crl_mmnar_jax.train import stacked
    if isinstance(method, methods_lib.DirectMethod):
      return None
    members = [stacked.Member(p.config, methods_lib.MethodData(
        p.cohort, p.train, p.held, p.stats, schedule_steps_per_epoch=per_epoch),
        p.workdir, member_hash(p.workdir)) for p in plans]
    why = stacked.why_not_stacked(config, method, members)
    if why is not None:
      log(f"the {len(plans)} members train one after the other: {why}")
      return None
    return stacked.fit_stacked(config, method, members, workdir, mesh, log)

  probs, record, _ = ensemble.fit_members(config, raw, held["val"], held["test"], workdir,
                                          fit_member, prepare, log, train_together)
  return probs, record


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       log: Callable[[str], None] = print,
                       on_epoch: Callable[[int, float], None] | None = None) -> dict:
  """Runs one experiment end to end; returns the results dict (results.json holds it
  with counts below `eval.min_pattern_count` suppressed, `cells.py`). `on_epoch(epoch,
  val mean AUROC)` is called after each joint training epoch of a neural method without
  `train.cv_folds` (`train.loop.fit`; experiments/tune.py prunes with it)."""
  with contextlib.ExitStack() as stack:
    return _train_and_evaluate(config, workdir, log, stack, on_epoch)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        log: Callable[[str], None], stack: contextlib.ExitStack,
                        on_epoch: Callable[[int, float], None] | None = None) -> dict:
  from crl_mmnar_jax import methods as methods_lib  # imports are slow: not at module level
  method = methods_lib.get_method(config.method)     # a bad name fails before loading data
  check_config(config)                   # every setting, before anything is read or written
  if config.eval.get("smoke", False):
    from crl_mmnar_jax.report import SMOKE_NOTE
    log(SMOKE_NOTE)     # again at the end
  checkpoint.check_directory(workdir)
  # Before any collective (the sharded loading is one): the same config everywhere.
  distributed.assert_same_on_all_processes(f"{config_hash(config)}:{config.seed}",
                                           "the config or seed")
  n_shards = int(config.train.data_shards)
  held = shards.held_shards(n_shards)                # a bad shard count fails here too
  for key in ("batch_size", "eval_batch_size"):
    shards.check_batch_size(int(config.train[key]), n_shards, f"train.{key}")
  if n_shards > 1 and isinstance(method, methods_lib.DirectMethod):
    raise ValueError(f"method {config.method!r} fits on one host from every patient's "
                     f"features; it needs train.data_shards=1")
  t_start = time.perf_counter()
  info: dict = {}

  def load_local():
    loaded = data_lib.load(config, keep=shards.keep_fn(n_shards, held))
    info.update(loaded.info)
    return loaded.cohort.validate(config.data.name), {"test_mask": loaded.test_mask_N,
                                                      "true_prob": loaded.true_prob_NxT}

  cohort, layout, extras = shards.assemble(load_local, n_shards)
  if n_shards > 1:
    log(shards.describe(layout, shards.n_local(cohort), cohort.n))
  split = make_splits(config, cohort, extras["test_mask"])
  rows = {s: np.flatnonzero(split == s) for s in SPLITS}
  for s in SPLITS:
    if len(rows[s]) == 0:
      raise DataError(f"the {s} split is empty ({cohort.n} patients)")
  check_validation_classes(cohort, rows["val"])
  fault_point("data_loaded")
  stack.enter_context(lock_workdir(workdir, log))     # one run per workdir, from here on
  combine = distributed.allgather_bytes if layout.distributed else None
  h = prepare_workdir(config, workdir, log,
                      workdir_lib.data_fingerprint(cohort, split, combine))
  th = training_hash(config)                          # what the checkpoints depend on
  if jax.process_index() == 0:
    write_parquet_atomic(splits_lib.splits_frame(cohort.patient_id, split),
                         os.path.join(workdir, "splits.parquet"))
    # The loader's description of the input data (counts, dropped rows, attrition; it may
    # count labels over ALL patients) stays out of results.json, which holds evaluation.
    if n_shards > 1:   # the loader counted the patients of process 0's shards only
      info = {**info, "counts_cover_shards": list(layout.held), "data_shards": n_shards}
    # Small cells suppressed like results.json (`cells.suppress_info`).
    shared_info = cells.suppress_info(_jsonable(info), int(config.eval.min_pattern_count))
    write_atomic(os.path.join(workdir, "data_info.json"), json.dumps(shared_info, indent=2))
  log(f"cohort '{config.data.name}': {cohort.n} patients, modalities "
      f"{list(cohort.modality_names)}, tasks {list(cohort.task_names)}; split "
      + ", ".join(f"{s} {len(rows[s])}" for s in SPLITS))

  # Seal the test labels. From here until `final evaluation` nothing reads them.
  sealed = SealedLabels(cohort.labels[rows["test"]])
  hidden = cohort.labels.copy()
  hidden[rows["test"]] = np.nan
  cohort = dataclasses.replace(cohort, labels=hidden)
  modalities = modality_table(cohort)        # train + validation patients only
  raw = cohort
  cohort, stats = standardize(cohort, rows["train"], layout, **standardize_options(config))

  mesh = mesh_lib.make_mesh()
  held = {s: rows[s] for s in ("val", "test")}     # the rows predictions are made for
  if int(config.train.get("cv_folds", 1)) > 1:     # every non-test row, out of fold
    held["val"] = np.sort(np.concatenate([rows["train"], rows["val"]]))
    probs, training = fit_cross_fitted(config, method, raw, held, workdir, mesh, th, log)
  else:
    data = methods_lib.MethodData(cohort, rows["train"], rows["val"], stats, layout)
    probs, training = fit_and_predict(config, method, data, held, workdir, mesh, th, log,
                                      on_epoch)
    if jax.process_index() == 0:     # what `predictor.load` needs (docs/predict.md)
      predictor.save_preprocessing(workdir, stats, len(rows["train"]), int(config.seed))
  t_train = time.perf_counter() - t_start

  pattern = {s: cohort.pattern[held[s]] for s in ("val", "test")}
  val_labels = cohort.labels[held["val"]]

  r = config.rectifier
  rect = rectifier_lib.fit(
      probs["val"], val_labels, pattern["val"], n_folds=int(r.n_folds),
      kappa_grid=tuple(r.kappa_grid), lambda_grid=tuple(r.lambda_grid), z=float(r.z),
      min_count=int(r.min_count), shrinkage=float(r.shrinkage), seed=int(config.seed),
      task_names=cohort.task_names, rule=str(r.get("rule", "lcb")),
      rule_z=float(r.get("rule_z", 1.645)), auroc_guard=bool(r.get("auroc_guard", True)))
  rectified = {"val": rect.oof_probs_NxT, "test": rect.apply(probs["test"], pattern["test"])}

  reference = {}
  if config.eval.get("reference_logreg", True) and n_shards == 1:   # needs every row
    from crl_mmnar_jax.methods.direct import logreg_mean_impute
    reference["logreg_mean_impute"] = logreg_mean_impute(   # "val": for its thresholds
        cohort, rows["train"], rows["val"], {"val": held["val"], "test": rows["test"]})[0]

  # ---- final evaluation: the only place test labels are read.
  test_labels = sealed.open()
  labels = {"val": val_labels, "test": test_labels}
  names, e = cohort.task_names, config.eval
  seed = int(config.seed)
  results: dict[str, Any] = {
      "method": config.method, "seed": seed, "config_hash": h,
      "cohort": {"name": config.data.name, "n": cohort.n,
                 **{f"n_{s}": int(len(rows[s])) for s in SPLITS},
                 "n_out_of_fold": int(len(held["val"])) if training.get("cv_folds") else None,
                 "fingerprint": fingerprint(cohort.patient_id),
                 "modalities": list(cohort.modality_names), "tasks": list(names),
                 "modality_table": modalities},
      "training": training,
      "metrics": {
          "val": _with_ci(labels["val"], probs["val"], names, e.n_boot, seed),
          "val_rectified": _with_ci(labels["val"], rectified["val"], names, e.n_boot, seed),
          "test": _with_ci(labels["test"], probs["test"], names, e.n_boot, seed),
          "test_rectified": _with_ci(labels["test"], rectified["test"], names, e.n_boot, seed),
      },
      "per_pattern": {
          "val": _per_pattern(labels["val"], probs["val"], pattern["val"], names,
                              e.min_pattern_count),
          "test": _per_pattern(labels["test"], probs["test"], pattern["test"], names,
                               e.min_pattern_count),
          "test_rectified": _per_pattern(labels["test"], rectified["test"], pattern["test"],
                                         names, e.min_pattern_count),
      },
      "rectifier": rect.to_dict(),
  }
  if e.n_boot > 0:
    results["rectifier_intervals"] = rectifier_intervals(
        labels, probs, rectified, pattern, names, int(e.n_boot), seed,
        int(e.min_pattern_count))
  for ref_name, ref_probs in reference.items():
    results.setdefault("reference", {})[ref_name] = _with_ci(
        test_labels, ref_probs["test"], names, e.n_boot, seed)
  oracle = None
  if extras["true_prob"] is not None:
    oracle = {s: extras["true_prob"][held[s]] for s in ("val", "test")}
    results["oracle"] = {"test": metrics_lib.task_metrics(test_labels, oracle["test"], names)}
  from crl_mmnar_jax import provenance, report
  results.update(report.comparisons(labels, probs, rectified, reference, oracle, names,
                                    n_boot=int(e.n_boot), seed=seed))
  results["provenance"] = provenance.gather()
  results["smoke"] = bool(e.get("smoke", False))
  results["timing"] = {"train_s": t_train, "total_s": time.perf_counter() - t_start}

  if jax.process_index() == 0:
    frame = {"patient_id": np.concatenate([cohort.patient_id[held[s]] for s in ("val", "test")]),
             "split": np.repeat(["val", "test"], [len(held["val"]), len(held["test"])]),
             "pattern_id": np.concatenate([pattern["val"], pattern["test"]]).astype(np.int32)}
    for t, name in enumerate(names):
      frame[f"{name}_label"] = np.concatenate([labels["val"][:, t], labels["test"][:, t]])
      frame[f"{name}_prob"] = np.concatenate([probs["val"][:, t], probs["test"][:, t]])
      frame[f"{name}_prob_rectified"] = np.concatenate(
          [rectified["val"][:, t], rectified["test"][:, t]])
    predictions = pl.DataFrame(frame).with_columns(
        [pl.col(c).fill_nan(None) for c in frame if c.endswith("_label")])
    write_parquet_atomic(predictions, os.path.join(workdir, "predictions.parquet"))
    others = {"reference": next(iter(reference.values()), None), "oracle": oracle}
    extra = {f"{name}_prob_{kind}": np.concatenate([v["val"][:, t], v["test"][:, t]])
             for kind, v in others.items() if v is not None for t, name in enumerate(names)}
    if extra:    # the same rows as predictions.parquet (report.md's ROC and calibration)
      write_parquet_atomic(pl.DataFrame({k: frame[k] for k in ("patient_id", "split")} | extra),
                           os.path.join(workdir, "reference_predictions.parquet"))
    # Per pattern, like the predictions; results.json and report.md pool small cells.
    write_atomic(os.path.join(workdir, "rectifier.json"),
                 json.dumps(_jsonable(results["rectifier"]), indent=2))
    predictor.save_manifest(workdir, config, cohort, training)
    fault_point("outputs", path=os.path.join(workdir, "results.json"))
    shared = cells.suppress(_jsonable(results), int(e.min_pattern_count))
    write_atomic(os.path.join(workdir, "results.json"), json.dumps(shared, indent=2))
    report.write_report(workdir, shared, predictions.with_columns(
        [pl.Series(k, v) for k, v in extra.items()]), cohort.modality_names,
        plots=bool(e.plots))
    if shared["smoke"]:
      log(report.SMOKE_NOTE)
  results["timing"]["total_s"] = time.perf_counter() - t_start
  return results
