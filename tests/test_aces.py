"""ACES labels through `crl_mmnar_jax.data.sources.aces` (aces-cli in its own environment).

Always run: the one-line errors (no executable from the argument, $CRL_MMNAR_ACES or
PATH; no YAML; not a .yaml; no shard; aces-cli failing) and the subprocess contract on a
stand-in aces-cli (the Hydra overrides it gets, the shards joined and sorted). On the
MIMIC-IV demo MEDS root, when aces-cli ($CRL_MMNAR_ACES or PATH) and the shared data are
there: the three task configs of experiments/configs/aces/ against the `mimic` pipeline's
cohort and labels.
"""

import datetime as dt
import glob
import json
import os
import re
import stat
import subprocess
import sys

import polars as pl
import pytest

from crl_mmnar_jax.config import shared_data_dir
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.sources import aces
from crl_mmnar_jax.data.sources.mimic.cohort import TASKS, cohort_frame
from crl_mmnar_jax.data.sources.mimic.meds import MedsSource

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs", "aces")
DEMO = os.path.join(shared_data_dir() or "", "meds-mimic-iv-demo")
T = dt.datetime


@pytest.fixture
def root(tmp_path):
  """A MEDS root with two shards (the files' contents are never read by the module)."""
  for shard in ("train/0", "held out/1"):
    path = tmp_path / "root" / "data" / (shard + ".parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
  return str(tmp_path / "root")


@pytest.fixture
def task(tmp_path):
  path = tmp_path / "my task.yaml"
  path.write_text("predicates: {}\n")
  return str(path)


def _fake_cli(tmp_path, body: str) -> str:
  """An executable aces-cli stand-in (this interpreter) running `body` with `args`, the
  Hydra overrides as a dict."""
  path = tmp_path / "fake-aces-cli"
  path.write_text(f"#!{sys.executable}\nimport sys\n"
                  "args = dict(a.split('=', 1) for a in sys.argv[1:] if '=' in a)\n" + body)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return str(path)


def test_missing_executable_is_one_line(root, task, tmp_path, monkeypatch):
  absent = str(tmp_path / "no-aces-cli")
  with pytest.raises(DataError, match="^" + re.escape(f"{absent}: ACES executable not found (from argument")):
    aces.extract_labels(root, task, str(tmp_path / "out"), aces_cli=absent)
  monkeypatch.setenv(aces.ENV_VAR, absent)
  with pytest.raises(DataError, match=r"not found \(from \$CRL_MMNAR_ACES; pip install es-aces"):
    aces.extract_labels(root, task, str(tmp_path / "out"))
  monkeypatch.delenv(aces.ENV_VAR)
  monkeypatch.setenv("PATH", str(tmp_path))
  with pytest.raises(DataError, match=r"^aces-cli: ACES executable not found \(from PATH"):
    aces.find_aces()


def test_missing_or_bad_yaml_and_root_are_one_line(root, task, tmp_path):
  fake = _fake_cli(tmp_path, "")
  missing = str(tmp_path / "absent.yaml")
  with pytest.raises(DataError, match="^" + re.escape(f"{missing}: ACES task config not found") + "$"):
    aces.extract_labels(root, missing, str(tmp_path / "out"), aces_cli=fake)
  other = tmp_path / "task.yml"
  other.write_text("")
  with pytest.raises(DataError, match=r"task.yml: ACES reads task configs named \*.yaml"):
    aces.extract_labels(root, str(other), str(tmp_path / "out"), aces_cli=fake)
  with pytest.raises(DataError, match=r"empty/data: no .parquet shard"):
    aces.extract_labels(str(tmp_path / "empty"), task, str(tmp_path / "out"), aces_cli=fake)


def test_aces_failure_is_one_line_naming_the_yaml(root, task, tmp_path):
  fake = _fake_cli(tmp_path, "print('Traceback (most recent call last):', file=sys.stderr)\n"
                             "print(\"KeyError: 'predicate nope'\", file=sys.stderr)\n"
                             "print('', file=sys.stderr)\n"
                             "print('Set the environment variable HYDRA_FULL_ERROR=1 for a "
                             "complete stack trace.', file=sys.stderr)\nsys.exit(1)\n")
  with pytest.raises(DataError) as e:
    aces.extract_labels(root, task, str(tmp_path / "out"), aces_cli=fake)
  msg = str(e.value)
  assert "\n" not in msg
  assert msg.startswith(f"{task}: aces-cli failed (exit 1): KeyError: 'predicate nope' (logs: ")
  quiet = _fake_cli(tmp_path, "")                        # exits 0, writes nothing
  with pytest.raises(DataError, match=r"held out/1.parquet: aces-cli exited 0 but did not write"):
    aces.extract_labels(root, task, str(tmp_path / "out"), aces_cli=quiet)


def test_a_task_that_matches_no_subject_is_one_line(root, task, tmp_path):
  body = """
import os, datetime as dt
import polars as pl
unq = lambda v: v[1:-1].replace("\\\\'", "'")
for shard in args["data.shard"].split("','"):
  out = os.path.join(unq(args["cohort_dir"]), unq(args["cohort_name"]),
                     shard.strip("'") + ".parquet")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  pl.DataFrame(schema={"subject_id": pl.Int64, "prediction_time": pl.Datetime("us"),
                       "boolean_value": pl.Boolean}).write_parquet(out)
"""
  fake = _fake_cli(tmp_path, body)
  with pytest.raises(DataError) as e:
    aces.extract_labels(root, task, str(tmp_path / "out"), aces_cli=fake)
  assert str(e.value).startswith(f"{task}: ACES matched no subject of {root} (0 label rows)")
  assert "\n" not in str(e.value)


def test_overrides_and_shards_joined(root, task, tmp_path, monkeypatch):
  """The stand-in records its overrides and writes each shard's labels where ACES does
  (cohort_dir/cohort_name/<shard>.parquet), rows out of order."""
  body = """
import json, os, datetime as dt
import polars as pl
json.dump(sys.argv[1:], open(os.environ["ARGS_OUT"], "w"))
unq = lambda v: v[1:-1].replace("\\\\'", "'")
for k, shard in enumerate(args["data.shard"].split("','")):
  shard = shard.strip("'")
  out = os.path.join(unq(args["cohort_dir"]), unq(args["cohort_name"]), shard + ".parquet")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  pl.DataFrame({"subject_id": [20 + k, 10 + k], "prediction_time": [dt.datetime(2020, 1, 2),
                dt.datetime(2020, 1, 1)], "boolean_value": [True, k == 1]}).write_parquet(out)
"""
  fake = _fake_cli(tmp_path, body)
  monkeypatch.setenv("ARGS_OUT", str(tmp_path / "args.json"))
  out = aces.extract_labels(root, task, str(tmp_path / "out, 1"), aces_cli=fake)
  assert out == str(tmp_path / "out, 1" / "my task.parquet")
  argv = json.loads((tmp_path / "args.json").read_text())
  assert argv == ["-m", f"config_path='{task}'", "data=sharded", "data.standard=meds",
                  f"data.root='{root}/data'", "data.shard='held out/1','train/0'",
                  f"cohort_dir='{tmp_path}/out, 1'", "cohort_name='my task'"]
  labels = pl.read_parquet(out)
  assert labels.rows() == [(10, T(2020, 1, 1), False), (11, T(2020, 1, 1), True),
                           (20, T(2020, 1, 2), True), (21, T(2020, 1, 2), True)]


def test_labels_for_extracts_once_and_again_when_the_yaml_or_root_changes(
    root, task, tmp_path, monkeypatch):
  body = """
import os, datetime as dt
import polars as pl
open(os.environ["CALLS"], "a").write("x")
unq = lambda v: v[1:-1]
for shard in args["data.shard"].split("','"):
  out = os.path.join(unq(args["cohort_dir"]), unq(args["cohort_name"]), shard.strip("'") + ".parquet")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  pl.DataFrame({"subject_id": [1], "prediction_time": [dt.datetime(2020, 1, 1)],
                "boolean_value": [True]}).write_parquet(out)
"""
  monkeypatch.setenv(aces.ENV_VAR, _fake_cli(tmp_path, body))
  monkeypatch.setenv("CALLS", str(tmp_path / "calls"))
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  calls = lambda: len((tmp_path / "calls").read_text())
  first = aces.labels_for(root, task)
  assert first.startswith(str(tmp_path / "cache" / "crl_mmnar_jax" / "aces"))
  assert first.endswith("my task.parquet") and calls() == 1
  assert aces.labels_for(root, task) == first and calls() == 1      # reused
  with open(task, "a") as f:
    f.write("# changed\n")
  second = aces.labels_for(root, task)
  assert second != first and calls() == 2                            # the YAML changed
  shard = os.path.join(root, "data", "train", "0.parquet")
  with open(shard, "ab") as f:
    f.write(b"more")
  assert aces.labels_for(root, task) not in (first, second) and calls() == 3   # the data
  with pytest.raises(DataError, match="absent.yaml: ACES task config not found$"):
    aces.labels_for(root, str(tmp_path / "absent.yaml"))


# ----------------------------------------------------------------------------- demo


def _aces_cli() -> str | None:
  try:
    return aces.find_aces()
  except DataError:
    return None


@pytest.mark.skipif(_aces_cli() is None,
                    reason=f"aces-cli not found (set ${aces.ENV_VAR}; {aces.INSTALL_HINT})")
@pytest.mark.skipif(not os.path.isdir(os.path.join(DEMO, "data")),
                    reason=f"MIMIC-IV demo MEDS root not found at {DEMO}")
def test_demo_labels_match_the_mimic_pipeline(tmp_path):
  """94 of the pipeline's 95 (subject, index discharge) rows, every label equal
  (readmission_30d 13, icu_90d 14, mortality_180d 9 positives). The one row missing is
  the documented deviation: the pipeline merges an admission starting < 6 h after the
  index discharge into the index episode (subject 10002930: an observation stay, then
  an admission one minute after its discharge) and predicts at the episode's last
  discharge; the ACES configs exclude such subjects."""
  frame, _ = cohort_frame(*MedsSource(os.path.join(DEMO, "data")).base())
  merged = set(frame.filter(pl.col("hadm_ids").list.len() > 1)["subject_id"])
  assert merged == {10002930}
  mimic = frame.select("subject_id", pl.col("dischtime").alias("prediction_time"), *TASKS)
  assert mimic.height == 95
  for name, positives in zip(TASKS, (13, 14, 9)):
    path = aces.extract_labels(DEMO, os.path.join(CONFIGS, name + ".yaml"), str(tmp_path))
    labels = pl.read_parquet(path)
    assert labels.select("subject_id", "prediction_time").is_unique().all()
    both = mimic.join(labels, on=["subject_id", "prediction_time"], how="inner")
    only_mimic = mimic.join(labels, on=["subject_id", "prediction_time"], how="anti")
    only_aces = labels.join(mimic, on=["subject_id", "prediction_time"], how="anti")
    assert only_aces.height == 0, name
    assert set(only_mimic["subject_id"]) == merged, name
    assert both.height == labels.height == 94, name
    assert (both[name] == both["boolean_value"].cast(pl.Float64)).all(), name
    assert int(labels["boolean_value"].sum()) == positives, name


def _meds_evaluation_cli() -> str | None:
  """meds-evaluation's command beside aces-cli (one environment for both, docs/meds.md)."""
  exe = _aces_cli()
  path = exe and os.path.join(os.path.dirname(exe), "meds-evaluation-cli")
  return path if path and os.path.isfile(path) else None


@pytest.mark.skipif(_meds_evaluation_cli() is None,
                    reason=f"aces-cli and meds-evaluation-cli not found (set ${aces.ENV_VAR})")
@pytest.mark.skipif(not os.path.isdir(os.path.join(DEMO, "data")),
                    reason=f"MIMIC-IV demo MEDS root not found at {DEMO}")
def test_demo_from_aces_configs_to_a_result_meds_evaluation_agrees_with(tmp_path):
  """`--config.data.task=` the three ACES YAMLs: three heads on ACES's rows, and
  meds-evaluation's AUROC of each task's prediction file equal to the run's own."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": str(tmp_path / "cache")}
  yamls = [os.path.join(CONFIGS, name + ".yaml") for name in TASKS]
  work = tmp_path / "run"
  # The demo's 9 held_out subjects hold one class per task: its events without its
  # subject_splits.parquet, so that a random 30% of subjects is the test set.
  root = tmp_path / "root"
  root.mkdir()
  os.symlink(os.path.join(DEMO, "data"), root / "data")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.run", "--config=meds:tiny", f"--workdir={work}",
       f"--config.data.meds_root={root}", "--config.data.task=" + ",".join(yamls),
       "--config.data.test_fraction=0.3", "--config.eval.plots=False"],
      cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  info = json.loads((work / "data_info.json").read_text())
  results = json.loads((work / "results.json").read_text())
  assert info["n_rows"] == 94 and results["cohort"]["tasks"] == list(TASKS)
  cached = {os.path.basename(p)[:-len(".parquet")]: p
            for p in glob.glob(str(tmp_path / "cache" / "crl_mmnar_jax" / "aces" / "*" / "*.parquet"))}
  assert sorted(cached) == sorted(TASKS)            # ACES ran once per YAML, into the cache
  compared = []
  for name, positives in zip(TASKS, (13, 14, 9)):
    labels = pl.read_parquet(cached[name])
    assert labels.height == 94 and int(labels["boolean_value"].sum()) == positives
    pred = work / "meds_predictions" / f"{name}.parquet"
    rows = pl.read_parquet(pred).join(labels, on=["subject_id", "prediction_time"],
                                      how="left", suffix="_aces")
    assert rows.height > 0 and (rows["boolean_value"] == rows["boolean_value_aces"]).all()
    out = tmp_path / f"{name}.json"
    done = subprocess.run([_meds_evaluation_cli(), f"predictions_path={pred}",
                           f"output_file={out}"], capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in env.items()
                                            if k not in ("PYTHONPATH", "PYTHONHOME")})
    y = pl.read_parquet(pred)["boolean_value"]
    if not 0 < y.sum() < len(y):               # one class among the held_out rows
      continue
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(out.read_text())["samples_equally_weighted"]["roc_auc_score"]
    assert theirs == pytest.approx(results["metrics"]["test_rectified"][name]["auroc"],
                                   abs=1e-9), name
    compared.append(name)
  assert compared, "no task has both classes among the held_out rows"
