"""experiments/studies/meds_scale.py: the generated MEDS root is sorted, split and
labelled as documented, and the `meds` featuriser reads it as a naive loop does (events
after the prediction time never counted), whatever the subject batch."""

import json
import os

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax.data.sources import meds
from experiments.studies import meds_scale


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("scale"))
  meds_scale.write_root(out, 200, 40.0, 50, seed=3)
  return out


def test_root_layout_sorted_shards_and_splits(root):
  files = sorted(os.path.relpath(os.path.join(d, f), root)
                 for d, _, fs in os.walk(os.path.join(root, "data")) for f in fs)
  assert files == ["data/held_out/0.parquet", "data/train/0.parquet", "data/train/1.parquet",
                   "data/train/2.parquet", "data/train/3.parquet", "data/tuning/0.parquet"]
  for f in files:
    df = pl.read_parquet(os.path.join(root, f))
    assert df.schema == {"subject_id": pl.Int64, "time": pl.Datetime("us"),
                         "code": pl.String, "numeric_value": pl.Float32}
    key = df.select("subject_id", pl.col("time").dt.epoch("us").fill_null(-2**62))
    assert key.equals(key.sort("subject_id", "time")), f
  splits = pl.read_parquet(os.path.join(root, "metadata", "subject_splits.parquet"))
  assert splits.group_by("split").len().sort("split").rows() == [
      ("held_out", 20), ("train", 160), ("tuning", 20)]
  labels = pl.read_parquet(meds_scale.labels_file(root, 120))
  assert labels["subject_id"].to_list() == list(range(120))
  assert labels.equals(pl.read_parquet(os.path.join(root, "labels", "all.parquet")).head(120))
  manifest = json.load(open(os.path.join(root, "manifest.json")))
  assert manifest["events"] == pl.scan_parquet(os.path.join(root, "data", "**", "*.parquet")
                                               ).select(pl.len()).collect().item()
  mtime = os.path.getmtime(os.path.join(root, "manifest.json"))
  meds_scale.write_root(root, 200, 40.0, 50, seed=3)   # the same root: reused
  assert os.path.getmtime(os.path.join(root, "manifest.json")) == mtime


@pytest.mark.parametrize("batch", [0, 7])
def test_featuriser_counts_equal_a_naive_loop(root, batch):
  labels_path = meds_scale.labels_file(root, 200)
  cohort, _ = meds.load_meds(root, labels_path, subject_batch=batch)
  events = pl.read_parquet(os.path.join(root, "data", "**", "*.parquet")).rows()
  pt = dict(pl.read_parquet(labels_path).select("subject_id", "prediction_time").rows())
  prefixes = dict(meds.parse_modalities(meds.DEFAULT_MODALITIES))
  want = {name: np.zeros(200) for name in prefixes}
  after = 0
  for sid, t, code, _ in events:
    if t is None:
      continue
    if t >= pt[sid]:
      after += 1
      continue
    for name, pre in prefixes.items():
      if code.startswith(pre):
        want[name][sid] += 1
        break
  assert after > 0                                   # the generator writes some after
  for m, name in enumerate(cohort.modality_names):
    if name == "demographics":
      continue
    got = cohort.features[m][:, cohort.feature_names[m].index("n_events")]
    np.testing.assert_array_equal(got, want[name], err_msg=name)
    np.testing.assert_array_equal(cohort.present[:, m], want[name] > 0, err_msg=name)


def test_measure_one_reports_time_and_memory(root):
  r = meds_scale.measure_one(root, meds_scale.labels_file(root, 120), 50)
  assert r["rows"] == 120 and r["batches"] == 3
  assert r["peak_rss_mb"] >= r["rss_after_imports_mb"] > 0 and r["seconds"] >= 0
