"""Tests for `report.py` and `provenance.py`: the report of real runs (PhysioNet 2012
`tiny`, skipped when ../shared/data is absent, and a synthetic cohort whose patterns are
mostly rare) against independent computations, and the threshold metrics against a
naive loop and scikit-learn."""

import copy
import json
import math
import os
import re
import subprocess
import sys
from importlib import metadata

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax import cells, provenance, report
from crl_mmnar_jax import metrics as metrics_lib
from experiments.configs import physionet2012 as physionet_config
from experiments.configs import synthetic as synthetic_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P12_DIR = os.path.join(ROOT, "..", "shared", "data", "physionet2012")
COUNT_COLUMNS = ("n", "n (test)", "n (val)", "n_pos")
PNGS = ("roc.png", "calibration.png", "tau.png", "learning_curve.png")


def _run(config, workdir):
  """One run; without L_rec and L_con (the report does not depend on them), which
  halves the compilation."""
  from crl_mmnar_jax.experiment import train_and_evaluate
  config.model.use_reconstruction = config.model.use_contrastive = False
  logs: list[str] = []
  train_and_evaluate(config, str(workdir), log=logs.append)
  return {"workdir": workdir, "logs": logs, "config": config,
          "results": json.loads((workdir / "results.json").read_text()),
          "report": (workdir / "report.md").read_text()}


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
  """8 modalities, 1,200 patients: 114 patterns, two of them with 10 test patients."""
  c = synthetic_config.get_config("tiny")
  c.data.n, c.data.n_modalities = 1200, 8
  c.train.epochs = 2
  c.eval.n_boot, c.eval.min_pattern_count = 30, 10
  return _run(c, tmp_path_factory.mktemp("report_synthetic") / "run")


@pytest.fixture(scope="module")
def p12_run(tmp_path_factory):
  if not os.path.isdir(P12_DIR):
    pytest.skip(f"PhysioNet 2012 not found at {P12_DIR}")
  c = physionet_config.get_config("tiny")
  c.train.epochs = 1
  c.eval.n_boot = 30
  return _run(c, tmp_path_factory.mktemp("report_p12") / "run")


@pytest.fixture(params=["synthetic", "physionet2012"])
def run(request):
  return request.getfixturevalue("synthetic_run" if request.param == "synthetic"
                                 else "p12_run")


def _tables(markdown: str) -> list[list[dict]]:
  """Every markdown table as a list of {header: cell} rows."""
  tables, header, rows = [], None, []
  for line in markdown.splitlines() + [""]:
    if line.startswith("|"):
      cellv = [c.strip() for c in line.strip().strip("|").split("|")]
      if header is None:
        header = cellv
      elif not set("".join(cellv)) <= set("-"):
        rows.append(dict(zip(header, cellv)))
    elif header is not None:
      tables.append(rows)
      header, rows = None, []
  return tables


# ----------------------------------------------------------------------------- report


def test_no_table_reads_only_na(run):
  tables = _tables(run["report"])
  assert len(tables) >= 8
  for rows in tables:
    assert rows, "an empty table"
    cells_ = [v for r in rows for v in r.values()]
    assert any(re.fullmatch(r"[+-]?\d+\.\d+( \[.*\])?", v) for v in cells_), rows[:3]


def test_no_count_below_the_minimum_cell_size(run):
  k = int(run["config"].eval.min_pattern_count)
  results = run["results"]
  assert results["min_cell_size"] == k

  def walk(x):
    if isinstance(x, dict):
      for key, v in x.items():
        if key in cells.COUNT_KEYS + ("n_pos",) and isinstance(v, int):
          assert v == 0 or v >= k, (key, v)
        walk(v)
    elif isinstance(x, list):
      for v in x:
        walk(v)
  walk(results)
  for rows in _tables(run["report"]):
    for r in rows:
      for col in COUNT_COLUMNS:
        if r.get(col, "").isdigit():
          assert int(r[col]) == 0 or int(r[col]) >= k, (col, r)
  for m in re.finditer(r"\bn=(\d+)", run["report"]):
    assert int(m.group(1)) >= k


def test_per_pattern_rows_are_large_patterns_named_by_modality(run):
  k = int(run["config"].eval.min_pattern_count)
  results = run["results"]
  names = results["cohort"]["modalities"]
  table = next(t for t in _tables(run["report"]) if "Δ Brier [95% CI]" in t[0])
  assert len(table) == sum(len(v) for v in results["per_pattern"]["test"].values())
  for r in table:
    label = r["observed modalities"]
    if label.startswith("other: "):
      assert r["AUROC"] != "n/a" or r["n (test)"] == "0"
    else:
      named = label.removeprefix("all but ").split("+")
      assert label == "all" or set(named) <= set(names), label
      assert int(r["n (test)"]) >= k
  for rows in results["per_pattern"]["test"].values():
    assert [r["pattern"] for r in rows].count(cells.OTHER) <= 1


def test_every_png_is_smaller_than_2000_px(run):
  from PIL import Image
  for name in PNGS:
    with Image.open(run["workdir"] / name) as im:
      assert max(im.size) < 2000, (name, im.size)
    assert f"![{name}]({name})" in run["report"]


def test_learning_curve_follows_the_training_history(run):
  series = report.learning_history(str(run["workdir"]), run["results"])
  history = run["results"]["training"]["history"]
  assert sorted(series["val/mean_auroc"]) == list(range(1, len(history) + 1))
  for h in history:   # the history and metrics.jsonl agree, epochs numbered from 1
    assert series["val/mean_auroc"][h["epoch"]] == pytest.approx(h["val_mean_auroc"])
  assert run["results"]["training"]["best_epoch"] in series["val/mean_auroc"]


def _naive_rates(y, p, threshold):
  tp = fp = tn = fn = 0
  for yi, pi in zip(y, p):
    flagged = pi >= threshold
    tp, fp = tp + (flagged and yi == 1), fp + (flagged and yi == 0)
    tn, fn = tn + (not flagged and yi == 0), fn + (not flagged and yi == 1)
  div = lambda a, b: a / b if b else math.nan
  return div(tp, tp + fn), div(tn, tn + fp), div(tp, tp + fp)


def _naive_threshold(y, p, target):
  """The largest candidate threshold (a score) whose sensitivity reaches `target`."""
  best = -math.inf
  for t in sorted(set(p)):
    if _naive_rates(y, p, t)[0] >= target:
      best = max(best, t)
  return best


def test_operating_points_equal_a_naive_computation(run):
  wd, results = run["workdir"], run["results"]
  frame = pl.read_parquet(wd / "predictions.parquet")
  other = wd / "reference_predictions.parquet"
  if other.exists():
    extra = pl.read_parquet(other)
    assert extra["patient_id"].to_list() == frame["patient_id"].to_list()
    frame = frame.hstack(extra.drop("patient_id", "split"))
  op = results["operating_points"]
  suffix = {"model": "prob", "rectified": "prob_rectified",
            "logreg_mean_impute": "prob_reference", "oracle": "prob_oracle"}
  assert set(op["models"]) >= {"model", "rectified", "logreg_mean_impute"}
  assert ("oracle" in op["models"]) == (results["cohort"]["name"] == "synthetic")
  for name, by_task in op["models"].items():
    for t, rows in by_task.items():
      split = {s: frame.filter((pl.col("split") == s) & pl.col(f"{t}_label").is_not_null())
               for s in ("val", "test")}
      y = {s: split[s][f"{t}_label"].to_list() for s in split}
      p = {s: split[s][f"{t}_{suffix[name]}"].to_list() for s in split}
      chosen = _naive_threshold(y["val"], p["val"], op["target_sensitivity"])
      expected = list(op["thresholds"]) + [chosen]
      assert [r["threshold"] for r in rows] == pytest.approx(expected, rel=1e-6)
      for r in rows:
        sens, spec, ppv = _naive_rates(y["test"], p["test"], r["threshold"])
        got = [r[k] if r[k] is not None else math.nan
               for k in ("sensitivity", "specificity", "ppv")]
        np.testing.assert_allclose(got, [sens, spec, ppv], rtol=1e-12)


def test_method_minus_reference_is_paired_and_recomputes(run):
  from sklearn.metrics import roc_auc_score
  wd, results = run["workdir"], run["results"]
  frame = pl.read_parquet(wd / "predictions.parquet").hstack(
      pl.read_parquet(wd / "reference_predictions.parquet").drop("patient_id", "split"))
  test = frame.filter(pl.col("split") == "test")
  d = results["reference_delta"]["logreg_mean_impute"]
  for t, e in d["overall"].items():
    known = test.filter(pl.col(f"{t}_label").is_not_null())
    y = known[f"{t}_label"].to_numpy()
    method = roc_auc_score(y, known[f"{t}_prob"].to_numpy())
    ref = roc_auc_score(y, known[f"{t}_prob_reference"].to_numpy())
    assert e["auroc"]["method"] == pytest.approx(method, abs=1e-9)
    assert e["auroc"]["reference"] == pytest.approx(ref, abs=1e-9)
    assert e["auroc"]["reference"] == pytest.approx(
        results["reference"]["logreg_mean_impute"][t]["auroc"], abs=1e-9)
    assert e["auroc"]["delta"] == pytest.approx(method - ref, abs=1e-9)
    assert e["auroc"]["lo"] <= e["auroc"]["hi"]
  ci = results["reference"]["logreg_mean_impute"][t]["ci95"]["auroc"]
  assert ci[0] <= results["reference"]["logreg_mean_impute"][t]["auroc"] <= ci[1]


def test_provenance_is_recorded_and_correct(run):
  p = run["results"]["provenance"]
  for name in provenance.PACKAGES:
    assert p["packages"][name] == metadata.version(name)
  assert p["packages"]["python"] == ".".join(map(str, sys.version_info[:3]))
  assert p["argv"] == sys.argv
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                        text=True)
  if head.returncode == 0:
    assert p["git"]["commit"] == head.stdout.strip()
    assert isinstance(p["git"]["dirty"], bool)
    assert f"`{p['git']['commit']}`" in run["report"]
  else:
    assert p["git"] == {"commit": None, "dirty": None}


def test_smoke_runs_say_their_numbers_mean_nothing(run, tmp_path):
  assert run["results"]["smoke"] is True
  assert run["report"].count(report.SMOKE_NOTE) == 2
  assert run["logs"].count(report.SMOKE_NOTE) == 2
  results = copy.deepcopy(run["results"])
  results["smoke"] = False
  pred = pl.read_parquet(run["workdir"] / "predictions.parquet")
  text = open(report.write_report(str(tmp_path), results, pred,
                                  results["cohort"]["modalities"], plots=False)).read()
  assert report.SMOKE_NOTE not in text and "SMOKE" not in text


# ----------------------------------------------------------------------------- units


def test_threshold_metrics_equal_sklearn_confusion_matrix():
  from sklearn.metrics import confusion_matrix
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 300).astype(float)
  p = np.round(rng.uniform(size=300), 2)              # ties, and scores on the thresholds
  y[rng.choice(300, 20, replace=False)] = np.nan      # unknown labels are dropped
  thresholds = [0.0, 0.1, 0.25, 0.5, 0.73, 1.0, 1.5]
  rows = metrics_lib.threshold_metrics(y, p, thresholds)
  known = ~np.isnan(y)
  for r, t in zip(rows, thresholds):
    tn, fp, fn, tp = confusion_matrix(y[known], p[known] >= t, labels=[0, 1]).ravel()
    assert r["threshold"] == t
    assert r["sensitivity"] == tp / (tp + fn)
    assert r["specificity"] == tn / (tn + fp)
    assert (math.isnan(r["ppv"]) if tp + fp == 0 else r["ppv"] == tp / (tp + fp))
  assert math.isnan(rows[-1]["ppv"])        # nobody flagged
  one_class = metrics_lib.threshold_metrics([0, 0, 1.0 * 0], [0.2, 0.4, 0.6], [0.3])[0]
  assert math.isnan(one_class["sensitivity"]) and one_class["specificity"] == 1 / 3


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_threshold_for_sensitivity_equals_a_naive_search(target):
  rng = np.random.default_rng(1)
  y = rng.integers(0, 2, 200).astype(float)
  p = np.round(rng.uniform(size=200), 2)
  t = metrics_lib.threshold_for_sensitivity(y, p, target)
  assert t == _naive_threshold(list(y), list(p), target)
  assert _naive_rates(y, p, t)[0] >= target
  assert math.isnan(metrics_lib.threshold_for_sensitivity([0, 0], [0.1, 0.2], target))
  with pytest.raises(ValueError, match="target sensitivity"):
    metrics_lib.threshold_for_sensitivity(y, p, 0.0)


def test_git_state_outside_a_checkout_and_without_git(tmp_path, monkeypatch):
  assert provenance.git_state(str(tmp_path)) == {"commit": None, "dirty": None}
  monkeypatch.setenv("PATH", str(tmp_path))          # no git executable at all
  assert provenance.git_state() == {"commit": None, "dirty": None}
  record = provenance.gather(["a", "b"])
  assert record["argv"] == ["a", "b"] and record["git"]["commit"] is None
  assert provenance.package_versions(["no-such-package-x"])["no-such-package-x"] is None


def _fake_results(n_tasks: int, n_patterns: int, n_modalities: int) -> dict:
  """A results dict with many large patterns, for the plots' sizes."""
  rng = np.random.default_rng(0)
  tasks = [f"task{i}" for i in range(n_tasks)]
  table = [{"task": t, "pattern": int(p), "n": int(rng.integers(20, 500)),
            "tau_raw": float(rng.normal(0, 0.05)), "se": 0.01, "tau": 0.0,
            "corrected": bool(p % 2)} for t in tasks for p in range(1, n_patterns + 1)]
  table += [{"task": t, "pattern": cells.OTHER, "n": 300, "patterns": 90, "tau_raw": 0.01,
             "se": None, "tau": None, "corrected": 3} for t in tasks]
  return {"cohort": {"tasks": tasks, "modalities": [f"mod{i}" for i in range(n_modalities)]},
          "rectifier": {"table": table}, "min_cell_size": 20, "training": {}}


@pytest.mark.parametrize("n_tasks", [1, 9])
def test_plots_stay_small_for_many_patterns_and_tasks(tmp_path, n_tasks):
  from PIL import Image
  results = _fake_results(n_tasks, 120, 11)
  names = results["cohort"]["modalities"]
  rng = np.random.default_rng(2)
  frame = {"split": ["test"] * 200}
  for t in results["cohort"]["tasks"]:
    frame[f"{t}_label"] = rng.integers(0, 2, 200).astype(float)
    frame[f"{t}_prob"] = rng.uniform(size=200)
  test = pl.DataFrame(frame)
  files = [report.tau_plot(str(tmp_path), results, names),
           report.roc_plot(str(tmp_path), results, test),
           report.calibration_plot(str(tmp_path), results, test, 20)]
  for name in files:
    with Image.open(tmp_path / name) as im:
      assert max(im.size) < 2000, (name, im.size)
  assert report.TOP_PATTERNS == 15
  assert report.pattern_name((1 << 11) - 1 - 4, names) == "all but mod2"
  assert report.pattern_name(0b101, names) == "mod0+mod2"
  assert report.pattern_name(0b101, names[:3]) == "mod0+mod2"
  assert report.pattern_name((1 << 11) - 1, names) == "all"
  assert len(report.pattern_name(0b111111, names, 20)) == 20
  assert report.pattern_name(cells.OTHER, names) == "other (pooled)"


def test_learning_history_reads_both_metrics_formats(tmp_path):
  """Epoch lines (`"kind": "epoch"`, epochs from 1) hold the epoch means; older files
  numbered epochs from 0 and logged losses on step lines only, averaged here."""
  new = [{"kind": "step", "epoch": 1, "batch/total": 9.0},
         {"kind": "epoch", "epoch": 1, "train/total": 2.0, "train/grad_norm": 5.0,
          "val/mean_auroc": 0.6, "val/t/loss": 0.5},
         {"kind": "epoch", "epoch": 2, "train/total": 1.0, "val/mean_auroc": 0.7}]
  (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, new)) + "\n{\"torn")
  series = report.learning_history(str(tmp_path), {})
  assert series == {"train/total": {1: 2.0, 2: 1.0}, "val/mean_auroc": {1: 0.6, 2: 0.7},
                    "val/t/loss": {1: 0.5}}
  old = [{"step": 5, "epoch": 0, "train/total": 3.0}, {"step": 10, "epoch": 0,
                                                        "train/total": 2.0},
         {"step": 14, "epoch": 0, "train/patients_per_s": 10.0, "val/mean_auroc": 0.55}]
  (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, old)) + "\n")
  assert report.learning_history(str(tmp_path), {}) == {
      "train/total": {1: 2.5}, "val/mean_auroc": {1: 0.55}}
  os.remove(tmp_path / "metrics.jsonl")
  history = {"training": {"history": [{"epoch": 1, "val_mean_auroc": 0.5},
                                      {"epoch": 2, "val_mean_auroc": 0.6}]}}
  assert report.learning_history(str(tmp_path), history) == {
      "val/mean_auroc": {1: 0.5, 2: 0.6}}


def test_rectifier_table_says_when_the_auroc_guard_dropped_a_passed_correction():
  row = {"kappa": 1.0, "lambda": 0.5, "cv_delta": -0.01, "cv_se": 0.001, "bound": -0.008,
         "passed": True}
  results = {"rectifier": {
      "task_names": ["a", "b", "c"], "kappa": {"a": 1.0, "b": 1.0, "c": 1.0},
      "lambda": {"a": 0.5, "b": 0.0, "c": 0.0}, "table": [],
      "selection_test": {"a": dict(row, dropped_by_auroc_guard=False),
                         "b": dict(row, dropped_by_auroc_guard=True),
                         "c": dict(row, passed=False, dropped_by_auroc_guard=False)}}}
  rows = {line.split("|")[1].strip(): line.split("|")[-2].strip()
          for line in report.rectifier_table(results, ["m0"])[2:5]}
  assert rows == {"a": "yes", "b": "yes, dropped by the AUROC guard (not corrected)",
                  "c": "no"}
