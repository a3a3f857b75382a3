"""A hand-made MIMIC-IV v2.2 fixture in the published raw schema, and the same data as
MEDS events (as the MIMIC-IV MEDS ETL writes them). Used by tests/test_mimic.py: every
expected feature and label there is checked by hand against these rows.

Subjects (index admission = first valid one; expected labels in `EXPECTED_LABELS`):

* 10000001 (S1): index 2150-01-01 10:00 to 01-05 12:00 (98 h); readmitted exactly 30 days
  after discharge, with an ICU stay 2 h later; labs, prescriptions, codes, both notes,
  chest X-rays (PA, AP and a lateral) in the window, and events outside it.
* 10000002 (S2): ICU stay with vitals in the index admission; readmitted 30 days and
  1 minute after discharge (not a 30-day readmission); an ICU stay of a later
  admission exactly 90 days after discharge; dies 181 days after discharge; no notes.
* 10000003 (S3): a transfer between hadm_ids: the second admission starts at the index
  dischtime, so both are ONE episode (03-01 08:00 to 03-08 10:00): its lab, its ICU stay
  and that stay's vitals are the episode's, not a readmission's; no notes.
* 10000004 (S4): a child (excluded). 10000005 (S5): died in the index admission
  (excluded). 10000006 (S6): no admission (excluded).
* 10000007 (S7): first admission invalid (dischtime < admittime, at age 17) and dropped;
  the index is a year later at age 18; dies exactly 180 days after discharge; two
  radiology reports and a late report after discharge.
* 10000008 (S8): discharged alive, dies on the discharge day (out of hospital).
* 10000009 (S9): the MIMIC demo's pattern (subject 10002930): a 5.4 h observation stay
  discharged at 11:44, a direct emergency admission at 11:45 (one episode, with a lab
  drawn in its second admission), then an ELECTIVE admission 10 days after the episode
  ends: no 30-day readmission (it would be 1 twice under "any admission within 30 days
  of the first discharge").
* 10000010 (S10): readmitted (URGENT) exactly `EPISODE_GAP_HOURS` = 6 h after discharge:
  a new episode, a 30-day readmission.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import gzip
import os

import polars as pl

from crl_mmnar_jax.data.sources.mimic import schema
from crl_mmnar_jax.testing.mimic_fake_common import COLUMNS as TABLE_COLUMNS
from crl_mmnar_jax.testing.mimic_fake_common import relative_path

# Published MIMIC-IV v2.2 / MIMIC-IV-Note v2.2 / MIMIC-CXR-JPG 2.0.0 column order (the
# generator's `mimic_fake_common.COLUMNS`), keyed like the tables below by the loader's
# paths (`schema.PATIENTS` = "hosp/patients", ...).
COLUMNS = {relative_path(table): columns for table, columns in TABLE_COLUMNS.items()}

S1, S2, S3, S4, S5, S6, S7, S8, S9, S10 = range(10000001, 10000011)
COHORT = [S1, S2, S3, S7, S8, S9, S10]
EXPECTED_LABELS = {   # readmission_30d, icu_90d, mortality_180d
    S1: [1, 1, 0], S2: [0, 1, 0], S3: [0, 0, 0], S7: [0, 0, 1], S8: [0, 0, 1],
    S9: [0, 0, 0], S10: [1, 0, 0]}
INDEX_HADM = [101, 201, 301, 702, 801, 901, 1001]
TEXTS = {
    "s1_discharge": 'Discharge summary:\nChest pain, "troponin" negative; discharged home '
                    'on aspirin.',
    "s1_radiology": "CHEST (PA AND LAT): no acute cardiopulmonary process.",
    "s1_radiology_ed": "ED portable chest film: no pneumothorax, lines in place.",
    "s7_discharge": "Hip fracture after a fall, repaired; discharged to rehab.",
    "s7_radiology_1": "Hip radiograph: displaced femoral neck fracture.",
    "s7_radiology_2": "Post-operative hip radiograph: hemiarthroplasty in place.",
}
EMBEDDINGS = {"d1": [1.0, 2.0, 3.0, 4.0], "d2": [100.0, 100.0, 100.0, 100.0],
              "d3": [3.0, 4.0, 5.0, 6.0], "d4": [50.0, 50.0, 50.0, 50.0]}

_FMT = "%Y-%m-%d %H:%M:%S"


def _t(s: str) -> dt.datetime:
  return dt.datetime.strptime(s, _FMT)


def _s(t: dt.datetime) -> str:
  return t.strftime(_FMT)


def _plus(s: str, **delta) -> str:
  return _s(_t(s) + dt.timedelta(**delta))


def _adm(sid, hadm, admit, disch, atype="EW EMER.", aloc="EMERGENCY ROOM",
         dloc="HOME", insurance="Medicare", race="WHITE", death="", flag=0):
  return dict(subject_id=sid, hadm_id=hadm, admittime=admit, dischtime=disch,
              deathtime=death, admission_type=atype, admit_provider_id="P12345",
              admission_location=aloc, discharge_location=dloc, insurance=insurance,
              language="ENGLISH", marital_status="MARRIED", race=race, edregtime="",
              edouttime="", hospital_expire_flag=flag)


def _lab(i, sid, itemid, time, valuenum, uom="mg/dL"):
  return dict(labevent_id=i, subject_id=sid, hadm_id="", specimen_id=1000 + i,
              itemid=itemid, charttime=time, storetime=_plus(time, hours=1),
              value="" if valuenum == "" else str(valuenum), valuenum=valuenum,
              valueuom=uom, priority="ROUTINE")


def _chart(sid, hadm, stay, itemid, time, valuenum, uom):
  return dict(subject_id=sid, hadm_id=hadm, stay_id=stay, caregiver_id=1, charttime=time,
              storetime=time, itemid=itemid, value=str(valuenum), valuenum=valuenum,
              valueuom=uom, warning=0)


def _rx(sid, hadm, i, start, drug):
  return dict(subject_id=sid, hadm_id=hadm, pharmacy_id=i, poe_id=f"{sid}-{i}", poe_seq=i,
              starttime=start, stoptime=_plus(start, days=1), drug_type="MAIN", drug=drug,
              route="PO")


def _note(kind, sid, hadm, seq, time, text):
  return dict(note_id=f"{sid}-{'DS' if kind == 'discharge' else 'RR'}-{seq}", subject_id=sid,
              hadm_id=hadm, note_type="DS" if kind == "discharge" else "RR", note_seq=seq,
              charttime=time, storetime=_plus(time, hours=2), text=text)


def _image(dicom, sid, study, view, date, time):
  return dict(dicom_id=dicom, subject_id=sid, study_id=study,
              PerformedProcedureStepDescription="CHEST (PA AND LAT)", ViewPosition=view,
              Rows=3056, Columns=2544, StudyDate=date, StudyTime=time)


S2_DISCH = "2150-02-10 12:00:00"


def tables() -> dict[str, list[dict]]:
  """The raw rows per table (values as they appear in the CSV files)."""
  s2_dod = (_t(S2_DISCH) + dt.timedelta(days=181)).date().isoformat()
  s7_dod = (dt.date(2151, 1, 12) + dt.timedelta(days=180)).isoformat()
  return {
      schema.PATIENTS: [
          dict(subject_id=S1, gender="F", anchor_age=50, anchor_year=2150,
               anchor_year_group="2011 - 2013", dod=""),
          dict(subject_id=S2, gender="M", anchor_age=60, anchor_year=2149,
               anchor_year_group="2011 - 2013", dod=s2_dod),
          dict(subject_id=S3, gender="F", anchor_age=70, anchor_year=2150,
               anchor_year_group="2014 - 2016", dod=""),
          dict(subject_id=S4, gender="M", anchor_age=10, anchor_year=2150,
               anchor_year_group="2014 - 2016", dod=""),
          dict(subject_id=S5, gender="F", anchor_age=80, anchor_year=2150,
               anchor_year_group="2017 - 2019", dod="2150-05-03"),
          dict(subject_id=S6, gender="F", anchor_age=40, anchor_year=2150,
               anchor_year_group="2017 - 2019", dod=""),
          dict(subject_id=S7, gender="F", anchor_age=17, anchor_year=2150,
               anchor_year_group="2008 - 2010", dod=s7_dod),
          dict(subject_id=S8, gender="M", anchor_age=80, anchor_year=2150,
               anchor_year_group="2008 - 2010", dod="2150-07-04"),
          dict(subject_id=S9, gender="F", anchor_age=60, anchor_year=2150,
               anchor_year_group="2017 - 2019", dod=""),
          dict(subject_id=S10, gender="M", anchor_age=55, anchor_year=2150,
               anchor_year_group="2011 - 2013", dod=""),
      ],
      schema.ADMISSIONS: [
          _adm(S1, 101, "2150-01-01 10:00:00", "2150-01-05 12:00:00"),
          _adm(S1, 102, "2150-02-04 12:00:00", "2150-02-10 09:00:00", atype="URGENT",
               aloc="TRANSFER FROM HOSPITAL"),
          _adm(S2, 201, "2150-02-01 08:00:00", S2_DISCH, atype="ELECTIVE",
               aloc="PHYSICIAN REFERRAL", dloc="SKILLED NURSING FACILITY",
               insurance="Medicaid", race="BLACK/AFRICAN AMERICAN"),
          _adm(S2, 202, _plus(S2_DISCH, days=30, minutes=1), "2150-03-20 10:00:00"),
          _adm(S2, 203, "2150-05-11 10:00:00", "2150-05-15 10:00:00"),
          _adm(S3, 301, "2150-03-01 08:00:00", "2150-03-03 10:00:00", dloc="ACUTE HOSPITAL",
               insurance="Private", race="UNKNOWN"),
          _adm(S3, 302, "2150-03-03 10:00:00", "2150-03-08 10:00:00", atype="URGENT",
               aloc="TRANSFER FROM HOSPITAL", dloc=""),
          _adm(S4, 401, "2150-04-01 10:00:00", "2150-04-02 10:00:00"),
          _adm(S5, 501, "2150-05-01 08:00:00", "2150-05-03 10:00:00", dloc="DIED",
               death="2150-05-03 10:00:00", flag=1),
          _adm(S7, 701, "2150-06-10 10:00:00", "2150-06-09 10:00:00"),
          _adm(S7, 702, "2151-01-10 10:00:00", "2151-01-12 10:00:00", dloc="REHAB",
               race="ASIAN - CHINESE"),
          _adm(S8, 801, "2150-07-01 09:00:00", "2150-07-04 17:00:00", insurance="Other"),
          _adm(S9, 901, "2150-08-01 06:18:00", "2150-08-01 11:44:00",
               atype="EU OBSERVATION", dloc=""),
          _adm(S9, 902, "2150-08-01 11:45:00", "2150-08-05 10:00:00", atype="DIRECT EMER.",
               aloc="PHYSICIAN REFERRAL"),
          _adm(S9, 903, "2150-08-15 10:00:00", "2150-08-16 10:00:00", atype="ELECTIVE",
               aloc="PHYSICIAN REFERRAL"),
          _adm(S10, 1001, "2150-09-01 10:00:00", "2150-09-03 10:00:00"),
          _adm(S10, 1002, "2150-09-03 16:00:00", "2150-09-05 10:00:00", atype="URGENT"),
      ],
      schema.ICUSTAYS: [
          dict(subject_id=S1, hadm_id=102, stay_id=30102, first_careunit="MICU",
               last_careunit="MICU", intime="2150-02-04 14:00:00",
               outtime="2150-02-06 14:00:00", los=2.0),
          dict(subject_id=S2, hadm_id=201, stay_id=30201, first_careunit="CCU",
               last_careunit="CCU", intime="2150-02-02 09:00:00",
               outtime="2150-02-03 09:00:00", los=1.0),
          dict(subject_id=S2, hadm_id=203, stay_id=30203, first_careunit="MICU",
               last_careunit="MICU", intime=_plus(S2_DISCH, days=90),
               outtime="2150-05-13 12:00:00", los=1.0),
          dict(subject_id=S3, hadm_id=302, stay_id=30302, first_careunit="SICU",
               last_careunit="SICU", intime="2150-03-04 10:00:00",
               outtime="2150-03-05 10:00:00", los=1.0),
      ],
      schema.LABEVENTS: [
          _lab(1, S1, 50912, "2150-01-01 12:00:00", 1.0),
          _lab(2, S1, 50912, "2150-01-02 12:00:00", 1.4),
          _lab(3, S1, 50983, "2150-01-01 12:00:00", 140.0, "mEq/L"),
          _lab(4, S1, 50971, "2150-01-01 12:00:00", "", "mEq/L"),      # no numeric value
          _lab(5, S1, 50912, "2149-12-31 08:00:00", 9.0),              # before admission
          _lab(6, S1, 50912, "2150-01-06 08:00:00", 5.0),              # after discharge
          _lab(7, S1, 51000, "2150-01-01 12:00:00", 3.0),              # not a listed lab
          _lab(8, S3, 50912, "2150-03-05 08:00:00", 2.0),              # in the transfer
          _lab(9, S8, 50983, "2150-07-01 10:00:00", 135.0, "mEq/L"),
          _lab(10, S9, 50912, "2150-08-03 08:00:00", 2.0),             # in admission 902
      ],
      schema.CHARTEVENTS: [
          _chart(S2, 201, 30201, 220045, "2150-02-02 10:00:00", 80.0, "bpm"),
          _chart(S2, 201, 30201, 220045, "2150-02-02 12:00:00", 100.0, "bpm"),
          _chart(S2, 201, 30201, 220210, "2150-02-02 10:00:00", 0.0, "insp/min"),
          _chart(S2, 201, 30201, 223761, "2150-02-02 10:00:00", 98.6, "°F"),
          _chart(S2, 203, 30203, 220045, "2150-05-11 13:00:00", 150.0, "bpm"),
          _chart(S3, 302, 30302, 220045, "2150-03-04 11:00:00", 70.0, "bpm"),
      ],
      schema.PRESCRIPTIONS: [
          _rx(S1, 101, 1, "2150-01-01 14:00:00", "Aspirin"),
          _rx(S1, 101, 2, "2150-01-02 08:00:00", "Heparin"),
          _rx(S1, 101, 3, "2150-01-03 08:00:00", "aspirin"),
          _rx(S1, 102, 4, "2150-02-05 08:00:00", "Warfarin"),
          _rx(S8, 801, 5, "2150-07-02 08:00:00", "Furosemide"),
      ],
      schema.DIAGNOSES_ICD: [
          dict(subject_id=S1, hadm_id=101, seq_num=1, icd_code="I10", icd_version=10),
          dict(subject_id=S1, hadm_id=101, seq_num=2, icd_code="E119", icd_version=10),
          dict(subject_id=S1, hadm_id=102, seq_num=1, icd_code="N179", icd_version=10),
          dict(subject_id=S2, hadm_id=201, seq_num=1, icd_code="4019", icd_version=9),
          dict(subject_id=S8, hadm_id=801, seq_num=1, icd_code="I10", icd_version=10),
      ],
      schema.PROCEDURES_ICD: [
          dict(subject_id=S1, hadm_id=101, seq_num=1, chartdate="2150-01-02",
               icd_code="0DJ08ZZ", icd_version=10),
          dict(subject_id=S7, hadm_id=702, seq_num=1, chartdate="2151-01-10",
               icd_code="0SRR0J9", icd_version=10),
      ],
      schema.NOTE_DISCHARGE: [
          _note("discharge", S1, 101, 1, "2150-01-05 00:00:00", TEXTS["s1_discharge"]),
          _note("discharge", S7, 702, 1, "2151-01-12 00:00:00", TEXTS["s7_discharge"]),
      ],
      schema.NOTE_RADIOLOGY: [
          _note("radiology", S1, 101, 1, "2150-01-01 15:00:00", TEXTS["s1_radiology"]),
          # Reports without hadm_id: 4 h before admittime (in), 8 h before (out).
          _note("radiology", S1, "", 3, "2150-01-01 06:00:00", TEXTS["s1_radiology_ed"]),
          _note("radiology", S1, "", 4, "2150-01-01 02:00:00", "Outpatient film, earlier."),
          _note("radiology", S1, 102, 2, "2150-02-05 15:00:00", "Later admission film."),
          _note("radiology", S7, 702, 1, "2151-01-10 12:00:00", TEXTS["s7_radiology_1"]),
          _note("radiology", S7, 702, 2, "2151-01-11 12:00:00", TEXTS["s7_radiology_2"]),
          _note("radiology", S7, 702, 3, "2151-01-13 12:00:00", "Addendum after discharge."),
      ],
      schema.CXR_METADATA_DEFAULT: [
          _image("d1", S1, 50001, "PA", 21500101, 160000.0),
          _image("d2", S1, 50001, "LATERAL", 21500101, 160000.0),
          _image("d3", S1, 50001, "AP", 21500101, 160000.0),
          _image("d4", S1, 50002, "PA", 21500205, 93015.5),          # later admission
      ],
  }


def with_post_discharge_events(t: dict[str, list[dict]]) -> dict[str, list[dict]]:
  """`t` plus events after each cohort subject's index discharge (labels unchanged)."""
  t = copy.deepcopy(t)
  late = {S1: "2150-01-05 12:01:00", S2: "2150-02-10 12:30:00", S3: "2150-03-08 10:00:01",
          S7: "2151-01-12 11:00:00", S8: "2150-07-04 17:05:00", S9: "2150-08-05 10:00:30",
          S10: "2150-09-03 10:01:00"}
  index = dict(zip(COHORT, INDEX_HADM))
  for k, (sid, time) in enumerate(late.items()):
    t[schema.LABEVENTS].append(_lab(100 + k, sid, 50912, time, 7.7))
    t[schema.PRESCRIPTIONS].append(_rx(sid, index[sid], 100 + k, time, "Vancomycin"))
    t[schema.NOTE_DISCHARGE].append(_note("discharge", sid, index[sid], 9,
                                          _plus(time, days=1),
                                          "Late addendum: vancomycin started."))
    t[schema.NOTE_RADIOLOGY].append(_note("radiology", sid, index[sid], 9, time, "Late film."))
    t[schema.NOTE_RADIOLOGY].append(_note("radiology", sid, "", 10, time, "Late ED film."))
  t[schema.CHARTEVENTS].append(_chart(S2, 201, 30201, 220045, late[S2], 190.0, "bpm"))
  t[schema.CXR_METADATA_DEFAULT].append(_image("d5", S1, 50003, "PA", 21500105, 120100.0))
  return t


def write_raw(folder: str, t: dict[str, list[dict]] | None = None, gz: bool = True,
              drop_column: tuple[str, str] | None = None, skip: tuple[str, ...] = ()
              ) -> str:
  """Writes the tables under `folder` (``hosp/``, ``icu/``, ``note/``, ``cxr/``) and the
  image embeddings as ``folder/cxr_embeddings.parquet``; returns `folder`."""
  t = tables() if t is None else t
  for name, rows in t.items():
    if name in skip:
      continue
    cols = [c for c in COLUMNS[name] if (name, c) != drop_column]
    path = os.path.join(folder, name + (".csv.gz" if gz else ".csv"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="", encoding="utf-8") as f:
      w = csv.writer(f)
      w.writerow(cols)
      for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c, "") for c in cols])
  pl.DataFrame({"dicom_id": list(EMBEDDINGS),
                **{f"e{j}": [v[j] for v in EMBEDDINGS.values()] for j in range(4)}}
               ).write_parquet(os.path.join(folder, "cxr_embeddings.parquet"))
  return folder


def to_meds(t: dict[str, list[dict]] | None = None,
            value_column: str = "numeric_value") -> pl.DataFrame:
  """The same data as MEDS events, as the MIMIC-IV MEDS ETL codes them."""
  t = tables() if t is None else t
  ev: list[tuple] = []
  add = lambda sid, time, code, value=None: ev.append(
      (sid, None if time in (None, "") else _t(time), code, value))
  disch = {a["hadm_id"]: a["dischtime"] for a in t[schema.ADMISSIONS]}
  deaths = {}
  for a in t[schema.ADMISSIONS]:
    add(a["subject_id"], a["admittime"],
        f"HOSPITAL_ADMISSION//{a['admission_type']}//{a['admission_location'] or 'UNK'}")
    add(a["subject_id"], a["dischtime"],
        f"HOSPITAL_DISCHARGE//{a['discharge_location'] or 'UNK'}")
    if a["deathtime"]:
      deaths[a["subject_id"]] = min(deaths.get(a["subject_id"], a["deathtime"]),
                                    a["deathtime"])
  for p in t[schema.PATIENTS]:
    add(p["subject_id"], None, f"GENDER//{p['gender']}")
    add(p["subject_id"], f"{p['anchor_year'] - p['anchor_age']}-01-01 00:00:00", "MEDS_BIRTH")
    death = deaths.get(p["subject_id"]) or (p["dod"] and p["dod"] + " 00:00:00")
    if death:
      add(p["subject_id"], death, "MEDS_DEATH")
  for s in t[schema.ICUSTAYS]:
    add(s["subject_id"], s["intime"], f"ICU_ADMISSION//{s['first_careunit']}")
  for name in (schema.LABEVENTS, schema.CHARTEVENTS):
    for r in t[name]:
      add(r["subject_id"], r["charttime"], f"LAB//{r['itemid']}//{r['valueuom'] or 'UNK'}",
          None if r["valuenum"] == "" else float(r["valuenum"]))
  for r in t[schema.PRESCRIPTIONS]:
    add(r["subject_id"], r["starttime"], f"MEDICATION//START//{r['drug']}")
  for r in t[schema.DIAGNOSES_ICD]:
    add(r["subject_id"], disch[r["hadm_id"]],
        f"DIAGNOSIS//ICD//{r['icd_version']}//{r['icd_code']}")
  for r in t[schema.PROCEDURES_ICD]:
    add(r["subject_id"], r["chartdate"] + " 00:00:00",
        f"PROCEDURE//ICD//{r['icd_version']}//{r['icd_code']}")
  return pl.DataFrame(ev, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"),
                                  "code": pl.String, value_column: pl.Float64},
                      orient="row").sort("subject_id", "time", nulls_last=False)
