"""Tests for `featurize`: every statistic against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.featurize import STATS, Featurized, ModalityGroup, featurize

NAN = float("nan")
GROUPS = (ModalityGroup("vitals", ("hr", "temp")),
          ModalityGroup("labs", ("na", "k")),
          ModalityGroup("gas", ("ph",)))
RANGES = {"hr": (10.0, 300.0), "temp": (25.0, 45.0), "ph": (6.5, 8.0),
          "unused": (0.0, 1.0)}
UNMEASURED = [NAN, NAN, NAN, NAN, NAN, 0.0, NAN, NAN]   # group observed, variable not


def _table() -> pl.DataFrame:
  """19 measurements of stays 10, 20, 30 (rows deliberately not sorted by time)."""
  rows = [
      # stay 10: hr three times in the window, twice outside (after 48 h, before 0 h)
      (10, 3.0, "hr", 100.0), (10, 0.0, "hr", 80.0), (10, 50.0, "hr", 200.0),
      (10, 1.5, "hr", 90.0), (10, -1.0, "hr", 70.0),
      # temp: one impossible value (0 °C) and one real, measured once
      (10, 2.0, "temp", 0.0), (10, 1.0, "temp", 37.0),
      # na: two values at 10 h (the later row is "last"), one at 4 h
      (10, 10.0, "na", 138.0), (10, 4.0, "na", 140.0), (10, 10.0, "na", 139.0),
      # k: a NaN value is no measurement; ph only outside the window
      (10, 2.0, "k", NAN), (10, 49.0, "ph", 7.3),
      # stay 20: hr up to the window's end (inclusive), ph twice at one time,
      # a variable in no group, labs never measured
      (20, 0.25, "hr", 110.0), (20, 0.75, "hr", 100.0), (20, 48.0, "hr", 120.0),
      (20, 5.0, "ph", 7.4), (20, 5.0, "ph", 7.3), (20, 1.0, "foo", 1.0),
      # stay 30: a single impossible temperature
      (30, 1.0, "temp", 99.0),
  ]
  stay, time, var, value = zip(*rows)
  return pl.DataFrame({"stay_id": list(stay), "time": list(time), "variable": list(var),
                       "value": list(value)})


def _run(**kwargs) -> Featurized:
  args = dict(valid_ranges=RANGES, unknown_variables="ignore")
  args.update(kwargs)
  return featurize(_table(), GROUPS, **args)


def _stats(f: Featurized, stay, group: str, var: str) -> np.ndarray:
  g = f.group_names.index(group)
  row = int(np.flatnonzero(f.stay_id == stay)[0])
  cols = [f.feature_names[g].index(f"{var}_{s}") for s in STATS]
  return f.features[g][row, cols]


def _check(actual, expected) -> None:
  np.testing.assert_allclose(actual, np.asarray(expected, dtype=np.float64), rtol=1e-6,
                             atol=1e-6, equal_nan=True)


# Hand-computed statistics (order of STATS: last mean min max std count time_last slope).
HR_10 = [100.0, 90.0, 80.0, 100.0, math.sqrt(200 / 3), 3.0, 3.0,
         30.0 / 4.5]                  # Sxy = (-1.5)(-10) + 0 + 1.5 * 10 = 30, Sxx = 4.5
TEMP_10_DROP = [37.0, 37.0, 37.0, 37.0, 0.0, 1.0, 1.0, NAN]      # measured once
NA_10 = [139.0, 139.0, 138.0, 140.0, math.sqrt(2 / 3), 3.0, 10.0,
         -6.0 / 24.0]                 # t̄ = 8, v̄ = 139: Sxy = -2 - 4 + 0, Sxx = 4 + 16 + 4
# t = 1/4, 3/4, 48; Sxy = 5862.5 - 3 (49/3) 110 = 472.5; Sxx = 2304.625 - 2401/3.
HR_20 = [120.0, 110.0, 100.0, 120.0, math.sqrt(200 / 3), 3.0, 48.0,
         472.5 / (2304.625 - 2401 / 3)]
PH_20 = [7.3, 7.35, 7.3, 7.4, 0.05, 2.0, 5.0, NAN]   # one distinct time: no slope


def test_shapes_names_and_types():
  f = _run()
  assert f.group_names == ("vitals", "labs", "gas")
  np.testing.assert_array_equal(f.stay_id, [10, 20, 30])     # sorted unique ids
  assert f.stay_id.dtype == np.int64
  assert [x.shape for x in f.features] == [(3, 16), (3, 16), (3, 8)]
  assert all(x.dtype == np.float32 for x in f.features)
  assert f.feature_names[0][:9] == ("hr_last", "hr_mean", "hr_min", "hr_max", "hr_std",
                                    "hr_count", "hr_time_last", "hr_slope", "temp_last")
  assert f.feature_names[2] == tuple(f"ph_{s}" for s in STATS)
  assert f.present.dtype == bool


def test_every_statistic_by_hand_drop():
  f = _run()
  _check(_stats(f, 10, "vitals", "hr"), HR_10)
  _check(_stats(f, 10, "vitals", "temp"), TEMP_10_DROP)
  _check(_stats(f, 10, "labs", "na"), NA_10)
  _check(_stats(f, 10, "labs", "k"), UNMEASURED)              # only a NaN value
  _check(_stats(f, 20, "vitals", "hr"), HR_20)
  _check(_stats(f, 20, "vitals", "temp"), UNMEASURED)
  _check(_stats(f, 20, "gas", "ph"), PH_20)
  # Groups never observed: rows exactly 0 (stay 10's ph was outside the window, stay 20
  # had no labs, stay 30's only value was impossible).
  np.testing.assert_array_equal(f.present, [[True, True, False],
                                            [True, False, True],
                                            [False, False, False]])
  for g, x in enumerate(f.features):
    assert np.all(x[~f.present[:, g]] == 0.0)
  np.testing.assert_allclose(HR_20[7], np.polyfit([0.25, 0.75, 48.0],
                                                  [110.0, 100.0, 120.0], 1)[0])


def test_clip_instead_of_drop():
  f = _run(out_of_range="clip")
  # temp 0 -> 25 at 2 h joins 37 at 1 h.
  _check(_stats(f, 10, "vitals", "temp"), [25.0, 31.0, 25.0, 37.0, 6.0, 2.0, 2.0, -12.0])
  # stay 30's 99 °C -> 45 °C: its vitals are now observed.
  _check(_stats(f, 30, "vitals", "temp"), [45.0, 45.0, 45.0, 45.0, 0.0, 1.0, 1.0, NAN])
  _check(_stats(f, 30, "vitals", "hr"), UNMEASURED)
  _check(_stats(f, 10, "vitals", "hr"), HR_10)                # unaffected
  np.testing.assert_array_equal(f.present[:, 0], [True, True, True])
  assert f.report["out_of_range_action"] == "clip"
  assert f.report["out_of_range"] == {"temp": 2}
  assert f.report["n_used"] == 14


def test_report_counts():
  r = _run().report
  assert r["n_measurements"] == 19
  assert r["n_unknown_variable"] == 1 and r["unknown_variables"] == {"foo": 1}
  assert r["n_invalid"] == 1                                  # k = NaN
  assert r["n_out_of_window"] == 3                            # hr 50 h, hr -1 h, ph 49 h
  assert r["n_in_window"] == 14
  assert r["n_out_of_range"] == 2 and r["out_of_range"] == {"temp": 2}
  assert r["n_used"] == 12
  assert r["n_unlisted_stay"] == 0
  assert r["per_variable"]["hr"] == {"measurements": 8, "in_window": 6,
                                     "out_of_window": 2, "out_of_range": 0, "used": 6}
  assert r["per_variable"]["temp"] == {"measurements": 3, "in_window": 3,
                                       "out_of_window": 0, "out_of_range": 2, "used": 1}
  assert r["per_variable"]["k"]["used"] == 0
  assert r["observed"] == {"vitals": 2, "labs": 1, "gas": 1}
  assert r["n_stays"] == 3


def test_stays_order_absent_and_unlisted():
  f = _run(stays=np.array([30, 20, 10, 40]))
  np.testing.assert_array_equal(f.stay_id, [30, 20, 10, 40])
  np.testing.assert_array_equal(f.present, [[False, False, False],
                                            [True, False, True],
                                            [True, True, False],
                                            [False, False, False]])   # 40: no data
  _check(_stats(f, 10, "labs", "na"), NA_10)
  assert all(np.all(x[3] == 0.0) for x in f.features)
  # Stays not listed: their measurements are ignored and counted.
  f = _run(stays=np.array([20]))
  assert f.report["n_unlisted_stay"] == 13
  _check(_stats(f, 20, "vitals", "hr"), HR_20)
  with pytest.raises(DataError, match="more than once"):
    _run(stays=np.array([10, 10]))
  with pytest.raises(DataError, match="integers"):
    _run(stays=np.array(["10", "20"]))


def test_window_bounds_are_inclusive_and_configurable():
  f = _run(window=(0.5, 3.0))
  # hr of stay 10 in [0.5, 3]: 90 at 1.5 h and 100 at 3 h.
  _check(_stats(f, 10, "vitals", "hr"), [100.0, 95.0, 90.0, 100.0, 5.0, 2.0, 3.0,
                                         10.0 / 1.5])
  # na of stay 10 (4 h, 10 h) falls outside: labs unobserved.
  assert not f.present[0, 1]


def test_unknown_variables_error_and_ignore():
  with pytest.raises(DataError, match="'foo' \\(1 rows\\)"):
    featurize(_table(), GROUPS, valid_ranges=RANGES)
  f = _run()
  assert "foo" not in f.report["per_variable"]


def test_lazy_frame_custom_columns_and_string_ids():
  table = _table().rename({"stay_id": "sid", "time": "hours", "variable": "code",
                           "value": "x"}).with_columns(pl.col("sid").cast(pl.String))
  f = featurize(table.lazy(), GROUPS, valid_ranges=RANGES, unknown_variables="ignore",
                stay_col="sid", time_col="hours", var_col="code", value_col="x")
  np.testing.assert_array_equal(f.stay_id, ["10", "20", "30"])
  _check(_stats(f, "10", "labs", "na"), NA_10)
  _check(_stats(f, "20", "gas", "ph"), PH_20)


def test_no_ranges_keeps_everything():
  f = featurize(_table(), GROUPS, unknown_variables="ignore")
  _check(_stats(f, 10, "vitals", "temp"), [0.0, 18.5, 0.0, 37.0, 18.5, 2.0, 2.0, -37.0])
  assert f.report["out_of_range"] == {}


def test_bad_arguments():
  with pytest.raises(ValueError, match="more than one group"):
    featurize(_table(), [ModalityGroup("a", ("hr",)), ModalityGroup("b", ("hr", "k"))])
  with pytest.raises(ValueError, match="out_of_range"):
    _run(out_of_range="winsorize")
  with pytest.raises(ValueError, match="unknown_variables"):
    _run(unknown_variables="warn")
  with pytest.raises(ValueError, match="window"):
    _run(window=(48.0, 0.0))
  with pytest.raises(ValueError, match="lo <= hi"):
    _run(valid_ranges={"hr": (300.0, 10.0)})
  with pytest.raises(DataError, match="no column"):
    featurize(_table().drop("time"), GROUPS)
  with pytest.raises(DataError, match="numeric"):
    featurize(_table().with_columns(pl.col("value").cast(pl.String)), GROUPS)
  with pytest.raises(DataError, match="null"):
    featurize(_table().with_columns(pl.lit(None, pl.Int64).alias("stay_id")), GROUPS,
              unknown_variables="ignore")


def _naive(table: pl.DataFrame, var: str, stay: int) -> list[float]:
  """The 8 statistics by plain Python (input order kept), as an independent oracle."""
  rows = [(t, v) for s, t, x, v in table.iter_rows() if s == stay and x == var]
  if not rows:
    return UNMEASURED
  t = np.array([r[0] for r in rows])
  v = np.array([r[1] for r in rows])
  last = v[np.flatnonzero(t == t.max())[-1]]
  slope = np.polyfit(t, v, 1)[0] if len(set(t.tolist())) > 1 else NAN
  return [last, v.mean(), v.min(), v.max(), v.std(), len(v), t.max(), slope]


def test_random_table_matches_naive_oracle():
  rng = np.random.default_rng(0)
  n = 400
  table = pl.DataFrame({
      "stay_id": rng.integers(0, 12, n),
      "time": rng.integers(0, 20, n) / 4.0,           # coarse grid: many time ties
      "variable": rng.choice(["hr", "temp", "na", "k", "ph"], n),
      "value": rng.normal(50.0, 10.0, n),
  })
  f = featurize(table, GROUPS)
  for stay in f.stay_id:
    for group in GROUPS:
      g = f.group_names.index(group.name)
      row = int(np.flatnonzero(f.stay_id == stay)[0])
      if not f.present[row, g]:
        assert np.all(f.features[g][row] == 0.0)
        continue
      for var in group.variables:
        _check(_stats(f, stay, group.name, var), _naive(table, var, stay))


def test_gbt_sees_not_measured_summaries_as_missing_like_a_naive_loop():
  """`methods.direct.featurized_not_measured`: after standardisation (which imputes the
  training mean), the trees get NaN back exactly where a stay's observed group has no
  usable measurement of the variable (naive loop over stays), never elsewhere."""
  from crl_mmnar_jax.cohort import Cohort
  from crl_mmnar_jax.data.standardize import standardize
  from crl_mmnar_jax.methods import direct
  rng = np.random.default_rng(1)
  n = 300
  table = pl.DataFrame({
      "stay_id": rng.integers(0, 40, n),
      "time": rng.integers(0, 20, n) / 4.0,
      "variable": rng.choice(["hr", "temp", "na", "k", "ph"], n, p=[.4, .1, .3, .1, .1]),
      "value": rng.normal(50.0, 10.0, n),
  })
  f = featurize(table, GROUPS)
  keep = f.present.any(1)
  cohort = Cohort(f.stay_id[keep], tuple(x[keep] for x in f.features), f.present[keep],
                  rng.integers(0, 2, (int(keep.sum()), 1)).astype(np.float32),
                  f.group_names, ("y",), feature_names=f.feature_names).validate()
  std, stats = standardize(cohort, np.arange(cohort.n // 2))
  masks = direct.featurized_not_measured(std, stats)
  pairs = {(s, v) for s, v in zip(table["stay_id"].to_list(), table["variable"].to_list())}
  n_marked = 0
  for g, group in enumerate(GROUPS):
    want = np.zeros_like(masks[g])
    for i, stay in enumerate(cohort.patient_id):
      for k, var in enumerate(group.variables):
        if cohort.present[i, g] and (int(stay), var) not in pairs:
          for j, stat in enumerate(STATS):
            want[i, k * len(STATS) + j] = stat != "count"
    np.testing.assert_array_equal(masks[g], want, err_msg=group.name)
    n_marked += int(want.sum())
    # Only cells standardisation imputed (a slope left NaN by one distinct time is
    # imputed but not marked).
    imputed = np.isnan(cohort.features[g]) & cohort.present[:, [g]]
    assert not np.any(masks[g] & ~imputed)
  assert n_marked > 0                      # the test can fail: some cells are marked
