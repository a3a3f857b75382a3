"""Any MEDS dataset with labels in the MEDS label schema (`--config=meds`, docs/meds.md).

Inputs:

* ``meds_root``: a MEDS root. ``data/**/*.parquet`` holds the events (``subject_id``
  integer, ``time`` datetime, null for static events, ``code`` string,
  ``numeric_value`` number; read lazily through the `mimic` source's MEDS scanner);
  ``metadata/subject_splits.parquet`` (``subject_id, split``), when present, fixes the
  splits: train -> train, tuning -> val, held_out -> test (a labelled subject missing
  from it, or another split name, is an error). Without it the run's own splits are
  drawn by subject (``group_id`` = subject_id).
* ``task``: one labels parquet, or several comma-separated, each in the MEDS label
  schema (``subject_id`` integer, ``prediction_time`` datetime, ``boolean_value``
  boolean or 0/1, null = unknown; other columns ignored). Each file is one task, named
  by its file stem; several files become the multitask heads over the union of their
  (subject_id, prediction_time) rows, a task's label unknown where its file lacks the
  row. A row appears at most once per file; a task needs both classes.

The cohort's unit is one (subject_id, prediction_time) row; ``patient_id`` is
``"<subject_id>@<prediction_time ISO>"``, rows sorted by subject and time, and every
row of a subject stays in one split (``group_id``). Features are described in
`meds_features` (events strictly before the prediction time, within ``window_hours``
when > 0); ``modalities`` declares the code prefixes of each modality as
``name=PREFIX|PREFIX,name=PREFIX``, or names an ETL's vocabulary (``mimic-iv``, the
default `DEFAULT_MODALITIES`; ``eicu``, the eICU-CRD MEDS ETL's). A modality observed
for no row is dropped with a note. The code
vocabulary (most frequent codes) is counted over the training rows when
subject_splits.parquet gives them, else over every row (no label is read to choose it).

Bad input raises `DataError` in one line naming the file and the problem.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import polars as pl
from absl import logging

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.config.sources import MEDS_MODALITIES, MEDS_VOCABULARIES
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.io import write_parquet_atomic
from crl_mmnar_jax.data.loaded import Keep, LoadedData, csv_list
from crl_mmnar_jax.data.sources import aces
from crl_mmnar_jax.data.sources import meds_features as mf
from crl_mmnar_jax.data.sources.meds_root import SPLITS as SPLITS  # public here too
from crl_mmnar_jax.data.sources.meds_root import read_splits
from crl_mmnar_jax.data.sources.mimic.meds import scan_meds
from crl_mmnar_jax.data.sources.mimic.schema import TIMESTAMP
from crl_mmnar_jax.data.text_embed import get_encoder

# The MIMIC-IV MEDS ETL's codes (LAB//5xxxx labevents, LAB//22xxxx chartevents).
DEFAULT_MODALITIES = MEDS_MODALITIES
LABEL_COLUMNS = ("subject_id", "prediction_time", "boolean_value")
PREDICTION_COLUMNS = LABEL_COLUMNS + ("predicted_boolean_value", "predicted_boolean_probability")
RESERVED = ("demographics", "events")


def parse_modalities(spec: str) -> list[tuple[str, tuple[str, ...]]]:
  """"labs=LAB//5,meds=MEDICATION//|INFUSION_START//" -> [(name, prefixes), ...]; a
  vocabulary name ("mimic-iv", "eicu": `MEDS_VOCABULARIES`) stands for its prefixes."""
  spec = MEDS_VOCABULARIES.get(spec.strip().lower(), spec)
  out = []
  for part in csv_list(spec):
    name, sep, prefixes = part.partition("=")
    name = name.strip()
    prefixes = tuple(p for p in (s.strip() for s in prefixes.split("|")) if p)
    if not sep or not name or not prefixes:
      raise DataError(f"data.modalities: {part!r} is not name=PREFIX[|PREFIX...]")
    if name in RESERVED or name in [n for n, _ in out]:
      raise DataError(f"data.modalities: modality name {name!r} is reserved or repeated")
    out.append((name, prefixes))
  if not out:
    raise DataError("data.modalities: no modality declared (name=PREFIX,...)")
  return out


def read_labels(paths: list[str]) -> tuple[pl.DataFrame, list[str]]:
  """(subject_id, prediction_time, <task>...) sorted by subject and time, and the task
  names (file stems)."""
  if not paths:
    raise DataError("data.task: no labels file given (a parquet in the MEDS label schema "
                    "subject_id, prediction_time, boolean_value; see docs/meds.md)")
  frames, names = [], []
  for path in paths:
    name = os.path.splitext(os.path.basename(path))[0]
    if name in names:
      raise DataError(f"{path}: a second labels file named {name!r} (tasks are named by "
                      f"file stem)")
    if not os.path.isfile(path):
      raise DataError(f"{path}: labels file not found")
    try:
      df = pl.read_parquet(path)
    except Exception as e:  # pylint: disable=broad-except  (any reader error is bad input)
      raise DataError(f"{path}: cannot read as parquet ({type(e).__name__})") from None
    missing = [c for c in LABEL_COLUMNS if c not in df.columns]
    if missing:
      raise DataError(f"{path}: labels lack column(s) {missing} (the MEDS label schema: "
                      f"{', '.join(LABEL_COLUMNS)}; has {df.columns})")
    s = df.schema
    if not (s["subject_id"].is_integer() and isinstance(s["prediction_time"], pl.Datetime)
            and (s["boolean_value"] == pl.Boolean or s["boolean_value"].is_numeric())):
      raise DataError(f"{path}: wrong column type(s) (subject_id {s['subject_id']}, "
                      f"prediction_time {s['prediction_time']}, boolean_value "
                      f"{s['boolean_value']}); expected integer, datetime, boolean")
    df = df.select(pl.col("subject_id").cast(pl.Int64),
                   pl.col("prediction_time").cast(TIMESTAMP),
                   pl.col("boolean_value").cast(pl.Float64).alias(name))
    _check_labels(df, name, path)
    frames.append(df)
    names.append(name)
  out = frames[0]
  for df in frames[1:]:
    out = out.join(df, on=["subject_id", "prediction_time"], how="full", coalesce=True)
  return out.sort("subject_id", "prediction_time"), names


def _check_labels(df: pl.DataFrame, name: str, path: str) -> None:
  if df["subject_id"].null_count() or df["prediction_time"].null_count():
    raise DataError(f"{path}: null subject_id or prediction_time")
  dup = df.select("subject_id", "prediction_time").is_duplicated()
  if dup.any():
    raise DataError(f"{path}: {int(dup.sum())} rows repeat a (subject_id, prediction_time)")
  y = df[name].drop_nulls().drop_nans()
  if not y.is_in([0.0, 1.0]).all():
    raise DataError(f"{path}: boolean_value must be true/false (or 0/1, null)")
  if y.n_unique() < 2:
    raise DataError(f"{path}: task {name!r} has one class only ({len(y)} known labels, "
                    f"all {bool(y[0]) if len(y) else 'unknown'}); it cannot be learned or "
                    f"scored")


def scan_text(data_dir: str) -> pl.LazyFrame:
  """(subject_id, time, code, text_value) of the events, for `text_modalities`."""
  lf = pl.scan_parquet(os.path.join(data_dir, "**", "*.parquet"))
  schema = lf.collect_schema()
  if "text_value" not in schema:
    raise DataError(f"{data_dir}: data.text_modalities is set but the events have no "
                    f"text_value column (has {list(schema)})")
  return lf.select(pl.col("subject_id").cast(pl.Int64), pl.col("time").cast(TIMESTAMP),
                   "code", pl.col("text_value").cast(pl.String))


def subject_batches(subject_N: np.ndarray, size: int) -> list[tuple[int, int, int, int]]:
  """(first subject, last subject, first row, end row) of each batch of at most `size`
  subjects of the rows `subject_N` (sorted; size <= 0: one batch). A subject's rows are
  never split across batches."""
  first_S = np.flatnonzero(np.r_[True, subject_N[1:] != subject_N[:-1]])
  size = len(first_S) if size <= 0 else size
  out = []
  for b in range(0, len(first_S), size):
    r0 = int(first_S[b])
    r1 = int(first_S[b + size]) if b + size < len(first_S) else len(subject_N)
    out.append((int(subject_N[r0]), int(subject_N[r1 - 1]), r0, r1))
  return out


def load_meds(meds_root: str, task: str, modalities: str = DEFAULT_MODALITIES,
              window_hours: float = 0.0, numeric_codes: int = 16,
              count_codes: int = 16, subject_batch: int = 5_000, text_modalities: str = "",
              text_dim: int = 128) -> tuple[Cohort, dict]:
  """The cohort of `meds_root` for the labels files `task` (see the module docstring).
  Subjects are featurised `subject_batch` at a time (0: all at once), in two passes (the
  vocabulary, then the features), so memory grows with the batch, not the dataset.
  `text_modalities` (comma-separated names of `modalities`) also embed their events'
  ``text_value`` notes (hashed n-grams, `text_dim` wide; `meds_features.text_features`)."""
  if not meds_root:
    raise DataError("data.meds_root: no MEDS root given (--config.data.meds_root=DIR)")
  data_dir = os.path.join(meds_root, "data")
  if not os.path.isdir(data_dir):
    raise DataError(f"{meds_root}: no data/ folder (a MEDS root holds "
                    f"data/**/*.parquet; see docs/meds.md)")
  declared = parse_modalities(modalities)
  labels, tasks = read_labels([aces.labels_for(meds_root, p) if p.endswith(".yaml") else p
                               for p in csv_list(task)])
  events = scan_meds(data_dir)
  text_names = csv_list(text_modalities)
  unknown = [t for t in text_names if t not in dict(declared)]
  if unknown:
    raise DataError(f"data.text_modalities: {unknown} are not among data.modalities "
                    f"{[name for name, _ in declared]}")
  texts = scan_text(data_dir) if text_names else None
  encoder = get_encoder("hashed", dim=int(text_dim)) if text_names else None
  n = len(labels)
  split = read_splits(meds_root, labels["subject_id"])
  in_vocab = np.ones(n, bool) if split is None else split == "train"
  batches = subject_batches(labels["subject_id"].to_numpy(), int(subject_batch))
  modality = mf.modality_of(declared)

  def read(batch, full: bool = True):
    """The batch's rows and windowed events; with `full`, also its static events and
    notes (what the features need; the vocabulary pass reads the events alone)."""
    lo, hi, r0, r1 = batch
    lf = events.filter(pl.col("subject_id").is_between(lo, hi))   # row groups pruned
    rows = labels.slice(r0, r1 - r0).select("subject_id", "prediction_time").with_row_index(
        "row").with_columns(pl.col("row").cast(pl.Int64))
    ev = (mf.windowed(lf, rows, window_hours)
          .select("row", "subject_id", "time", "code", "value", modality)
          .collect(engine="streaming"))
    if not full:
      return rows, ev, None, None
    static = (lf.filter(pl.col("time").is_null()).select("subject_id", "code")
              .collect(engine="streaming"))
    tx = None if texts is None else (
        mf.windowed(texts.filter(pl.col("subject_id").is_between(lo, hi)
                                 & pl.col("text_value").is_not_null()), rows, window_hours)
        .select("row", "text_value", modality).filter(pl.col("modality").is_in(text_names))
        .collect(engine="streaming"))
    return rows, ev, static, tx

  stats, unmapped, kept = [], 0, None          # pass 1: the vocabulary
  for k, batch in enumerate(batches):
    if len(batches) > 1:
      logging.info("meds: vocabulary, subject batch %d/%d", k + 1, len(batches))
    part = read(batch, full=len(batches) == 1)     # one batch: kept for pass 2
    stats.append(mf.code_stats(part[1], np.flatnonzero(in_vocab[batch[2]:batch[3]])))
    unmapped += part[1]["modality"].null_count()
    kept = part if len(batches) == 1 else None
  vocab = mf.vocabulary(pl.concat(stats), int(numeric_codes), int(count_codes))
  all_codes = events.select(pl.col("code").unique()).collect(engine="streaming")["code"]
  gender = sorted(c for c in all_codes.to_list() if c.startswith(mf.GENDER))
  has_birth = bool((all_codes == mf.BIRTH).any())

  x_of: dict[str, np.ndarray] = {}             # pass 2: the features, batch by batch
  present_of: dict[str, np.ndarray] = {}
  names_of: dict[str, tuple[str, ...]] = {}
  for k, batch in enumerate(batches):
    if len(batches) > 1:
      logging.info("meds: features, subject batch %d/%d", k + 1, len(batches))
    rows, ev, static, tx = kept or read(batch)
    r0, r1 = batch[2], batch[3]
    parts = {"": mf.demographics(ev, static, rows, gender, has_birth)}
    for name, _ in declared:
      x, p, f = mf.modality_features(ev.filter(pl.col("modality") == name), r1 - r0, name,
                                     *vocab.get(name, ([], [])))
      if name in text_names:
        x_t, f_t = mf.text_features(tx.filter(pl.col("modality") == name), r1 - r0, encoder)
        x, f = np.concatenate([x, x_t], axis=1), f + f_t
      parts[name] = (x, f)
      present_of.setdefault(name, np.zeros(n, bool))[r0:r1] = p
    for name, (x, f) in parts.items():
      x_of.setdefault(name, np.zeros((n, x.shape[1]), np.float32))[r0:r1] = x
      names_of[name] = f
  demo = "demographics" if (gender or has_birth) else "events"
  names, features, present = [demo], [x_of[""]], [np.ones(n, bool)]
  feature_names, notes = [names_of[""]], []
  for name, prefixes in declared:
    if not present_of[name].any():
      notes.append(f"modality {name!r} ({'|'.join(prefixes)}): no event before any "
                   f"prediction time; dropped")
      continue
    names.append(name)
    features.append(x_of[name])
    present.append(present_of[name])
    feature_names.append(names_of[name])
  ids = [f"{s}@{t.isoformat()}" for s, t in zip(labels["subject_id"].to_list(),
                                                 labels["prediction_time"].to_list())]
  y = labels.select(tasks).to_numpy().astype(np.float32)
  cohort = Cohort(patient_id=np.asarray(ids), features=tuple(features),
                  present=np.stack(present, axis=1), labels=y, modality_names=tuple(names),
                  task_names=tuple(tasks), group_id=labels["subject_id"].to_numpy(),
                  split=split, feature_names=tuple(feature_names)).validate("meds")
  info = {
      "meds_root": meds_root, "tasks": tasks, "n_rows": n,
      "n_subjects": int(labels["subject_id"].n_unique()),
      "splits": "subject_splits.parquet" if split is not None else "drawn by subject",
      "window_hours": float(window_hours) or "all history",
      "modalities": {nm: "|".join(p) for nm, p in declared},
      "observed": {nm: int(p.sum()) for nm, p in zip(names, cohort.present.T)},
      "n_features": {nm: int(x.shape[1]) for nm, x in zip(names, features)},
      "unmapped_events": int(unmapped),
      "subject_batches": len(batches),
      "label_counts": {t: {"n_known": int((~np.isnan(y[:, k])).sum()),
                           "n_positive": int(np.nansum(y[:, k]))}
                       for k, t in enumerate(tasks)},
      "notes": notes,
  }
  return cohort, info


def from_config(config: ml_collections.ConfigDict, keep: Keep | None = None) -> LoadedData:
  """`load_meds` with the `config.data` fields (every row; `keep` is applied by the
  registry)."""
  d = config.data
  cohort, info = load_meds(str(d.meds_root), str(d.task), str(d.modalities),
                           float(d.window_hours), int(d.numeric_codes), int(d.count_codes),
                           int(d.subject_batch), str(d.text_modalities), int(d.text_dim))
  return LoadedData(cohort=cohort, info=info)


PREDICTIONS_DIR = "meds_predictions"     # WORKDIR/meds_predictions/<task>.parquet


def write_prediction_files(workdir: str, predictions: pl.DataFrame,
                           tasks: list[str]) -> list[str]:
  """The test (held_out) rows of `predictions` (predictions.parquet) in the MEDS
  prediction schema, one file per task: subject_id (Int64), prediction_time (datetime),
  boolean_value (the label; null where unknown), predicted_boolean_value (probability >=
  0.5) and predicted_boolean_probability (the rectified probability, what the run
  reports). Returns the paths written."""
  test = predictions.filter(pl.col("split") == "test")
  parts = test["patient_id"].cast(pl.String).str.split_exact("@", 1)
  subject, time = parts.struct.field("field_0"), parts.struct.field("field_1")
  folder = os.path.join(workdir, PREDICTIONS_DIR)
  os.makedirs(folder, exist_ok=True)
  paths = []
  for t in tasks:
    prob = test[f"{t}_prob_rectified"].cast(pl.Float64)
    frame = pl.DataFrame({
        "subject_id": subject.cast(pl.Int64),
        "prediction_time": time.str.to_datetime(time_unit="us"),
        "boolean_value": test[f"{t}_label"].cast(pl.Boolean),
        "predicted_boolean_value": prob >= 0.5,
        "predicted_boolean_probability": prob})
    paths.append(os.path.join(folder, f"{t}.parquet"))
    write_parquet_atomic(frame, paths[-1])
  return paths

