"""Tests for `tables`: the generic parquet cohort layout, its errors and round trip."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.sources import tables

NAN = float("nan")


def _labels() -> dict:
  return {"patient_id": ["p30", "p10", "p20", "p05", "p40"],
          "mortality": [1, 0, None, 1, 0],
          "readmit": [0.0, 1.0, 1.0, NAN, 0.0]}


def _modalities() -> dict[str, dict]:
  return {
      # Rows in another order than labels.parquet; a NaN and a null to fill.
      "vitals": {"patient_id": ["p20", "p30", "p05", "p10"],
                 "hr": [80.0, 90.5, NAN, 70.0],
                 "sbp": [120, None, 110, 130]},
      "notes": {"patient_id": ["p40", "p30"],
                "e0": [0.5, -1.0], "e1": [1.5, 2.0], "flag": [True, False]},
      "labs": {"patient_id": ["p05"], "na": [140], "k": [4]},
  }


def _write(directory, labels: dict | None = None, modalities: dict | None = None):
  os.makedirs(directory, exist_ok=True)
  pl.DataFrame(_labels() if labels is None else labels).write_parquet(
      os.path.join(directory, "labels.parquet"))
  for name, frame in (_modalities() if modalities is None else modalities).items():
    pl.DataFrame(frame).write_parquet(os.path.join(directory, f"{name}.parquet"))
  return directory


def test_hand_fixture_value_by_value(tmp_path):
  cohort, info = tables.load_tables_with_info(_write(tmp_path))
  # Row order = labels.parquet; modalities sorted by file name.
  assert cohort.patient_id.tolist() == ["p30", "p10", "p20", "p05", "p40"]
  assert cohort.modality_names == ("labs", "notes", "vitals")
  assert cohort.task_names == ("mortality", "readmit")
  assert cohort.feature_names == (("na", "k"), ("e0", "e1", "flag"), ("hr", "sbp"))
  assert cohort.group_id is None and cohort.split is None
  expected_present = [[False, True, True],    # p30: notes, vitals
                      [False, False, True],   # p10: vitals
                      [False, False, True],   # p20: vitals
                      [True, False, True],    # p05: labs, vitals
                      [False, True, False]]   # p40: notes
  np.testing.assert_array_equal(cohort.present, expected_present)
  np.testing.assert_array_equal(cohort.pattern, [6, 4, 4, 5, 2])
  labs = [[0, 0], [0, 0], [0, 0], [140, 4], [0, 0]]
  notes = [[-1.0, 2.0, 0.0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0.5, 1.5, 1.0]]
  vitals = [[90.5, NAN],      # sbp null -> NaN (not measured; imputed by training code)
            [70.0, 130.0],
            [80.0, 120.0],
            [NAN, 110.0],     # hr NaN stays NaN
            [0.0, 0.0]]       # not observed
  for got, want in zip(cohort.features, (labs, notes, vitals)):
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array(want, dtype=np.float32))
  assert cohort.labels.dtype == np.float32
  np.testing.assert_array_equal(
      cohort.labels, np.array([[1, 0], [0, 1], [NAN, 1], [1, NAN], [0, 0]], np.float32))
  assert info["n_patients"] == 5
  assert info["files"] == {"labels.parquet": 5, "labs.parquet": 1, "notes.parquet": 2,
                           "vitals.parquet": 4}
  assert {m: i["observed"] for m, i in info["modalities"].items()} == {
      "labs": 1, "notes": 2, "vitals": 4}
  assert info["modalities"]["vitals"]["filled_cells"] == 2
  assert info["modalities"]["vitals"]["filled_fraction"] == pytest.approx(2 / 8)
  assert info["modalities"]["vitals"]["filled_by_column"] == {"hr": 1, "sbp": 1}
  assert info["modalities"]["notes"]["filled_cells"] == 0
  assert info["labels_known"] == {"mortality": 4, "readmit": 4}


def test_tasks_and_modalities_select_and_order(tmp_path):
  d = _write(tmp_path)
  cohort = tables.load_tables(d, tasks=["readmit"], modalities=["vitals", "notes"])
  assert cohort.task_names == ("readmit",)
  assert cohort.modality_names == ("vitals", "notes")
  np.testing.assert_array_equal(cohort.labels[:, 0], np.array([0, 1, 1, NAN, 0], np.float32))
  np.testing.assert_array_equal(cohort.present,
                                [[1, 1], [1, 0], [1, 0], [1, 0], [0, 1]])


def test_int_ids_split_and_group(tmp_path):
  labels = {"patient_id": [103, 7, 55, 12],
            "y": [True, False, None, True],
            "split": ["test", "train", "val", "train"],
            "group_id": [1, 2, 1, 3]}
  mods = {"a": {"patient_id": pl.Series([12, 55, 7, 103], dtype=pl.Int32),
                "v": [1.0, 2.0, 3.0, 4.0]}}
  cohort = tables.load_tables(_write(tmp_path, labels, mods))
  assert cohort.patient_id.dtype.kind == "i"
  assert cohort.patient_id.tolist() == [103, 7, 55, 12]
  np.testing.assert_array_equal(cohort.features[0][:, 0], [4.0, 3.0, 2.0, 1.0])
  np.testing.assert_array_equal(cohort.labels[:, 0], np.array([1, 0, NAN, 1], np.float32))
  assert cohort.split.tolist() == ["test", "train", "val", "train"]
  assert cohort.group_id.tolist() == [1, 2, 1, 3]


def test_all_null_split_column_means_no_split(tmp_path):
  labels = {**_labels(), "split": pl.Series([None] * 5, dtype=pl.String)}
  assert tables.load_tables(_write(tmp_path, labels)).split is None


def _random_cohort(n: int = 60, seed: int = 0, string_ids: bool = True) -> Cohort:
  rng = np.random.default_rng(seed)
  dims = (3, 5, 2)
  present = rng.random((n, 3)) < 0.6
  present[~present.any(axis=1), 1] = True
  features = tuple(np.where(present[:, [m]], rng.normal(size=(n, d)), 0).astype(np.float32)
                   for m, d in enumerate(dims))
  labels = (rng.random((n, 2)) < 0.4).astype(np.float32)
  labels[rng.random((n, 2)) < 0.2] = np.nan
  raw = rng.choice(10_000, size=n, replace=False)
  ids = np.array([f"id{i}" for i in raw]) if string_ids else raw.astype(np.int64)
  return Cohort(
      patient_id=ids, features=features, present=present, labels=labels,
      modality_names=("zeta", "alpha", "mid"), task_names=("t_b", "t_a"),
      group_id=rng.integers(0, 20, size=n), split=rng.choice(["train", "val", "test"], n),
      feature_names=(("z0", "z1", "z2"), tuple(f"a{j}" for j in range(5)), ("m0", "m1")),
  ).validate()


@pytest.mark.parametrize("string_ids", [True, False])
def test_write_then_load_round_trip(tmp_path, string_ids):
  cohort = _random_cohort(string_ids=string_ids)
  d = tables.write_tables(cohort, tmp_path / "out")
  assert sorted(os.listdir(d)) == ["alpha.parquet", "labels.parquet", "mid.parquet",
                                   "zeta.parquet"]     # no temporary files left
  # Modality files hold only observed rows (read with another parquet reader).
  for m, name in enumerate(cohort.modality_names):
    assert pq.read_table(os.path.join(d, f"{name}.parquet")).num_rows == cohort.present[:, m].sum()
  back = tables.load_tables(d, modalities=cohort.modality_names)
  np.testing.assert_array_equal(back.patient_id, cohort.patient_id)
  np.testing.assert_array_equal(back.present, cohort.present)
  for a, b in zip(back.features, cohort.features):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(back.labels, cohort.labels)   # NaN positions included
  np.testing.assert_array_equal(back.split, cohort.split)
  np.testing.assert_array_equal(back.group_id, cohort.group_id)
  assert back.modality_names == cohort.modality_names
  assert back.task_names == cohort.task_names
  assert back.feature_names == cohort.feature_names
  # Without `modalities=`, the order is by file name.
  assert tables.load_tables(d).modality_names == ("alpha", "mid", "zeta")


def test_write_tables_refuses_foreign_parquet_files(tmp_path):
  pl.DataFrame({"patient_id": [1]}).write_parquet(tmp_path / "old_modality.parquet")
  with pytest.raises(DataError, match="old_modality.parquet"):
    tables.write_tables(_random_cohort(), tmp_path)


def _case(tmp_path, labels=None, modalities=None, extra=None):
  d = _write(tmp_path / "cohort", labels, modalities)
  for name, data in (extra or {}).items():
    with open(os.path.join(d, name), "wb") as f:
      f.write(data)
  return d


def _mods(**changes):
  mods = _modalities()
  for name, frame in changes.items():
    if frame is None:
      del mods[name]
    else:
      mods[name] = frame
  return mods


ERROR_CASES = {
    "labels without patient_id": (
        dict(labels={"id": ["a"], "y": [1]}), {}, ["labels.parquet", "patient_id"]),
    "modality without patient_id": (
        dict(modalities=_mods(labs={"pid": ["p05"], "na": [1]})), {},
        ["labs.parquet", "patient_id"]),
    "duplicate ids in labels": (
        dict(labels={**_labels(), "patient_id": ["p30", "p10", "p20", "p10", "p40"]}), {},
        ["labels.parquet", "1 patient_id value(s)", "first at row 2"]),
    "duplicate ids in a modality": (
        dict(modalities=_mods(notes={"patient_id": ["p40", "p40"], "e0": [1.0, 2.0]})), {},
        ["notes.parquet", "1 patient_id value(s)", "first at row 1"]),
    "non-numeric feature": (
        dict(modalities=_mods(labs={"patient_id": ["p05"], "na": [1], "unit": ["mmol"]})),
        {}, ["labs.parquet", "'unit'", "String"]),
    "label value not 0/1": (
        dict(labels={**_labels(), "mortality": [1, 0, 2, 1, 0]}), {},
        ["labels.parquet", "'mortality'", "1 row(s) hold another value (first at row 3)"]),
    "label column of strings": (
        dict(labels={**_labels(), "readmit": ["no", "yes", "no", "no", "yes"]}), {},
        ["labels.parquet", "'readmit'", "String"]),
    "no task columns": (
        dict(labels={"patient_id": _labels()["patient_id"],
                     "split": ["train", "val", "test", "train", "train"]}), {},
        ["labels.parquet", "no task columns"]),
    "modality without features": (
        dict(modalities=_mods(labs={"patient_id": ["p05"]})), {},
        ["labs.parquet", "no feature columns"]),
    "patient with no observed modality": (
        dict(labels={k: v + ([None] if k != "patient_id" else ["p99"])
                     for k, v in _labels().items()}), {},
        ["labels.parquet", "1 patient(s) have no observed modality", "first at row 6"]),
    "unreadable parquet": (
        dict(extra={"broken.parquet": b"PAR1 this is not a parquet file"}), {},
        ["broken.parquet", "cannot read"]),
    "id types differ": (
        dict(modalities=_mods(labs={"patient_id": [5], "na": [1]})), {},
        ["labs.parquet", "patient_id", "Int64", "string"]),
    "modality ids not in labels": (
        dict(modalities=_mods(labs={"patient_id": ["p05", "p77", "p78"], "na": [1, 2, 3]})),
        {}, ["labs.parquet", "2 patient_id value(s) are not in labels.parquet", "first at row 2"]),
    "unknown task": (
        dict(), {"tasks": ["mortality", "sepsis"]}, ["labels.parquet", "sepsis"]),
    "infinite feature": (
        dict(modalities=_mods(labs={"patient_id": ["p05"], "na": [float("inf")], "k": [1]})),
        {}, ["labs.parquet", "'na'", "Inf"]),
    "invalid split value": (
        dict(labels={**_labels(), "split": ["train", "val", "test", "validation", "train"]}),
        {}, ["labels.parquet", "'split'", "1 row(s) hold another value (first at row 4)"]),
    "partially null split": (
        dict(labels={**_labels(), "split": ["train", None, "test", None, "train"]}), {},
        ["labels.parquet", "'split'", "null for 2 of 5"]),
    "null id in a modality": (
        dict(modalities=_mods(labs={"patient_id": ["p05", None], "na": [1, 2]})), {},
        ["labs.parquet", "patient_id", "1 null"]),
    "float ids": (
        dict(labels={**_labels(), "patient_id": [1.0, 2.0, 3.0, 4.0, 5.0]}), {},
        ["labels.parquet", "patient_id", "Float64"]),
    "null group id": (
        dict(labels={**_labels(), "group_id": [1, 2, None, 3, 4]}), {},
        ["labels.parquet", "group_id", "1 null"]),
    "named modality missing": (
        dict(), {"modalities": ["vitals", "imaging"]}, ["imaging.parquet", "not found"]),
}


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_bad_input_raises_data_error(tmp_path, name):
  setup, kwargs, fragments = ERROR_CASES[name]
  d = _case(tmp_path, **setup)
  with pytest.raises(DataError) as e:
    tables.load_tables(d, **kwargs)
  for fragment in fragments:
    assert fragment in str(e.value), (fragment, str(e.value))


def test_missing_directory_labels_or_modalities(tmp_path):
  with pytest.raises(DataError, match="nowhere.*not found"):
    tables.load_tables(tmp_path / "nowhere")
  d = _write(tmp_path / "c1")
  os.remove(os.path.join(d, "labels.parquet"))
  with pytest.raises(DataError, match="c1: no labels.parquet"):
    tables.load_tables(d)
  d = _write(tmp_path / "c2", modalities={})
  with pytest.raises(DataError, match="c2: no modality files"):
    tables.load_tables(d)


def test_data_error_is_value_error():
  assert issubclass(DataError, ValueError)


@pytest.mark.parametrize("string_ids", [False, True])
def test_keep_loads_only_those_patients(tmp_path, string_ids):
  from crl_mmnar_jax.data import shards
  from crl_mmnar_jax.data.sources.synthetic import make_synthetic
  c = make_synthetic(120, n_modalities=3, n_tasks=2, seed=4).cohort
  if string_ids:
    c = dataclasses.replace(c, patient_id=np.array([f"p{i:04d}" for i in c.patient_id]))
  tables.write_tables(c, tmp_path)
  full = tables.load_tables(tmp_path)
  parts = []
  for s in range(3):
    part, info = tables.load_tables_with_info(tmp_path, keep=shards.keep_fn(3, (s,)))
    want = shards.shard_of(full.patient_id, 3) == s
    np.testing.assert_array_equal(part.patient_id, full.patient_id[want])
    for a, b in zip(part.features, full.features):
      np.testing.assert_array_equal(a, b[want])
    np.testing.assert_array_equal(part.labels, full.labels[want])
    assert info["modalities"][c.modality_names[0]]["rows"] == int(
        full.present[want, 0].sum())                          # only these rows were read
    parts.append(part.n)
  assert sum(parts) == full.n


def test_keep_still_reports_a_modality_row_of_an_unknown_patient(tmp_path):
  """The process whose shard the stray id falls in names it; the others never see it."""
  from crl_mmnar_jax.data import shards
  mods = _modalities()
  mods["labs"] = {"patient_id": ["p05", "p99"], "na": [140, 141], "k": [4, 5]}
  _write(tmp_path, modalities=mods)
  stray = int(shards.shard_of(np.array(["p99"]), 2)[0])
  with pytest.raises(DataError, match="1 patient_id value.* not in labels.parquet"):
    tables.load_tables(tmp_path)
  with pytest.raises(DataError, match="1 patient_id value.* not in labels.parquet"):
    tables.load_tables_with_info(tmp_path, keep=shards.keep_fn(2, (stray,)))
  tables.load_tables_with_info(tmp_path, keep=shards.keep_fn(2, (1 - stray,)))


# ----------------------------------------------------------------------------- data_info.json


def _small_cells(x, key=""):
  """(path, value) of every count 1..19 left in a data_info structure."""
  from crl_mmnar_jax.cells import INFO_NOT_COUNTS
  if isinstance(x, dict):
    return [hit for k, v in x.items() for hit in _small_cells(v, f"{key}.{k}")]
  if isinstance(x, list):
    return [hit for v in x for hit in _small_cells(v, key)]
  last = key.rsplit(".", 1)[-1]
  if isinstance(x, int) and not isinstance(x, bool) and 0 < x < 20 and \
      last not in INFO_NOT_COUNTS:
    return [(key, x)]
  return []


@pytest.mark.slow
def test_data_info_json_suppresses_small_cells(tmp_path):
  """A run on a cohort with a modality of 7 patients, 4 unmeasured cells and 5 unknown
  labels: data_info.json keeps the large counts and writes every count below
  eval.min_pattern_count (20) as "<20"."""
  from crl_mmnar_jax.experiment import train_and_evaluate
  from experiments.configs import tables as tables_config
  rng = np.random.default_rng(0)
  n = 160
  ids = np.arange(5000, 5000 + n)
  y = rng.integers(0, 2, n).astype(float)
  y[[3, 30, 60, 90, 120]] = np.nan                           # 5 unknown labels
  d = tmp_path / "cohort"
  d.mkdir()
  pl.DataFrame({"patient_id": ids, "y": y}).write_parquet(d / "labels.parquet")
  demo = rng.normal(size=(n, 3))
  demo[[1, 2, 5, 8], [0, 1, 2, 0]] = np.nan                   # 4 unmeasured cells
  pl.DataFrame({"patient_id": ids, **{f"d{j}": demo[:, j] for j in range(3)}}
               ).write_parquet(d / "demo.parquet")
  rare = ids[[10, 20, 40, 50, 70, 100, 150]]                  # 7 patients
  pl.DataFrame({"patient_id": rare, "r0": rng.normal(size=7)}).write_parquet(
      d / "rare.parquet")
  raw_info = tables.load_tables_with_info(str(d))[1]          # what the loader counts
  assert raw_info["modalities"]["rare"]["observed"] == 7      # (checked independently)
  assert raw_info["modalities"]["demo"]["filled_cells"] == 4
  assert raw_info["labels_known"]["y"] == n - 5
  assert _small_cells(raw_info)                               # the raw info has small cells

  config = tables_config.get_config("tiny")
  config.data.dir = str(d)
  config.train.epochs = 1
  config.eval.n_boot = 10
  config.eval.plots = False
  train_and_evaluate(config, str(tmp_path / "run"), log=lambda s: None)
  import json
  info = json.loads((tmp_path / "run" / "data_info.json").read_text())
  assert _small_cells(info) == []
  assert info["min_cell_size"] == 20
  assert info["n_patients"] == n and info["labels_known"]["y"] == n - 5
  assert info["files"] == {"labels.parquet": n, "demo.parquet": n, "rare.parquet": "<20"}
  assert info["modalities"]["rare"]["observed"] == "<20"
  assert info["modalities"]["rare"]["rows"] == "<20"
  assert info["modalities"]["demo"]["observed"] == n
  assert info["modalities"]["demo"]["filled_cells"] == "<20"
  assert info["modalities"]["demo"]["filled_by_column"] == {"d0": "<20", "d1": "<20",
                                                            "d2": "<20"}


def test_suppress_info_pools_files_and_hides_ids():
  from crl_mmnar_jax.cells import suppress_info
  info = {
      "n_stays": 400, "n_no_time_series": 3, "no_time_series_ids": [132001, 132002, 132003],
      "records_dropped": {"no outcome line": ["/d/set-a/132004.txt"]},
      "observed_fraction": {"vitals": 0.99, "rare": 0.01, "none": 0.0},
      "label_counts": {"y": {"n": 400, "n_positive": 390}, "z": {"n": 400, "n_positive": 3}},
      "skipped": {"strict": False, "n_rows": 40, "by_file": {
          "/d/lab.csv": {"x not a number": 25},
          "/d/set-a/1.txt": {"HR out of range": 2, "Temp out of range": 1},
          "/d/set-a/2.txt": {"HR out of range": 1}}},
      "window_hours": 8, "warnings": ["/d/x.parquet: every value is null in its 6 row(s)"],
  }
  out = suppress_info(info, 20)
  assert out["n_stays"] == 400 and out["n_no_time_series"] == "<20"
  assert out["no_time_series_ids"] == "<20"                   # their number, not the ids
  assert out["records_dropped"] == {"no outcome line": "<20"}
  assert out["observed_fraction"] == {"vitals": 0.99, "rare": None, "none": 0.0}
  assert out["label_counts"]["y"]["n_positive"] == ">380"     # 10 negatives
  assert out["label_counts"]["z"]["n_positive"] == "<20"
  assert out["skipped"]["by_file"] == {
      "/d/lab.csv": {"x not a number": 25},
      "other (2 files)": {"HR out of range": "<20", "Temp out of range": "<20"}}
  assert out["skipped"]["strict"] is False and out["window_hours"] == 8
  assert out["warnings"] == ["/d/x.parquet: every value is null in its <20 row(s)"]
  assert "132001" not in str(out) and "132004" not in str(out)


# ----------------------------------------------------------------------------- extreme cells


def test_one_1e30_cell_goes_through_the_loader_and_is_not_measured(tmp_path, caplog):
  """A 1e30 sentinel in a tables cohort loads (it is a float32) and robust
  standardisation treats it as not measured: every other patient's features equal those
  of the cohort without that cell, the cell is counted per column, its value never
  printed. Beyond float32 (1e39) the loader refuses, naming file, column and count."""
  import logging

  from crl_mmnar_jax.data.standardize import standardize
  rng = np.random.default_rng(5)
  n = 200
  ids = np.arange(7000, 7000 + n)
  pl.DataFrame({"patient_id": ids, "y": rng.integers(0, 2, n)}).write_parquet(
      tmp_path / "labels.parquet")
  x = rng.normal(80.0, 10.0, (n, 2))
  labels = pl.read_parquet(tmp_path / "labels.parquet")
  dirs = {}
  for name, value in (("bad", 1e30), ("clean", np.nan), ("huge", 1e39)):
    d = tmp_path / name
    d.mkdir()
    labels.write_parquet(d / "labels.parquet")
    v = x.copy()
    v[17, 0] = value
    pl.DataFrame({"patient_id": ids, "hr": v[:, 0], "sbp": v[:, 1]}).write_parquet(
        d / "vitals.parquet")
    dirs[name] = str(d)
  bad = tables.load_tables(dirs["bad"])
  assert bad.features[0][17, 0] == np.float32(1e30)          # loaded as is
  clean = tables.load_tables(dirs["clean"])
  train = np.union1d(np.arange(0, n, 2), [17])                # the 1e30 cell trains
  with caplog.at_level(logging.WARNING):
    out, stats = standardize(bad, train)
  ref, _ = standardize(clean, train)
  np.testing.assert_allclose(out.features[0], ref.features[0], rtol=0, atol=1e-6)
  assert out.features[0][17, 0] == 0.0                         # imputed, like a null cell
  assert stats["vitals"]["extreme_cells"] == {"hr": 1}
  lines = [r.getMessage() for r in caplog.records if "extreme" in r.getMessage()]
  assert len(lines) == 1 and "vitals/hr: 1 patient" in lines[0]
  assert "1e+30" not in lines[0] and "7017" not in lines[0]
  with pytest.raises(DataError, match=r"vitals\.parquet: feature column\(s\) \['hr'\] hold "
                                      r"values beyond the float32 range \(1 cell\(s\)\)") as e:
    tables.load_tables(dirs["huge"])
  assert "1e+39" not in str(e.value) and "7017" not in str(e.value)
