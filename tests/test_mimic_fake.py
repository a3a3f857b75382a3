"""The generated MIMIC-IV directory (`crl_mmnar_jax.testing.mimic_fake`): official
columns, consistent ids, linear sizes, determinism; its command line
(`experiments.mimic_fake`); and `load_mimic` on it when available."""

from __future__ import annotations

import gzip
import importlib.util
import os
import re
import subprocess
import sys

import polars as pl
import pytest

from crl_mmnar_jax.testing import mimic_fake
from experiments import mimic_fake as mimic_fake_cli

# Published column order (MIMIC-IV v2.2 hosp/icu, MIMIC-IV-Note v2.2, MIMIC-CXR 2.0.0),
# written out here independently of the generator's own table.
OFFICIAL = {
    "hosp/patients": "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod",
    "hosp/admissions": "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,"
                       "admit_provider_id,admission_location,discharge_location,insurance,"
                       "language,marital_status,race,edregtime,edouttime,"
                       "hospital_expire_flag",
    "hosp/labevents": "labevent_id,subject_id,hadm_id,specimen_id,itemid,order_provider_id,"
                      "charttime,storetime,value,valuenum,valueuom,ref_range_lower,"
                      "ref_range_upper,flag,priority,comments",
    "hosp/prescriptions": "subject_id,hadm_id,pharmacy_id,poe_id,poe_seq,order_provider_id,"
                          "starttime,stoptime,drug_type,drug,formulary_drug_cd,gsn,ndc,"
                          "prod_strength,form_rx,dose_val_rx,dose_unit_rx,form_val_disp,"
                          "form_unit_disp,doses_per_24_hrs,route",
    "hosp/diagnoses_icd": "subject_id,hadm_id,seq_num,icd_code,icd_version",
    "hosp/procedures_icd": "subject_id,hadm_id,seq_num,chartdate,icd_code,icd_version",
    "icu/icustays": "subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,"
                    "outtime,los",
    "icu/chartevents": "subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,"
                       "value,valuenum,valueuom,warning",
    "note/discharge": "note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text",
    "note/radiology": "note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text",
    "cxr/mimic-cxr-2.0.0-metadata": "dicom_id,subject_id,study_id,"
                                    "PerformedProcedureStepDescription,ViewPosition,Rows,"
                                    "Columns,StudyDate,StudyTime,"
                                    "ProcedureCodeSequence_CodeMeaning,"
                                    "ViewCodeSequence_CodeMeaning,"
                                    "PatientOrientationCodeSequence_CodeMeaning",
}
TINY = dict(scale=0.001, cxr_dim=8, chart_ratio=0.25)          # 300 patients
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _read(directory: str, name: str, compress: bool = True) -> pl.DataFrame:
  path = os.path.join(directory, name + (".csv.gz" if compress else ".csv"))
  return pl.read_csv(path, infer_schema=False)      # every column as text, as written


def _text(path: str) -> bytes:
  with (gzip.open(path) if path.endswith(".gz") else open(path, "rb")) as f:
    return f.read()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("mimic"))
  return directory, mimic_fake.write_fake_mimic(directory, seed=3, **TINY)


def test_official_columns_and_formats(tiny):
  directory, info = tiny
  for name, header in OFFICIAL.items():
    path = os.path.join(directory, name + ".csv.gz")
    with gzip.open(path, "rt") as f:
      assert f.readline().rstrip("\n") == header, name
  adm = _read(directory, "hosp/admissions")
  assert adm["admittime"].str.contains(DATETIME.pattern).all()
  assert adm["deathtime"].drop_nulls().str.contains(DATETIME.pattern).all()
  assert _read(directory, "hosp/patients")["dod"].drop_nulls().str.contains(
      DATE.pattern).all()
  assert _read(directory, "hosp/procedures_icd")["chartdate"].str.contains(
      DATE.pattern).all()
  lab = _read(directory, "hosp/labevents")
  assert lab["charttime"].str.contains(DATETIME.pattern).all()
  assert {50912, 50971, 51222, 51301} <= set(lab["itemid"].cast(pl.Int64).to_list())
  chart = _read(directory, "icu/chartevents")
  assert {220045, 220179, 220180, 220210, 223761, 220277} <= set(
      chart["itemid"].cast(pl.Int64).to_list())
  cxr = _read(directory, "cxr/mimic-cxr-2.0.0-metadata")
  assert cxr["StudyDate"].str.contains(r"^\d{8}$").all()
  assert cxr["StudyTime"].str.contains(r"^\d{1,6}(\.\d+)?$").all()
  assert cxr["dicom_id"].str.contains(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$").all()
  ds = _read(directory, "note/discharge")
  assert (ds["note_id"] == ds["subject_id"] + "-DS-" + ds["note_seq"]).all()
  assert (ds["note_type"] == "DS").all()
  emb = pl.read_parquet(info["cxr_embeddings"])
  assert emb.columns[0] == "dicom_id" and emb.width == 1 + TINY["cxr_dim"]
  assert emb["dicom_id"].to_list() == cxr["dicom_id"].to_list()
  for table, rows in info["rows"].items():
    assert rows > 0, table


def test_ids_are_consistent(tiny):
  directory, _ = tiny
  ints = lambda df, *cols: df.with_columns(pl.col(c).cast(pl.Int64) for c in cols)
  patients = ints(_read(directory, "hosp/patients"), "subject_id")
  adm = ints(_read(directory, "hosp/admissions"), "subject_id", "hadm_id").with_columns(
      pl.col("admittime", "dischtime").str.to_datetime())
  assert patients["subject_id"].is_unique().all() and adm["hadm_id"].is_unique().all()
  assert adm["subject_id"].is_in(patients["subject_id"].implode()).all()
  assert (adm["subject_id"] // 10_000_000 == 1).all()
  assert (adm["hadm_id"] // 10_000_000 == 2).all()
  assert (adm["dischtime"] > adm["admittime"]).all()
  pairs = adm.select("subject_id", "hadm_id", "admittime", "dischtime")
  for name in ("hosp/labevents", "hosp/prescriptions", "hosp/diagnoses_icd",
               "hosp/procedures_icd", "icu/icustays", "icu/chartevents",
               "note/discharge", "note/radiology"):
    df = ints(_read(directory, name), "subject_id", "hadm_id").filter(
        pl.col("hadm_id").is_not_null())
    joined = df.join(pairs, on="hadm_id", how="left", suffix="_adm")
    assert joined["subject_id_adm"].null_count() == 0, name       # hadm_id exists ...
    assert (joined["subject_id"] == joined["subject_id_adm"]).all(), name  # ... same subject
  lab = ints(_read(directory, "hosp/labevents"), "hadm_id", "labevent_id").with_columns(
      pl.col("charttime").str.to_datetime())
  assert lab["labevent_id"].to_list() == list(range(1, len(lab) + 1))
  in_adm = lab.filter(pl.col("hadm_id").is_not_null()).join(pairs, on="hadm_id")
  inside = ((in_adm["charttime"] >= in_adm["admittime"]) &
            (in_adm["charttime"] <= in_adm["dischtime"])).mean()
  assert 0.8 < inside < 0.97                   # mostly inside, ED labs before admittime
  assert 0.4 < lab["hadm_id"].null_count() / len(lab) < 0.6
  stays = ints(_read(directory, "icu/icustays"), "hadm_id", "stay_id").with_columns(
      pl.col("intime", "outtime").str.to_datetime()).join(pairs, on="hadm_id")
  assert stays["stay_id"].is_unique().all() and (stays["stay_id"] // 10_000_000 == 3).all()
  assert ((stays["intime"] >= stays["admittime"]) &
          (stays["outtime"] <= stays["dischtime"]) &
          (stays["outtime"] > stays["intime"])).all()
  chart = ints(_read(directory, "icu/chartevents"), "stay_id", "hadm_id")
  assert chart.join(stays.select("stay_id", "hadm_id"), on="stay_id", how="left",
                    suffix="_s").select((pl.col("hadm_id") == pl.col("hadm_id_s")).all()
                                        ).item()
  dead = ints(_read(directory, "hosp/admissions"), "hospital_expire_flag")
  assert ((dead["hospital_expire_flag"] == 1) == dead["deathtime"].is_not_null()).all()


def test_sizes_scale_linearly(tmp_path):
  infos = [mimic_fake.write_fake_mimic(str(tmp_path / f"s{k}"), scale=k * 0.001, seed=1,
                                       with_notes=False, with_cxr=False, chart_ratio=0.25)
           for k in (1, 3)]
  small, large = (info["rows"] for info in infos)
  assert infos[0]["patients"] == 300 and infos[1]["patients"] == 899
  for table in ("admissions", "labevents", "prescriptions", "diagnoses_icd", "icustays"):
    assert 2.4 < large[table] / small[table] < 3.6, (table, small[table], large[table])
  assert 1.8 < large["chartevents"] / small["chartevents"] < 4.5     # few ICU stays
  # per patient, close to the real database's ratios
  full = mimic_fake.FULL_SCALE
  for table in ("admissions", "labevents", "prescriptions", "diagnoses_icd"):
    expected = full[table] / full["patients"] * infos[1]["patients"]
    assert 0.7 < large[table] / expected < 1.3, (table, large[table], expected)


def test_deterministic_and_uncompressed(tmp_path, tiny):
  directory, info = tiny
  again = mimic_fake.write_fake_mimic(str(tmp_path / "again"), seed=3, **TINY)
  plain = mimic_fake.write_fake_mimic(str(tmp_path / "plain"), seed=3, compress=False,
                                      **TINY)
  other = mimic_fake.write_fake_mimic(str(tmp_path / "other"), seed=4, with_notes=False,
                                      with_cxr=False, scale=TINY["scale"], chart_ratio=0.1)
  for table, path in info["paths"].items():
    if table == "cxr_embeddings":
      assert pl.read_parquet(path).equals(pl.read_parquet(again["paths"][table]))
      continue
    assert plain["paths"][table].endswith(".csv")
    with open(path, "rb") as f, open(again["paths"][table], "rb") as g:
      assert f.read() == g.read(), table                    # byte-identical .csv.gz
    assert _text(path) == _text(plain["paths"][table]), table
  assert _text(info["paths"]["labevents"]) != _text(other["paths"]["labevents"])
  assert not os.path.exists(os.path.join(str(tmp_path / "other"), "note"))


def test_the_loader_schema_is_the_generators():
  """Paths from `schema`; the columns, versions and vocabularies the loader expects are
  among those the generator writes."""
  from crl_mmnar_jax.data.sources.mimic import schema
  from crl_mmnar_jax.testing import mimic_fake_common as common
  from crl_mmnar_jax.testing import mimic_fake_events as events
  assert set(schema.RAW_TABLES) <= set(common.TABLE_PATHS.values())
  for table, path in common.TABLE_PATHS.items():
    assert set(schema.RAW_TABLES.get(path, {})) <= set(common.COLUMNS[table]), table
  assert common.TABLE_PATHS["cxr_metadata"] == schema.CXR_METADATA_DEFAULT
  assert set(schema.CXR_METADATA_COLUMNS) <= set(common.COLUMNS["cxr_metadata"])
  assert sorted(mimic_fake.VERSIONS) == sorted(schema.VERSIONS)
  assert {t[0] for t in mimic_fake.ADMISSION_TYPES} <= set(schema.ADMISSION_TYPES)
  assert set(mimic_fake.ADMISSION_LOCATIONS) - {None} <= set(schema.ADMISSION_LOCATIONS)
  # (besides these, "DIED" where hospital_expire_flag is 1: those stays are excluded)
  assert set(mimic_fake.DISCHARGE_LOCATIONS) - {None} <= set(schema.DISCHARGE_LOCATIONS)
  for v in mimic_fake.VERSIONS.values():
    assert set(v["insurance"][0]) <= set(schema.INSURANCES)
  assert set(schema.VITAL_ITEMS) <= {c[0] for c in events.CHART_ITEMS}


def test_command_line(tmp_path):
  """--help lists the flags and exits 0; a run writes what `write_fake_mimic` writes."""
  run = lambda *args: subprocess.run([sys.executable, "-m", "experiments.mimic_fake", *args],
                                     capture_output=True, text=True, cwd=REPO, timeout=300)
  out = run("--help")
  assert out.returncode == 0, out.stderr
  for flag in ("--dir", "--scale", "--seed", "no_compress", "--chart_ratio", "--version"):
    assert flag in out.stdout
  assert run("--scale=0.001").returncode != 0                  # --dir is required
  out = run(f"--dir={tmp_path / 'cli'}", "--scale=0.0005", "--seed=2", "--cxr_dim=4",
            "--chart_ratio=0.1", "--no_notes", "--version=3.1")
  assert out.returncode == 0, out.stderr
  info = mimic_fake.write_fake_mimic(str(tmp_path / "lib"), scale=0.0005, seed=2, cxr_dim=4,
                                     chart_ratio=0.1, with_notes=False, version="3.1")
  for table, path in info["paths"].items():
    twin = os.path.join(tmp_path, "cli", os.path.relpath(path, tmp_path / "lib"))
    with open(path, "rb") as f, open(twin, "rb") as g:
      assert f.read() == g.read(), table
  assert os.path.exists(tmp_path / "cli" / "fake_mimic.json")
  assert mimic_fake_cli.write_fake_mimic is mimic_fake.write_fake_mimic   # for experiments.bench
  assert mimic_fake_cli.FULL_SCALE is mimic_fake.FULL_SCALE


@pytest.mark.skipif(importlib.util.find_spec("crl_mmnar_jax.data.sources.mimic") is None,
                    reason="crl_mmnar_jax.mimic is not there yet")
def test_load_mimic_runs_on_generated_data(tiny, tmp_path):
  from crl_mmnar_jax.data.sources.mimic import load_mimic
  directory, info = tiny
  cohort, data_info = load_mimic(directory, cache_dir=str(tmp_path / "cache"),
                                 cxr_embeddings=info["cxr_embeddings"],
                                 cxr_metadata=info["cxr_metadata"])
  assert 0 < cohort.n <= info["rows"]["admissions"]
  assert isinstance(data_info, dict)
