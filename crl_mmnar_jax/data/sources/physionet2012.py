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

Imperfect input (the row policy of `data.row_policy`). Released sets are not clean: one
published test set has about 2,400 lines with an empty parameter name (``10:45,,1.9``)
in about 1,600 of its 4,000 records. By default each imperfect line is SKIPPED and
counted per file and per problem in ``info["skipped"]`` (one summary line is logged):
malformed lines (not three fields), times not ``HH:MM``, unknown (or empty) parameter
names, values that are not numbers, lines not UTF-8, descriptors not at 00:00 or given
twice (the later line), and in the Outcomes files lines that do not parse, death flags
other than 0/1/-1, negative lengths of stay and repeated RecordIDs (the later line).
Records that cannot be used are DROPPED and counted (``info["records_dropped"]``): no
RecordID line (an empty file), a RecordID that is not a positive integer, does not match
the file name or repeats an earlier file's, and records without an outcome line; outcome
lines without a record file are skipped. Values outside `VALID_RANGES` are dropped (as
above) and also counted per file in ``info["skipped"]``. With ``strict=True`` every one
of these problems except the valid ranges raises `DataError` naming the file and line
(``path:line: problem``). Unreadable input always raises: a missing folder or Outcomes
file, or an Outcomes header lacking a needed column.

Reading is vectorised: every file's bytes are read, concatenated and parsed in one
polars pass (set A, 1.76 M lines: about 1 s to parse, 1-1.5 s with featurisation
on 2 cores).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
import polars as pl
from absl import logging

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.featurize import ModalityGroup, featurize
from crl_mmnar_jax.data.io import check_tasks, link_copied_as_text
from crl_mmnar_jax.data.loaded import (
  Keep,
  LoadedData,
  csv_list,
  fixed_test,
  strict_rows,
  summary,
)
from crl_mmnar_jax.data.row_policy import RowProblems
from crl_mmnar_jax.data.sources.physionet2012_files import (
  match_outcomes,
  parse_outcomes,
  parse_records,
  record_ids,
)

SOURCE_URL = "https://physionet.org/files/challenge-2012/1.0.0"   # open access


def download_hint(directory: str, set_name: str = "a") -> str:
  """How to fetch one set (records and outcomes) into `directory`, for missing-file
  messages."""
  d = directory
  return (f"download set {set_name.upper()} with `mkdir -p {d} && wget -N -c -P {d} "
          f"{SOURCE_URL}/set-{set_name}.tar.gz {SOURCE_URL}/Outcomes-{set_name}.txt && "
          f"tar -xzf {d}/set-{set_name}.tar.gz -C {d}` (see docs/data.md)")


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

STATIC = ("RecordID", "Age", "Gender", "Height", "ICUType")   # descriptors besides Weight
PARAMETERS = STATIC + tuple(v for g in GROUPS for v in g.variables)


# ----------------------------------------------------------------------------- records


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


# ----------------------------------------------------------------------------- loading


def _set_names(directory: str, sets: Sequence[str] | None) -> list[str]:
  if sets is None:
    names = sorted(d[len("set-"):] for d in os.listdir(directory)
                   if d.startswith("set-") and os.path.isdir(os.path.join(directory, d)))
    if not names:
      raise DataError(f"{directory}: no set-* directory (expected e.g. set-a/ with "
                      f"<RecordID>.txt files and Outcomes-a.txt); {download_hint(directory)}")
    return names
  names = [str(s) for s in sets]
  if not names or len(set(names)) != len(names):
    raise DataError(f"sets={names!r} must name at least one set, each once")
  for s in names:
    folder = os.path.join(directory, f"set-{s}")
    if not os.path.isdir(folder):
      raise DataError(f"{folder}: {link_copied_as_text(folder) or 'no such folder'}; "
                      f"{download_hint(directory, s)}")
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
                       keep: Callable[[np.ndarray], np.ndarray] | None = None,
                       strict: bool = False) -> tuple[Cohort, dict[str, Any]]:
  """Reads the challenge files into a validated `Cohort` plus a load report.

  Args:
    directory: the folder holding ``set-*/`` and ``Outcomes-*.txt``.
    sets: set names to read, e.g. ``("a", "b")`` (default: every ``set-*`` present).
    tasks: any of `TASKS`, in this order.
    window_hours: time-series values at 0 <= time <= window_hours count.
    keep: RecordIDs -> bool mask (`shards.keep_fn`): read only those records (selected by
      file name; files not named by an integer are read, and fail the usual check) and
      their outcome lines. The counts in `info` are then this subset's.
    strict: refuse the first imperfect line or record (``path:line: problem``) instead
      of skipping and counting it (see the module docstring).

  Returns:
    (cohort, info). Cohort modalities: ``descriptors`` then `GROUPS`; patient_id =
    RecordID (int64). ``info``: ``set`` ((N,) numpy array of set names per row, e.g.
    "a"), ``sets``, ``n_stays_read`` (per set and ``total``), ``n_stays`` (kept),
    ``n_no_time_series`` and ``no_time_series_ids`` (dropped stays),
    ``records_dropped`` (reason -> record files dropped for it) and
    ``n_records_dropped``, ``skipped`` (`RowProblems.report`: lines and records skipped
    per file and per problem, plus values outside their valid range per file),
    ``n_measurements`` (time-series lines used), ``n_descriptor_lines``,
    ``out_of_range_dropped`` (variable -> count), ``descriptors`` (descriptor ->
    not_recorded / out_of_range counts over kept stays), ``observed_fraction``
    (modality -> fraction of kept stays), ``labels_known`` and ``positives`` per task,
    and ``featurize`` (the featuriser's report).

  Raises:
    DataError: unreadable input (a missing folder or file, an Outcomes header lacking a
      column); with ``strict``, also every imperfect line, naming the file and line.
  """
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise DataError(f"{directory}: no such folder (PhysioNet 2012, data.dir); point "
                    f"--config.data.dir at your copy, or {download_hint(directory)}")
  tasks = check_tasks(tasks, TASKS)
  set_names = _set_names(directory, sets)
  problems = RowProblems(strict)

  paths, set_of_F = [], []
  for s in set_names:
    outcome_path = os.path.join(directory, f"Outcomes-{s}.txt")
    if not os.path.isfile(outcome_path):
      raise DataError(f"{outcome_path}: no such file (the outcomes of set-{s}); "
                      f"{download_hint(directory, s)}")
    if link := link_copied_as_text(outcome_path):   # holds a path, not the outcomes
      raise DataError(f"{outcome_path}: {link}")
    files = _record_files(directory, s)
    if keep is not None:
      files = [f for f, k in zip(files, _keep_files(files, keep)) if k]
    paths += files
    set_of_F += [s] * len(files)
  if not paths:
    raise DataError(f"{directory}: none of the records of sets {set_names} belongs to this "
                    f"process's patients (keep); use fewer train.data_shards")
  desc, series = parse_records(paths, STATIC, PARAMETERS, problems)
  ids_F, dropped = record_ids(desc, paths, problems)
  set_of_F = np.asarray(set_of_F)
  stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  dropped_ids = {int(stems[f]) for f in np.flatnonzero(ids_F < 0) if stems[f].isdigit()}

  start, outcome_rows, has_outcome = 0, [], []
  for s in set_names:
    k = int((set_of_F == s).sum())
    outcome_path = os.path.join(directory, f"Outcomes-{s}.txt")
    outcomes_s = parse_outcomes(outcome_path, problems)
    if keep is not None:
      outcomes_s = outcomes_s.filter(
          pl.Series(np.asarray(keep(outcomes_s["RecordID"].to_numpy()), bool)))
    rows, has = match_outcomes(outcomes_s, outcome_path, ids_F[start:start + k],
                               paths[start:start + k], problems, dropped_ids)
    outcome_rows.append(rows)
    has_outcome.append(has)
    start += k
  outcomes = pl.concat(outcome_rows)          # in file order, like ids_F
  usable_F = (ids_F > 0) & np.concatenate(has_outcome)
  for f in np.flatnonzero((ids_F > 0) & ~usable_F):
    dropped.setdefault("no outcome line", []).append(paths[f])
  if not usable_F.any():
    raise DataError(f"{directory}: no usable record in sets {set_names} (dropped: "
                    f"{ {r: len(v) for r, v in dropped.items()} })")

  set_rank_F = np.repeat(np.arange(len(set_names)),
                         [int((set_of_F == s).sum()) for s in set_names])
  order_F = np.lexsort((ids_F, set_rank_F))   # rows: by set, then RecordID
  order_F = order_F[usable_F[order_F]]
  x_desc_Fx8, not_recorded, desc_oor = _descriptor_features(desc, len(paths))

  series = series.filter(pl.Series(usable_F[series["file"].to_numpy()]))
  _count_out_of_range(series, paths, float(window_hours), problems)
  measurements = pl.DataFrame({
      "stay_id": ids_F[series["file"].to_numpy()],
      "time": series["hours"], "variable": series["param"], "value": series["value"]})
  feats = featurize(measurements, GROUPS, stays=ids_F[order_F],
                    window=(0.0, float(window_hours)), valid_ranges=VALID_RANGES,
                    out_of_range="drop", unknown_variables="error")

  keep_N = feats.present.any(axis=1)
  rows_F = order_F[keep_N]
  no_series = ids_F[order_F][~keep_N]
  if len(no_series):
    logging.warning("PhysioNet 2012: dropped %d stay(s) with no time-series value in "
                    "[0, %g] h (their RecordIDs: info['no_time_series_ids'])",
                    len(no_series), window_hours)
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

  problems.log(f"PhysioNet 2012 {directory}")
  info = {
      "directory": directory,
      "set": set_of_F[rows_F],
      "sets": list(set_names),
      "n_stays_read": {**{s: int((set_of_F == s).sum()) for s in set_names},
                       "total": len(paths)},
      "n_stays": cohort.n,
      "n_no_time_series": int(len(no_series)),
      "no_time_series_ids": no_series.tolist(),
      "records_dropped": dropped,
      "n_records_dropped": sum(len(v) for v in dropped.values()),
      "skipped": problems.report(),
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


def _count_out_of_range(series: pl.DataFrame, paths: Sequence[str], window_hours: float,
                        problems: RowProblems) -> None:
  """Counts, per file, the in-window values outside `VALID_RANGES` (featurize drops
  them). Counted only: the valid ranges filter sensor artefacts, they do not refuse a
  file even in strict mode."""
  names = list(VALID_RANGES)
  lo = pl.col("param").replace_strict(names, [VALID_RANGES[v][0] for v in names])
  hi = pl.col("param").replace_strict(names, [VALID_RANGES[v][1] for v in names])
  bad = series.filter(pl.col("hours").is_between(0.0, window_hours)
                      & ~pl.col("value").is_between(lo, hi))
  for f, param, n in bad.group_by("file", "param").len().iter_rows():
    lo_v, hi_v = VALID_RANGES[param]
    problems.found(paths[f], f"{param} outside its valid range [{lo_v:g}, {hi_v:g}]", n,
                   "", refuse=False)


def from_config(config: ml_collections.ConfigDict, keep: Keep | None = None) -> LoadedData:
  """`data.name = "physionet2012"`: the sets `data.train_sets` + `data.test_sets` (every
  set if both are empty); the latter's rows are fixed to the test split."""
  d = config.data
  train, test = csv_list(d.train_sets), csv_list(d.test_sets)
  sets = (train + test) or None
  cohort, info = load_physionet2012(d.dir, sets=sets, tasks=tuple(csv_list(d.tasks)),
                                    window_hours=float(d.window_hours), keep=keep,
                                    strict=strict_rows(d))
  if not test:
    return LoadedData(cohort, None, summary(info))
  keep, is_test = fixed_test(info["set"], train, test, "set", d.dir)
  return LoadedData(cohort.subset(keep), None, summary(info), is_test[keep])
