"""A generated MIMIC-IV directory in the published raw schema, at a chosen scale.

`write_fake_mimic(directory, scale=0.1)` writes the MIMIC-IV v2.2 layout that
`crl_mmnar_jax.data.sources.mimic.load_mimic`
reads, filled with random but internally consistent
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

The tables are written by `mimic_fake_events` (labevents, chartevents, d_labitems,
d_items), `mimic_fake_orders` (prescriptions, diagnoses_icd, procedures_icd),
`mimic_fake_notes` and `mimic_fake_cxr`; patients, admissions and icustays here; the
layout and shared helpers are in `mimic_fake_common`.

Command line::

  python -m experiments.mimic_fake --dir=/tmp/mimic_0.1 --scale=0.1
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import polars as pl

from crl_mmnar_jax.testing.csv_writer import CsvWriter
from crl_mmnar_jax.testing.mimic_fake_common import (
  COLUMNS,
  CXR_EMBEDDINGS_FILE,
  DAY,
  FULL_SCALE,
  HOUR,
  P_ICU,
  P_SECOND_ICU,
  calibration,
  group_cumsum,
  icu_stays,
  id_block,
  los_days,
  pick,
  provider_ids,
  relative_path,
  timestamps,
  year_start,
)
from crl_mmnar_jax.testing.mimic_fake_cxr import cxr_tables
from crl_mmnar_jax.testing.mimic_fake_events import chartevents, dictionaries, labevents
from crl_mmnar_jax.testing.mimic_fake_notes import note_tables
from crl_mmnar_jax.testing.mimic_fake_orders import icd_codes, prescriptions

# Admissions and ICU stays: value vocabularies and their weights (MIMIC-IV v2.2 counts).
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

P_ADMITTED = FULL_SCALE["admitted_patients"] / FULL_SCALE["patients"]
ADMISSIONS_PER_ADMITTED = FULL_SCALE["admissions"] / FULL_SCALE["admitted_patients"]


# ------------------------------------------------------------------------- one chunk

def _chunk(rng: np.random.Generator, first_patient: int, n: int, state: dict,
           opts: dict) -> dict[str, pl.DataFrame]:
  """Every table's rows for patients first_patient .. first_patient + n - 1."""
  cal = calibration()
  vinfo = VERSIONS[opts["version"]]
  out: dict[str, pl.DataFrame] = {}
  providers = provider_ids()

  # ---- patients
  subject = (10_000_000 + (first_patient + np.arange(n, dtype=np.int64)) * state["stride"]
             + rng.integers(0, state["stride"], n))
  anchor_year = rng.integers(2110, 2209, n)
  t0 = year_start(anchor_year)
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
  los = los_days(rng, icu)
  gap = np.where(rng.random(A) < 0.25, rng.uniform(0.5, 30.0, A), rng.exponential(400.0, A))
  inc = np.where(first, rng.uniform(0.0, 3 * 365.0, A), np.roll(los, 1) + gap)
  admit_day = group_cumsum(inc, first) if A else np.zeros(0)
  admit = t0[pat] + (admit_day * DAY).astype(np.int64) // 60 * 60
  disch = admit + (los * DAY).astype(np.int64) // 60 * 60
  disch = np.maximum(disch, admit + 3600)
  hadm = id_block(rng, state["hadm"], A, state["hadm_stride"], 20_000_000)
  state["hadm"] += A
  dies_in_hospital = rng.random(n) < 0.045
  expire = last & dies_in_hospital[pat]
  ad_type_i = rng.choice(len(ADMISSION_TYPES), A,
                         p=np.array([t[1] for t in ADMISSION_TYPES]) / sum(
                             t[1] for t in ADMISSION_TYPES))
  ed = np.array([t[2] for t in ADMISSION_TYPES])[ad_type_i] & (rng.random(A) < 0.85)
  edreg = admit - rng.integers(1 * HOUR, 12 * HOUR, A) // 60 * 60
  edout = admit + rng.integers(0, 2 * HOUR, A) // 60 * 60
  dloc = pick(rng, DISCHARGE_LOCATIONS, A, DISCHARGE_LOCATION_P)
  dloc = pl.select(pl.when(pl.Series(expire)).then(pl.lit("DIED")).otherwise(dloc)).to_series()
  out["admissions"] = pl.DataFrame({
      "subject_id": subject[pat], "hadm_id": hadm, "admittime": timestamps(admit),
      "dischtime": timestamps(disch), "deathtime": timestamps(disch, ~expire),
      "admission_type": pl.Series([t[0] for t in ADMISSION_TYPES]).gather(ad_type_i),
      "admit_provider_id": pl.Series(providers[rng.integers(0, len(providers), A)]),
      "admission_location": pick(rng, ADMISSION_LOCATIONS, A, ADMISSION_LOCATION_P),
      "discharge_location": dloc,
      "insurance": pick(rng, vinfo["insurance"][0], A, vinfo["insurance"][1]),
      "language": pick(rng, vinfo["language"][0], A, vinfo["language"][1]),
      "marital_status": pick(rng, MARITAL, A, MARITAL_P),
      "race": pick(rng, [r[0] for r in RACES], A, [r[1] for r in RACES]),
      "edregtime": timestamps(edreg, ~ed), "edouttime": timestamps(edout, ~ed),
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
      "gender": pick(rng, ["F", "M"], n, [0.52, 0.48]),
      "anchor_age": age, "anchor_year": anchor_year,
      "anchor_year_group": pl.Series(vinfo["groups"]).gather(group),
      "dod": timestamps(dod_secs, ~has_dod).dt.date(),
  })

  # ---- icustays
  stays = icu_stays(rng, np.flatnonzero(icu), rng.random(int(icu.sum())) < P_SECOND_ICU,
                    admit, disch)
  S = len(stays["adm"])
  stay_id = id_block(rng, state["stay"], S, state["stay_stride"], 30_000_000)
  state["stay"] += S
  first_unit = pick(rng, CAREUNITS, S, CAREUNIT_P)
  last_unit = pl.select(pl.when(pl.Series(rng.random(S) < 0.9)).then(first_unit)
                        .otherwise(pick(rng, CAREUNITS, S, CAREUNIT_P))).to_series()
  out["icustays"] = pl.DataFrame({
      "subject_id": subject[pat[stays["adm"]]], "hadm_id": hadm[stays["adm"]],
      "stay_id": stay_id, "first_careunit": first_unit, "last_careunit": last_unit,
      "intime": timestamps(stays["in"]), "outtime": timestamps(stays["out"]),
      "los": np.round((stays["out"] - stays["in"]) / DAY, 6),
  })

  out["labevents"] = labevents(rng, subject, t0, pat, admit, disch, hadm, los, cal, state,
                               providers)
  out["chartevents"] = chartevents(rng, subject[pat[stays["adm"]]], hadm[stays["adm"]],
                                   stay_id, stays["in"], stays["out"], cal,
                                   opts["chart_ratio"])
  out["prescriptions"] = prescriptions(rng, subject[pat], hadm, admit, disch, los, cal,
                                       state, providers)
  out["diagnoses_icd"], out["procedures_icd"] = icd_codes(rng, subject[pat], hadm, admit,
                                                          disch, group[pat], n_groups)
  if opts["with_notes"]:
    out["discharge"], out["radiology"] = note_tables(rng, subject, t0, pat, admit, disch,
                                                     hadm, opts)
  if opts["with_cxr"]:
    out["cxr_metadata"], out["cxr_embeddings"] = cxr_tables(rng, subject, t0, pat, admit,
                                                            disch, state, opts["cxr_dim"])
  return out


# ----------------------------------------------------------------------------------- main

def table_path(directory: str, table: str, compress: bool = True) -> str:
  """Where `write_fake_mimic` puts `table` (a key of `COLUMNS`)."""
  return os.path.join(directory, relative_path(table) + (".csv.gz" if compress else ".csv"))


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
  writer = CsvWriter(compress)
  parts_dir = os.path.join(directory, "cxr", "_embedding_parts")
  emb_path = os.path.join(directory, "cxr", CXR_EMBEDDINGS_FILE) if with_cxr else ""
  try:
    for table in tables:
      writer.open(table, table_path(directory, table, compress), COLUMNS[table])
    for name, df in dictionaries().items():
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
