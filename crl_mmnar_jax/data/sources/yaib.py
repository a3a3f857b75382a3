"""YAIB cohorts (MIMIC-III / eICU-CRD harmonised by ricu) as a multimodal `Cohort`.

The YAIB benchmark (van de Water et al., "Yet Another ICU Benchmark", ICLR 2024) ships
each task and database as three parquet files in ``ROOT/<task>/<database>/``:

* ``sta.parquet``: one row per stay: ``stay_id`` (integer), ``age``, ``sex``
  (``"Male"``/``"Female"``), ``height``, ``weight`` (null = not recorded).
* ``dyn.parquet``: the hourly grid: ``stay_id``, ``time`` (a polars/arrow Duration
  since ICU admission: 0 h, 1 h, ...), and one column per variable in `GROUPS`
  (null or NaN = not measured in that hour).
* ``outc.parquet``: ``stay_id``, ``label`` (0/1; for ``mortality24``: death in the
  ICU). One row per stay: tasks with hourly labels (aki, sepsis) or a regression
  target (los) are not read by this loader.

Modalities. Modality 0, ``static``, holds ``age``, ``sex`` (1 = male, 0 = female),
``height`` and ``weight`` (NaN = not recorded) and is observed for every stay. The 48
dynamic variables are split into *virtual modalities*: groups of variables that a
clinician orders or charts together, so that whether a group was measured at all in
the first hours is a clinical decision (missing not at random). Each group is
summarised per stay by `featurize.featurize` (8 statistics per variable: last, mean,
min, max, std, count, time_last, slope; hours since admission); a group is observed
when at least one of its variables was measured in the window.

=============  =====================================  ====================================
modality       YAIB variables                         why together
=============  =====================================  ====================================
vitals         hr, sbp, dbp, map, resp, o2sat, temp   bedside monitor and nursing
                                                      charting; (almost) always observed
urine          urine                                  hourly urine output: charted where a
                                                      urinary catheter / strict fluid
                                                      balance was ordered
blood_gas      ph, pco2, po2, be, methb, cai, fio2    arterial blood gas with
                                                      co-oximetry (methaemoglobin) and
                                                      ionised calcium from the same
                                                      analyser; FiO2 is recorded with the
                                                      oxygen / ventilator settings that
                                                      ABGs are taken to adjust (P/F ratio)
chemistry      na, k, cl, bicar, bun, crea, glu,      basic / extended metabolic panel
               ca, mg, phos                           ("chem-7" plus Ca, Mg, phosphate)
haematology    hgb, wbc, plt, mch, mchc, mcv          complete blood count
inflammation   neut, lymph, bnd, crp                  white-cell differential (bands =
                                                      left shift) and CRP: ordered in an
                                                      infection / sepsis work-up, unlike
                                                      the routine CBC
coagulation    inr_pt, ptt, fgn                       coagulation panel (PT/INR, aPTT,
                                                      fibrinogen)
liver          alt, ast, alp, bili, bili_dir, alb     hepatic function panel
cardiac        tnt, ck, ckmb                          cardiac injury markers (troponin T,
                                                      CK, CK-MB)
lactate        lact                                   lactate: ordered on suspicion of
                                                      shock / hypoperfusion (sepsis
                                                      bundles), a strong severity signal
=============  =====================================  ====================================

On the demo data, vitals are observed for 97% (MIMIC) and 99.9% (eICU) of stays and
chemistry for 100% / 96%: nearly-always-observed virtual modalities are kept (they
carry most of the signal); `load_yaib` reports every group's observed fraction.

Time window. ricu bins measurements into hours by truncation, so the row at time t
holds what was measured in [t, t + 1) h. ``window_hours=24`` keeps the rows with
0 <= t < 24, i.e. the first 24 hours; YAIB's files also hold the row t = 24 h (data
from the 25th hour), which is dropped and counted in the report
(``dyn_rows_outside_window``, ``measurements_outside_window``). No valid ranges are
applied here: ricu filters each concept by its own plausibility bounds when it builds
the YAIB files.

Patients. YAIB's files identify ICU *stays*, not patients, and stay ids may collide
across databases: ``patient_id`` is ``f"{database}:{stay_id}"`` and
``info["database"]`` says where each row came from (the runner trains and validates on
one database and tests on the other). Both databases give exactly the same modalities
and feature columns. ``group_id`` is None: the files hold no patient identifier.

Imperfect rows (the row policy of `data.row_policy`): by default skipped and counted per
file and per problem in ``info["skipped"]``: rows with a null ``stay_id`` or time,
every row of a stay id repeated in outc or sta, stays whose label is not 0/1 and stays
of outc without a row in sta (both DROPPED from the cohort), sta and dyn rows of stays
not in the cohort, a stay's repeated hour in dyn (the later row); ±Inf values and sex
strings other than Male/Female read as not recorded. ``strict=True`` raises
`DataError` at the first of them, naming the file and column. A missing file or column
or a column of the wrong type always raises.
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
from crl_mmnar_jax.data.io import read_kept_rows, read_parquet
from crl_mmnar_jax.data.loaded import LoadedData, csv_list, fixed_test, strict_rows, summary
from crl_mmnar_jax.data.row_policy import RowProblems

DATABASES = ("mimic_demo", "eicu_demo")
SOURCE_REPO = "https://github.com/rvandewater/YAIB"   # demo_data/<task>/<database>/, open


def download_hint(root: str) -> str:
  """How to fetch the open demo cohorts into the data root, for missing-file messages."""
  return (f"get the YAIB demo cohorts with `git clone --depth 1 {SOURCE_REPO} /tmp/YAIB && "
          f"mkdir -p {root} && cp -r /tmp/YAIB/demo_data/mortality24 {root}/` "
          f"(see docs/data.md)")
STA_FILE = "sta.parquet"
DYN_FILE = "dyn.parquet"
OUTC_FILE = "outc.parquet"
STAY_COLUMN = "stay_id"
TIME_COLUMN = "time"
LABEL_COLUMN = "label"
STATIC_MODALITY = "static"
STATIC_FEATURES = ("age", "sex", "height", "weight")
SEX_CODES = {"male": 1.0, "female": 0.0}

GROUPS: tuple[ModalityGroup, ...] = (
    ModalityGroup("vitals", ("hr", "sbp", "dbp", "map", "resp", "o2sat", "temp")),
    ModalityGroup("urine", ("urine",)),
    ModalityGroup("blood_gas", ("ph", "pco2", "po2", "be", "methb", "cai", "fio2")),
    ModalityGroup("chemistry", ("na", "k", "cl", "bicar", "bun", "crea", "glu", "ca",
                                "mg", "phos")),
    ModalityGroup("haematology", ("hgb", "wbc", "plt", "mch", "mchc", "mcv")),
    ModalityGroup("inflammation", ("neut", "lymph", "bnd", "crp")),
    ModalityGroup("coagulation", ("inr_pt", "ptt", "fgn")),
    ModalityGroup("liver", ("alt", "ast", "alp", "bili", "bili_dir", "alb")),
    ModalityGroup("cardiac", ("tnt", "ck", "ckmb")),
    ModalityGroup("lactate", ("lact",)),
)
DYN_VARIABLES: tuple[str, ...] = tuple(v for g in GROUPS for v in g.variables)
MODALITY_NAMES: tuple[str, ...] = (STATIC_MODALITY,) + tuple(g.name for g in GROUPS)

_MS_PER_HOUR = 3_600_000.0


# ----------------------------------------------------------------------------- helpers


Keep = Callable[[np.ndarray], np.ndarray]   # stay ids -> bool mask of stays to read


def _read(path: str, keep: Keep | None = None) -> pl.DataFrame:
  if not os.path.isfile(path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(path)))
    raise DataError(f"{path}: file not found; {download_hint(root)}")
  if keep is not None:
    return read_kept_rows(path, keep, STAY_COLUMN)
  return read_parquet(path)


def _require_columns(df: pl.DataFrame, path: str, columns: Sequence[str]) -> None:
  missing = [c for c in columns if c not in df.columns]
  if missing:
    raise DataError(f"{path}: missing column(s) {missing} (found {df.columns})")


def _stay_ids(df: pl.DataFrame, path: str, problems: RowProblems, *, unique: bool
              ) -> tuple[pl.DataFrame, pl.Series]:
  """(rows kept, their stay_id as Int64): the column checked for presence and dtype;
  rows with a null id, and (`unique`) every row of an id that repeats, are skipped and
  counted (strict: DataError)."""
  _require_columns(df, path, [STAY_COLUMN])
  dtype = df.schema[STAY_COLUMN]
  if not dtype.is_integer():
    raise DataError(f"{path}: column '{STAY_COLUMN}' has dtype {dtype}; YAIB stay ids "
                    f"are integers")
  try:
    df = df.with_columns(pl.col(STAY_COLUMN).cast(pl.Int64))
  except Exception as e:  # pylint: disable=broad-except  (UInt64 beyond Int64)
    raise DataError(f"{path}: column '{STAY_COLUMN}' cannot be read as Int64 ({e})") from None
  n_null = df[STAY_COLUMN].null_count()
  problems.found(path, f"null {STAY_COLUMN} (row skipped)", n_null,
                 f"{path}: column '{STAY_COLUMN}' has {n_null} null value(s)")
  df = df.filter(pl.col(STAY_COLUMN).is_not_null())
  if unique:
    rep = df[STAY_COLUMN].is_duplicated()
    dup = df[STAY_COLUMN].filter(rep)
    problems.found(path, f"{STAY_COLUMN} repeated (every row of that stay skipped)",
                   len(dup), lambda: f"{path}: column '{STAY_COLUMN}' repeats "
                                     f"{dup.n_unique()} stay id(s) in {len(dup)} rows; "
                                     f"one row per stay is required")
    df = df.filter(~rep)
  return df, df[STAY_COLUMN]


def _numeric(df: pl.DataFrame, path: str, column: str, problems: RowProblems
             ) -> pl.Series:
  """A numeric column as Float64 with null -> NaN; ±Inf reads as NaN (not recorded),
  counted (strict: DataError)."""
  dtype = df.schema[column]
  if not (dtype.is_numeric() or dtype == pl.Null):
    raise DataError(f"{path}: column '{column}' has dtype {dtype}; expected numbers")
  x = df[column].cast(pl.Float64)
  inf = x.is_infinite().fill_null(False)
  n_inf = int(inf.sum())
  problems.found(path, f"{column}: ±Inf (read as not recorded)", n_inf,
                 f"{path}: column '{column}' holds ±Inf in {n_inf} row(s); use null for a "
                 f"value not recorded")
  return x.set(inf, None).fill_null(float("nan")) if n_inf else x.fill_null(float("nan"))


def _not_in(ids: pl.Series, other: pl.Series) -> pl.Series:
  return ids.filter(~ids.is_in(other.implode()))


# ----------------------------------------------------------------------------- files


def _read_outc(path: str, problems: RowProblems, keep: Keep | None = None
               ) -> tuple[pl.Series, np.ndarray, pl.Series]:
  """outc.parquet -> (stay ids, labels float32 0/1, every stay id of the file). Stays
  whose label is not 0/1 (or null) are dropped and counted (strict: DataError)."""
  df = _read(path, keep)
  listed = df[STAY_COLUMN].drop_nulls() if STAY_COLUMN in df.columns else None
  df, ids = _stay_ids(df, path, problems, unique=True)
  if len(ids) == 0 and keep is not None:
    raise DataError(f"{path}: none of its stays belongs to this process (keep); use "
                    f"fewer train.data_shards")
  if len(ids) == 0:
    raise DataError(f"{path}: no rows (no stays)")
  _require_columns(df, path, [LABEL_COLUMN])
  dtype = df.schema[LABEL_COLUMN]
  if not (dtype.is_numeric() or dtype == pl.Boolean):
    raise DataError(f"{path}: column '{LABEL_COLUMN}' has dtype {dtype}; labels must be "
                    f"0/1")
  y = df[LABEL_COLUMN].cast(pl.Float64)
  bad_rows = (y.is_null() | ~y.is_in([0.0, 1.0])).fill_null(True)
  if bad_rows.any():
    problems.found(path, f"{LABEL_COLUMN} not 0 or 1 (stay dropped)", int(bad_rows.sum()),
                   f"{path}: column '{LABEL_COLUMN}' must hold 0 or 1 for every stay; "
                   f"{int(bad_rows.sum())} row(s) hold null or another value")
    ids, y = ids.filter(~bad_rows), y.filter(~bad_rows)
  return ids, y.to_numpy().astype(np.float32), listed.cast(pl.Int64)


def _read_sta(path: str, outc_ids: pl.Series, listed: pl.Series, outc_path: str,
              problems: RowProblems, keep: Keep | None = None
              ) -> tuple[pl.Series, np.ndarray]:
  """sta.parquet -> (the stays of `outc_ids` that have a row, in that order; (N, 4)
  float32 static features, NaN = not recorded). Stays of outc without a row here are
  dropped, and rows of stays nowhere in outc (`listed`) skipped, each counted (strict:
  DataError)."""
  df = _read(path, keep)
  df, ids = _stay_ids(df, path, problems, unique=True)
  _require_columns(df, path, STATIC_FEATURES)
  extra = [c for c in df.columns if c not in (STAY_COLUMN, *STATIC_FEATURES)]
  if extra:
    raise DataError(f"{path}: unexpected column(s) {extra}; the static modality is "
                    f"{[STAY_COLUMN, *STATIC_FEATURES]}")
  orphans = _not_in(outc_ids, ids)
  problems.found(outc_path, f"stay without a row in {STA_FILE} (stay dropped)",
                 len(orphans), lambda: f"{outc_path}: {len(orphans)} stay(s) in column "
                                       f"'{STAY_COLUMN}' have no row in {path}")
  outc_ids = outc_ids.filter(outc_ids.is_in(ids.implode()))
  orphans = _not_in(ids, listed)
  problems.found(path, f"stay without a row in {OUTC_FILE} (row skipped)", len(orphans),
                 lambda: f"{path}: {len(orphans)} stay(s) in column '{STAY_COLUMN}' have "
                         f"no row in {outc_path}")
  sex_dtype = df.schema["sex"]
  if sex_dtype == pl.Null:
    sex = pl.Series("sex", [float("nan")] * len(df))
  elif sex_dtype == pl.String or isinstance(sex_dtype, (pl.Categorical, pl.Enum)):
    key = df["sex"].cast(pl.String).str.strip_chars().str.to_lowercase()
    unknown = key.is_not_null() & ~key.is_in(list(SEX_CODES))
    bad = df["sex"].filter(unknown)
    problems.found(path, "sex not 'Male'/'Female' (read as not recorded)", len(bad),
                   lambda: f"{path}: column 'sex' must hold 'Male', 'Female' or null; "
                           f"{len(bad)} row(s) hold another value")
    sex = key.replace_strict(SEX_CODES, default=None, return_dtype=pl.Float64)
    sex = sex.fill_null(float("nan"))
  else:
    raise DataError(f"{path}: column 'sex' has dtype {sex_dtype}; YAIB writes the "
                    f"strings 'Male'/'Female'")
  static = pl.DataFrame({
      STAY_COLUMN: ids,
      "age": _numeric(df, path, "age", problems),
      "sex": sex,
      "height": _numeric(df, path, "height", problems),
      "weight": _numeric(df, path, "weight", problems),
  })
  ordered = pl.DataFrame({STAY_COLUMN: outc_ids}).join(
      static, on=STAY_COLUMN, how="left", maintain_order="left")
  return outc_ids, ordered.select(STATIC_FEATURES).to_numpy().astype(np.float32)


def _read_dyn(path: str, outc_ids: pl.Series, listed: pl.Series, outc_path: str,
              window_hours: float, problems: RowProblems, keep: Keep | None = None
              ) -> tuple[pl.DataFrame, dict[str, Any]]:
  """dyn.parquet -> long (stay_id, time [h], variable, value) inside the window of the
  stays `outc_ids`. Rows of stays nowhere in outc (`listed`), with a null time or
  repeating a stay's hour (the later ones) are skipped and counted (strict: DataError);
  rows of stays dropped before are left out quietly (counted where they were dropped)."""
  df = _read(path, keep)
  df, ids = _stay_ids(df, path, problems, unique=False)
  _require_columns(df, path, [TIME_COLUMN])
  variables = [c for c in df.columns if c not in (STAY_COLUMN, TIME_COLUMN)]
  unknown = [c for c in variables if c not in DYN_VARIABLES]
  if unknown:
    raise DataError(f"{path}: column(s) {unknown} are not YAIB variables of any modality "
                    f"in yaib.GROUPS; add them to a group or drop them")
  absent = [v for v in DYN_VARIABLES if v not in variables]
  if absent:
    raise DataError(f"{path}: missing variable column(s) {absent}; both databases must "
                    f"have every variable of yaib.GROUPS (all-null columns are fine)")
  time_dtype = df.schema[TIME_COLUMN]
  if not isinstance(time_dtype, pl.Duration):
    raise DataError(f"{path}: column '{TIME_COLUMN}' has dtype {time_dtype}; YAIB stores "
                    f"the time since admission as a Duration")
  n_null = df[TIME_COLUMN].null_count()
  problems.found(path, f"null {TIME_COLUMN} (row skipped)", n_null,
                 f"{path}: column '{TIME_COLUMN}' has {n_null} null value(s)")
  orphan_rows = ~ids.is_in(listed.implode())
  orphans = ids.filter(orphan_rows).unique()
  problems.found(path, f"stay without a row in {OUTC_FILE} (row skipped)",
                 int(orphan_rows.sum()),
                 lambda: f"{path}: {len(orphans)} stay(s) in column '{STAY_COLUMN}' have no "
                         f"row in {outc_path}")
  df = df.filter(pl.col(TIME_COLUMN).is_not_null()
                 & pl.col(STAY_COLUMN).is_in(outc_ids.implode()))
  ids = df[STAY_COLUMN]
  hours = (df[TIME_COLUMN].dt.total_milliseconds().cast(pl.Float64) / _MS_PER_HOUR)
  frame = pl.DataFrame({STAY_COLUMN: ids, TIME_COLUMN: hours}).with_columns(
      _numeric(df, path, v, problems).alias(v) for v in DYN_VARIABLES)
  dup = ~frame.select(pl.struct(STAY_COLUMN, TIME_COLUMN).is_first_distinct()).to_series()
  bad = frame.filter(dup)[STAY_COLUMN]
  problems.found(path, f"{STAY_COLUMN}, {TIME_COLUMN} repeated (later row skipped)",
                 len(bad), lambda: f"{path}: columns '{STAY_COLUMN}', '{TIME_COLUMN}' repeat "
                                   f"an hour for {bad.n_unique()} stay(s); "
                                   f"one row per stay and hour is required")
  frame = frame.filter(~dup)
  long = frame.unpivot(index=[STAY_COLUMN, TIME_COLUMN], on=list(DYN_VARIABLES),
                       variable_name="variable", value_name="value"
                       ).filter(pl.col("value").is_not_nan())
  inside = (pl.col(TIME_COLUMN) >= 0.0) & (pl.col(TIME_COLUMN) < window_hours)
  in_window = long.filter(inside)
  n_rows_outside = int(frame.select((~inside).sum()).item())
  info = {
      "dyn_rows": int(len(frame)),
      "dyn_rows_outside_window": n_rows_outside,
      "measurements": int(len(in_window)),
      "measurements_outside_window": int(len(long) - len(in_window)),
      "stays_with_dyn_rows": int(frame[STAY_COLUMN].n_unique()),
  }
  return in_window, info


# ----------------------------------------------------------------------------- loading


def _load_database(directory: str, database: str, task: str, window_hours: float,
                   problems: RowProblems, keep: Keep | None = None) -> dict[str, Any]:
  """One database folder -> arrays in the row order of outc.parquet, plus a report."""
  outc_path = os.path.join(directory, OUTC_FILE)
  sta_path = os.path.join(directory, STA_FILE)
  dyn_path = os.path.join(directory, DYN_FILE)
  if not os.path.isdir(directory):
    raise DataError(f"{directory}: no such folder (YAIB data for task '{task}' and "
                    f"database '{database}' not found); "
                    f"{download_hint(os.path.dirname(os.path.dirname(directory)))}")
  outc_ids, outc_labels, listed = _read_outc(outc_path, problems, keep)
  stay_ids, static_Nx4 = _read_sta(sta_path, outc_ids, listed, outc_path, problems, keep)
  labels_N = outc_labels[np.asarray(outc_ids.is_in(stay_ids.implode()), bool)]
  if len(stay_ids) == 0:
    raise DataError(f"{outc_path}: no stay has a usable label and a row in {sta_path}")
  long, dyn_info = _read_dyn(dyn_path, stay_ids, listed, outc_path, window_hours,
                             problems, keep)

  # `long` is already cut to [0, window_hours): featurize's window is closed at both
  # ends and would otherwise keep the row at t = window_hours (the next hour's data).
  feat = featurize(long, GROUPS, stays=stay_ids.to_numpy(), window=(0.0, window_hours),
                   stay_col=STAY_COLUMN, time_col=TIME_COLUMN, var_col="variable",
                   value_col="value", unknown_variables="error")
  if tuple(feat.group_names) != tuple(g.name for g in GROUPS):
    raise RuntimeError(f"featurize returned groups {feat.group_names}, expected "
                       f"{[g.name for g in GROUPS]}")
  # featurize's row order is its own: align on stay_id.
  rows = pl.DataFrame({STAY_COLUMN: stay_ids}).join(
      pl.DataFrame({STAY_COLUMN: pl.Series(np.asarray(feat.stay_id)).cast(pl.Int64)})
      .with_row_index("__row"), on=STAY_COLUMN, how="left", maintain_order="left")["__row"]
  if rows.null_count() or len(rows) != len(stay_ids):
    raise RuntimeError(f"featurize did not return one row per stay of {outc_path}")
  take = rows.to_numpy().astype(np.int64)
  return {
      "stay_id": stay_ids.to_numpy().astype(np.int64),
      "labels": labels_N,
      "static": static_Nx4,
      "features": tuple(np.asarray(f, dtype=np.float32)[take] for f in feat.features),
      "present": np.asarray(feat.present, dtype=bool)[take],
      "feature_names": tuple(tuple(n) for n in feat.feature_names),
      "report": feat.report,
      "dyn": dyn_info,
      "static_missing": {c: int(np.isnan(static_Nx4[:, j]).sum())
                         for j, c in enumerate(STATIC_FEATURES)},
  }


def _rate(y: np.ndarray) -> float | None:
  """Mean of 0/1 labels (float64), None for an empty group."""
  return float(y.astype(np.float64).mean()) if y.size else None


def load_yaib(root: str | os.PathLike, *, databases: Sequence[str] = DATABASES,
              task: str = "mortality24", window_hours: float = 24.0,
              keep: Callable[[np.ndarray], np.ndarray] | None = None,
              strict: bool = False) -> tuple[Cohort, dict[str, Any]]:
  """Reads YAIB task folders into one validated `Cohort` (one row per ICU stay).

  Args:
    root: the YAIB data root holding ``<task>/<database>/{sta,dyn,outc}.parquet``.
    databases: database folder names, concatenated in this order.
    task: the task folder; its ``outc.parquet`` must hold one 0/1 label per stay.
    window_hours: hourly rows with 0 <= time < window_hours are summarised (the row
      at time t holds hour [t, t + 1)).
    keep: patient ids (``"<database>:<stay_id>"``) -> bool mask (`shards.keep_fn`): read
      only those stays' rows of outc, sta and dyn. The counts in `info` are then this
      subset's.
    strict: refuse the first imperfect row instead of skipping and counting it.

  Returns:
    (cohort, info). The cohort has modalities `MODALITY_NAMES` (``static`` first,
    always observed), task names ``(task,)``, patient ids ``"<database>:<stay_id>"``.
    `info` holds ``database`` (an (N,) numpy array of database names per row),
    ``stay_id`` ((N,) int64), ``n_patients``, ``per_database`` (stays, deaths,
    mortality, dyn row and measurement counts, static values not recorded),
    ``modalities`` (per modality: variables, n_features, observed_fraction overall
    and per database with mortality when observed / not observed), and
    ``featurizer`` (featurize's report per database), and ``skipped``
    (`RowProblems.report`: rows skipped per file and per problem).

  Raises:
    DataError: a missing folder or file, a missing ``stay_id``/``label``/``time``
      column, a column of the wrong type, dyn columns that are not variables of
      `GROUPS`; with ``strict``, also every imperfect row (see the module docstring),
      naming the file and column.
  """
  root = os.fspath(root)
  databases = tuple(databases)
  if not databases:
    raise DataError("load_yaib: databases=() selects no database")
  if len(set(databases)) != len(databases):
    raise DataError(f"load_yaib: databases {list(databases)} name a database twice")
  if not np.isfinite(window_hours) or window_hours <= 0:
    raise DataError(f"load_yaib: window_hours must be positive, got {window_hours}")
  if not os.path.isdir(root):
    raise DataError(f"{root}: no such folder (YAIB data root not found, data.dir); point "
                    f"--config.data.dir at your copy, or {download_hint(root)}")

  def stays_kept(db: str) -> Keep | None:
    if keep is None:
      return None
    return lambda stays: np.asarray(keep(np.array([f"{db}:{s}" for s in stays.tolist()])),
                                    bool)

  problems = RowProblems(strict)
  parts = {db: _load_database(os.path.join(root, task, db), db, task, float(window_hours),
                              problems, stays_kept(db))
           for db in databases}
  problems.log(f"YAIB {root}")
  names = {parts[db]["feature_names"] for db in databases}
  if len(names) != 1:
    raise RuntimeError("featurize gave different feature columns per database")

  database_N = np.concatenate([np.full(len(p["stay_id"]), db) for db, p in parts.items()])
  stay_N = np.concatenate([p["stay_id"] for p in parts.values()])
  patient_id = np.array([f"{db}:{s}" for db, s in zip(database_N.tolist(),
                                                      stay_N.tolist())])
  labels_NxT = np.concatenate([p["labels"] for p in parts.values()])[:, None]
  static_NxS = np.concatenate([p["static"] for p in parts.values()])
  n_groups = len(GROUPS)
  group_features = tuple(
      np.concatenate([p["features"][g] for p in parts.values()]) for g in range(n_groups))
  present_NxM = np.concatenate(
      [np.ones((len(database_N), 1), dtype=bool),
       np.concatenate([p["present"] for p in parts.values()])], axis=1)
  cohort = Cohort(
      patient_id=patient_id,
      features=(static_NxS,) + group_features,
      present=present_NxM,
      labels=labels_NxT.astype(np.float32),
      modality_names=MODALITY_NAMES,
      task_names=(task,),
      feature_names=(STATIC_FEATURES,) + next(iter(names)),
  )
  try:
    cohort.validate(f"{root} ({task}: {', '.join(databases)})")
  except ValueError as e:
    raise DataError(str(e)) from None

  y_N = labels_NxT[:, 0]
  modalities = {}
  for m, name in enumerate(MODALITY_NAMES):
    by_db = {}
    for db in databases:
      rows = database_N == db
      obs, y = present_NxM[rows, m], y_N[rows]
      by_db[db] = {
          "observed": int(obs.sum()),
          "observed_fraction": float(obs.mean()),
          "mortality_observed": _rate(y[obs]),
          "mortality_missing": _rate(y[~obs]),
      }
    modalities[name] = {
        "variables": list(STATIC_FEATURES if m == 0 else GROUPS[m - 1].variables),
        "n_features": int(cohort.input_dims[m]),
        "observed_fraction": float(present_NxM[:, m].mean()),
        "by_database": by_db,
    }
  info = {
      "root": root,
      "task": task,
      "databases": list(databases),
      "window_hours": float(window_hours),
      "n_patients": cohort.n,
      "database": database_N,
      "stay_id": stay_N,
      "per_database": {
          db: {"stays": int(len(p["stay_id"])), "deaths": int(p["labels"].sum()),
               "mortality": float(p["labels"].astype(np.float64).mean()), **p["dyn"],
               "static_not_recorded": p["static_missing"]}
          for db, p in parts.items()},
      "modalities": modalities,
      "featurizer": {db: p["report"] for db, p in parts.items()},
      "skipped": problems.report(),
  }
  logging.info("loaded YAIB %s from %s: %s; observed fraction per modality %s", task,
               root, {db: (d["stays"], d["deaths"]) for db, d in
                      info["per_database"].items()},
               {n: round(d["observed_fraction"], 3) for n, d in modalities.items()})
  return cohort, info


def from_config(config: ml_collections.ConfigDict, keep: Keep | None = None) -> LoadedData:
  """`data.name = "yaib"`: `data.databases` of `data.task`; the rows of
  `data.test_database`, if given, are fixed to the test split."""
  d = config.data
  cohort, info = load_yaib(d.dir, databases=tuple(csv_list(d.databases)), task=str(d.task),
                           window_hours=float(d.window_hours), keep=keep,
                           strict=strict_rows(d))
  if not d.test_database:
    return LoadedData(cohort, None, summary(info))
  _, is_test = fixed_test(info["database"], [], [str(d.test_database)], "database", d.dir)
  return LoadedData(cohort, None, summary(info), is_test)
