"""Property-based tests of the tables loader (`load_tables_with_info`) with hypothesis.

Random valid cohorts (integer or string ids, 1-3 tasks, 1-3 modalities of mixed numeric
dtypes, nulls, rows in any order) load to what an independent reading of the files with
pyarrow says. A random single corruption of such a cohort either raises `DataError`
with a one-line message that names a file and prints no patient id, or loads with the
problem listed in ``info["warnings"]``; never another exception.
"""

import os
import tempfile

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.sources.tables import load_tables_with_info

FEATURE_DTYPES = [pl.Float32, pl.Float64, pl.Int32, pl.Int64, pl.Boolean]
LABEL_DTYPES = [pl.Int8, pl.Int64, pl.Float64, pl.Boolean]
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _value(draw, dtype):
  if draw(st.integers(0, 5)) == 0:
    return None
  if dtype == pl.Boolean:
    return draw(st.booleans())
  if dtype in (pl.Int32, pl.Int64):
    return draw(st.integers(-10**6, 10**6))
  return draw(st.floats(-1e6, 1e6, allow_nan=False, width=32))


@st.composite
def cohorts(draw) -> dict:
  """A valid cohort as plain data: ids, tasks {name: (dtype, values)}, modalities
  {name: (row ids in file order, {column: (dtype, values)})}."""
  n = draw(st.integers(1, 20))
  if draw(st.booleans()):
    ids = draw(st.lists(st.integers(-2**40, 2**40), min_size=n, max_size=n, unique=True))
  else:
    ids = ["Qid" + s for s in draw(st.lists(st.text("abcxyz0123456789_-", min_size=1,
                                                     max_size=6),
                                            min_size=n, max_size=n, unique=True))]
  tasks = {}
  for t in range(draw(st.integers(1, 3))):
    dtype = draw(st.sampled_from(LABEL_DTYPES))
    values = [draw(st.sampled_from([0, 1, None])) for _ in range(n)]
    tasks[f"task{t}"] = (dtype, [None if v is None else bool(v) if dtype == pl.Boolean else v
                                 for v in values])
  names = draw(st.lists(st.sampled_from(["alpha", "beta", "vitals", "zeta"]), min_size=1,
                        max_size=3, unique=True))
  observed = {m: [draw(st.booleans()) for _ in range(n)] for m in names}
  for i in range(n):                       # every patient has an observed modality
    if not any(observed[m][i] for m in names):
      observed[names[0]][i] = True
  modalities = {}
  for m in names:
    rows = draw(st.permutations([ids[i] for i in range(n) if observed[m][i]]))
    columns = {}
    for c in range(draw(st.integers(1, 3))):
      dtype = draw(st.sampled_from(FEATURE_DTYPES))
      columns[f"{m}_x{c}"] = (dtype, [_value(draw, dtype) for _ in rows])
    modalities[m] = (list(rows), columns)
  return {"ids": ids, "tasks": tasks, "modalities": modalities}


def _id_series(ids, dtype=None):
  kind = dtype or (pl.Int64 if isinstance(ids[0] if ids else 0, int) else pl.String)
  return pl.Series("patient_id", ids, dtype=kind)


def _write(c: dict, d: str) -> None:
  id_dtype = pl.Int64 if isinstance(c["ids"][0], int) else pl.String
  labels = pl.DataFrame([_id_series(c["ids"], id_dtype)] + [
      pl.Series(t, v, dtype=dtype) for t, (dtype, v) in c["tasks"].items()])
  labels.write_parquet(os.path.join(d, "labels.parquet"))
  for m, (rows, columns) in c["modalities"].items():
    pl.DataFrame([_id_series(rows, id_dtype)] + [
        pl.Series(name, v, dtype=dtype) for name, (dtype, v) in columns.items()]
    ).write_parquet(os.path.join(d, f"{m}.parquet"))


def _expected(d: str):
  """What the files hold, read with pyarrow and plain Python."""
  labels = pq.read_table(os.path.join(d, "labels.parquet")).to_pylist()
  ids = [r["patient_id"] for r in labels]
  tasks = [k for k in labels[0] if k != "patient_id"]
  y = np.array([[np.nan if r[t] is None else float(r[t]) for t in tasks] for r in labels])
  names = sorted(f[:-8] for f in os.listdir(d) if f.endswith(".parquet") and
                 f != "labels.parquet")
  index = {i: k for k, i in enumerate(ids)}
  present = np.zeros((len(ids), len(names)), bool)
  features = []
  for j, m in enumerate(names):
    table = pq.read_table(os.path.join(d, f"{m}.parquet"))
    cols = [c for c in table.column_names if c != "patient_id"]
    x = np.zeros((len(ids), len(cols)), np.float32)
    for r in table.to_pylist():
      k = index[r["patient_id"]]
      present[k, j] = True
      x[k] = [np.nan if r[c] is None else float(r[c]) for c in cols]
    features.append((cols, x))
  return ids, tasks, y, names, present, features


@SETTINGS
@given(cohorts())
def test_random_valid_cohorts_load_as_an_independent_reading_says(c):
  with tempfile.TemporaryDirectory() as d:
    _write(c, d)
    cohort, info = load_tables_with_info(d)
    ids, tasks, y, names, present, features = _expected(d)
  assert cohort.patient_id.tolist() == ids
  assert list(cohort.task_names) == tasks and list(cohort.modality_names) == names
  np.testing.assert_array_equal(cohort.labels, y.astype(np.float32))
  np.testing.assert_array_equal(cohort.present, present)
  for j, (cols, x) in enumerate(features):
    assert list(cohort.feature_names[j]) == cols
    np.testing.assert_array_equal(cohort.features[j][present[:, j]], x[present[:, j]])
  assert info["n_patients"] == len(ids)
  assert info["labels_known"] == {t: int((~np.isnan(y[:, k])).sum())
                                  for k, t in enumerate(tasks)}


def _corrupt(kind: str, c: dict, d: str, draw) -> None:
  """Applies one corruption to the written cohort in `d`."""
  labels_path = os.path.join(d, "labels.parquet")
  labels = pl.read_parquet(labels_path)
  m = draw(st.sampled_from(sorted(c["modalities"])))
  mod_path = os.path.join(d, f"{m}.parquet")
  mod = pl.read_parquet(mod_path)
  feature = mod.columns[1]
  if kind == "float ids":
    labels.with_columns(pl.Series("patient_id", np.arange(labels.height) + 0.5)
                        ).write_parquet(labels_path)
  elif kind == "duplicate id in labels":
    pl.concat([labels, labels.head(1)]).write_parquet(labels_path)
  elif kind == "duplicate id in a modality" and mod.height:
    pl.concat([mod, mod.tail(1)]).write_parquet(mod_path)
  elif kind == "non-numeric feature":
    mod.with_columns(pl.lit("text").alias(feature)).write_parquet(mod_path)
  elif kind == "label outside 0/1":
    t = labels.columns[1]
    value = draw(st.sampled_from([2, -1, 0.5, 7]))
    labels.with_columns(pl.Series(t, [value] * labels.height)).write_parquet(labels_path)
  elif kind == "string label":
    labels.with_columns(pl.lit("yes").alias(labels.columns[1])).write_parquet(labels_path)
  elif kind == "empty modality file":
    open(mod_path, "wb").close()
  elif kind == "empty labels file":
    open(labels_path, "wb").close()
  elif kind == "garbage bytes":
    with open(mod_path, "wb") as f:
      f.write(draw(st.binary(min_size=1, max_size=64)))
  elif kind == "labels without rows":
    labels.head(0).write_parquet(labels_path)
  elif kind == "modality without rows":
    mod.head(0).write_parquet(mod_path)
  elif kind == "id not in labels" and mod.height:
    new_id = 2**50 if mod.schema["patient_id"] == pl.Int64 else "Qid_not_in_labels"
    pl.concat([mod, mod.head(1).with_columns(
        pl.lit(new_id, mod.schema["patient_id"]).alias("patient_id"))]).write_parquet(mod_path)
  elif kind == "id types differ":
    mod.with_columns(pl.col("patient_id").cast(pl.String) + "_s"
                     if mod.schema["patient_id"] == pl.Int64 else
                     pl.int_range(pl.len(), dtype=pl.Int64).alias("patient_id")
                     ).write_parquet(mod_path)
  elif kind == "infinite value" and mod.height:
    mod.with_columns(pl.lit(float("inf")).alias(feature)).write_parquet(mod_path)
  elif kind == "value beyond float32" and mod.height:
    mod.with_columns(pl.lit(1e300).alias(feature)).write_parquet(mod_path)
  elif kind == "null id" and mod.height:
    mod.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(None)
                     .otherwise(pl.col("patient_id")).alias("patient_id")
                     ).write_parquet(mod_path)
  elif kind == "no id column":
    mod.rename({"patient_id": "pid"}).write_parquet(mod_path)
  elif kind == "no task column":
    labels.select("patient_id").write_parquet(labels_path)
  elif kind == "all-null feature column":
    mod.with_columns(pl.lit(None, pl.Float64).alias(feature)).write_parquet(mod_path)
  elif kind == "all-null label column":
    labels.with_columns(pl.lit(None, pl.Int8).alias(labels.columns[1])
                        ).write_parquet(labels_path)
  elif kind == "ignored csv":
    labels.write_csv(os.path.join(d, "labels.csv"))
  elif kind == "bad split value":
    labels.with_columns(pl.lit("validation").alias("split")).write_parquet(labels_path)


CORRUPTIONS = ["float ids", "duplicate id in labels", "duplicate id in a modality",
               "non-numeric feature", "label outside 0/1", "string label",
               "empty modality file", "empty labels file", "garbage bytes",
               "labels without rows", "modality without rows", "id not in labels",
               "id types differ", "infinite value", "value beyond float32", "null id",
               "no id column", "no task column", "all-null feature column",
               "all-null label column", "ignored csv", "bad split value"]


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(cohorts(), st.sampled_from(CORRUPTIONS), st.data())
def test_a_random_corruption_raises_one_line_data_error_or_is_warned_about(c, kind, data):
  with tempfile.TemporaryDirectory() as d:
    _write(c, d)
    _corrupt(kind, c, d, data.draw)
    try:
      _, info = load_tables_with_info(d)
    except DataError as e:
      message = str(e)
      assert "\n" not in message, message
      assert d in message, message                      # names the file (or the folder)
      if isinstance(c["ids"][0], str):
        shown = [i for i in c["ids"] if i in message]
        assert not shown, (message, shown)              # no patient id is printed
      return
    except Exception as e:  # noqa: BLE001
      pytest.fail(f"{kind}: {type(e).__name__} instead of DataError: {e}")
  # It loaded: a corruption that is not an error must be reported, unless it changed
  # nothing (e.g. a duplicate row of an empty modality file).
  reported = {"modality without rows": ("no rows",),
              "all-null feature column": ("null/NaN", "no rows"),   # (a file without rows)
              "all-null label column": ("no known label",), "ignored csv": ("not parquet",)}
  if kind in reported:
    assert any(f in w for w in info["warnings"] for f in reported[kind]), (kind,
                                                                            info["warnings"])
