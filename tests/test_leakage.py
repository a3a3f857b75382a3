"""No look-ahead, for every real-data pipeline: the clinical analogue of a causality test.

For every stay, events AFTER the prediction time (the end of the feature window, or the
end of the index episode for MIMIC-IV) are appended with garbage values: later labs and
vitals, later medications and notes, later microbiology results of cultures taken in
the window, later images. Every feature, the presence mask and the cohort must be
unchanged. Each test also places the same events just BEFORE the prediction time and
checks that some feature moves (a canary: the appended events would be seen if they
leaked). Garbage values are mid-range of each variable's valid range, so that a leaked
value would enter the statistics rather than be dropped as impossible.

Pipelines: PhysioNet 2012 (a fixture, and 40 records of the real set A when present),
YAIB (a fixture, and the real demo when present), eICU-CRD (`testing.eicu_fixture`),
MIMIC-IV raw and MEDS (`testing.mimic_fixture`) and the real MIMIC-IV demo (MEDS).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax.data.sources import eicu, mimic, yaib
from crl_mmnar_jax.data.sources import physionet2012 as pn
from crl_mmnar_jax.testing import eicu_fixture as efx
from crl_mmnar_jax.testing import mimic_fixture as mfx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")


def _mid(ranges: dict, name: str, default: float = 5.0) -> float:
  lo, hi = ranges.get(name, (default, default))
  return (lo + hi) / 2.0


def _same(a, b) -> None:
  """Same cohort: ids, modalities, presence, labels and every feature, bit for bit."""
  np.testing.assert_array_equal(a.patient_id, b.patient_id)
  assert a.modality_names == b.modality_names and a.feature_names == b.feature_names
  np.testing.assert_array_equal(a.present, b.present)
  np.testing.assert_array_equal(a.labels, b.labels)
  for x, y in zip(a.features, b.features):
    np.testing.assert_array_equal(x, y)


def _moved(a, b) -> bool:
  return not all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a.features, b.features))


# ----------------------------------------------------------------------------- PhysioNet


P12_HEADER = "Time,Parameter,Value"
P12_RECORDS = {
    140001: ["00:00,RecordID,140001", "00:00,Age,70", "00:00,Gender,1", "00:00,Height,180",
             "00:00,ICUType,3", "00:00,Weight,80", "00:30,HR,88", "03:00,HR,92",
             "05:10,Lactate,2.2", "12:00,Creatinine,1.1", "47:30,Temp,37.2"],
    140002: ["00:00,RecordID,140002", "00:00,Age,55", "00:00,Gender,0", "00:00,Height,-1",
             "00:00,ICUType,4", "00:00,Weight,-1", "01:00,NISysABP,120", "02:00,pH,7.3",
             "20:00,Platelets,150"],
}
P12_SERIES = [v for g in pn.GROUPS for v in g.variables]


def _p12_late(times: list[str]) -> list[str]:
  return [f"{t},{v},{_mid(pn.VALID_RANGES, v):g}" for t in times for v in P12_SERIES]


def _p12_write(root, records: dict[int, list[str]], outcomes: list[str]) -> str:
  os.makedirs(root / "set-a", exist_ok=True)
  for rid, lines in records.items():
    (root / "set-a" / f"{rid}.txt").write_text("\n".join([P12_HEADER] + lines) + "\n")
  (root / "Outcomes-a.txt").write_text("\n".join(outcomes) + "\n")
  return str(root)


P12_OUTCOMES = ["RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death",
                "140001,10,3,9,-1,0", "140002,12,5,4,3,1"]


def test_physionet2012_no_look_ahead(tmp_path):
  base, _ = pn.load_physionet2012(_p12_write(tmp_path / "base", P12_RECORDS, P12_OUTCOMES),
                                  tasks=("in_hospital_death", "los_gt_7"))
  late = {rid: lines + _p12_late(["48:01", "60:00", "100:30"])
          for rid, lines in P12_RECORDS.items()}
  leak, info = pn.load_physionet2012(_p12_write(tmp_path / "late", late, P12_OUTCOMES),
                                     tasks=("in_hospital_death", "los_gt_7"))
  _same(leak, base)
  assert info["featurize"]["n_out_of_window"] == 3 * 2 * len(P12_SERIES)
  canary = {rid: lines + _p12_late(["47:59"]) for rid, lines in P12_RECORDS.items()}
  moved, _ = pn.load_physionet2012(_p12_write(tmp_path / "canary", canary, P12_OUTCOMES),
                                   tasks=("in_hospital_death", "los_gt_7"))
  assert _moved(moved, base)


def test_physionet2012_real_records_no_look_ahead(tmp_path):
  real = os.path.join(SHARED, "physionet2012")
  if not os.path.isdir(os.path.join(real, "set-a")):
    pytest.skip(f"PhysioNet 2012 set A not found at {os.path.abspath(real)}")
  names = sorted(os.listdir(os.path.join(real, "set-a")))[:40]
  ids = {n.split(".")[0] for n in names}
  with open(os.path.join(real, "Outcomes-a.txt")) as f:
    lines = f.read().splitlines()
  outcomes = [lines[0]] + [x for x in lines[1:] if x.split(",")[0] in ids]
  for which, extra in (("base", []), ("late", _p12_late(["48:01", "71:59"]))):
    os.makedirs(tmp_path / which / "set-a")
    for n in names:
      with open(os.path.join(real, "set-a", n)) as f:
        text = f.read().rstrip("\n").split("\n")
      (tmp_path / which / "set-a" / n).write_text("\n".join(text + extra) + "\n")
    (tmp_path / which / "Outcomes-a.txt").write_text("\n".join(outcomes) + "\n")
  base, _ = pn.load_physionet2012(str(tmp_path / "base"))
  leak, _ = pn.load_physionet2012(str(tmp_path / "late"))
  assert base.n >= 39
  _same(leak, base)


# ----------------------------------------------------------------------------- YAIB

MS_PER_HOUR = 3_600_000


def _yaib_dyn(stays: list[int], hours: range, value) -> pl.DataFrame:
  rows = [(s, h) for s in stays for h in hours]
  cols = {"stay_id": pl.Series([s for s, _ in rows], dtype=pl.Int32),
          "time": pl.Series([h * MS_PER_HOUR for _, h in rows]).cast(pl.Duration("ms"))}
  for k, v in enumerate(sorted(yaib.DYN_VARIABLES)):
    cols[v] = pl.Series([value(s, h, k) for s, h in rows], dtype=pl.Float64)
  return pl.DataFrame(cols)


def _yaib_write(root, dyn: pl.DataFrame) -> str:
  folder = root / "mortality24" / "db"
  os.makedirs(folder)
  pl.DataFrame({"stay_id": pl.Series([1, 2], dtype=pl.Int32),
                "label": pl.Series([0, 1], dtype=pl.Int32)}).write_parquet(folder / "outc.parquet")
  pl.DataFrame({"stay_id": pl.Series([1, 2], dtype=pl.Int32), "age": [60.0, 70.0],
                "sex": ["Male", "Female"], "height": [170.0, None],
                "weight": [80.0, 60.0]}).write_parquet(folder / "sta.parquet")
  dyn.write_parquet(folder / "dyn.parquet")
  return str(root)


def test_yaib_no_look_ahead(tmp_path):
  sparse = lambda s, h, k: float(s * 10 + h + k) if (h + k) % 7 == 0 else None
  base_dyn = _yaib_dyn([1, 2], range(24), sparse)
  base, _ = yaib.load_yaib(_yaib_write(tmp_path / "base", base_dyn), databases=("db",))
  late = pl.concat([base_dyn, _yaib_dyn([1, 2], range(24, 36), lambda s, h, k: 999.0)])
  leak, info = yaib.load_yaib(_yaib_write(tmp_path / "late", late), databases=("db",))
  _same(leak, base)
  assert info["per_database"]["db"]["dyn_rows_outside_window"] == 24
  inside = base_dyn.with_columns(  # the canary: the last in-window hour holds garbage
      pl.when(pl.col("time") == pl.duration(hours=23)).then(999.0).otherwise(pl.col(v))
      .alias(v) for v in yaib.DYN_VARIABLES)
  moved, _ = yaib.load_yaib(_yaib_write(tmp_path / "canary", inside), databases=("db",))
  assert _moved(moved, base)


def test_yaib_real_demo_no_look_ahead(tmp_path):
  real = os.path.join(SHARED, "yaib-demo")
  if not os.path.isdir(os.path.join(real, "mortality24")):
    pytest.skip(f"YAIB demo not found at {os.path.abspath(real)}")
  shutil.copytree(real, tmp_path / "late")
  for db in yaib.DATABASES:
    path = tmp_path / "late" / "mortality24" / db / "dyn.parquet"
    dyn = pl.read_parquet(path)
    stays = dyn["stay_id"].unique().sort()
    extra = pl.DataFrame({"stay_id": stays.gather([k // 3 for k in range(3 * len(stays))]),
                          "time": pl.Series([(25 + k % 3) * MS_PER_HOUR
                                             for k in range(3 * len(stays))])
                          .cast(dyn.schema["time"])})
    extra = extra.with_columns(pl.lit(999.0).cast(dyn.schema[v]).alias(v)
                               for v in dyn.columns if v not in ("stay_id", "time"))
    pl.concat([dyn, extra.select(dyn.columns)]).write_parquet(path)
  base, _ = yaib.load_yaib(real)
  leak, _ = yaib.load_yaib(str(tmp_path / "late"))
  _same(leak, base)


# ----------------------------------------------------------------------------- eICU


def _eicu_events(offsets: list[int]) -> dict[str, list[dict]]:
  """For every unit stay of the fixture, rows of every table read at `offsets`, with
  garbage values; and for the in-window urine culture of stay 300 (taken at 300 min), a
  later organism / sensitivity result of that same culture."""
  vr = eicu.VALID_RANGES
  out: dict[str, list[dict]] = {k: [] for k in efx.TABLES if k != "patient"}
  for n, (stay, t) in enumerate((p["patientunitstayid"], t) for p in efx.PATIENTS
                                for t in offsets):
    i = 10_000 + n
    out["vitalPeriodic"].append(dict(vitalperiodicid=i, patientunitstayid=stay,
                                     observationoffset=t,
                                     **{v: _mid(vr, v) for v in eicu.PERIODIC_VITALS}))
    out["vitalAperiodic"].append(dict(vitalaperiodicid=i, patientunitstayid=stay,
                                      observationoffset=t,
                                      **{v: _mid(vr, v) for v in eicu.APERIODIC_VITALS}))
    for k, lab in enumerate(eicu.LAB_NAMES):
      out["lab"].append(dict(labid=i * 100 + k, patientunitstayid=stay, labresultoffset=t,
                             labname=lab, labresult=_mid(vr, lab)))
    out["medication"].append(dict(medicationid=i, patientunitstayid=stay, drugorderoffset=t,
                                  drugordercancelled="No", drugname="VANCOMYCIN 1 G"))
    out["infusionDrug"].append(dict(infusiondrugid=i, patientunitstayid=stay,
                                    infusionoffset=t, drugname="Propofol (mcg/kg/min)"))
    out["intakeOutput"].append(dict(intakeoutputid=i, patientunitstayid=stay,
                                    intakeoutputoffset=t, intaketotal=900.0,
                                    outputtotal=100.0, nettotal=800.0))
    out["diagnosis"].append(dict(diagnosisid=i, patientunitstayid=stay, diagnosisoffset=t,
                                 diagnosisstring="infectious|sepsis", icd9code="038.9"))
    out["treatment"].append(dict(treatmentid=i, patientunitstayid=stay, treatmentoffset=t,
                                 treatmentstring="pulmonary|ventilation"))
    out["respiratoryCharting"].append(dict(respchartid=i, patientunitstayid=stay,
                                           respchartoffset=t, respchartvaluelabel="PEEP"))
    out["microLab"].append(dict(microlabid=i, patientunitstayid=stay, culturetakenoffset=t,
                                culturesite="Bronchial Lavage", organism="Klebsiella"))
  out["microLab"].append(dict(microlabid=99_999, patientunitstayid=300,
                              culturetakenoffset=300, culturesite="Urine, Catheter Specimen",
                              organism="Klebsiella pneumoniae", antibiotic="meropenem",
                              sensitivitylevel="Resistant"))
  return out


def _eicu_load(tmp_path, name: str, extra: dict[str, list[dict]]):
  tables = {k: list(v) + extra.get(k, []) for k, v in efx.TABLES.items()}
  d = efx.write_tables(str(tmp_path / name), tables)
  return eicu.load_eicu(d, tasks=eicu.TASKS)


def test_eicu_no_look_ahead(tmp_path):
  base, _ = _eicu_load(tmp_path, "base", {})
  leak, info = _eicu_load(tmp_path, "late", _eicu_events([1441, 2000, 10_000]))
  _same(leak, base)
  assert info["attrition"][-1]["patients"] == len(efx.COHORT)
  assert info["modalities"]["microbiology"]["rows_in_window"] == 4   # 3 + the late result
  moved, _ = _eicu_load(tmp_path, "canary", _eicu_events([1439]))
  assert _moved(moved, base)
  for m in range(1, len(eicu.MODALITIES)):        # every modality would have seen them
    assert moved.present[:, m].all(), eicu.MODALITIES[m]


# ----------------------------------------------------------------------------- MIMIC-IV

FMT = "%Y-%m-%d %H:%M:%S"
# End of each cohort subject's index episode (mimic_fixture's docstring), its index
# hadm_id and the ICU stays of the episode.
EPISODE_END = {mfx.S1: "2150-01-05 12:00:00", mfx.S2: mfx.S2_DISCH,
               mfx.S3: "2150-03-08 10:00:00", mfx.S7: "2151-01-12 10:00:00",
               mfx.S8: "2150-07-04 17:00:00", mfx.S9: "2150-08-05 10:00:00",
               mfx.S10: "2150-09-03 10:00:00"}
EPISODE_ICU = {mfx.S2: (201, 30201), mfx.S3: (302, 30302)}


def _mimic_events(t: dict[str, list[dict]], delta: dt.timedelta) -> tuple[dict, list[str]]:
  """`t` plus, for every cohort subject, events at episode end + `delta`: every listed
  lab and vital, a prescription, linked and unlinked notes, a frontal chest X-ray.
  Returns the tables and the new images' dicom ids."""
  from crl_mmnar_jax.data.sources.mimic import schema
  t = {k: [dict(r) for r in v] for k, v in t.items()}
  images = []
  for k, (sid, end) in enumerate(EPISODE_END.items()):
    when = dt.datetime.strptime(end, FMT) + delta
    time = when.strftime(FMT)
    hadm = mfx.INDEX_HADM[mfx.COHORT.index(sid)]
    for j, (itemid, name) in enumerate(mimic.LAB_ITEMS.items()):
      t[schema.LABEVENTS].append(dict(labevent_id=90_000 + 100 * k + j, subject_id=sid,
                                      itemid=itemid, charttime=time, storetime=time,
                                      value="x", valueuom="",
                                      valuenum=_mid(mimic.VALID_RANGES, name)))
    if sid in EPISODE_ICU:
      icu_hadm, stay = EPISODE_ICU[sid]
      for itemid, name in mimic.VITAL_ITEMS.items():
        t[schema.CHARTEVENTS].append(dict(subject_id=sid, hadm_id=icu_hadm, stay_id=stay,
                                          charttime=time, itemid=itemid, valueuom="",
                                          valuenum=_mid(mimic.VALID_RANGES, name, 50.0)))
    t[schema.PRESCRIPTIONS].append(dict(subject_id=sid, hadm_id=hadm, starttime=time,
                                        drug="Meropenem"))
    for table, kind in ((schema.NOTE_DISCHARGE, "DS"), (schema.NOTE_RADIOLOGY, "RR")):
      for n, h in enumerate((hadm, "")):
        t[table].append(dict(note_id=f"{sid}-{kind}-late{n}", subject_id=sid, hadm_id=h,
                             note_type=kind, charttime=time,
                             text="Late: septic shock, intubated, pressors started."))
    dicom = f"late{sid}"
    images.append(dicom)
    t[schema.CXR_METADATA_DEFAULT].append(dict(
        dicom_id=dicom, subject_id=sid, study_id=60_000 + k, ViewPosition="PA",
        StudyDate=int(when.strftime("%Y%m%d")), StudyTime=float(when.strftime("%H%M%S"))))
  return t, images


def _mimic_raw(tmp_path, name: str, delta: dt.timedelta | None):
  t, images = (mfx.tables(), []) if delta is None else _mimic_events(mfx.tables(), delta)
  folder = mfx.write_raw(str(tmp_path / name / "2.2"), t)
  emb = {**mfx.EMBEDDINGS, **{d: [77.0, -77.0, 77.0, -77.0] for d in images}}
  path = os.path.join(folder, "cxr_embeddings.parquet")
  pl.DataFrame({"dicom_id": list(emb), **{f"e{j}": [v[j] for v in emb.values()]
                                          for j in range(4)}}).write_parquet(path)
  meds = str(tmp_path / name / "events.parquet")
  mfx.to_meds(t).write_parquet(meds)
  return mimic.load_mimic(folder, cxr_embeddings=path)[0], mimic.load_mimic(meds=meds)[0]


def test_mimic_raw_and_meds_no_look_ahead(tmp_path):
  raw, meds = _mimic_raw(tmp_path, "base", None)
  assert raw.modality_names == mimic.MODALITIES          # every modality is exercised
  for delta in (dt.timedelta(minutes=1), dt.timedelta(days=2)):
    raw_late, meds_late = _mimic_raw(tmp_path, f"late{delta.days}", delta)
    _same(raw_late, raw)
    _same(meds_late, meds)
  raw_in, meds_in = _mimic_raw(tmp_path, "canary", -dt.timedelta(minutes=1))
  assert _moved(raw_in, raw) and _moved(meds_in, meds)
  for m, name in enumerate(raw_in.modality_names):        # every modality would see them
    if name != "ehr":
      assert raw_in.present[:, m].all(), name


def _demo_episode_ends(events: pl.DataFrame) -> dict[int, dt.datetime]:
  """Each subject's first-episode end with a plain loop: the first admission, chained
  with admissions starting < 6 h after the latest discharge so far."""
  ends = {}
  hosp = events.filter(pl.col("code").str.starts_with("HOSPITAL_")).sort("subject_id", "time")
  for (sid,), g in hosp.group_by("subject_id"):
    adm = sorted(t for t, c in g.select("time", "code").rows()
                 if c.startswith("HOSPITAL_ADMISSION"))
    dis = sorted(t for t, c in g.select("time", "code").rows()
                 if c.startswith("HOSPITAL_DISCHARGE"))
    if not adm or len(adm) != len(dis):
      continue
    end = dis[0]
    for a, d in zip(adm[1:], dis[1:]):
      if a - end >= dt.timedelta(hours=6):
        break
      end = max(end, d)
    ends[sid] = end
  return ends


def _demo_late(ends: dict[int, dt.datetime], delta: dt.timedelta, schema) -> pl.DataFrame:
  rows = []
  items = {**mimic.LAB_ITEMS, **mimic.VITAL_ITEMS}
  for sid, end in ends.items():
    t = end + delta
    rows += [(sid, t, f"LAB//{i}//UNK", _mid(mimic.VALID_RANGES, n, 50.0))
             for i, n in items.items()]
    rows += [(sid, t, "MEDICATION//START//Meropenem", None),
             (sid, t, "DIAGNOSIS//ICD//10//A419", None),
             (sid, t + dt.timedelta(days=1), "PROCEDURE//ICD//10//5A1955Z", None)]
  df = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"),
                                  "code": pl.String, "value": pl.Float64}, orient="row")
  return df.with_columns(pl.lit("condition").alias("table")).select(
      [pl.col(c).cast(schema[c]) for c in schema])


def test_mimic_demo_no_look_ahead(tmp_path):
  demo = os.path.join(SHARED, "mimic-iv-demo-meds", "events.parquet")
  if not os.path.isfile(demo):
    pytest.skip(f"MIMIC-IV demo not found at {os.path.abspath(demo)}")
  events = pl.read_parquet(demo)
  ends = _demo_episode_ends(events)
  last = events.group_by("subject_id").agg(pl.col("time").max())
  base, _ = mimic.load_mimic(meds=demo)
  for name, late in (("late", _demo_late(ends, dt.timedelta(minutes=1), events.schema)),
                     ("after_all", _demo_late(dict(last.rows()), dt.timedelta(days=1),
                                              events.schema))):
    path = str(tmp_path / f"{name}.parquet")
    pl.concat([events, late]).write_parquet(path)
    leak, _ = mimic.load_mimic(meds=path)
    _same(leak, base)
  path = str(tmp_path / "canary.parquet")
  pl.concat([events, _demo_late(ends, -dt.timedelta(minutes=1), events.schema)]
            ).write_parquet(path)
  assert _moved(mimic.load_mimic(meds=path)[0], base)
