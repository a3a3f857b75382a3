"""Predictions for new patients from a trained workdir (`crl_mmnar_jax.load`,
`experiments.predict`): the same patients reproduce the training run's predictions, the
saved preprocessing replays `data.standardize`, and mismatched input is refused."""

import dataclasses
import importlib.util
import json
import logging
import os
import shutil

import numpy as np
import polars as pl
import pytest

import crl_mmnar_jax
from crl_mmnar_jax import data as data_lib
from crl_mmnar_jax import predictor as predictor_lib
from crl_mmnar_jax import shift as shift_lib
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.featurize import STATS
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.data.sources.tables import write_tables
from crl_mmnar_jax.data.standardize import standardize
from crl_mmnar_jax.experiment import train_and_evaluate
from crl_mmnar_jax.methods import direct
from crl_mmnar_jax.workdir import WorkdirError
from experiments import predict as predict_script
from experiments.configs import synthetic

N = 240
ARGS = ["--config=synthetic:tiny", f"--config.data.n={N}"]
HAS_GBT = any(importlib.util.find_spec(p) for p in ("lightgbm", "xgboost"))


def _config(method="crl_mmnar", **train):
  c = synthetic.get_config("tiny")
  c.method = method
  c.data.n = N
  c.model.dim, c.model.proj_dim = 16, 8
  c.train.epochs = 1
  c.eval.n_boot = 0
  c.eval.plots = False
  c.rectifier.rule = "min"       # corrections are then likely, so the rectifier is exercised
  c.rectifier.min_count = 3
  for k, v in train.items():
    c.train[k] = v
  return c


def _train(tmp_path_factory, name, config):
  workdir = str(tmp_path_factory.mktemp(name))
  train_and_evaluate(config, workdir, log=lambda s: None)
  return workdir, config


@pytest.fixture(scope="module")
def single(tmp_path_factory):
  return _train(tmp_path_factory, "single", _config())


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
  """M3Care (its model holds reference training patients, rebuilt from a stand-in) on
  quantile-normal inputs with the piecewise-linear embedding (bin edges saved)."""
  config = _config("m3care", cv_folds=2)
  config.data.preprocess = "quantile_normal"
  config.model.num_embedding, config.model.num_bins, config.model.num_embedding_dim = \
      "ple", 4, 4
  return _train(tmp_path_factory, "ensemble", config)


@pytest.fixture(scope="module")
def logreg(tmp_path_factory):
  return _train(tmp_path_factory, "logreg", _config("logreg"))


@pytest.fixture(scope="module")
def loaded(single):
  return crl_mmnar_jax.load(single[0])


def _naive_rectified(workdir, probs_NxT, pattern_N, tasks):
  """p + λ_t · τ[pattern, t], clipped, read from rectifier.json row by row (0 for a
  pattern absent from its table)."""
  d = json.load(open(os.path.join(workdir, "rectifier.json")))
  tau = {(r["pattern"], r["task"]): r["tau"] for r in d["table"]}
  out = np.zeros_like(probs_NxT, dtype=np.float64)
  for i in range(len(pattern_N)):
    for t, name in enumerate(tasks):
      shift = d["lambda"][name] * tau.get((int(pattern_N[i]), name), 0.0)
      out[i, t] = min(max(float(probs_NxT[i, t]) + shift, 0.0), 1.0)
  return out


def _compare(workdir, frame, tasks, rectified_splits=("test",)):
  """`frame` (predict's output) against the training run's predictions.parquet."""
  ref = pl.read_parquet(os.path.join(workdir, "predictions.parquet"))
  j = ref.join(frame, on="patient_id", suffix="_new", how="inner")
  assert j.height == ref.height
  assert (j["pattern_id"] == j["pattern_id_new"]).all()
  rect = j.filter(pl.col("split").is_in(list(rectified_splits)))
  assert rect.height > 0
  for t in tasks:
    np.testing.assert_allclose(rect[f"{t}_prob_new"], rect[f"{t}_prob"], atol=1e-6)
    np.testing.assert_allclose(rect[f"{t}_prob_rectified_new"], rect[f"{t}_prob_rectified"],
                               atol=1e-6)
  return j


def test_same_patients_reproduce_the_training_predictions(single, loaded):
  workdir, config = single
  cohort = data_lib.load(config).cohort
  frame = loaded.predict(cohort)
  tasks = loaded.schema.tasks
  assert frame.columns == ["patient_id", "pattern_id"] + [
      f"{t}_{kind}" for t in tasks for kind in ("prob", "prob_rectified")]
  assert frame["patient_id"].to_list() == cohort.patient_id.tolist()
  np.testing.assert_array_equal(frame["pattern_id"], cohort.pattern)
  j = _compare(workdir, frame, tasks)
  # Validation rows too: the same model (their rectified values in predictions.parquet
  # are cross-fitted, so those are checked against the rectifier's table instead).
  for t in tasks:
    np.testing.assert_allclose(j[f"{t}_prob_new"], j[f"{t}_prob"], atol=1e-6)
  probs = np.stack([frame[f"{t}_prob"].to_numpy() for t in tasks], 1)
  rectified = np.stack([frame[f"{t}_prob_rectified"].to_numpy() for t in tasks], 1)
  naive = _naive_rectified(workdir, probs, frame["pattern_id"].to_numpy(), tasks)
  np.testing.assert_allclose(rectified, naive, atol=1e-6)
  assert (np.abs(rectified - probs) > 1e-6).any(), "the rectifier changed nothing"


def test_the_command_line_writes_the_same_predictions(single, loaded, tmp_path):
  workdir, _ = single
  out = tmp_path / "p.parquet"
  assert predict_script.SCRIPT(["predict", f"--workdir={workdir}", *ARGS,
                                f"--out={out}"]) == 0
  frame = pl.read_parquet(out)
  _compare(workdir, frame, loaded.schema.tasks)
  # The report beside it, and no temporary left.
  assert sorted(os.listdir(tmp_path)) == ["p.meta.json", "p.parquet"]


def test_a_fresh_cohort_gets_finite_probabilities(single, loaded, tmp_path):
  workdir, config = single
  fresh = config.copy_and_resolve_references()
  fresh.data.seed, fresh.data.n = 11, 150
  frame = loaded.predict(fresh)
  cohort = data_lib.load(fresh).cohort
  assert frame.height == 150
  assert frame["patient_id"].to_list() == cohort.patient_id.tolist()
  probs = frame.select(pl.col("^.*_prob.*$")).to_numpy()
  assert probs.shape == (150, 2 * len(loaded.schema.tasks))
  assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
  # The same patients through the command line, a data seed override.
  out = tmp_path / "fresh.parquet"
  predict_script.SCRIPT(["predict", f"--workdir={workdir}", "--config=synthetic:tiny",
                         "--config.data.n=150", "--config.data.seed=11", f"--out={out}"])
  np.testing.assert_allclose(pl.read_parquet(out).select(pl.col("^.*_prob.*$")).to_numpy(),
                             probs, atol=1e-6)


def test_a_cross_fitted_ensemble_reproduces_its_test_predictions(ensemble):
  workdir, config = ensemble
  p = crl_mmnar_jax.load(workdir)
  assert len(p.units) == 2
  # Members have their own standardisation: their statistics differ.
  assert not np.array_equal(p.units[0].stats["m0"]["mean"], p.units[1].stats["m0"]["mean"])
  assert p.units[0].stats["m1"]["bin_edges"].shape[1] == 5
  _compare(workdir, p.predict(data_lib.load(config).cohort), p.schema.tasks)


def test_logistic_regression_is_saved_and_reproduces_its_predictions(logreg):
  workdir, config = logreg
  p = crl_mmnar_jax.load(workdir)
  frame = p.predict(data_lib.load(config).cohort)
  j = _compare(workdir, frame, p.schema.tasks)
  for t in p.schema.tasks:
    np.testing.assert_allclose(j[f"{t}_prob_new"], j[f"{t}_prob"], atol=1e-6)
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert "arrays" not in results["training"]["fitted"]       # not in results.json


@pytest.fixture(scope="module")
def gbt(tmp_path_factory):
  """gbt on a tables cohort whose m0 holds `data.featurize`-style summaries of a
  variable `v` (count 0, its other statistics kept, in a third of the rows), so that the
  trees saw NaN in those cells (`direct.featurized_not_measured`)."""
  if not HAS_GBT:
    pytest.skip("neither lightgbm nor xgboost is installed")
  cohort = make_synthetic(400, n_modalities=3, n_tasks=2, seed=5).cohort
  rng = np.random.default_rng(0)
  x = cohort.features[0].copy()
  count = STATS.index("count")
  x[:, count] = np.where(rng.random(cohort.n) < 0.35, 0.0, 3.0)
  names = list(cohort.feature_names)
  names[0] = tuple(f"v_{s}" for s in STATS) + names[0][len(STATS):]
  cohort = dataclasses.replace(cohort, features=(x,) + cohort.features[1:],
                               feature_names=tuple(names))
  directory = str(tmp_path_factory.mktemp("gbt_data"))
  write_tables(cohort, directory)
  config = _config("gbt")
  config.data.name, config.data.dir, config.data.tasks = "tables", directory, ""
  config.baseline.gbt_n_estimators = 60
  return _train(tmp_path_factory, "gbt", config)


def test_gradient_boosted_trees_are_saved_and_reproduce_their_predictions(gbt):
  workdir, config = gbt
  p = crl_mmnar_jax.load(workdir)
  tasks = p.schema.tasks
  backend = direct.gbt_backend()
  for t in range(len(tasks)):                   # the trees as text, one file per task
    text = open(os.path.join(workdir, f"direct_model.{t}.txt")).read()
    assert text.startswith("tree\n" if backend == "lightgbm" else "{")
  assert str(p.units[0].state["backend"]) == backend
  assert bool(p.units[0].state["nan_not_measured"])
  cohort = data_lib.load(config).cohort
  frame = p.predict(cohort)
  j = _compare(workdir, frame, tasks)           # test: raw and rectified
  assert set(j["split"].to_list()) >= {"val", "test"}
  for t in tasks:                               # validation and test: the same trees
    np.testing.assert_allclose(j[f"{t}_prob_new"], j[f"{t}_prob"], atol=1e-6)
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert set(results["training"]["fitted"]) == {"backend", "n_trees"}
  # The not-measured cells matter: the trees fed the kept statistics instead of NaN
  # predict otherwise, so the comparison above checks that they are rebuilt.
  std = predictor_lib.apply_preprocessing(cohort, p.units[0].stats, p.preprocess)
  assert sum(int(m.sum()) for m in direct.featurized_not_measured(std, p.units[0].stats)) > 0
  p.units[0].state["nan_not_measured"] = np.array(False)
  plain = p.predict_probs(p.cohort_of(cohort))
  want = np.stack([frame[f"{t}_prob"].to_numpy() for t in tasks], 1)
  assert np.abs(plain - want).max() > 1e-3


def test_a_tables_directory_round_trips(single, loaded, tmp_path):
  workdir, config = single
  cohort = data_lib.load(config).cohort
  directory = tmp_path / "cohort"
  write_tables(cohort, directory)
  # Columns in another order are matched by name.
  path = directory / "m1.parquet"
  df = pl.read_parquet(path)
  df.select(["patient_id"] + df.columns[1:][::-1]).write_parquet(path)
  from_dir = loaded.predict(str(directory))
  assert from_dir.equals(loaded.predict(cohort))
  out = tmp_path / "dir.parquet"
  predict_script.SCRIPT(["predict", f"--workdir={workdir}", f"--data={directory}",
                         f"--out={out}"])
  assert pl.read_parquet(out).equals(from_dir)
  # A missing feature column is named.
  df.drop(df.columns[1]).write_parquet(path)
  with pytest.raises(DataError, match=f"modality 'm1' feature columns differ from training "
                                      rf"\(missing \['{df.columns[1]}'\]\)"):
    loaded.predict(str(directory))
  os.remove(path)
  with pytest.raises(SystemExit, match=r"^error: .*modalities \(files\) differ from "
                                       r"training \(missing \['m1'\]\)$"):
    predict_script.SCRIPT(["predict", f"--workdir={workdir}", f"--data={directory}",
                           f"--out={tmp_path / 'x.parquet'}"])
  assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "x.meta.json").exists()


def _drop_modality(cohort: Cohort, m: int) -> Cohort:
  keep = [j for j in range(cohort.n_modalities) if j != m]
  present = cohort.present[:, keep]
  rows = present.any(1)
  return dataclasses.replace(
      cohort, features=tuple(cohort.features[j] for j in keep), present=present,
      modality_names=tuple(cohort.modality_names[j] for j in keep),
      feature_names=tuple(cohort.feature_names[j] for j in keep)).subset(rows)


def test_mismatched_input_is_refused_in_one_line(single, loaded):
  cohort = data_lib.load(single[1]).cohort
  with pytest.raises(DataError) as e:
    loaded.predict(_drop_modality(cohort, 3))
  assert str(e.value) == "cohort: modalities differ from training (missing ['m3'])"
  renamed = dataclasses.replace(cohort, task_names=("task0", "task1", "death"))
  with pytest.raises(DataError, match=r"tasks differ from training \(missing \['task2'\], "
                                      r"not in training \['death'\]\)"):
    loaded.predict(renamed)
  names = list(cohort.feature_names)
  names[0] = names[0][:-1] + ("age",)
  with pytest.raises(DataError, match=r"modality 'm0' feature columns differ"):
    loaded.predict(dataclasses.replace(cohort, feature_names=tuple(names)))
  # Modalities in another order are put back in the training order (pattern ids too).
  order = [2, 0, 3, 1]
  shuffled = dataclasses.replace(
      cohort, features=tuple(cohort.features[j] for j in order),
      present=cohort.present[:, order],
      feature_names=tuple(cohort.feature_names[j] for j in order),
      modality_names=tuple(cohort.modality_names[j] for j in order))
  assert loaded.predict(shuffled.subset(np.arange(20))).equals(
      loaded.predict(cohort.subset(np.arange(20))))


def test_a_pattern_unseen_in_fitting_gets_no_correction(single, loaded):
  cohort = data_lib.load(single[1]).cohort.subset(np.arange(30))
  seen = set(loaded.rectifier.patterns.tolist())
  present = cohort.present.copy()
  present[:, 0] = False                   # m0 is always observed in the synthetic cohort
  present[:, 1] = True
  features = list(cohort.features)
  features[0] = np.zeros_like(features[0])
  features[1] = np.where(cohort.present[:, 1:2], features[1], 0.5).astype(np.float32)
  unseen = dataclasses.replace(cohort, present=present, features=tuple(features))
  assert not set(unseen.pattern.tolist()) & seen
  frame = loaded.predict(unseen)
  for t in loaded.schema.tasks:
    assert frame[f"{t}_prob_rectified"].equals(frame[f"{t}_prob"].alias(f"{t}_prob_rectified"))
  assert (loaded.rectifier.lambda_T * np.abs(loaded.rectifier.tau_PxT)).max() > 0


def test_an_unfinished_or_foreign_workdir_is_refused(single, tmp_path):
  workdir, _ = single
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  os.remove(copy / "results.json")
  with pytest.raises(WorkdirError, match=r"no finished run \(no results.json\)"):
    crl_mmnar_jax.load(copy)
  with pytest.raises(SystemExit, match=r"^error: .*no finished run"):
    predict_script.SCRIPT(["predict", f"--workdir={copy}", *ARGS,
                           f"--out={tmp_path / 'x.parquet'}"])
  with pytest.raises(WorkdirError, match="workdir not found"):
    crl_mmnar_jax.load(tmp_path / "nope")
  # A finished gbt run from before its trees were kept (no direct_model.npz).
  shutil.copy(os.path.join(workdir, "results.json"), copy / "results.json")
  config = _config("gbt")
  cohort = data_lib.load(config).cohort
  predictor_lib.save_manifest(str(copy), config, cohort, {"kind": "direct",
                                                          "best_step": None})
  with pytest.raises(WorkdirError, match="method 'gbt' kept no fitted model"):
    crl_mmnar_jax.load(copy)


@pytest.mark.parametrize("preprocess", ["standard", "quantile_normal"])
def test_saved_preprocessing_replays_standardize(preprocess, tmp_path):
  """The transform rebuilt from the saved file equals `standardize` on every row, with
  an extreme cell and not-measured cells."""
  cohort = make_synthetic(200, n_modalities=3, n_tasks=1, seed=3).cohort
  x = cohort.features[1].copy()
  observed = np.flatnonzero(cohort.present[:, 1])
  x[observed[0], 0] = 1e30            # extreme: not measured
  x[observed[1], 1] = np.nan          # not measured
  cohort = dataclasses.replace(cohort, features=(cohort.features[0], x,
                                                 cohort.features[2]))
  train = np.arange(0, 200, 2)
  expected, stats = standardize(cohort, train, preprocess=preprocess, num_bins=4)
  predictor_lib.save_preprocessing(str(tmp_path), stats, len(train), 7)
  saved, n_train, seed = predictor_lib.read_preprocessing(str(tmp_path))
  assert (n_train, seed) == (100, 7) and list(saved) == list(cohort.modality_names)
  np.testing.assert_array_equal(saved["m1"]["bin_edges"], stats["m1"]["bin_edges"])
  got = predictor_lib.apply_preprocessing(cohort, saved, preprocess)
  for a, b in zip(got.features, expected.features):
    np.testing.assert_array_equal(a, b)
  # New rows are transformed with the training statistics, never refitted.
  half = predictor_lib.apply_preprocessing(cohort.subset(np.arange(1, 200, 2)), saved,
                                           preprocess)
  for a, b in zip(half.features, expected.features):
    np.testing.assert_array_equal(a, b[1::2])


# ----------------------------------------------------------------------------- shift check


def _cli(workdir, out, *args):
  """`experiments.predict` in this process; (its meta.json, the warning lines logged)."""
  assert predict_script.SCRIPT(["predict", f"--workdir={workdir}", *args,
                                f"--out={out}"]) == 0
  meta = json.loads(open(predict_script.meta_path(str(out))).read(),
                    parse_constant=lambda c: pytest.fail(f"{c} in meta.json"))
  return meta


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def loaded_dims(workdir):
  return [m["dim"] for m in json.load(open(os.path.join(workdir, "predictor.json")))[
      "modalities"]]


FRESH = ["--config=synthetic:tiny", "--config.data.n=150", "--config.data.seed=11"]


def test_new_patients_of_the_training_world_raise_no_shift_warning(single, tmp_path, caplog):
  """Other patients (seed 11) of the training run's world (world 0: data.seed 0 with
  world_seed -1): nothing flagged, at the tests' sizes (168 training patients)."""
  workdir, _ = single
  with caplog.at_level(logging.WARNING):
    meta = _cli(workdir, tmp_path / "same.parquet", *FRESH, "--config.data.world_seed=0")
  assert _warnings(caplog) == []
  shift = meta["shift"]
  assert shift["checked"] and shift["warning"] is None
  assert shift["thresholds"]["mean_shift_sd"] == shift_lib.MEAN_SHIFT_SD
  assert len(shift["features"]) == sum(loaded_dims(workdir))
  assert not any(r["shifted"] or r["outside_range"] for r in shift["features"])
  assert not any(r["rate_differs"] or r["structure_differs"] for r in shift["modalities"])
  assert meta["n_patients"] == 150 and set(meta["metrics"]) == {"task0", "task1", "task2"}
  assert all(m["n_labelled"] == 150 for m in meta["metrics"].values())


def test_patients_of_another_world_raise_one_shift_warning(single, tmp_path, caplog):
  """The same sizes from another synthetic world (data.seed 7, its own world): the
  feature means, ranges and observed rates barely move, the correlation structure does."""
  workdir, _ = single
  out = tmp_path / "other.parquet"
  with caplog.at_level(logging.WARNING):
    meta = _cli(workdir, out, "--config=synthetic:tiny", "--config.data.n=150",
                "--config.data.seed=7")
  [line] = _warnings(caplog)
  assert line.startswith("predict: new patients differ from the training cohort: ")
  assert "co-vary differently" in line and line.endswith(f"see {tmp_path / 'other.meta.json'}")
  assert "\n" not in line and line == f"predict: {meta['shift']['warning']}; see " \
                                       f"{tmp_path / 'other.meta.json'}"
  rows = {r["modality"]: r for r in meta["shift"]["modalities"]}
  for m in ("m1", "m2", "m3"):        # the structure check is what sees another world
    assert rows[m]["structure_differs"], rows[m]
    assert rows[m]["explained_train"] - rows[m]["explained_new"] > shift_lib.STRUCTURE_DROP


def _train_frames(workdir, config, directory):
  """The training run's patients as tables, and the ids of its training patients."""
  write_tables(data_lib.load(config).cohort, directory)
  held = set(pl.read_parquet(os.path.join(workdir, "predictions.parquet"))["patient_id"])
  labels = pl.read_parquet(os.path.join(directory, "labels.parquet"))
  return [i for i in labels["patient_id"].to_list() if i not in held], labels.height


def test_a_shifted_feature_of_a_tables_cohort_is_named(single, tmp_path, caplog):
  """A fresh cohort of the training world as tables: no warning; its feature m1_3 moved
  by 3 training SD: named in the warning, and the numbers written to meta.json equal
  the same statistics computed with numpy from the raw frames."""
  workdir, config = single
  train_ids, n_all = _train_frames(workdir, config, tmp_path / "train")
  fresh = config.copy_and_resolve_references()
  fresh.data.n, fresh.data.seed, fresh.data.world_seed = 150, 11, 0
  directory = tmp_path / "new"
  write_tables(data_lib.load(fresh).cohort, directory)
  with caplog.at_level(logging.WARNING):
    _cli(workdir, tmp_path / "a.parquet", f"--data={directory}")
  assert _warnings(caplog) == []

  train = pl.read_parquet(tmp_path / "train" / "m1.parquet").filter(
      pl.col("patient_id").is_in(train_ids))
  t = train["m1_3"].cast(pl.Float32).to_numpy().astype(np.float64)
  mean, sd, low, high = t.mean(), t.std(), t.min(), t.max()
  path = directory / "m1.parquet"
  new = pl.read_parquet(path)
  new = new.with_columns(pl.col("m1_3") + 3 * sd)
  new.write_parquet(path)
  v = new["m1_3"].cast(pl.Float32).to_numpy().astype(np.float64)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    meta = _cli(workdir, tmp_path / "b.parquet", f"--data={directory}")
  [line] = _warnings(caplog)
  assert "features shift by more than 0.5 train SD (largest: m1/m1_3 " in line
  row = next(r for r in meta["shift"]["features"] if r["feature"] == "m1/m1_3")
  assert row["shifted"] and row["outside_range"]
  np.testing.assert_allclose([row["mean_train"], row["sd_train"], row["min_train"],
                              row["max_train"], row["mean_new"]],
                             [mean, sd, low, high, v.mean()], rtol=1e-5)
  np.testing.assert_allclose(row["mean_shift_sd"], abs(v.mean() - mean) / sd, rtol=1e-4)
  np.testing.assert_allclose(row["outside_range_share"], np.mean((v < low) | (v > high)))
  assert (row["n_new"], row["n_train"]) == (len(v), len(t))
  assert row["mean_shift_sd"] > 2.5
  flagged = [r["feature"] for r in meta["shift"]["features"] if r["shifted"]]
  assert flagged == ["m1/m1_3"]
  m1 = next(r for r in meta["shift"]["modalities"] if r["modality"] == "m1")
  assert m1["observed_rate_new"] == pytest.approx(new.height / 150)
  assert m1["observed_rate_train"] == pytest.approx(train.height / len(train_ids))
  assert len(train_ids) < n_all


def test_predicting_without_labels(single, loaded, tmp_path, caplog, capsys):
  """A folder without labels.parquet: a row for every patient of the modality files
  (their union, sorted), the same probabilities as with labels, no label warning and no
  metrics; labels.parquet with only null task columns warns about nothing either."""
  workdir, config = single
  fresh = config.copy_and_resolve_references()
  fresh.data.n, fresh.data.seed, fresh.data.world_seed = 150, 11, 0
  cohort = data_lib.load(fresh).cohort
  directory = tmp_path / "new"
  write_tables(cohort, directory)
  labelled = loaded.predict(str(directory))
  m0 = pl.read_parquet(directory / "m0.parquet")
  only_m0 = ~cohort.present[:, 1:].any(1)
  moved = cohort.patient_id[~only_m0][:8].tolist()     # in m1..m3 only from now on
  keep = m0.filter(~pl.col("patient_id").is_in(moved))
  keep.write_parquet(directory / "m0.parquet")
  os.remove(directory / "labels.parquet")
  union = sorted(set().union(*(pl.read_parquet(directory / f"m{m}.parquet")["patient_id"]
                               for m in range(4))))
  assert len(union) == 150 and keep.height == 142
  with caplog.at_level(logging.WARNING):
    meta = _cli(workdir, tmp_path / "p.parquet", f"--data={directory}")
  frame = pl.read_parquet(tmp_path / "p.parquet")
  assert frame["patient_id"].to_list() == union
  assert _warnings(caplog) == [] and "label" not in capsys.readouterr().err
  assert meta["metrics"] is None and meta["n_patients"] == 150
  j = frame.join(labelled, on="patient_id", suffix="_l")
  same = j.filter(~pl.col("patient_id").is_in(moved))
  for t in loaded.schema.tasks:
    np.testing.assert_allclose(same[f"{t}_prob"], same[f"{t}_prob_l"], atol=1e-6)
  # All-null task columns (the old way) warn about nothing either.
  pl.DataFrame({"patient_id": union, **{t: [None] * 150 for t in loaded.schema.tasks}},
               schema_overrides={t: pl.Float64 for t in loaded.schema.tasks}).write_parquet(
      directory / "labels.parquet")
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    assert loaded.predict(str(directory)).equals(frame)
  assert _warnings(caplog) == []


def test_a_workdir_from_before_the_shift_check_predicts_and_says_so(single, tmp_path,
                                                                    caplog):
  workdir, _ = single
  copy = tmp_path / "old"
  shutil.copytree(workdir, copy)
  stats, n_train, seed = predictor_lib.read_preprocessing(str(copy))
  old = {m: {k: v for k, v in s.items() if k not in shift_lib.REFERENCE}
         for m, s in stats.items()}
  predictor_lib.save_preprocessing(str(copy), old, n_train, seed)
  with caplog.at_level(logging.WARNING):
    meta = _cli(copy, tmp_path / "p.parquet", *FRESH, "--config.data.world_seed=0")
  [line] = _warnings(caplog)
  assert line.startswith("predict: no shift check: the workdir's preprocessing.npz "
                         "predates the shift check; rerun")
  assert meta["shift"]["checked"] is False
  assert pl.read_parquet(tmp_path / "p.parquet").height == 150


def _documented_predict_command():
  """docs/predict.md's example for new synthetic patients, as its argument list."""
  text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "predict.md")).read()
  block = text[text.index("python -m experiments.predict --workdir=/tmp/crl_tiny"):]
  command = block[:block.index("\n```")].replace("\\\n", " ")
  return command.split()[3:]                       # after "python -m experiments.predict"


def test_the_documented_example_predicts_as_well_as_the_run_tested(tmp_path_factory, caplog):
  """docs/predict.md's command, as written, against a run of the config it
  names (synthetic:tiny, trained long enough to learn: 3,000 patients, 4 epochs): the new
  patients' AUROCs are those of the run's own test patients within sampling noise, and
  no shift warning. Without `world_seed` the same command draws another world."""
  args = _documented_predict_command()
  assert args[0] == "--workdir=/tmp/crl_tiny" and args[-1] == "--out=/tmp/fresh.parquet"
  config = synthetic.get_config("tiny")
  config.data.n, config.train.epochs, config.eval.plots = 3000, 4, False
  workdir = str(tmp_path_factory.mktemp("documented"))
  results = train_and_evaluate(config, workdir, log=lambda s: None)
  own = results["metrics"]["test"]["mean"]["auroc"]
  assert own > 0.6                                  # it learned something (0.67 here)
  out = tmp_path_factory.mktemp("out") / "fresh.parquet"
  overrides = [a for a in args[1:-1] if a.startswith("--config.")]
  assert "--config.data.world_seed=0" in overrides
  with caplog.at_level(logging.WARNING):
    meta = _cli(workdir, out, *args[1:-1], f"--config.data.n={3000}")
  assert _warnings(caplog) == [] and meta["shift"]["warning"] is None
  new = np.mean([m["auroc"] for m in meta["metrics"].values()])
  assert abs(new - own) < 0.05, (new, own)          # 450 test vs 3,000 new patients
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    other = _cli(workdir, tmp_path_factory.mktemp("o") / "other.parquet",
                 *[a for a in args[1:-1] if "world_seed" not in a], "--config.data.n=3000")
  assert other["shift"]["warning"] is not None and len(_warnings(caplog)) == 1
