"""The multi-run summary equals numpy on hand-made results."""

import json

import numpy as np
import pytest

from experiments import summarize


def _results(auroc, auroc_rect, ref, ci):
  view = lambda a: {"mean": {"auroc": a, "auprc": a / 2, "brier": 0.1, "ece": 0.02,
                             "ci95": {"auroc": ci}}}
  return {"metrics": {"test": view(auroc), "test_rectified": view(auroc_rect)},
          "reference": {"logreg": {"mean": {"auroc": ref, "auprc": 0.3, "brier": 0.2,
                                            "ece": 0.05}}}}


def test_summary_rows_mean_sd_and_ci(tmp_path):
  runs = [_results(0.80, 0.81, 0.70, [0.75, 0.85]), _results(0.84, 0.83, 0.74, [0.79, 0.89])]
  dirs = []
  for i, r in enumerate(runs):
    d = tmp_path / f"seed{i}"
    d.mkdir()
    (d / "results.json").write_text(json.dumps(r))
    dirs.append(str(d))
  rows = summarize.summary_rows(summarize.load(dirs))
  assert [r["model"] for r in rows] == ["CRL-MMNAR", "CRL-MMNAR + rectifier", "logreg (reference)"]
  assert rows[0]["auroc"] == pytest.approx((0.82, np.std([0.80, 0.84], ddof=1)))
  assert rows[1]["auroc"][0] == pytest.approx(0.82)
  assert rows[2]["auroc"] == pytest.approx((0.72, np.std([0.70, 0.74], ddof=1)))
  assert rows[0]["auroc_ci95"] == pytest.approx((0.77, 0.87))
  assert rows[2]["auroc_ci95"] is None
  table = summarize.markdown(rows)
  assert "| CRL-MMNAR | 2 | 0.820 ± 0.028 | [0.770, 0.870] |" in table


def test_command_line_prints_the_table_of_the_task(tmp_path, capsys):
  dirs = []
  for i, auroc in enumerate((0.80, 0.84)):
    d = tmp_path / f"seed{i}"
    d.mkdir()
    (d / "results.json").write_text(json.dumps(_results(auroc, auroc, 0.7, [0.7, 0.9])))
    dirs.append(str(d))
  summarize.SCRIPT(["summarize", dirs[0], "--task", "mean", dirs[1]])
  assert "| CRL-MMNAR | 2 | 0.820 ± 0.028 | [0.700, 0.900] |" in capsys.readouterr().out
  with pytest.raises(SystemExit, match="python -m experiments.summarize"):
    summarize.SCRIPT(["summarize", "--task=mean"])       # no run directory: the usage
  with pytest.raises(SystemExit, match="--task=nope is not in .*; known: mean$"):
    summarize.SCRIPT(["summarize", *dirs, "--task=nope"])
