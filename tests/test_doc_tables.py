"""The docs' tables of the shipped defaults are written from the runs they quote
(experiments/doc_tables.py): a stale figure fails here."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from experiments import doc_tables

ROOT = doc_tables.ROOT


def _text(name):
  with open(os.path.join(ROOT, name)) as f:
    return f.read()


def test_every_documented_default_figure_matches_its_source_file():
  found = 0
  for name in doc_tables.DOCS:
    for src, body, want in doc_tables.blocks(_text(name)):
      found += 1
      assert body == want, (f"{name}: the table from {src} is stale; run python -m "
                            f"experiments.doc_tables --write")
  assert found >= 1            # results.md: the default synthetic run


def test_the_readme_first_command_states_the_measured_time():
  """README's first command says how long it took: the wall time recorded with the run
  that results.md's first table quotes."""
  with open(os.path.join(ROOT, "docs/runs/synthetic_seed0.json")) as f:
    run = json.load(f)
  first = next(line for line in _text("README.md").splitlines() if line.startswith("# 1."))
  assert f"({doc_tables.minutes(run['wall_s'])} measured on an idle 2-core CPU" in first
  mean = run["results"]["metrics"]["test"]["mean"]["auroc"]
  assert f"test mean AUROC {mean:.4f}" in first


def test_a_changed_figure_is_caught():
  """Change one digit of a documented figure: the check names the block."""
  text = _text("docs/results.md")
  block = doc_tables.BLOCK.search(text)
  figure = re.search(r"\d\.\d{3}", block["body"])
  digit = figure.end() - 1
  at = block.start("body") + digit
  changed = text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:]
  stale = [src for src, body, want in doc_tables.blocks(changed) if body != want]
  assert stale == [block["src"]]
  assert doc_tables.blocks(doc_tables.rewrite(changed)) == doc_tables.blocks(text)


def test_the_source_files_agree_with_themselves():
  """Each source's mean AUROC is the mean of its tasks' (as results.json writes it), the
  interval holds the estimate, and the best epoch is one of the epochs run."""
  sources = {src for name in doc_tables.DOCS
             for src, _, _ in doc_tables.blocks(_text(name))}
  for src in sources:
    with open(os.path.join(ROOT, src)) as f:
      r = json.load(f)["results"]
    for part in ("test", "test_rectified"):
      m = r["metrics"][part]
      aurocs = [m[t]["auroc"] for t in r["cohort"]["tasks"]]
      assert m["mean"]["auroc"] == pytest.approx(np.mean(aurocs), abs=1e-12), src
      for t in r["cohort"]["tasks"]:
        lo, hi = m[t]["ci95"]["auroc"]
        assert lo <= m[t]["auroc"] <= hi
    assert 1 <= r["training"]["best_epoch"] <= r["training"]["epochs_run"]


def test_render_writes_the_figures_it_is_given():
  tasks = ["a", "b"]
  task = lambda auroc: {"auroc": auroc, "brier": 0.1, "ece": 0.02,
                        "ci95": {"auroc": [auroc - 0.01, auroc + 0.01]}}
  metrics = {"a": task(0.8), "b": task(0.7), "mean": {"auroc": 0.75, "brier": 0.1,
                                                       "ece": 0.02}}
  summary = {"command": "cmd", "wall_s": 95.0, "results": {
      "seed": 3, "cohort": {"tasks": tasks, "n_test": 3000},
      "training": {"best_epoch": 9, "epochs_run": 14},
      "metrics": {"test": metrics, "test_rectified": metrics},
      "reference": {"logreg_mean_impute": dict(metrics, mean={"auroc": 0.7, "brier": 0.2,
                                                             "ece": 0.03})},
      "rectifier": {"lambda": {"a": 0.25, "b": 0.0}}}}
  text = doc_tables.render(summary)
  assert "| CRL-MMNAR | 0.800 [0.790, 0.810] | 0.700 [0.690, 0.710] | 0.7500 | 0.1000 |" in text
  assert "| logistic regression, mean imputation + indicators | 0.800 | 0.700 | 0.7000 |" in text
  assert "3,000 test patients, seed 3, best epoch 9 of 14" in text
  assert "1 min 35 s for the whole command" in text
  assert "+0.050 mean AUROC from the logistic regression." in text
  assert "Rectifier λ: a 0.25, b 0." in text
