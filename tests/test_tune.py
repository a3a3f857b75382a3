"""Tests for `experiments.tune`: the objective reads validation labels only, resume,
reruns of interrupted trials, pruning, the spaces, the best config, one-line errors."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import polars as pl
import pytest
from absl import flags
from sklearn.metrics import roc_auc_score

from crl_mmnar_jax.config_check import check_config
from experiments import run, tune
from experiments.configs import physionet2012, resolve_config_argv, synthetic, tables, yaib

optuna = pytest.importorskip("optuna")
pytest.importorskip("lightgbm")

CONFIGS = {"synthetic": synthetic, "physionet2012": physionet2012, "yaib": yaib,
           "tables": tables}


def _cohort(directory, flip_test: bool = False, n: int = 240) -> str:
  """A tables-layout cohort with an explicit split; `flip_test` flips every test label."""
  rng = np.random.default_rng(0)
  x_NxF, z_NxG = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
  observed = rng.random(n) < 0.6
  y = (x_NxF[:, 0] + 0.5 * z_NxG[:, 0] * observed + rng.normal(size=n) > 0.3).astype(int)
  split = np.array(["train"] * (n * 6 // 10) + ["val"] * (n * 2 // 10)
                   + ["test"] * (n - n * 6 // 10 - n * 2 // 10))
  if flip_test:
    y = np.where(split == "test", 1 - y, y)
  ids = [f"p{i:04d}" for i in range(n)]
  os.makedirs(directory, exist_ok=True)
  pl.DataFrame({"patient_id": ids, "death": y, "split": split}).write_parquet(
      os.path.join(directory, "labels.parquet"))
  pl.DataFrame({"patient_id": ids, "a": x_NxF[:, 0], "b": x_NxF[:, 1],
                "c": x_NxF[:, 2]}).write_parquet(os.path.join(directory, "vitals.parquet"))
  pl.DataFrame({"patient_id": [i for i, o in zip(ids, observed) if o],
                "u": z_NxG[observed, 0], "v": z_NxG[observed, 1]}).write_parquet(
      os.path.join(directory, "labs.parquet"))
  return str(directory)


def _argv(cohort: str, workdir: str, trials: int, *extra: str) -> list[str]:
  return ["tune", "--config=tables:tiny", f"--config.data.dir={cohort}",
          "--config.method=gbt", f"--trials={trials}", f"--workdir={workdir}", *extra]


def _rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "trials.csv")) as f:
    return [{k: v for k, v in r.items() if k != "duration_s"} for r in csv.DictReader(f)]


def _test_auroc(workdir: str, trial: str) -> float:
  with open(os.path.join(workdir, "trials", trial, "results.json")) as f:
    return json.load(f)["metrics"]["test"]["death"]["auroc"]


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
  """gbt: 2 trials then resumed to 3 on the cohort; 3 at once on its test-flipped twin."""
  root = tmp_path_factory.mktemp("tune")
  plain, flipped = _cohort(root / "plain"), _cohort(root / "flipped", flip_test=True)
  a, b = str(root / "a"), str(root / "b")
  tune.SCRIPT(_argv(plain, a, 2))
  first_two = _rows(a)
  tune.SCRIPT(_argv(plain, a, 3))
  tune.SCRIPT(_argv(flipped, b, 3))
  return {"plain": plain, "a": a, "b": b, "first_two": first_two}


def test_flipping_every_test_label_changes_no_trial(searches):
  """Search a (resumed after 2 trials) and search b (flipped test labels, in one go)
  agree trial by trial: the search reads no test label, and resuming changes nothing."""
  a, b = _rows(searches["a"]), _rows(searches["b"])
  assert len(a) == 3 and [r["state"] for r in a] == ["COMPLETE"] * 3
  assert a == b        # parameters and objective values, trial by trial
  assert len({tuple(v for k, v in r.items() if k.startswith("params.")) for r in a}) == 3
  # The flip reached the runs: same test predictions, so test AUROC becomes 1 - AUROC.
  for trial in ("000", "001"):
    assert _test_auroc(searches["b"], trial) == pytest.approx(
        1.0 - _test_auroc(searches["a"], trial), abs=1e-9)


def test_resume_continues_to_the_total_and_keeps_earlier_trials(searches):
  rows = _rows(searches["a"])
  assert searches["first_two"] == rows[:2] and len(rows) == 3


def test_objective_is_the_validation_auroc_of_the_trials_predictions(searches):
  for row in _rows(searches["a"]):
    pred = pl.read_parquet(os.path.join(searches["a"], row["workdir"], "predictions.parquet"))
    val = pred.filter(pl.col("split") == "val")
    expected = roc_auc_score(val["death_label"].to_numpy(), val["death_prob"].to_numpy())
    assert float(row["val_mean_auroc"]) == pytest.approx(expected, abs=1e-9)


def test_best_config_loads_through_the_runner_and_is_the_best_trial(searches):
  from crl_mmnar_jax.workdir import training_hash
  a = searches["a"]
  rows = _rows(a)
  values = [float(r["val_mean_auroc"]) for r in rows]
  with open(os.path.join(a, "best.json")) as f:
    best = json.load(f)
  assert best["trial"] == int(np.argmax(values)) and best["n_finished"] == 3
  assert not any("test" in key for key in best)     # no test metric
  argv = resolve_config_argv(["run", f"--config={a}/best_config.py", "--workdir=/x"])
  fv = flags.FlagValues()
  run.define_flags(fv, argv)
  fv(argv)
  with open(os.path.join(a, best["workdir"], "config.json")) as f:
    trained = json.load(f)
  assert training_hash(fv.config) == trained["_training_hash"]
  assert fv.config.method == "gbt" and fv.config.data.dir == searches["plain"]
  for field, value in best["params"].items():
    assert tune.get_field(fv.config, field) == value


def test_a_trial_cut_short_is_run_again_with_its_parameters(searches, tmp_path):
  """A crash leaves its trial RUNNING in the journal; the next start reruns it."""
  workdir = str(tmp_path / "crashed")
  os.makedirs(workdir)
  storage = optuna.storages.JournalStorage(
      optuna.storages.journal.JournalFileBackend(os.path.join(workdir, "journal.log")))
  study = optuna.create_study(storage=storage, study_name=tune.STUDY, direction="maximize")
  trial = study.ask()
  params = tune.suggest(trial, tables.get_search_space("gbt"))
  trial.set_user_attr("workdir", "trials/000")
  tune.SCRIPT(_argv(searches["plain"], workdir, 1))
  rows = _rows(workdir)
  assert [r["state"] for r in rows] == ["FAIL", "COMPLETE"]
  assert rows[1]["rerun_of"] == "0" and rows[1]["workdir"] == "trials/000"
  assert {k[len("params."):]: v for k, v in rows[1].items() if k.startswith("params.")} == \
      {k: str(v) for k, v in params.items()}
  assert os.path.exists(os.path.join(workdir, "trials", "000", "results.json"))


def test_pruning_stops_a_trial_after_an_epoch_and_releases_its_workdir(tmp_path):
  from crl_mmnar_jax.workdir import WorkdirLock
  config = tables.get_config("tiny")
  config.data.dir = _cohort(tmp_path / "cohort")
  config.train.batch_size, config.train.eval_batch_size = 32, 64
  config.method = "mean_impute_mlp"    # the same training loop as CRL-MMNAR, 3x less to compile
  overrides = {"data.dir": config.data.dir, "method": config.method}
  space = tune.search_space("tables", config, ["train.lr"], overrides)
  workdir = str(tmp_path / "search")
  best = tune.search(config, "tables", "tiny", workdir, 1, space, overrides,
                     pruner=optuna.pruners.ThresholdPruner(lower=1.5))  # above any AUROC
  assert best["n_pruned"] == 1 and best["trial"] is None
  assert not os.path.exists(os.path.join(workdir, "best_config.py"))
  (row,) = _rows(workdir)
  assert row["state"] == "PRUNED"
  trial_dir = os.path.join(workdir, "trials", "000")
  assert not os.path.exists(os.path.join(trial_dir, "results.json"))
  with open(os.path.join(trial_dir, "metrics.jsonl")) as f:
    epochs = [r for r in map(json.loads, f) if "val/mean_auroc" in r]
  assert len(epochs) == 1 < config.train.epochs          # stopped after epoch 1 of 2
  assert float(row["val_mean_auroc"]) == pytest.approx(epochs[0]["val/mean_auroc"])
  with WorkdirLock(trial_dir):                           # the lock was released
    pass
  # Rerunning with the same total runs nothing more.
  tune.search(config, "tables", "tiny", workdir, 1, space, overrides)
  assert len(_rows(workdir)) == 1


def test_a_batch_of_trials_trained_together_gives_each_trials_own_result(tmp_path):
  """`--batch=3`: three trials (other learning rates, weight decays, dropout rates) in
  one vmapped step; each trial's objective equals that trial's config run alone."""
  from crl_mmnar_jax.experiment import train_and_evaluate
  config = tables.get_config("tiny")
  config.data.dir = _cohort(tmp_path / "cohort")
  config.train.batch_size, config.train.eval_batch_size = 32, 64
  config.method = "mean_impute_mlp"    # the same training loop as CRL-MMNAR, 3x less to compile
  overrides = {"data.dir": config.data.dir, "method": config.method}
  space = tune.search_space("tables", config, ["train.lr", "train.weight_decay",
                                                "model.dropout"], overrides)
  workdir = str(tmp_path / "search")
  logs: list[str] = []
  best = tune.search(config, "tables", "tiny", workdir, 3, space, overrides, batch=3,
                     log=logs.append)
  assert best["n_complete"] == 3
  assert any("3 of 3 members" in line for line in logs)       # trained in one step
  rows = _rows(workdir)
  assert len({r["params.train.lr"] for r in rows}) == 3
  for r in rows:
    params = {f: float(r[f"params.{f}"]) for f in space}
    alone = train_and_evaluate(tune.trial_config(config, params),
                               str(tmp_path / f"alone{r['number']}"), log=lambda _: None)
    assert float(r["val_mean_auroc"]) == pytest.approx(
        alone["metrics"]["val"]["mean"]["auroc"], abs=2e-3)
  assert os.path.isdir(os.path.join(workdir, "trials", "batch-000-001-002"))


def test_a_nan_trial_in_a_batch_fails_alone_and_the_others_complete(tmp_path, monkeypatch):
  """When a batch stops on a NaN loss, its trials are trained one by one: only the
  trial whose loss is NaN fails (with its error recorded); the others complete."""
  from crl_mmnar_jax import experiment
  from crl_mmnar_jax.train.loop import NonFiniteLossError
  config = tables.get_config("tiny")
  config.data.dir = _cohort(tmp_path / "cohort")
  config.train.batch_size, config.train.eval_batch_size = 32, 64
  config.method = "mean_impute_mlp"
  overrides = {"data.dir": config.data.dir, "method": config.method}
  space = tune.search_space("tables", config, ["train.lr"], overrides)
  alone, seen = experiment.train_and_evaluate, []

  def together(configs, workdirs, shared, log):
    raise NonFiniteLossError("member 1: the loss or parameters became NaN/Inf at step 3")

  def one(c, workdir, log=print, on_epoch=None):
    seen.append(float(c.train.lr))
    if len(seen) == 2:                  # the batch's second trial
      raise NonFiniteLossError("the loss or parameters became NaN/Inf at step 3")
    return alone(c, workdir, log=log, on_epoch=on_epoch)

  monkeypatch.setattr(experiment, "train_and_evaluate_many", together)
  monkeypatch.setattr(experiment, "train_and_evaluate", one)
  best = tune.search(config, "tables", "tiny", str(tmp_path / "search"), 3, space,
                     overrides, batch=3, log=lambda _: None)
  rows = _rows(str(tmp_path / "search"))
  assert [r["state"] for r in rows] == ["COMPLETE", "FAIL", "COMPLETE"]
  assert "NaN/Inf at step 3" in rows[1]["error"] and not rows[0]["error"]
  assert best["n_finished"] == 3 and best["n_failed"] == 1 and len(seen) == 3


@pytest.mark.parametrize("extra,match", [
    (["--trials=0"], "--trials=0"),
    (["--batch=0"], "--batch=0"),
    (["--search=model.nope"], "unknown search field(s) model.nope"),
    (["--config.method=logreg"], "method 'logreg' has nothing to search"),
])
def test_bad_arguments_are_one_line_before_anything_runs(tmp_path, extra, match):
  workdir = str(tmp_path / "w")
  with pytest.raises(SystemExit) as e:
    tune.SCRIPT(_argv(str(tmp_path / "no_cohort"), workdir, 2) + extra)
  message = str(e.value.code)
  assert message.startswith("error: ") and "\n" not in message and match in message
  assert not os.path.exists(workdir)


def test_a_config_without_a_space_is_one_line(tmp_path):
  with pytest.raises(SystemExit) as e:
    tune.SCRIPT(["tune", "--config=eicu:tiny", "--trials=1", f"--workdir={tmp_path}/w"])
  assert "has no search space" in str(e.value.code) and "synthetic" in str(e.value.code)


def _corners(kind, args):
  if kind == "categorical":
    return list(args)
  low, high = args
  mid = (low + high) // 2 if kind == "int" else (low + high) / 2
  return [low, mid, high]


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("method", ["crl_mmnar", "gbt", "mean_impute_mlp", "muse"])
def test_every_search_field_passes_config_check(name, method):
  module = CONFIGS[name]
  space = module.get_search_space(method)
  required = (["baseline.gbt_num_leaves", "baseline.gbt_learning_rate",
               "baseline.gbt_min_child_samples", "baseline.gbt_feature_fraction",
               "baseline.gbt_lambda_l2"] if method == "gbt" else
              ["model.dim", "model.n_layers", "model.dropout", "train.lr",
               "train.weight_decay", "model.num_embedding", "data.preprocess"])
  if method == "crl_mmnar":
    required += ["loss.miss", "loss.rec", "loss.con"]
  assert set(required) <= set(space)
  if method != "gbt":
    assert set(space["model.num_embedding"][1]) == {"none", "ple", "periodic"}
    assert set(space["data.preprocess"][1]) == {"standard", "quantile_normal"}
  for preset in ("", "tiny"):
    for field, (kind, args, log) in space.items():
      assert kind in ("float", "int", "categorical") and (not log or args[0] > 0)
      for value in _corners(kind, args):
        config = module.get_config(preset)
        config.method = method
        tune.set_field(config, field, value)
        check_config(config)


def test_a_space_outside_the_rules_is_refused():
  config = tables.get_config("tiny")
  with pytest.raises(ValueError, match=r"model\.dropout=1\.5"):
    tune.check_space({"model.dropout": ("float", (0.0, 1.5), False)}, config, "here")
  with pytest.raises(ValueError, match="model.nope is not a field"):
    tune.check_space({"model.nope": ("int", (1, 2), False)}, config, "here")
  with pytest.raises(ValueError, match="bad range"):
    tune.check_space({"train.lr": ("float", (0.0, 0.1), True)}, config, "here")


def test_the_searched_gbt_settings_reach_lightgbm():
  """`gbt_nan_missing` with feature_fraction and lambda_l2 set equals LightGBM called
  directly with them (and differs from the defaults)."""
  import lightgbm

  from crl_mmnar_jax.cohort import Cohort
  from crl_mmnar_jax.methods import direct
  rng = np.random.default_rng(1)
  n = 400
  x_NxF = rng.normal(size=(n, 6)).astype(np.float32)
  y_N = (x_NxF[:, 0] + x_NxF[:, 1] + rng.normal(size=n) > 0).astype(np.float32)
  cohort = Cohort(np.arange(n), (x_NxF,), np.ones((n, 1), bool), y_N[:, None], ("m",),
                  ("t",))
  train, val = np.arange(300), np.arange(300, n)
  b = tables.get_config().baseline
  b.gbt_n_estimators, b.gbt_early_stopping = 30, 30
  default, _ = direct.gbt_nan_missing(cohort, train, val, {"val": val}, b, 0)
  b.gbt_feature_fraction, b.gbt_lambda_l2 = 0.5, 5.0
  got, fitted = direct.gbt_nan_missing(cohort, train, val, {"val": val}, b, 0)
  params = {"objective": "binary", "metric": "auc", "learning_rate": b.gbt_learning_rate,
            "num_leaves": b.gbt_num_leaves, "min_data_in_leaf": b.gbt_min_child_samples,
            "seed": 0, "feature_fraction": 0.5, "lambda_l2": 5.0, "deterministic": True,
            "force_row_wise": True, "verbosity": -1}
  booster = lightgbm.train(params, lightgbm.Dataset(x_NxF[train], y_N[train]),
                           num_boost_round=30)
  want = booster.predict(x_NxF[val], num_iteration=fitted["n_trees"]["t"])  # early-stopped
  np.testing.assert_allclose(got["val"][:, 0], want, rtol=1e-5)
  assert not np.allclose(got["val"], default["val"])
