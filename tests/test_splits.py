"""Tests for `splits`: stratified patient/group splits that test labels cannot move."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax.data import splits
from crl_mmnar_jax.data.errors import DataError


def _cohort(n: int = 2000, n_patterns: int = 8, n_tasks: int = 2, seed: int = 0,
            string_ids: bool = False):
  """Ids (not 0..N-1, not sorted), patterns and labels with some unknown."""
  rng = np.random.default_rng(seed)
  ids = rng.choice(10 * n, size=n, replace=False) + 1000
  if string_ids:
    ids = np.array([f"subj-{i}" for i in ids])
  pattern = rng.integers(1, n_patterns + 1, size=n)
  labels = (rng.random((n, n_tasks)) < 0.3).astype(np.float32)
  labels[rng.random((n, n_tasks)) < 0.1] = np.nan
  return ids, pattern, labels


def _counts(split: np.ndarray) -> dict[str, int]:
  return {s: int(np.sum(split == s)) for s in ("train", "val", "test")}


@pytest.mark.parametrize("n,val_fraction,test_fraction",
                         [(2000, 0.15, 0.15), (997, 0.1, 0.2), (61, 0.2, 0.3)])
def test_fractions_close_to_targets(n, val_fraction, test_fraction):
  ids, pattern, labels = _cohort(n)
  split = splits.assign_splits(ids, pattern, labels, val_fraction=val_fraction,
                               test_fraction=test_fraction, seed=1)
  assert split.shape == (n,)
  assert set(np.unique(split).tolist()) <= {"train", "val", "test"}
  c = _counts(split)
  assert c["test"] in (math.floor(n * test_fraction), math.ceil(n * test_fraction))
  assert abs(c["val"] - n * val_fraction) <= 2
  assert c["train"] + c["val"] + c["test"] == n


def test_rounding_is_unbiased_over_seeds():
  # 61 * 0.3 = 18.3 test units: 18 or 19, and 19 in about 30% of the seeds.
  ids, pattern, labels = _cohort(61, n_patterns=1)
  n_test = [np.sum(splits.assign_splits(ids, pattern, labels, test_fraction=0.3,
                                        seed=s) == "test") for s in range(200)]
  assert set(n_test) == {18, 19}
  assert abs(np.mean(n_test) - 18.3) < 0.15


def test_every_pattern_is_balanced_in_test():
  ids, pattern, labels = _cohort(3000, n_patterns=12)
  for seed in range(3):
    split = splits.assign_splits(ids, pattern, labels, test_fraction=0.2, seed=seed)
    for p in np.unique(pattern):
      in_p = pattern == p
      n_test = np.sum(split[in_p] == "test")
      assert abs(n_test - 0.2 * in_p.sum()) < 1, (seed, p)


def test_train_and_val_balanced_by_pattern_and_label():
  ids, pattern, labels = _cohort(4000, n_patterns=6)
  split = splits.assign_splits(ids, pattern, labels, val_fraction=0.15,
                               test_fraction=0.15, seed=2)
  rest = split != "test"
  f_val = 0.15 / 0.85
  # Every (pattern, first-task label) cell, unknown included, is within one patient.
  y0 = np.where(np.isnan(labels[:, 0]), -1, labels[:, 0])
  for p in np.unique(pattern):
    for y in (0, 1, -1):
      cell = rest & (pattern == p) & (y0 == y)
      n_val = np.sum(split[cell] == "val")
      assert abs(n_val - f_val * cell.sum()) < 1, (p, y)
  # Hence the prevalence of every task is nearly the same in train and val.
  for t in range(labels.shape[1]):
    prev = {s: np.nanmean(labels[split == s, t]) for s in ("train", "val")}
    assert abs(prev["train"] - prev["val"]) < 0.03, (t, prev)


def test_groups_never_straddle_splits():
  rng = np.random.default_rng(5)
  sizes = rng.integers(1, 6, size=600)
  group = np.repeat(np.array([f"fam{g:04d}" for g in rng.permutation(600)]), sizes)
  n = group.size
  ids, pattern, labels = _cohort(n, n_patterns=4, seed=6)
  perm = rng.permutation(n)
  group = group[perm]
  split = splits.assign_splits(ids, pattern, labels, seed=0, group_id=group)
  by_group: dict[str, set] = {}
  for g, s in zip(group, split):
    by_group.setdefault(g, set()).add(s)
  assert all(len(v) == 1 for v in by_group.values())
  # The unit is the group: group counts hit the targets; the group's stratum is the
  # pattern of its member with the smallest patient_id.
  first_pattern = {}
  for i in np.argsort(ids):
    first_pattern.setdefault(group[i], pattern[i])
  g_split = {g: next(iter(v)) for g, v in by_group.items()}
  n_test = sum(s == "test" for s in g_split.values())
  assert n_test in (math.floor(600 * 0.15), math.ceil(600 * 0.15))
  for p in range(1, 5):
    gs = [g for g, q in first_pattern.items() if q == p]
    n_test_p = sum(g_split[g] == "test" for g in gs)
    assert abs(n_test_p - 0.15 * len(gs)) < 1, p


def test_changing_every_test_label_changes_nothing():
  ids, pattern, labels = _cohort(1500, n_tasks=3, seed=7)
  for seed in range(3):
    split = splits.assign_splits(ids, pattern, labels, seed=seed)
    test = split == "test"
    flipped = labels.copy()
    flipped[test] = 1.0 - np.nan_to_num(labels[test], nan=0.0)   # flip, unknown -> 1
    flipped[np.flatnonzero(test)[::3], 1] = np.nan
    again = splits.assign_splits(ids, pattern, flipped, seed=seed)
    np.testing.assert_array_equal(again, split)
    # Whatever the labels, the test set itself never moves.
    scrambled = np.random.default_rng(seed).permutation(labels)
    np.testing.assert_array_equal(
        splits.assign_splits(ids, pattern, scrambled, seed=seed) == "test", test)


def test_changing_train_val_labels_can_change_train_val():
  ids, pattern, labels = _cohort(1500, seed=8)
  split = splits.assign_splits(ids, pattern, labels, seed=0)
  rest = split != "test"
  flipped = labels.copy()
  flipped[rest, 0] = 1.0 - np.nan_to_num(labels[rest, 0], nan=0.0)
  moved = splits.assign_splits(ids, pattern, flipped, seed=0)
  np.testing.assert_array_equal(moved == "test", split == "test")
  assert np.any(moved != split)   # labels are used for train/val stratification


@pytest.mark.parametrize("string_ids", [False, True])
def test_row_order_does_not_matter(string_ids):
  ids, pattern, labels = _cohort(800, string_ids=string_ids, seed=9)
  group = np.array([f"g{int(i) % 173}" for i in range(800)])
  for g in (None, group):
    split = splits.assign_splits(ids, pattern, labels, seed=4, group_id=g)
    perm = np.random.default_rng(1).permutation(800)
    shuffled = splits.assign_splits(ids[perm], pattern[perm], labels[perm], seed=4,
                                    group_id=None if g is None else g[perm])
    np.testing.assert_array_equal(shuffled, split[perm])


def test_deterministic_and_seed_dependent():
  ids, pattern, labels = _cohort(500, seed=10)
  a = splits.assign_splits(ids, pattern, labels, seed=3)
  b = splits.assign_splits(ids.copy(), pattern.copy(), labels.copy(), seed=3)
  c = splits.assign_splits(ids, pattern, labels, seed=4)
  np.testing.assert_array_equal(a, b)
  assert np.any(a != c)


def test_each_patient_equally_likely_in_test():
  ids, pattern, labels = _cohort(30, n_patterns=1, seed=11)
  freq = np.mean([splits.assign_splits(ids, pattern, labels, seed=s) == "test"
                  for s in range(400)], axis=0)
  # Binomial(400, 0.15): mean 60, sd 7.1; 4 sd either side.
  assert np.all((freq > 0.08) & (freq < 0.22)), freq


def test_unknown_labels_and_tiny_strata():
  ids, pattern, _ = _cohort(200, n_patterns=50, seed=12)
  labels = np.full((200, 2), np.nan, dtype=np.float32)
  split = splits.assign_splits(ids, pattern, labels, seed=0)
  c = _counts(split)
  assert c["test"] == 30 and abs(c["val"] - 30) <= 2
  single = splits.assign_splits(np.array([42]), np.array([1]), np.array([[1.0]]))
  assert single.tolist() in (["train"], ["val"], ["test"])


def test_predefined_split_is_used_and_validated():
  ids, pattern, labels = _cohort(6, seed=13)
  pre = np.array(["test", "train", "val", "train", "train", "test"], dtype=object)
  np.testing.assert_array_equal(
      splits.assign_splits(ids, pattern, labels, predefined=pre), pre.astype(str))
  all_null = np.array([None] * 6, dtype=object)
  auto = splits.assign_splits(ids, pattern, labels, predefined=all_null, seed=0)
  np.testing.assert_array_equal(auto, splits.assign_splits(ids, pattern, labels, seed=0))
  bad = pre.copy()
  bad[2] = "validation"
  with pytest.raises(DataError, match=r"1 row\(s\) hold another value \(first at row 3\)") as e:
    splits.assign_splits(ids, pattern, labels, predefined=bad)
  assert "validation" not in str(e.value)          # no raw value in the message
  partial = pre.copy()
  partial[[1, 4]] = None
  with pytest.raises(DataError, match="null for 2 of 6"):
    splits.assign_splits(ids, pattern, labels, predefined=partial)
  group = np.array(["grpA", "grpA", "grpB", "grpB", "grpC", "grpC"])
  keep = pre.copy()
  keep[[0, 1]] = "train"                           # grpA in one split, grpB and grpC not
  with pytest.raises(DataError, match=r"2 group\(s\) straddle splits \(first at row 3\)") as e:
    splits.assign_splits(ids, pattern, labels, predefined=keep, group_id=group)
  assert "grp" not in str(e.value)                 # no group id in the message


def test_bad_arguments():
  ids, pattern, labels = _cohort(10, seed=14)
  dup = ids.copy()
  dup[3] = dup[7]
  with pytest.raises(DataError, match=r"1 value\(s\) appear in more than one row \(first "
                                      r"at row 4\)") as e:
    splits.assign_splits(dup, pattern, labels)
  assert str(dup[7]) not in str(e.value)           # no patient id in the message
  with pytest.raises(ValueError, match="val_fraction"):
    splits.assign_splits(ids, pattern, labels, val_fraction=0.6, test_fraction=0.5)


def test_splits_frame_contract():
  df = splits.splits_frame(np.array(["b", "a"]), np.array(["val", "test"]))
  assert df.columns == ["patient_id", "split"]
  assert df.rows() == [("b", "val"), ("a", "test")]
  with pytest.raises(DataError, match=r"split: .*1 row\(s\) hold another value \(first at "
                                      r"row 2\)") as e:
    splits.splits_frame(np.array([1, 2]), np.array(["train", "holdout"]))
  assert "holdout" not in str(e.value)


def test_read_splits_joins_on_id(tmp_path):
  ids = np.array([905, 17, 333, 42, 8])
  split = np.array(["train", "test", "val", "train", "test"])
  path = tmp_path / "splits.parquet"
  perm = [3, 0, 4, 2, 1]
  # Shuffled rows, an int32 id column and the columns in the other order.
  pl.DataFrame({"split": split[perm], "patient_id": ids[perm].astype(np.int32)}
               ).write_parquet(path)
  np.testing.assert_array_equal(splits.read_splits(path, ids), split)
  # Round trip through splits_frame with string ids.
  sids = np.array(["x9", "a1", "m5"])
  splits.splits_frame(sids[::-1], np.array(["val", "train", "test"])).write_parquet(
      tmp_path / "s2.parquet")
  np.testing.assert_array_equal(splits.read_splits(tmp_path / "s2.parquet", sids),
                                ["test", "train", "val"])


@pytest.mark.parametrize("frame,ids,match", [
    ({"patient_id": [71, 72], "split": ["train", "val"]}, [71, 72, 73, 74],
     r"2 of 4 patients have no split \(first at cohort row 3\)"),
    ({"patient_id": [71, 99, 72], "split": ["train", "val", "test"]}, [71, 72],
     r"column 'patient_id': 1 value\(s\) are not in the cohort \(first at row 2\)"),
    ({"patient_id": [71, 72], "split": ["train", "dev"]}, [71, 72],
     r"column 'split'.*1 row\(s\) hold another value \(first at row 2\)"),
    ({"patient_id": [71, 72], "split": ["train", None]}, [71, 72], "1 null"),
    ({"patient_id": [72, 71, 71], "split": ["train", "val", "test"]}, [71, 72],
     r"column 'patient_id': 1 value\(s\) appear in more than one row \(first at row 2\)"),
    ({"patient_id": ["71", "72"], "split": ["train", "val"]}, [71, 72], "patient_id.*String"),
    ({"id": [71, 72], "split": ["train", "val"]}, [71, 72], "missing column 'patient_id'"),
])
def test_read_splits_errors(tmp_path, frame, ids, match):
  path = tmp_path / "my_splits.parquet"
  pl.DataFrame(frame).write_parquet(path)
  with pytest.raises(DataError, match=match) as e:
    splits.read_splits(path, np.array(ids))
  assert "my_splits.parquet" in str(e.value)
  # Counts and positions only: no patient id and no split value from the file.
  for value in ("71", "72", "73", "74", "99", "dev"):
    assert value not in str(e.value).split(":", 1)[1].replace("my_splits.parquet", "")


def test_read_splits_unreadable(tmp_path):
  path = tmp_path / "junk.parquet"
  path.write_bytes(b"not parquet at all")
  with pytest.raises(DataError, match="junk.parquet.*cannot read"):
    splits.read_splits(path, np.array([1]))
  with pytest.raises(DataError, match="absent.parquet"):
    splits.read_splits(tmp_path / "absent.parquet", np.array([1]))
