"""The defaults-that-travel study: its worlds, its candidate settings and its summary."""

import json
import os

import numpy as np
import pytest
from absl import flags

from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.data.sources.tables import load_tables
from experiments import run
from experiments.configs import physionet2012, tables
from experiments.configs.lookup import resolve_config_argv
from experiments.studies import travelling


def test_the_check_family_never_reuses_a_search_world_or_world_0():
  seeds = {f: {s["world_seed"] for s in w.values()} for f, w in travelling.FAMILIES.items()}
  assert not seeds["search"] & seeds["check"]
  assert 0 not in seeds["search"] | seeds["check"]    # the synthetic config's own world
  assert len(travelling.FAMILIES["check"]) >= 6
  mech = {s["mechanism"] for s in travelling.FAMILIES["check"].values()}
  assert {"mcar", "mnar"} <= mech


def test_a_world_written_as_tables_loads_back_as_the_same_cohort(tmp_path):
  spec = dict(world_seed=31, mechanism="mnar", nonlinearity=0.5, n=300)
  folder = travelling.write_world(str(tmp_path / "w"), spec)
  got = load_tables(folder, modalities=("m0", "m1", "m2", "m3"))
  want = make_synthetic(300, mechanism="mnar", nonlinearity=0.5, seed=31, world_seed=31).cohort
  order = np.argsort(got.patient_id)
  ref = np.argsort(want.patient_id)
  np.testing.assert_array_equal(got.patient_id[order], want.patient_id[ref])
  np.testing.assert_array_equal(got.present[order], want.present[ref])
  np.testing.assert_array_equal(got.labels[order], want.labels[ref])
  for a, b in zip(got.features, want.features):
    np.testing.assert_allclose(a[order], b[ref], rtol=1e-6)
  mtime = os.path.getmtime(os.path.join(folder, "labels.parquet"))
  travelling.write_world(folder, spec)               # written once, then reused
  assert os.path.getmtime(os.path.join(folder, "labels.parquet")) == mtime
  assert not os.path.exists(folder + ".tmp")


def _apply(args):
  """The config `experiments.run --config=tables ARGS` resolves, parsed as a run does."""
  argv = resolve_config_argv(["run", "--config=tables", "--workdir=/w", *args])
  fv = flags.FlagValues()
  run.define_flags(fv, argv)
  fv(argv)
  return fv.config


@pytest.mark.parametrize("tuned", [False, True])
@pytest.mark.parametrize("wide", [False, True])
def test_a_label_means_the_same_settings_whatever_the_defaults(tuned, wide):
  label = ("pn_tuned" if tuned else "hand_set") + ("_wide" if wide else "")
  c = _apply(travelling.LABELS[label])
  base = tables.get_base_config("tables")
  for key, value in physionet2012.TUNED.items():
    section, name = key.split(".")
    assert c[section][name] == (value if tuned else base[section][name]), key
  assert c.model.wide is wide
  # The schema's own values differ from the tuned ones: the labels are distinct settings.
  assert base.model.num_embedding != physionet2012.TUNED["model.num_embedding"]
  assert _apply(travelling.LABELS["default"]).to_dict() == tables.get_config().to_dict()


def _fake(val, test, rect):
  return {"val": val, "test": test, "test_rectified": rect}


def test_summary_against_a_naive_loop():
  rng = np.random.default_rng(0)
  runs = {w: {x: [_fake(*rng.uniform(0.7, 0.9, 3)) for _ in range(3)]
              for x in ("logreg", "a", "b")} for w in ("w1", "w2")}
  s = travelling.summarise(runs, ["logreg", "a", "b"])
  for x in ("a", "b"):
    gains = []
    for w in ("w1", "w2"):
      d = [runs[w][x][i]["test"] - runs[w]["logreg"][i]["test"] for i in range(3)]
      row = s["worlds"][w][x]
      assert row["diff_mean"] == pytest.approx(sum(d) / 3)
      assert row["diff_sd"] == pytest.approx(np.std(d, ddof=1))
      assert row["ahead"] == sum(v > 0 for v in d)
      vx = sum(r["val"] for r in runs[w][x]) / 3
      vl = sum(r["val"] for r in runs[w]["logreg"]) / 3
      gains.append(vx - vl)
      assert row["rectified_minus_raw"] == pytest.approx(
          sum(r["test_rectified"] - r["test"] for r in runs[w][x]) / 3)
    assert s["objective"][x] == pytest.approx(sum(gains) / 2)
  assert "logreg" not in s["objective"]
  text = travelling.markdown(s, ["logreg", "a", "b"])
  assert text.count("\n") == 4 and "| w2 |" in text


def test_a_finished_run_is_reused_and_not_rerun(tmp_path):
  work = tmp_path / "run"
  work.mkdir()
  (work / "results.json").write_text(json.dumps({"metrics": {}}))
  # A missing data folder would make a real run fail: reuse never starts one.
  assert travelling.run_one(str(tmp_path / "absent"), str(work), 0, [], []) == (str(work), 0.0)


def test_an_unknown_label_is_one_line(tmp_path):
  fv = flags.FlagValues()
  travelling.define_flags(fv)
  fv(["travelling", "--labels=logreg,nope", f"--out={tmp_path}"])
  with pytest.raises(SystemExit, match="unknown world or label 'nope'"):
    travelling.main(["travelling"], fv)
  assert not os.listdir(tmp_path)
