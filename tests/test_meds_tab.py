"""experiments/studies/meds_tab.py: MEDS-Tab run on a MEDS root from its own environment.

Always: a missing MEDS-Tab, a folder without its executables, a missing flag, labels file,
data folder or splits file, and a failing step each stop with one line; with stand-in
executables (Python scripts that record their arguments) the plumbing is checked end to
end: the root resharded by its splits, labels moved 1 us earlier for MEDS-Tab and the
predictions written back at the true times, the sweep's arguments, the AUROC. With
$CRL_MMNAR_MEDS_TAB set (the bin folder of a venv with `pip install meds-tab`): MEDS-Tab
itself on a 400-subject synthetic root.
"""

import datetime as dt
import json
import os
import stat
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.metrics import auroc
from experiments.studies import meds_synthetic, meds_tab

US = dt.timedelta(microseconds=1)
# A stand-in for every MEDS-Tab executable: records its arguments; describe writes a
# codes.parquet without static codes; xgboost writes best_trial/ with held_out predictions
# (probability = the shifted time's minute / 60, so the AUROC is known).
FAKE = """#!{python}
import json, os, sys
import polars as pl
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
kv = dict(a.split("=", 1) for a in args if "=" in a)
with open(os.path.join(os.path.dirname(sys.argv[0]), "calls.jsonl"), "a") as f:
  f.write(json.dumps([name, args]) + "\\n")
if name == "meds-tab-describe":
  os.makedirs(kv["output_dir"] + "/metadata", exist_ok=True)
  pl.DataFrame({{"code": ["A/code", "A/value", "B/code"], "count": [50, 50, 3]}}).write_parquet(
      kv["output_dir"] + "/metadata/codes.parquet")
if name == "meds-tab-xgboost" and {write_predictions}:
  work = os.path.dirname(kv["output_model_dir"])
  held = pl.read_parquet(work + "/meds/data/held_out/*.parquet")["subject_id"].unique()
  lab = pl.read_parquet(work + "/labels/" + kv["task_name"] + "/0.parquet").filter(
      pl.col("subject_id").is_in(held.implode()))
  prob = (lab["prediction_time"].dt.minute() / 60).cast(pl.Float64)
  best = kv["output_model_dir"] + "/2000-01-01_00-00-00/best_trial"
  os.makedirs(best)
  lab.select("subject_id", "prediction_time", "boolean_value").with_columns(
      predicted_boolean_value=prob > 0.5, predicted_boolean_probability=prob,
      event_id=pl.lit(0)).write_parquet(best + "/held_out_predictions.parquet")
  with open(best + "/performance.log", "w") as f:
    f.write("trial_name,tuning_auc,test_auc\\n1,0.75,0.5\\n")
sys.exit({exit_code} if name == {failing!r} else 0)
"""
# Run by MEDS-Tab's interpreter: the held_out rows' value/sum features of a workdir.
VALUE_SUMS = """import json, sys
from MEDS_tabular_automl.describe_codes import get_feature_columns
from MEDS_tabular_automl.utils import load_matrix
import polars as pl
w = sys.argv[1]
codes = [c for c in get_feature_columns(w + "/tab/metadata/codes.parquet") if c.endswith("/value")]
x = load_matrix(w + "/tab/task0/task_cache/held_out/0/full/value/sum.npz").toarray()
print(json.dumps({"subjects": pl.read_parquet(w + "/tab/task0/labels/held_out/0.parquet")
                  ["subject_id"].to_list(), "codes": [c[:-len("/value")] for c in codes],
                  "x": x.tolist()}))
"""


def fake_bin(folder, failing="", exit_code=0, write_predictions=True):
  folder.mkdir()
  for step in meds_tab.STEPS:
    path = folder / step
    path.write_text(FAKE.format(python=sys.executable, failing=failing, exit_code=exit_code,
                                write_predictions=write_predictions))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return str(folder)


def calls(folder):
  with open(os.path.join(folder, "calls.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  out = tmp_path_factory.mktemp("medstab") / "root"
  meds_synthetic.write_root(str(out), make_synthetic(200, seed=5), 5)
  return str(out)


def error_line(argv):
  with pytest.raises(SystemExit) as e:
    meds_tab.SCRIPT(["meds_tab", *argv])
  message = str(e.value.code)
  assert message.startswith("error: ") and "\n" not in message, message
  return message


def test_missing_meds_tab_is_one_line(root, tmp_path, monkeypatch):
  monkeypatch.delenv(meds_tab.ENV_VAR, raising=False)
  base = [f"--meds_root={root}", f"--labels={root}/labels/task0.parquet",
          f"--workdir={tmp_path}/w"]
  assert "MEDS-Tab not found" in error_line(base) and meds_tab.ENV_VAR in error_line(base)
  (tmp_path / "empty").mkdir()
  assert "no executable meds-tab-describe" in error_line(base + [f"--meds_tab_bin={tmp_path}/"
                                                                 "empty"])
  monkeypatch.setenv(meds_tab.ENV_VAR, str(tmp_path / "nowhere"))
  assert f"{tmp_path}/nowhere: no executable" in error_line(base)


def test_bad_inputs_are_one_line(root, tmp_path):
  bin_dir = fake_bin(tmp_path / "bin")
  ok = {"meds_root": root, "labels": f"{root}/labels/task0.parquet",
        "workdir": str(tmp_path / "w"), "meds_tab_bin": bin_dir}
  argv = lambda **kw: [f"--{k}={v}" for k, v in {**ok, **kw}.items() if v is not None]
  assert "--labels is required" in error_line(argv(labels=None))
  assert "labels file not found" in error_line(argv(labels=f"{tmp_path}/none.parquet"))
  assert "no data/ folder" in error_line(argv(meds_root=str(tmp_path)))
  bare = tmp_path / "bare"
  (bare / "data").mkdir(parents=True)
  assert "subject_splits.parquet: not found" in error_line(argv(meds_root=str(bare)))
  assert not os.path.exists(os.path.join(bin_dir, "calls.jsonl"))     # nothing ran


def test_a_failing_step_is_one_line_naming_its_log(root, tmp_path):
  bin_dir = fake_bin(tmp_path / "bin", failing="meds-tab-cache-task", exit_code=3)
  message = error_line([f"--meds_root={root}", f"--labels={root}/labels/task0.parquet",
                        f"--workdir={tmp_path}/w", f"--meds_tab_bin={bin_dir}",
                        "--nofix_meds_tab_bugs"])
  assert message.startswith("error: meds-tab-cache-task failed (exit 3)")
  assert message.endswith(f"(log: {tmp_path}/w/logs/cache-task.log)")
  bin2 = fake_bin(tmp_path / "bin2", write_predictions=False)
  assert "wrote no best_trial/held_out_predictions" in error_line(
      [f"--meds_root={root}", f"--labels={root}/labels/task0.parquet",
       f"--workdir={tmp_path}/w2", f"--meds_tab_bin={bin2}", "--nofix_meds_tab_bugs"])


def test_plumbing_with_stand_in_executables(root, tmp_path):
  bin_dir = fake_bin(tmp_path / "bin")
  work = tmp_path / "w"
  out = meds_tab.SCRIPT(["meds_tab", f"--meds_root={root}", f"--workdir={work}",
                         f"--labels={root}/labels/task1.parquet", f"--meds_tab_bin={bin_dir}",
                         "--n_trials=7", "--seed=3", "--nofix_meds_tab_bugs"])
  names = [c[0] for c in calls(bin_dir)]
  assert names == list(meds_tab.STEPS)
  args = dict(calls(bin_dir))
  assert "tabularization.aggs=[code/count,value/count,value/sum,value/sum_sqd,value/min," \
      "value/max]" in args["meds-tab-xgboost"]      # no static code: static/* dropped
  for a in ("--multirun", "hydra.sweeper.n_trials=7", "hydra.sweeper.sampler.seed=3",
            "task_name=task1", f"input_dir={work}/meds/data", "tabularization.window_sizes=[full]"):
    assert a in args["meds-tab-xgboost"], a
  assert f"input_label_dir={work}/labels/task1" in args["meds-tab-cache-task"]
  splits = dict(pl.read_parquet(f"{root}/metadata/subject_splits.parquet").iter_rows())
  for split in ("train", "tuning", "held_out"):     # resharded by the root's splits
    part = pl.read_parquet(f"{work}/meds/data/{split}/*.parquet")
    assert {splits[s] for s in part["subject_id"].unique().to_list()} == {split}
  original = pl.read_parquet(f"{root}/labels/task1.parquet")
  given = pl.read_parquet(f"{work}/labels/task1/0.parquet")
  assert (given["prediction_time"] == original["prediction_time"] - US).all()
  pred = pl.read_parquet(f"{work}/meds_predictions/task1.parquet")
  assert pred.columns == list(meds_tab.PREDICTION_COLUMNS)
  held = original.filter(pl.col("subject_id").is_in(
      [s for s, v in splits.items() if v == "held_out"])).sort("subject_id")
  assert pred.select("subject_id", "prediction_time", "boolean_value").equals(held)
  expected = auroc(held["boolean_value"].cast(pl.Float64).to_numpy(),
                   ((held["prediction_time"] - US).dt.minute()
                    / 60).to_numpy())
  assert out["held_out_auroc"] == pytest.approx(expected)
  assert out["rows"] == {"train": 140, "tuning": 30, "held_out": 30}
  assert out["meds_tab_tuning_auroc"] == 0.75
  assert json.load(open(work / "meds_tab.json"))["held_out_predicted"] == 30


@pytest.mark.skipif(not os.environ.get(meds_tab.ENV_VAR),
                    reason=f"${meds_tab.ENV_VAR} unset (the bin folder of a venv with "
                           f"`pip install meds-tab`)")
def test_meds_tab_end_to_end(tmp_path):
  out_root = tmp_path / "root"
  syn = make_synthetic(400, seed=1)
  meds_synthetic.write_root(str(out_root), syn, 1)
  out = meds_tab.SCRIPT(["meds_tab", f"--meds_root={out_root}",
                         f"--labels={out_root}/labels/task0.parquet",
                         f"--workdir={tmp_path}/w", "--n_trials=2"])
  assert out["meds_tab_version"] == "0.2.0"
  assert out["rows"] == {"train": 280, "tuning": 60, "held_out": 60}
  pred = pl.read_parquet(tmp_path / "w" / "meds_predictions" / "task0.parquet")
  labels = pl.read_parquet(out_root / "labels" / "task0.parquet")
  truth = pl.read_parquet(out_root / "truth.parquet").filter(pl.col("split") == "held_out")
  held = labels.filter(pl.col("subject_id").is_in(truth["subject_id"].implode()))
  assert pred.select("subject_id", "prediction_time", "boolean_value").equals(
      held.sort("subject_id", "prediction_time"))
  assert out["held_out_auroc"] == pytest.approx(out["meds_tab_held_out_auroc"], abs=1e-9)
  assert 0.0 <= out["held_out_auroc"] <= 1.0
  assert np.isfinite(pred["predicted_boolean_probability"].to_numpy()).all()
  assert "value/sum" in out["settings"]["aggs"]
  # The features MEDS-Tab trained on (fixed time-series step): value/sum of every code is
  # the cohort's feature where the modality is observed, 0 (absent) where it is missing.
  with open(os.path.join(os.environ[meds_tab.ENV_VAR], "meds-tab-describe")) as f:
    python = f.readline()[2:].strip()
  got = json.loads(subprocess.run([python, "-c", VALUE_SUMS, str(tmp_path / "w")],
                                  capture_output=True, text=True, check=True).stdout)
  row_of = {s: i for i, s in enumerate(syn.cohort.patient_id.tolist())}
  assert len(got["codes"]) == sum(syn.cohort.input_dims)
  for r, sid in enumerate(got["subjects"]):
    i = row_of[sid]
    for c, code in enumerate(got["codes"]):
      m, j = int(code[1]), int(code.split("//f")[1])
      want = syn.cohort.features[m][i, j] if syn.cohort.present[i, m] else 0.0
      assert np.float32(got["x"][r][c]) == np.float32(want), (sid, code)
