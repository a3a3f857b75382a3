"""PhysioNet/Computing in Cardiology Challenge 2012, read from its own file layout.

Layout of ``directory`` (as published; set A ships in ``../shared/data/physionet2012``)::

  set-a/<RecordID>.txt   one ICU stay: first line ``Time,Parameter,Value``, then one
                         line per value, Time ``HH:MM`` from ICU admission (first 48 h)
  Outcomes-a.txt         RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death
  set-b/ ..., Outcomes-b.txt, ...

Each stay becomes one `Cohort` row (patient_id = RecordID; each RecordID is a different
patient in the challenge data). Rows are ordered by set, then RecordID.

Modality 0, ``descriptors`` (always observed): the general descriptors recorded at
00:00, ``-1`` (and physiologically impossible values, see `DESCRIPTOR_RANGES`) read as
NaN "not recorded" (imputed later with training statistics):

=================== ============================================================
feature             source
=================== ============================================================
age                 Age (years; the challenge records ages over 89 as 90)
male                Gender (1 = male, 0 = female)
height_cm           Height (cm)
weight_kg           Weight (kg) at admission: the FIRST ``Weight`` line at 00:00;
                    every later Weight line is the Weight time series
icu_coronary        ICUType == 1 (Coronary Care Unit), one-hot
icu_cardiac_surgery ICUType == 2 (Cardiac Surgery Recovery Unit)
icu_medical         ICUType == 3 (Medical ICU)
icu_surgical        ICUType == 4 (Surgical ICU)
=================== ============================================================

Modalities 1..11, the 37 time series grouped into virtual modalities (`GROUPS`) by what
a clinician orders or charts together, so that a modality's presence records a
clinical decision (missing not at random). Each is featurised by `featurize.featurize`
over the window [0, ``window_hours``] with 8 statistics per variable (last, mean, min,
max, std, count, time_last, slope); a modality is observed when any of its variables
has a usable value. Observed fractions are for set A (3,997 stays):

============== ======================================== ======== ===================
modality       variables                                observed why together
============== ======================================== ======== ===================
vitals         HR, Temp, GCS, Weight                    98.5%    routine nursing
                                                                 charting of every
                                                                 ICU patient
resp_rate      RespRate                                 27.5%    charted only for
                                                                 spontaneously
                                                                 breathing patients
                                                                 (never together with
                                                                 MechVent in set A)
urine          Urine                                    97.1%    urinary catheter /
                                                                 output charting
arterial_bp    SysABP, DiasABP, MAP                     69.9%    arterial line placed
noninvasive_bp NISysABP, NIDiasABP, NIMAP               87.2%    cuff pressures
blood_gas      pH, PaCO2, PaO2, SaO2, FiO2, MechVent    80.8%    arterial blood gas
                                                                 with ventilator
                                                                 settings
lactate        Lactate                                  54.6%    ordered when
                                                                 hypoperfusion or
                                                                 sepsis is suspected
chemistry      BUN, Creatinine, Glucose, HCO3, K, Mg,   98.5%    basic metabolic panel
               Na
haematology    HCT, Platelets, WBC                      98.5%    complete blood count
liver          ALT, AST, ALP, Bilirubin, Albumin        52.1%    liver function panel
cardiac        TroponinI, TroponinT, Cholesterol        30.3%    acute coronary work-up
                                                                 (troponin, lipids)
============== ======================================== ======== ===================

(RespRate is not grouped with GCS as a "neuro/resp" chart: GCS is charted for nearly
every patient, while charting RespRate is itself the informative decision. Cholesterol,
the 37th series, is drawn mostly in the coronary care unit alongside troponin.)

Valid ranges (`VALID_RANGES`, inclusive, in PhysioNet's documented units). Values
outside are dropped before featurisation and counted per variable in the returned
info; they are zeros from disconnected transducers or cuffs, sentinel values, and unit
or typing errors (e.g. Temp 0 or -17.8 °C, pH 735), not extreme but real values:

=========== ============ =============== =========== ============ ===============
variable    unit         valid           variable    unit         valid
=========== ============ =============== =========== ============ ===============
Albumin     g/dL         [0.5, 10]       MechVent    0/1          [0, 1]
ALP         IU/L         [1, 10000]      Mg          mmol/L (a)   [0.1, 20]
ALT         IU/L         [1, 20000]      Na          mEq/L        [90, 200]
AST         IU/L         [1, 40000]      NIDiasABP   mmHg         [5, 250]
Bilirubin   mg/dL        [0.01, 100]     NIMAP       mmHg         [10, 300]
BUN         mg/dL        [0, 300]        NISysABP    mmHg         [20, 300]
Cholesterol mg/dL        [10, 1000]      PaCO2       mmHg         [5, 200]
Creatinine  mg/dL        [0.05, 30]      PaO2        mmHg         [10, 800]
DiasABP     mmHg         [5, 250]        pH          --           [6.5, 8.0]
FiO2        fraction     [0.21, 1.0]     Platelets   cells/nL     [1, 2500]
GCS         score        [3, 15]         RespRate    breaths/min  [1, 100]
Glucose     mg/dL        [5, 2000]       SaO2        %            [10, 100]
HCO3        mmol/L       [1, 60]         SysABP      mmHg         [20, 300]
HCT         %            [5, 80]         Temp        °C           [25, 45]
HR          bpm          [10, 300]       TroponinI   μg/L         [0, 500]
K           mEq/L        [1, 12]         TroponinT   μg/L         [0, 100]
Lactate     mmol/L       [0.1, 40]       Urine       mL           [0, 10000]
MAP         mmHg         [10, 300]       WBC         cells/nL     [0, 500]
                                         Weight      kg           [20, 350]
=========== ============ =============== =========== ============ ===============

(a) Mg is documented in mmol/L but its values (median 2.0) look like mg/dL; the range
admits both.

Descriptors (`DESCRIPTOR_RANGES`): Age [0, 120] years, Height [100, 250] cm (set A has
heights of 1.8-17.8 and 365.8-431.8 cm), Weight as above, Gender {0, 1}, ICUType
{1, 2, 3, 4}; anything else reads as not recorded and is counted.

Tasks: ``in_hospital_death`` (In-hospital_death: 0/1, ``-1`` = unknown) and
``los_gt_7``: Length_of_stay > 7 days (Length_of_stay counts days from ICU admission
to the end of the hospital stay, whether it ended by discharge or death; ``-1`` or
empty = unknown).

Stays with no usable time-series value in the window (set A: RecordIDs 140501, 140936,
141264, which hold descriptors only) are DROPPED, logged and listed in the info.

Bad input raises `DataError` naming the file and line (``path:line: problem``):
malformed lines, non-numeric values, unknown parameters, times not ``HH:MM``, missing,
duplicate or misplaced descriptors, RecordIDs that do not match the file name or
repeat, and Outcomes files that do not match the record files.

Reading is vectorised: every file's bytes are read, concatenated and parsed in one
polars pass (set A, 1.76 M lines: about 1 s to parse, 1-1.5 s with featurisation
on 2 cores).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl
from absl import logging

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.featurize import ModalityGroup, featurize
from crl_mmnar_jax.data.io import check_tasks

GROUPS: tuple[ModalityGroup, ...] = (
    ModalityGroup("vitals", ("HR", "Temp", "GCS", "Weight")),
    ModalityGroup("resp_rate", ("RespRate",)),
    ModalityGroup("urine", ("Urine",)),
    ModalityGroup("arterial_bp", ("SysABP", "DiasABP", "MAP")),
    ModalityGroup("noninvasive_bp", ("NISysABP", "NIDiasABP", "NIMAP")),
    ModalityGroup("blood_gas", ("pH", "PaCO2", "PaO2", "SaO2", "FiO2", "MechVent")),
    ModalityGroup("lactate", ("Lactate",)),
    ModalityGroup("chemistry", ("BUN", "Creatinine", "Glucose", "HCO3", "K", "Mg", "Na")),
    ModalityGroup("haematology", ("HCT", "Platelets", "WBC")),
    ModalityGroup("liver", ("ALT", "AST", "ALP", "Bilirubin", "Albumin")),
    ModalityGroup("cardiac", ("TroponinI", "TroponinT", "Cholesterol")),
)
DESCRIPTORS_MODALITY = "descriptors"

VALID_RANGES: dict[str, tuple[float, float]] = {
    "Albumin": (0.5, 10.0), "ALP": (1.0, 10000.0), "ALT": (1.0, 20000.0),
    "AST": (1.0, 40000.0), "Bilirubin": (0.01, 100.0), "BUN": (0.0, 300.0),
    "Cholesterol": (10.0, 1000.0), "Creatinine": (0.05, 30.0), "DiasABP": (5.0, 250.0),
    "FiO2": (0.21, 1.0), "GCS": (3.0, 15.0), "Glucose": (5.0, 2000.0),
    "HCO3": (1.0, 60.0), "HCT": (5.0, 80.0), "HR": (10.0, 300.0), "K": (1.0, 12.0),
    "Lactate": (0.1, 40.0), "MAP": (10.0, 300.0), "MechVent": (0.0, 1.0),
    "Mg": (0.1, 20.0), "Na": (90.0, 200.0), "NIDiasABP": (5.0, 250.0),
    "NIMAP": (10.0, 300.0), "NISysABP": (20.0, 300.0), "PaCO2": (5.0, 200.0),
    "PaO2": (10.0, 800.0), "pH": (6.5, 8.0), "Platelets": (1.0, 2500.0),
    "RespRate": (1.0, 100.0), "SaO2": (10.0, 100.0), "SysABP": (20.0, 300.0),
    "Temp": (25.0, 45.0), "TroponinI": (0.0, 500.0), "TroponinT": (0.0, 100.0),
    "Urine": (0.0, 10000.0), "WBC": (0.0, 500.0), "Weight": (20.0, 350.0),
}
DESCRIPTOR_RANGES: dict[str, tuple[float, float]] = {
    "Age": (0.0, 120.0), "Height": (100.0, 250.0), "Weight": VALID_RANGES["Weight"],
}
DESCRIPTOR_FEATURES = ("age", "male", "height_cm", "weight_kg", "icu_coronary",
                       "icu_cardiac_surgery", "icu_medical", "icu_surgical")
TASKS = ("in_hospital_death", "los_gt_7")

_STATIC = ("RecordID", "Age", "Gender", "Height", "ICUType")   # descriptors besides Weight
_SERIES = tuple(v for g in GROUPS for v in g.variables)
_PARAMETERS = _STATIC + _SERIES
_HEADER = "Time,Parameter,Value"
_OUTCOME_COLUMNS = ("RecordID", "Length_of_stay", "In-hospital_death")
_TIME_PATTERN = r"^(\d{2,3}):([0-5]\d)$"


# ----------------------------------------------------------------------------- lines


def _read_lines(paths: Sequence[str]) -> pl.DataFrame:
  """All lines of all files: columns file (index into paths), line (1-based), text.

  Files are read as bytes in Python (one read per file), joined, decoded once and
  split into lines in a single polars call; trailing whitespace (including '\\r') is
  stripped.
  """
  raws, n_lines = [], []
  for path in paths:
    with open(path, "rb") as f:
      raw = f.read()
    if not raw.strip():
      raise DataError(f"{path}:1: empty file (expected a header line)")
    if not raw.endswith(b"\n"):
      raw += b"\n"
    raws.append(raw)
    n_lines.append(raw.count(b"\n"))
  big = b"".join(raws)
  try:
    text = big.decode("utf-8")
  except UnicodeDecodeError as e:
    ends = np.cumsum([len(r) for r in raws])
    k = int(np.searchsorted(ends, e.start, side="right"))
    line = big[ends[k] - len(raws[k]):e.start].count(b"\n") + 1
    raise DataError(f"{paths[k]}:{line}: not UTF-8 text ({e.reason})") from None
  del raws, big
  n_L = np.asarray(n_lines, dtype=np.int64)
  total = int(n_L.sum())
  lines = pl.Series("text", [text]).str.split("\n").explode().head(total)
  del text
  starts = np.repeat(np.cumsum(n_L) - n_L, n_L)
  return pl.DataFrame({
      "file": np.repeat(np.arange(len(paths), dtype=np.int32), n_L),
      "line": (np.arange(total, dtype=np.int64) - starts + 1),
      "text": lines.str.strip_chars_end(),
  })


def _fail_if(df: pl.DataFrame, bad: pl.Expr, paths: Sequence[str], describe) -> None:
  """Raises DataError at the first row where `bad` holds: 'path:line: describe(row)'."""
  hits = df.filter(bad)
  if len(hits):
    row = hits.sort("file", "line").row(0, named=True)
    more = f" ({len(hits)} such lines in all)" if len(hits) > 1 else ""
    raise DataError(f"{paths[row['file']]}:{row['line']}: {describe(row)}{more}")


def _split_fields(df: pl.DataFrame, n_fields: int, paths: Sequence[str],
                  expected: str) -> pl.DataFrame:
  """Adds columns f0..f{n-1} (stripped) after checking the comma count of every line."""
  found = pl.col("text").str.count_matches(",", literal=True) + 1
  _fail_if(df, found != n_fields, paths,
           lambda r: f"expected {n_fields} comma-separated fields ({expected}), found "
                     f"{r['text'].count(',') + 1}: {r['text'][:80]!r}")
  fields = pl.col("text").str.split_exact(",", n_fields - 1)
  return df.with_columns(
      fields.struct.field(f"field_{k}").str.strip_chars().alias(f"f{k}")
      for k in range(n_fields))


# ----------------------------------------------------------------------------- records


def _parse_records(paths: Sequence[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
  """(descriptor lines, time-series lines) of the record files, every line checked.

  Both frames have columns file, line, param, hours, value; descriptor lines are the
  static descriptors plus each file's first Weight line at 00:00.
  """
  lines = _read_lines(paths)
  _fail_if(lines, (pl.col("line") == 1) & (pl.col("text").str.strip_chars() != _HEADER),
           paths, lambda r: f"expected the header {_HEADER!r}, found {r['text'][:80]!r}")
  body = lines.filter((pl.col("line") > 1) & (pl.col("text").str.strip_chars() != ""))
  body = _split_fields(body, 3, paths, _HEADER)
  body = body.rename({"f0": "time_s", "f1": "param", "f2": "value_s"})
  body = body.with_columns(
      pl.col("time_s").str.extract(_TIME_PATTERN, 1).cast(pl.Int64).alias("_hh"),
      pl.col("time_s").str.extract(_TIME_PATTERN, 2).cast(pl.Int64).alias("_mm"),
      pl.col("value_s").cast(pl.Float64, strict=False).alias("value"),
  )
  _fail_if(body, pl.col("_hh").is_null(), paths,
           lambda r: f"time {r['time_s']!r} is not HH:MM (hours and minutes from ICU "
                     f"admission)")
  _fail_if(body, ~pl.col("param").is_in(_PARAMETERS), paths,
           lambda r: f"unknown parameter {r['param']!r} (the challenge defines "
                     f"{sorted(_PARAMETERS, key=str.lower)})")
  _fail_if(body, ~pl.col("value").is_finite().fill_null(False), paths,
           lambda r: f"value {r['value_s']!r} of {r['param']} is not a number")
  body = body.with_columns(
      (pl.col("_hh") + pl.col("_mm") / 60.0).alias("hours")).drop("_hh", "_mm")

  static = pl.col("param").is_in(_STATIC)
  weight0 = (pl.col("param") == "Weight") & (pl.col("hours") == 0.0)
  body = body.with_columns(
      pl.int_range(pl.len()).over("file", "param", weight0).alias("_k"))
  _fail_if(body, static & (pl.col("hours") != 0.0), paths,
           lambda r: f"descriptor {r['param']} must be recorded at 00:00, found "
                     f"{r['time_s']!r}")
  _fail_if(body, static & (pl.col("_k") > 0), paths,
           lambda r: f"descriptor {r['param']} given more than once in this record")
  is_desc = static | (weight0 & (pl.col("_k") == 0))
  cols = ["file", "line", "param", "time_s", "hours", "value", "value_s"]
  return body.filter(is_desc).select(cols), body.filter(~is_desc).select(cols)


def _record_ids(desc: pl.DataFrame, paths: Sequence[str]) -> np.ndarray:
  """(F,) int64 RecordID per file, checked against the file name and for repeats."""
  rec = desc.filter(pl.col("param") == "RecordID")
  has = np.zeros(len(paths), dtype=bool)
  has[rec["file"].to_numpy()] = True
  if not has.all():
    path = paths[int(np.argmin(has))]
    raise DataError(f"{path}:2: no RecordID descriptor in this record (expected "
                    f"'00:00,RecordID,<id>' after the header; {int((~has).sum())} "
                    f"file(s) lack one)")
  _fail_if(rec, (pl.col("value") <= 0) | (pl.col("value") != pl.col("value").round()),
           paths, lambda r: f"RecordID {r['value_s']!r} is not a positive integer")
  stems_F = np.asarray([os.path.splitext(os.path.basename(p))[0] for p in paths])
  rec = rec.with_columns(pl.col("value").cast(pl.Int64).alias("id"),
                         pl.Series("stem", stems_F[rec["file"].to_numpy()]))
  _fail_if(rec, pl.col("id").cast(pl.String) != pl.col("stem"), paths,
           lambda r: f"RecordID {r['id']} does not match the file name (record "
                     f"{r['id']} belongs in {r['id']}.txt)")
  dup = rec.filter(pl.col("id").is_duplicated()).sort("id", "file")
  if len(dup):
    a, b = dup.row(0, named=True), dup.row(1, named=True)
    raise DataError(f"{paths[b['file']]}:{b['line']}: duplicate RecordID {a['id']}, also in "
                    f"{paths[a['file']]}:{a['line']} ({dup['id'].n_unique()} repeated "
                    f"RecordID(s) in all)")
  ids_F = np.zeros(len(paths), dtype=np.int64)
  ids_F[rec["file"].to_numpy()] = rec["id"].to_numpy()
  return ids_F


def _descriptor_features(desc: pl.DataFrame, n_files: int
                         ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(F, 8) descriptor features plus per-descriptor masks (not recorded, out of range)."""
  raw = {}
  for name in ("Age", "Gender", "Height", "Weight", "ICUType"):   # 5 columns, not rows
    rows = desc.filter(pl.col("param") == name)
    x_F = np.full(n_files, np.nan)
    x_F[rows["file"].to_numpy()] = rows["value"].to_numpy()
    raw[name] = x_F
  not_recorded = {k: np.isnan(x) | (x == -1) for k, x in raw.items()}
  valid = {k: (x >= DESCRIPTOR_RANGES[k][0]) & (x <= DESCRIPTOR_RANGES[k][1])
           for k, x in raw.items() if k in DESCRIPTOR_RANGES}
  valid["Gender"] = np.isin(raw["Gender"], (0.0, 1.0))
  valid["ICUType"] = np.isin(raw["ICUType"], (1.0, 2.0, 3.0, 4.0))
  out_of_range = {k: ~valid[k] & ~not_recorded[k] for k in raw}
  clean = {k: np.where(valid[k], raw[k], np.nan) for k in raw}
  icu_F = clean["ICUType"]
  onehot_Fx4 = np.where(np.isnan(icu_F)[:, None], np.nan,
                        (icu_F[:, None] == np.arange(1, 5)[None, :]).astype(np.float64))
  x_Fx8 = np.concatenate([np.stack([clean["Age"], clean["Gender"], clean["Height"],
                                    clean["Weight"]], axis=1), onehot_Fx4], axis=1)
  return x_Fx8.astype(np.float32), not_recorded, out_of_range


# ----------------------------------------------------------------------------- outcomes


def _parse_outcomes(path: str) -> pl.DataFrame:
  """RecordID, Length_of_stay, In-hospital_death (Int64, null = -1/empty), line."""
  lines = _read_lines([path])
  header = [h.strip() for h in lines["text"][0].split(",")]
  missing = [c for c in _OUTCOME_COLUMNS if c not in header]
  if missing:
    raise DataError(f"{path}:1: header lacks column(s) {missing} (found {header}; "
                    f"expected RecordID,SAPS-I,SOFA,Length_of_stay,Survival,"
                    f"In-hospital_death)")
  body = lines.filter((pl.col("line") > 1) & (pl.col("text").str.strip_chars() != ""))
  body = _split_fields(body, len(header), [path], ",".join(header))
  out = body.select("file", "line", *(
      pl.col(f"f{header.index(c)}").alias(c) for c in _OUTCOME_COLUMNS))
  for c in _OUTCOME_COLUMNS:
    parsed = pl.col(c).cast(pl.Int64, strict=False)
    unparsable = parsed.is_null() if c == "RecordID" else parsed.is_null() & (pl.col(c) != "")
    _fail_if(out, unparsable, [path], lambda r, c=c: f"{c} {r[c]!r} is not an integer")
    out = out.with_columns(parsed.alias(c))
  _fail_if(out, pl.col("RecordID") <= 0, [path],
           lambda r: f"RecordID {r['RecordID']} is not a positive integer")
  _fail_if(out, ~pl.col("In-hospital_death").is_in([0, 1, -1]).fill_null(True), [path],
           lambda r: f"In-hospital_death must be 0, 1 or -1 (unknown), found "
                     f"{r['In-hospital_death']}")
  _fail_if(out, (pl.col("Length_of_stay") < -1).fill_null(False), [path],
           lambda r: f"Length_of_stay {r['Length_of_stay']} is negative (-1 = unknown)")
  _fail_if(out, ~pl.col("RecordID").is_first_distinct(), [path],
           lambda r: f"RecordID {r['RecordID']} appears on more than one line")
  return out.with_columns(
      pl.when(pl.col(c) >= 0).then(pl.col(c)).alias(c)
      for c in ("Length_of_stay", "In-hospital_death"))


def _match_outcomes(out: pl.DataFrame, path: str, ids: np.ndarray,
                    rec_paths: Sequence[str]) -> pl.DataFrame:
  """Outcome rows in the order of `ids` (one set's record ids); mismatches raise."""
  files = pl.DataFrame({"RecordID": ids, "_pos": np.arange(len(ids))})
  extra = out.join(files, on="RecordID", how="anti").sort("line")
  if len(extra):
    few = ", ".join(f"{i} (line {n})" for i, n in zip(extra["RecordID"].head(5),
                                                       extra["line"].head(5)))
    raise DataError(f"{path}:{extra['line'][0]}: {len(extra)} RecordID(s) have no record "
                    f"file in {os.path.dirname(rec_paths[0]) if rec_paths else 'the set'}: "
                    f"{few}")
  lacking = files.join(out, on="RecordID", how="anti").sort("_pos")
  if len(lacking):
    few = ", ".join(f"{rec_paths[p]}:2" for p in lacking["_pos"].head(5))
    raise DataError(f"{path}: no outcome line for {len(lacking)} record(s) "
                    f"(RecordID {lacking['RecordID'].head(5).to_list()}; {few})")
  return files.join(out, on="RecordID", how="left", maintain_order="left")


# ----------------------------------------------------------------------------- loading


def _set_names(directory: str, sets: Sequence[str] | None) -> list[str]:
  if sets is None:
    names = sorted(d[len("set-"):] for d in os.listdir(directory)
                   if d.startswith("set-") and os.path.isdir(os.path.join(directory, d)))
    if not names:
      raise DataError(f"{directory}: no set-* directory (expected e.g. set-a/ with "
                      f"<RecordID>.txt files and Outcomes-a.txt)")
    return names
  names = [str(s) for s in sets]
  if not names or len(set(names)) != len(names):
    raise DataError(f"sets={names!r} must name at least one set, each once")
  for s in names:
    if not os.path.isdir(os.path.join(directory, f"set-{s}")):
      raise DataError(f"{os.path.join(directory, f'set-{s}')}: set directory not found")
  return names


def _record_files(directory: str, set_name: str) -> list[str]:
  folder = os.path.join(directory, f"set-{set_name}")
  files = sorted(f for f in os.listdir(folder)
                 if f.endswith(".txt") and not f.startswith("."))
  if not files:
    raise DataError(f"{folder}: no <RecordID>.txt record files")
  return [os.path.join(folder, f) for f in files]


def _keep_files(paths: Sequence[str], keep: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
  """`keep` of the RecordIDs named by the files; True for a file not named <integer>.txt."""
  stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  numeric = np.asarray([s.isdigit() for s in stems], bool)
  out = np.ones(len(paths), bool)
  if numeric.any():
    out[numeric] = keep(np.asarray([int(s) for s, n in zip(stems, numeric) if n], np.int64))
  return out


def _labels(outcomes: pl.DataFrame, tasks: Sequence[str]) -> np.ndarray:
  cols = []
  for t in tasks:
    if t == "in_hospital_death":
      y = outcomes["In-hospital_death"].cast(pl.Float64)
    else:   # los_gt_7
      y = (outcomes["Length_of_stay"] > 7).cast(pl.Float64)
    cols.append(y.fill_null(np.nan).to_numpy())
  return np.stack(cols, axis=1).astype(np.float32)


def load_physionet2012(directory: str | os.PathLike, *, sets: Sequence[str] | None = None,
                       tasks: Sequence[str] = ("in_hospital_death",),
                       window_hours: float = 48.0,
                       keep: Callable[[np.ndarray], np.ndarray] | None = None
                       ) -> tuple[Cohort, dict[str, Any]]:
  """Reads the challenge files into a validated `Cohort` plus a load report.

  Args:
    directory: the folder holding ``set-*/`` and ``Outcomes-*.txt``.
    sets: set names to read, e.g. ``("a", "b")`` (default: every ``set-*`` present).
    tasks: any of `TASKS`, in this order.
    window_hours: time-series values at 0 <= time <= window_hours count.
    keep: RecordIDs -> bool mask (`shards.keep_fn`): read only those records (selected by
      file name; files not named by an integer are read, and fail the usual check) and
      their outcome lines. The counts in `info` are then this subset's.

  Returns:
    (cohort, info). Cohort modalities: ``descriptors`` then `GROUPS`; patient_id =
    RecordID (int64). ``info``: ``set`` ((N,) numpy array of set names per row, e.g.
    "a"), ``sets``, ``n_stays_read`` (per set and ``total``), ``n_stays`` (kept),
    ``n_no_time_series`` and ``no_time_series_ids`` (dropped stays), ``n_measurements``
    (time-series lines read), ``n_descriptor_lines``, ``out_of_range_dropped``
    (variable -> count), ``descriptors`` (descriptor -> not_recorded / out_of_range
    counts over kept stays), ``observed_fraction`` (modality -> fraction of kept
    stays), ``labels_known`` and ``positives`` per task, and ``featurize`` (the
    featuriser's report).

  Raises:
    DataError: bad input, naming the file and line.
  """
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise DataError(f"{directory}: PhysioNet 2012 directory not found")
  tasks = check_tasks(tasks, TASKS)
  set_names = _set_names(directory, sets)

  paths, set_of_F, outcome_rows = [], [], []
  for s in set_names:
    outcome_path = os.path.join(directory, f"Outcomes-{s}.txt")
    if not os.path.isfile(outcome_path):
      raise DataError(f"{outcome_path}: outcomes file not found for set-{s}")
    files = _record_files(directory, s)
    if keep is not None:
      files = [f for f, k in zip(files, _keep_files(files, keep)) if k]
    paths += files
    set_of_F += [s] * len(files)
  if not paths:
    raise DataError(f"{directory}: none of the records of sets {set_names} belongs to this "
                    f"process's patients (keep); use fewer train.data_shards")
  desc, series = _parse_records(paths)
  ids_F = _record_ids(desc, paths)
  set_of_F = np.asarray(set_of_F)

  start = 0
  for s in set_names:
    k = int((set_of_F == s).sum())
    outcome_path = os.path.join(directory, f"Outcomes-{s}.txt")
    outcomes_s = _parse_outcomes(outcome_path)
    if keep is not None:
      outcomes_s = outcomes_s.filter(
          pl.Series(np.asarray(keep(outcomes_s["RecordID"].to_numpy()), bool)))
    outcome_rows.append(_match_outcomes(outcomes_s, outcome_path,
                                        ids_F[start:start + k], paths[start:start + k]))
    start += k
  outcomes = pl.concat(outcome_rows)          # in file order, like ids_F

  set_rank_F = np.repeat(np.arange(len(set_names)),
                         [int((set_of_F == s).sum()) for s in set_names])
  order_F = np.lexsort((ids_F, set_rank_F))   # rows: by set, then RecordID
  x_desc_Fx8, not_recorded, desc_oor = _descriptor_features(desc, len(paths))

  measurements = pl.DataFrame({
      "stay_id": ids_F[series["file"].to_numpy()],
      "time": series["hours"], "variable": series["param"], "value": series["value"]})
  feats = featurize(measurements, GROUPS, stays=ids_F[order_F],
                    window=(0.0, float(window_hours)), valid_ranges=VALID_RANGES,
                    out_of_range="drop", unknown_variables="error")

  keep_N = feats.present.any(axis=1)
  rows_F = order_F[keep_N]
  dropped = ids_F[order_F][~keep_N]
  if len(dropped):
    logging.warning("PhysioNet 2012: dropped %d stay(s) with no time-series value in "
                    "[0, %g] h: RecordID %s", len(dropped), window_hours,
                    dropped[:10].tolist())
  features = (x_desc_Fx8[rows_F],) + tuple(f[keep_N] for f in feats.features)
  present_NxM = np.concatenate([np.ones((len(rows_F), 1), dtype=bool),
                                feats.present[keep_N]], axis=1)
  labels_NxT = _labels(outcomes, tasks)[rows_F]
  cohort = Cohort(
      patient_id=ids_F[rows_F], features=features, present=present_NxM, labels=labels_NxT,
      modality_names=(DESCRIPTORS_MODALITY,) + feats.group_names, task_names=tuple(tasks),
      feature_names=(DESCRIPTOR_FEATURES,) + feats.feature_names)
  try:
    cohort.validate(directory)
  except ValueError as e:
    raise DataError(str(e)) from None

  info = {
      "directory": directory,
      "set": set_of_F[rows_F],
      "sets": list(set_names),
      "n_stays_read": {**{s: int((set_of_F == s).sum()) for s in set_names},
                       "total": len(paths)},
      "n_stays": cohort.n,
      "n_no_time_series": int(len(dropped)),
      "no_time_series_ids": dropped.tolist(),
      "n_measurements": int(len(series)),
      "n_descriptor_lines": int(len(desc)),
      "out_of_range_dropped": dict(feats.report["out_of_range"]),
      "descriptors": {k: {"not_recorded": int(not_recorded[k][rows_F].sum()),
                          "out_of_range": int(desc_oor[k][rows_F].sum())}
                      for k in not_recorded},
      "observed_fraction": {m: float(present_NxM[:, j].mean())
                            for j, m in enumerate(cohort.modality_names)},
      "labels_known": {t: int((~np.isnan(labels_NxT[:, j])).sum())
                       for j, t in enumerate(tasks)},
      "positives": {t: int(np.nansum(labels_NxT[:, j])) for j, t in enumerate(tasks)},
      "featurize": feats.report,
  }
  logging.info("PhysioNet 2012 %s: %d stays read, %d kept, %d time-series values, "
               "observed fraction %s", set_names, len(paths), cohort.n, len(series),
               {m: round(f, 3) for m, f in info["observed_fraction"].items()})
  return cohort, info
