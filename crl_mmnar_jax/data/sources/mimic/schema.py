"""The published MIMIC-IV schema that the loader reads: the single place where table
names, the columns read with their types, the CXR metadata file and the supported
versions are declared (the loader and the fake-data generator use these names).

Tables are named ``<module>/<table>`` as in PhysioNet's layout (``hosp/``, ``icu/``,
``note/``), each stored as ``<name>.csv.gz`` or plain ``<name>.csv``. `RAW_TABLES` lists
only the columns the loader reads (a typed projection): other columns may be present.
The columns read are the same in v2.2 and v3.1 (published table documentation of
MIMIC-IV v2.2 / v3.1, MIMIC-IV-Note v2.2 and MIMIC-CXR 2.0.0); what differs between
versions is described in the docstring of `crl_mmnar_jax.data.sources.mimic`.
"""

from __future__ import annotations

import os

import polars as pl

VERSIONS = ("2.2", "3.1")
TIMESTAMP = pl.Datetime("us")     # ``YYYY-MM-DD HH:MM:SS``; dates are pl.Date

PATIENTS = "hosp/patients"
ADMISSIONS = "hosp/admissions"
ICUSTAYS = "icu/icustays"
LABEVENTS = "hosp/labevents"
CHARTEVENTS = "icu/chartevents"
PRESCRIPTIONS = "hosp/prescriptions"
DIAGNOSES_ICD = "hosp/diagnoses_icd"
PROCEDURES_ICD = "hosp/procedures_icd"
NOTE_DISCHARGE = "note/discharge"     # MIMIC-IV-Note v2.2 (optional)
NOTE_RADIOLOGY = "note/radiology"     # MIMIC-IV-Note v2.2 (optional)
NOTE_TABLES = {"discharge_note": NOTE_DISCHARGE, "radiology_note": NOTE_RADIOLOGY}

# table -> columns read (MIMIC-IV name -> polars type)
RAW_TABLES: dict[str, dict[str, pl.DataType]] = {
    PATIENTS: {"subject_id": pl.Int64, "gender": pl.String, "anchor_age": pl.Int64,
               "anchor_year": pl.Int64, "anchor_year_group": pl.String, "dod": pl.Date},
    ADMISSIONS: {"subject_id": pl.Int64, "hadm_id": pl.Int64, "admittime": TIMESTAMP,
                 "dischtime": TIMESTAMP, "deathtime": TIMESTAMP,
                 "admission_type": pl.String, "admission_location": pl.String,
                 "discharge_location": pl.String, "insurance": pl.String,
                 "race": pl.String, "hospital_expire_flag": pl.Int64},
    ICUSTAYS: {"subject_id": pl.Int64, "hadm_id": pl.Int64, "stay_id": pl.Int64,
               "intime": TIMESTAMP},
    LABEVENTS: {"subject_id": pl.Int64, "itemid": pl.Int64, "charttime": TIMESTAMP,
                "valuenum": pl.Float64},
    CHARTEVENTS: {"stay_id": pl.Int64, "itemid": pl.Int64, "charttime": TIMESTAMP,
                  "valuenum": pl.Float64},
    PRESCRIPTIONS: {"subject_id": pl.Int64, "starttime": TIMESTAMP, "drug": pl.String},
    DIAGNOSES_ICD: {"hadm_id": pl.Int64, "icd_code": pl.String, "icd_version": pl.Int64},
    PROCEDURES_ICD: {"hadm_id": pl.Int64, "icd_code": pl.String, "icd_version": pl.Int64},
    NOTE_DISCHARGE: {"note_id": pl.String, "subject_id": pl.Int64, "hadm_id": pl.Int64,
                     "charttime": TIMESTAMP, "text": pl.String},
    NOTE_RADIOLOGY: {"note_id": pl.String, "subject_id": pl.Int64, "hadm_id": pl.Int64,
                     "charttime": TIMESTAMP, "text": pl.String},
}

# MIMIC-CXR 2.0.0 metadata (StudyDate YYYYMMDD, StudyTime HHMMSS.fff)
CXR_METADATA_FILE = "mimic-cxr-2.0.0-metadata"                 # .csv.gz or .csv
CXR_METADATA_DEFAULT = os.path.join("cxr", CXR_METADATA_FILE)   # under the MIMIC-IV root
CXR_METADATA_COLUMNS: dict[str, pl.DataType] = {
    "dicom_id": pl.String, "subject_id": pl.Int64, "study_id": pl.Int64,
    "ViewPosition": pl.String, "StudyDate": pl.Int64, "StudyTime": pl.Float64}
FRONTAL_VIEWS = ("PA", "AP")      # ViewPosition values of frontal chest X-rays

# MEDS event table (the MIMIC-IV MEDS ETL): required columns, then the value column
MEDS_COLUMNS = ("subject_id", "time", "code")
MEDS_VALUE_COLUMNS = ("numeric_value", "value")   # the first present is read

# Common labevents itemids (d_labitems), chemistry, blood count, coagulation, liver,
# blood gas and cardiac panels as in mimic-code's derived concepts.
LAB_ITEMS: dict[int, str] = {
    50862: "albumin", 50863: "alkaline_phosphatase", 50861: "alt", 50868: "anion_gap",
    50878: "ast", 50882: "bicarbonate", 50885: "bilirubin_total", 50893: "calcium",
    50902: "chloride", 50912: "creatinine", 50931: "glucose", 50960: "magnesium",
    50970: "phosphate", 50971: "potassium", 50983: "sodium", 51006: "urea_nitrogen",
    51221: "hematocrit", 51222: "hemoglobin", 51265: "platelets", 51301: "wbc",
    51237: "inr", 51274: "pt", 51275: "ptt", 50813: "lactate", 50820: "ph",
    50821: "po2", 50818: "pco2", 51003: "troponin_t",
}
# chartevents itemids (d_items, MetaVision) of the routine vital signs.
VITAL_ITEMS: dict[int, str] = {
    220045: "heart_rate", 220179: "nbp_systolic", 220180: "nbp_diastolic",
    220181: "nbp_mean", 220050: "abp_systolic", 220051: "abp_diastolic",
    220052: "abp_mean", 220210: "resp_rate", 220277: "spo2", 223761: "temperature_f",
    223762: "temperature_c", 220739: "gcs_eye", 223900: "gcs_verbal", 223901: "gcs_motor",
}

# Published values of the admissions table's categorical columns (v2.2 and v3.1).
ADMISSION_TYPES = ("AMBULATORY OBSERVATION", "DIRECT EMER.", "DIRECT OBSERVATION",
                   "ELECTIVE", "EU OBSERVATION", "EW EMER.", "OBSERVATION ADMIT",
                   "SURGICAL SAME DAY ADMISSION", "URGENT")
ADMISSION_LOCATIONS = ("AMBULATORY SURGERY TRANSFER", "CLINIC REFERRAL", "EMERGENCY ROOM",
                       "INFORMATION NOT AVAILABLE", "INTERNAL TRANSFER TO OR FROM PSYCH",
                       "PACU", "PHYSICIAN REFERRAL", "PROCEDURE SITE",
                       "TRANSFER FROM HOSPITAL", "TRANSFER FROM SKILLED NURSING FACILITY",
                       "WALK-IN/SELF REFERRAL")
DISCHARGE_LOCATIONS = ("ACUTE HOSPITAL", "AGAINST ADVICE", "ASSISTED LIVING",
                       "CHRONIC/LONG TERM ACUTE CARE", "HEALTHCARE FACILITY", "HOME",
                       "HOME HEALTH CARE", "HOSPICE", "OTHER FACILITY", "PSYCH FACILITY",
                       "REHAB", "SKILLED NURSING FACILITY")
INSURANCES = ("Medicaid", "Medicare", "Private", "No charge", "Other")
