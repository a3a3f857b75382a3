"""Tests for `yaib`: YAIB sta/dyn/outc folders -> a multimodal `Cohort`."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.featurize import STATS
from crl_mmnar_jax.data.sources import yaib

NAN = float("nan")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YAIB_DIR = os.path.join(ROOT, "..", "shared", "data", "yaib-demo")
TASK = "mortality24"
MS_PER_HOUR = 3_600_000


# ----------------------------------------------------------------------------- fixture
#
# Two tiny "databases" in YAIB's exact format (same dtypes as the real files: Int32
# stay_id and label, Float64 values, String sex, Duration[ms] time, 25 hourly rows per
# stay 0 h..24 h). Stay id 10 exists in both databases.
#
# db_a (outc order 30, 10, 20; sta in another order):
#   10: Male 70.5 y, height null, 80 kg, died. hr 80 @0h, 90 @1h, 100 @5h and 200 @24h
#       (the 25th hour: outside the 24 h window); lact 3.5 @2h. Nothing else.
#   20: Female, survived. hr 60 @3h; urine 100 @0h, 50 @1h.
#   30: Female, survived. Only lact 9.0 @24h (outside the window): no virtual modality.
# db_b (outc order 10, 40):
#   10: Male, survived. sbp NaN @0h (a NaN cell = not measured), 120 @1h; crp 50 @4h.
#   40: sex null, died. tnt 0.1 @6h.


def _sta(ids, sex, age, height, weight) -> pl.DataFrame:
  return pl.DataFrame({
      "stay_id": pl.Series(ids, dtype=pl.Int32),
      "age": pl.Series(age, dtype=pl.Float64),
      "sex": pl.Series(sex, dtype=pl.String),
      "height": pl.Series(height, dtype=pl.Float64),
      "weight": pl.Series(weight, dtype=pl.Float64),
  })


def _outc(ids, labels) -> pl.DataFrame:
  return pl.DataFrame({"stay_id": pl.Series(ids, dtype=pl.Int32),
                       "label": pl.Series(labels, dtype=pl.Int32)})


def _dyn(ids, cells: dict[tuple[int, int, str], float]) -> pl.DataFrame:
  """25 hourly rows per stay; `cells[(stay, hour, variable)] = value`, rest null."""
  stay_col = [s for s in ids for _ in range(25)]
  hour_col = [h for _ in ids for h in range(25)]
  columns = {
      "stay_id": pl.Series(stay_col, dtype=pl.Int32),
      "time": pl.Series([h * MS_PER_HOUR for h in hour_col]).cast(pl.Duration("ms")),
  }
  for v in sorted(yaib.DYN_VARIABLES):   # YAIB's columns are alphabetical
    columns[v] = pl.Series([cells.get((s, h, v)) for s, h in zip(stay_col, hour_col)],
                           dtype=pl.Float64)
  return pl.DataFrame(columns)


def _frames() -> dict[str, dict[str, pl.DataFrame]]:
  return {
      "db_a": {
          "sta": _sta([10, 20, 30], ["Male", "Female", "Female"], [70.5, 55.0, 81.0],
                      [None, 160.0, 170.0], [80.0, 60.0, None]),
          "dyn": _dyn([10, 20, 30], {
              (10, 0, "hr"): 80.0, (10, 1, "hr"): 90.0, (10, 5, "hr"): 100.0,
              (10, 24, "hr"): 200.0, (10, 2, "lact"): 3.5,
              (20, 3, "hr"): 60.0, (20, 0, "urine"): 100.0, (20, 1, "urine"): 50.0,
              (30, 24, "lact"): 9.0}),
          "outc": _outc([30, 10, 20], [0, 1, 0]),
      },
      "db_b": {
          "sta": _sta([40, 10], [None, "Male"], [66.0, 45.0], [180.0, 175.0],
                      [90.0, 70.0]),
          "dyn": _dyn([10, 40], {
              (10, 0, "sbp"): NAN, (10, 1, "sbp"): 120.0, (10, 4, "crp"): 50.0,
              (40, 6, "tnt"): 0.1}),
          "outc": _outc([10, 40], [0, 1]),
      },
  }


def _write(root, frames=None) -> str:
  frames = _frames() if frames is None else frames
  for db, files in frames.items():
    directory = os.path.join(root, TASK, db)
    os.makedirs(directory, exist_ok=True)
    for name, df in files.items():
      df.write_parquet(os.path.join(directory, f"{name}.parquet"))
  return os.fspath(root)


def _load(root, **kwargs):
  return yaib.load_yaib(root, databases=("db_a", "db_b"), **kwargs)


def _col(cohort, modality: str, variable: str, stat: str) -> np.ndarray:
  """One feature column of a virtual modality, located through its feature names."""
  m = cohort.modality_names.index(modality)
  names = cohort.feature_names[m]
  return cohort.features[m][:, names.index(f"{variable}_{stat}")]


def _row(cohort, patient_id: str) -> int:
  return int(np.flatnonzero(cohort.patient_id == patient_id)[0])


# ----------------------------------------------------------------------------- groups


def test_groups_cover_each_yaib_variable_once():
  variables = [v for g in yaib.GROUPS for v in g.variables]
  assert len(variables) == 48 and len(set(variables)) == 48
  assert 8 <= len(yaib.GROUPS) <= 10
  assert len({g.name for g in yaib.GROUPS}) == len(yaib.GROUPS)
  assert yaib.MODALITY_NAMES[0] == "static"
  assert {"hr", "lact", "urine", "inr_pt", "tnt"} <= set(variables)


def test_groups_match_the_real_dyn_columns():
  path = os.path.join(YAIB_DIR, TASK, "mimic_demo", "dyn.parquet")
  if not os.path.isfile(path):
    pytest.skip(f"YAIB demo data not found at {path} (see docs/data.md)")
  columns = set(pl.read_parquet_schema(path)) - {"stay_id", "time"}
  assert columns == set(yaib.DYN_VARIABLES)


def test_fixture_has_the_real_dtypes(tmp_path):
  directory = os.path.join(YAIB_DIR, TASK, "eicu_demo")
  if not os.path.isdir(directory):
    pytest.skip(f"YAIB demo data not found at {directory} (see docs/data.md)")
  frames = _frames()["db_a"]
  for name in ("sta", "dyn", "outc"):
    real = pl.read_parquet_schema(os.path.join(directory, f"{name}.parquet"))
    assert dict(frames[name].schema) == dict(real), name


# ----------------------------------------------------------------------------- fixture


def test_hand_fixture_value_by_value(tmp_path):
  cohort, info = _load(_write(tmp_path))
  # Rows: databases in order, each in outc.parquet's order; ids prefixed.
  assert cohort.patient_id.tolist() == ["db_a:30", "db_a:10", "db_a:20",
                                        "db_b:10", "db_b:40"]
  assert info["database"].tolist() == ["db_a"] * 3 + ["db_b"] * 2
  assert info["stay_id"].tolist() == [30, 10, 20, 10, 40]
  assert cohort.task_names == (TASK,)
  np.testing.assert_array_equal(cohort.labels[:, 0], [0, 1, 0, 0, 1])
  assert cohort.labels.dtype == np.float32
  assert cohort.modality_names == yaib.MODALITY_NAMES
  assert cohort.group_id is None and cohort.split is None

  # Static: age, sex (1 = male), height, weight; NaN = not recorded; always observed.
  assert cohort.feature_names[0] == ("age", "sex", "height", "weight")
  np.testing.assert_array_equal(cohort.features[0], np.array([
      [81.0, 0.0, 170.0, NAN],
      [70.5, 1.0, NAN, 80.0],
      [55.0, 0.0, 160.0, 60.0],
      [45.0, 1.0, 175.0, 70.0],
      [66.0, NAN, 180.0, 90.0]], dtype=np.float32))
  assert cohort.present[:, 0].all()

  # Presence: a group is observed when one of its variables was measured in [0, 24) h.
  m = {name: j for j, name in enumerate(cohort.modality_names)}
  expected = np.zeros((5, len(m)), dtype=bool)
  expected[:, m["static"]] = True
  expected[1, [m["vitals"], m["lactate"]]] = True       # db_a:10
  expected[2, [m["vitals"], m["urine"]]] = True         # db_a:20
  expected[3, [m["vitals"], m["inflammation"]]] = True  # db_b:10
  expected[4, m["cardiac"]] = True                      # db_b:40
  np.testing.assert_array_equal(cohort.present, expected)
  # Unobserved groups are all-zero rows (db_a:30 has only a 25th-hour lactate).
  for j in range(1, len(m)):
    assert not cohort.features[j][~cohort.present[:, j]].any()
    assert not np.isnan(cohort.features[j][~cohort.present[:, j]]).any()

  # db_a:10 heart rate 80 @0h, 90 @1h, 100 @5h; the 200 @24h is outside the window.
  a10 = _row(cohort, "db_a:10")
  assert _col(cohort, "vitals", "hr", "last")[a10] == 100.0
  assert _col(cohort, "vitals", "hr", "mean")[a10] == 90.0
  assert _col(cohort, "vitals", "hr", "min")[a10] == 80.0
  assert _col(cohort, "vitals", "hr", "max")[a10] == 100.0
  assert _col(cohort, "vitals", "hr", "count")[a10] == 3.0
  assert _col(cohort, "vitals", "hr", "time_last")[a10] == 5.0
  assert _col(cohort, "lactate", "lact", "last")[a10] == 3.5
  assert _col(cohort, "vitals", "hr", "std")[a10] == pytest.approx(np.sqrt(200 / 3))
  # OLS slope per HOUR: cov(t, v) / var(t) = (50 / 3) / (14 / 3).
  assert _col(cohort, "vitals", "hr", "slope")[a10] == pytest.approx(50 / 14)
  # Not measured inside an observed group: count 0, the other statistics NaN.
  assert _col(cohort, "vitals", "sbp", "count")[a10] == 0.0
  assert np.isnan(_col(cohort, "vitals", "sbp", "last")[a10])
  assert np.isnan(_col(cohort, "vitals", "sbp", "mean")[a10])
  # db_a:20 urine 100 @0h, 50 @1h.
  a20 = _row(cohort, "db_a:20")
  assert _col(cohort, "urine", "urine", "mean")[a20] == 75.0
  assert _col(cohort, "urine", "urine", "count")[a20] == 2.0
  assert _col(cohort, "vitals", "hr", "last")[a20] == 60.0
  # db_b:10: the NaN sbp cell is "not measured", so one sbp value; crp in inflammation.
  b10 = _row(cohort, "db_b:10")
  assert _col(cohort, "vitals", "sbp", "count")[b10] == 1.0
  assert _col(cohort, "vitals", "sbp", "mean")[b10] == 120.0
  assert _col(cohort, "inflammation", "crp", "last")[b10] == 50.0
  b40 = _row(cohort, "db_b:40")
  assert _col(cohort, "cardiac", "tnt", "last")[b40] == np.float32(0.1)
  assert _col(cohort, "cardiac", "tnt", "time_last")[b40] == 6.0

  # Same feature space whatever the database: 8 statistics per variable.
  for j, g in enumerate(yaib.GROUPS, start=1):
    assert cohort.features[j].shape == (5, len(g.variables) * len(STATS))
    assert cohort.features[j].dtype == np.float32

  per_db = info["per_database"]
  assert (per_db["db_a"]["stays"], per_db["db_a"]["deaths"]) == (3, 1)
  assert (per_db["db_b"]["stays"], per_db["db_b"]["deaths"]) == (2, 1)
  assert per_db["db_a"]["dyn_rows"] == 75 and per_db["db_a"]["dyn_rows_outside_window"] == 3
  assert per_db["db_a"]["measurements"] == 7   # 3 hr, 1 lact, 1 hr, 2 urine
  assert per_db["db_a"]["measurements_outside_window"] == 2
  assert per_db["db_b"]["measurements"] == 3   # the NaN sbp cell is no measurement
  assert per_db["db_a"]["static_not_recorded"] == {"age": 0, "sex": 0, "height": 1,
                                                  "weight": 1}
  vitals = info["modalities"]["vitals"]
  assert vitals["observed_fraction"] == pytest.approx(3 / 5)
  assert vitals["by_database"]["db_a"]["observed_fraction"] == pytest.approx(2 / 3)
  assert vitals["by_database"]["db_a"]["mortality_observed"] == pytest.approx(0.5)
  assert vitals["by_database"]["db_a"]["mortality_missing"] == pytest.approx(0.0)
  assert vitals["by_database"]["db_b"]["mortality_missing"] == pytest.approx(1.0)
  assert info["modalities"]["static"]["by_database"]["db_b"]["mortality_missing"] is None
  assert set(info["featurizer"]) == {"db_a", "db_b"}


def test_window_hours_includes_later_rows(tmp_path):
  cohort, info = _load(_write(tmp_path), window_hours=25.0)
  a10, a30 = _row(cohort, "db_a:10"), _row(cohort, "db_a:30")
  assert _col(cohort, "vitals", "hr", "count")[a10] == 4.0
  assert _col(cohort, "vitals", "hr", "last")[a10] == 200.0
  assert cohort.present[a30, cohort.modality_names.index("lactate")]
  assert info["per_database"]["db_a"]["dyn_rows_outside_window"] == 0


def test_single_database_and_stays_without_dyn_rows(tmp_path):
  frames = _frames()
  frames["db_b"]["dyn"] = frames["db_b"]["dyn"].filter(pl.col("stay_id") == 10)
  cohort, _ = yaib.load_yaib(_write(tmp_path, frames), databases=("db_b",))
  assert cohort.patient_id.tolist() == ["db_b:10", "db_b:40"]
  np.testing.assert_array_equal(cohort.present[1], [True] + [False] * len(yaib.GROUPS))


# ----------------------------------------------------------------------------- errors


def _broken(tmp_path, db: str, name: str, edit) -> str:
  frames = _frames()
  frames[db][name] = edit(frames[db][name])
  return _write(tmp_path, frames)


# Structural problems: always an error.
@pytest.mark.parametrize("name, edit, pattern", [
    ("outc", lambda d: d.drop("stay_id"), r"outc\.parquet.*'?stay_id"),
    ("outc", lambda d: d.drop("label"), r"outc\.parquet.*'label'"),
    ("sta", lambda d: d.drop("stay_id"), r"sta\.parquet.*'?stay_id"),
    ("sta", lambda d: d.drop("weight"), r"sta\.parquet.*'weight'"),
    ("dyn", lambda d: d.with_columns(pl.lit(1.0).alias("foo")), r"dyn\.parquet.*foo"),
    ("dyn", lambda d: d.drop("lact"), r"dyn\.parquet.*lact"),
    ("dyn", lambda d: d.drop("stay_id"), r"dyn\.parquet.*'?stay_id"),
    ("dyn", lambda d: d.drop("time"), r"dyn\.parquet.*'?time"),
    ("dyn", lambda d: d.with_columns(pl.col("time").dt.total_hours().cast(pl.Float64)),
     r"dyn\.parquet.*'time'.*Duration"),
    ("dyn", lambda d: d.with_columns(pl.lit("x").alias("hr")), r"dyn\.parquet.*'hr'"),
])
def test_bad_input_names_file_and_column(tmp_path, name, edit, pattern):
  root = _broken(tmp_path, "db_b", name, edit)
  for strict in (False, True):
    with pytest.raises(DataError, match=pattern):
      _load(root, strict=strict)


# Imperfect rows: strict refuses them (naming file and column); by default they are
# skipped and counted per file and problem, and the cohort is what is left (`dropped`:
# the stays that leave it).
@pytest.mark.parametrize("name, edit, pattern, file, problem, n, dropped", [
    ("outc", lambda d: d.with_columns(pl.when(pl.col("stay_id") == 40).then(2)
                                      .otherwise(pl.col("label")).alias("label")),
     r"outc\.parquet.*'label'.*0 or 1", "outc", "label not 0 or 1 (stay dropped)", 1,
     ["db_b:40"]),
    ("outc", lambda d: d.with_columns(pl.when(pl.col("stay_id") == 40).then(None)
                                      .otherwise(pl.col("label")).alias("label")),
     r"outc\.parquet.*'label'", "outc", "label not 0 or 1 (stay dropped)", 1, ["db_b:40"]),
    ("outc", lambda d: pl.concat([d, d.head(1)]), r"outc\.parquet.*'stay_id'.*repeats",
     "outc", "stay_id repeated (every row of that stay skipped)", 2, ["db_b:10"]),
    ("outc", lambda d: pl.concat([d, _outc([99], [0])]), r"outc\.parquet.*no row in .*sta",
     "outc", "stay without a row in sta.parquet (stay dropped)", 1, []),
    ("sta", lambda d: d.filter(pl.col("stay_id") != 40), r"outc\.parquet.*no row in .*sta",
     "outc", "stay without a row in sta.parquet (stay dropped)", 1, ["db_b:40"]),
    ("sta", lambda d: pl.concat([d, _sta([77], ["Male"], [1.0], [1.0], [1.0])]),
     r"sta\.parquet.*'stay_id'.*no row in .*outc\.parquet", "sta",
     "stay without a row in outc.parquet (row skipped)", 1, []),
    ("sta", lambda d: d.with_columns(pl.lit("X").alias("sex")), r"sta\.parquet.*'sex'",
     "sta", "sex not 'Male'/'Female' (read as not recorded)", 2, []),
    ("sta", lambda d: d.with_columns(pl.lit(float("inf")).alias("age")),
     r"sta\.parquet.*'age'.*Inf", "sta", "age: ±Inf (read as not recorded)", 2, []),
    ("dyn", lambda d: pl.concat([d, d.tail(1)]), r"dyn\.parquet.*'time'.*repeat", "dyn",
     "stay_id, time repeated (later row skipped)", 1, []),
    ("dyn", lambda d: pl.concat([d, d.head(2).with_columns(pl.lit(5, pl.Int32)
                                                          .alias("stay_id"))]),
     r"dyn\.parquet.*'stay_id'.*no row in .*outc\.parquet", "dyn",
     "stay without a row in outc.parquet (row skipped)", 2, []),
])
def test_imperfect_rows_are_counted_or_refused(tmp_path, name, edit, pattern, file,
                                               problem, n, dropped):
  root = _broken(tmp_path, "db_b", name, edit)
  with pytest.raises(DataError, match=pattern):
    _load(root, strict=True)
  cohort, info = _load(root)
  path = os.path.join(root, TASK, "db_b", f"{file}.parquet")
  assert info["skipped"]["by_file"] == {path: {problem: n}}
  base, _ = _load(_write(tmp_path / "clean"))
  rows = [i for i, p in enumerate(base.patient_id.tolist()) if p not in dropped]
  assert cohort.patient_id.tolist() == base.patient_id[rows].tolist()
  for j, (a, b) in enumerate(zip(cohort.features, base.features)):
    if j or name != "sta":                  # a bad sta value changes only the static row
      np.testing.assert_array_equal(a, b[rows])
  np.testing.assert_array_equal(cohort.labels, base.labels[rows])


@pytest.mark.parametrize("name", ["sta", "dyn", "outc"])
def test_missing_file(tmp_path, name):
  root = _write(tmp_path)
  os.remove(os.path.join(root, TASK, "db_a", f"{name}.parquet"))
  with pytest.raises(DataError, match=rf"db_a.{name}\.parquet: file not found"):
    _load(root)


def test_missing_database_folder_and_bad_arguments(tmp_path):
  root = _write(tmp_path)
  with pytest.raises(DataError, match=r"db_c.*not found"):
    yaib.load_yaib(root, databases=("db_a", "db_c"))
  with pytest.raises(DataError, match=r"not found"):
    yaib.load_yaib(root, databases=("db_a",), task="aki")
  with pytest.raises(DataError, match=r"twice"):
    yaib.load_yaib(root, databases=("db_a", "db_a"))
  with pytest.raises(DataError, match=r"window_hours"):
    _load(root, window_hours=0.0)
  with pytest.raises(DataError, match=r"not found"):
    yaib.load_yaib(os.path.join(root, "nowhere"))


# ----------------------------------------------------------------------------- real data


def _real():
  if not os.path.isdir(os.path.join(YAIB_DIR, TASK)):
    pytest.skip(f"YAIB demo data not found at {YAIB_DIR} (see docs/data.md)")
  return yaib.load_yaib(YAIB_DIR)


def test_real_demo_cohorts():
  cohort, info = _real()
  per_db = info["per_database"]
  assert (per_db["mimic_demo"]["stays"], per_db["mimic_demo"]["deaths"]) == (99, 21)
  assert (per_db["eicu_demo"]["stays"], per_db["eicu_demo"]["deaths"]) == (1367, 70)
  assert cohort.n == 99 + 1367 and len(np.unique(cohort.patient_id)) == cohort.n
  database = info["database"]
  assert (database == "mimic_demo").sum() == 99 and (database == "eicu_demo").sum() == 1367
  assert all(p.startswith(f"{d}:") for p, d in zip(cohort.patient_id, database))
  assert cohort.labels[database == "mimic_demo"].sum() == 21
  assert cohort.present[:, 0].all()                     # static always observed
  assert cohort.input_dims == (4,) + tuple(len(g.variables) * len(STATS)
                                           for g in yaib.GROUPS)
  # Every virtual modality is observed for someone, and missing for someone, overall.
  frac = {n: d["observed_fraction"] for n, d in info["modalities"].items()}
  assert frac["static"] == 1.0
  assert all(0.0 < frac[g.name] < 1.0 for g in yaib.GROUPS), frac
  assert info["modalities"]["vitals"]["by_database"]["eicu_demo"]["observed_fraction"] > 0.95
  cohort.validate("real")

  # Print, per virtual modality and database, observed fraction and mortality.
  print("\nmodality       database     observed  mort|obs  mort|miss")
  for name, d in info["modalities"].items():
    for db, v in d["by_database"].items():
      fmt = lambda x: "   -   " if x is None else f"{x:7.3f}"
      print(f"{name:14s} {db:12s} {v['observed_fraction']:8.3f}  "
            f"{fmt(v['mortality_observed'])}  {fmt(v['mortality_missing'])}")


def test_real_features_match_a_direct_computation():
  cohort, info = _real()
  dyn = pl.read_parquet(os.path.join(YAIB_DIR, TASK, "mimic_demo", "dyn.parquet"))
  first_day = dyn.filter(pl.col("time") < pl.duration(hours=24))
  # Heart-rate count and mean per stay over the first 24 h, straight from the file.
  hr = first_day.group_by("stay_id").agg(pl.col("hr").count().alias("n"),
                                         pl.col("hr").mean().alias("mean"))
  rows = {pid: j for j, pid in enumerate(cohort.patient_id.tolist())}
  take = np.array([rows[f"mimic_demo:{s}"] for s in hr["stay_id"].to_list()])
  count = _col(cohort, "vitals", "hr", "count")[take]
  mean = _col(cohort, "vitals", "hr", "mean")[take]
  observed = hr["n"].to_numpy() > 0
  np.testing.assert_array_equal(count[observed], hr["n"].to_numpy()[observed])
  np.testing.assert_allclose(mean[observed], hr["mean"].to_numpy()[observed], rtol=1e-5)
  # Lactate observed exactly when the file has a lactate value in the first 24 h.
  lact = first_day.group_by("stay_id").agg(pl.col("lact").is_not_null().any())
  take = np.array([rows[f"mimic_demo:{s}"] for s in lact["stay_id"].to_list()])
  np.testing.assert_array_equal(
      cohort.present[take, cohort.modality_names.index("lactate")],
      lact["lact"].to_numpy())
  assert info["modalities"]["lactate"]["by_database"]["mimic_demo"]["observed"] == 50


def test_keep_reads_only_those_stays(tmp_path):
  root = _write(tmp_path)
  full, _ = _load(root)
  for want_ids in (["db_a:10", "db_b:40"], ["db_a:30", "db_a:20", "db_b:10"]):
    keep = lambda ids, w=want_ids: np.isin(ids, w)
    part, info = _load(root, keep=keep)
    want = np.isin(full.patient_id, want_ids)
    np.testing.assert_array_equal(part.patient_id, full.patient_id[want])
    for a, b in zip(part.features, full.features):
      np.testing.assert_array_equal(a, b[want])
    np.testing.assert_array_equal(part.labels, full.labels[want])
    np.testing.assert_array_equal(info["database"], np.char.partition(
        full.patient_id[want].astype(str), ":")[:, 0])
  with pytest.raises(DataError, match="fewer train.data_shards"):
    _load(root, keep=lambda ids: np.char.startswith(ids.astype(str), "db_a"))


def test_keep_on_the_real_demo_partitions_it():
  from crl_mmnar_jax.data import shards
  full, _ = _real()
  parts = [yaib.load_yaib(YAIB_DIR, keep=shards.keep_fn(3, (s,)))[0] for s in range(3)]
  got = np.concatenate([p.patient_id for p in parts])
  assert sorted(got.tolist()) == sorted(full.patient_id.tolist())
  for s, p in enumerate(parts):
    want = shards.shard_of(full.patient_id, 3) == s
    np.testing.assert_array_equal(p.patient_id, full.patient_id[want])
    for a, b in zip(p.features, full.features):
      np.testing.assert_array_equal(a, b[want])
