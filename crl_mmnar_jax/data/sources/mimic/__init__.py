"""MIMIC-IV (v2.2 or v3.1), from its raw CSV layout or from a MEDS event table.

Inputs (exactly one):

* ``directory``: the PhysioNet layout, each table as ``<name>.csv.gz`` or plain
  ``<name>.csv``. Only the columns below are read (a projection, with explicit types);
  other columns may be present. Timestamps are ``YYYY-MM-DD HH:MM:SS``, dates
  ``YYYY-MM-DD``.

  ====================== =============================================================
  table                  columns read (MIMIC-IV names and types)
  ====================== =============================================================
  hosp/patients          subject_id int, gender str, anchor_age int, anchor_year int,
                         anchor_year_group str, dod date
  hosp/admissions        subject_id int, hadm_id int, admittime, dischtime, deathtime
                         timestamp, admission_type, admission_location,
                         discharge_location, insurance, race str,
                         hospital_expire_flag int
  icu/icustays           subject_id, hadm_id, stay_id int, intime timestamp
  hosp/labevents         subject_id int, itemid int, charttime timestamp, valuenum float
  icu/chartevents        stay_id int, itemid int, charttime timestamp, valuenum float
  hosp/prescriptions     subject_id int, starttime timestamp, drug str
  hosp/diagnoses_icd     hadm_id int, icd_code str, icd_version int
  hosp/procedures_icd    hadm_id int, icd_code str, icd_version int
  note/discharge,        note_id str, subject_id int, hadm_id int, charttime timestamp,
  note/radiology         text str (MIMIC-IV-Note v2.2; optional: a missing note table
                         drops its modality with a line in ``info["notes"]``, since
                         MIMIC-IV-Note is a separate PhysioNet project)
  CXR metadata           dicom_id str, subject_id int, study_id int, ViewPosition str,
                         StudyDate int (YYYYMMDD), StudyTime float (HHMMSS.fff)
                         (``mimic-cxr-2.0.0-metadata.csv.gz``; default
                         ``<directory>/cxr/mimic-cxr-2.0.0-metadata.csv.gz``)
  CXR embeddings         parquet or csv: ``dicom_id`` plus numeric columns (any width;
                         ``subject_id`` / ``study_id`` columns, if any, are ignored);
                         or PhysioNet's TFRecord files (a ``.tfrecord`` file or a
                         folder of ``<dicom_id>.tfrecord``, read without TensorFlow:
                         `tfrecord`)
  ====================== =============================================================

  Versions: ``version`` is "2.2" or "3.1"; empty means "the directory's name if it is
  a version number" (PhysioNet's ``mimiciv/2.2/``), else "unknown" (recorded, with a
  note). Any other value, given or inferred, raises `DataError`. The columns read here
  are the same in v2.2 and v3.1 (published table documentation); the values differ:
  v3.1 adds admissions from 2020-2022 (``anchor_year_group`` "2020 - 2022"), which
  MIMIC-IV-Note v2.2 and MIMIC-CXR do not cover (notes and X-rays are then missing by
  design for those years: ``anchor_years``, default "2008-2019", excludes them), and
  v3.x has more ``insurance`` values ("Private", "No charge" besides "Medicaid",
  "Medicare", "Other"): the one-hot covers both.

* ``meds``: a MEDS event table (one parquet file, or a folder of them) with columns
  ``subject_id``, ``time``, ``code`` and ``numeric_value`` (or ``value``), as written
  by the MIMIC-IV MEDS ETL (the MIMIC-IV demo in ``../shared/data`` is stored so). The
  codes are mapped to the same canonical frames as the raw tables:

  ==================================== ===============================================
  code                                 meaning
  ==================================== ===============================================
  HOSPITAL_ADMISSION//<type>//<loc>    admittime, admission type and location
  HOSPITAL_DISCHARGE//<loc>            dischtime, discharge location (DIED = death)
  ICU_ADMISSION//<unit>                an ICU stay's intime
  MEDS_BIRTH                           birth year (the ETL writes anchor_year -
                                       anchor_age as 1 January of that year)
  MEDS_DEATH                           death (the ETL writes the earliest admission
                                       deathtime, else ``dod`` at midnight)
  GENDER//F, GENDER//M                 sex
  LAB//<itemid>//<unit>                labevents and chartevents values (also the
                                       newer ETL's LAB//RESULT//<itemid>//<unit>)
  MEDICATION//START//<name>            a medication order at its start time
  DIAGNOSIS//ICD//<version>//<code>    a billed diagnosis (at the admission's
                                       dischtime)
  PROCEDURE//ICD//<version>//<code>    a billed procedure (at its chartdate, or at
                                       dischtime in newer ETL versions)
  ==================================== ===============================================

  There is no hadm_id: the k-th admission event of a subject (by time) is paired with
  the k-th discharge event, and admissions get synthetic ids in (subject, admittime)
  order. An ICU stay belongs to the admission whose [admittime, dischtime] contains its
  intime (the latest-admitted one if several do), else to the first admission
  starting within 24 h after it (ICU stays entered from the emergency department can
  start minutes before admittime). The MEDS file holds no notes, insurance or race:
  those modalities / features are absent. Both inputs give the same cohort and the
  same shared features for the same data (tested on a fixture written both ways).

Cohort (each step counted in ``info["attrition"]``, a list of {step, unit,
n_remaining, n_excluded}):

1. subjects (``patients`` and ``admissions``; for MEDS: every subject of the table);
2. ``anchor_year_group`` inside ``anchor_years`` (default `ANCHOR_YEARS` "2008-2019":
   MIMIC-IV-Note v2.2 and MIMIC-CXR end in 2019, so v3.x's "2020 - 2022" subjects could
   have neither; "" keeps every group). The group dates the subject's anchor year, not
   each admission, so this is a subject-level approximation. MEDS tables carry no
   group: nobody is excluded there (a note in ``info["notes"]`` says so);
3. admissions with ``dischtime >= admittime`` (unit: admissions; invalid ones are
   dropped before the index is chosen);
4. subjects with at least one valid admission; the INDEX EPISODE starts with the first
   admission by (admittime, dischtime, hadm_id) and takes in every later admission
   that starts less than `EPISODE_GAP_HOURS` = 6 h after the latest discharge so far
   (or overlaps it): an observation stay converted into an admission a minute after
   its "discharge", a transfer between hadm_ids. The episode runs from the first
   admittime to the last dischtime (the real discharge, where prediction happens); its
   admission type and location are the first admission's, its discharge location the
   last one's; the merged admissions are counted in the attrition row (extra keys
   ``admissions_merged``, ``subjects_with_merged``), excluding nobody;
5. adult at the index admission: age = anchor_age + year(admittime) - anchor_year
   (MEDS: year(admittime) - birth year) >= 18; unknown age is excluded;
6. survived the index episode: not ``hospital_expire_flag = 1``, no ``deathtime``,
   discharge location not DIED (in any of its admissions), and no death recorded
   before its end: for a
   death with a time of day, at or before dischtime; for a date-only death (``dod``,
   or a MEDS_DEATH at exactly midnight), before the discharge DATE. Deviation from
   "a MEDS death at or before the discharge time", with reason: the MEDS ETL writes an
   out-of-hospital ``dod`` as midnight, so a patient discharged alive at 17:00 who
   died at home that day would be excluded from MEDS but kept (mortality 1) from the
   raw tables.

One row per subject (the split unit); patient_id = subject_id (int), rows sorted by
it; ``info["fingerprint"]`` hashes the sorted ids.

Tasks (counted from the end of the index episode; never NaN):

=============== =======================================================================
task            definition
=============== =======================================================================
readmission_30d an UNPLANNED admission of the subject after the index episode with
                admittime - episode end <= 30 days (exactly 30 days: 1; 30 days and a
                minute: 0). Admissions within 6 h of a discharge belong to the
                episode, never readmissions. Planned admissions
                (`PLANNED_ADMISSION_TYPES`: ELECTIVE, SURGICAL SAME DAY ADMISSION) do
                NOT count: a scheduled operation or treatment is not a failure of the
                discharge (an unplanned one in the same 30 days still counts).
icu_90d         an ICU stay (icustays.intime) of an admission after the index episode
                with 0 < intime - episode end <= 90 days (planned admissions
                included: their ICU stays are ICU stays)
mortality_180d  0 <= date of death - date(index dischtime) <= 180 days (death on the
                discharge day after a survived admission: 1). Date of death: the raw
                ``patients.dod``; MEDS: the date of MEDS_DEATH. MIMIC-IV's ``dod``
                includes out-of-hospital deaths up to one year after the patient's LAST
                discharge, so the 180 days after any discharge are inside the observed
                window; no recorded death = 0. Deaths before a readmission can happen
                are not censored (readmission is then 0).
=============== =======================================================================

Modalities, in this order; a modality observed for nobody is dropped with a line in
``info["notes"]``. Only information from the index episode's window [admittime,
dischtime] is used (prediction is at its discharge); ``tests/test_mimic.py`` and
``tests/test_leakage.py`` check that adding events after it changes no feature.

============== =========================================================================
modality       features (observed when)
============== =========================================================================
ehr            always observed. Age, male, length of stay (hours; known at discharge),
               ICU stays in the index episode, one-hots of admission type / location
               and discharge location (null or "UNK": NaN); raw input only: insurance
               and race group (`RACE_GROUPS`). Labs (`LAB_ITEMS`, labevents by charttime
               in the window) and vitals (`VITAL_ITEMS`, chartevents of the index
               admission's ICU stays by charttime in the window; MEDS: LAB codes of
               those itemids in the window) through `featurize.featurize` (8 statistics
               per variable, hours since admittime; no measurement: count 0, the others
               NaN). Prescriptions (by starttime in the window): orders, distinct drugs,
               `N_CODE_BUCKETS` hashed drug-name buckets. Diagnoses and procedures
               (coded for the episode's hadm_ids; MEDS: in the window, procedures from the
               admission's date): entries, distinct codes, hashed ``ICD<v>:<code>``
               buckets. Hashing: CRC-32 of the lower-cased stripped string.
cxr            mean embedding of the frontal (ViewPosition PA or AP) images whose study
               (StudyDate + StudyTime) lies in the window (any such image with an
               embedding). Needs ``cxr_embeddings``; without it the modality is absent.
discharge_note mean text embedding (`text_embed`, 768 dims) of the notes with an
radiology_note episode hadm_id, plus those with NO hadm_id (many radiology reports:
               emergency department, outpatient) charted from
               `NOTE_BEFORE_ADMIT_HOURS` = 6 h before admittime on; all with charttime
               <= the episode's dischtime (any such note)
============== =========================================================================

Scale and resumability: every stage (``cohort``, ``labs``, ``vitals``,
``medications``, ``diagnoses``, ``procedures``, ``cxr-<key>``, ``<note>-<encoder>``)
scans its table lazily (projection, itemid filter, semi-join on the cohort's subjects,
admissions or ICU stays, window filter, streaming collection or ``sink_parquet``) and
writes ``<stage>.parquet`` into ``<cache_dir>/mimic-<key>`` (key: source path, kind,
version, format version); a rerun reads finished stages and never opens their tables.
The time series are featurised in batches of subjects of about `BATCH_VALUES` values,
and notes are encoded in batches of about `NOTE_BATCH_CHARS` characters whose
embeddings are added into per-subject float32 sums (image embeddings are summed per
subject as their file streams), so memory is bounded by the batch plus the cohort's
output arrays.

Imperfect rows (the row policy of `data.row_policy`): by default skipped and counted per
file and per problem in ``info["skipped"]`` (kept with each cached stage): values that
do not parse as their column's type (counted in one more pass over that table, then
read as null), rows with a null id and every row of a repeated id in patients,
admissions and icustays, MEDS admission or discharge events without a time, and the
admissions of a MEDS subject whose admission and discharge events do not pair up (the
subject then leaves the cohort at step 4). ``strict=True`` raises `DataError` at the
first of them instead. ``cache_dir=None`` uses a fresh
temporary folder. Delete the cache folder when the data change. Measured on this
2-core machine: a generated v2.2-schema folder of 20,000 subjects (40,000 admissions,
2 M labevents and 2 M chartevents rows, 20,000 notes per note table) loads in 27 s cold
(half of it encoding notes) at 0.8 GB peak RSS, and in 2 s from the cache.

Code: `schema` (the tables, columns, types and versions read), `raw` and `meds` (the
two readers, producing the canonical frames of `frames`), `cohort` (index admission,
attrition, labels), `stages` (the ehr, note and cxr features); `source` (`load_mimic`)
runs them through the stage cache of `data.io`. This package only re-exports.
"""

from __future__ import annotations

from crl_mmnar_jax.data.sources.mimic.cohort import (
  ADULT_AGE,
  ANCHOR_YEARS,
  EPISODE_GAP_HOURS,
  PLANNED_ADMISSION_TYPES,
  TASKS,
)
from crl_mmnar_jax.data.sources.mimic.meds import ICU_BEFORE_ADMIT_HOURS
from crl_mmnar_jax.data.sources.mimic.raw import NOTE_BEFORE_ADMIT_HOURS
from crl_mmnar_jax.data.sources.mimic.schema import (
  ADMISSION_LOCATIONS,
  ADMISSION_TYPES,
  DISCHARGE_LOCATIONS,
  INSURANCES,
  LAB_ITEMS,
  NOTE_TABLES,
  VERSIONS,
  VITAL_ITEMS,
)
from crl_mmnar_jax.data.sources.mimic.source import (
  BATCH_VALUES,
  CACHE_VERSION,
  MODALITIES,
  NOTE_BATCH_CHARS,
  SOURCE_URL,
  from_config,
  load_mimic,
)
from crl_mmnar_jax.data.sources.mimic.stages import (
  N_CODE_BUCKETS,
  RACE_GROUPS,
  TEXT_DIM,
  VALID_RANGES,
  bucket,
)

__all__ = ["TASKS", "MODALITIES", "NOTE_TABLES", "VERSIONS", "TEXT_DIM", "N_CODE_BUCKETS",
           "BATCH_VALUES", "NOTE_BATCH_CHARS", "CACHE_VERSION", "ADULT_AGE",
           "ICU_BEFORE_ADMIT_HOURS", "EPISODE_GAP_HOURS", "PLANNED_ADMISSION_TYPES",
           "ANCHOR_YEARS", "NOTE_BEFORE_ADMIT_HOURS", "LAB_ITEMS", "VITAL_ITEMS", "VALID_RANGES",
           "ADMISSION_TYPES", "ADMISSION_LOCATIONS", "DISCHARGE_LOCATIONS", "INSURANCES",
           "RACE_GROUPS", "SOURCE_URL", "bucket", "from_config", "load_mimic"]
