"""End-to-end: the command line, the output contract, resume after SIGKILL, test-label
independence, and clear errors for bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.data.sources.tables import write_tables
from experiments.configs import synthetic as synthetic_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=synthetic:tiny", "--config.train.epochs=4", "--config.train.checkpoint_every=3"]


def cli(args, cwd, timeout=600, background=False, **popen_kw):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "experiments.run", *args]
  if background:
    return subprocess.Popen(cmd, cwd=cwd, env=env, **popen_kw)
  return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """One uninterrupted run of the tiny synthetic config through the real command line."""
  base = tmp_path_factory.mktemp("tiny")
  workdir = base / "run"
  proc = cli([*TINY, f"--workdir={workdir}"], cwd=base)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir, proc


def test_cli_writes_every_output_with_the_documented_contract(tiny_run):
  workdir, proc = tiny_run
  for name in ("config.json", "metrics.jsonl", "splits.parquet", "predictions.parquet",
               "results.json", "report.md", "roc.png", "calibration.png", "tau.png",
               "data_info.json"):
    assert (workdir / name).exists(), name
  assert (workdir / "checkpoints" / "latest").is_dir()
  assert (workdir / "checkpoints" / "best").is_dir()
  # A finished run keeps one `latest` step (model + AdamW's two moments) and a `best`
  # holding the model alone: about a third of a `latest` step (docs/outputs.md).
  latest = [p for p in (workdir / "checkpoints" / "latest").iterdir() if p.name.isdigit()]
  best = [p for p in (workdir / "checkpoints" / "best").iterdir() if p.name.isdigit()]
  assert len(latest) == 1 and len(best) == 1
  size = [sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in latest + best]
  assert 0.2 < size[1] / size[0] < 0.45, size
  # The resolved config is written; the console gets a one-line summary of it.
  config = json.loads((workdir / "config.json").read_text())
  assert config["data"]["name"] == "synthetic" and config["train"]["epochs"] == 4
  assert config["train"]["batch_size"] == 64
  assert proc.stdout.startswith("run: config synthetic:tiny, method crl_mmnar, data "
                                "synthetic, 4 epochs, workdir ")

  tasks = ["task0", "task1", "task2"]
  splits = pl.read_parquet(workdir / "splits.parquet")
  assert splits.columns == ["patient_id", "split"]
  assert splits.height == 600 and splits["patient_id"].n_unique() == 600
  assert set(splits["split"].unique()) == {"train", "val", "test"}

  pred = pl.read_parquet(workdir / "predictions.parquet")
  expected = ["patient_id", "split", "pattern_id"]
  for t in tasks:
    expected += [f"{t}_label", f"{t}_prob", f"{t}_prob_rectified"]
  assert pred.columns == expected
  assert set(pred["split"].unique()) == {"val", "test"}
  by_split = dict(zip(splits["patient_id"].to_list(), splits["split"].to_list()))
  assert all(by_split[i] == s for i, s in zip(pred["patient_id"], pred["split"]))
  for t in tasks:
    p = pred[f"{t}_prob"].to_numpy()
    assert np.all((p >= 0) & (p <= 1))

  results = json.loads((workdir / "results.json").read_text())
  for view in ("val", "test", "test_rectified"):
    for t in tasks:
      for m in ("auroc", "auprc", "brier", "ece"):
        assert m in results["metrics"][view][t], (view, t, m)
  assert {"val", "test", "test_rectified"} <= set(results["per_pattern"])
  rect = results["rectifier"]
  assert set(rect["kappa"]) == set(tasks) and set(rect["lambda"]) == set(tasks)
  assert {"pattern", "task", "tau_raw", "tau", "se", "n"} <= set(rect["table"][0])
  # The test metrics equal an independent recomputation from predictions.parquet.
  from sklearn.metrics import roc_auc_score
  test = pred.filter(pl.col("split") == "test")
  for t in tasks:
    y = test[f"{t}_label"].to_numpy()
    auc = roc_auc_score(y, test[f"{t}_prob"].to_numpy())
    assert abs(results["metrics"]["test"][t]["auroc"] - auc) < 1e-9
    auc_r = roc_auc_score(y, test[f"{t}_prob_rectified"].to_numpy())
    assert abs(results["metrics"]["test_rectified"][t]["auroc"] - auc_r) < 1e-9

  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert all("step" in l for l in lines)
  assert not any(k.startswith("test") for l in lines for k in l)   # never logged in training
  assert sum("val/mean_auroc" in l for l in lines) == 4


def test_sigkill_and_rerun_gives_identical_predictions(tiny_run, tmp_path):
  ref_dir, _ = tiny_run
  workdir = tmp_path / "killed"
  proc = cli([*TINY, f"--workdir={workdir}"], cwd=tmp_path, background=True,
             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  latest = workdir / "checkpoints" / "latest"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    done = [p for p in latest.glob("*") if p.name.isdigit()] if latest.exists() else []
    if done:
      break
    time.sleep(0.02)
  assert proc.poll() is None, "the run finished before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (workdir / "results.json").exists()
  rerun = cli([*TINY, f"--workdir={workdir}"], cwd=tmp_path)
  assert rerun.returncode == 0, rerun.stderr[-4000:]
  assert "resuming from step" in rerun.stdout
  a = pl.read_parquet(ref_dir / "predictions.parquet")
  b = pl.read_parquet(workdir / "predictions.parquet")
  assert a.equals(b)
  ra = json.loads((ref_dir / "results.json").read_text())
  rb = json.loads((workdir / "results.json").read_text())
  assert ra["metrics"] == rb["metrics"] and ra["rectifier"] == rb["rectifier"]
  assert ra["training"]["history"] == rb["training"]["history"]


def _tables_config(data_dir, **train):
  config = synthetic_config.get_config("tiny")
  config.data.name = "tables"
  config.data.dir = str(data_dir)
  config.data.tasks = ""
  config.eval.plots = False
  for k, v in train.items():
    config.train[k] = v
  return config


def test_flipping_every_test_label_changes_only_test_metrics(tmp_path):
  from crl_mmnar_jax.experiment import train_and_evaluate
  cohort = make_synthetic(600, seed=3).cohort
  data_a, data_b = tmp_path / "data_a", tmp_path / "data_b"
  write_tables(cohort, data_a)
  res_a = train_and_evaluate(_tables_config(data_a), str(tmp_path / "run_a"), log=lambda s: None)
  splits = pl.read_parquet(tmp_path / "run_a" / "splits.parquet")
  test_ids = set(splits.filter(pl.col("split") == "test")["patient_id"].to_list())
  labels = pl.read_parquet(data_a / "labels.parquet")
  is_test = pl.col("patient_id").is_in(list(test_ids))
  flipped = labels.with_columns([pl.when(is_test).then(1 - pl.col(t)).otherwise(pl.col(t)).alias(t)
                                 for t in cohort.task_names])
  write_tables(cohort, data_b)
  flipped.write_parquet(data_b / "labels.parquet")
  res_b = train_and_evaluate(_tables_config(data_b), str(tmp_path / "run_b"), log=lambda s: None)

  assert pl.read_parquet(tmp_path / "run_b" / "splits.parquet").equals(splits)
  assert res_a["metrics"]["val"] == res_b["metrics"]["val"]
  assert res_a["metrics"]["val_rectified"] == res_b["metrics"]["val_rectified"]
  assert res_a["training"] == {**res_b["training"]}
  assert res_a["rectifier"] == res_b["rectifier"]
  assert res_a["cohort"] == res_b["cohort"]
  pa = pl.read_parquet(tmp_path / "run_a" / "predictions.parquet")
  pb = pl.read_parquet(tmp_path / "run_b" / "predictions.parquet")
  prob_cols = [c for c in pa.columns if "_prob" in c]
  assert pa.select(prob_cols).equals(pb.select(prob_cols))       # bit-identical
  for t in cohort.task_names:
    a, b = res_a["metrics"]["test"][t]["auroc"], res_b["metrics"]["test"][t]["auroc"]
    assert abs((1 - a) - b) < 1e-9                               # AUROC mirrors exactly
    test_a = pa.filter(pl.col("split") == "test")[f"{t}_label"].to_numpy()
    test_b = pb.filter(pl.col("split") == "test")[f"{t}_label"].to_numpy()
    np.testing.assert_array_equal(test_b, 1 - test_a)


def test_workdir_with_a_different_config_is_refused(tmp_path):
  from crl_mmnar_jax.workdir_guard import prepare_workdir
  config = synthetic_config.get_config("tiny")
  prepare_workdir(config, str(tmp_path))
  prepare_workdir(config, str(tmp_path))         # the same config resumes
  config.train.epochs = 7
  with pytest.raises(ValueError, match=r"different config.*train\.epochs: 3 -> 7"):
    prepare_workdir(config, str(tmp_path))


def _labels(ids, **cols):
  return pl.DataFrame({"patient_id": ids, **cols})


def _bad_tables(kind, d):
  d.mkdir()
  ids = list(range(100, 140))
  rng = np.random.default_rng(0)
  y = [int(v) for v in rng.integers(0, 2, len(ids))]
  labels = _labels(ids, y=y)
  demo = pl.DataFrame({"patient_id": ids, "age": rng.normal(size=len(ids))})
  if kind == "no_labels":
    demo.write_parquet(d / "demo.parquet")
    return "labels.parquet"
  if kind == "no_patient_id":
    labels.write_parquet(d / "labels.parquet")
    demo.rename({"patient_id": "pid"}).write_parquet(d / "demo.parquet")
    return "patient_id"
  if kind == "duplicate_rows":
    labels.write_parquet(d / "labels.parquet")
    pl.concat([demo, demo.head(2)]).write_parquet(d / "demo.parquet")
    return "more than one row"
  if kind == "non_numeric":
    labels.write_parquet(d / "labels.parquet")
    demo.with_columns(ward=pl.lit("icu")).write_parquet(d / "demo.parquet")
    return "ward"
  if kind == "bad_labels":
    _labels(ids, y=[2] + y[1:]).write_parquet(d / "labels.parquet")
    demo.write_parquet(d / "demo.parquet")
    return "y"
  if kind == "no_modality":
    labels.write_parquet(d / "labels.parquet")
    demo.head(39).write_parquet(d / "demo.parquet")
    return "no observed modality"
  if kind == "one_class_val":
    _labels(ids, y=[1] + [0] * 39).write_parquet(d / "labels.parquet")
    demo.write_parquet(d / "demo.parquet")
    return "one class in the validation split"
  raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["no_labels", "no_patient_id", "duplicate_rows", "non_numeric",
                                  "bad_labels", "no_modality", "one_class_val"])
def test_bad_tables_input_gives_clear_error_and_writes_nothing(kind, tmp_path):
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  expected = _bad_tables(kind, tmp_path / "data")
  before = sorted(p.name for p in tmp_path.rglob("*"))
  proc = cli(["--config=tables", f"--config.data.dir={tmp_path / 'data'}",
              f"--workdir={tmp_path / 'work'}"], cwd=cwd)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  assert expected in proc.stderr, proc.stderr[-2000:]
  assert sorted(p.name for p in tmp_path.rglob("*")) == before    # nothing written anywhere


@pytest.mark.parametrize("args,expected", [
    (["--config=nope"], "unknown config 'nope'"),
    (["--config=synthetic:tiny", "--config.train.nope=1"], "nope"),
    (["--config=synthetic:nope"], "unknown synthetic preset 'nope'"),
])
def test_bad_command_line_gives_clear_error(args, expected, tmp_path):
  proc = cli([*args, f"--workdir={tmp_path / 'work'}"], cwd=tmp_path)
  assert proc.returncode != 0
  assert expected in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("name", ["run[lr=1e-3]", "run*", "run?"])
def test_workdir_with_glob_characters_is_refused_before_anything_runs(name, tmp_path):
  # orbax/tensorstore saves below such a path but cannot restore: it must fail up front.
  from crl_mmnar_jax.experiment import train_and_evaluate
  with pytest.raises(ValueError, match="checkpoints cannot be restored"):
    train_and_evaluate(synthetic_config.get_config("tiny"), str(tmp_path / name))
  assert list(tmp_path.iterdir()) == []


def test_checkpoints_refuse_a_directory_with_glob_characters(tmp_path):
  from crl_mmnar_jax.train.checkpoint import Checkpoints
  with pytest.raises(ValueError, match=r"contains '\[\]'"):
    Checkpoints(str(tmp_path / "run[1]"))
  assert list(tmp_path.iterdir()) == []


def test_nonfinite_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  import re

  import jax

  from crl_mmnar_jax import experiment
  from crl_mmnar_jax.experiment import train_and_evaluate
  monkeypatch.setattr(experiment, "check_config", lambda config: None)  # lr=1e30 is refused
  from crl_mmnar_jax.train.checkpoint import Checkpoints
  from crl_mmnar_jax.train.loop import NonFiniteLossError
  config = synthetic_config.get_config("tiny")
  config.eval.plots = False
  config.train.lr = 1e30                 # explodes within a few steps of the warmup
  config.train.warmup_steps = 1_000_000
  config.train.warmup_max_fraction = 1.0   # the whole run is warm-up
  config.train.checkpoint_every = 1
  with pytest.raises(NonFiniteLossError, match=r"at step \d+") as err:
    train_and_evaluate(config, str(tmp_path), log=lambda s: None)
  bad_step = int(re.search(r"at step (\d+)", str(err.value)).group(1))
  ckpt = Checkpoints(str(tmp_path))
  step = ckpt.latest.latest_step()
  assert step is not None and step < bad_step
  # The message says which checkpoint exists (not a "last good checkpoint" that may not).
  assert f"The latest checkpoint (step {step}) was saved before it" in str(err.value)
  state = ckpt.latest.restore(step)["state"]
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state))
  ckpt.close()
  assert not (tmp_path / "results.json").exists()
