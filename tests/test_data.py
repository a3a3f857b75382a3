"""Preprocessing: statistics from training rows only, NaN imputed with the training mean."""

import numpy as np
import pytest

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.standardize import standardize


def _cohort():
  rng = np.random.default_rng(0)
  n = 40
  present = rng.random((n, 2)) < 0.7
  present[:, 0] = True
  x0 = rng.normal(5.0, 2.0, (n, 3)).astype(np.float32)
  x1 = rng.normal(-1.0, 0.5, (n, 2)).astype(np.float32)
  x0[rng.random((n, 3)) < 0.2] = np.nan        # not measured inside observed rows
  x1[~present[:, 1]] = 0.0
  x1[3] = np.nan if present[3, 1] else 0.0
  x0[:, 2] = 7.0                                 # constant on training rows
  labels = rng.integers(0, 2, (n, 1)).astype(np.float32)
  return Cohort(np.arange(100, 100 + n), (x0, x1), present, labels, ("a", "b"), ("y",)).validate()


def test_standardize_matches_naive_loop_and_uses_training_rows_only():
  c = _cohort()
  train = np.arange(0, 40, 2)
  out, stats = standardize(c, train)
  for m, (x, z) in enumerate(zip(c.features, out.features)):
    obs = c.present[:, m]
    assert np.all(z[~obs] == 0.0)
    assert np.all(np.isfinite(z))
    for d in range(x.shape[1]):
      col = [float(x[i, d]) for i in train if obs[i] and not np.isnan(x[i, d])]
      mean = np.mean(col)
      sd = np.std(col) if np.std(col) > 1e-8 else 1.0
      for i in range(c.n):
        if not obs[i]:
          continue
        want = 0.0 if np.isnan(x[i, d]) else (x[i, d] - mean) / sd
        assert z[i, d] == pytest.approx(want, abs=1e-5)
  assert stats["a"]["imputed_cells"] == int(np.isnan(c.features[0][c.present[:, 0]]).sum())
  # Changing non-training rows changes nothing about the statistics.
  x0 = c.features[0].copy()
  x0[1] += 1000.0
  import dataclasses
  out2, _ = standardize(dataclasses.replace(c, features=(x0, c.features[1])), train)
  np.testing.assert_array_equal(out2.features[0][train], out.features[0][train])


def test_validate_rejects_inf_and_nonzero_missing_rows():
  c = _cohort()
  x0 = c.features[0].copy()
  x0[0, 0] = np.inf
  import dataclasses
  with pytest.raises(ValueError, match="Inf"):
    dataclasses.replace(c, features=(x0, c.features[1])).validate("t")
  x1 = c.features[1].copy()
  row = int(np.flatnonzero(~c.present[:, 1])[0])
  x1[row, 0] = 1.0
  with pytest.raises(ValueError, match="must be 0"):
    dataclasses.replace(c, features=(c.features[0], x1)).validate("t")


def test_fixed_test_rows_split_mode():
  """Split by set / database: the fixed rows are exactly the test set, the rest is
  split into train and validation, none of it depending on the test rows' labels."""
  import dataclasses

  from crl_mmnar_jax.data.sources.synthetic import make_synthetic
  from crl_mmnar_jax.data.splits import make_splits
  from experiments.configs import synthetic as synthetic_config
  cohort = make_synthetic(400, seed=2).cohort
  test_mask = np.zeros(cohort.n, bool)
  test_mask[::3] = True
  config = synthetic_config.get_config("tiny")
  split = make_splits(config, cohort, test_mask)
  np.testing.assert_array_equal(split == "test", test_mask)
  rest = split[~test_mask]
  assert set(rest) == {"train", "val"}
  assert abs(np.mean(rest == "val") - config.data.val_fraction) < 0.03
  flipped = cohort.labels.copy()
  flipped[test_mask] = 1 - flipped[test_mask]
  split2 = make_splits(config, dataclasses.replace(cohort, labels=flipped), test_mask)
  np.testing.assert_array_equal(split, split2)


def test_yaib_external_validation_mode_on_shared_data():
  import os

  from crl_mmnar_jax import data as data_lib
  from experiments.configs import yaib
  config = yaib.get_config()
  if not os.path.isdir(config.data.dir):
    pytest.skip(f"shared YAIB demo data not found at {config.data.dir}")
  config.data.test_database = "mimic_demo"
  loaded = data_lib.load(config)
  ids = loaded.cohort.patient_id
  np.testing.assert_array_equal(loaded.test_mask_N,
                                np.char.startswith(ids.astype(str), "mimic_demo:"))
  assert loaded.test_mask_N.sum() == 99
  assert not any(isinstance(v, np.ndarray) for v in loaded.info.values())
  config.data.test_database = "nope"
  from crl_mmnar_jax.data.errors import DataError
  with pytest.raises(DataError, match="database 'nope' not found"):
    data_lib.load(config)


def test_modality_table_matches_naive_counts():
  from crl_mmnar_jax.evaluation import modality_table
  c = _cohort()
  labels = c.labels.copy()
  labels[:5] = np.nan
  import dataclasses
  rows = modality_table(dataclasses.replace(c, labels=labels))
  assert len(rows) == 2
  for r, m in zip(rows, range(2)):
    known = [i for i in range(c.n) if not np.isnan(labels[i, 0])]
    obs = [i for i in known if c.present[i, m]]
    not_obs = [i for i in known if not c.present[i, m]]
    assert r["observed_fraction"] == pytest.approx(len(obs) / len(known))
    assert r["rate_observed"] == pytest.approx(np.mean([labels[i, 0] for i in obs]))
    if not_obs:
      assert r["rate_not_observed"] == pytest.approx(np.mean([labels[i, 0] for i in not_obs]))
    else:
      assert r["rate_not_observed"] is None


def test_validate_messages_name_rows_not_ids_or_values():
  """Cohort.validate names counts and row positions; no patient id, no raw value."""
  import dataclasses
  c = _cohort()                                   # ids 100..139
  secret = np.arange(987650, 987650 + c.n)        # ids that cannot appear by chance
  c = dataclasses.replace(c, patient_id=secret)
  def message(**changes):
    with pytest.raises(ValueError) as e:
      dataclasses.replace(c, **changes).validate("cohort X")
    msg = str(e.value)
    assert msg.startswith("cohort X: ") and "9876" not in msg, msg
    return msg
  dup = secret.copy()
  dup[[5, 9]] = dup[2]
  assert "1 patient_id value(s) appear in more than one row (first at row 3)" in message(
      patient_id=dup)
  x0 = c.features[0].copy()
  x0[[4, 7], 1] = np.inf
  assert "modality 'a' has Inf features for 2 observed patient(s) (first at row 5)" in message(
      features=(x0, c.features[1]))
  present = c.present.copy()
  present[[6, 11], :] = False
  feats = tuple(np.where(present[:, [m]], f, 0).astype(np.float32)
                for m, f in enumerate(c.features))
  assert "2 patient(s) have no observed modality (first at row 7)" in message(
      present=present, features=feats)
  labels = c.labels.copy()
  labels[[8, 12], 0] = 7.0
  msg = message(labels=labels)
  assert "task 'y' has 2 row(s) with another value (first at row 9)" in msg and "7" not in msg
  split = np.array(["train"] * c.n, dtype=object)
  split[13] = "holdout"
  msg = message(split=split)
  assert "1 row(s) hold another value (first at row 14)" in msg and "holdout" not in msg


def test_unknown_data_source_fails_in_one_line_naming_the_known_ones():
  import ml_collections

  from crl_mmnar_jax import data as data_lib
  config = ml_collections.ConfigDict({"data": {"name": "nope"}})
  with pytest.raises(ValueError, match=r"^unknown data source 'nope'; known: synthetic, "
                                       r"tables, physionet2012, yaib, eicu, mimic, meds$"):
    data_lib.load(config)
  assert data_lib.get_source("synthetic") is data_lib.SOURCES["synthetic"]
