"""eICU-CRD v2.0 loader on a hand-made fixture in the published raw schema."""

from __future__ import annotations

import os
import zlib

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.sources import eicu
from crl_mmnar_jax.testing.eicu_fixture import (
  COHORT,
  EXPECTED_LABELS,
  INDEX_STAYS,
  PATIENTS,
  TABLES,
  write_tables,
)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
  d = write_tables(str(tmp_path_factory.mktemp("eicu")))
  return eicu.load_eicu(d, tasks=("mortality", "icu_readmission", "hospital_readmission"),
                        cache_dir=str(tmp_path_factory.mktemp("cache")))


def _row(cohort, pid):
  return int(np.flatnonzero(cohort.patient_id == pid)[0])


def _feat(cohort, modality, name, pid):
  m = cohort.modality_names.index(modality)
  return cohort.features[m][_row(cohort, pid), cohort.feature_names[m].index(name)]


def test_attrition_and_cohort(loaded):
  cohort, info = loaded
  steps = [(a["step"].split(" (")[0], a["stays"], a["patients"]) for a in info["attrition"]]
  assert steps == [("unit stays in patient table", 17, 11), ("age known", 16, 10),
                   ("adult", 15, 9), ("first unit stay per patient", 9, 9),
                   ("in the unit and alive after the 24 h feature window", 7, 7)]
  assert cohort.patient_id.tolist() == COHORT    # 001-1 (10 h) and 011-1 (died at 10 h) out
  assert info["patientunitstayid"].tolist() == INDEX_STAYS   # 002-1: the 2014 stay first
  assert cohort.modality_names == eicu.MODALITIES
  assert len(info["fingerprint"]) == 16
  assert info["skipped"] == {"strict": False, "n_rows": 0, "by_problem": {}, "by_file": {}}
  cohort.validate("test")


def test_labels(loaded):
  """Each rule by hand (eicu_fixture.PATIENTS): a transfer is not an ICU readmission, a
  return 14.5 h after one is; a death in the unit and a death (or unknown status) in
  hospital are unknown for the readmission tasks; a null discharge year is not later."""
  cohort, _ = loaded
  want = np.array([EXPECTED_LABELS[p] for p in COHORT], dtype=float)   # None -> NaN
  np.testing.assert_array_equal(cohort.labels, want.astype(np.float32))
  assert cohort.task_names == ("mortality", "icu_readmission", "hospital_readmission")


def test_window_exclusion_edges(tmp_path):
  """A unit discharge exactly at the window end is inside it (excluded); a minute later
  is kept; a hospital discharge inside the window excludes the stay as well."""
  rows = [dict(r) for r in PATIENTS]
  by_stay = {r["patientunitstayid"]: r for r in rows}
  by_stay[100]["unitdischargeoffset"] = 1441                   # 001-1: kept now
  by_stay[700]["unitdischargeoffset"] = 1440                   # 007-1: out
  by_stay[900]["hospitaldischargeoffset"] = 1000               # 009-1: out
  d = write_tables(str(tmp_path / "d"), {**TABLES, "patient": rows})
  cohort, info = eicu.load_eicu(d)
  assert cohort.patient_id.tolist() == ["001-1", "002-1", "003-1", "006-1", "008-1",
                                        "010-1"]
  assert info["attrition"][-1]["patients"] == 6


def test_demographics(loaded):
  cohort, _ = loaded
  assert _feat(cohort, "demographics", "age", "002-1") == 90.0      # "> 89"
  assert _feat(cohort, "demographics", "male", "002-1") == 1.0
  assert _feat(cohort, "demographics", "unittype=MICU", "002-1") == 1.0
  assert _feat(cohort, "demographics", "unittype=SICU", "003-1") == 1.0
  assert _feat(cohort, "demographics", "pre_unit_hours", "003-1") == 2.0
  assert cohort.present[:, 0].all()


def test_vital_and_lab_features(loaded):
  cohort, info = loaded
  f = lambda name: _feat(cohort, "vitals_periodic", name, "003-1")
  assert f("heartrate_count") == 3          # offsets 0, 60, 120 min; not -5 or 1500
  assert f("heartrate_mean") == 90.0
  assert f("heartrate_last") == 100.0
  assert f("heartrate_min") == 80.0 and f("heartrate_max") == 100.0
  assert f("heartrate_time_last") == 2.0
  assert f("heartrate_slope") == pytest.approx(10.0)   # 10 bpm per hour
  assert f("respiration_count") == 1        # the impossible 0 was dropped
  assert f("sao2_count") == 0 and np.isnan(f("sao2_mean"))   # group observed, not measured
  assert info["modalities"]["vitals_periodic"]["out_of_range"] == {"respiration": 1}
  # The transfer stay 301 belongs to no cohort row: not counted anywhere.
  g = lambda name: _feat(cohort, "lab", name, "003-1")
  assert g("sodium_count") == 2 and g("sodium_mean") == 138.0 and g("sodium_last") == 136.0
  lab = cohort.modality_names.index("lab")
  assert cohort.present[:, lab].tolist() == [False, True] + [False] * 5


def test_counts_and_hashed_buckets(loaded):
  cohort, _ = loaded
  assert _feat(cohort, "medication", "med_orders", "003-1") == 1     # cancelled excluded
  b = zlib.crc32(b"aspirin 81 mg tab") % 16
  assert eicu.bucket("  ASPIRIN 81 MG TAB ") == b
  assert _feat(cohort, "medication", f"med_bucket{b:02d}", "003-1") == 1
  m = cohort.modality_names.index("medication")
  assert cohort.features[m][_row(cohort, "003-1")].sum() == 3      # orders + distinct + 1
  # Two rows of one urine culture (two antibiotics tested) and a blood culture at 10 h;
  # the sputum culture at 2000 min is after the window. No organism is read.
  assert _feat(cohort, "microbiology", "micro_cultures", "003-1") == 2
  assert _feat(cohort, "microbiology", "micro_sites", "003-1") == 2
  mic = cohort.modality_names.index("microbiology")
  assert cohort.feature_names[mic] == ("micro_cultures", "micro_sites")
  assert _feat(cohort, "intake_output", "nettotal_last", "003-1") == 200.0
  assert _feat(cohort, "diagnosis", "dx_entries", "002-1") == 1
  tr = cohort.modality_names.index("treatment_resp")
  assert cohort.present[:, tr].tolist() == [False] * 3 + [True] + [False] * 3
  assert _feat(cohort, "treatment_resp", "resp_rows", "007-1") == 1


def test_unobserved_modality_is_zero(loaded):
  cohort, _ = loaded
  r = _row(cohort, "006-1")
  assert cohort.present[r].tolist() == [True] + [False] * 9
  for m in range(1, 10):
    assert not cohort.features[m][r].any() and not np.isnan(cohort.features[m][r]).any()


def test_plain_csv_gives_the_same_cohort(tmp_path, loaded):
  cohort, info = loaded
  d = write_tables(str(tmp_path / "plain"), gz=False)
  c2, i2 = eicu.load_eicu(d, tasks=("mortality", "icu_readmission",
                                    "hospital_readmission"))
  assert i2["fingerprint"] == info["fingerprint"]
  for a, b in zip(cohort.features, c2.features):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(cohort.labels, c2.labels)


def test_missing_table_and_column(tmp_path):
  d = write_tables(str(tmp_path / "a"))
  os.remove(os.path.join(d, "microLab.csv.gz"))
  with pytest.raises(DataError, match="microLab"):
    eicu.load_eicu(d)
  d = write_tables(str(tmp_path / "b"), drop_column="labresult")
  with pytest.raises(DataError, match=r"lab\.csv\.gz.*labresult"):
    eicu.load_eicu(d)
  d = write_tables(str(tmp_path / "c"), drop_column="uniquepid")
  with pytest.raises(DataError, match=r"patient\.csv\.gz.*uniquepid"):
    eicu.load_eicu(d)


def test_bad_value_and_bad_task(tmp_path, loaded):
  """A value that does not parse: strict refuses the table; by default it is counted
  (one more pass over that table) and read as null, its row dropping out."""
  rows = [dict(r) for r in TABLES["vitalPeriodic"]]
  rows[0]["observationoffset"] = "soon"            # stay 300's HR 80 (RR 0) at 0 min
  rows[1]["heartrate"] = "ninety"                  # stay 300's HR 90 at 60 min
  d = write_tables(str(tmp_path / "a"), {**TABLES, "vitalPeriodic": rows})
  with pytest.raises(DataError, match="vitalPeriodic.*column '(observationoffset|heartrate)'"
                     ) as e:
    eicu.load_eicu(d, strict=True)
  assert "soon" not in str(e.value) and "ninety" not in str(e.value)   # no raw value
  cohort, info = eicu.load_eicu(d)
  path = os.path.join(d, "vitalPeriodic.csv.gz")
  assert info["skipped"]["by_file"] == {path: {
      "heartrate: value does not parse as Float64": 1,
      "observationoffset: value does not parse as Int64": 1}}
  assert _feat(cohort, "vitals_periodic", "heartrate_count", "003-1") == 1    # 100 only
  assert _feat(cohort, "vitals_periodic", "respiration_count", "003-1") == 1  # RR 20 kept
  base, _ = loaded
  for m in range(cohort.n_modalities):
    if cohort.modality_names[m] != "vitals_periodic":
      np.testing.assert_array_equal(cohort.features[m], base.features[m])
  with pytest.raises(DataError, match="los"):
    eicu.load_eicu(d, tasks=("los",))


def test_patient_rows_policy(tmp_path):
  """A repeated unit stay id: every row of it skipped and counted; strict refuses it."""
  rows = [dict(r) for r in PATIENTS] + [dict(PATIENTS[-2])]     # stay 1010 twice
  d = write_tables(str(tmp_path / "a"), {**TABLES, "patient": rows})
  with pytest.raises(DataError, match=r"patient\.csv\.gz: column patientunitstayid"):
    eicu.load_eicu(d, strict=True)
  cohort, info = eicu.load_eicu(d)
  assert info["skipped"]["by_problem"] == {
      "patientunitstayid repeated (every row of that stay skipped)": 2}
  assert cohort.patient_id.tolist() == COHORT     # 1010 is 010-1's later stay, not index
  with pytest.raises(DataError, match="los"):
    eicu.load_eicu(d, tasks=("los",))


def test_resumable_cache(tmp_path):
  d = write_tables(str(tmp_path / "data"))
  cache = str(tmp_path / "cache")
  c1, i1 = eicu.load_eicu(d, cache_dir=cache)
  assert i1["stages_run"] == list(("cohort",) + eicu.MODALITIES[1:])
  os.remove(os.path.join(d, "vitalPeriodic.csv.gz"))     # the big table is gone
  c2, i2 = eicu.load_eicu(d, cache_dir=cache)
  assert i2["stages_run"] == []
  for a, b in zip(c1.features, c2.features):
    np.testing.assert_array_equal(a, b)
  # An interrupted run: a missing stage is recomputed, the others are reused.
  os.remove(os.path.join(i1["cache_folder"], "lab.parquet"))
  _, i3 = eicu.load_eicu(d, cache_dir=cache)
  assert i3["stages_run"] == ["lab"]
  # Another window is another cache folder: it needs the table again.
  with pytest.raises(DataError, match="vitalPeriodic"):
    eicu.load_eicu(d, cache_dir=cache, window_hours=12.0)


def test_parse_age():
  s = pl.Series(["> 89", "45", "", None, "17", ">89"])
  out = pl.select(eicu.parse_age(pl.lit(s))).to_series().to_list()
  assert out == [90.0, 45.0, None, None, 17.0, 90.0]


def test_stay_batches_give_the_same_features(tmp_path, monkeypatch, loaded):
  cohort, _ = loaded
  monkeypatch.setattr(eicu, "BATCH_VALUES", 1)   # one stay per batch
  d = write_tables(str(tmp_path / "data"))
  c2, _ = eicu.load_eicu(d, tasks=("mortality", "icu_readmission", "hospital_readmission"))
  for a, b in zip(cohort.features, c2.features):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(cohort.present, c2.present)


def test_modality_never_observed_by_anyone(tmp_path):
  d = write_tables(str(tmp_path / "data"), {**TABLES, "vitalAperiodic": [], "lab": []})
  cohort, info = eicu.load_eicu(d)
  for name in ("vitals_aperiodic", "lab"):
    m = cohort.modality_names.index(name)
    assert not cohort.present[:, m].any() and not cohort.features[m].any()
    assert cohort.features[m].shape[1] == len(cohort.feature_names[m]) > 0
    assert info["observed_fraction"][name] == 0.0


def test_eicu_config_loads_through_data_load(tmp_path):
  from crl_mmnar_jax import data as data_lib
  from crl_mmnar_jax.data.errors import DataError
  from experiments.configs import eicu as eicu_config
  config = eicu_config.get_config()
  with pytest.raises(DataError, match="needs --config.data.dir"):
    data_lib.load(config)
  config.data.dir = write_tables(str(tmp_path / "data"))
  config.data.cache_dir = str(tmp_path / "cache")
  loaded = data_lib.load(config)
  assert loaded.cohort.patient_id.tolist() == COHORT
  assert loaded.cohort.task_names == ("mortality", "icu_readmission")
  assert loaded.test_mask_N is None
  assert not any(isinstance(v, np.ndarray) for v in loaded.info.values())
  assert os.listdir(tmp_path / "cache")          # the stages were cached
