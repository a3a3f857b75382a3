"""Predictions for new patients from a finished workdir: `load(workdir).predict(source)`.

At training time `experiment.py` saves what prediction needs:

* `preprocessing.npz` (in the workdir, and in each `members/k/` of a cross-fitted
  ensemble): per modality the training statistics of `data.standardize` (mean, sd, the
  extreme-value bounds, the quantile-normal table, the PLE bin edges), the number of
  training patients and the member's seed;
* `direct_model.npz` (`save_direct_model`; a direct method has no checkpoint): logreg's
  coefficients, or gbt's backend, number of trees per task and whether not-measured
  featurized cells were NaN, with its trees as text, one `direct_model.<t>.txt` per task
  (LightGBM's model string or XGBoost's JSON; never a pickle);
* `predictor.json`: the cohort schema (modalities with their feature columns and widths,
  tasks, the data source), the method, and where the model is (the `best` checkpoint of
  the run or of every member, with its step, or `direct_model.npz`);
* `config.json`, `rectifier.json` and the checkpoints are the run's own.

`Predictor.predict` applies the saved preprocessing (never refitted on the new
patients), the model (for an ensemble, the mean of its members, as for the training
run's test patients) and the fitted rectifier: each patient's probability is shifted by
the correction of its observation pattern; a pattern that no fitting patient had gets
no correction. Input whose modalities, feature columns or tasks differ from training is
refused in one line naming them (columns in another order are reordered by name); input
that merely looks unlike the training cohort gets one warning line (`shift.compare`).
See docs/predict.md.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
import polars as pl
from absl import logging

from crl_mmnar_jax import data as data_lib
from crl_mmnar_jax import methods as methods_lib
from crl_mmnar_jax import rectifier as rectifier_lib
from crl_mmnar_jax import shift, stacking
from crl_mmnar_jax import workdir as workdir_lib
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data import quantiles
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.io import write_atomic
from crl_mmnar_jax.data.sources import tables
from crl_mmnar_jax.methods import direct
from crl_mmnar_jax.train import mesh as mesh_lib
from crl_mmnar_jax.train import step as step_lib
from crl_mmnar_jax.train.checkpoint import Checkpoints
from crl_mmnar_jax.train.loop import RunState
from crl_mmnar_jax.train.members import MemberAxis
from crl_mmnar_jax.train.optim import make_optimizer
from crl_mmnar_jax.workdir import WorkdirError

FORMAT = "crl_mmnar_jax.predictor/3"   # 3: `best` checkpoints hold the model alone;
                                        # 2: units say where their checkpoint is
MANIFEST = "predictor.json"
PREPROCESSING = "preprocessing.npz"
DIRECT_MODEL = "direct_model.npz"
DIRECT_TEXT = "direct_model.{}.txt"      # gbt: task index t -> that task's trees
ARRAYS = ("mean", "sd", "raw_zero", "low", "high", "quantiles", "bin_edges", "n_bins",
          *shift.REFERENCE)   # + what the shift check compares new patients with


# ----------------------------------------------------------------------------- saving


def save_preprocessing(folder: str, stats: Mapping[str, Mapping[str, Any]],
                       n_train: int, seed: int) -> None:
  """Writes `folder/preprocessing.npz` atomically: `data.standardize`'s arrays per
  modality (keys `<modality index>/<name>`), the number of training rows and the seed
  the model was built with (`n_train`, `seed`)."""
  arrays = {"n_train": np.int64(n_train), "seed": np.int64(seed)}
  for m, name in enumerate(stats):
    for key in ARRAYS:
      if key in stats[name]:
        arrays[f"{m}/{key}"] = np.asarray(stats[name][key])
  arrays["modalities"] = np.array(list(stats), dtype=str)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  write_atomic(os.path.join(folder, PREPROCESSING), buffer.getvalue())


def read_preprocessing(folder: str) -> tuple[dict[str, dict[str, np.ndarray]], int, int]:
  """(stats per modality, n_train, seed) written by `save_preprocessing`."""
  path = os.path.join(folder, PREPROCESSING)
  if not os.path.isfile(path):
    raise WorkdirError(f"{path}: not found; rerun the training command with this workdir "
                       f"to write it (the trained checkpoint is reused)")
  try:
    with np.load(path, allow_pickle=False) as z:
      names = [str(n) for n in z["modalities"]]
      stats = {name: {key: z[f"{m}/{key}"] for key in ARRAYS if f"{m}/{key}" in z.files}
               for m, name in enumerate(names)}
      return stats, int(z["n_train"]), int(z["seed"])
  except (OSError, ValueError, KeyError) as e:
    raise WorkdirError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def save_direct_model(folder: str, method: str, arrays: Mapping[str, np.ndarray] | None,
                      texts: Sequence[str] | None = None) -> None:
  """Writes `folder/direct_model.npz` atomically: a direct method's fitted model as
  arrays (logreg: `w_FxT`, `b_T` on `methods.direct.design_matrix`; gbt: `backend`,
  `n_trees_T`, `nan_not_measured`), after `texts`, one `direct_model.<t>.txt` per task
  (gbt: its trees, `methods.direct.gbt_predict`); nothing for None."""
  if arrays is None:
    return
  for t, text in enumerate(texts or ()):
    write_atomic(os.path.join(folder, DIRECT_TEXT.format(t)), text)
  buffer = io.BytesIO()
  np.savez(buffer, method=np.array(method), **{k: np.asarray(v) for k, v in arrays.items()})
  write_atomic(os.path.join(folder, DIRECT_MODEL), buffer.getvalue())


def _units(training: Mapping[str, Any]) -> list[dict]:
  """Where the models of a run's training record are: one unit per model (the run's, or
  each cross-fitted member's), with its folder, best step and checkpoint location."""
  if training["kind"] == "cross_fitted":
    return [{"dir": os.path.join("members", str(m["fold"])), "best_step": m["best_step"],
             "checkpoint": m.get("checkpoint")} for m in training["members"]]
  return [{"dir": ".", "best_step": training["best_step"],
           "checkpoint": training.get("checkpoint")}]


def save_manifest(workdir: str, config: ml_collections.ConfigDict, cohort: Cohort,
                  training: Mapping[str, Any]) -> None:
  """Writes `workdir/predictor.json` atomically: the cohort schema, the method, the
  preprocessing option and which best checkpoints hold the model (`training` is the
  run's training record, `experiment.fit_and_predict` or `fit_cross_fitted`)."""
  kind = str(training["kind"])
  units = [] if kind == "stack" else _units(training)
  if kind == "stack":     # each member's cross-fitted units, below WORKDIR/stack/<member>/
    for member in training["members"]:
      root = os.path.join(stacking.STACK_DIR, member)
      for u in _units(training["member_training"][member]):
        where = u["checkpoint"]
        units.append(dict(u, dir=os.path.join(root, u["dir"]), method=member, checkpoint=(
            None if where is None else dict(where, dir=os.path.join(root, where["dir"])))))
  for u in units:          # where the model is: a checkpoint, a direct model, or nowhere
    direct = os.path.isfile(os.path.join(workdir, u["dir"], DIRECT_MODEL))
    u["model"] = ("checkpoint" if u["best_step"] is not None else
                  DIRECT_MODEL if direct else None)
  names = cohort.feature_names
  manifest = {
      "format": FORMAT, "method": str(config.method), "kind": kind,
      "has_model": all(u["model"] is not None for u in units),
      "data_source": str(config.data.name),
      "preprocess": str(config.data.preprocess),
      "tasks": list(cohort.task_names),
      "modalities": [{"name": name, "dim": int(d),
                      "columns": None if not names else [str(c) for c in names[m]]}
                     for m, (name, d) in enumerate(zip(cohort.modality_names,
                                                       cohort.input_dims))],
      "units": units,
      "stack": training.get("spec"),    # method=stack: `stacking.apply_stack`'s spec
  }
  write_atomic(os.path.join(workdir, MANIFEST), json.dumps(manifest, indent=2))


# ----------------------------------------------------------------------------- preprocessing


def apply_preprocessing(cohort: Cohort, stats: Mapping[str, Mapping[str, np.ndarray]],
                        preprocess: str = "standard") -> Cohort:
  """`data.standardize`'s transform with saved training statistics (nothing is fitted on
  `cohort`): extreme or non-finite cells are not measured, then the z-score (or the
  quantile-normal map), not-measured cells 0, missing modalities exactly 0."""
  feats = []
  for m, (name, x) in enumerate(zip(cohort.modality_names, cohort.features)):
    s = stats[name]
    with np.errstate(invalid="ignore"):
      v = np.where(np.isfinite(x) & (x >= s["low"]) & (x <= s["high"]), x, np.nan)
    if preprocess == "quantile_normal":
      z = quantiles.quantile_normal(v, s["quantiles"])
    else:
      z = (v - s["mean"]) / s["sd"]
    z = np.nan_to_num(z, nan=0.0).astype(np.float32)
    feats.append(np.where(cohort.present[:, m:m + 1], z, 0.0).astype(np.float32))
  return dataclasses.replace(cohort, features=tuple(feats))


# ----------------------------------------------------------------------------- schema


def _differences(what: str, found: Sequence[str], expected: Sequence[str]) -> str | None:
  missing = [x for x in expected if x not in set(found)]
  extra = [x for x in found if x not in set(expected)]
  if not missing and not extra:
    return None
  parts = ([f"missing {missing[:10]}"] if missing else []) + \
          ([f"not in training {extra[:10]}"] if extra else [])
  return f"{what} differ from training ({', '.join(parts)})"


@dataclasses.dataclass(frozen=True)
class Schema:
  """What the model was trained on: modality names (in order), per modality its feature
  columns (None when the source names none) and width, and the task names."""

  modalities: tuple[str, ...]
  columns: tuple[tuple[str, ...] | None, ...]
  dims: tuple[int, ...]
  tasks: tuple[str, ...]

  @classmethod
  def from_manifest(cls, manifest: Mapping[str, Any]) -> "Schema":
    mods = manifest["modalities"]
    return cls(tuple(m["name"] for m in mods),
               tuple(None if m["columns"] is None else tuple(m["columns"]) for m in mods),
               tuple(int(m["dim"]) for m in mods), tuple(manifest["tasks"]))

  def conform(self, cohort: Cohort, source: str) -> Cohort:
    """`cohort` with modalities, columns and tasks in the training order; a DataError
    naming every difference (one line) otherwise."""
    problems = [p for p in (
        _differences("modalities", cohort.modality_names, self.modalities),
        _differences("tasks", cohort.task_names, self.tasks)) if p]
    if problems:
      raise DataError(f"{source}: " + "; ".join(problems))
    order = [cohort.modality_names.index(n) for n in self.modalities]
    feats, names = [], []
    for name, m, want, dim in zip(self.modalities, order, self.columns, self.dims):
      x = cohort.features[m]
      have = cohort.feature_names[m] if cohort.feature_names else None
      if want is not None and have is not None:
        diff = _differences(f"modality '{name}' feature columns", have, want)
        if diff:
          problems.append(diff)
          continue
        x = x[:, [list(have).index(c) for c in want]]
      elif x.shape[1] != dim:
        problems.append(f"modality '{name}' has {x.shape[1]} feature columns, training had "
                        f"{dim}")
        continue
      feats.append(x)
      names.append(want if want is not None else have)
    if problems:
      raise DataError(f"{source}: " + "; ".join(problems))
    tasks = [cohort.task_names.index(t) for t in self.tasks]
    return dataclasses.replace(
        cohort, features=tuple(feats), present=cohort.present[:, order],
        labels=cohort.labels[:, tasks], modality_names=self.modalities, task_names=self.tasks,
        feature_names=None if any(n is None for n in names) else tuple(names))


def tables_cohort(directory: str, schema: Schema) -> Cohort:
  """A tables-layout directory (docs/design.md, Contracts) read with the training
  modalities and tasks; extra or missing modality files or task columns are refused.
  Labels are optional: without `labels.parquet` the patients are the union of the
  modality files' ids (sorted), no label known; no task is warned about for lacking one."""
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise DataError(f"{directory}: cohort directory not found")
  labels = os.path.join(directory, tables.LABELS_FILE)
  files = sorted(f[:-len(".parquet")] for f in os.listdir(directory)
                 if f.endswith(".parquet") and f != tables.LABELS_FILE
                 and not f.startswith("."))
  reserved = (tables.ID_COLUMN, tables.SPLIT_COLUMN, tables.GROUP_COLUMN)
  columns = ([c for c in pl.read_parquet_schema(labels) if c not in reserved]
             if os.path.isfile(labels) else schema.tasks)
  problems = [p for p in (_differences("modalities (files)", files, schema.modalities),
                          _differences(f"tasks (columns of {tables.LABELS_FILE}; null where "
                                       f"unknown)", columns, schema.tasks)) if p]
  if problems:
    raise DataError(f"{directory}: " + "; ".join(problems))
  cohort, _ = tables.load_tables_with_info(directory, tasks=schema.tasks,
                                           modalities=schema.modalities, labels_needed=False)
  return cohort


# ----------------------------------------------------------------------------- the model


@dataclasses.dataclass
class Unit:
  """One trained model (the run's, or one ensemble member's) and its preprocessing."""

  folder: str
  stats: dict[str, dict[str, np.ndarray]]
  state: Any                     # the model's state, or a direct model's arrays
  predict_fn: Callable           # (state, standardised cohort, batch size) -> (N, T)
  member: str | None = None      # method=stack: the member method the unit belongs to


def _direct_unit(folder: str) -> Unit:
  """A logistic regression per task on `methods.direct.design_matrix`, or gbt's trees
  per task (`_gbt_unit`), as fitted."""
  path = os.path.join(folder, DIRECT_MODEL)
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
  if str(arrays.get("method", "")) == "gbt":
    return _gbt_unit(folder, arrays)

  def predict_fn(state, cohort, batch_size):
    x = direct.design_matrix(cohort)
    return np.stack([np.asarray(jax.nn.sigmoid(x @ jax.numpy.asarray(state["w_FxT"][:, t])
                                               + state["b_T"][t]))
                     for t in range(state["w_FxT"].shape[1])], 1)

  return Unit(folder, read_preprocessing(folder)[0], arrays, predict_fn)


def _gbt_unit(folder: str, arrays: dict[str, np.ndarray]) -> Unit:
  """gbt's trees per task, on the design matrix of training: NaN for missing modalities
  and, if training had them (`nan_not_measured`), for the not-measured cells of
  featurized summaries, found with the saved statistics."""
  stats = read_preprocessing(folder)[0]
  texts = []
  for t in range(len(arrays["n_trees_T"])):
    path = os.path.join(folder, DIRECT_TEXT.format(t))
    try:
      with open(path, encoding="utf-8") as f:
        texts.append(f.read())
    except OSError as e:
      raise WorkdirError(f"{path}: unreadable ({type(e).__name__}: {e.strerror})") from None
  backend = str(arrays["backend"])
  if importlib.util.find_spec(backend) is None:
    raise WorkdirError(f"{folder}: the gbt model was fitted with {backend}, which is not "
                       f"installed: pip install {backend}")

  def predict_fn(state, cohort, batch_size):
    unmeasured = (direct.featurized_not_measured(cohort, stats)
                  if bool(state["nan_not_measured"]) else None)
    x = direct.gbt_design_matrix(cohort, unmeasured)
    return np.stack([direct.gbt_predict(backend, text, int(n), x)
                     for text, n in zip(texts, state["n_trees_T"])], 1)

  return Unit(folder, stats, arrays, predict_fn)


def _restore_unit(config: ml_collections.ConfigDict, schema: Schema, workdir: str,
                  unit: Mapping[str, Any], mesh: Any) -> Unit:
  """Rebuilds the method's model with the saved statistics of `unit["dir"]` and
  restores its best state (hash-checked by `train.checkpoint`) from the checkpoints of
  `unit["checkpoint"]`: a folder and the member's index among the `size` members
  trained there together (`fitting.py`)."""
  folder = os.path.join(workdir, unit["dir"])
  where = unit["checkpoint"]
  stats, n_train, seed = read_preprocessing(folder)
  method = methods_lib.get_method(str(config.method))
  unit_config = config.copy_and_resolve_references()
  unit_config.seed = seed
  # A stand-in training set with the shapes the model is built from; the reference
  # patients (MUSE, M3Care) and fill values are restored from the checkpoint.
  n = max(1, min(n_train, int(config.baseline.reference_size)))
  stand_in = Cohort(
      patient_id=np.arange(n), present=np.ones((n, len(schema.modalities)), bool),
      features=tuple(np.zeros((n, d), np.float32) for d in schema.dims),
      labels=np.full((n, len(schema.tasks)), np.nan, np.float32),
      modality_names=schema.modalities, task_names=schema.tasks)
  data = methods_lib.MethodData(stand_in, np.arange(n), np.arange(n), stats)
  graphdef, state = step_lib.init_state(lambda rngs: method.build(unit_config, data, rngs),
                                        make_optimizer(unit_config, 1), seed, mesh)
  axis = MemberAxis(int(where["size"]))
  ckpt_dir = os.path.join(workdir, where["dir"])
  ckpt = Checkpoints(ckpt_dir, logging.warning)
  path = os.path.join(ckpt_dir, "checkpoints", "best")
  try:       # an earlier version's checkpoint is named as such, not as corrupt
    restored = ckpt.restore_best(axis.stack([state] * axis.k),
                                 check=lambda meta: RunState.from_json(meta, path))
  finally:
    ckpt.close()
  if restored is None:
    raise WorkdirError(f"{path}: no checkpoint")
  run = RunState.from_json(restored[1], path)
  state = axis.take(restored[0], int(where["index"]))
  best_step = run.members[int(where["index"])].best_step
  if best_step != int(unit["best_step"]):
    raise WorkdirError(f"{path}: holds step {best_step}, the run's best was step "
                       f"{unit['best_step']}; the workdir was changed after the run")
  predict_fn = step_lib.make_predict_fn(graphdef)
  return Unit(folder, stats, state, lambda state, cohort, bs: step_lib.predict(
      predict_fn, state, cohort, np.arange(cohort.n), bs, mesh))


@dataclasses.dataclass
class Predictor:
  """A finished run's model, preprocessing and rectifier (`load`)."""

  workdir: str
  config: ml_collections.ConfigDict
  schema: Schema
  preprocess: str
  units: list[Unit]
  rectifier: rectifier_lib.Rectifier
  mesh: Any
  stack: dict | None = None      # method=stack: the stacker (`stacking.apply_stack`'s spec)

  @property
  def method(self) -> str:
    return str(self.config.method)

  def cohort_of(self, source: Any) -> Cohort:
    """A `Cohort`, a tables-layout directory (str or path) or a run config whose data
    source to load (`data.load`), as an unstandardised cohort in the training schema."""
    if isinstance(source, Cohort):
      try:
        source.validate("cohort")
      except ValueError as e:
        raise DataError(str(e)) from None
      return self.schema.conform(source, "cohort")
    if isinstance(source, (str, os.PathLike)):
      return self.schema.conform(tables_cohort(os.fspath(source), self.schema),
                                 os.fspath(source))
    if isinstance(source, ml_collections.ConfigDict):
      cohort = data_lib.load(source).cohort.validate(str(source.data.name))
      return self.schema.conform(cohort, f"data source '{source.data.name}'")
    raise TypeError(f"predict takes a Cohort, a tables-layout directory or a run config, "
                    f"got {type(source).__name__}")

  def predict_probs(self, cohort: Cohort, batch_size: int | None = None) -> np.ndarray:
    """(N, T) float32 probabilities of a cohort in the training schema (`cohort_of`):
    the model's, or the mean of the ensemble members'."""
    bs = int(batch_size or self.config.train.eval_batch_size)
    if bs % self.mesh.devices.size:
      raise ValueError(f"batch size {bs} must be a multiple of the number of devices "
                       f"({self.mesh.devices.size}); pass batch_size")
    if self.stack is None:
      return self._mean_probs(self.units, cohort, bs)
    members = [self._mean_probs([u for u in self.units if u.member == m], cohort, bs)
               for m in self.stack["members"]]
    return stacking.apply_stack(self.stack, np.stack(members)).astype(np.float32)

  def _mean_probs(self, units: list[Unit], cohort: Cohort, bs: int) -> np.ndarray:
    """The mean of the units' probabilities (a model, or an ensemble's members)."""
    total = np.zeros((cohort.n, len(self.schema.tasks)), np.float64)
    for unit in units:
      standardised = apply_preprocessing(cohort, unit.stats, self.preprocess)
      total += unit.predict_fn(unit.state, standardised, bs)
    return (total / len(units)).astype(np.float32)

  def predict(self, source: Any, *, batch_size: int | None = None) -> pl.DataFrame:
    """patient_id, pattern_id and, per task, `<task>_prob` (the model) and
    `<task>_prob_rectified` (the fitted rectifier; unchanged for a pattern unseen in
    fitting), one row per patient of `source` (see `cohort_of`), in its order. Logs one
    warning line when the patients differ from the training cohort (`predict_and_check`)."""
    frame, report = self.predict_and_check(source, batch_size=batch_size)
    if report["shift"]["warning"]:
      logging.warning("predict: %s", report["shift"]["warning"])
    return frame

  def predict_and_check(self, source: Any, *, batch_size: int | None = None
                        ) -> tuple[pl.DataFrame, dict[str, Any]]:
    """`predict`'s frame (nothing logged) and its JSON-friendly report (`shift.report`):
    the shift check against the training statistics (of the first model, for an
    ensemble) and, where labels are known, per-task AUROCs."""
    cohort = self.cohort_of(source)
    probs = self.predict_probs(cohort, batch_size)
    pattern = cohort.pattern
    rectified = self.rectifier.apply(probs, pattern)
    frame: dict[str, Any] = {"patient_id": cohort.patient_id,
                             "pattern_id": pattern.astype(np.int32)}
    for t, name in enumerate(self.schema.tasks):
      frame[f"{name}_prob"] = probs[:, t]
      frame[f"{name}_prob_rectified"] = rectified[:, t].astype(np.float32)
    return pl.DataFrame(frame), shift.report(cohort, probs, rectified, self.units[0].stats,
                                             self.schema.columns)


def _read_json(path: str, what: str) -> Any:
  if not os.path.isfile(path):
    raise WorkdirError(f"{path}: not found ({what})")
  return workdir_lib.read_json(path)


def load(workdir: str | os.PathLike, *, mesh: Any = None) -> Predictor:
  """The `Predictor` of a finished run in `workdir` (`experiments.run`); a WorkdirError
  (one line) for a workdir without a finished run, without the saved prediction files,
  or without a saved model (a gbt run fitted before its trees were kept)."""
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    raise WorkdirError(f"{workdir}: workdir not found")
  if not os.path.isfile(os.path.join(workdir, "results.json")):
    raise WorkdirError(f"{workdir}: no finished run (no results.json); finish its training "
                       f"with python -m experiments.run first")
  manifest = _read_json(os.path.join(workdir, MANIFEST),
                        "the run predates saved predictors; rerun the same "
                        "experiments.run command with this workdir, which reuses the "
                        "trained checkpoint and writes it")
  if manifest.get("format") != FORMAT:
    raise WorkdirError(f"{os.path.join(workdir, MANIFEST)}: format "
                       f"{manifest.get('format')!r}, expected {FORMAT!r} (written by an "
                       f"earlier version of crl_mmnar_jax); train again in a new --workdir")
  if not manifest["has_model"]:
    raise WorkdirError(f"{workdir}: method {manifest['method']!r} kept no fitted model in "
                       f"the workdir (a run before its model was saved); rerun the same "
                       f"experiments.run command with this workdir, which refits it")
  config_dict = _read_json(os.path.join(workdir, "config.json"), "the run's config")
  config = ml_collections.ConfigDict(
      {k: v for k, v in config_dict.items() if not k.startswith("_")})
  rect = rectifier_lib.Rectifier.from_dict(
      _read_json(os.path.join(workdir, "rectifier.json"), "the fitted rectifier"))
  schema = Schema.from_manifest(manifest)
  if tuple(rect.task_names) != schema.tasks:
    raise WorkdirError(f"{workdir}: rectifier.json has tasks {list(rect.task_names)}, "
                       f"{MANIFEST} {list(schema.tasks)}")
  if mesh is None:
    mesh = mesh_lib.make_mesh()
  units = []
  for u in manifest["units"]:
    unit_config = config
    if u.get("method"):                  # a stack's member
      unit_config = config.copy_and_resolve_references()
      unit_config.method = u["method"]
    unit = (_restore_unit(unit_config, schema, workdir, u, mesh) if u["model"] == "checkpoint"
            else _direct_unit(os.path.join(workdir, u["dir"])))
    units.append(dataclasses.replace(unit, member=u.get("method")))
  return Predictor(workdir, config, schema, str(manifest["preprocess"]), units, rect, mesh,
                   manifest.get("stack"))
