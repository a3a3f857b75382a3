"""The sweep runner: its plan, its table (against numpy) and an end-to-end tiny sweep."""

import json
import os

import numpy as np
import polars as pl
import pytest

from experiments import sweep


def test_plan_names_overrides_and_dedup():
  runs = sweep.plan(["crl_mmnar", "logreg"], ["ablations"], ["loss.con=0.1,1.0"])
  names = [r.name for r in runs]
  assert names == ["crl_mmnar", "logreg", "crl_mmnar/no_missingness",
                   "crl_mmnar/no_reconstruction", "crl_mmnar/no_contrastive",
                   "crl_mmnar[loss.con=0.1]", "crl_mmnar[loss.con=1.0]"]
  by = {r.name: r for r in runs}
  assert by["crl_mmnar/no_reconstruction"].overrides == (("loss.rec", "0.0"),)
  assert by["crl_mmnar[loss.con=1.0]"].overrides == (("loss.con", "1.0"),)
  grid = sweep.plan([], [], ["loss.con=0,1", "config.train.lr=1e-3,1e-4"])
  assert len(grid) == 4 and grid[-1].overrides == (("loss.con", "1"), ("train.lr", "1e-4"))
  args = by["logreg"].args("synthetic:tiny", "/w", 3, (("train.epochs", "2"),))
  assert args[2:] == ["experiments.run", "--config=synthetic:tiny", "--workdir=/w",
                      "--config.seed=3", "--config.method=logreg", "--config.train.epochs=2"]
  assert sweep.run_dir("/w", by["crl_mmnar[loss.con=1.0]"], 2) == \
      "/w/runs/crl_mmnar_loss.con_1.0_/seed2"
  assert sweep.run_dir("/w", by["crl_mmnar/no_reconstruction"], 0) == \
      "/w/runs/crl_mmnar_no_reconstruction/seed0"
  with pytest.raises(SystemExit, match="unknown variant 'no_such'"):
    sweep.plan([], ["no_such"], [])
  with pytest.raises(SystemExit, match="nothing to run"):
    sweep.plan([], [], [])


def _res(a, b, ci=None):
  view = lambda v: {"mean": {"auroc": v, "auprc": v / 2, "brier": 1 - v, "ece": 0.01,
                             **({"ci95": {"auroc": ci}} if ci else {})}}
  return {"metrics": {"test": view(a), "test_rectified": view(b)}}


def test_comparison_rows_against_numpy():
  results = {"crl_mmnar": {0: _res(0.80, 0.81, [0.7, 0.9]), 1: _res(0.84, 0.83, [0.74, 0.94])},
             "logreg": {0: _res(0.78, 0.78), 1: _res(0.79, 0.80), 2: _res(0.70, 0.71)}}
  rows = sweep.comparison_rows(results, ["mean"])
  get = {(r["run"], r["rectifier"]): r for r in rows}
  first = get[("crl_mmnar", False)]
  assert first["auroc"] == pytest.approx((0.82, np.std([0.80, 0.84], ddof=1)))
  assert first["auroc_ci95"] == pytest.approx((0.72, 0.92))
  lr = get[("logreg", True)]
  assert lr["n_seeds"] == 3 and lr["auroc"][0] == pytest.approx(np.mean([0.78, 0.80, 0.71]))
  # Paired difference over the seeds both runs have (0 and 1), rectified view.
  d = [0.78 - 0.81, 0.80 - 0.83]
  assert lr["delta_auroc"] == pytest.approx((np.mean(d), np.std(d, ddof=1)))
  assert lr["n_paired"] == 2 and lr["auroc_ci95"] is None
  table = sweep.markdown(rows, "crl_mmnar")
  assert "| crl_mmnar | no | mean | 2 | 0.820 ± 0.028 | [0.720, 0.920] | — |" in table
  summary = sweep.summary_markdown(rows, "mean", "crl_mmnar")
  assert "| crl_mmnar | 2 | 0.820 ± 0.028 | 0.820 ± 0.014 | — |" in summary
  assert f"| logreg | 3 | {np.mean([0.78, 0.79, 0.70]):.3f} ± " in summary
  csv_lines = sweep.to_csv(rows).splitlines()
  assert len(csv_lines) == 1 + len(rows) and csv_lines[0].startswith("run,rectifier,task")


@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path, capsys):
  work = str(tmp_path / "sw")
  argv = ["--config=synthetic:tiny", f"--workdir={work}", "--seeds=1", "--methods=crl_mmnar",
          "--variants=no_contrastive", "--set=data.n=300", "--set=train.epochs=1",
          "--set=eval.n_boot=0", "--set=eval.plots=False", "--kappas=0,0.05"]
  assert sweep.SCRIPT(["sweep", *argv]) == 0
  for name in ("summary.md", "comparison.md", "comparison.csv", "comparison.png", "kappa.md",
               "sweep.json"):
    assert os.path.exists(os.path.join(work, name)), name
  runs = sweep.plan(["crl_mmnar"], ["no_contrastive"], [])
  # Both runs used the same patient-level split.
  splits = [pl.read_parquet(os.path.join(sweep.run_dir(work, r, 0), "splits.parquet"))
            for r in runs]
  assert splits[0].equals(splits[1])
  # The table's numbers are the runs' own results.
  res = json.load(open(os.path.join(sweep.run_dir(work, runs[1], 0), "results.json")))
  assert res["method"] == "crl_mmnar"
  rows = sweep.comparison_rows(sweep.load_results(work, runs, [0]), ["mean"])
  r = next(r for r in rows if r["run"] == "crl_mmnar/no_contrastive" and not r["rectifier"])
  assert r["auroc"][0] == pytest.approx(res["metrics"]["test"]["mean"]["auroc"])
  # Rerun: everything is reused.
  capsys.readouterr()
  assert sweep.SCRIPT(["sweep", *argv]) == 0
  assert capsys.readouterr().out.count(": reused") == 2
  # The same run names with another config are refused, not silently reused.
  assert sweep.SCRIPT(["sweep", *argv[:-1], "--set=train.epochs=2"]) == 1
  status = json.load(open(os.path.join(work, "sweep.json")))["status"]
  assert all(s["status"] == "failed" and "another config" in s["error"] for s in status)
