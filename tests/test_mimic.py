"""MIMIC-IV loader and text encoders: a hand-made fixture in the published raw schema,
the same data as MEDS events, and the real MIMIC-IV demo (MEDS) when present."""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import hashlib
import os
import subprocess
import sys
import zlib

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax.data import text_embed
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.sources import mimic
from crl_mmnar_jax.data.sources.mimic import source as mimic_source
from crl_mmnar_jax.testing import mimic_fixture as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "..", "shared", "data", "mimic-iv-demo-meds", "events.parquet")
NAN = float("nan")


def _load(folder, **kw):
  return mimic.load_mimic(folder, cxr_embeddings=os.path.join(folder, "cxr_embeddings.parquet"),
                          **kw)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  folder = fx.write_raw(str(tmp_path_factory.mktemp("mimic") / "2.2"))
  return (folder,) + _load(folder, cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def meds(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("meds") / "events.parquet")
  fx.to_meds().write_parquet(path)
  return mimic.load_mimic(meds=path)


def _row(cohort, sid):
  return int(np.flatnonzero(cohort.patient_id == sid)[0])


def _feat(cohort, name, sid, modality="ehr"):
  m = cohort.modality_names.index(modality)
  return cohort.features[m][_row(cohort, sid), cohort.feature_names[m].index(name)]


def _vector(cohort, modality, sid):
  return cohort.features[cohort.modality_names.index(modality)][_row(cohort, sid)]


# ----------------------------------------------------------------------------- cohort


def test_attrition_fingerprint_and_version(raw):
  _, cohort, info = raw
  steps = [(a["step"].split(" (")[0], a["unit"], a["n_remaining"], a["n_excluded"])
           for a in info["attrition"]]
  assert steps == [("subjects", "subjects", 10, 0),
                   ("anchor_year_group within 2008-2019", "subjects", 10, 0),
                   ("admissions with dischtime >= admittime", "admissions", 16, 1),
                   ("subjects with a valid hospital admission", "subjects", 9, 1),
                   ("index episode: admissions starting < 6 h after the previous "
                    "discharge continue it", "subjects", 9, 0),
                   ("adult at the index admission", "subjects", 8, 1),
                   ("survived the index episode", "subjects", 7, 1)]
  merged = info["attrition"][4]
  assert (merged["admissions_merged"], merged["subjects_with_merged"]) == (2, 2)  # S3, S9
  assert cohort.patient_id.tolist() == fx.COHORT
  assert info["hadm_id"].tolist() == fx.INDEX_HADM               # S7: invalid 701 dropped
  ids = "\n".join(str(s) for s in sorted(fx.COHORT))
  assert info["fingerprint"] == hashlib.sha256(ids.encode()).hexdigest()[:16]
  assert info["version"] == "2.2" and info["source"] == "raw"      # from the folder name
  assert cohort.modality_names == mimic.MODALITIES
  cohort.validate("test")


def test_labels_with_boundaries(raw):
  _, cohort, info = raw
  assert cohort.task_names == mimic.TASKS
  for sid, expected in fx.EXPECTED_LABELS.items():
    np.testing.assert_array_equal(cohort.labels[_row(cohort, sid)], expected, err_msg=str(sid))
  assert info["label_counts"] == {"readmission_30d": {"n": 7, "n_positive": 2},
                                  "icu_90d": {"n": 7, "n_positive": 2},
                                  "mortality_180d": {"n": 7, "n_positive": 2}}


def test_static_ehr_features(raw):
  _, c, _ = raw
  assert _feat(c, "age", fx.S1) == 50 and _feat(c, "male", fx.S1) == 0
  assert _feat(c, "age", fx.S2) == 61          # anchor_age 60 + (2150 - 2149)
  assert _feat(c, "age", fx.S7) == 18          # 17 + (2151 - 2150)
  assert _feat(c, "los_hours", fx.S1) == 98.0
  assert _feat(c, "icu_stays", fx.S1) == 0 and _feat(c, "icu_stays", fx.S2) == 1
  assert _feat(c, "icu_stays", fx.S3) == 1     # the transfer's ICU stay: same episode
  assert _feat(c, "los_hours", fx.S3) == 170.0  # 03-01 08:00 to the transfer's 03-08 10:00
  assert np.isnan(_feat(c, "discharge_location=HOME", fx.S3))   # the LAST discharge's
  assert _feat(c, "los_hours", fx.S9) == pytest.approx(4 * 24 + 3.7)  # 08-01 06:18 -> 08-05 10:00
  assert _feat(c, "admission_type=EU OBSERVATION", fx.S9) == 1     # the FIRST admission's
  assert _feat(c, "discharge_location=HOME", fx.S9) == 1
  assert _feat(c, "admission_type=EW EMER.", fx.S1) == 1
  assert _feat(c, "admission_type=ELECTIVE", fx.S1) == 0
  assert _feat(c, "discharge_location=SKILLED NURSING FACILITY", fx.S2) == 1
  assert _feat(c, "insurance=Medicaid", fx.S2) == 1
  assert _feat(c, "insurance=Private", fx.S3) == 1     # a v3.x value
  assert _feat(c, "race=white", fx.S1) == 1 and _feat(c, "race=black", fx.S2) == 1
  assert _feat(c, "race=asian", fx.S7) == 1
  assert np.isnan(_feat(c, "race=white", fx.S3))       # "UNKNOWN": not recorded


def test_lab_and_vital_aggregates(raw):
  _, c, info = raw
  f = lambda name, sid=fx.S1: _feat(c, name, sid)
  assert f("creatinine_count") == 2            # not the one before admission or after
  assert f("creatinine_mean") == pytest.approx(1.2)
  assert f("creatinine_last") == pytest.approx(1.4) and f("creatinine_min") == 1.0
  assert f("creatinine_time_last") == 26.0     # hours since admittime
  assert f("creatinine_slope") == pytest.approx(0.4 / 24)
  assert f("sodium_count") == 1 and f("sodium_last") == 140.0
  assert f("potassium_count") == 0 and np.isnan(f("potassium_mean"))   # valuenum empty
  assert f("heart_rate_count") == 0 and np.isnan(f("heart_rate_mean"))  # no vitals at all
  assert f("heart_rate_count", fx.S2) == 2 and f("heart_rate_mean", fx.S2) == 90.0
  assert f("heart_rate_last", fx.S2) == 100.0 and f("heart_rate_time_last", fx.S2) == 28.0
  assert f("resp_rate_count", fx.S2) == 0      # 0 /min is impossible: dropped
  assert f("temperature_f_count", fx.S2) == 1
  assert f("creatinine_count", fx.S3) == 1     # drawn during the transfer: same episode
  assert f("heart_rate_count", fx.S3) == 1     # charted in the transfer's ICU stay
  assert f("creatinine_count", fx.S9) == 1     # drawn in 902, 1 min after 901 ended
  assert info["modalities"]["vitals"]["out_of_range"] == {"resp_rate": 1}


def test_medication_and_code_counts(raw):
  _, c, _ = raw
  assert _feat(c, "rx_entries", fx.S1) == 3    # Aspirin, Heparin, aspirin; not Warfarin
  assert _feat(c, "rx_distinct", fx.S1) == 2   # drug names compared lower-cased
  b = mimic.bucket("Aspirin")
  assert b == zlib.crc32(b"aspirin") % mimic.N_CODE_BUCKETS
  in_b = lambda names: sum(mimic.bucket(n) == b for n in names)
  assert _feat(c, f"rx_bucket{b:02d}", fx.S1) == in_b(["aspirin", "heparin", "aspirin"])
  assert _feat(c, "dx_entries", fx.S1) == 2    # I10, E119 of hadm 101; not N179 of 102
  b = mimic.bucket("ICD10:I10")
  assert _feat(c, f"dx_bucket{b:02d}", fx.S1) == in_b(["icd10:i10", "icd10:e119"])
  assert _feat(c, "proc_entries", fx.S1) == 1 and _feat(c, "proc_entries", fx.S7) == 1
  assert _feat(c, "rx_entries", fx.S3) == 0 and _feat(c, "dx_entries", fx.S3) == 0


def test_cxr_and_notes(raw):
  _, c, _ = raw
  present = {m: c.present[:, j].tolist() for j, m in enumerate(c.modality_names)}
  assert present == {"ehr": [True] * 7,
                     "cxr": [True] + [False] * 6,
                     "discharge_note": [True, False, False, True, False, False, False],
                     "radiology_note": [True, False, False, True, False, False, False]}
  np.testing.assert_array_equal(_vector(c, "cxr", fx.S1), [2, 3, 4, 5])  # PA d1 + AP d3
  enc = text_embed.get_encoder("hashed")
  t = fx.TEXTS
  np.testing.assert_array_equal(_vector(c, "discharge_note", fx.S1),
                                enc.encode([t["s1_discharge"]])[0])
  # S1: its hadm-linked report and the one without hadm_id 4 h before admittime (the one
  # 8 h before is outside the window).
  s1 = enc.encode([t["s1_radiology"], t["s1_radiology_ed"]]).astype(np.float64)
  np.testing.assert_allclose(_vector(c, "radiology_note", fx.S1), s1.mean(0), rtol=1e-6,
                             atol=1e-7)
  both = enc.encode([t["s7_radiology_1"], t["s7_radiology_2"]]).astype(np.float64)
  np.testing.assert_allclose(_vector(c, "radiology_note", fx.S7), both.mean(0), rtol=1e-6)
  assert c.input_dims[2] == c.input_dims[3] == 768
  assert not c.features[2][_row(c, fx.S2)].any()        # admission without notes: zeros


def test_note_stage_sums_per_subject_and_writes_small_row_groups(tmp_path, monkeypatch):
  """The note stage's scratch file holds row groups of NOTE_ROW_GROUP notes (the sink
  buffers one row group: polars' default would hold ~1.5 GB of discharge text), its
  batches are small, and the per-subject means equal a naive mean of the encodings."""
  import pyarrow.parquet as pq

  from crl_mmnar_jax.data.sources.mimic import stages
  texts = [f"note {i} about chest pain and fever, day {i % 3}" for i in range(11)]
  subject_N = np.array([5, 9, 5, 2, 9, 9, 5, 2, 2, 9, 5])
  rows = pl.LazyFrame({"subject_id": subject_N, "charttime": [dt.datetime(2150, 1, 1)] * 11,
                       "note_id": np.arange(11), "text": texts})
  groups, batches = [], []
  real_sink = stages.sink
  def sink(lf, out, path, row_group_size=None):
    real_sink(lf, out, path, row_group_size=row_group_size)
    groups.append(pq.ParquetFile(out).metadata.num_row_groups)
  monkeypatch.setattr(stages, "sink", sink)
  monkeypatch.setattr(stages, "NOTE_ROW_GROUP", 3)
  enc = text_embed.get_encoder("hashed", dim=16)
  class Counting:
    dim = 16
    def encode(self, batch):
      batches.append(len(batch))
      return enc.encode(batch)
  subjects = np.array([2, 5, 7, 9])
  df, report = stages.note_stage(rows, "notes.csv", "notes", subjects, Counting,
                                 str(tmp_path), batch_chars=120)
  assert groups == [4]                                       # ceil(11 / 3)
  assert sum(batches) == 11 and max(batches) < 11            # several batches
  assert report == {"notes_in_window": 11, "subjects_with_notes": 3}
  x = df.select(pl.exclude("subject_id", "present")).to_numpy()
  for r, s in enumerate(subjects):
    mine = [t for t, k in zip(texts, subject_N) if k == s]
    want = enc.encode(mine).astype(np.float64).mean(0) if mine else np.zeros(16)
    np.testing.assert_allclose(x[r], want, rtol=1e-5, atol=1e-6)
  assert df["present"].to_list() == [True, True, False, True]
  assert not os.listdir(tmp_path)                            # the scratch file is removed
  # Batches also end at `batch_notes` notes (short notes: the (notes, dim) embeddings
  # dominate); subjects 2, 5, 9 have 3, 4 and 4 notes, none split.
  batches.clear()
  again, _ = stages.note_stage(rows, "notes.csv", "notes", subjects, Counting,
                               str(tmp_path), batch_chars=10**9, batch_notes=6)
  assert batches == [3, 4, 4] and again.equals(df)


def test_no_information_after_discharge(tmp_path, raw):
  _, base, base_info = raw
  folder = fx.write_raw(str(tmp_path / "late"), fx.with_post_discharge_events(fx.tables()),
                        gz=False)
  late, info = _load(folder, version="2.2")
  assert info["modalities"]["labs"] == base_info["modalities"]["labs"]
  np.testing.assert_array_equal(late.labels, base.labels)
  np.testing.assert_array_equal(late.present, base.present)
  for a, b in zip(late.features, base.features):
    np.testing.assert_array_equal(a, b)       # bit-identical (NaN == NaN here)


def test_raw_and_meds_give_the_same_cohort(raw, meds):
  _, c_raw, i_raw = raw
  c_meds, i_meds = meds
  assert i_meds["source"] == "meds" and i_meds["version"] == "unknown"
  assert c_meds.patient_id.tolist() == c_raw.patient_id.tolist()
  assert i_meds["attrition"] == i_raw["attrition"]
  np.testing.assert_array_equal(c_meds.labels, c_raw.labels)
  assert c_meds.modality_names == ("ehr",)
  names_raw, names_meds = c_raw.feature_names[0], c_meds.feature_names[0]
  shared = [n for n in names_meds if n in names_raw]
  assert set(names_raw) - set(shared) == {n for n in names_raw
                                          if n.startswith(("insurance=", "race="))}
  x_raw = c_raw.features[0][:, [names_raw.index(n) for n in shared]]
  x_meds = c_meds.features[0][:, [names_meds.index(n) for n in shared]]
  np.testing.assert_array_equal(x_meds, x_raw)
  assert any("MEDS table holds no notes" in n for n in i_meds["notes"])


def test_meds_accepts_value_column_and_a_folder(tmp_path, meds):
  folder = tmp_path / "shards"
  folder.mkdir()
  events = fx.to_meds(value_column="value")
  events.head(40).write_parquet(folder / "0.parquet")
  events.slice(40).write_parquet(folder / "1.parquet")
  cohort, _ = mimic.load_mimic(meds=str(folder))
  np.testing.assert_array_equal(cohort.features[0], meds[0].features[0])


def _meds_root(folder, events: pl.DataFrame, split_of: dict[int, str]):
  """`events` written as a MEDS root: data/<split>/0.parquet, metadata/ with
  subject_splits.parquet and a codes.parquet that is not an event table."""
  for split in ("train", "tuning", "held_out"):
    ids = [s for s, v in split_of.items() if v == split]
    (folder / "data" / split).mkdir(parents=True)
    events.filter(pl.col("subject_id").is_in(ids)).write_parquet(
        folder / "data" / split / "0.parquet")
  (folder / "metadata").mkdir()
  pl.DataFrame({"subject_id": list(split_of), "split": list(split_of.values())}).write_parquet(
      folder / "metadata" / "subject_splits.parquet")
  pl.DataFrame({"code": ["GENDER//F"], "description": ["female"]}).write_parquet(
      folder / "metadata" / "codes.parquet")
  return str(folder)


def test_mimic_config_reads_a_meds_root_and_its_splits(tmp_path, meds):
  from crl_mmnar_jax import data as data_lib
  from experiments.configs import mimic as mimic_config
  events = fx.to_meds()
  subjects = sorted(events["subject_id"].unique().to_list())
  names = ("train", "tuning", "held_out")
  split_of = {s: names[k % 3] for k, s in enumerate(subjects)}
  config = mimic_config.get_config()
  config.data.meds = _meds_root(tmp_path / "root", events, split_of)
  loaded = data_lib.load(config)
  c, c_flat = loaded.cohort, meds[0]
  assert c.patient_id.tolist() == c_flat.patient_id.tolist()
  np.testing.assert_array_equal(c.features[0], c_flat.features[0])
  np.testing.assert_array_equal(c.labels, c_flat.labels)
  want = {"train": "train", "tuning": "val", "held_out": "test"}
  assert c.split.tolist() == [want[split_of[int(s)]] for s in c.patient_id]
  config.data.meds_splits = False
  assert data_lib.load(config).cohort.split is None
  config.data.meds_splits = True
  pl.read_parquet(tmp_path / "root" / "metadata" / "subject_splits.parquet").filter(
      pl.col("subject_id") != int(c.patient_id[0])).write_parquet(
      tmp_path / "root" / "metadata" / "subject_splits.parquet")
  with pytest.raises(DataError, match=r"subject_splits.parquet: 1 labelled row\(s\) belong "
                     r"to subjects missing from it"):
    data_lib.load(config)


# ----------------------------------------------------------------------------- bad input


def test_missing_table_and_column(tmp_path):
  d = fx.write_raw(str(tmp_path / "a"), skip=("hosp/labevents",))
  with pytest.raises(DataError, match=r"hosp/labevents\.csv\.gz: required MIMIC-IV table"):
    mimic.load_mimic(d)
  d = fx.write_raw(str(tmp_path / "b"), drop_column=("hosp/labevents", "valuenum"))
  with pytest.raises(DataError, match=r"labevents\.csv\.gz:1: .* lacks column\(s\) "
                                      r"\['valuenum'\]"):
    mimic.load_mimic(d)
  d = fx.write_raw(str(tmp_path / "c"), drop_column=("hosp/admissions", "dischtime"))
  with pytest.raises(DataError, match=r"admissions\.csv\.gz.*dischtime"):
    mimic.load_mimic(d)


def test_bad_value_names_the_file_and_column(tmp_path):
  t = fx.tables()
  t["hosp/admissions"][0]["admittime"] = "yesterday"         # S1's index admission
  d = fx.write_raw(str(tmp_path / "a"), t)
  with pytest.raises(DataError, match=r"admissions\.csv\.gz: cannot read .*admittime"):
    mimic.load_mimic(d, strict=True)
  cohort, info = mimic.load_mimic(d)        # counted, read as null: that admission invalid
  assert info["skipped"]["by_file"] == {os.path.join(d, "hosp", "admissions.csv.gz"): {
      "admittime: value does not parse as Datetime(time_unit='us', time_zone=None)": 1}}
  assert info["attrition"][2]["n_excluded"] == 2       # S1's 101 and S7's 701
  assert info["hadm_id"][0] == 102                    # S1's index is now its second


def test_versions(tmp_path):
  d = fx.write_raw(str(tmp_path / "3.1"))
  assert mimic.load_mimic(d)[1]["version"] == "3.1"
  with pytest.raises(DataError, match=r"version '2\.0'.*\['2\.2', '3\.1'\]"):
    mimic.load_mimic(d, version="2.0")
  d = fx.write_raw(str(tmp_path / "1.0"))
  with pytest.raises(DataError, match=r"1\.0: the folder name says MIMIC-IV version 1\.0"):
    mimic.load_mimic(d)
  assert mimic.load_mimic(d, version="2.2")[1]["version"] == "2.2"   # explicit wins
  d = fx.write_raw(str(tmp_path / "mimic"))
  _, info = mimic.load_mimic(d)
  assert info["version"] == "unknown" and "version unknown" in info["notes"][0]


def test_plain_csv_equals_gzip(tmp_path, raw):
  _, cohort, info = raw
  d = fx.write_raw(str(tmp_path / "2.2"), gz=False)
  c2, i2 = _load(d)
  assert i2["fingerprint"] == info["fingerprint"]
  for a, b in zip(cohort.features, c2.features):
    np.testing.assert_array_equal(a, b)


def test_empty_and_missing_note_tables(tmp_path):
  t = fx.tables()
  t["note/discharge"] = []                             # header only: nobody has notes
  d = fx.write_raw(str(tmp_path / "a"), t, skip=("note/radiology",))
  cohort, info = mimic.load_mimic(d)
  assert cohort.modality_names == ("ehr",)             # and no embeddings: no cxr
  assert any("discharge_note is observed for nobody" in n for n in info["notes"])
  assert any("radiology.csv.gz not found" in n for n in info["notes"])
  assert any("no image embeddings" in n for n in info["notes"])
  with gzip.open(os.path.join(d, "note", "radiology.csv.gz"), "wt"):
    pass                                               # zero bytes: not even a header
  with pytest.raises(DataError, match=r"radiology\.csv\.gz:1: empty file"):
    mimic.load_mimic(d)


def test_bad_arguments_and_meds_input(tmp_path):
  with pytest.raises(DataError, match="exactly one of"):
    mimic.load_mimic()
  with pytest.raises(DataError, match="exactly one of"):
    mimic.load_mimic(str(tmp_path), meds="x.parquet")
  with pytest.raises(DataError, match="los"):
    mimic.load_mimic(meds="x.parquet", tasks=("los",))
  with pytest.raises(DataError, match="x.parquet: MEDS events file not found"):
    mimic.load_mimic(meds="x.parquet")
  path = str(tmp_path / "ev.parquet")
  fx.to_meds().drop("numeric_value").write_parquet(path)
  with pytest.raises(DataError, match="neither a 'numeric_value' nor a 'value'"):
    mimic.load_mimic(meds=path)
  fx.to_meds().drop("code").write_parquet(path)
  with pytest.raises(DataError, match=r"lacks column\(s\) \['code'\]"):
    mimic.load_mimic(meds=path)
  fx.to_meds().filter(~pl.col("code").str.starts_with("HOSPITAL_DISCHARGE//HOME")
                      ).write_parquet(path)
  with pytest.raises(DataError, match=r"ev\.parquet: 7 subject\(s\) have admission and "
                                      r"discharge events that cannot be paired") as e:
    mimic.load_mimic(meds=path, strict=True)
  ids = fx.to_meds()["subject_id"].unique().to_list()
  assert not any(str(i) in str(e.value).split(": ", 1)[1] for i in ids)   # no subject id
  cohort, info = mimic.load_mimic(meds=path)           # those subjects have no admission
  assert info["skipped"]["by_problem"] == {
      "subject's admission and discharge events cannot be paired (its admissions "
      "dropped)": 7}
  assert cohort.patient_id.tolist() == [fx.S3]     # the only one never sent HOME
  with pytest.raises(DataError, match="text encoder 'bert'"):
    mimic.load_mimic(meds=path, text_encoder="bert")
  d = fx.write_raw(str(tmp_path / "raw"))
  with pytest.raises(DataError, match="metadata not found"):
    mimic.load_mimic(d, cxr_embeddings=os.path.join(d, "cxr_embeddings.parquet"),
                     cxr_metadata=str(tmp_path / "nope.csv.gz"))


def test_resumable_cache(tmp_path):
  d = fx.write_raw(str(tmp_path / "2.2"))
  cache = str(tmp_path / "cache")
  c1, i1 = _load(d, cache_dir=cache)
  assert i1["stages_run"][:6] == ["cohort", "labs", "vitals", "medications", "diagnoses",
                                  "procedures"] and len(i1["stages_run"]) == 9
  for table in ("hosp/labevents", "icu/chartevents", "note/radiology"):
    os.remove(os.path.join(d, table + ".csv.gz"))      # the big tables are gone
  c2, i2 = _load(d, cache_dir=cache)
  assert i2["stages_run"] == []
  for a, b in zip(c1.features, c2.features):
    np.testing.assert_array_equal(a, b)
  os.remove(os.path.join(i1["cache_folder"], "diagnoses.parquet"))
  assert _load(d, cache_dir=cache)[1]["stages_run"] == ["diagnoses"]


def test_series_batches_give_the_same_features(tmp_path, monkeypatch, raw):
  _, cohort, _ = raw
  monkeypatch.setattr(mimic_source, "BATCH_VALUES", 1)
  monkeypatch.setattr(mimic_source, "NOTE_BATCH_CHARS", 1)
  c2, _ = _load(fx.write_raw(str(tmp_path / "2.2")))
  for a, b in zip(cohort.features, c2.features):
    np.testing.assert_array_equal(a, b)


def test_config_through_data_load(tmp_path):
  from crl_mmnar_jax import data as data_lib
  from experiments.configs import mimic as mimic_config
  config = mimic_config.get_config()
  config.data.demo_meds = str(tmp_path / "absent.parquet")
  with pytest.raises(DataError, match=r"needs --config.data.dir=MIMIC_ROOT .*absent\.parquet"):
    data_lib.load(config)
  config.data.dir = fx.write_raw(str(tmp_path / "2.2"))
  config.data.tasks = "readmission_30d,icu_90d,mortality_180d"
  config.data.cache_dir = str(tmp_path / "cache")
  loaded = data_lib.load(config)
  assert loaded.cohort.patient_id.tolist() == fx.COHORT
  assert not any(isinstance(v, np.ndarray) for v in loaded.info.values())
  assert loaded.info["attrition"][-1]["n_remaining"] == 7


# ----------------------------------------------------------------------------- text


def test_hashed_encoder():
  enc = text_embed.get_encoder("hashed")
  assert (enc.name, enc.dim) == ("hashed", 768)
  texts = ["Chest pain with elevated troponin; cardiac catheterization performed.",
           "Elevated troponin and chest pain, underwent cardiac catheterization.",
           "Fall with hip fracture, orthopedic repair and physical therapy.", "", "the of and"]
  x = enc.encode(texts)
  assert x.shape == (5, 768) and x.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(x[:3], axis=1), 1.0, rtol=1e-5)
  assert not x[3:].any()                               # empty / stop words only: zeros
  assert x[0] @ x[1] > 0.5 > abs(x[0] @ x[2])          # similar closer than unrelated
  np.testing.assert_array_equal(enc.encode(texts), x)  # deterministic across calls
  np.testing.assert_array_equal(text_embed.get_encoder("hashed").encode(texts[:1]), x[:1])
  assert text_embed.get_encoder("hashed", dim=32).encode(texts[:1]).shape == (1, 32)


def test_hashed_encoder_is_the_same_in_another_process():
  code = ("import hashlib; from crl_mmnar_jax.data import text_embed as t; "
          "print(hashlib.sha256(t.get_encoder('hashed').encode(['Chest pain, troponin.'])"
          ".tobytes()).hexdigest())")
  here = hashlib.sha256(text_embed.get_encoder("hashed").encode(["Chest pain, troponin."])
                        .tobytes()).hexdigest()
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONHASHSEED": "12345"}, check=True)
  assert out.stdout.strip() == here


def test_bert_encoder_errors_clearly(tmp_path):
  with pytest.raises(DataError, match="bioclinicalbert"):
    text_embed.get_encoder("bioclinicalbert", model_path=str(tmp_path / "none"))
  with pytest.raises(DataError, match="must be one of"):
    text_embed.get_encoder("word2vec")


# ----------------------------------------------------------------------------- demo


def _demo_by_hand(path: str) -> tuple[list[int], dict[int, list[int]]]:
  """Cohort and labels from the raw events with plain Python loops, written from the
  rules in the package docstring without the module's code: admissions are paired
  with the EARLIEST unused discharge at or after them (the module pairs the k-th
  admission with the k-th discharge), episodes are chained by a loop, ICU stays are
  attached by a loop, elective readmissions are skipped by their code."""
  gap, planned = dt.timedelta(hours=6), ("ELECTIVE", "SURGICAL SAME DAY ADMISSION")
  subj = collections.defaultdict(lambda: {"adm": [], "dis": [], "icu": [], "birth": [],
                                          "death": []})
  for sid, time, code in pl.read_parquet(path, columns=["subject_id", "time", "code"]).rows():
    s = subj[sid]
    if code.startswith("HOSPITAL_ADMISSION//"):
      s["adm"].append((time, code.split("//")[1]))
    elif code.startswith("HOSPITAL_DISCHARGE//"):
      s["dis"].append((time, code.split("//")[1]))
    elif code.startswith("ICU_ADMISSION//") and time is not None:
      s["icu"].append(time)
    elif code == "MEDS_BIRTH":
      s["birth"].append(time.year)
    elif code == "MEDS_DEATH":
      s["death"].append(time)
  cohort, labels = [], {}
  for sid, s in sorted(subj.items()):
    used, stays = set(), []           # stays: (admit, disch, admission type, discharge loc)
    for admit, kind in sorted(s["adm"]):
      for k, (disch, loc) in enumerate(sorted(s["dis"])):
        if k not in used and disch >= admit:
          used.add(k)
          stays.append((admit, disch, kind, loc))
          break
    if not stays or not s["birth"]:
      continue
    stays.sort()
    end, members = stays[0][1], [stays[0]]
    for st in stays[1:]:
      if st[0] - end >= gap:
        break
      members.append(st)
      end = max(end, st[1])
    later = [st for st in stays if st not in members]
    if stays[0][0].year - min(s["birth"]) < 18:
      continue
    death = min(s["death"]) if s["death"] else None
    died = any(st[3] == "DIED" for st in members)
    if death is not None:
      midnight = death == dt.datetime.combine(death.date(), dt.time())
      died |= death.date() < end.date() if midnight else death <= end
    if died:
      continue
    readmit = any(end < a <= end + dt.timedelta(days=30) and kind not in planned
                  for a, _, kind, _ in later)
    icu = False
    for t in s["icu"]:
      inside = [st for st in stays if st[0] <= t <= st[1]]
      after = [st for st in stays if t < st[0] <= t + dt.timedelta(hours=24)]
      owner = max(inside) if inside else (min(after) if after else None)
      icu |= owner in later and end < t <= end + dt.timedelta(days=90)
    dead = death is not None and 0 <= (death.date() - end.date()).days <= 180
    cohort.append(sid)
    labels[sid] = [int(readmit), int(icu), int(dead)]
  return cohort, labels


@pytest.mark.skipif(not os.path.isfile(DEMO), reason=f"MIMIC-IV demo not found at {DEMO}")
def test_demo_counts_against_an_independent_loop():
  """95 subjects; readmission_30d 13 (15 before episodes and planned admissions: subject
  10002930's admission 1 minute after a 5.4 h observation stay is the same episode, and
  10027602's SURGICAL SAME DAY ADMISSION 21 days after discharge is planned), icu_90d
  14, mortality_180d 9."""
  cohort, info = mimic.load_mimic(meds=DEMO)
  ids, labels = _demo_by_hand(DEMO)
  assert cohort.patient_id.tolist() == ids
  expected = np.array([labels[s] for s in ids], np.float32)
  np.testing.assert_array_equal(cohort.labels, expected)
  assert info["attrition"][0]["n_remaining"] == 100
  assert info["n_patients"] == len(ids) == 95
  assert [info["label_counts"][t]["n_positive"] for t in mimic.TASKS] == \
      expected.sum(0).astype(int).tolist() == [13, 14, 9]
  row = {s: k for k, s in enumerate(ids)}
  assert cohort.labels[row[10002930]].tolist() == [0, 0, 0]
  assert cohort.labels[row[10027602]].tolist() == [0, 1, 0]
  merged = [a for a in info["attrition"] if a["step"].startswith("index episode")][0]
  assert (merged["admissions_merged"], merged["subjects_with_merged"]) == (1, 1)
  assert info["skipped"]["n_rows"] == 0
  assert cohort.modality_names == ("ehr",)
  assert cohort.features[0].shape[1] == len(cohort.feature_names[0])


DEMO_ROOT = os.path.join(REPO, "..", "shared", "data", "meds-mimic-iv-demo")


@pytest.mark.skipif(not os.path.isdir(os.path.join(DEMO_ROOT, "data")),
                    reason=f"MIMIC-IV demo MEDS root not found at {DEMO_ROOT}")
def test_demo_meds_root_equals_the_event_table_and_its_splits_are_refused(tmp_path):
  """The demo as a MEDS root gives the flat event table's cohort; its own held_out
  split (8 of the 95 cohort subjects) holds no positive of any task, which the run says
  in one line before writing anything."""
  from crl_mmnar_jax import data as data_lib
  from crl_mmnar_jax.experiment import train_and_evaluate
  from experiments.configs import mimic as mimic_config
  config = mimic_config.get_config("tiny")
  config.data.meds = DEMO_ROOT
  config.data.meds_splits = False
  flat, _ = mimic.load_mimic(meds=DEMO)
  c = data_lib.load(config).cohort
  assert c.patient_id.tolist() == flat.patient_id.tolist()
  np.testing.assert_array_equal(c.labels, flat.labels)
  np.testing.assert_array_equal(c.features[0], flat.features[0])
  config.data.meds_splits = True
  split = data_lib.load(config).cohort.split
  given = dict(pl.read_parquet(os.path.join(DEMO_ROOT, "metadata", "subject_splits.parquet"))
               .iter_rows())
  assert split.tolist() == [{"train": "train", "tuning": "val", "held_out": "test"}[
      given[int(s)]] for s in c.patient_id]
  assert np.nansum(c.labels[split == "test"]) == 0       # by hand: no positive held out
  workdir = tmp_path / "run"
  with pytest.raises(DataError, match=r"task 'readmission_30d' has only one class in the "
                     r"test split \(n_pos=0 of 8\)"):
    train_and_evaluate(config, str(workdir))
  assert not workdir.exists() or not any(workdir.iterdir())


def test_anchor_year_group_filter(tmp_path):
  """v3.x adds 2020-2022 admissions, which cannot have notes or X-rays: excluded by
  default (counted), kept with anchor_years=""; MEDS has no group (a note says so)."""
  t = fx.tables()
  s11 = 10000011
  t["hosp/patients"].append({**t["hosp/patients"][0], "subject_id": s11,
                             "anchor_year_group": "2020 - 2022"})
  t["hosp/admissions"].append({**t["hosp/admissions"][0], "subject_id": s11,
                               "hadm_id": 1101})
  d = fx.write_raw(str(tmp_path / "3.1"), t)
  cohort, info = mimic.load_mimic(d)
  step = info["attrition"][1]
  assert step["step"].startswith("anchor_year_group within 2008-2019")
  assert (step["n_remaining"], step["n_excluded"]) == (10, 1)
  assert cohort.patient_id.tolist() == fx.COHORT
  cohort, info = mimic.load_mimic(d, anchor_years="")
  assert cohort.patient_id.tolist() == fx.COHORT + [s11]
  assert not info["attrition"][1]["step"].startswith("anchor_year_group")
  with pytest.raises(DataError, match="anchor_years '2019'"):
    mimic.load_mimic(d, anchor_years="2019")
  path = str(tmp_path / "ev.parquet")
  fx.to_meds(t).write_parquet(path)
  cohort, info = mimic.load_mimic(meds=path)
  assert s11 in cohort.patient_id.tolist()
  assert any("no anchor_year_group" in n for n in info["notes"])


def test_repeated_admission_id_is_skipped_and_counted(tmp_path):
  t = fx.tables()
  t["hosp/admissions"] += [a for a in t["hosp/admissions"] if a["hadm_id"] == 801]  # twice
  d = fx.write_raw(str(tmp_path / "2.2"), t)
  with pytest.raises(DataError, match=r"admissions\.csv\.gz: column hadm_id repeats"):
    mimic.load_mimic(d, strict=True)
  cohort, info = mimic.load_mimic(d)
  assert info["skipped"]["by_problem"] == {
      "hadm_id repeated (every row of that id skipped)": 2}
  assert fx.S8 not in cohort.patient_id.tolist()                # no admission left
  assert info["attrition"][3]["n_excluded"] == 2                # S6 and S8


# ----------------------------------------------------------------------------- TFRecord


def _example_class():
  """tf.train.Example built from its published .proto definition with the protobuf
  runtime (no TensorFlow): the fixture is serialised by protobuf itself."""
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
  F = descriptor_pb2.FieldDescriptorProto
  f = descriptor_pb2.FileDescriptorProto(name="crl_test_example.proto",
                                         package="crltest", syntax="proto3")

  def msg(name, fields, options=None):
    m = f.message_type.add(name=name)
    for number, (fname, ftype, label, type_name, packed) in enumerate(fields, start=1):
      fd = m.field.add(name=fname, number=number, type=ftype, label=label)
      if type_name:
        fd.type_name = type_name
      if packed:
        fd.options.packed = True
    return m
  rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
  msg("BytesList", [("value", F.TYPE_BYTES, rep, None, False)])
  msg("FloatList", [("value", F.TYPE_FLOAT, rep, None, True)])
  msg("Int64List", [("value", F.TYPE_INT64, rep, None, True)])
  feature = msg("Feature", [("bytes_list", F.TYPE_MESSAGE, opt, ".crltest.BytesList", False),
                            ("float_list", F.TYPE_MESSAGE, opt, ".crltest.FloatList", False),
                            ("int64_list", F.TYPE_MESSAGE, opt, ".crltest.Int64List", False)])
  feature.oneof_decl.add(name="kind")
  for fd in feature.field:
    fd.oneof_index = 0
  features = msg("Features", [("feature", F.TYPE_MESSAGE, rep,
                               ".crltest.Features.FeatureEntry", False)])
  entry = features.nested_type.add(name="FeatureEntry")
  entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
  entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=opt,
                  type_name=".crltest.Feature")
  entry.options.map_entry = True
  msg("Example", [("features", F.TYPE_MESSAGE, opt, ".crltest.Features", False)])
  pool = descriptor_pool.DescriptorPool()
  pool.Add(f)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName("crltest.Example"))


def _tfrecord(records: list[bytes]) -> bytes:
  """The TFRecord framing, written from its specification."""
  import struct

  from crl_mmnar_jax.data.sources.mimic.tfrecord import masked_crc
  out = b""
  for data in records:
    length = struct.pack("<Q", len(data))
    out += length + struct.pack("<I", masked_crc(length)) + data
    out += struct.pack("<I", masked_crc(data))
  return out


def test_tfrecord_reader_on_protobuf_written_examples(tmp_path):
  from crl_mmnar_jax.data.sources.mimic import tfrecord
  assert tfrecord.crc32c(b"123456789") == 0xE3069283          # the CRC-32C check value
  example = _example_class()
  folder = tmp_path / "emb" / "files" / "p10" / "p10000001" / "s50001"
  folder.mkdir(parents=True)
  for dicom, vec in fx.EMBEDDINGS.items():
    ex = example()
    ex.features.feature["embedding"].float_list.value.extend(vec)
    ex.features.feature["image/id"].bytes_list.value.append(f"p10/{dicom}.dcm".encode())
    ex.features.feature["image/size"].int64_list.value.extend([3056, -1])
    (folder / f"{dicom}.tfrecord").write_bytes(_tfrecord([ex.SerializeToString()]))
  parsed = tfrecord.parse_example(example.FromString(
      (folder / "d1.tfrecord").read_bytes()[12:-4]).SerializeToString())
  assert parsed["image/size"] == [3056, -1] and parsed["image/id"] == [b"p10/d1.dcm"]
  df = tfrecord.read_embeddings(str(tmp_path / "emb"), verify=True)
  assert df["dicom_id"].to_list() == sorted(fx.EMBEDDINGS)
  np.testing.assert_array_equal(df.drop("dicom_id").to_numpy(),
                                np.array([fx.EMBEDDINGS[d] for d in sorted(fx.EMBEDDINGS)]))
  assert tfrecord.read_embeddings(str(tmp_path / "emb"), ["d3"])["dicom_id"].to_list() == ["d3"]
  # Several records in one file: named by their image/id.
  two = [example.FromString((folder / f"{d}.tfrecord").read_bytes()[12:-4]) for d in ("d1", "d2")]
  (tmp_path / "all.tfrecord").write_bytes(_tfrecord([e.SerializeToString() for e in two]))
  assert tfrecord.read_embeddings(str(tmp_path / "all.tfrecord"))["dicom_id"].to_list() == [
      "d1", "d2"]
  bad = bytearray((folder / "d1.tfrecord").read_bytes())
  bad[0] ^= 1                                                # a corrupt length
  (tmp_path / "bad.tfrecord").write_bytes(bytes(bad))
  with pytest.raises(DataError, match="corrupt length"):
    tfrecord.read_embeddings(str(tmp_path / "bad.tfrecord"))
  # The loader reads the folder as it reads the parquet file.
  d = fx.write_raw(str(tmp_path / "2.2"))
  cohort, _ = mimic.load_mimic(d, cxr_embeddings=str(tmp_path / "emb"))
  np.testing.assert_array_equal(_vector(cohort, "cxr", fx.S1), [2, 3, 4, 5])


# ----------------------------------------------------------------------------- BERT


def test_bert_windows_overlap_and_cover_every_token():
  assert text_embed.window_starts(0) == []
  assert text_embed.window_starts(510) == [0]
  assert text_embed.window_starts(511) == [0, 1]
  assert text_embed.window_starts(1200) == [0, 255, 510, 690]
  for n in (511, 765, 1020, 5000):
    starts = text_embed.window_starts(n)
    covered = np.zeros(n, bool)
    for s in starts:
      covered[s:s + 510] = True
    assert covered.all() and starts[-1] + 510 == n
    assert all(b - a <= 255 for a, b in zip(starts, starts[1:]))
  with pytest.raises(DataError, match="stride"):
    text_embed.window_starts(600, stride=0)


TEXT_EXTRA = ("the note encoder's tests need the `text` extra (transformers, torch): install "
              "torch (CPU: pip install torch==2.13.0), then pip install -e '.[text]'")
# The tiny BERT's vocabulary: "notes" is two word pieces ("note", "##s"), "zzz" one [UNK].
WORDS = [f"w{i}" for i in range(60)] + ["note", "##s"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
  """A randomly initialised 2-layer BERT (hidden 32, 2 heads, 512 positions as in the real
  model) in a local folder laid out as emilyalsentzer/Bio_ClinicalBERT's: config.json,
  a pre-training checkpoint pytorch_model.bin (weights under "bert.", plus the heads)
  and vocab.txt (here hand-written), no tokenizer config; nothing is downloaded
  (HF_HUB_OFFLINE=1). Yields (transformers, torch, folder, the BertModel in memory)."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers", reason=TEXT_EXTRA)
    torch = pytest.importorskip("torch", reason=TEXT_EXTRA)
    folder = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512))
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    yield transformers, torch, str(folder), model.bert.eval()


def test_bert_encoder_on_a_tiny_random_model(tiny_bert):
  """Unit-norm rows, zero for empty text, the same row alone or in a batch, the device."""
  _, _, path, _ = tiny_bert
  enc = text_embed.get_encoder("bioclinicalbert", dim=32, model_path=path, device="cpu")
  assert enc.device == "cpu" and enc.dim == 32
  long_text = " ".join(WORDS[i % 60] for i in range(1300))      # 1300 word pieces
  x = enc.encode(["w1 w2 w3", long_text, ""])
  assert x.shape == (3, 32) and x.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(x[:2], axis=1), 1.0, rtol=1e-5)
  assert not x[2].any()
  np.testing.assert_allclose(enc.encode([long_text])[0], x[1], rtol=1e-5, atol=1e-6)
  with pytest.raises(DataError, match="hidden size is 32"):
    text_embed.get_encoder("bioclinicalbert", model_path=path, device="cpu")   # dim=768
  with pytest.raises(DataError, match="device"):
    text_embed.get_encoder("bioclinicalbert", dim=32, model_path=path, device="tpu")


def test_bert_encoder_against_a_naive_window_loop(tiny_bert, monkeypatch):
  """The encoder's windows and pooling against a loop written from the module docstring:
  word pieces (no special tokens) cut into windows of 510 starting every 255, the last
  one ending at the text's end; [CLS] + window + [SEP] through the model ALONE (no
  batch, no padding); mean of the last hidden state over the window's tokens; the
  document is the token-count-weighted mean of its windows, then L2-normalised."""
  transformers, torch, path, model = tiny_bert
  rng = np.random.default_rng(0)
  # Texts as word pieces, so their ids are known without the tokenizer.
  pieces = {
      "short": ["w1", "w2", "w3"],
      "510": [WORDS[k] for k in rng.integers(0, 60, 510)],               # one full window
      "511": [WORDS[k] for k in rng.integers(0, 60, 511)],               # two windows
      "1300": [WORDS[k] for k in rng.integers(0, 62, 1300)],
  }
  pieces["1300"][:4] = ["note", "##s", "[UNK]", "w0"]    # "notes zzz w0 ...": [UNK] a word

  def as_text(p):
    words = []
    for w in p:
      if w.startswith("##"):
        words[-1] += w[2:]
      else:
        words.append("zzz" if w == "[UNK]" else w)
    return " ".join(words)

  names = ["short", "510", "", "1300", "511"]
  texts = [as_text(pieces[n]) if n else "" for n in names]
  assert texts[3].startswith("notes zzz w0 ") and len(texts[3].split()) < 1300
  starts = {"short": [0], "510": [0], "": [], "511": [0, 1],
            "1300": [0, 255, 510, 765, 790]}             # 790 = 1300 - 510
  cls, sep = VOCAB.index("[CLS]"), VOCAB.index("[SEP]")
  windows = {n: [[cls] + [VOCAB.index(w) for w in pieces[n][s:s + 510]] + [sep]
                 for s in starts[n]] for n in names}

  expected = np.zeros((len(names), 32))
  for i, n in enumerate(names):
    total, weight = np.zeros(32), 0
    for w in windows[n]:
      assert len(w) <= 512
      with torch.no_grad():
        h = model(input_ids=torch.tensor([w])).last_hidden_state[0].double().numpy()
      # Token-count weights (every window of a longer text is a full 512, so here they
      # equal the plain mean of the window means).
      total += len(w) * h.mean(axis=0)
      weight += len(w)
    expected[i] = total / max(weight, 1)

  seen = []                                              # the windows the encoder ran
  forward = transformers.BertModel.forward

  def recording(self, input_ids=None, attention_mask=None, **kw):
    ids = input_ids.tolist()
    mask = [[1] * len(r) for r in ids] if attention_mask is None else attention_mask.tolist()
    seen.append([[t for t, m in zip(r, mr) if m] for r, mr in zip(ids, mask)])
    assert all(set(mr) <= {0, 1} and mr == sorted(mr, reverse=True) for mr in mask)
    return forward(self, input_ids=input_ids, attention_mask=attention_mask, **kw)

  monkeypatch.setattr(transformers.BertModel, "forward", recording)
  for batch_size in (1, 3, 16):
    raw = text_embed.get_encoder("bioclinicalbert", dim=32, model_path=path, device="cpu",
                                 batch_size=batch_size, normalize=False)
    seen.clear()
    x = raw.encode(texts)
    assert x.shape == (5, 32) and x.dtype == np.float32
    assert all(len(b) <= batch_size for b in seen)
    assert [w for b in seen for w in b] == [w for n in names for w in windows[n]]
    np.testing.assert_allclose(x, expected, rtol=2e-5, atol=2e-6)
  unit = text_embed.get_encoder("bioclinicalbert", dim=32, model_path=path, device="cpu")
  norm = np.linalg.norm(expected, axis=1, keepdims=True)
  np.testing.assert_allclose(unit.encode(texts), expected / np.where(norm > 0, norm, 1),
                             rtol=2e-5, atol=2e-6)
  assert not unit.encode([""]).any()
