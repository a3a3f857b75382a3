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

`data_info.json` (the loader's counts: attrition, dropped rows, label counts) goes
through `suppress_info` before it is written: the same masking, plus lists of ids or of
per-patient file paths replaced by their number and per-file problem counts of small
files pooled.
"""

from __future__ import annotations

import copy
import os
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


# ----------------------------------------------------------------------------- data_info

# Integers of a loader's info that are settings or sizes, not counts of patients or rows.
INFO_NOT_COUNTS = ("data_shards", "counts_cover_shards", "window_hours", "n_features",
                   "dim", "seed", "version", "min_cell_size")
_TEXT_COUNT = re.compile(r"\b(\d+)( (?:row|patient|stay|record|subject|value|line|cell|"
                         r"admission|measurement)s?(?:\(s\))?)\b")


def _info_walk(x: Any, k: int, key: str, n_all: Any) -> Any:
  if isinstance(x, dict):
    if key == "by_file":          # file -> {problem: n}: small files pooled, like patterns
      x = _pool_files(x, k)
    out = {kk: _info_walk(v, k, f"{key}.{kk}" if "fraction" in key else str(kk), n_all)
           for kk, v in x.items()}
    for pos in ("n_positive", "n_pos"):
      if pos in x and "n" in x:
        out[pos] = shown_positives(x[pos], x["n"], k)
    return out
  if isinstance(x, (list, tuple)):
    if key.endswith("ids") or (x and all(isinstance(v, str) and os.sep in v
                                         and ": " not in v for v in x)):
      return shown(len(x), k)     # ids, or the paths of per-patient files: their number
    return [_info_walk(v, k, key, n_all) for v in x]
  if isinstance(x, str):
    return _TEXT_COUNT.sub(lambda m: f"<{k}{m.group(2)}" if 0 < int(m.group(1)) < k
                           else m.group(0), x)
  if key in INFO_NOT_COUNTS or isinstance(x, (bool, np.bool_)):
    return x
  if isinstance(x, (float, np.floating)) and "fraction" in key and isinstance(n_all, int):
    return None if 0 < round(float(x) * n_all) < k else x   # a fraction of a small group
  return shown(x, k)


def _pool_files(by_file: dict, k: int) -> dict:
  """Files with fewer than k counted rows pooled into one "other files" entry (per-record
  files name a patient)."""
  keep, other, n_other = {}, {}, 0
  for f, problems in by_file.items():
    if sum(int(n) for n in problems.values()) >= k:
      keep[f] = problems
      continue
    n_other += 1
    for p, n in problems.items():
      other[p] = other.get(p, 0) + int(n)
  if n_other:
    keep[f"{OTHER} ({n_other} files)"] = dict(sorted(other.items()))
  return keep


def suppress_info(info: dict, k: int) -> dict:
  """A loader's info (WORKDIR/data_info.json) fit to leave the run: every count below k
  written "<k" (0 stays 0), positives whose complement is below k ">N-k", lists of ids
  and of per-patient file paths replaced by their number, files with fewer than k
  counted rows pooled, fractions of the cohort that stand for fewer than k patients
  withheld, counts inside messages masked. Settings and sizes (`INFO_NOT_COUNTS`) stay."""
  n_all = next((info[key] for key in ("n_patients", "n_stays", "n")
                if isinstance(info.get(key), (int, np.integer))), None)
  out = _info_walk(copy.deepcopy(info), k, "", None if n_all is None else int(n_all))
  out["min_cell_size"] = k
  return out
