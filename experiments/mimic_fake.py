"""A generated MIMIC-IV directory in the published raw schema, at a chosen scale.

`write_fake_mimic(directory, scale=0.1)` writes the MIMIC-IV v2.2 layout that
`crl_mmnar_jax.mimic.load_mimic` reads, filled with random but internally consistent
values, for benchmarks and tests (the real database is credentialed)::

  hosp/patients  hosp/admissions  hosp/labevents  hosp/prescriptions  hosp/diagnoses_icd
  hosp/procedures_icd  hosp/d_labitems  icu/icustays  icu/chartevents  icu/d_items
  note/discharge  note/radiology                                      (.csv.gz or .csv)
  cxr/mimic-cxr-2.0.0-metadata.csv.gz  cxr/mimic-cxr-embeddings.parquet

Columns, their order and value formats are those of MIMIC-IV v2.2, MIMIC-IV-Note v2.2
and MIMIC-CXR 2.0.0: datetimes ``YYYY-MM-DD HH:MM:SS`` (shifted years 2110-2215),
``dod`` and ``chartdate`` as dates, CXR ``StudyDate`` as ``YYYYMMDD`` and ``StudyTime``
as ``HHMMSS.fff``, note ids ``<subject_id>-DS-<note_seq>``, ids in the published ranges
(subject 1xxxxxxx, hadm 2xxxxxxx, stay 3xxxxxxx, CXR study 5xxxxxxx). Real lab and
chart itemids carry values drawn around the means seen in the MIMIC-IV demo.

Sizes are linear in `scale`: at 1.0 every table has about the row count of the real
database (`FULL_SCALE`; chartevents times `chart_ratio`). Everything else is per
patient, per admission or per ICU stay, so the shapes do not change with the scale:

* 60% of patients have admissions, 2.39 on average (geometric), gaps of 0.5-30 days
  for a quarter of them (30-day readmissions); 2% of admissions end in death.
* labevents: half the rows belong to an admission (``hadm_id`` set; 10% of those drawn
  in the 12 h before ``admittime``, as ED labs are; 2% inside the stay but without
  ``hadm_id``, a documented quirk), half are outpatient (``hadm_id`` empty, times
  anywhere in the patient's timeline). Rows come in specimens: panels (BMP, CBC, ...)
  sharing a ``specimen_id`` and a ``charttime``.
* chartevents: rows per ICU stay proportional to its length, 1% of them up to 6 h
  outside the stay; the vitals are a third of the rows, the rest are other items
  (text values and numbers, as nursing documentation is).
* notes: discharge summaries (``discharge_words`` words on average; the real ones
  average about 1,700) for 77% of admissions, radiology reports (``radiology_words``)
  inside and outside admissions. Texts are assembled from a pool of clinical sentences.
* CXR: studies inside (70%) and outside admissions, 1.66 images per study; one
  embedding row (``dicom_id`` + ``cxr_dim`` float32 columns) per image.

Generation is chunked by patients (`chunk_patients` per chunk, each chunk from its own
random stream, so the output is deterministic for a seed) and streamed: every table is
appended chunk by chunk, gzip (level 1) runs on a background thread, and the memory
held is that of one chunk. At scale 0.1: 1.0 GB of gzipped files (46 million rows),
about 70 s of CPU time (2.5-3 minutes of wall time on a busy 2-core machine) and a
peak RSS under 0.8 GB.

Command line::

  python -m experiments.mimic_fake --dir=/tmp/mimic_0.1 --scale=0.1
"""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import os
import queue
import shutil
import threading
import time
from typing import Any, Sequence

import numpy as np
import polars as pl

# Row counts of the real databases: MIMIC-IV v2.2 (hosp, icu), MIMIC-IV-Note v2.2,
# MIMIC-CXR 2.0.0. `write_fake_mimic(scale=s)` aims at s times these.
FULL_SCALE = {
    "patients": 299_712,
    "admitted_patients": 180_733,
    "admissions": 431_231,
    "icustays": 73_181,
    "labevents": 118_171_367,
    "chartevents": 313_645_063,
    "prescriptions": 15_416_708,
    "diagnoses_icd": 4_756_326,
    "procedures_icd": 669_186,
    "discharge": 331_794,
    "radiology": 2_321_355,
    "cxr_studies": 227_835,
    "cxr_images": 377_110,
}

# Official column order of every table written.
COLUMNS = {
    "patients": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group",
                 "dod"],
    "admissions": ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime",
                   "admission_type", "admit_provider_id", "admission_location",
                   "discharge_location", "insurance", "language", "marital_status", "race",
                   "edregtime", "edouttime", "hospital_expire_flag"],
    "labevents": ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid",
                  "order_provider_id", "charttime", "storetime", "value", "valuenum",
                  "valueuom", "ref_range_lower", "ref_range_upper", "flag", "priority",
                  "comments"],
    "prescriptions": ["subject_id", "hadm_id", "pharmacy_id", "poe_id", "poe_seq",
                      "order_provider_id", "starttime", "stoptime", "drug_type", "drug",
                      "formulary_drug_cd", "gsn", "ndc", "prod_strength", "form_rx",
                      "dose_val_rx", "dose_unit_rx", "form_val_disp", "form_unit_disp",
                      "doses_per_24_hrs", "route"],
    "diagnoses_icd": ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    "procedures_icd": ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code",
                       "icd_version"],
    "d_labitems": ["itemid", "label", "fluid", "category"],
    "icustays": ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit",
                 "intime", "outtime", "los"],
    "chartevents": ["subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime",
                    "storetime", "itemid", "value", "valuenum", "valueuom", "warning"],
    "d_items": ["itemid", "label", "abbreviation", "linksto", "category", "unitname",
                "param_type", "lownormalvalue", "highnormalvalue"],
    "discharge": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                  "storetime", "text"],
    "radiology": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                  "storetime", "text"],
    "cxr_metadata": ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
                     "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
                     "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
                     "PatientOrientationCodeSequence_CodeMeaning"],
}

MODULE = {"patients": "hosp", "admissions": "hosp", "labevents": "hosp",
          "prescriptions": "hosp", "diagnoses_icd": "hosp", "procedures_icd": "hosp",
          "d_labitems": "hosp", "icustays": "icu", "chartevents": "icu", "d_items": "icu",
          "discharge": "note", "radiology": "note", "cxr_metadata": "cxr"}
CXR_METADATA_FILE = "mimic-cxr-2.0.0-metadata"
CXR_EMBEDDINGS_FILE = "mimic-cxr-embeddings.parquet"

DAY = 86_400
HOUR = 3_600

# ---------------------------------------------------------------------------- vocabularies

# Labs: itemid, label, fluid, category, unit, mean, sd, decimals, ref low, ref high
# (means and sds as in the MIMIC-IV demo; text-valued items have mean None).
LABS = [
    (50868, "Anion Gap", "Blood", "Chemistry", "mEq/L", 15.0, 4.3, 0, 8, 20),
    (50882, "Bicarbonate", "Blood", "Chemistry", "mEq/L", 24.9, 4.9, 0, 22, 32),
    (50902, "Chloride", "Blood", "Chemistry", "mEq/L", 101.1, 6.4, 0, 96, 108),
    (50912, "Creatinine", "Blood", "Chemistry", "mg/dL", 1.54, 1.48, 1, 0.5, 1.2),
    (50931, "Glucose", "Blood", "Chemistry", "mg/dL", 144.0, 76.0, 0, 70, 100),
    (50971, "Potassium", "Blood", "Chemistry", "mEq/L", 4.19, 0.63, 1, 3.3, 5.1),
    (50983, "Sodium", "Blood", "Chemistry", "mEq/L", 137.5, 5.3, 0, 133, 145),
    (51006, "Urea Nitrogen", "Blood", "Chemistry", "mg/dL", 27.9, 23.8, 0, 6, 20),
    (51221, "Hematocrit", "Blood", "Hematology", "%", 30.8, 6.6, 1, 36, 48),
    (51222, "Hemoglobin", "Blood", "Hematology", "g/dL", 10.06, 2.2, 1, 12, 16),
    (51248, "MCH", "Blood", "Hematology", "pg", 29.9, 2.8, 1, 27, 32),
    (51249, "MCHC", "Blood", "Hematology", "g/dL", 32.3, 1.5, 1, 31, 37),
    (51250, "MCV", "Blood", "Hematology", "fL", 91.7, 7.8, 0, 82, 98),
    (51265, "Platelet Count", "Blood", "Hematology", "K/uL", 209.6, 140.5, 0, 150, 440),
    (51277, "RDW", "Blood", "Hematology", "%", 15.9, 2.6, 1, 10.5, 15.5),
    (51279, "Red Blood Cells", "Blood", "Hematology", "m/uL", 3.40, 0.79, 2, 4.2, 5.4),
    (51301, "White Blood Cells", "Blood", "Hematology", "K/uL", 10.5, 6.0, 1, 4.0, 11.0),
    (52172, "RDW-SD", "Blood", "Hematology", "fL", 54.5, 10.7, 1, 35.1, 46.3),
    (50893, "Calcium, Total", "Blood", "Chemistry", "mg/dL", 8.57, 0.79, 1, 8.4, 10.3),
    (50960, "Magnesium", "Blood", "Chemistry", "mg/dL", 2.04, 0.37, 1, 1.6, 2.6),
    (50970, "Phosphate", "Blood", "Chemistry", "mg/dL", 3.67, 1.43, 1, 2.7, 4.5),
    (51237, "INR(PT)", "Blood", "Hematology", None, 1.50, 0.73, 1, 0.9, 1.1),
    (51274, "PT", "Blood", "Hematology", "sec", 16.4, 8.1, 1, 9.4, 12.5),
    (51275, "PTT", "Blood", "Hematology", "sec", 42.4, 24.1, 1, 25, 36.5),
    (50861, "Alanine Aminotransferase (ALT)", "Blood", "Chemistry", "IU/L", 100.0, 460.0,
     0, 0, 40),
    (50863, "Alkaline Phosphatase", "Blood", "Chemistry", "IU/L", 112.4, 74.8, 0, 35, 105),
    (50878, "Asparate Aminotransferase (AST)", "Blood", "Chemistry", "IU/L", 118.3, 594.0,
     0, 0, 40),
    (50885, "Bilirubin, Total", "Blood", "Chemistry", "mg/dL", 1.53, 3.6, 1, 0, 1.5),
    (52033, "Specimen Type", "Blood", "Blood Gas", None, None, None, 0, None, None),
    (50802, "Base Excess", "Blood", "Blood Gas", "mEq/L", -2.0, 5.8, 0, None, None),
    (50804, "Calculated Total CO2", "Blood", "Blood Gas", "mEq/L", 24.2, 6.1, 0, 21, 30),
    (50818, "pCO2", "Blood", "Blood Gas", "mm Hg", 41.4, 11.4, 0, 35, 45),
    (50820, "pH", "Blood", "Blood Gas", "units", 7.36, 0.097, 2, 7.35, 7.45),
    (50821, "pO2", "Blood", "Blood Gas", "mm Hg", 129.5, 96.7, 0, 85, 105),
    (50813, "Lactate", "Blood", "Blood Gas", "mmol/L", 2.41, 1.93, 1, 0.5, 2.0),
    (51146, "Basophils", "Blood", "Hematology", "%", 0.8, 1.6, 1, 0, 1),
    (51200, "Eosinophils", "Blood", "Hematology", "%", 2.3, 3.2, 1, 1, 4),
    (51244, "Lymphocytes", "Blood", "Hematology", "%", 24.6, 21.3, 1, 18, 42),
    (51254, "Monocytes", "Blood", "Hematology", "%", 8.4, 7.5, 1, 2, 11),
    (51256, "Neutrophils", "Blood", "Hematology", "%", 59.3, 22.2, 1, 50, 70),
    (50934, "H", "Blood", "Chemistry", None, 19.4, 52.0, 0, None, None),
    (50947, "I", "Blood", "Chemistry", None, 0.9, 1.0, 0, None, None),
    (51678, "L", "Blood", "Chemistry", None, 14.5, 15.0, 0, None, None),
]
LAB_TEXT_VALUES = {52033: ["ART.", "VEN.", "MIX.", "CENTRAL VENOUS."]}
# Specimens: (weight, itemids sharing one specimen_id and charttime).
LAB_PANELS = [
    (0.28, [50868, 50882, 50902, 50912, 50931, 50971, 50983, 51006]),           # BMP
    (0.25, [51221, 51222, 51248, 51249, 51250, 51265, 51277, 51279, 51301, 52172]),  # CBC
    (0.13, [50893, 50960, 50970]),
    (0.08, [51237, 51274, 51275]),                                            # coagulation
    (0.06, [50861, 50863, 50878, 50885]),                                      # liver
    (0.05, [52033, 50802, 50804, 50818, 50820, 50821]),                        # blood gas
    (0.03, [50813]),                                                           # lactate
    (0.05, [51146, 51200, 51244, 51254, 51256]),                               # differential
    (0.03, [50934, 50947, 51678]),                                             # HIL indices
    (0.04, [-1]),                           # one of the rare itemids (`RARE_LAB_ITEMS`)
]
RARE_LAB_ITEMS = np.array(sorted(set(range(50800, 53200, 7)) -
                                 {lab[0] for lab in LABS}), dtype=np.int64)
LAB_COMMENTS = ["___", "HEMOLYSIS FALSELY ELEVATES K", "VERIFIED BY REPLICATE ANALYSIS.",
                "IF FASTING, 70-100 NORMAL, >125 PROVISIONAL DIABETES.",
                "NOTIFIED ___ AT 10:15AM."]

# Chart items: itemid, label, abbreviation, category, unit, mean, sd, decimals, weight,
# normal low, normal high (text items: mean None, values from CHART_TEXT_VALUES).
CHART_ITEMS = [
    (220045, "Heart Rate", "HR", "Routine Vital Signs", "bpm", 91, 18.7, 0, 13913, 60, 100),
    (220210, "Respiratory Rate", "RR", "Respiratory", "insp/min", 20, 5.6, 0, 13913, 12, 20),
    (220277, "O2 saturation pulseoxymetry", "SpO2", "Respiratory", "%", 96.8, 2.96, 0,
     13540, 90, 100),
    (220179, "Non Invasive Blood Pressure systolic", "NBPs", "Routine Vital Signs", "mmHg",
     115, 21.8, 0, 8347, 90, 140),
    (220180, "Non Invasive Blood Pressure diastolic", "NBPd", "Routine Vital Signs",
     "mmHg", 63, 14.9, 0, 8349, 60, 90),
    (220181, "Non Invasive Blood Pressure mean", "NBPm", "Routine Vital Signs", "mmHg",
     75, 15.2, 0, 8342, 60, 110),
    (220050, "Arterial Blood Pressure systolic", "ABPs", "Routine Vital Signs", "mmHg",
     114, 20.1, 0, 5525, 90, 140),
    (220051, "Arterial Blood Pressure diastolic", "ABPd", "Routine Vital Signs", "mmHg",
     59, 10.9, 0, 5524, 60, 90),
    (220052, "Arterial Blood Pressure mean", "ABPm", "Routine Vital Signs", "mmHg", 78,
     20.1, 0, 5560, 60, 110),
    (223761, "Temperature Fahrenheit", "Temperature F", "Routine Vital Signs", "°F", 98.6,
     1.08, 1, 3379, 97, 100.4),
    (223762, "Temperature Celsius", "Temperature C", "Routine Vital Signs", "°C", 37.0,
     0.6, 1, 600, 36, 38),
    (220739, "GCS - Eye Opening", "GCS - Eye Opening", "Neurological", None, 3.25, 1.05, 0,
     3274, None, None),
    (223900, "GCS - Verbal Response", "GCS - Verbal Response", "Neurological", None, 3.0,
     1.87, 0, 3266, None, None),
    (223901, "GCS - Motor Response", "GCS - Motor Response", "Neurological", None, 5.26,
     1.45, 0, 3251, None, None),
    (220621, "Glucose (serum)", "Glucose (serum)", "Labs", "mg/dL", 140, 50, 0, 1500, 70,
     100),
    (225664, "Glucose finger stick (range 70-100)", "Glucose FS", "Routine Vital Signs",
     "mg/dL", 145, 48, 0, 2000, 70, 100),
    (224639, "Daily Weight", "Daily Weight", "General", "kg", 82, 22, 1, 300, None, None),
    (226512, "Admission Weight (Kg)", "Admit Wt", "General", "kg", 82, 22, 1, 150, None,
     None),
    (227969, "Safety Measures", "Safety Measures", "Treatments", None, None, None, 0,
     19330, None, None),
    (220048, "Heart Rhythm", "Heart Rhythm", "Routine Vital Signs", None, None, None, 0,
     12460, None, None),
    (224641, "Alarms On", "Alarms On", "Alarms", None, None, None, 0, 3020, None, None),
    (223835, "Inspired O2 Fraction", "FiO2", "Respiratory", None, 47, 17, 0, 1746, None,
     None),
]
CHART_TEXT_VALUES = {
    227969: ["Bed locked in low position", "Siderails up x 2", "Call light within reach",
             "Seizure precautions"],
    220048: ["SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "AF (Atrial Fibrillation)",
             "SB (Sinus Bradycardia)", "Paced"],
    224641: ["Yes", "No"],
}
# Other charted items (nursing documentation, ventilator settings ...): text or number.
N_OTHER_CHART_ITEMS = 240
OTHER_CHART_SHARE = 0.65
OTHER_CHART_TEXT = ["WNL", "Within Normal Limits", "Yes", "No", "Clear", "Diminished",
                    "Intact", "Dry", "Pink", "Warm", "Normal", "Absent", "Present",
                    "Oriented x3", "Sedated", "Assist", "Unable to assess", "None"]

# Prescriptions: drug, formulary_drug_cd, gsn, ndc, prod_strength, dose_val_rx,
# dose_unit_rx, form_val_disp, form_unit_disp, doses_per_24_hrs, route, drug_type, weight
DRUGS = [
    ("Sodium Chloride 0.9%  Flush", "NACLFLUSH", None, "0", "10 mL Syringe", "3", "mL",
     "0.3", "SYR", 3, "IV", "MAIN", 9),
    ("Heparin", "HEPA5I", "006549", "63323026201", "5000 Unit / mL- 1mL Vial", "5000",
     "UNIT", "1", "mL", 3, "SC", "MAIN", 7),
    ("Acetaminophen", "ACET325", "004489", "00904198261", "325mg Tablet", "650", "mg", "2",
     "TAB", 4, "PO/NG", "MAIN", 7),
    ("Docusate Sodium", "DOCU100", "003009", "00904224461", "100mg Capsule", "100", "mg",
     "1", "CAP", 2, "PO", "MAIN", 5),
    ("Senna", "SENN187", "019964", "00904516561", "1 Tablet", "8.6", "mg", "1", "TAB", 2,
     "PO/NG", "MAIN", 5),
    ("Insulin", "GLAR100I", "051483", "00088222033", "100 Units / mL - 10 mL Vial", "0",
     "UNIT", "0", "mL", 4, "SC", "MAIN", 5),
    ("Ondansetron", "ONDA2I", "025880", "00409475503", "2mg/mL-2mL", "4", "mg", "2", "mL",
     None, "IV", "MAIN", 4),
    ("Bisacodyl", "BISA10R", "002944", "00713010950", "10mg Suppository", "10", "mg", "1",
     "SUPP", 1, "PR", "MAIN", 4),
    ("Polyethylene Glycol", "PEG17", "025424", "66689001501", "1 Packet", "17", "g", "1",
     "PKT", 1, "PO/NG", "MAIN", 4),
    ("Furosemide", "FURO40", "008209", "51079007320", "40mg Tablet", "40", "mg", "1",
     "TAB", 1, "PO/NG", "MAIN", 3),
    ("Metoprolol Tartrate", "METO25", "006634", "51079025520", "25mg Tablet", "25", "mg",
     "1", "TAB", 2, "PO/NG", "MAIN", 3),
    ("Potassium Chloride", "KCL20P", "001255", "00245004101", "20mEq Packet", "40", "mEq",
     "2", "PKT", 1, "PO/NG", "MAIN", 3),
    ("Magnesium Sulfate", "MAG2PM", "016591", "00409672923", "2 g / 50 mL Premix Bag", "2",
     "gm", "1", "BAG", 1, "IV", "MAIN", 3),
    ("Pantoprazole", "PANT40", "027462", "00008084199", "40mg Tablet", "40", "mg", "1",
     "TAB", 1, "PO", "MAIN", 3),
    ("Oxycodone (Immediate Release)", "OXYC5", "004225", "00406055262", "5mg Tablet", "5",
     "mg", "1", "TAB", None, "PO/NG", "MAIN", 3),
    ("Vancomycin", "VANC1F", "009330", "00338355248", "1 g Frozen Bag", "1000", "mg", "1",
     "BAG", 2, "IV", "MAIN", 2),
    ("Piperacillin-Tazobactam", "PIPT4.5F", "016979", "00206885410", "4.5 g Frozen Bag",
     "4.5", "g", "1", "BAG", 3, "IV", "MAIN", 2),
    ("Atorvastatin", "ATOR40", "029968", "00071015623", "40mg Tablet", "40", "mg", "1",
     "TAB", 1, "PO/NG", "MAIN", 2),
    ("Aspirin", "ASA81", "004380", "00904404073", "81mg Tablet", "81", "mg", "1", "TAB", 1,
     "PO/NG", "MAIN", 2),
    ("Lorazepam", "LORA1I", "003757", "00641604401", "2mg/mL Vial", "1", "mg", "0.5", "mL",
     None, "IV", "MAIN", 1),
    ("NS", "NS1000", None, "0", "1000mL Bag", "1000", "mL", "1", "BAG", 1, "IV", "BASE", 4),
    ("D5W", "D5W250", None, "0", "250 mL Bag", "250", "mL", "1", "BAG", 1, "IV", "BASE", 2),
    ("Potassium Chloride", "KCLBASE2", "001265", "0", "2 mEq / mL", "20", "mEq", "10",
     "mL", 1, "IV", "ADDITIVE", 1),
]
N_RARE_DRUGS = 2000
RARE_DRUG_SHARE = 0.12
DRUG_FORMS = ["TAB", "CAP", "mL", "VIAL", "BAG"]
ROUTES = ["PO", "IV", "PO/NG", "SC", "IH", "TP", "IM", "PR"]

ICD9_DX = ["4019", "2724", "53081", "25000", "41401", "4280", "42731", "5849", "2859",
           "V5861", "3051", "311", "2449", "5990", "486", "0389", "99591", "78552",
           "51881", "V1582", "40390", "5859", "V4582", "2762", "2761", "49390", "2875"]
ICD10_DX = ["I10", "E785", "Z87891", "K219", "E119", "I2510", "I5033", "I4891", "N179",
            "D649", "F329", "E039", "Z7901", "N390", "J189", "A419", "R6520", "R6521",
            "J9601", "F17210", "Z794", "E872", "E871", "J449", "D696", "G4733", "F419"]
ICD9_PX = ["3893", "9604", "3995", "9671", "9904", "3491", "4513", "8856", "0040", "9672"]
ICD10_PX = ["02HV33Z", "0BH17EZ", "5A1955Z", "5A1945Z", "30233N1", "0DJ08ZZ", "3E0G76Z",
            "B2111ZZ", "0W9930Z", "5A1D70Z"]
N_RARE_CODES = 3000

ADMISSION_TYPES = [("EW EMER.", 149_413, True), ("EU OBSERVATION", 94_776, True),
                   ("OBSERVATION ADMIT", 52_668, True), ("URGENT", 47_930, False),
                   ("SURGICAL SAME DAY ADMISSION", 34_231, False),
                   ("DIRECT OBSERVATION", 19_991, False), ("DIRECT EMER.", 19_554, False),
                   ("ELECTIVE", 10_565, False), ("AMBULATORY OBSERVATION", 7_254, False)]
ADMISSION_LOCATIONS = ["EMERGENCY ROOM", "PHYSICIAN REFERRAL", "TRANSFER FROM HOSPITAL",
                       "WALK-IN/SELF REFERRAL", "CLINIC REFERRAL", "PROCEDURE SITE",
                       "PACU", "TRANSFER FROM SKILLED NURSING FACILITY",
                       "INFORMATION NOT AVAILABLE", "AMBULATORY SURGERY TRANSFER", None]
ADMISSION_LOCATION_P = [0.54, 0.2, 0.08, 0.04, 0.03, 0.03, 0.02, 0.01, 0.01, 0.01, 0.03]
DISCHARGE_LOCATIONS = ["HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY", "REHAB",
                       "CHRONIC/LONG TERM ACUTE CARE", "HOSPICE", "AGAINST ADVICE",
                       "ACUTE HOSPITAL", "PSYCH FACILITY", "OTHER FACILITY",
                       "ASSISTED LIVING", None]
DISCHARGE_LOCATION_P = [0.37, 0.2, 0.11, 0.03, 0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
                        0.21]
RACES = [("WHITE", 0.62), ("BLACK/AFRICAN AMERICAN", 0.14), ("OTHER", 0.04),
         ("UNKNOWN", 0.05), ("WHITE - OTHER EUROPEAN", 0.02),
         ("HISPANIC/LATINO - PUERTO RICAN", 0.02), ("ASIAN", 0.015),
         ("ASIAN - CHINESE", 0.015), ("UNABLE TO OBTAIN", 0.01),
         ("BLACK/CAPE VERDEAN", 0.01), ("HISPANIC OR LATINO", 0.01),
         ("WHITE - RUSSIAN", 0.01), ("PATIENT DECLINED TO ANSWER", 0.01),
         ("BLACK/CARIBBEAN ISLAND", 0.01), ("ASIAN - SOUTH EAST ASIAN", 0.01)]
MARITAL = ["MARRIED", "SINGLE", "WIDOWED", "DIVORCED", None]
MARITAL_P = [0.42, 0.33, 0.1, 0.07, 0.08]
CAREUNITS = ["Medical Intensive Care Unit (MICU)",
             "Cardiac Vascular Intensive Care Unit (CVICU)",
             "Medical/Surgical Intensive Care Unit (MICU/SICU)",
             "Surgical Intensive Care Unit (SICU)", "Trauma SICU (TSICU)",
             "Coronary Care Unit (CCU)", "Neuro Intermediate",
             "Neuro Surgical Intensive Care Unit (Neuro SICU)", "Neuro Stepdown"]
CAREUNIT_P = [0.21, 0.16, 0.17, 0.15, 0.12, 0.11, 0.04, 0.02, 0.02]
VERSIONS = {
    "2.2": dict(groups=["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019"],
                insurance=(["Other", "Medicare", "Medicaid"], [0.5, 0.4, 0.1]),
                language=(["ENGLISH", "?"], [0.9, 0.1])),
    "3.1": dict(groups=["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019",
                        "2020 - 2022"],
                insurance=(["Medicare", "Private", "Medicaid", "Other", "No charge"],
                           [0.42, 0.35, 0.17, 0.05, 0.01]),
                language=(["English", "Spanish", "Russian", "Chinese", "Other", None],
                          [0.88, 0.04, 0.02, 0.02, 0.03, 0.01])),
}

CXR_PROCEDURES = [("CHEST (PA AND LAT)", 0.45), ("CHEST (PORTABLE AP)", 0.45),
                  ("CHEST (PRE-OP PA AND LAT)", 0.04), ("CHEST (SINGLE VIEW)", 0.06)]
CXR_SIZES = [(3056, 2544), (2544, 3056), (2539, 3050), (3050, 2539), (2048, 2500)]

# Sentences the notes are assembled from ("___" is MIMIC's de-identification mark).
DISCHARGE_SENTENCES = [
    "Patient is a ___ year old woman with a history of hypertension and diabetes who "
    "presents with worsening shortness of breath over the past three days.",
    "He was in his usual state of health until ___ when he developed substernal chest "
    "pain radiating to the left arm.",
    "In the ED, initial vitals were notable for tachycardia and a low grade fever.",
    "Labs were notable for an elevated white count and a creatinine above baseline.",
    "A chest radiograph showed a right lower lobe opacity concerning for pneumonia.",
    "She was started on broad spectrum antibiotics and given two liters of fluid.",
    "Blood cultures were drawn prior to antibiotics and remained negative at discharge.",
    "The patient was admitted to the medicine service for further management.",
    "Troponins were trended and peaked at ___ before downtrending.",
    "Cardiology was consulted and recommended medical management with aspirin and a "
    "statin.",
    "His home metoprolol was held in the setting of hypotension and restarted on "
    "hospital day two.",
    "Acute kidney injury was felt to be prerenal and resolved with hydration.",
    "Her potassium was repleted and her electrolytes were monitored daily.",
    "Diuresis was achieved with intravenous furosemide with good urine output.",
    "The patient was transferred to the ICU for hypoxemia requiring high flow oxygen.",
    "She was weaned to room air and remained stable on the floor.",
    "Physical therapy evaluated the patient and recommended discharge to rehab.",
    "Insulin sliding scale was continued and blood sugars were well controlled.",
    "A CT of the abdomen and pelvis showed no acute intra abdominal process.",
    "GI was consulted for the drop in hemoglobin and an endoscopy was performed.",
    "The patient tolerated a regular diet and ambulated without assistance.",
    "Pain was controlled with acetaminophen and low dose oxycodone as needed.",
    "He was counseled on smoking cessation and given nicotine replacement.",
    "Anticoagulation with heparin was started for new atrial fibrillation.",
    "Echocardiogram showed a preserved ejection fraction without wall motion "
    "abnormalities.",
    "Mental status returned to baseline after treatment of the urinary tract infection.",
    "Vital signs at discharge were stable and the patient was afebrile.",
    "The patient will follow up with her primary care physician within one week.",
    "Please return to the emergency department if you develop chest pain, fever or "
    "shortness of breath.",
    "Take all medications as prescribed and weigh yourself every morning.",
    "Lungs were clear to auscultation bilaterally without wheezes or crackles.",
    "Abdomen soft, non tender, non distended, with normal bowel sounds.",
    "Extremities warm and well perfused with trace bilateral lower extremity edema.",
    "Neuro: alert and oriented times three, moving all extremities.",
    "WBC ___ HGB ___ HCT ___ PLT ___ NA ___ K ___ CL ___ HCO3 ___ BUN ___ CREAT ___.",
]
RADIOLOGY_SENTENCES = [
    "The lungs are clear without focal consolidation, pleural effusion or pneumothorax.",
    "Heart size is normal and the mediastinal contours are unremarkable.",
    "There is a new right lower lobe opacity which may reflect pneumonia or aspiration.",
    "Small bilateral pleural effusions with adjacent atelectasis.",
    "Moderate pulmonary vascular congestion and mild interstitial edema.",
    "An endotracheal tube terminates about 4 cm above the carina.",
    "A right internal jugular central venous catheter ends in the mid SVC.",
    "An enteric tube courses below the diaphragm and out of view.",
    "No acute osseous abnormality is seen.",
    "Compared to the prior study there is no significant interval change.",
    "Stable moderate cardiomegaly.",
    "Mild degenerative changes of the thoracic spine.",
    "No evidence of free intraperitoneal air.",
    "The liver is normal in echotexture without focal lesion.",
    "There is no intracranial hemorrhage, mass effect or midline shift.",
]
INDICATIONS = ["shortness of breath", "fever", "chest pain", "hypoxia", "line placement",
               "eval for pneumonia", "abdominal pain", "fall, eval for fracture"]
CHIEF_COMPLAINTS = ["Shortness of breath", "Chest pain", "Abdominal pain", "Fever",
                    "Altered mental status", "Fall", "Weakness", "Nausea and vomiting",
                    "Syncope", "Cough", "Hypotension", "GI bleed"]
SERVICES = ["MEDICINE", "SURGERY", "CARDIOTHORACIC", "NEUROLOGY", "ORTHOPAEDICS"]


# ------------------------------------------------------------------------------- helpers

def _calibration() -> dict[str, float]:
  """Means of the random processes that row counts are proportional to (admission and
  ICU stay lengths), by simulation with a fixed seed: counts per admission are drawn
  as target × length / mean length."""
  return _calibration_cached()


@functools.lru_cache(maxsize=1)
def _calibration_cached() -> dict[str, float]:
  rng = np.random.default_rng(20_240_601)
  n = 400_000
  icu = rng.random(n) < P_ICU
  los = _los_days(rng, icu)
  second = rng.random(n) < P_SECOND_ICU
  adm = np.zeros(n, np.int64)
  disch = (los * DAY).astype(np.int64)
  stays = _icu_stays(rng, np.flatnonzero(icu), second[icu], adm, disch)
  return {"los_days": float(los.mean()),
          "icu_days": float(((stays["out"] - stays["in"]) / DAY).mean())}


P_ADMITTED = FULL_SCALE["admitted_patients"] / FULL_SCALE["patients"]
ADMISSIONS_PER_ADMITTED = FULL_SCALE["admissions"] / FULL_SCALE["admitted_patients"]
P_ICU = 0.155
P_SECOND_ICU = FULL_SCALE["icustays"] / FULL_SCALE["admissions"] / P_ICU - 1.0
LAB_IN_SHARE = 0.5          # share of lab rows with a hadm_id
RADIOLOGY_IN_SHARE = 0.55
CXR_IN_SHARE = 0.7
P_DISCHARGE_NOTE = FULL_SCALE["discharge"] / FULL_SCALE["admissions"]
IMAGES_PER_STUDY = FULL_SCALE["cxr_images"] / FULL_SCALE["cxr_studies"]


def _los_days(rng: np.random.Generator, icu: np.ndarray) -> np.ndarray:
  los = rng.lognormal(np.log(3.0), 0.85, len(icu))
  return np.maximum(np.where(icu, 1.8 * los + 1.0, los), 0.1)


def _icu_stays(rng, adm_idx, second, admit, disch) -> dict[str, np.ndarray]:
  """One ICU stay inside each admission of `adm_idx`, a second one after it where
  `second`: returns admission index, intime, outtime (seconds), sorted."""
  a0, d0 = admit[adm_idx], disch[adm_idx]
  in1 = a0 + ((d0 - a0) * rng.uniform(0.0, 0.35, len(adm_idx))).astype(np.int64)
  out1 = in1 + ((d0 - in1) * rng.uniform(0.25, 0.75, len(adm_idx))).astype(np.int64)
  k = np.flatnonzero(second)
  in2 = out1[k] + ((d0[k] - out1[k]) * rng.uniform(0.1, 0.5, len(k))).astype(np.int64)
  out2 = in2 + ((d0[k] - in2) * rng.uniform(0.2, 0.8, len(k))).astype(np.int64)
  adm = np.concatenate([adm_idx, adm_idx[k]])
  tin = np.concatenate([in1, in2]) // 60 * 60
  tout = np.maximum(np.concatenate([out1, out2]) // 60 * 60, tin + 600)
  order = np.lexsort((tin, adm))
  return {"adm": adm[order], "in": tin[order], "out": tout[order]}


def _pick(rng, values: Sequence, n: int, p: Sequence[float] | None = None) -> pl.Series:
  """n draws from `values` (None = null) as a polars Series."""
  p = None if p is None else np.asarray(p, float) / np.sum(p)
  idx = rng.choice(len(values), size=n, p=p)
  return pl.Series(list(values)).gather(idx)


def _ts(secs: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
  """Epoch seconds -> polars Datetime (null where `null`)."""
  arr = np.asarray(secs, np.int64).astype("datetime64[s]").astype("datetime64[ms]")
  if null is not None:
    arr = arr.copy()
    arr[null] = np.datetime64("NaT")
  return pl.Series(arr)


def _nullable_int(x: np.ndarray, null: np.ndarray) -> pl.Series:
  return pl.Series(np.where(null, np.nan, x.astype(np.float64))).fill_nan(None).cast(pl.Int64)


def _fmt_number(values: pl.Expr, decimals: pl.Expr) -> pl.Expr:
  """A number as MIMIC's text `value` column holds it: integer or 1-2 decimals."""
  return (pl.when(decimals == 0).then(values.round(0).cast(pl.Int64).cast(pl.Utf8))
          .when(decimals == 1).then(values.round(1).cast(pl.Utf8))
          .otherwise(values.round(2).cast(pl.Utf8)))


def _year_start(years: np.ndarray) -> np.ndarray:
  return (np.asarray(years) - 1970).astype("datetime64[Y]").astype("datetime64[s]").astype(
      np.int64)


def _rank_in_group(group: np.ndarray) -> np.ndarray:
  """1-based position of each row within its run of equal (sorted) `group` values."""
  n = len(group)
  if n == 0:
    return np.zeros(0, np.int64)
  start = np.r_[True, group[1:] != group[:-1]]
  idx = np.arange(n)
  first = np.maximum.accumulate(np.where(start, idx, 0))
  return idx - first + 1


def _group_cumsum(x: np.ndarray, first: np.ndarray) -> np.ndarray:
  """Cumulative sum of `x` restarting where `first` (first[0] must be True)."""
  cs = np.cumsum(x)
  start = np.maximum.accumulate(np.where(first, np.arange(len(x)), 0))
  return cs - (cs[start] - x[start])


def _id_block(rng, start: int, n: int, stride: int, base: int) -> np.ndarray:
  """n unique ids base + (start..start+n-1)·stride + jitter, shuffled."""
  ids = base + (start + np.arange(n, dtype=np.int64)) * stride
  if stride > 1:
    ids += rng.integers(0, stride, n)
  return rng.permutation(ids)


@functools.lru_cache(maxsize=1)
def _providers() -> np.ndarray:
  rng = np.random.default_rng(7)
  chars = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
  digits = rng.integers(0, 10, (3000, 3))
  tail = chars[rng.integers(0, 36, (3000, 2))]
  return np.array([f"P{a}{b}{c}{x}{y}" for (a, b, c), (x, y) in zip(digits, tail)])


@functools.lru_cache(maxsize=1)
def _rare_codes() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(11)
  letters = np.array(list("ABCDEFGHIJKLMNOPQRSTVWXYZ"))
  icd9 = np.array([str(v) for v in rng.integers(100, 99_999, N_RARE_CODES)])
  icd10 = np.array([f"{l}{v}" for l, v in zip(letters[rng.integers(0, 25, N_RARE_CODES)],
                                              rng.integers(10, 9_999, N_RARE_CODES))])
  return {"icd9": icd9, "icd10": icd10}


def _codes(rng, common: list[str], rare: np.ndarray, n: int) -> np.ndarray:
  """Zipf-like weights over the common codes, 40% of draws from the rare ones."""
  w = 1.0 / np.arange(1, len(common) + 1)
  out = np.asarray(common, dtype=object)[rng.choice(len(common), n, p=w / w.sum())]
  rare_rows = rng.random(n) < 0.4
  out[rare_rows] = rare[rng.integers(0, len(rare), int(rare_rows.sum()))]
  return out


def _words_per_sentence(sentences: list[str]) -> float:
  return float(np.mean([len(x.split()) for x in sentences]))


def _texts(rng, sentences: list[str], n_sentences: np.ndarray, sections: list[str],
           heads: list[str]) -> list[str]:
  """One text per entry of `n_sentences`: `heads[i]`, then the sentences split evenly
  across `sections` (each a heading line)."""
  pool = np.asarray(sentences, dtype=object)
  picks = pool[rng.integers(0, len(pool), int(n_sentences.sum()))]
  out, o = [], 0
  k = len(sections)
  for head, m in zip(heads, n_sentences):
    parts = [head]
    per = -(-int(m) // k)
    for s, title in enumerate(sections):
      chunk = picks[o + s * per: o + min(m, (s + 1) * per)]
      parts.append(f"{title}:\n{' '.join(chunk)}\n \n")
    out.append("".join(parts))
    o += int(m)
  return out


# ------------------------------------------------------------------------------ the writer

class _Writer:
  """Appends DataFrames to CSV files (gzip level 1 when `compress`). CSV encoding runs
  in the caller's thread; compression and disk writes on one background thread, with at
  most `depth` encoded chunks waiting, so memory stays bounded."""

  def __init__(self, compress: bool, depth: int = 3):
    self.compress = compress
    self._files: dict[str, Any] = {}
    self._raw: dict[str, Any] = {}
    self._columns: dict[str, list[str]] = {}
    self.paths: dict[str, str] = {}
    self.rows: dict[str, int] = {}
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._error: BaseException | None = None
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def open(self, table: str, path: str, columns: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    raw = open(path, "wb")
    # mtime=0: the same arguments give byte-identical files.
    self._files[table] = (gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0)
                          if self.compress else raw)
    self._raw[table] = raw
    self._columns[table] = columns
    self.paths[table] = path
    self.rows[table] = 0
    header = (",".join(columns) + "\n").encode()
    self._queue.put((table, header))

  def write(self, table: str, df: pl.DataFrame) -> None:
    if self._error is not None:
      raise self._error
    if not len(df):
      return
    buf = io.BytesIO()
    df.select(self._columns[table]).write_csv(
        buf, include_header=False, datetime_format="%Y-%m-%d %H:%M:%S",
        date_format="%Y-%m-%d")
    self.rows[table] += len(df)
    self._queue.put((table, buf.getvalue()))

  def _run(self) -> None:
    while True:
      item = self._queue.get()
      if item is None:
        return
      if self._error is None:
        try:
          self._files[item[0]].write(item[1])
        except BaseException as e:      # reported by the next write() or close()
          self._error = e

  def close(self) -> None:
    self._queue.put(None)
    self._thread.join()
    for table, f in self._files.items():
      f.close()
      self._raw[table].close()
    if self._error is not None:
      raise self._error


# ------------------------------------------------------------------------- one chunk

def _chunk(rng: np.random.Generator, first_patient: int, n: int, state: dict,
           opts: dict) -> dict[str, pl.DataFrame]:
  """Every table's rows for patients first_patient .. first_patient + n - 1."""
  cal = _calibration()
  vinfo = VERSIONS[opts["version"]]
  out: dict[str, pl.DataFrame] = {}
  providers = _providers()

  # ---- patients
  subject = (10_000_000 + (first_patient + np.arange(n, dtype=np.int64)) * state["stride"]
             + rng.integers(0, state["stride"], n))
  anchor_year = rng.integers(2110, 2209, n)
  t0 = _year_start(anchor_year)
  n_groups = len(vinfo["groups"])
  group = rng.integers(0, n_groups, n)
  admitted = rng.random(n) < P_ADMITTED
  n_adm = np.where(admitted, rng.geometric(1.0 / ADMISSIONS_PER_ADMITTED, n), 0)

  # ---- admissions
  A = int(n_adm.sum())
  pat = np.repeat(np.arange(n), n_adm)
  first = np.r_[True, pat[1:] != pat[:-1]] if A else np.zeros(0, bool)
  last = np.r_[pat[1:] != pat[:-1], True] if A else np.zeros(0, bool)
  icu = rng.random(A) < P_ICU
  los = _los_days(rng, icu)
  gap = np.where(rng.random(A) < 0.25, rng.uniform(0.5, 30.0, A), rng.exponential(400.0, A))
  inc = np.where(first, rng.uniform(0.0, 3 * 365.0, A), np.roll(los, 1) + gap)
  admit_day = _group_cumsum(inc, first) if A else np.zeros(0)
  admit = t0[pat] + (admit_day * DAY).astype(np.int64) // 60 * 60
  disch = admit + (los * DAY).astype(np.int64) // 60 * 60
  disch = np.maximum(disch, admit + 3600)
  hadm = _id_block(rng, state["hadm"], A, state["hadm_stride"], 20_000_000)
  state["hadm"] += A
  dies_in_hospital = rng.random(n) < 0.045
  expire = last & dies_in_hospital[pat]
  ad_type_i = rng.choice(len(ADMISSION_TYPES), A,
                         p=np.array([t[1] for t in ADMISSION_TYPES]) / sum(
                             t[1] for t in ADMISSION_TYPES))
  ed = np.array([t[2] for t in ADMISSION_TYPES])[ad_type_i] & (rng.random(A) < 0.85)
  edreg = admit - rng.integers(1 * HOUR, 12 * HOUR, A) // 60 * 60
  edout = admit + rng.integers(0, 2 * HOUR, A) // 60 * 60
  dloc = _pick(rng, DISCHARGE_LOCATIONS, A, DISCHARGE_LOCATION_P)
  dloc = pl.select(pl.when(pl.Series(expire)).then(pl.lit("DIED")).otherwise(dloc)).to_series()
  out["admissions"] = pl.DataFrame({
      "subject_id": subject[pat], "hadm_id": hadm, "admittime": _ts(admit),
      "dischtime": _ts(disch), "deathtime": _ts(disch, ~expire),
      "admission_type": pl.Series([t[0] for t in ADMISSION_TYPES]).gather(ad_type_i),
      "admit_provider_id": pl.Series(providers[rng.integers(0, len(providers), A)]),
      "admission_location": _pick(rng, ADMISSION_LOCATIONS, A, ADMISSION_LOCATION_P),
      "discharge_location": dloc,
      "insurance": _pick(rng, vinfo["insurance"][0], A, vinfo["insurance"][1]),
      "language": _pick(rng, vinfo["language"][0], A, vinfo["language"][1]),
      "marital_status": _pick(rng, MARITAL, A, MARITAL_P),
      "race": _pick(rng, [r[0] for r in RACES], A, [r[1] for r in RACES]),
      "edregtime": _ts(edreg, ~ed), "edouttime": _ts(edout, ~ed),
      "hospital_expire_flag": expire.astype(np.int64),
  })

  # dod: in-hospital deaths, 13% of admitted patients within a year of their last
  # discharge, 3% of the others.
  last_disch = np.zeros(n, np.int64)
  last_disch[pat[last]] = disch[last]
  dod_secs = np.where(admitted, last_disch + rng.integers(1, 365, n) * DAY,
                      t0 + rng.integers(0, 5 * 365, n) * DAY)
  has_dod = np.where(admitted, rng.random(n) < 0.13, rng.random(n) < 0.03)
  dead_in_hosp = admitted & dies_in_hospital
  dod_secs = np.where(dead_in_hosp, last_disch, dod_secs)
  has_dod |= dead_in_hosp
  age = np.clip(np.round(rng.normal(58, 19, n)), 18, 91).astype(np.int64)
  out["patients"] = pl.DataFrame({
      "subject_id": subject,
      "gender": _pick(rng, ["F", "M"], n, [0.52, 0.48]),
      "anchor_age": age, "anchor_year": anchor_year,
      "anchor_year_group": pl.Series(vinfo["groups"]).gather(group),
      "dod": _ts(dod_secs, ~has_dod).dt.date(),
  })

  # ---- icustays
  stays = _icu_stays(rng, np.flatnonzero(icu), rng.random(int(icu.sum())) < P_SECOND_ICU,
                     admit, disch)
  S = len(stays["adm"])
  stay_id = _id_block(rng, state["stay"], S, state["stay_stride"], 30_000_000)
  state["stay"] += S
  first_unit = _pick(rng, CAREUNITS, S, CAREUNIT_P)
  last_unit = pl.select(pl.when(pl.Series(rng.random(S) < 0.9)).then(first_unit)
                        .otherwise(_pick(rng, CAREUNITS, S, CAREUNIT_P))).to_series()
  out["icustays"] = pl.DataFrame({
      "subject_id": subject[pat[stays["adm"]]], "hadm_id": hadm[stays["adm"]],
      "stay_id": stay_id, "first_careunit": first_unit, "last_careunit": last_unit,
      "intime": _ts(stays["in"]), "outtime": _ts(stays["out"]),
      "los": np.round((stays["out"] - stays["in"]) / DAY, 6),
  })

  out["labevents"] = _labs(rng, subject, t0, pat, admit, disch, hadm, los, cal, state,
                           providers)
  out["chartevents"] = _chart(rng, subject[pat[stays["adm"]]], hadm[stays["adm"]], stay_id,
                              stays["in"], stays["out"], cal, opts["chart_ratio"])
  out["prescriptions"] = _prescriptions(rng, subject[pat], hadm, admit, disch, los, cal,
                                        state, providers)
  out["diagnoses_icd"], out["procedures_icd"] = _icd(rng, subject[pat], hadm, admit, disch,
                                                     group[pat], n_groups)
  if opts["with_notes"]:
    out["discharge"], out["radiology"] = _notes(rng, subject, t0, pat, admit, disch, hadm,
                                                opts)
  if opts["with_cxr"]:
    out["cxr_metadata"], out["cxr_embeddings"] = _cxr(rng, subject, t0, pat, admit, disch,
                                                      state, opts["cxr_dim"])
  return out


def _outpatient_times(rng, t0: np.ndarray, who: np.ndarray) -> np.ndarray:
  """Times anywhere in a patient's timeline (a year before anchor_year to 6 after)."""
  span = 7 * 365 * DAY
  return (t0[who] - 365 * DAY + (rng.random(len(who)) * span).astype(np.int64)) // 60 * 60


def _labs(rng, subject, t0, pat, admit, disch, hadm, los, cal, state, providers):
  panel_w = np.array([p[0] for p in LAB_PANELS])
  panel_w = panel_w / panel_w.sum()
  panel_len = np.array([len(p[1]) for p in LAB_PANELS])
  panel_flat = np.concatenate([p[1] for p in LAB_PANELS]).astype(np.int64)
  panel_start = np.r_[0, np.cumsum(panel_len)[:-1]]
  mean_panel = float(panel_w @ panel_len)
  n, A = len(subject), len(pat)
  per_adm = LAB_IN_SHARE * FULL_SCALE["labevents"] / FULL_SCALE["admissions"] / mean_panel
  per_pat = (1 - LAB_IN_SHARE) * FULL_SCALE["labevents"] / FULL_SCALE["patients"] / mean_panel
  k_in = rng.poisson(per_adm * los / cal["los_days"])
  k_out = rng.poisson(per_pat, n)
  a = np.repeat(np.arange(A), k_in)
  frac = rng.random(len(a))
  t_in = np.where(rng.random(len(a)) < 0.1,
                  admit[a] - (frac * 12 * HOUR).astype(np.int64),
                  admit[a] + (frac * (disch[a] - admit[a])).astype(np.int64)) // 60 * 60
  h_in = np.where(rng.random(len(a)) < 0.02, -1, hadm[a])
  p_out = np.repeat(np.arange(n), k_out)
  spec_subject = np.concatenate([subject[pat[a]], subject[p_out]])
  spec_hadm = np.concatenate([h_in, np.full(len(p_out), -1)])
  spec_time = np.concatenate([t_in, _outpatient_times(rng, t0, p_out)])
  n_spec = len(spec_time)
  panel = rng.choice(len(LAB_PANELS), n_spec, p=panel_w)
  spec_id = _id_block(rng, state["specimen"], n_spec, 1, 1)
  state["specimen"] += n_spec
  spec_priority = rng.choice(3, n_spec, p=[0.6, 0.3, 0.1])
  spec_provider = np.where(rng.random(n_spec) < 0.7, len(providers),
                           rng.integers(0, len(providers), n_spec))
  spec_store = spec_time + rng.integers(10, 240, n_spec) * 60
  # one row per (specimen, item)
  rows_per = panel_len[panel]
  s = np.repeat(np.arange(n_spec), rows_per)
  within = np.arange(len(s)) - np.repeat(np.cumsum(rows_per) - rows_per, rows_per)
  item = panel_flat[panel_start[panel[s]] + within]
  rare = item < 0
  item[rare] = RARE_LAB_ITEMS[rng.integers(0, len(RARE_LAB_ITEMS), int(rare.sum()))]
  order = np.lexsort((item, spec_time[s], spec_subject[s]))
  s, item = s[order], item[order]
  R = len(s)
  # per-item parameters
  lab_ids = np.array([lab[0] for lab in LABS])
  pos = np.searchsorted(lab_ids, item, sorter=np.argsort(lab_ids))
  pos = np.argsort(lab_ids)[np.clip(pos, 0, len(lab_ids) - 1)]
  known = lab_ids[pos] == item
  mean = np.array([np.nan if lab[5] is None else lab[5] for lab in LABS])[pos]
  sd = np.array([np.nan if lab[6] is None else lab[6] for lab in LABS])[pos]
  mean = np.where(known, mean, 10.0)
  sd = np.where(known, sd, 3.0)
  dec = np.where(known, np.array([lab[7] for lab in LABS])[pos], 1)
  lo = np.where(known, np.array([np.nan if lab[8] is None else lab[8] for lab in LABS])[pos],
                np.nan)
  hi = np.where(known, np.array([np.nan if lab[9] is None else lab[9] for lab in LABS])[pos],
                np.nan)
  # lognormal for skewed positive values, normal otherwise
  cv = sd / np.abs(mean)
  skewed = (cv > 0.25) & (mean > 0)
  sig2 = np.log1p(cv ** 2)
  z = rng.standard_normal(R)
  val = np.where(skewed, mean * np.exp(np.sqrt(sig2) * z - sig2 / 2), mean + sd * z)
  val = np.where(skewed | (mean <= 0) | (mean - 3 * sd < 0), val, np.maximum(val, 0.0))
  uom = np.array([lab[4] for lab in LABS], dtype=object)[pos]
  uom = np.where(known, uom, None)
  text_item = np.isin(item, list(LAB_TEXT_VALUES))
  text_vals = LAB_TEXT_VALUES[52033]
  df = pl.DataFrame({
      "subject_id": spec_subject[s],
      "hadm_id": _nullable_int(spec_hadm[s], spec_hadm[s] < 0),
      "specimen_id": spec_id[s], "itemid": item,
      "order_provider_id": pl.Series(list(providers) + [None], dtype=pl.Utf8).gather(
          spec_provider[s]),
      "charttime": _ts(spec_time[s]), "storetime": _ts(spec_store[s]),
      "_val": val, "_dec": dec, "_text": text_item,
      "_tv": pl.Series(text_vals).gather(rng.integers(0, len(text_vals), R)),
      "_blank": rng.random(R) < 0.01,
      "valueuom": pl.Series(uom.tolist(), dtype=pl.Utf8),
      "ref_range_lower": lo, "ref_range_upper": hi,
      "priority": pl.Series(["ROUTINE", "STAT", None]).gather(spec_priority[s]),
      "comments": pl.Series(LAB_COMMENTS + [None]).gather(
          np.where(rng.random(R) < 0.05, rng.integers(0, len(LAB_COMMENTS), R),
                   len(LAB_COMMENTS))),
  })
  first_id = state["labevent"]
  state["labevent"] += R
  return df.with_columns(
      labevent_id=pl.int_range(first_id, first_id + R, dtype=pl.Int64),
      ref_range_lower=pl.col("ref_range_lower").fill_nan(None),
      ref_range_upper=pl.col("ref_range_upper").fill_nan(None),
      valuenum=pl.when(pl.col("_text")).then(None).otherwise(
          pl.when(pl.col("_dec") == 0).then(pl.col("_val").round(0))
          .when(pl.col("_dec") == 1).then(pl.col("_val").round(1))
          .otherwise(pl.col("_val").round(2))),
      value=pl.when(pl.col("_text")).then(pl.col("_tv"))
      .when(pl.col("_blank")).then(pl.lit("___"))
      .otherwise(_fmt_number(pl.col("_val"), pl.col("_dec"))),
  ).with_columns(
      flag=pl.when((pl.col("valuenum") < pl.col("ref_range_lower")) |
                   (pl.col("valuenum") > pl.col("ref_range_upper")))
      .then(pl.lit("abnormal")).otherwise(None),
  )


@functools.lru_cache(maxsize=1)
def _chart_table() -> dict[str, np.ndarray]:
  """Every chart item (the named ones and `N_OTHER_CHART_ITEMS` others) with its
  parameters and sampling weight."""
  rng = np.random.default_rng(5)
  named = CHART_ITEMS
  w_named = np.array([c[8] for c in named], float)
  w_named = (1 - OTHER_CHART_SHARE) * w_named / w_named.sum()
  other_ids = np.sort(rng.choice(np.arange(223_000, 230_000), N_OTHER_CHART_ITEMS,
                                 replace=False))
  other_ids = other_ids[~np.isin(other_ids, [c[0] for c in named])]
  k = len(other_ids)
  w_other = 1.0 / np.arange(1, k + 1) ** 0.8
  w_other = OTHER_CHART_SHARE * w_other / w_other.sum()
  other_text = rng.random(k) < 0.6
  ids = np.r_[[c[0] for c in named], other_ids]
  text = np.r_[[c[5] is None for c in named], other_text]
  mean = np.r_[[np.nan if c[5] is None else c[5] for c in named],
               np.where(other_text, np.nan, rng.uniform(1, 200, k).round())]
  sd = np.r_[[np.nan if c[6] is None else c[6] for c in named], mean[len(named):] * 0.2]
  dec = np.r_[[c[7] for c in named], np.zeros(k, int)]
  uom = [c[4] for c in named] + [None if t else "units" for t in other_text]
  labels = ([c[1] for c in named] + [f"Charted item {i}" for i in other_ids])
  abbrev = ([c[2] for c in named] + [f"Item {i}" for i in other_ids])
  category = ([c[3] for c in named] + ["Other"] * k)
  low = [c[9] for c in named] + [None] * k
  high = [c[10] for c in named] + [None] * k
  return {"ids": ids, "w": np.r_[w_named, w_other], "text": text, "mean": mean, "sd": sd,
          "dec": dec, "uom": np.asarray(uom, dtype=object), "labels": labels,
          "abbrev": abbrev, "category": category, "low": low, "high": high}


def _chart(rng, subject, hadm, stay_id, tin, tout, cal, chart_ratio):
  t = _chart_table()
  per_stay = chart_ratio * FULL_SCALE["chartevents"] / FULL_SCALE["icustays"]
  k = rng.poisson(per_stay * (tout - tin) / DAY / cal["icu_days"])
  s = np.repeat(np.arange(len(stay_id)), k)
  R = len(s)
  time_ = tin[s] + (rng.random(R) * (tout[s] - tin[s])).astype(np.int64)
  outside = rng.random(R) < 0.01
  shift = rng.integers(1, 6 * HOUR, R)
  time_ = np.where(outside, np.where(rng.random(R) < 0.5, tin[s] - shift, tout[s] + shift),
                   time_) // 60 * 60
  which = np.minimum(np.searchsorted(np.cumsum(t["w"]), rng.random(R) * t["w"].sum()),
                     len(t["ids"]) - 1)
  order = np.lexsort((which, time_, s))
  s, time_, which = s[order], time_[order], which[order]
  text = t["text"][which]
  val = t["mean"][which] + t["sd"][which] * rng.standard_normal(R)
  val = np.clip(val, 0.0, np.where(t["uom"][which] == "%", 100.0, np.inf))  # SpO2 <= 100
  text_vocab = pl.Series(OTHER_CHART_TEXT + [v for vs in CHART_TEXT_VALUES.values()
                                               for v in vs])
  tv = text_vocab.gather(rng.integers(0, len(OTHER_CHART_TEXT), R))
  for item, vals in CHART_TEXT_VALUES.items():   # the named text items' own values
    rows = np.flatnonzero(t["ids"][which] == item)
    if len(rows):
      tv = tv.scatter(rows, pl.Series(vals).gather(rng.integers(0, len(vals), len(rows))))
  df = pl.DataFrame({
      "subject_id": subject[s], "hadm_id": hadm[s], "stay_id": stay_id[s],
      "caregiver_id": rng.integers(1_000, 99_999, R),
      "charttime": _ts(time_),
      "storetime": _ts(time_ + rng.integers(0, 90, R) * 60),
      "itemid": t["ids"][which],
      "_val": val, "_dec": t["dec"][which], "_text": text, "_tv": tv,
      "valueuom": pl.Series(t["uom"][which].tolist(), dtype=pl.Utf8),
      "warning": (rng.random(R) < 0.005).astype(np.int64),
  })
  return df.with_columns(
      value=pl.when(pl.col("_text")).then(pl.col("_tv"))
      .otherwise(_fmt_number(pl.col("_val"), pl.col("_dec"))),
      valuenum=pl.when(pl.col("_text")).then(None)
      .when(pl.col("_dec") == 0).then(pl.col("_val").round(0))
      .otherwise(pl.col("_val").round(1)),
  )


def _prescriptions(rng, subj_a, hadm, admit, disch, los, cal, state, providers):
  per_adm = FULL_SCALE["prescriptions"] / FULL_SCALE["admissions"]
  k = rng.poisson(per_adm * los / cal["los_days"])
  a = np.repeat(np.arange(len(hadm)), k)
  R = len(a)
  start = (admit[a] + (rng.random(R) * (disch[a] - admit[a])).astype(np.int64)) // 3600 * 3600
  stop = np.minimum(start + (rng.exponential(2.0, R) * DAY).astype(np.int64) // 3600 * 3600,
                    disch[a] + 12 * HOUR)
  order = np.lexsort((start, a))
  a, start, stop = a[order], start[order], stop[order]
  w = np.array([d[-1] for d in DRUGS], float)
  d = rng.choice(len(DRUGS), R, p=w / w.sum())
  rare = rng.random(R) < RARE_DRUG_SHARE
  rare_k = rng.integers(0, N_RARE_DRUGS, R)
  col = lambda j: pl.Series([x[j] for x in DRUGS], dtype=pl.Utf8).gather(d)
  rare_form = np.asarray(DRUG_FORMS, dtype=object)[rare_k % len(DRUG_FORMS)]
  rare_mg = (rare_k % 50 + 1) * 5
  poe_seq = _rank_in_group(subj_a[a]) + rng.integers(0, 50)
  pharmacy = _id_block(rng, state["pharmacy"], R, 1, 1)
  state["pharmacy"] += R
  r = pl.Series(rare)
  df = pl.DataFrame({
      "subject_id": subj_a[a], "hadm_id": hadm[a], "pharmacy_id": pharmacy,
      "poe_seq": poe_seq,
      "order_provider_id": pl.Series(providers[rng.integers(0, len(providers), R)]),
      "starttime": _ts(start), "stoptime": _ts(stop, rng.random(R) < 0.02),
      "form_rx": pl.Series([None, "TABLET", "SOLUTION"]).gather(
          rng.choice(3, R, p=[0.97, 0.02, 0.01])),
      "doses_per_24_hrs": pl.Series([x[9] for x in DRUGS], dtype=pl.Float64).gather(d),
  })
  rare_cols = {
      "drug_type": pl.lit("MAIN"),
      "drug": pl.format("Medication {} {}mg", pl.Series(rare_k), pl.Series(rare_mg)),
      "formulary_drug_cd": pl.format("MED{}", pl.Series(rare_k)),
      "gsn": pl.Series(rare_k + 10_000).cast(pl.Utf8).str.zfill(6),
      "ndc": pl.Series(rare_k * 7919 + 10_000_000_000).cast(pl.Utf8).str.zfill(11),
      "prod_strength": pl.format("{}mg", pl.Series(rare_mg)),
      "dose_val_rx": pl.Series(rare_mg).cast(pl.Utf8),
      "dose_unit_rx": pl.lit("mg"),
      "form_val_disp": pl.lit("1"),
      "form_unit_disp": pl.Series(rare_form.tolist(), dtype=pl.Utf8),
      "route": pl.Series(ROUTES).gather(rare_k % len(ROUTES)),
  }
  common = {"drug_type": col(11), "drug": col(0), "formulary_drug_cd": col(1),
            "gsn": col(2), "ndc": col(3), "prod_strength": col(4), "dose_val_rx": col(5),
            "dose_unit_rx": col(6), "form_val_disp": col(7), "form_unit_disp": col(8),
            "route": col(10)}
  return df.with_columns(
      poe_id=pl.format("{}-{}", pl.col("subject_id"), pl.col("poe_seq")),
      doses_per_24_hrs=pl.when(r).then(pl.lit(1.0)).otherwise(pl.col("doses_per_24_hrs")),
      **{name: pl.when(r).then(rare_cols[name]).otherwise(common[name])
         for name in common})


def _icd(rng, subj_a, hadm, admit, disch, group_a, n_groups):
  p10 = np.linspace(0.0, 1.0, n_groups) ** 1.5
  v10 = rng.random(len(hadm)) < p10[group_a]
  rare = _rare_codes()
  per_adm = FULL_SCALE["diagnoses_icd"] / FULL_SCALE["admissions"]
  k = 1 + rng.poisson(per_adm - 1, len(hadm))
  a = np.repeat(np.arange(len(hadm)), k)
  code = np.where(v10[a], _codes(rng, ICD10_DX, rare["icd10"], len(a)),
                  _codes(rng, ICD9_DX, rare["icd9"], len(a)))
  dx = pl.DataFrame({"subject_id": subj_a[a], "hadm_id": hadm[a],
                     "seq_num": _rank_in_group(a), "icd_code": pl.Series(code.tolist()),
                     "icd_version": np.where(v10[a], 10, 9)})
  k = rng.poisson(FULL_SCALE["procedures_icd"] / FULL_SCALE["admissions"], len(hadm))
  a = np.repeat(np.arange(len(hadm)), k)
  code = np.where(v10[a], _codes(rng, ICD10_PX, rare["icd10"], len(a)),
                  _codes(rng, ICD9_PX, rare["icd9"], len(a)))
  when = admit[a] + (rng.random(len(a)) * (disch[a] - admit[a])).astype(np.int64)
  px = pl.DataFrame({"subject_id": subj_a[a], "hadm_id": hadm[a],
                     "seq_num": _rank_in_group(a), "chartdate": _ts(when).dt.date(),
                     "icd_code": pl.Series(code.tolist()),
                     "icd_version": np.where(v10[a], 10, 9)})
  return dx, px


def _notes(rng, subject, t0, pat, admit, disch, hadm, opts):
  n, A = len(subject), len(pat)
  # discharge summaries
  has = rng.random(A) < P_DISCHARGE_NOTE
  a = np.flatnonzero(has)
  n_sent = np.maximum(rng.poisson(max(opts["discharge_words"] - 70, 0) /
                                  _words_per_sentence(DISCHARGE_SENTENCES), len(a)), 4)
  sex = np.where(rng.random(len(a)) < 0.5, "F", "M")
  cc = np.asarray(CHIEF_COMPLAINTS)[rng.integers(0, len(CHIEF_COMPLAINTS), len(a))]
  svc = np.asarray(SERVICES)[rng.integers(0, len(SERVICES), len(a))]
  heads = [f" \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___"
           f"              Discharge Date:   ___\n \nDate of Birth:  ___             "
           f"Sex:   {x}\n \nService: {v}\n \nAllergies: \nNo Known Allergies / Adverse "
           f"Drug Reactions\n \nAttending: ___.\n \nChief Complaint:\n{c}\n \n"
           for x, v, c in zip(sex, svc, cc)]
  text = _texts(rng, DISCHARGE_SENTENCES, n_sent,
                ["History of Present Illness", "Physical Exam", "Pertinent Results",
                 "Brief Hospital Course", "Discharge Instructions"], heads)
  day = disch[a] // DAY * DAY
  ds = pl.DataFrame({"subject_id": subject[pat[a]], "hadm_id": hadm[a],
                     "charttime": _ts(day),
                     "storetime": _ts(disch[a] + rng.integers(1 * 60, 48 * 60, len(a)) * 60),
                     "text": pl.Series(text, dtype=pl.Utf8)})
  # radiology reports: inside admissions (with hadm_id) and outpatient
  k_in = rng.poisson(RADIOLOGY_IN_SHARE * FULL_SCALE["radiology"] / FULL_SCALE["admissions"],
                     A)
  k_out = rng.poisson((1 - RADIOLOGY_IN_SHARE) * FULL_SCALE["radiology"] /
                      FULL_SCALE["patients"], n)
  ai = np.repeat(np.arange(A), k_in)
  po = np.repeat(np.arange(n), k_out)
  t_in = (admit[ai] + (rng.random(len(ai)) * (disch[ai] - admit[ai])).astype(np.int64))
  times = np.concatenate([t_in, _outpatient_times(rng, t0, po)]) // 60 * 60
  subj = np.concatenate([subject[pat[ai]], subject[po]])
  h = np.concatenate([hadm[ai], np.full(len(po), -1)])
  order = np.lexsort((times, subj))
  times, subj, h = times[order], subj[order], h[order]
  m = len(times)
  exam = np.asarray([p[0] for p in CXR_PROCEDURES] + ["CT HEAD W/O CONTRAST",
                                                       "CT ABD & PELVIS WITH CONTRAST",
                                                       "LIVER OR GALLBLADDER US (SINGLE "
                                                       "ORGAN)"])
  ex = exam[rng.integers(0, len(exam), m)]
  ind = np.asarray(INDICATIONS)[rng.integers(0, len(INDICATIONS), m)]
  heads = [f"EXAMINATION:  {e}\n\nINDICATION:  ___ with {i}\n\nTECHNIQUE:  As per "
           f"protocol.\n\nCOMPARISON:  ___\n\n" for e, i in zip(ex, ind)]
  n_sent = np.maximum(rng.poisson(max(opts["radiology_words"] - 15, 0) /
                                  _words_per_sentence(RADIOLOGY_SENTENCES), m), 2)
  text = _texts(rng, RADIOLOGY_SENTENCES, n_sent, ["FINDINGS", "IMPRESSION"], heads)
  rr = pl.DataFrame({"subject_id": subj, "hadm_id": _nullable_int(h, h < 0),
                     "charttime": _ts(times),
                     "storetime": _ts(times + rng.integers(10, 600, m) * 60),
                     "text": pl.Series(text, dtype=pl.Utf8)})
  notes = []
  for df, kind in ((ds, "DS"), (rr, "RR")):
    seq = _rank_in_group(df["subject_id"].to_numpy()) + rng.integers(0, 20)
    notes.append(df.with_columns(note_seq=pl.Series(seq), note_type=pl.lit(kind))
                 .with_columns(note_id=pl.format("{}-{}-{}", "subject_id", "note_type",
                                                 "note_seq")))
  return notes[0], notes[1]


def _cxr(rng, subject, t0, pat, admit, disch, state, dim):
  n, A = len(subject), len(pat)
  k_in = rng.poisson(CXR_IN_SHARE * FULL_SCALE["cxr_studies"] / FULL_SCALE["admissions"], A)
  k_out = rng.poisson((1 - CXR_IN_SHARE) * FULL_SCALE["cxr_studies"] / FULL_SCALE["patients"],
                      n)
  ai = np.repeat(np.arange(A), k_in)
  po = np.repeat(np.arange(n), k_out)
  t_in = admit[ai] + (rng.random(len(ai)) * (disch[ai] - admit[ai])).astype(np.int64)
  times = np.concatenate([t_in, _outpatient_times(rng, t0, po)])
  subj = np.concatenate([subject[pat[ai]], subject[po]])
  order = np.lexsort((times, subj))
  times, subj = times[order], subj[order]
  n_st = len(times)
  study = _id_block(rng, state["study"], n_st, state["study_stride"], 50_000_000)
  state["study"] += n_st
  n_img = 1 + rng.binomial(2, (IMAGES_PER_STUDY - 1) / 2, n_st)
  st = np.repeat(np.arange(n_st), n_img)
  img_k = _rank_in_group(st)
  proc_i = rng.choice(len(CXR_PROCEDURES), n_st,
                      p=np.array([p[1] for p in CXR_PROCEDURES]) / sum(
                          p[1] for p in CXR_PROCEDURES))[st]
  portable = proc_i == 1
  view = np.where(img_k == 1, np.where(portable, 2, 0), np.where(img_k == 2, 1, 3))
  views = [("PA", "postero-anterior"), ("LATERAL", "lateral"), ("AP", "antero-posterior"),
           ("LL", "left lateral")]
  size = rng.integers(0, len(CXR_SIZES), len(st))
  hexes = rng.integers(0, 2 ** 32, (len(st), 5), dtype=np.uint64)
  dicom = ["-".join(f"{v:08x}" for v in row) for row in hexes.tolist()]
  millis = rng.integers(0, 1000, len(st))
  ts = _ts(times[st])
  meta = pl.DataFrame({
      "dicom_id": pl.Series(dicom, dtype=pl.Utf8), "subject_id": subj[st], "study_id": study[st],
      "PerformedProcedureStepDescription": pl.Series(
          [p[0] for p in CXR_PROCEDURES]).gather(proc_i),
      "ViewPosition": pl.Series([v[0] for v in views]).gather(view),
      "Rows": np.array([c[0] for c in CXR_SIZES])[size],
      "Columns": np.array([c[1] for c in CXR_SIZES])[size],
      "StudyDate": ts.dt.strftime("%Y%m%d").cast(pl.Int64),
      "StudyTime": ts.dt.strftime("%H%M%S").cast(pl.Float64) + millis / 1000.0,
      "ProcedureCodeSequence_CodeMeaning": pl.Series(
          [p[0] for p in CXR_PROCEDURES]).gather(proc_i),
      "ViewCodeSequence_CodeMeaning": pl.Series([v[1] for v in views]).gather(view),
      "PatientOrientationCodeSequence_CodeMeaning": pl.Series(
          ["Erect", "Recumbent", None]).gather(np.where(portable, 1,
                                                       rng.choice([0, 2], len(st),
                                                                  p=[0.95, 0.05]))),
  })
  emb = rng.standard_normal((len(st), dim), dtype=np.float32)
  emb_df = pl.DataFrame(emb, schema=[f"emb_{j:04d}" for j in range(dim)], orient="row")
  return meta, emb_df.insert_column(0, meta["dicom_id"])


# ---------------------------------------------------------------------------- dictionaries

def _dictionaries() -> dict[str, pl.DataFrame]:
  labs = sorted(LABS, key=lambda lab: lab[0])
  rare = [(int(i), f"Lab item {int(i)}", "Blood", "Chemistry") for i in RARE_LAB_ITEMS]
  d_labitems = pl.DataFrame(
      [(lab[0], lab[1], lab[2], lab[3]) for lab in labs] + rare,
      schema=COLUMNS["d_labitems"], orient="row").sort("itemid")
  t = _chart_table()
  d_items = pl.DataFrame({
      "itemid": t["ids"], "label": t["labels"], "abbreviation": t["abbrev"],
      "linksto": ["chartevents"] * len(t["ids"]), "category": t["category"],
      "unitname": pl.Series(t["uom"].tolist(), dtype=pl.Utf8),
      "param_type": ["Text" if x else "Numeric" for x in t["text"]],
      "lownormalvalue": pl.Series(t["low"], dtype=pl.Float64),
      "highnormalvalue": pl.Series(t["high"], dtype=pl.Float64)}).sort("itemid")
  return {"d_labitems": d_labitems, "d_items": d_items}


# ----------------------------------------------------------------------------------- main

def table_path(directory: str, table: str, compress: bool = True) -> str:
  """Where `write_fake_mimic` puts `table` (a key of `COLUMNS`)."""
  name = CXR_METADATA_FILE if table == "cxr_metadata" else table
  return os.path.join(directory, MODULE[table], name + (".csv.gz" if compress else ".csv"))


def write_fake_mimic(directory: str, *, scale: float = 0.1, seed: int = 0,
                     compress: bool = True, with_notes: bool = True, with_cxr: bool = True,
                     chart_ratio: float = 1.0, discharge_words: int = 900,
                     radiology_words: int = 120, cxr_dim: int = 1024,
                     chunk_patients: int = 1000, version: str = "2.2") -> dict:
  """Writes a generated MIMIC-IV directory at `scale` × the real sizes (module docstring).

  Args:
    directory: created if needed; existing tables of the same names are overwritten.
    scale: fraction of the real database (0.1 = 30k patients, about 12M lab rows).
    seed: the output is a deterministic function of (all arguments).
    compress: ``.csv.gz`` (gzip level 1) or plain ``.csv``.
    with_notes / with_cxr: write ``note/`` / ``cxr/`` (metadata and embeddings).
    chart_ratio: chartevents rows relative to the real ratio (1.0 = 4,286 per ICU stay).
    discharge_words, radiology_words: mean note lengths in words.
    cxr_dim: embedding width of the CXR parquet file.
    chunk_patients: patients per generated chunk (memory per chunk: about
      1 GB per 1,000 patients at chart_ratio 1).
    version: "2.2" or "3.1" (the value vocabularies of a few admissions columns and
      anchor_year_group differ; the columns are the same).

  Returns:
    dict with ``rows`` (per table), ``paths``, ``bytes`` (per file), ``seconds``,
    ``patients``, ``cxr_embeddings`` and ``cxr_metadata`` paths ("" when not written).
  """
  if version not in VERSIONS:
    raise ValueError(f"version must be one of {sorted(VERSIONS)}, got {version!r}")
  if scale <= 0:
    raise ValueError(f"scale must be positive, got {scale}")
  start = time.perf_counter()
  n_total = max(1, int(round(FULL_SCALE["patients"] * scale)))
  expected_adm = FULL_SCALE["admissions"] * scale * 1.3 + 100
  state = {
      "stride": max(1, 9_999_999 // n_total),
      "hadm": 0, "hadm_stride": max(1, int(9_999_999 // expected_adm)),
      "stay": 0, "stay_stride": max(1, int(9_999_999 // (expected_adm * 0.3))),
      "study": 0, "study_stride": max(1, int(9_999_999 // (expected_adm * 0.8))),
      "specimen": 0, "pharmacy": 0, "labevent": 1,
  }
  opts = dict(version=version, chart_ratio=chart_ratio, with_notes=with_notes,
              with_cxr=with_cxr, discharge_words=discharge_words,
              radiology_words=radiology_words, cxr_dim=cxr_dim)
  tables = ["patients", "admissions", "labevents", "prescriptions", "diagnoses_icd",
            "procedures_icd", "icustays", "chartevents"]
  tables += ["discharge", "radiology"] if with_notes else []
  tables += ["cxr_metadata"] if with_cxr else []
  writer = _Writer(compress)
  parts_dir = os.path.join(directory, "cxr", "_embedding_parts")
  emb_path = os.path.join(directory, "cxr", CXR_EMBEDDINGS_FILE) if with_cxr else ""
  try:
    for table in tables:
      writer.open(table, table_path(directory, table, compress), COLUMNS[table])
    for name, df in _dictionaries().items():
      writer.open(name, table_path(directory, name, compress), COLUMNS[name])
      writer.write(name, df)
    if with_cxr:
      shutil.rmtree(parts_dir, ignore_errors=True)
      os.makedirs(parts_dir)
    for c, p0 in enumerate(range(0, n_total, chunk_patients)):
      rng = np.random.default_rng([seed, c])
      chunk = _chunk(rng, p0, min(chunk_patients, n_total - p0), state, opts)
      emb = chunk.pop("cxr_embeddings", None)
      for table, df in chunk.items():
        writer.write(table, df)
      if emb is not None and len(emb):
        emb.write_parquet(os.path.join(parts_dir, f"part-{c:06d}.parquet"))
      del chunk, emb
  finally:
    writer.close()
  if with_cxr:
    parts = sorted(os.listdir(parts_dir))
    if parts:
      pl.scan_parquet(os.path.join(parts_dir, "*.parquet")).sink_parquet(emb_path)
    else:
      pl.DataFrame(schema={"dicom_id": pl.Utf8, **{f"emb_{j:04d}": pl.Float32
                                                   for j in range(cxr_dim)}}
                   ).write_parquet(emb_path)
    shutil.rmtree(parts_dir)
    writer.rows["cxr_embeddings"] = writer.rows["cxr_metadata"]
    writer.paths["cxr_embeddings"] = emb_path
  paths = dict(writer.paths)
  return {
      "directory": directory, "scale": scale, "seed": seed, "patients": n_total,
      "rows": dict(writer.rows), "paths": paths,
      "bytes": {t: os.path.getsize(p) for t, p in paths.items()},
      "seconds": time.perf_counter() - start,
      "cxr_metadata": paths.get("cxr_metadata", ""), "cxr_embeddings": emb_path,
  }


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dir", required=True, help="output directory")
  parser.add_argument("--scale", type=float, default=0.1)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no_compress", action="store_true", help="plain .csv files")
  parser.add_argument("--no_notes", action="store_true")
  parser.add_argument("--no_cxr", action="store_true")
  parser.add_argument("--chart_ratio", type=float, default=1.0)
  parser.add_argument("--cxr_dim", type=int, default=1024)
  parser.add_argument("--version", default="2.2", choices=sorted(VERSIONS))
  args = parser.parse_args(argv)
  info = write_fake_mimic(args.dir, scale=args.scale, seed=args.seed,
                          compress=not args.no_compress, with_notes=not args.no_notes,
                          with_cxr=not args.no_cxr, chart_ratio=args.chart_ratio,
                          cxr_dim=args.cxr_dim, version=args.version)
  for table, rows in info["rows"].items():
    print(f"{table:16s} {rows:>12,d} rows  {info['bytes'][table] / 2**20:10.1f} MiB")
  print(f"{info['patients']:,d} patients, {info['seconds']:.1f} s -> {args.dir}")
  with open(os.path.join(args.dir, "fake_mimic.json"), "w") as f:
    json.dump(info, f, indent=2)


if __name__ == "__main__":
  main()
