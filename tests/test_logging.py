"""What a run tells: the console log (one line per epoch, no carriage return in a log
file, one summary line), metrics.jsonl (per epoch: per-task validation AUROC and loss,
the learning rate, every loss term), TensorBoard events, config.json, epochs numbered
from 1 everywhere, and the command line spelled one way (docs/outputs.md).

One real run of the command line, its output redirected to a file as a batch job would,
is checked against independent recomputations: scikit-learn on the saved validation
predictions, the closed form of the learning-rate schedule, the step-level losses.
"""

import importlib
import importlib.util
import json
import math
import os
import re
import struct
import subprocess
import sys
import time

import jax.numpy as jnp
import ml_collections
import numpy as np
import polars as pl
import pytest
from absl import flags
from sklearn.metrics import roc_auc_score
from test_entry_points import SCRIPTS
from test_reliability import ROOT, cli_env

from crl_mmnar_jax import config_check
from crl_mmnar_jax import workdir as workdir_lib
from crl_mmnar_jax.train.records import Progress, Throughput
from experiments import run as run_script
from experiments.configs import available_configs, synthetic

HAS_TENSORBOARD = importlib.util.find_spec("tensorboardX") is not None
OVERRIDES = {"data.n": 200, "train.pretrain_epochs": 1, "train.epochs": 3, "train.patience": 1,
             "train.log_every": 1, "train.checkpoint_every": 1, "train.progress": True,
             "eval.n_boot": 0, "eval.plots": False, "train.tensorboard": HAS_TENSORBOARD}
TERMS = ("pred", "miss", "rec", "con", "total", "grad_norm")


def expected_config() -> ml_collections.ConfigDict:
  config = synthetic.get_config("tiny")
  for key, value in OVERRIDES.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def run_logged(base, name, fault=None):
  """`python -m experiments.run --config synthetic:tiny ...` (the config given with a
  space) with stdout and stderr redirected to one file; (workdir, exit code, log bytes)."""
  workdir, log = base / name, base / f"{name}.log"
  env = cli_env(base / "jax_cache", fault)   # the compilation cache of the other tests
  args = ["--config", "synthetic:tiny", f"--workdir={workdir}"] + [
      f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  with open(log, "wb") as out:
    proc = subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=base, env=env,
                          stdout=out, stderr=subprocess.STDOUT, timeout=600)
  return workdir, proc.returncode, log.read_bytes()


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
  workdir, rc, raw = run_logged(tmp_path_factory.getbasetemp(), "logging_run")
  assert rc == 0, raw.decode()[-3000:]
  return workdir, raw


def records(workdir, kind):
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r.get("kind") == kind]


def epochs_expected(val_aurocs, pretrain, epochs, patience):
  """Early stopping replayed on the logged validation AUROCs: how many epochs run."""
  best, bad = -1.0, 0
  for i, score in enumerate(val_aurocs):
    if score > best:
      best, bad = score, 0
    else:
      bad += 1
    if bad >= patience:
      return pretrain + i + 1
  return pretrain + epochs


def lr_closed_form(c, update, total):
  """Warmup from 0 over min(warmup_steps, floor(warmup_max_fraction * total)) updates,
  then cosine decay to lr * final_lr_fraction (optax's schedule)."""
  warmup = min(c["warmup_steps"], math.floor(c["warmup_max_fraction"] * total),
               max(total - 1, 0))
  decay = max(total, warmup + 1)
  if update < warmup:
    return c["lr"] * update / warmup
  frac = min((update - warmup) / (decay - warmup), 1.0)
  end = c["lr"] * c["final_lr_fraction"]
  return end + (c["lr"] - end) * 0.5 * (1 + math.cos(math.pi * frac))


# ----------------------------------------------------------------------------- console


def test_log_file_has_one_line_per_epoch_no_carriage_return_and_a_summary(logged):
  workdir, raw = logged
  assert b"\r" not in raw and b"\x1b" not in raw           # no bar, no terminal codes
  lines = raw.decode().splitlines()
  assert lines[0] == (f"run: config synthetic:tiny, method crl_mmnar, data synthetic, 1 "
                      f"pre-training + 3 epochs, workdir {workdir} (resolved config: "
                      f"{workdir / 'config.json'})")
  assert not any(line.lstrip().startswith(("{", "}", '"')) for line in lines)  # no JSON dump
  epoch_lines = [line for line in lines if line.startswith("epoch ")]
  joint = [r["val/mean_auroc"] for r in records(workdir, "epoch") if r["phase"] == "joint"]
  n = epochs_expected(joint, 1, 3, 1)
  assert len(epoch_lines) == len(records(workdir, "epoch")) == n
  for i, line in enumerate(epoch_lines):
    phase = "pretrain" if i == 0 else "joint"
    assert re.match(rf"epoch {i + 1}/4 \({phase}\): loss \d+\.\d{{4}}, ", line), line
    assert ("val mean AUROC" in line) == (phase == "joint")
  assert ("early stopping" in epoch_lines[-1]) == (n < 4)
  assert lines[-2].startswith("test mean AUROC ")
  assert re.fullmatch(r"compile cache: \d+ programs read, \d+ compiled and written \(.+\)",
                      lines[-1]), lines[-1]
  assert len(lines) - len(epoch_lines) <= 7          # summary, cohort, result, cache, notes


# ----------------------------------------------------------------------------- metrics.jsonl


def test_metrics_jsonl_has_every_field_per_epoch_numbered_from_1(logged):
  workdir, _ = logged
  epochs, steps = records(workdir, "epoch"), records(workdir, "step")
  tasks = json.loads((workdir / "results.json").read_text())["cohort"]["tasks"]
  assert [r["epoch"] for r in epochs] == list(range(1, len(epochs) + 1))
  assert [r["step"] for r in steps] == list(range(1, epochs[-1]["step"] + 1))  # log_every=1
  for r in epochs:
    keys = {"lr", "aux_scale", "pred_scale", "train/patients_per_s", "time/epoch_s",
            *(f"train/{t}" for t in TERMS)}
    if r["phase"] == "joint":
      keys |= {"val/mean_auroc", *(f"val/{t}/{m}" for t in tasks for m in ("auroc", "loss"))}
    assert keys <= set(r), keys - set(r)
    assert all(math.isfinite(r[k]) for k in keys), r
    assert r["train/patients_per_s"] > 0
    # The epoch's loss terms are the means of its steps' (one step line per step).
    mine = [s for s in steps if s["epoch"] == r["epoch"]]
    assert mine[-1]["step"] == r["step"]
    for term in TERMS:
      np.testing.assert_allclose(r[f"train/{term}"], np.mean([s[f"batch/{term}"] for s in mine]),
                                 rtol=1e-5)
  results = json.loads((workdir / "results.json").read_text())["training"]
  joint = [r for r in epochs if r["phase"] == "joint"]
  assert [h["epoch"] for h in results["history"]] == [r["epoch"] for r in joint]
  best = max(joint, key=lambda r: r["val/mean_auroc"])            # the first maximum
  assert results["best_epoch"] == best["epoch"] and results["best_step"] == best["step"]
  assert f"Best epoch {best['epoch']} " in (workdir / "report.md").read_text()


def test_learning_rate_is_the_schedule_at_the_last_update(logged):
  workdir, _ = logged
  c = json.loads((workdir / "config.json").read_text())["train"]
  n_train = json.loads((workdir / "results.json").read_text())["cohort"]["n_train"]
  steps_per_epoch = math.ceil(n_train / c["batch_size"])
  total = steps_per_epoch * (c["pretrain_epochs"] + c["epochs"])
  for r in records(workdir, "epoch") + records(workdir, "step"):
    assert r["step"] == r["epoch"] * steps_per_epoch if r["kind"] == "epoch" else True
    np.testing.assert_allclose(r["lr"], lr_closed_form(c, r["step"] - 1, total), rtol=1e-5,
                               atol=1e-12)


@pytest.mark.parametrize("n_patients", [210, 2_000, 20_000])
def test_the_peak_learning_rate_comes_within_a_tenth_of_the_schedule(n_patients):
  """The `tables` defaults (100 warm-up steps, batch 128, 30 epochs) on a
  210-patient cohort take 2 steps an epoch; warm-up must still end by 10% of the 60 steps,
  and the schedule equals the closed form at every update."""
  from crl_mmnar_jax.train.optim import lr_schedule
  from experiments.configs import tables
  config = tables.get_config()
  t = config.train
  n_train = round(n_patients * (1 - config.data.val_fraction - config.data.test_fraction))
  total = math.ceil(n_train / t.batch_size) * (t.pretrain_epochs + t.epochs)
  schedule = lr_schedule(config, total)
  lrs = np.array([float(schedule(k)) for k in range(total)])
  peak = int(np.argmax(lrs))
  assert lrs[peak] == pytest.approx(t.lr, rel=1e-6)
  assert peak <= 0.1 * total
  if n_patients == 20_000:                 # a large cohort keeps its 100 absolute steps
    assert peak == t.warmup_steps
  c = config.train.to_dict()
  np.testing.assert_allclose(lrs, [lr_closed_form(c, k, total) for k in range(total)],
                             rtol=1e-5, atol=1e-12)


def test_best_epoch_validation_metrics_equal_sklearn_on_the_saved_predictions(logged):
  """The best checkpoint predicted predictions.parquet's validation rows, so the logged
  AUROC and loss of the best epoch are recomputed from them exactly."""
  workdir, _ = logged
  results = json.loads((workdir / "results.json").read_text())
  best = next(r for r in records(workdir, "epoch")
              if r["epoch"] == results["training"]["best_epoch"])
  val = pl.read_parquet(workdir / "predictions.parquet").filter(pl.col("split") == "val")
  aurocs = []
  for task in results["cohort"]["tasks"]:
    known = val.filter(pl.col(f"{task}_label").is_not_null())
    y = known[f"{task}_label"].to_numpy().astype(float)
    p = np.clip(known[f"{task}_prob"].to_numpy().astype(float), 1e-7, 1 - 1e-7)
    aurocs.append(roc_auc_score(y, p))
    assert best[f"val/{task}/auroc"] == pytest.approx(aurocs[-1], abs=1e-12)
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert best[f"val/{task}/loss"] == pytest.approx(bce, rel=1e-6)
  assert best["val/mean_auroc"] == pytest.approx(np.mean(aurocs), abs=1e-12)
  assert results["training"]["best_val_mean_auroc"] == pytest.approx(np.mean(aurocs), abs=1e-12)


# ----------------------------------------------------------------------------- tensorboard


def read_events(folder):
  """{tag: {step: value}} of the scalars in a folder of TensorBoard event files (TFRecord
  framing: length, its CRC, the Event proto, its CRC)."""
  from tensorboardX.proto import event_pb2
  out: dict = {}
  for name in sorted(os.listdir(folder)):
    data = open(os.path.join(folder, name), "rb").read()
    i = 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      i += 12 + n + 4
      for v in event.summary.value:
        out.setdefault(v.tag, {})[event.step] = v.simple_value
  return out


def test_tensorboard_events_hold_the_metrics(logged):
  if not HAS_TENSORBOARD:
    pytest.skip("tensorboardX is not installed (pip install -e '.[tensorboard]')")
  workdir, _ = logged
  events = read_events(workdir / "tensorboard")
  for r in records(workdir, "epoch") + records(workdir, "step"):
    for key, value in r.items():
      if key not in ("kind", "step", "epoch", "phase"):
        assert events[key][r["step"]] == pytest.approx(value, rel=1e-6), key


def test_tensorboard_without_tensorboardx_is_refused_in_one_line(monkeypatch):
  config = expected_config()
  config.train.tensorboard = True
  monkeypatch.setattr(config_check.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(config_check.ConfigError) as e:
    config_check.check_config(config)
  assert str(e.value).startswith("--config.train.tensorboard=True: must be False unless "
                                 "tensorboardX is installed")


def test_a_killed_and_resumed_run_logs_what_the_uninterrupted_one_logged(logged):
  """Killed mid-epoch (after a checkpoint of step 5) and rerun: the same metrics.jsonl
  lines (the resumed epoch's means included) and the same TensorBoard scalars."""
  workdir, _ = logged
  base = workdir.parent
  killed, rc, raw = run_logged(base, "logging_killed", fault="step#6")
  assert rc == -9, raw.decode()[-3000:]
  resumed, rc, raw = run_logged(base, "logging_killed")
  assert rc == 0 and b"resuming from step 5 (epoch 2, batch " in raw, raw.decode()[-3000:]
  timing = ("train/patients_per_s", "time/epoch_s")
  strip = lambda rs: [{k: v for k, v in r.items() if k not in timing} for r in rs]
  for kind in ("epoch", "step"):
    assert strip(records(resumed, kind)) == strip(records(workdir, kind))
  if HAS_TENSORBOARD:
    a, b = read_events(workdir / "tensorboard"), read_events(resumed / "tensorboard")
    assert {t: s for t, s in a.items() if t not in timing} == \
        {t: s for t, s in b.items() if t not in timing}


# ----------------------------------------------------------------------------- config.json


def test_config_json_round_trips_into_the_same_config(logged):
  workdir, _ = logged
  stored = json.loads((workdir / "config.json").read_text())
  h = stored.pop("_config_hash")
  stored.pop("_training_hash")
  back = ml_collections.ConfigDict(stored)
  config = expected_config()
  assert workdir_lib.config_to_dict(back) == workdir_lib.config_to_dict(config)
  assert workdir_lib.config_hash(back) == workdir_lib.config_hash(config) == h
  config_check.check_config(back)
  assert "train.tensorboard" in workdir_lib.NOT_HASHED      # changing it keeps the resume


# ----------------------------------------------------------------------------- the parts


def test_throughput_leaves_the_compiling_first_step_out():
  meter = Throughput()
  meter.step_done(jnp.zeros(()), 100)      # the step that compiles
  assert meter.rate() is None
  time.sleep(1.0)                          # (as if compiling took 1 s more)
  meter = Throughput()
  meter.step_done(jnp.zeros(()), 100)
  for _ in range(3):
    time.sleep(0.05)
    meter.step_done(jnp.zeros(()), 100)
  rate = meter.rate()
  assert 300 / 1.0 < rate <= 300 / 0.15     # 0.15 s measured; compiling would add 1 s


def test_progress_bar_only_on_a_terminal(capsys, monkeypatch):
  bar = Progress(10, 0, "epoch 1/1 (joint)", enabled=True)   # pytest's stderr: no tty
  assert bar.bar is None
  bar.update(0.5, 100.0)
  bar.close()
  assert capsys.readouterr().err == ""
  monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
  bar = Progress(3, 1, "epoch 1/1 (joint)", enabled=True)
  bar.update(0.25, 1234.0)
  bar.close()
  assert "epoch 1/1 (joint)" in capsys.readouterr().err
  assert Progress(3, 0, "x", enabled=False).bar is None


# ----------------------------------------------------------------------------- command line


def test_an_override_typo_is_one_clean_line_with_the_suggestion():
  with pytest.raises(SystemExit) as e:
    run_script.SCRIPT(["run", "--config", "synthetic:tiny", "--workdir=/nonexistent/w",
                       "--config.trian.epochs=1"])
  assert e.value.code == (
      "error: invalid config override --config.trian.epochs=1: unknown field 'trian' (Did "
      "you mean \"train\" instead of \"trian\"?); every --config.a.b=value must name an "
      "existing field of the config with a value of its type")
  assert not os.path.exists("/nonexistent/w")


def test_a_bad_setting_is_its_one_line_without_naming_a_config_json_first(capsys):
  with pytest.raises(SystemExit) as e:
    run_script.SCRIPT(["run", "--config", "synthetic:tiny", "--workdir=/nonexistent/w",
                       "--config.train.epochs=0"])
  message = str(e.value.code)
  assert message.startswith("error: ") and "train.epochs" in message and "\n" not in message
  assert "resolved config" not in capsys.readouterr().out
  assert not os.path.exists("/nonexistent/w")


def _scripts():
  """Every script on the shared command-line plumbing (cli.Script), as a module name."""
  top = os.path.join(ROOT, "experiments")
  for folder, _, files in os.walk(top):
    for f in files:
      path = os.path.join(folder, f)
      if f.endswith(".py") and "def define_flags(" in open(path).read():
        if folder != top and os.path.exists(os.path.join(folder, "__main__.py")):
          path = folder + ".py"               # a package run with -m (experiments.bench)
        yield os.path.relpath(path, top)[:-3].replace(os.sep, ".")


EXPERIMENTS = sorted(set(_scripts()))


def test_the_scripts_are_found():
  assert set(SCRIPTS) <= set(EXPERIMENTS)


@pytest.mark.parametrize("script", EXPERIMENTS)
def test_every_script_spells_its_flags_with_underscores(script):
  module = importlib.import_module(f"experiments.{script}")
  fv = flags.FlagValues()
  module.define_flags(fv, ["help"])
  names = [name for name in fv if fv[name].name == name]
  assert names and not [n for n in names if "-" in n]
  assert "dry-run" not in names


def test_every_config_has_a_tiny_preset():
  assert len(available_configs()) >= 7
  for name in available_configs():
    c = importlib.import_module(f"experiments.configs.{name}").get_config("tiny")
    assert c.train.epochs <= 3 and c.train.progress is False and c.train.tensorboard is False
    config_check.check_config(c)
