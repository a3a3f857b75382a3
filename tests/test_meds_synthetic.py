"""experiments/studies/meds_synthetic.py: a synthetic MMNAR cohort written as a MEDS root.

The written events, read back subject by subject in a plain loop, hold exactly the
cohort's features where a modality is observed (one event per feature, strictly inside
the 48 h before the prediction time) and no event where it is missing; the splits are
70/15/15 by subject and agree with the data folders; the project's `meds` loader on the
root gives per-modality observed masks equal to the cohort's `present`, the cohort's
labels and (every code kept) its feature values.
"""

import datetime as dt
import os
from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax.data.sources import meds
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from experiments.studies import meds_synthetic

N, SEED = 200, 3
MODALITIES = "m0=M0//,m1=M1//,m2=M2//,m3=M3//"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  out = tmp_path_factory.mktemp("meds_synth") / "root"
  summary = meds_synthetic.SCRIPT(["meds_synthetic", f"--out={out}", f"--n={N}",
                                   "--mechanism=mnar", f"--seed={SEED}"])
  syn = make_synthetic(N, mechanism="mnar", seed=SEED)   # drawn again, independently
  return str(out), summary, syn


def test_events_equal_features_where_observed_and_absent_where_missing(written):
  out, _, syn = written
  cohort = syn.cohort
  events = pl.read_parquet(os.path.join(out, "data", "*", "*.parquet"))
  assert events.schema == pl.Schema(meds_synthetic.DATA_SCHEMA)
  labels = pl.read_parquet(os.path.join(out, "labels", "task0.parquet"))
  predict_at = dict(zip(labels["subject_id"].to_list(), labels["prediction_time"].to_list()))
  by_subject = defaultdict(list)
  for s, t, c, v in events.iter_rows():
    by_subject[s].append((t, c, v))
  assert set(by_subject) == set(cohort.patient_id.tolist())
  for i, sid in enumerate(cohort.patient_id.tolist()):
    rows = by_subject[sid]
    births = [r for r in rows if r[1] == "MEDS_BIRTH"]
    assert len(births) == 1 and births[0][2] is None
    assert births[0][0] < predict_at[sid] - dt.timedelta(days=365 * 17)
    for m in range(cohort.n_modalities):
      mine = [r for r in rows if r[1].startswith(f"M{m}//")]
      if not cohort.present[i, m]:
        assert mine == [], (i, m)
        continue
      width = cohort.features[m].shape[1]
      assert sorted(c for _, c, _ in mine) == [f"M{m}//f{j:02d}" for j in range(width)]
      for t, c, v in mine:
        j = int(c.split("//f")[1])
        assert np.float32(v) == cohort.features[m][i, j], (i, m, j)   # exact (float32)
        assert predict_at[sid] - dt.timedelta(hours=48) <= t < predict_at[sid]
    assert len(rows) == 1 + sum(cohort.features[m].shape[1]
                                for m in range(cohort.n_modalities) if cohort.present[i, m])


def test_splits_labels_and_metadata(written):
  out, summary, syn = written
  splits = pl.read_parquet(os.path.join(out, "metadata", "subject_splits.parquet"))
  assert sorted(splits["subject_id"].to_list()) == sorted(syn.cohort.patient_id.tolist())
  assert summary["splits"] == {"train": 140, "tuning": 30, "held_out": 30}
  split_of = dict(splits.iter_rows())
  for name in ("train", "tuning", "held_out"):     # the data folders follow the splits
    part = pl.read_parquet(os.path.join(out, "data", name, "0.parquet"))
    assert {split_of[s] for s in part["subject_id"].unique().to_list()} == {name}
    assert part.select("subject_id", "time").equals(part.select("subject_id", "time")
                                                    .sort("subject_id", "time"))
  for t, task in enumerate(syn.cohort.task_names):
    lab = pl.read_parquet(os.path.join(out, "labels", f"{task}.parquet"))
    assert lab.columns == ["subject_id", "prediction_time", "boolean_value"]
    y = dict(zip(lab["subject_id"].to_list(), lab["boolean_value"].to_list()))
    assert [y[s] for s in syn.cohort.patient_id.tolist()] == (syn.cohort.labels[:, t] == 1
                                                               ).tolist()
  codes = pl.read_parquet(os.path.join(out, "metadata", "codes.parquet"))
  assert len(codes) == 1 + sum(syn.cohort.input_dims)
  assert os.path.isfile(os.path.join(out, "metadata", "dataset.json"))


def test_meds_loader_gives_the_cohorts_patterns_labels_and_values(written):
  out, _, syn = written
  cohort = syn.cohort
  tasks = ",".join(os.path.join(out, "labels", f"{t}.parquet") for t in cohort.task_names)
  loaded, info = meds.load_meds(out, tasks, MODALITIES,
                                numeric_codes=max(cohort.input_dims))
  assert loaded.modality_names == ("demographics", "m0", "m1", "m2", "m3")
  assert loaded.task_names == cohort.task_names
  assert info["splits"] == "subject_splits.parquet"
  row_of = {int(p.split("@")[0]): r for r, p in enumerate(loaded.patient_id.tolist())}
  order = np.array([row_of[s] for s in cohort.patient_id.tolist()])
  assert loaded.present[order, 0].all()
  np.testing.assert_array_equal(loaded.present[order, 1:], cohort.present)
  np.testing.assert_array_equal(loaded.labels[order], cohort.labels)
  split_of = dict(pl.read_parquet(os.path.join(out, "metadata", "subject_splits.parquet"))
                  .iter_rows())
  assert [meds.SPLITS[split_of[s]] for s in cohort.patient_id.tolist()] == \
      loaded.split[order].tolist()
  for m in range(cohort.n_modalities):          # every code kept: last == the value
    names = loaded.feature_names[m + 1]
    cols = [names.index(f"M{m}//f{j:02d}:last") for j in range(cohort.input_dims[m])]
    seen = cohort.present[:, m]
    np.testing.assert_array_equal(loaded.features[m + 1][order][seen][:, cols],
                                  cohort.features[m][seen])
