"""The `meds` source: any MEDS root with labels in the MEDS label schema.

A hand-made root (four subjects, lab codes with values, diagnosis codes without) checked
against hand-computed features; no look-ahead (events moved to the prediction time
empty the row, events added after it change nothing); subject_splits honoured and a
subject's rows in one split; bad input in one line; an end-to-end run on the MIMIC-IV
demo in MEDS when the shared data folder has it.
"""

import datetime as dt
import json
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax import data as data_lib
from crl_mmnar_jax.config import shared_data_dir
from crl_mmnar_jax.config_check import check_config
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.sources import meds
from crl_mmnar_jax.data.splits import assign_splits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = dt.datetime
MODALITIES = "labs=LAB//,dx=DX//"
SCHEMA = {"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String,
          "numeric_value": pl.Float32}
LABEL_SCHEMA = {"subject_id": pl.Int64, "prediction_time": pl.Datetime("us"),
                "boolean_value": pl.Boolean}

# (subject, time, code, value); time None = static
EVENTS = [
    (1, None, "GENDER//F", None), (1, T(2000, 1, 1), "MEDS_BIRTH", None),
    (1, T(2020, 1, 1, 0), "LAB//A", 1.0), (1, T(2020, 1, 1, 6), "LAB//A", 3.0),
    (1, T(2020, 1, 1, 6), "LAB//B", None),
    (1, T(2020, 1, 2), "DX//x", None), (1, T(2020, 1, 2), "DX//x", None),
    (1, T(2020, 1, 3), "LAB//A", 10.0),                 # at row 1b's prediction time
    (2, None, "GENDER//M", None), (2, T(1990, 1, 1), "MEDS_BIRTH", None),
    (2, T(2020, 2, 1), "LAB//B", 5.0), (2, T(2020, 2, 1), "LAB//B", 7.0),
    (2, T(2020, 2, 1), "DX//y", None),
    (3, T(1980, 1, 1), "MEDS_BIRTH", None),
    (3, T(2020, 3, 5), "LAB//A", 4.0), (3, T(2020, 3, 6), "DX//z", None),   # after
    (4, T(1970, 1, 1), "MEDS_BIRTH", None), (4, T(2020, 4, 1), "LAB//A", 2.0),
]
LABELS = [(1, T(2020, 1, 1, 12), False), (1, T(2020, 1, 3), True),
          (2, T(2020, 2, 2), False), (3, T(2020, 3, 1), True), (4, T(2020, 4, 2), True)]
SPLITS = {1: "train", 2: "train", 3: "tuning", 4: "held_out"}


def write_root(path, events=EVENTS, splits=SPLITS):
  os.makedirs(path / "data" / "train", exist_ok=True)
  os.makedirs(path / "data" / "held_out", exist_ok=True)
  df = pl.DataFrame(events, schema=SCHEMA, orient="row")
  df.filter(pl.col("subject_id") != 4).write_parquet(path / "data" / "train" / "0.parquet")
  df.filter(pl.col("subject_id") == 4).write_parquet(path / "data" / "held_out" / "0.parquet")
  if splits:
    os.makedirs(path / "metadata", exist_ok=True)
    pl.DataFrame({"subject_id": list(splits), "split": list(splits.values())}).write_parquet(
        path / "metadata" / "subject_splits.parquet")
  return str(path)


def write_labels(path, rows=LABELS):
  pl.DataFrame(rows, schema=LABEL_SCHEMA, orient="row").write_parquet(path)
  return str(path)


def load(tmp_path, events=EVENTS, labels=LABELS, splits=SPLITS, **kw):
  root = write_root(tmp_path / "root", events, splits)
  task = write_labels(tmp_path / "died.parquet", labels)
  return meds.load_meds(root, task, modalities=kw.pop("modalities", MODALITIES), **kw)


def by_name(cohort, modality):
  m = cohort.modality_names.index(modality)
  return {n: cohort.features[m][:, k] for k, n in enumerate(cohort.feature_names[m])}, m


def years(a, b):
  return (a - b).total_seconds() / (365.25 * 86400)


def test_features_by_hand(tmp_path):
  cohort, info = load(tmp_path)
  assert cohort.patient_id.tolist() == ["1@2020-01-01T12:00:00", "1@2020-01-03T00:00:00",
                                        "2@2020-02-02T00:00:00", "3@2020-03-01T00:00:00",
                                        "4@2020-04-02T00:00:00"]
  assert cohort.modality_names == ("demographics", "labs", "dx")
  assert cohort.task_names == ("died",)
  np.testing.assert_array_equal(cohort.labels[:, 0], [0, 1, 0, 1, 1])
  assert cohort.feature_names[1] == ("n_events", "LAB//A:last", "LAB//A:mean", "LAB//A:count",
                                     "LAB//B:last", "LAB//B:mean", "LAB//B:count")
  assert cohort.feature_names[2] == ("n_events", "DX//x:count", "DX//y:count")   # no DX//z
  assert cohort.feature_names[0] == ("age_years", "GENDER//F", "GENDER//M", "n_events")
  nan = np.nan
  labs, m = by_name(cohort, "labs")
  np.testing.assert_array_equal(cohort.present[:, m], [1, 1, 1, 0, 1])
  expected = {"n_events": [3, 3, 2, 0, 1], "LAB//A:last": [3, 3, nan, 0, 2],
              "LAB//A:mean": [2, 2, nan, 0, 2], "LAB//A:count": [2, 2, 0, 0, 1],
              "LAB//B:last": [nan, nan, 7, 0, nan], "LAB//B:mean": [nan, nan, 6, 0, nan],
              "LAB//B:count": [0, 0, 2, 0, 0]}
  for name, values in expected.items():
    np.testing.assert_array_equal(labs[name], np.float32(values), err_msg=name)
  dx, m = by_name(cohort, "dx")
  np.testing.assert_array_equal(cohort.present[:, m], [0, 1, 1, 0, 0])
  for name, values in {"n_events": [0, 2, 1, 0, 0], "DX//x:count": [0, 2, 0, 0, 0],
                       "DX//y:count": [0, 0, 1, 0, 0]}.items():
    np.testing.assert_array_equal(dx[name], np.float32(values), err_msg=name)
  demo, m = by_name(cohort, "demographics")
  assert cohort.present[:, m].all()
  births = [T(2000, 1, 1), T(2000, 1, 1), T(1990, 1, 1), T(1980, 1, 1), T(1970, 1, 1)]
  np.testing.assert_allclose(demo["age_years"],
                             [years(r[1], b) for r, b in zip(LABELS, births)], rtol=1e-6)
  np.testing.assert_array_equal(demo["GENDER//F"], [1, 1, 0, 0, 0])
  np.testing.assert_array_equal(demo["GENDER//M"], [0, 0, 1, 0, 0])
  np.testing.assert_array_equal(demo["n_events"], [4, 6, 4, 1, 2])
  assert info["splits"] == "subject_splits.parquet"
  assert info["unmapped_events"] == 5                 # the MEDS_BIRTH in each row's window
  assert info["label_counts"]["died"] == {"n_known": 5, "n_positive": 3}


def test_window_keeps_only_recent_events(tmp_path):
  """24 h before 2020-01-03: the two DX//x at 2020-01-02 00:00 (inclusive), no lab."""
  cohort, _ = load(tmp_path, window_hours=24.0)
  labs, m = by_name(cohort, "labs")
  assert cohort.present[:, m].tolist() == [True, False, True, False, True]
  dx, m = by_name(cohort, "dx")
  assert dx["DX//x:count"][1] == 2 and cohort.present[1, m]


def test_events_moved_to_the_prediction_time_empty_the_row(tmp_path):
  """Every timed event of subjects 1 and 4 moved to at/after their last prediction time:
  their rows lose every modality but the demographics, whose age and event count go."""
  last = {1: T(2020, 1, 3), 4: T(2020, 4, 2)}
  moved = [(s, t if t is None or s not in last else max(t, last[s]), c, v)
           for s, t, c, v in EVENTS]
  cohort, _ = load(tmp_path, events=moved)
  rows = [0, 1, 4]
  for m, name in enumerate(cohort.modality_names):
    if name == "demographics":
      continue
    assert not cohort.present[rows, m].any(), name
    assert (cohort.features[m][rows] == 0).all(), name
  demo, m = by_name(cohort, "demographics")
  assert np.isnan(demo["age_years"][rows]).all()
  assert (demo["n_events"][rows] == 0).all()
  assert demo["GENDER//F"][0] == 1        # static: known at every time


def test_events_after_the_prediction_time_change_nothing(tmp_path):
  base, _ = load(tmp_path / "a")
  after = []
  for s, t, _ in LABELS:                  # at and after each row's prediction time
    after += [(s, t, "LAB//A", 1e6), (s, t + dt.timedelta(hours=1), "LAB//B", -1e6),
              (s, t, "DX//x", None), (s, t + dt.timedelta(days=9), "DX//new", None),
              (s, t + dt.timedelta(seconds=1), "MEDS_BIRTH", None),
              (s, t + dt.timedelta(days=1), "OTHER//thing", 5.0)]
  # Rows 1a and 1b share subject 1: only events after its LAST prediction time are
  # outside every window; the others must not change row 1b either.
  last = {}
  for s, t, _ in LABELS:
    last[s] = max(last.get(s, t), t)
  late = [(s, t, c, v) for s, t, c, v in after if t >= last[s]]
  more, _ = load(tmp_path / "b", events=EVENTS + late)
  assert more.modality_names == base.modality_names
  assert more.feature_names == base.feature_names
  np.testing.assert_array_equal(more.present, base.present)
  for a, b in zip(base.features, more.features):
    np.testing.assert_array_equal(a, b)


def test_subject_splits_are_honoured_and_subjects_never_straddle(tmp_path):
  cohort, _ = load(tmp_path / "a")
  assert cohort.split.tolist() == ["train", "train", "train", "val", "test"]
  assert cohort.group_id.tolist() == [1, 1, 2, 3, 4]
  # Without subject_splits: drawn by the run, every row of a subject in one split.
  many = [(s, T(2020, 1, 1) + dt.timedelta(days=k), k % 2 == 0)
          for s in range(1, 41) for k in range(1, 4)]
  events = [(s, T(2020, 1, 1), "LAB//A", float(s)) for s in range(1, 41)]
  cohort, info = load(tmp_path / "b", events=events, labels=many, splits=None)
  assert cohort.split is None and info["splits"] == "drawn by subject"
  assert cohort.modality_names == ("events", "labs")   # no birth or sex codes: "events"
  assert cohort.feature_names[0] == ("n_events",)
  split = assign_splits(cohort.patient_id, cohort.pattern, cohort.labels, val_fraction=0.3,
                        test_fraction=0.3, seed=0, group_id=cohort.group_id)
  for s in range(1, 41):
    assert len(set(split[cohort.group_id == s])) == 1
  assert set(split) == {"train", "val", "test"}


def one_line(call) -> str:
  with pytest.raises(DataError) as e:
    call()
  message = str(e.value)
  assert "\n" not in message, message
  return message


def test_bad_input_is_one_line_naming_the_file(tmp_path):
  task = write_labels(tmp_path / "died.parquet")
  empty = tmp_path / "empty"
  empty.mkdir()
  message = one_line(lambda: meds.load_meds(str(empty), task, modalities=MODALITIES))
  assert message.startswith(f"{empty}: no data/ folder"), message
  root = write_root(tmp_path / "root")
  bad = tmp_path / "bad.parquet"
  pl.DataFrame({"subject_id": [1], "boolean_value": [True]}).write_parquet(bad)
  message = one_line(lambda: meds.load_meds(root, str(bad), modalities=MODALITIES))
  assert message.startswith(f"{bad}: labels lack column(s) ['prediction_time']"), message
  same = write_labels(tmp_path / "same.parquet", [(s, t, True) for s, t, _ in LABELS])
  message = one_line(lambda: meds.load_meds(root, same, modalities=MODALITIES))
  assert message.startswith(f"{same}: task 'same' has one class only"), message
  typed = tmp_path / "typed.parquet"
  pl.DataFrame({"subject_id": [1, 2], "prediction_time": ["2020-01-01", "2020-01-02"],
                "boolean_value": [True, False]}).write_parquet(typed)
  message = one_line(lambda: meds.load_meds(root, str(typed), modalities=MODALITIES))
  assert message.startswith(f"{typed}: wrong column type(s)"), message
  write_root(tmp_path / "r2", splits={1: "train", 2: "train", 3: "tuning"})
  message = one_line(lambda: meds.load_meds(str(tmp_path / "r2"), task, modalities=MODALITIES))
  assert "subject_splits.parquet: 1 labelled row(s) belong to subjects missing" in message
  message = one_line(lambda: meds.load_meds(root, task, modalities="labs"))
  assert message.startswith("data.modalities: 'labs' is not name=PREFIX"), message


def test_several_label_files_are_the_tasks(tmp_path):
  root = write_root(tmp_path / "root")
  a = write_labels(tmp_path / "a.parquet", LABELS[:3])
  b = write_labels(tmp_path / "b.parquet", [(s, t, not y) for s, t, y in LABELS[1:]])
  cohort, _ = meds.load_meds(root, f"{a},{b}", modalities=MODALITIES)
  assert cohort.task_names == ("a", "b") and cohort.n == 5
  np.testing.assert_array_equal(cohort.labels, np.float32(
      [[0, np.nan], [1, 0], [0, 1], [np.nan, 0], [np.nan, 0]]))


def test_config_loads_through_the_registry(tmp_path):
  from experiments.configs import meds as meds_config
  config = meds_config.get_config("tiny")
  config.data.meds_root = write_root(tmp_path / "root")
  config.data.task = write_labels(tmp_path / "died.parquet")
  config.data.modalities = MODALITIES
  config.data.numeric_codes = 1
  check_config(config)
  loaded = data_lib.load(config)
  assert loaded.cohort.feature_names[1] == ("n_events", "LAB//A:last", "LAB//A:mean",
                                            "LAB//A:count")
  assert loaded.info["n_rows"] == 5


DEMO = os.path.join(shared_data_dir() or "", "meds-mimic-iv-demo")


def readmission_labels(root: str) -> list[tuple]:
  """(subject, discharge time, an admission within 30 days after it), by a plain loop."""
  ev = pl.read_parquet(os.path.join(root, "data", "**", "*.parquet"))
  admissions, discharges = defaultdict(list), defaultdict(list)
  for s, t, code in ev.select("subject_id", "time", "code").iter_rows():
    if code.startswith("HOSPITAL_ADMISSION//"):
      admissions[s].append(t)
    elif code.startswith("HOSPITAL_DISCHARGE//"):
      discharges[s].append(t)
  rows = []
  for s in sorted(discharges):
    for t in sorted(set(discharges[s])):
      rows.append((s, t, any(t < a <= t + dt.timedelta(days=30) for a in admissions[s])))
  return rows


def run_demo(task: str, workdir):
  """`experiments.run --config=meds:tiny` on the demo root with labels `task`."""
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.run", "--config=meds:tiny",
       f"--config.data.meds_root={DEMO}", f"--config.data.task={task}",
       "--config.eval.plots=False", f"--workdir={workdir}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


@pytest.mark.skipif(not os.path.isdir(os.path.join(DEMO, "data")),
                    reason=f"MIMIC-IV demo MEDS root not found at {DEMO}")
def test_end_to_end_on_the_mimic_demo(tmp_path):
  rows = readmission_labels(DEMO)
  task = write_labels(tmp_path / "readmission_30d.parquet", rows)
  workdir = run_demo(task, tmp_path / "run")
  results = json.loads((workdir / "results.json").read_text())
  info = json.loads((workdir / "data_info.json").read_text())
  assert info["n_rows"] == len(rows) and info["n_subjects"] == 100
  assert info["splits"] == "subject_splits.parquet"
  assert info["label_counts"]["readmission_30d"]["n_positive"] == sum(y for _, _, y in rows)
  # Every row in its subject's split of subject_splits.parquet (so never two splits).
  splits = pl.read_parquet(workdir / "splits.parquet")
  assert len(splits) == len(rows)
  given = dict(pl.read_parquet(os.path.join(DEMO, "metadata", "subject_splits.parquet"))
               .select("subject_id", "split").iter_rows())
  for pid, split in splits.select("patient_id", "split").iter_rows():
    assert split == meds.SPLITS[given[int(pid.split("@")[0])]], pid
  assert results["cohort"]["modalities"] == ["demographics", "labs", "vitals", "medications",
                                             "diagnoses", "procedures"]
  assert 0.0 <= results["metrics"]["test"]["mean"]["auroc"] <= 1.0
  assert (workdir / "predictions.parquet").is_file()
  # The MEDS prediction schema: one file per task, the held_out rows, the loop's labels.
  out = pl.read_parquet(workdir / meds.PREDICTIONS_DIR / "readmission_30d.parquet")
  assert out.columns == ["subject_id", "prediction_time", "boolean_value",
                         "predicted_boolean_value", "predicted_boolean_probability"]
  assert out.schema["subject_id"] == pl.Int64 and out.schema["boolean_value"] == pl.Boolean
  assert out.schema["prediction_time"].base_type() == pl.Datetime
  held_out = {(s, t): y for s, t, y in rows if given[s] == "held_out"}
  got = {(s, t): y for s, t, y in out.select("subject_id", "prediction_time",
                                              "boolean_value").iter_rows()}
  assert got == held_out
  p = out["predicted_boolean_probability"].to_numpy()
  assert np.array_equal(out["predicted_boolean_value"].to_numpy(), p >= 0.5)
  if 0 < out["boolean_value"].sum() < out.height:          # AUROC defined: the run's own
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(out["boolean_value"].to_numpy(), p) == pytest.approx(
        results["metrics"]["test_rectified"]["readmission_30d"]["auroc"], abs=1e-9)
  # The held_out rows never train or select anything: flipping their labels changes no
  # prediction of any row (validation and test, raw and rectified) and no chosen epoch.
  flipped = [(s, t, (not y) if given[s] == "held_out" else y) for s, t, y in rows]
  assert flipped != rows
  (tmp_path / "flipped").mkdir()
  task2 = write_labels(tmp_path / "flipped" / "readmission_30d.parquet", flipped)
  workdir2 = run_demo(task2, tmp_path / "run_flipped")
  a = pl.read_parquet(workdir / "predictions.parquet").sort("patient_id")
  b = pl.read_parquet(workdir2 / "predictions.parquet").sort("patient_id")
  probs = [c for c in a.columns if "_prob" in c]
  assert probs and a["patient_id"].equals(b["patient_id"])
  for c in probs:
    np.testing.assert_array_equal(a[c].to_numpy(), b[c].to_numpy(), err_msg=c)
  test = (a["split"] == "test").to_numpy()
  assert test.any()
  assert np.array_equal(a["readmission_30d_label"].to_numpy()[test],
                        1 - b["readmission_30d_label"].to_numpy()[test])
  again = json.loads((workdir2 / "results.json").read_text())["training"]
  keys = ("best_epoch", "best_step", "best_val_mean_auroc", "history")
  assert [again[k] for k in keys] == [results["training"][k] for k in keys]


def test_eicu_vocabulary_maps_the_eicu_etl_codes(tmp_path):
  """Codes as the eICU-CRD MEDS ETL writes them (its event_configs.yaml), read with
  `data.modalities=eicu`: each lands in the modality written beside it by hand."""
  t0 = T(2020, 1, 1)
  codes = {"LAB//potassium//mmol/L": "labs", "VITALS//PERIODIC//HEARTRATE": "vitals",
           "VITALS//APERIODIC//BP//NONINVASIVE_MEAN": "vitals",
           "SUBJECT_WEIGHT_AT_INFUSION": "vitals",
           "MEDICATION//STARTED//heparin": "medications",
           "INFUSION_DRUG//1234": "medications",
           "DIAGNOSIS//ICD//9//428.0": "diagnoses",
           "ADMISSION_DIAGNOSIS//Sepsis": "diagnoses",
           "TREATMENT//ENTERED//mechanical ventilation": "procedures",
           "CAREPLAN_EOL": "care_plans", "CAREPLAN_GOAL//a//b//c": "care_plans",
           "ICU_ADMISSION//Emergency//admit": None}       # not a modality's code
  events = [(1, None, "GENDER//Female", None), (1, T(1950, 1, 1), "MEDS_BIRTH", None),
            (2, T(1960, 1, 1), "MEDS_BIRTH", None)]
  for k, code in enumerate(codes):       # subject 1: every code; subject 2: labs only
    events.append((1, t0 + dt.timedelta(hours=k), code, float(k)))
  events.append((2, t0, "LAB//potassium//mmol/L", 4.0))
  labels = [(1, T(2020, 1, 3), True), (2, T(2020, 1, 3), False)]
  cohort, info = load(tmp_path, events, labels, splits=None, modalities="eicu")
  expected = ("demographics", "labs", "vitals", "medications", "diagnoses", "procedures",
              "care_plans")
  assert cohort.modality_names == expected
  np.testing.assert_array_equal(cohort.present[:, 1:], [[1] * 6, [1, 0, 0, 0, 0, 0]])
  for m, name in enumerate(expected[1:], start=1):
    n_events = cohort.features[m][:, cohort.feature_names[m].index("n_events")]
    assert n_events[0] == sum(v == name for v in codes.values()), name
  assert info["unmapped_events"] == 2 + 1              # MEDS_BIRTH of each, ICU_ADMISSION
  assert meds.parse_modalities("EICU") == meds.parse_modalities(
      "labs=LAB//,vitals=VITALS//|SUBJECT_WEIGHT_AT_INFUSION,medications=MEDICATION//|"
      "INFUSION_DRUG//,diagnoses=DIAGNOSIS//|ADMISSION_DIAGNOSIS//,procedures=TREATMENT//,"
      "care_plans=CAREPLAN_")
  assert meds.parse_modalities("mimic-iv") == meds.parse_modalities(meds.DEFAULT_MODALITIES)


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_subject_batches_give_the_features_of_one_batch(tmp_path, batch):
  """Featurising 1, 2 or 3 subjects at a time (two passes: vocabulary, features) equals
  featurising all at once, on the hand-made root and with a subject whose rows straddle
  nothing (subject 1 has two rows)."""
  whole, info_whole = load(tmp_path / "a", subject_batch=0)
  part, info = load(tmp_path / "b", subject_batch=batch)
  assert info["subject_batches"] == -(-4 // batch) and info_whole["subject_batches"] == 1
  assert part.modality_names == whole.modality_names
  assert part.feature_names == whole.feature_names
  np.testing.assert_array_equal(part.present, whole.present)
  for a, b in zip(part.features, whole.features):
    np.testing.assert_array_equal(a, b)
  skip = ("subject_batches", "meds_root")
  assert {k: v for k, v in info.items() if k not in skip} == \
      {k: v for k, v in info_whole.items() if k not in skip}


def test_subject_batches_keep_a_subjects_rows_together():
  subject_N = np.array([3, 3, 5, 7, 7, 7, 9])
  assert meds.subject_batches(subject_N, 2) == [(3, 5, 0, 3), (7, 9, 3, 7)]
  assert meds.subject_batches(subject_N, 0) == [(3, 9, 0, 7)]
  assert meds.subject_batches(subject_N, 10) == [(3, 9, 0, 7)]
  by_loop = []
  for size in (1, 3):
    batches = meds.subject_batches(subject_N, size)
    by_loop.append([subject_N[r0:r1].tolist() for _, _, r0, r1 in batches])
  assert by_loop == [[[3, 3], [5], [7, 7, 7], [9]], [[3, 3, 5, 7, 7, 7], [9]]]


def test_notes_in_text_value_are_embedded_before_the_prediction_time(tmp_path):
  """A `notes` modality (NOTE// codes with text_value): its features add the mean hashed
  embedding of the row's notes strictly before the prediction time, checked against the
  encoder run by hand; a note at or after the prediction time changes nothing."""
  from crl_mmnar_jax.data.text_embed import get_encoder
  notes = [(1, T(2020, 1, 1, 1), "NOTE//DS", None, "sepsis suspected, lactate high"),
           (1, T(2020, 1, 2, 0), "NOTE//RAD", None, "no acute cardiopulmonary process"),
           (1, T(2020, 1, 3, 0), "NOTE//DS", None, "at the prediction time: not read"),
           (2, T(2020, 2, 5), "NOTE//DS", None, "after the prediction time: not read")]
  events = [e + (None,) for e in EVENTS] + notes
  schema = {**SCHEMA, "text_value": pl.String}
  root = tmp_path / "root"
  (root / "data" / "train").mkdir(parents=True)
  pl.DataFrame(events, schema=schema, orient="row").write_parquet(
      root / "data" / "train" / "0.parquet")
  task = write_labels(tmp_path / "died.parquet")
  cohort, _ = meds.load_meds(str(root), task, modalities=MODALITIES + ",notes=NOTE//",
                             text_modalities="notes", text_dim=16)
  m = cohort.modality_names.index("notes")
  names = cohort.feature_names[m]
  assert names[0] == "n_events" and names[-16:] == tuple(f"text_{k}" for k in range(16))
  emb = cohort.features[m][:, -16:]
  enc = get_encoder("hashed", dim=16)
  np.testing.assert_array_equal(cohort.present[:, m], [1, 1, 0, 0, 0])
  np.testing.assert_allclose(emb[0], enc.encode([notes[0][4]])[0], rtol=1e-6)  # 12:00
  np.testing.assert_allclose(emb[1], enc.encode([n[4] for n in notes[:2]]).mean(0), rtol=1e-6)
  np.testing.assert_array_equal(emb[2:], 0.0)
  with pytest.raises(DataError, match=r"data.text_modalities: \['nope'\] are not among"):
    meds.load_meds(str(root), task, modalities=MODALITIES, text_modalities="nope")
  plain = write_root(tmp_path / "plain")
  with pytest.raises(DataError, match=r"data.text_modalities is set but the events have no "
                                       r"text_value column"):
    meds.load_meds(plain, task, modalities=MODALITIES, text_modalities="labs")
