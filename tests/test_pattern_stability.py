"""Tests for `experiments.studies.pattern_stability` on fake workdirs in the real output format."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax import rectifier
from experiments.studies import pattern_stability as ps

_TASKS = ("task0", "task1")
_MODALITIES = ("m0", "m1", "m2", "m3")
# Pattern ids and shares: two rare patterns (< 50 validation patients) among common ones.
_PATTERNS = np.array([1, 3, 5, 7, 13, 15])
_SHARES = np.array([0.40, 0.25, 0.15, 0.12, 0.05, 0.03])
_SETTINGS = dict(n_folds=5, kappa_grid=(0.0, 0.01, 0.02, 0.05, 0.1),
                 lambda_grid=(0.0, 0.25, 0.5, 0.75, 1.0), z=0.0, min_count=20,
                 shrinkage=20.0, selection="brier")


def _fake_run(directory: str, seed: int = 0, n: int = 1800) -> str:
  """A workdir like `train_and_evaluate`'s: predictions.parquet, results.json, config.json.

  Predictions carry a per-pattern bias (what the rectifier should remove); half the rows
  are validation, half test; a few labels are unknown.
  """
  rng = np.random.default_rng(seed)
  pattern_N = rng.choice(_PATTERNS, size=n, p=_SHARES).astype(np.int32)
  bias_PxT = rng.uniform(-0.12, 0.12, size=(_PATTERNS.size, len(_TASKS)))
  probs_NxT = rng.uniform(0.05, 0.6, size=(n, len(_TASKS))).astype(np.float32)
  truth_NxT = np.clip(probs_NxT + bias_PxT[np.searchsorted(_PATTERNS, pattern_N)], 0, 1)
  labels_NxT = (rng.random((n, len(_TASKS))) < truth_NxT).astype(np.float32)
  labels_NxT[rng.random((n, len(_TASKS))) < 0.03] = np.nan
  split_N = np.where(np.arange(n) % 2 == 0, "val", "test")
  val, test = split_N == "val", split_N == "test"
  rect = rectifier.fit(probs_NxT[val], labels_NxT[val], pattern_N[val], seed=seed,
                       task_names=_TASKS, **_SETTINGS)
  rectified_NxT = np.empty_like(probs_NxT)
  rectified_NxT[val] = rect.oof_probs_NxT
  rectified_NxT[test] = rect.apply(probs_NxT[test], pattern_N[test])
  frame = {"patient_id": np.arange(n, dtype=np.int64) + 1000, "split": split_N,
           "pattern_id": pattern_N}
  for t, task in enumerate(_TASKS):
    frame[f"{task}_label"] = labels_NxT[:, t]
    frame[f"{task}_prob"] = probs_NxT[:, t]
    frame[f"{task}_prob_rectified"] = rectified_NxT[:, t]
  os.makedirs(directory)
  pl.DataFrame(frame).with_columns(
      [pl.col(f"{t}_label").fill_nan(None) for t in _TASKS]).write_parquet(
          os.path.join(directory, "predictions.parquet"))
  results = {"method": "crl_mmnar", "seed": seed, "rectifier": rect.to_dict(),
             "cohort": {"modalities": list(_MODALITIES), "tasks": list(_TASKS)}}
  with open(os.path.join(directory, "results.json"), "w") as f:
    json.dump(results, f)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump({"seed": seed, "rectifier": {k: v for k, v in _SETTINGS.items()
                                           if k != "selection"}}, f)
  return directory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  return _fake_run(str(tmp_path_factory.mktemp("stab") / "seed0"))


def _val_test(directory):
  df = pl.read_parquet(os.path.join(directory, "predictions.parquet"))
  out = {}
  for split in ("val", "test"):
    d = df.filter(pl.col("split") == split)
    stack = lambda s: np.stack([d[f"{t}_{s}"].fill_null(np.nan).to_numpy() for t in _TASKS], 1)
    out[split] = (stack("prob"), stack("label"), d["pattern_id"].to_numpy())
  return out


def test_refits_match_a_naive_loop(run_dir):
  repeats = 5
  rows = ps.pattern_rows(ps.load_run(run_dir), ps.refit(ps.load_run(run_dir), repeats))
  data = _val_test(run_dir)
  fits = [rectifier.fit(*data["val"], seed=r, task_names=_TASKS, **_SETTINGS)
          for r in range(repeats)]
  p_test, y_test, pat_test = data["test"]
  assert len(rows) == len(fits[0].patterns) * len(_TASKS)
  for row in rows:
    i = list(fits[0].patterns).index(row["pattern"])
    t = _TASKS.index(row["task"])
    taus = [f.tau_raw_PxT[i, t] for f in fits]
    shifts = [f.shift_PxT[i, t] for f in fits]
    assert row["n_val"] == fits[0].count_PxT[i, t]
    assert row["rare"] == (row["n_val"] < 50)
    assert row["tau_mean"] == pytest.approx(np.mean(taus), abs=1e-12)
    assert row["tau_sd"] == pytest.approx(np.std(taus, ddof=1), abs=1e-12)
    assert row["shift_sd"] == pytest.approx(np.std(shifts, ddof=1), abs=1e-12)
    assert row["corrected_frac"] == np.mean([f.corrected_PxT[i, t] for f in fits])
    assert row["se"] == pytest.approx(fits[0].se_PxT[i, t], rel=1e-5)
    on = (pat_test == row["pattern"]) & ~np.isnan(y_test[:, t])
    assert row["n_test"] == on.sum()
    refit_RxK = np.stack([f.apply(p_test, pat_test)[on, t] for f in fits])
    assert row["brier_before"] == pytest.approx(np.mean((y_test[on, t] - p_test[on, t]) ** 2))
    assert row["brier_refit"] == pytest.approx(np.mean((y_test[on, t] - refit_RxK) ** 2))
    assert row["resid_refit"] == pytest.approx(np.mean(y_test[on, t] - refit_RxK))
    assert row["pred_sd_refit"] == pytest.approx(np.mean(np.std(refit_RxK, 0, ddof=1)),
                                                 abs=1e-7)
  assert {r["rare"] for r in rows} == {True, False}


def test_test_labels_are_not_used_for_refitting(run_dir, tmp_path):
  flipped = str(tmp_path / "flipped")
  shutil.copytree(run_dir, flipped)
  path = os.path.join(flipped, "predictions.parquet")
  df = pl.read_parquet(path)
  is_test = pl.col("split") == "test"
  df.with_columns([pl.when(is_test).then(1.0 - pl.col(f"{t}_label"))
                   .otherwise(pl.col(f"{t}_label")).alias(f"{t}_label")
                   for t in _TASKS]).write_parquet(path)
  a, b = (ps.analyse([d], repeats=3)["rows"] for d in (run_dir, flipped))
  fitted = ("pattern", "task", "n_val", "rare", "tau_mean", "tau_sd", "se", "shift_mean",
            "shift_sd", "corrected_frac", "pred_sd_refit", "n_test")
  for ra, rb in zip(a, b):
    assert {k: ra[k] for k in fitted} == {k: rb[k] for k in fitted}
  assert any(ra["brier_before"] != rb["brier_before"] for ra, rb in zip(a, b))


def test_half_sampling_keeps_half_of_each_pattern_and_measures_the_se(run_dir):
  run = ps.load_run(run_dir)
  pattern_N = run.val.pattern_N
  rows = ps.half_rows(pattern_N, seed=3)
  assert len(np.unique(rows)) == len(rows)                       # without replacement
  for p in np.unique(pattern_N):
    assert np.sum(pattern_N[rows] == p) == (np.sum(pattern_N == p) + 1) // 2
  np.testing.assert_array_equal(rows, ps.half_rows(pattern_N, seed=3))
  assert not np.array_equal(rows, ps.half_rows(pattern_N, seed=4))
  folds = ps.pattern_rows(run, ps.refit(run, 4, "folds"))
  half = ps.pattern_rows(run, ps.refit(run, 40, "half"))
  assert [r["n_val"] for r in folds] == [r["n_val"] for r in half]   # full-data counts
  assert [r["se"] for r in folds] == [r["se"] for r in half]
  # Fold seeds barely move τ̂ (the mean of K out-of-fold means is nearly the plain
  # mean); half-samples move it by about its standard error (finite-population
  # correction), which is what makes them a measure of sampling variability.
  assert all(r["tau_sd"] < 0.05 * r["se"] for r in folds)
  ratio = [r["tau_sd"] / r["se"] for r in half if not r["rare"]]
  assert 0.75 < np.mean(ratio) < 1.25


def test_pattern_se_is_the_rectifiers(run_dir):
  run = ps.load_run(run_dir)
  fit = rectifier.fit(run.val.probs_NxT, run.val.labels_NxT, run.val.pattern_N,
                      task_names=_TASKS, **_SETTINGS)
  patterns_P, count_PxT, se_PxT = ps.pattern_counts_and_se(run.val)
  np.testing.assert_array_equal(patterns_P, fit.patterns)
  np.testing.assert_array_equal(count_PxT, fit.count_PxT)
  np.testing.assert_allclose(se_PxT, fit.se_PxT, rtol=1e-5)


def test_main_writes_outputs_with_the_sd_over_runs(tmp_path, capsys):
  dirs = [_fake_run(str(tmp_path / f"seed{k}"), seed=k) for k in range(2)]
  out = str(tmp_path / "out")
  ps.SCRIPT(["prog", *dirs, "--repeats=3", f"--out={out}"])
  assert "Long tail" in capsys.readouterr().out
  for name in ("stability.md", "stability.csv", "stability.json"):
    assert os.path.exists(os.path.join(out, name))
  with open(os.path.join(out, "stability.json")) as f:
    result = json.load(f)
  rows = result["rows"]
  assert len(pl.read_csv(os.path.join(out, "stability.csv"))) == len(rows)
  assert {g["group"] for g in result["long_tail"]} == {"rare", "common"}
  for entry in result["across_runs"]:
    taus = [r["tau_mean"] for r in rows
            if r["pattern"] == entry["pattern"] and r["task"] == entry["task"]]
    assert entry["runs"] == 2
    assert entry["tau_sd_runs"] == pytest.approx(np.std(taus, ddof=1))
  for g in result["long_tail"]:
    sel = [r for r in rows if r["rare"] == (g["group"] == "rare") and r["n_test"] > 0]
    w = np.array([r["n_test"] for r in sel])
    assert g["n_test"] == w.sum()
    assert g["brier_refit"] == pytest.approx(np.sum(w * [r["brier_refit"] for r in sel])
                                             / w.sum())


def test_bad_inputs_exit_with_one_line(run_dir, tmp_path):
  with pytest.raises(SystemExit, match="does not exist"):
    ps.SCRIPT(["prog", str(tmp_path / "nope")])
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(SystemExit, match=r"predictions.parquet not found"):
    ps.SCRIPT(["prog", str(empty)])
  partial = tmp_path / "partial"
  shutil.copytree(run_dir, partial)
  os.remove(partial / "results.json")
  with pytest.raises(SystemExit, match=r"results.json not found"):
    ps.SCRIPT(["prog", str(partial)])
  with pytest.raises(SystemExit, match="repeats must be >= 2"):
    ps.SCRIPT(["prog", run_dir, "--repeats=1"])
