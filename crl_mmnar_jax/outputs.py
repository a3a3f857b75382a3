"""What a run writes into its workdir (docs/outputs.md), on process 0, atomically.

* `write_splits`: splits.parquet (patient_id, split);
* `write_data_info`: data_info.json, the loader's description of the input data, small
  cells suppressed (`cells.suppress_info`);
* `write_predictions`: predictions.parquet (one row per prediction row, validation rows
  first) and, where there are reference or oracle probabilities for the same rows,
  reference_predictions.parquet;
* `write_results`: rectifier.json (per pattern, like the predictions), predictor.json
  (`predictor.save_manifest`), results.json (small cells suppressed, `cells.suppress`)
  and report.md (`report.write_report`).

`jsonable` turns numpy values into JSON ones (non-finite floats become null).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
import polars as pl

from crl_mmnar_jax import cells, predictor, report
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data import splits as splits_lib
from crl_mmnar_jax.data.io import write_atomic, write_parquet_atomic
from crl_mmnar_jax.workdir import fault_point

RowSets = dict[str, np.ndarray]    # "val", "test" -> an array over that set's rows


def jsonable(x: Any) -> Any:
  """`x` with numpy scalars and arrays as Python values, NaN and ±inf as None."""
  if isinstance(x, dict):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (np.floating, float)):
    return None if not np.isfinite(x) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, np.ndarray):
    return jsonable(x.tolist())
  return x


def write_splits(workdir: str, patient_id: np.ndarray, split: np.ndarray) -> None:
  write_parquet_atomic(splits_lib.splits_frame(patient_id, split),
                       os.path.join(workdir, "splits.parquet"))


def write_data_info(workdir: str, info: dict, min_count: int) -> None:
  """data_info.json: the loader's `info` (counts, dropped rows, attrition; it may count
  labels over ALL patients, so it stays out of results.json, which holds evaluation)."""
  shared_info = cells.suppress_info(jsonable(info), min_count)
  write_atomic(os.path.join(workdir, "data_info.json"), json.dumps(shared_info, indent=2))


def write_predictions(workdir: str, patient_id: RowSets, pattern: RowSets, labels: RowSets,
                      probs: RowSets, rectified: RowSets, others: dict[str, RowSets | None],
                      names: Sequence[str]) -> pl.DataFrame:
  """Writes predictions.parquet and, for the `others` given (name -> probabilities, e.g.
  "reference", "oracle", a stack's "member_<method>"), reference_predictions.parquet with
  the same rows, columns `<task>_prob_<name>` (report.md's ROC and calibration plots read
  the reference and the oracle). Returns the predictions with the others' columns."""
  sets = ("val", "test")
  frame = {"patient_id": np.concatenate([patient_id[s] for s in sets]),
           "split": np.repeat(["val", "test"], [len(patient_id["val"]), len(patient_id["test"])]),
           "pattern_id": np.concatenate([pattern["val"], pattern["test"]]).astype(np.int32)}
  for t, name in enumerate(names):
    frame[f"{name}_label"] = np.concatenate([labels["val"][:, t], labels["test"][:, t]])
    frame[f"{name}_prob"] = np.concatenate([probs["val"][:, t], probs["test"][:, t]])
    frame[f"{name}_prob_rectified"] = np.concatenate(
        [rectified["val"][:, t], rectified["test"][:, t]])
  predictions = pl.DataFrame(frame).with_columns(
      [pl.col(c).fill_nan(None) for c in frame if c.endswith("_label")])
  write_parquet_atomic(predictions, os.path.join(workdir, "predictions.parquet"))
  extra = {f"{name}_prob_{kind}": np.concatenate([v["val"][:, t], v["test"][:, t]])
           for kind, v in others.items() if v is not None for t, name in enumerate(names)}
  if extra:
    write_parquet_atomic(pl.DataFrame({k: frame[k] for k in ("patient_id", "split")} | extra),
                         os.path.join(workdir, "reference_predictions.parquet"))
  return predictions.with_columns([pl.Series(k, v) for k, v in extra.items()])


def write_results(workdir: str, config: ml_collections.ConfigDict, cohort: Cohort,
                  results: dict, predictions: pl.DataFrame,
                  log: Callable[[str], None]) -> None:
  """rectifier.json, predictor.json, results.json and report.md (`predictions`: from
  `write_predictions`)."""
  e = config.eval
  # Per pattern, like the predictions; results.json and report.md pool small cells.
  write_atomic(os.path.join(workdir, "rectifier.json"),
               json.dumps(jsonable(results["rectifier"]), indent=2))
  predictor.save_manifest(workdir, config, cohort, results["training"])
  fault_point("outputs", path=os.path.join(workdir, "results.json"))
  shared = cells.suppress(jsonable(results), int(e.min_pattern_count))
  write_atomic(os.path.join(workdir, "results.json"), json.dumps(shared, indent=2))
  report.write_report(workdir, shared, predictions, cohort.modality_names,
                      plots=bool(e.plots))
  if shared["smoke"]:
    log(report.SMOKE_NOTE)
