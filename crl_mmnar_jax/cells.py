"""The minimum cell size of everything that leaves a run (docs/design.md, Evaluation).

`results.json` and `report.md` are meant to be shared; `predictions.parquet` and
`rectifier.json` are per patient / per pattern and stay with the data. Before the
results are written:

* patterns with fewer than K (`eval.min_pattern_count`) patients of known label are
  pooled into one "other" row: in the per-pattern metrics (`pool_small_patterns`, the
  metrics computed on the pooled patients), the rectifier table and the τ̂ intervals
  (`suppress`; there the pooled τ̂ is the count-weighted mean and its interval is not
  computed);
* every count below K is written as the string "<K" (0 stays 0: an empty cell), and a
  number of positives whose complement (negatives) is below K as ">N-K";
* outcome rates of groups smaller than K are withheld (None), and counts inside notes
  are masked the same way.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np

OTHER = "other"
COUNT_KEYS = ("n", "n_train", "n_val", "n_test", "n_out_of_fold", "n_observed",
              "n_not_observed")
_NOTE_COUNT = re.compile(r"\b(n_pos|n)=(\d+)")


def shown(n: Any, k: int) -> Any:
  """`n`, or "<k" when 0 < n < k."""
  if isinstance(n, (int, np.integer)) and not isinstance(n, bool) and 0 < n < k:
    return f"<{k}"
  return n


def shown_positives(n_pos: Any, n: Any, k: int) -> Any:
  """The number of positives of a cell of `n`: "<k" when it or the cell is small,
  ">n-k" when the negatives are fewer than k."""
  if not isinstance(n_pos, (int, np.integer)) or not isinstance(n, (int, np.integer)):
    return n_pos
  if 0 < n_pos < k or 0 < n < k:
    return f"<{k}"
  if 0 < n - n_pos < k:
    return f">{n - k}"
  return n_pos


def masked_note(note: str, k: int) -> str:
  return _NOTE_COUNT.sub(lambda m: f"{m.group(1)}<{k}" if 0 < int(m.group(2)) < k
                         else m.group(0), note)


def pool_small_patterns(pattern_N: np.ndarray, known_N: np.ndarray, k: int) -> np.ndarray:
  """Pattern ids with every pattern of fewer than k known rows replaced by -1."""
  pattern_N = np.asarray(pattern_N, np.int64)
  ids, inverse = np.unique(pattern_N, return_inverse=True)
  counts = np.bincount(inverse[np.asarray(known_N, bool)], minlength=len(ids))
  return np.where(counts[inverse] < k, -1, pattern_N)


def label_pooled(rows: list[dict], pattern_N: np.ndarray, pooled_N: np.ndarray) -> list[dict]:
  """Per-pattern rows of `pooled_N` ids with -1 renamed "other" (and its pattern count)."""
  n_small = int(len(np.unique(np.asarray(pattern_N)[pooled_N == -1])))
  out = []
  for r in rows:
    if r["pattern"] == -1:
      r = {**r, "pattern": OTHER, "patterns": n_small}
    out.append(r)
  return out


def _pool(rows: list[dict], k: int, value: str, extra: tuple[str, ...]) -> list[dict]:
  """Rows with n < k merged per task into one "other" row; `value` is count-averaged and
  the `extra` keys are set to None."""
  keep, other = [], {}
  for r in rows:
    if r["n"] >= k:
      keep.append(r)
      continue
    task = r.get("task")
    o = other.setdefault(task, {"pattern": OTHER, **({"task": task} if task else {}),
                                "n": 0, "patterns": 0, "_sum": 0.0, "_n": 0})
    o["n"] += int(r["n"])
    o["patterns"] += 1
    if r.get(value) is not None:
      o["_sum"] += float(r[value]) * int(r["n"])
      o["_n"] += int(r["n"])
    if "corrected" in r:
      o["corrected"] = o.get("corrected", 0) + int(bool(r["corrected"]))
  for o in other.values():
    o[value] = o.pop("_sum") / o["_n"] if o["_n"] else None
    o.pop("_n")
    o.update({key: None for key in extra})
    keep.append(o)
  return keep


def _walk(x: Any, k: int) -> Any:
  if isinstance(x, list):
    return [_walk(v, k) for v in x]
  if not isinstance(x, dict):
    return x
  out = {key: _walk(v, k) for key, v in x.items()}
  if "n_pos" in x:
    out["n_pos"] = shown_positives(x["n_pos"], x.get("n"), k)
  for key in COUNT_KEYS:
    if key in x:
      out[key] = shown(x[key], k)
  if isinstance(x.get("note"), str):
    out["note"] = masked_note(x["note"], k)
  return out


def suppress(results: dict, k: int) -> dict:
  """A copy of `results` fit to leave the run: small patterns pooled, small counts
  masked (see the module docstring). `per_pattern` is expected pooled already."""
  r = copy.deepcopy(results)
  rect = r.get("rectifier")
  if rect and "table" in rect:
    rect["table"] = _pool(rect["table"], k, "tau_raw", ("se", "tau", "shift"))
    rect["pooled_below"] = k
  tau = r.get("rectifier_intervals", {}).get("tau_val")
  if tau:
    tau["tasks"] = {t: _pool(rows, k, "tau", ("lo", "hi")) for t, rows in tau["tasks"].items()}
  for row in r.get("cohort", {}).get("modality_table", []):
    for group, rate in (("n_observed", "rate_observed"), ("n_not_observed", "rate_not_observed")):
      if 0 < row.get(group, k) < k:
        row[rate] = row["observed_fraction"] = None
  out = _walk(r, k)
  out["min_cell_size"] = k
  return out
