"""experiments.compare: paired differences across runs of different configs."""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pytest

from experiments import compare


def _run(folder, raw, rect, split_seed):
  os.makedirs(folder, exist_ok=True)
  task = {"auroc": raw, "ci95": {"auroc": [raw - 0.05, raw + 0.04], "brier": [0.1, 0.2]}}
  results = {"metrics": {"test": {"t": task, "mean": {"auroc": raw}},
                         "test_rectified": {"t": dict(task, auroc=rect),
                                            "mean": {"auroc": rect}}}}
  with open(os.path.join(folder, "results.json"), "w") as f:
    json.dump(results, f)
  rng = np.random.default_rng(split_seed)
  pl.DataFrame({"patient_id": np.arange(20),
                "split": rng.choice(["train", "val", "test"], 20)}).write_parquet(
                    os.path.join(folder, "splits.parquet"))


def test_paired_table_against_numpy(tmp_path):
  a = [0.80, 0.82, 0.79]
  b = [0.81, 0.85, 0.78]
  b_rect = [0.81, 0.84, 0.79]
  for s in range(3):
    _run(tmp_path / "a" / f"s{s}", a[s], a[s], s)
    _run(tmp_path / "b" / f"s{s}", b[s], b_rect[s], s)
  text = compare.SCRIPT(["compare", f"--run=A=x={tmp_path}/a/s{{seed}}",
                         f"--run=B={tmp_path}/b/s{{seed}}", "--seeds=0,1,2"])
  rows = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
  assert set(rows) == {"A=x", "B"}               # the label may hold "="
  d = np.array(b) - np.array(a)
  assert f"{d.mean():+.4f} ± {np.std(d, ddof=1):.4f}" in rows["B"]
  assert "2 of 3" in rows["B"]
  assert f"{np.mean(b):.4f} ± {np.std(b, ddof=1):.4f}" in rows["B"]
  assert f"{np.mean(np.array(b_rect) - b):+.4f}" in rows["B"]
  assert f"[{np.mean(b) - 0.05:.3f}, {np.mean(b) + 0.04:.3f}]" in rows["B"]


def test_runs_on_other_splits_are_refused(tmp_path):
  _run(tmp_path / "a" / "s0", 0.8, 0.8, 0)
  _run(tmp_path / "b" / "s0", 0.8, 0.8, 1)
  with pytest.raises(SystemExit, match="splits.parquet differs"):
    compare.SCRIPT(["compare", f"--run=A={tmp_path}/a/s{{seed}}",
                    f"--run=B={tmp_path}/b/s{{seed}}", "--seeds=0"])
  with pytest.raises(SystemExit, match="LABEL=PATH"):
    compare.SCRIPT(["compare", "--run=nopath", f"--run=B={tmp_path}/b/s{{seed}}"])


def test_interval_over_test_patients_against_a_naive_loop(tmp_path):
  """One seed, two runs' predictions of the same 300 test patients (two tasks, one with
  unknown labels): the interval equals a loop over the same resamples with sklearn."""
  from sklearn.metrics import roc_auc_score
  rng = np.random.default_rng(0)
  n = 300
  y = rng.integers(0, 2, (n, 2)).astype(float)
  y[rng.random(n) < 0.2, 1] = np.nan
  probs = {"a": np.clip(0.5 * np.nan_to_num(y) + rng.random((n, 2)), 0, 1),
           "b": np.clip(0.8 * np.nan_to_num(y) + rng.random((n, 2)), 0, 1)}
  for name, p in probs.items():
    _run(tmp_path / name / "s0", 0.8, 0.8, 0)
    pl.DataFrame({"patient_id": np.arange(n)[::-1], "split": ["test"] * n,
                  "t_label": y[::-1, 0], "t_prob": p[::-1, 0],
                  "u_label": y[::-1, 1], "u_prob": p[::-1, 1]}).write_parquet(
                      tmp_path / name / "s0" / "predictions.parquet")
  text = compare.SCRIPT(["compare", f"--run=A={tmp_path}/a/s{{seed}}",
                         f"--run=B={tmp_path}/b/s{{seed}}", "--seeds=0", "--n_boot=200"])
  cell = text.splitlines()[3].split("|")[-2].strip()
  # The naive loop: per task, resample its labelled rows (bootstrap_samples' protocol).
  deltas = np.zeros((2, 200))
  for t in range(2):
    known = ~np.isnan(y[:, t])
    yt, pa, pb = y[known, t], probs["a"][known, t], probs["b"][known, t]
    draw = np.random.default_rng(0)
    for j in range(200):
      i = draw.integers(0, len(yt), size=len(yt))
      deltas[t, j] = roc_auc_score(yt[i], pb[i]) - roc_auc_score(yt[i], pa[i])
  lo, hi = np.quantile(deltas.mean(0), [0.025, 0.975])
  assert cell == f"[{lo:+.4f}, {hi:+.4f}]" and lo > 0
