"""A search's trials load their cohort once (`data.reuse_loaded`): the same
predictions as runs that each load it, the loader called once per data setting."""

from __future__ import annotations

import polars as pl
import pytest

from crl_mmnar_jax import data as data_lib
from crl_mmnar_jax.data import registry
from crl_mmnar_jax.data.sources import tables
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.experiment import train_and_evaluate
from experiments.configs import synthetic
from experiments.configs import tables as tables_config


def _synthetic(dim):
  c = synthetic.get_config("tiny")
  c.data.n, c.model.dim, c.train.epochs = 300, dim, 1
  c.eval.n_boot, c.eval.plots = 0, False
  return c


def _tables(directory, l2):
  c = tables_config.get_config("tiny")
  c.data.dir, c.method = str(directory), "logreg"
  c.baseline.logreg_l2_grid = (l2,)
  c.eval.n_boot, c.eval.plots = 0, False
  return c


def _predictions(workdir):
  return pl.read_parquet(workdir / "predictions.parquet")


@pytest.mark.parametrize("source", ["synthetic", "tables"])
def test_runs_on_a_reused_cohort_predict_as_runs_that_load_it(source, tmp_path, monkeypatch):
  if source == "synthetic":
    configs = [_synthetic(16), _synthetic(32)]
  else:
    tables.write_tables(make_synthetic(n=300, seed=3).cohort, tmp_path / "cohort")
    configs = [_tables(tmp_path / "cohort", 0.1), _tables(tmp_path / "cohort", 10.0)]
  calls = []
  loader = registry.SOURCES[source]
  monkeypatch.setitem(registry.SOURCES, source,
                      lambda config, keep: calls.append(1) or loader(config, keep))
  alone = []
  for i, c in enumerate(configs):
    train_and_evaluate(c, str(tmp_path / f"alone{i}"), log=lambda s: None)
    alone.append(_predictions(tmp_path / f"alone{i}"))
  assert len(calls) == 2
  with data_lib.reuse_loaded():
    for i, c in enumerate(configs):
      train_and_evaluate(c, str(tmp_path / f"reused{i}"), log=lambda s: None)
      assert _predictions(tmp_path / f"reused{i}").equals(alone[i])
  assert len(calls) == 3                  # once for both runs
  other = configs[0].copy_and_resolve_references()
  other.seed = 5                          # another seed: loaded again
  with data_lib.reuse_loaded():
    first = data_lib.load(configs[0])
    assert data_lib.load(configs[0]) is first and data_lib.load(other) is not first
    assert not first.cohort.features[0].flags.writeable       # a run cannot change it
    with pytest.raises(ValueError, match="read-only"):
      first.cohort.labels[0, 0] = 1.0
