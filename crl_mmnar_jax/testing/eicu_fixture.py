"""A hand-made eICU-CRD v2.0 fixture in the published raw schema (every column of the
tables `load_eicu` reads, in published order). Used by tests/test_eicu.py: every expected
feature and label there is checked by hand against these rows.
"""

from __future__ import annotations

import csv
import gzip
import os

# Exact eICU-CRD v2.0 column lists (in published order) of the tables the loader reads.
COLUMNS = {
    "patient": [
        "patientunitstayid", "patienthealthsystemstayid", "gender", "age", "ethnicity",
        "hospitalid", "wardid", "apacheadmissiondx", "admissionheight",
        "hospitaladmittime24", "hospitaladmitoffset", "hospitaladmitsource",
        "hospitaldischargeyear", "hospitaldischargetime24", "hospitaldischargeoffset",
        "hospitaldischargelocation", "hospitaldischargestatus", "unittype",
        "unitadmittime24", "unitadmitsource", "unitvisitnumber", "unitstaytype",
        "admissionweight", "dischargeweight", "unitdischargetime24", "unitdischargeoffset",
        "unitdischargelocation", "unitdischargestatus", "uniquepid"],
    "vitalPeriodic": [
        "vitalperiodicid", "patientunitstayid", "observationoffset", "temperature", "sao2",
        "heartrate", "respiration", "cvp", "etco2", "systemicsystolic",
        "systemicdiastolic", "systemicmean", "pasystolic", "padiastolic", "pamean", "st1",
        "st2", "st3", "icp"],
    "vitalAperiodic": [
        "vitalaperiodicid", "patientunitstayid", "observationoffset",
        "noninvasivesystolic", "noninvasivediastolic", "noninvasivemean", "paop",
        "cardiacoutput", "cardiacinput", "svr", "svri", "pvr", "pvri"],
    "lab": [
        "labid", "patientunitstayid", "labresultoffset", "labtypeid", "labname",
        "labresult", "labresulttext", "labmeasurenamesystem", "labmeasurenameinterface",
        "labresultrevisedoffset"],
    "medication": [
        "medicationid", "patientunitstayid", "drugorderoffset", "drugstartoffset",
        "drugivadmixture", "drugordercancelled", "drugname", "drughiclseqno", "dosage",
        "routeadmin", "frequency", "loadingdose", "prn", "drugstopoffset", "gtc"],
    "infusionDrug": [
        "infusiondrugid", "patientunitstayid", "infusionoffset", "drugname", "drugrate",
        "infusionrate", "drugamount", "volumeoffluid", "patientweight"],
    "intakeOutput": [
        "intakeoutputid", "patientunitstayid", "intakeoutputoffset", "intaketotal",
        "outputtotal", "dialysistotal", "nettotal", "intakeoutputentryoffset", "cellpath",
        "celllabel", "cellvaluenumeric", "cellvaluetext"],
    "diagnosis": [
        "diagnosisid", "patientunitstayid", "activeupondischarge", "diagnosisoffset",
        "diagnosisstring", "icd9code", "diagnosispriority"],
    "treatment": [
        "treatmentid", "patientunitstayid", "treatmentoffset", "treatmentstring",
        "activeupondischarge"],
    "respiratoryCharting": [
        "respchartid", "patientunitstayid", "respchartoffset", "respchartentryoffset",
        "respcharttypecat", "respchartvaluelabel", "respchartvalue"],
    "microLab": [
        "microlabid", "patientunitstayid", "culturetakenoffset", "culturesite",
        "organism", "antibiotic", "sensitivitylevel"],
}


def _stay(stay, hs, pid, age, year, visit, status="Alive", unittype="Med-Surg ICU",
          gender="Female", hao=-120, udo=3000, unit_status="Alive"):
  """One patient row; `hao` = hospitaladmitoffset and `udo` = unitdischargeoffset
  (minutes from this unit admission)."""
  return dict(patientunitstayid=stay, patienthealthsystemstayid=hs, gender=gender, age=age,
              ethnicity="Caucasian", hospitalid=73, wardid=92, admissionheight=170.2,
              hospitaladmittime24="08:00:00", hospitaladmitoffset=hao,
              hospitaladmitsource="Emergency Department", hospitaldischargeyear=year,
              hospitaldischargetime24="10:00:00", hospitaldischargeoffset=5000,
              hospitaldischargelocation="Home", hospitaldischargestatus=status,
              unittype=unittype, unitadmittime24="10:00:00",
              unitadmitsource="Emergency Department", unitvisitnumber=visit,
              unitstaytype="admit", admissionweight=80.5, dischargeweight=79.0,
              unitdischargetime24="12:00:00", unitdischargeoffset=udo,
              unitdischargelocation="Floor", unitdischargestatus=unit_status, uniquepid=pid)


# Patients (cohort, labels and attrition checked by hand in tests/test_eicu.py; times of
# a unit stay in minutes from its HOSPITAL admission: -hao to -hao + udo):
# 001-1 discharged from the unit at 10 h (inside the 24 h window): excluded.
# 002-1 two hospital stays (2015 hs 20, 2014 hs 21: the 2014 one is first), age "> 89",
#       died in hospital (on the ward): mortality 1, icu_readmission 0,
#       hospital_readmission unknown (died).
# 003-1 the vitals/labs patient; hs 30: stay 300 (120 -> 3120), 301 a transfer 10 min
#       after (3130 -> 4130), 302 a return 14.5 h after that (5000 ->): icu_readmission 1.
# 004-1 a child; 005-1 unknown age (both excluded).
# 006-1 adult with nothing charted and an empty discharge status: mortality and
#       hospital_readmission unknown.
# 007-1 hs 70: stay 700 (120 -> 3120), 701 a direct transfer at 3120 (gap 0) and nothing
#       later: icu_readmission 0 (counted 1 by any later unitvisitnumber).
# 008-1 dies in the unit at 33 h (after the window): mortality 1, icu_readmission and
#       hospital_readmission unknown.
# 009-1 hs 90 (2014) then hs 91 (2015): hospital_readmission 1.
# 010-1 hs 100 (2014) then hs 101 with a null discharge year: hospital_readmission 0 (a
#       null year is not "later").
# 011-1 dies in the unit at 10 h: excluded (a death inside the window).
PATIENTS = [
    _stay(100, 10, "001-1", "45", 2014, 1, udo=600),
    _stay(200, 20, "002-1", "> 89", 2015, 1),
    _stay(210, 21, "002-1", "> 89", 2014, 1, status="Expired", gender="Male",
          unittype="MICU"),
    _stay(300, 30, "003-1", "60", 2014, 1, unittype="SICU"),
    _stay(301, 30, "003-1", "60", 2014, 2, hao=-3130, udo=1000),
    _stay(302, 30, "003-1", "60", 2014, 3, hao=-5000, udo=1000),
    _stay(400, 40, "004-1", "12", 2015, 1),
    _stay(500, 50, "005-1", "", 2015, 1),
    _stay(600, 60, "006-1", "70", 2015, 1, status=""),
    _stay(700, 70, "007-1", "50", 2015, 1),
    _stay(701, 70, "007-1", "50", 2015, 2, hao=-3120),
    _stay(800, 80, "008-1", "75", 2015, 1, status="Expired", udo=2000,
          unit_status="Expired"),
    _stay(900, 90, "009-1", "65", 2014, 1),
    _stay(910, 91, "009-1", "65", 2015, 1),
    _stay(1000, 100, "010-1", "55", 2014, 1),
    _stay(1010, 101, "010-1", "55", None, 1),
    _stay(1100, 110, "011-1", "80", 2015, 1, status="Expired", udo=600,
          unit_status="Expired"),
]
COHORT = ["002-1", "003-1", "006-1", "007-1", "008-1", "009-1", "010-1"]
INDEX_STAYS = [210, 300, 600, 700, 800, 900, 1000]
EXPECTED_LABELS = {   # mortality, icu_readmission, hospital_readmission (None: unknown)
    "002-1": (1, 0, None), "003-1": (0, 1, 0), "006-1": (None, 0, None),
    "007-1": (0, 0, 0), "008-1": (1, None, None), "009-1": (0, 0, 1),
    "010-1": (0, 0, 0)}

TABLES = {
    "patient": PATIENTS,
    "vitalPeriodic": [
        dict(vitalperiodicid=1, patientunitstayid=300, observationoffset=0, heartrate=80,
             respiration=0),          # respiration 0 is impossible: dropped
        dict(vitalperiodicid=2, patientunitstayid=300, observationoffset=60, heartrate=90,
             respiration=20),
        dict(vitalperiodicid=3, patientunitstayid=300, observationoffset=120,
             heartrate=100, temperature=37.5),
        dict(vitalperiodicid=4, patientunitstayid=300, observationoffset=1500,
             heartrate=200),          # after the 24 h window
        dict(vitalperiodicid=5, patientunitstayid=300, observationoffset=-5, heartrate=50),
        dict(vitalperiodicid=6, patientunitstayid=100, observationoffset=30, heartrate=70),
        dict(vitalperiodicid=7, patientunitstayid=100, observationoffset=500, heartrate=76),
        dict(vitalperiodicid=8, patientunitstayid=301, observationoffset=10, heartrate=120),
    ],
    "vitalAperiodic": [
        dict(vitalaperiodicid=1, patientunitstayid=210, observationoffset=10,
             noninvasivesystolic=120, noninvasivediastolic=70, noninvasivemean=87),
    ],
    "lab": [
        dict(labid=1, patientunitstayid=300, labresultoffset=30, labtypeid=1,
             labname="sodium", labresult=140, labresulttext="140"),
        dict(labid=2, patientunitstayid=300, labresultoffset=90, labtypeid=1,
             labname="sodium", labresult=136, labresulttext="136"),
        dict(labid=3, patientunitstayid=300, labresultoffset=90, labtypeid=7,
             labname="some rare lab", labresult=1.0, labresulttext="1"),
        dict(labid=4, patientunitstayid=100, labresultoffset=2000, labtypeid=1,
             labname="sodium", labresult=150, labresulttext="150"),   # outside window
    ],
    "medication": [
        dict(medicationid=1, patientunitstayid=300, drugorderoffset=15, drugstartoffset=20,
             drugordercancelled="No", drugname="ASPIRIN 81 MG TAB", prn="N"),
        dict(medicationid=2, patientunitstayid=300, drugorderoffset=16, drugstartoffset=20,
             drugordercancelled="Yes", drugname="HEPARIN", prn="N"),
    ],
    "infusionDrug": [
        dict(infusiondrugid=1, patientunitstayid=300, infusionoffset=100,
             drugname="Norepinephrine (mcg/min)", drugrate="5"),
    ],
    "intakeOutput": [
        dict(intakeoutputid=1, patientunitstayid=300, intakeoutputoffset=200,
             intaketotal=500, outputtotal=300, dialysistotal=0, nettotal=200,
             cellpath="flowsheet|Flowsheet Cell Labels|I&O|Intake (ml)",
             celllabel="IV", cellvaluenumeric=500),
    ],
    "diagnosis": [
        dict(diagnosisid=1, patientunitstayid=210, activeupondischarge="True",
             diagnosisoffset=20, diagnosisstring="pulmonary|respiratory failure",
             icd9code="518.81, J96.00", diagnosispriority="Primary"),
    ],
    "treatment": [],
    "respiratoryCharting": [
        dict(respchartid=1, patientunitstayid=700, respchartoffset=40,
             respchartentryoffset=40, respcharttypecat="respFlowSettings",
             respchartvaluelabel="FiO2", respchartvalue="40"),
    ],
    "microLab": [
        dict(microlabid=1, patientunitstayid=300, culturetakenoffset=300,
             culturesite="Urine, Catheter Specimen", organism="Escherichia coli",
             antibiotic="ampicillin", sensitivitylevel="Resistant"),
        dict(microlabid=2, patientunitstayid=300, culturetakenoffset=300,
             culturesite="Urine, Catheter Specimen", organism="Escherichia coli",
             antibiotic="ciprofloxacin", sensitivitylevel="Sensitive"),   # same culture
        dict(microlabid=3, patientunitstayid=300, culturetakenoffset=600,
             culturesite="Blood, Venipuncture", organism="no growth"),
        dict(microlabid=4, patientunitstayid=300, culturetakenoffset=2000,
             culturesite="Sputum, Expectorated", organism="no growth"),   # after window
    ],
}


def write_tables(folder: str, tables: dict[str, list[dict]] = TABLES, gz: bool = True,
                 drop_column: str | None = None) -> str:
  """Writes `tables` under `folder` as ``<name>.csv.gz`` (or ``.csv``), every column of
  `COLUMNS` in published order except `drop_column` (empty where a row lacks it);
  returns `folder`."""
  os.makedirs(folder, exist_ok=True)
  for name, rows in tables.items():
    cols = [c for c in COLUMNS[name] if c != drop_column]
    path = os.path.join(folder, name + (".csv.gz" if gz else ".csv"))
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="") as f:
      w = csv.writer(f)
      w.writerow(cols)
      for r in rows:
        w.writerow(["" if r.get(c) is None else r[c] for c in cols])
  return folder
