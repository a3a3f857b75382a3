"""The workdir's guards (docs/reliability.md): resume only on the same data, reuse of the
trained checkpoint when only post-training settings change, the lock, partial files,
corrupt checkpoints, SIGINT, I/O errors, and the minimum cell size of the outputs."""

import errno
import gc
import json
import os
import re
import signal
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest

from crl_mmnar_jax import cells
from crl_mmnar_jax import workdir as workdir_lib
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.data.sources.tables import load_tables_with_info, write_tables
from crl_mmnar_jax.train.checkpoint import Checkpoints
from crl_mmnar_jax.train.records import MetricsWriter
from crl_mmnar_jax.workdir import WorkdirError, WorkdirLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--config=synthetic:tiny", "--config.data.n=200", "--config.train.epochs=2",
        "--config.train.checkpoint_every=1", "--config.eval.plots=false",
        "--config.eval.n_boot=20"]
TABLES = ["--config=tables:tiny", "--config.train.epochs=2", "--config.train.batch_size=64",
          "--config.train.checkpoint_every=1", "--config.eval.plots=false",
          "--config.eval.n_boot=20"]


def cli_env(cache, fault=None) -> dict:
  """The environment of an `experiments.run` subprocess: this checkout, CPU, the shared
  compilation cache `cache`, and the fault hook only when `fault` is given."""
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env.pop("CRL_FAULT", None)
  if fault:
    env["CRL_FAULT"] = fault
  return env


def cli(args, cwd, cache, fault=None, background=False, timeout=300):
  """`python -m experiments.run ARGS` in `cwd`: the finished process, or with
  `background` the running one."""
  cmd, env = [sys.executable, "-m", "experiments.run", *args], cli_env(cache, fault)
  if background:
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout)


def one_line_error(proc) -> str:
  """The last stderr line of a failed run; the run printed no traceback."""
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  return proc.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.getbasetemp() / "jax_cache"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
  """An uninterrupted run of ARGS (shared with tests/test_faults.py in one session)."""
  base = tmp_path_factory.getbasetemp()
  workdir = base / "fault_reference"
  if not (workdir / "results.json").exists():
    proc = cli([*ARGS, f"--workdir={workdir}"], base, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def same_outputs(a, b) -> None:
  assert pl.read_parquet(a / "predictions.parquet").equals(
      pl.read_parquet(b / "predictions.parquet"))
  ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
  for key in ("metrics", "per_pattern", "rectifier"):
    assert ra[key] == rb[key], key


# ----------------------------------------------------------------------------- 1. data


def test_resume_on_changed_ids_labels_or_features_is_refused_naming_the_change(tmp_path,
                                                                               cache):
  data, workdir = tmp_path / "data", tmp_path / "work"
  cohort = make_synthetic(240, n_modalities=3, n_tasks=2, seed=5).cohort
  write_tables(cohort, data)
  args = [*TABLES, f"--config.data.dir={data}", f"--workdir={workdir}"]
  proc = cli(args, tmp_path, cache, fault="step#2")        # killed with checkpoints saved
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  labels = pl.read_parquet(data / "labels.parquet")
  m0 = pl.read_parquet(data / "m0.parquet")
  config_before = (workdir / "config.json").read_text()

  def refused(expected):
    out = one_line_error(cli(args, tmp_path, cache))
    assert re.search(rf"trained on other data: the {expected}[^;]* changed since", out), out
    assert (workdir / "config.json").read_text() == config_before    # nothing rewritten

  first = labels["patient_id"][0]
  labels.filter(pl.col("patient_id") != first).write_parquet(data / "labels.parquet")
  m0.filter(pl.col("patient_id") != first).write_parquet(data / "m0.parquet")
  for name in ("m1", "m2"):
    frame = pl.read_parquet(data / f"{name}.parquet")
    frame.filter(pl.col("patient_id") != first).write_parquet(data / f"{name}.parquet")
  refused("patient ids \\(or their order\\)")
  write_tables(cohort, data)
  last = int(np.flatnonzero(labels["task0"].is_not_null().to_numpy())[-1])   # one label
  labels.with_columns(pl.when(pl.int_range(pl.len()) == last).then(1 - pl.col("task0"))
                      .otherwise(pl.col("task0")).alias("task0")).write_parquet(
                          data / "labels.parquet")
  refused("labels")
  write_tables(cohort, data)
  m0.with_columns(pl.col(m0.columns[1]) + 1e-3).write_parquet(data / "m0.parquet")
  refused("features")
  write_tables(cohort, data)
  rerun = cli(args, tmp_path, cache)                          # the same data again: resumes
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "resuming from step 1" in rerun.stdout


def test_data_fingerprint_names_each_part_that_changed():
  import dataclasses
  cohort = make_synthetic(50, seed=1).cohort
  split = np.array(["train"] * 30 + ["val"] * 10 + ["test"] * 10)
  fp = workdir_lib.data_fingerprint(cohort, split)
  assert workdir_lib.data_changes(fp, workdir_lib.data_fingerprint(cohort, split)) == []
  moved = split.copy()
  moved[[0, 45]] = moved[[45, 0]]
  assert workdir_lib.data_changes(fp, workdir_lib.data_fingerprint(cohort, moved)) == ["split"]
  flipped = cohort.labels.copy()
  flipped[49, 0] = 1 - flipped[49, 0]          # a test label
  other = workdir_lib.data_fingerprint(dataclasses.replace(cohort, labels=flipped), split)
  assert workdir_lib.data_changes(fp, other) == ["labels"]


# ----------------------------------------------------------------------------- 2. settings


def test_post_training_settings_reuse_the_checkpoint_training_settings_are_refused(
    reference, tmp_path, cache):
  import shutil
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  metrics_before = (workdir / "metrics.jsonl").read_text()
  (workdir / "results.json.tmp4242").write_text("{")          # left by a killed writer
  (workdir / ".splits.parquet.tmp77").write_text("")
  args = [*ARGS, f"--workdir={workdir}", "--config.rectifier.min_count=9",
          "--config.eval.n_boot=30"]
  proc = cli(args, tmp_path, cache)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "post-training settings changed" in proc.stdout
  assert "rectifier.min_count: 5 -> 9" in proc.stdout
  assert "resuming from step 6" in proc.stdout                 # no training step ran
  assert "removed 2 temporary file(s)" in proc.stdout
  assert not list(workdir.glob("*.tmp*")) and not list(workdir.glob(".*.tmp*"))
  assert (workdir / "metrics.jsonl").read_text() == metrics_before
  config = json.loads((workdir / "config.json").read_text())
  assert config["rectifier"]["min_count"] == 9 and config["eval"]["n_boot"] == 30
  results = json.loads((workdir / "results.json").read_text())
  assert results["rectifier"]["settings"]["min_count"] == 9
  assert pl.read_parquet(workdir / "predictions.parquet")["task0_prob"].equals(
      pl.read_parquet(reference / "predictions.parquet")["task0_prob"])
  out = one_line_error(cli([*args, "--config.train.lr=0.002"], tmp_path, cache))
  assert "holds a run of a different config" in out and "train.lr: 0.001 -> 0.002" in out


# ----------------------------------------------------------------------------- 3. lock


def test_lock_refuses_a_second_holder_and_takes_over_a_stale_lock(tmp_path):
  messages = []
  with WorkdirLock(str(tmp_path), messages.append):
    with pytest.raises(WorkdirError, match=rf"in use by another run \(pid {os.getpid()} on "
                                           rf"host .+\)"):
      WorkdirLock(str(tmp_path))
  assert (tmp_path / ".lock").read_text() == ""             # released
  (tmp_path / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone"}))
  with WorkdirLock(str(tmp_path), messages.append):          # flock free: stale
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
  assert messages == ["taking over the stale lock of a run that ended without releasing "
                      "it (pid 999999 on host gone)"]


def test_a_second_run_on_a_locked_workdir_stops_with_one_line(tmp_path, cache):
  workdir = tmp_path / "run"
  with WorkdirLock(str(workdir)):
    out = one_line_error(cli([*ARGS, f"--workdir={workdir}"], tmp_path, cache))
  assert out.startswith(f"error: workdir {workdir} is in use by another run (pid "
                        f"{os.getpid()} on host ")
  assert sorted(p.name for p in workdir.iterdir()) == [".lock"]   # nothing else written


# ----------------------------------------------------------------------------- 4. partial files


def test_metrics_jsonl_torn_last_line_is_dropped_a_bad_middle_line_is_named(tmp_path):
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps({"step": s, "x": 1.0}) for s in (5, 10, 15)]
  path.write_text("\n".join(lines) + '\n{"step": 20, "x"')
  MetricsWriter(str(path), resume_step=10)
  assert path.read_text() == "\n".join(lines[:2]) + "\n"
  path.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
  with pytest.raises(WorkdirError, match=rf"{re.escape(str(path))}:2: not a JSON object"):
    MetricsWriter(str(path), resume_step=10)


def test_sigint_stops_with_one_line_and_torn_files_do_not_block_the_rerun(reference,
                                                                          tmp_path, cache):
  workdir = tmp_path / "run"
  args = [*ARGS, f"--workdir={workdir}"]
  proc = cli(args, tmp_path, cache, fault="step#4=sigint")
  assert proc.returncode == 130, proc.stderr[-3000:]
  assert one_line_error(proc) == ("interrupted (SIGINT) at step 4; rerun the same command "
                                  "to resume")
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "train/to')                          # torn by a kill
  config = workdir / "config.json"
  config.write_text(config.read_text()[:100])                  # truncated
  rerun = cli(args, tmp_path, cache)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f"warning: {config}: not valid JSON" in rerun.stdout
  assert "resuming from step 4" in rerun.stdout
  same_outputs(reference, workdir)
  assert all(json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines())


def test_sigterm_outside_the_training_loop_is_one_line_too(tmp_path, cache):
  proc = cli([*ARGS, f"--workdir={tmp_path / 'run'}"], tmp_path, cache,
             fault="data_loaded=sigterm")
  assert proc.returncode == 143
  assert one_line_error(proc) == ("interrupted (SIGTERM) outside the training loop; rerun "
                                  "the same command to resume")


def test_a_second_signal_during_shutdown_is_ignored(tmp_path):
  """`workdir.exit_interrupted` (the end of `experiments.run` and `experiments.tune` after
  SIGINT/SIGTERM): a second SIGTERM arriving while the interpreter shuts down (here sent
  by an exit handler, as a second `kill` would arrive while JAX's exit handlers run)
  leaves the one-line message and exit code alone; before, it raised `Interrupted`
  inside the exit handler and printed a traceback."""
  script = tmp_path / "second_signal.py"
  script.write_text(
      "import atexit, os, signal\n"
      "import jax\n"
      "from crl_mmnar_jax import workdir\n"
      "signal.signal(signal.SIGTERM, workdir.raise_interrupted)\n"
      "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))\n"
      "try:\n"
      "  os.kill(os.getpid(), signal.SIGTERM)\n"
      "except KeyboardInterrupt as e:\n"
      "  workdir.exit_interrupted(e, ' (suffix)')\n")
  proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                        cwd=ROOT, timeout=120)
  assert proc.returncode == 143, proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  assert proc.stderr.strip() == ("interrupted (SIGTERM) outside the training loop; rerun "
                                 "the same command to resume (suffix)")


def _small_state():
  rng = np.random.default_rng(0)
  return {"w": jnp.asarray(rng.normal(size=(128, 128)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(128,)), jnp.float32)}


def _corrupt(step_dir, truncate=False):
  data = max((p for p in step_dir.rglob("*") if p.is_file() and "ocdbt" in str(p.parent)),
             key=lambda p: p.stat().st_size)
  raw = bytearray(data.read_bytes())
  if truncate:
    raw = raw[:len(raw) // 3]
  else:
    for i in range(64):
      raw[len(raw) // 2 + i] ^= 0xFF
  data.write_bytes(bytes(raw))


@pytest.mark.parametrize("truncate", [False, True])
def test_corrupt_checkpoint_falls_back_to_the_previous_step_or_is_refused(tmp_path, truncate,
                                                                          monkeypatch):
  unraisable = []       # orbax's abandoned reads once dumped 60 lines each
  monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
  log = []
  state = _small_state()
  ckpt = Checkpoints(str(tmp_path), log.append)
  for step in (1, 2):
    s = {k: v + step for k, v in state.items()}
    ckpt.save_latest(step, s, {"step": step})
  full = {0: state, 1: {"mu": state["w"] * 3}}          # (model, optimizer), as nnx.split
  ckpt.save_best(2, full, {"step": 2})
  ckpt.close()
  _corrupt(tmp_path / "checkpoints" / "latest" / "2", truncate)
  ckpt = Checkpoints(str(tmp_path), log.append)
  restored, meta = ckpt.restore_latest(state)
  assert meta["step"] == 1
  np.testing.assert_array_equal(restored["w"], state["w"] + 1)
  assert len(log) == 1 and re.match(r"warning: checkpoint .*latest/2 is corrupt \(.*\); "
                                    r"deleted it and resumed from step 1$", log[0])
  assert ckpt.latest.all_steps() == [1]
  _corrupt(tmp_path / "checkpoints" / "latest" / "1", truncate)
  with pytest.raises(WorkdirError, match=r"checkpoint .*latest/1 is corrupt .*; delete "
                                         r".*checkpoints to train again$") as e:
    ckpt.restore_latest(state)
  assert "\n" not in str(e.value)
  like = {0: {k: v * 0 for k, v in state.items()}, 1: {"mu": state["w"] * 5}}
  best, _ = ckpt.restore_best(like)           # `best` holds the model alone
  np.testing.assert_array_equal(best[0]["w"], state["w"])
  np.testing.assert_array_equal(best[1]["mu"], like[1]["mu"])
  _corrupt(tmp_path / "checkpoints" / "best" / "2", truncate)
  with pytest.raises(WorkdirError, match=r"checkpoint .*best/2 is corrupt"):
    ckpt.restore_best(like)
  ckpt.close()
  gc.collect()
  assert not unraisable, [str(u.object) for u in unraisable]


# ----------------------------------------------------------------------------- 5. I/O


def test_io_errors_are_one_line_naming_the_path(tmp_path, cache):
  blocker = tmp_path / "file"
  blocker.write_text("")
  out = one_line_error(cli([*ARGS, f"--workdir={blocker / 'run'}"], tmp_path, cache))
  assert out == f"error: {blocker / 'run'}: Not a directory (rerun the same command once " \
                f"it is fixed)"
  workdir = tmp_path / "full"
  proc = cli([*ARGS, f"--workdir={workdir}"], tmp_path, cache, fault="outputs=enospc")
  assert proc.returncode == 1
  assert one_line_error(proc) == (f"error: {workdir / 'results.json'}: "
                                  f"{os.strerror(errno.ENOSPC)} (rerun the same command "
                                  f"once it is fixed)")


def test_a_real_full_disk_is_one_line(tmp_path, cache):
  mount = tmp_path / "small"
  mount.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount)],
                    capture_output=True).returncode != 0:
    pytest.skip("cannot mount a small tmpfs here (needs root)")
  try:
    out = one_line_error(cli([*ARGS, f"--workdir={mount / 'run'}"], tmp_path, cache))
    assert re.fullmatch(rf"error: {mount}/run/\S+: {os.strerror(errno.ENOSPC)} \(rerun the "
                        rf"same command once it is fixed\)", out), out
  finally:
    subprocess.run(["umount", str(mount)], check=True)


# ----------------------------------------------------------------------------- 6. cells


def _table_counts(markdown: str):
  """(header, value) of every cell of a count column in the markdown tables."""
  header = None
  for line in markdown.splitlines():
    if not line.startswith("|"):
      header = None
      continue
    cols = [c.strip() for c in line.strip("|").split("|")]
    if header is None:
      header = cols
    elif not set(line) <= set("|-"):
      for h, v in zip(header, cols):
        if (h == "n" or h.startswith("n (") or h == "n_pos") and v:
          yield h, v


def test_no_count_below_the_minimum_cell_size_leaves_the_run(reference):
  results = json.loads((reference / "results.json").read_text())
  assert results["min_cell_size"] == 20

  def walk(x, path=""):
    if isinstance(x, dict):
      for k, v in x.items():
        if k in cells.COUNT_KEYS + ("n_pos",) and isinstance(v, int):
          assert v == 0 or v >= 20, f"{path}.{k} = {v}"
        if k == "note":
          assert not re.search(r"\bn(_pos)?=([1-9]|1[0-9])\b", v), v
        walk(v, f"{path}.{k}")
    elif isinstance(x, list):
      for i, v in enumerate(x):
        walk(v, f"{path}[{i}]")

  walk(results)
  assert any(r["pattern"] == "other" and r["patterns"] >= 1
             for r in results["per_pattern"]["test"]["task0"])
  assert any(r["pattern"] == "other" for r in results["rectifier"]["table"])
  counts = list(_table_counts((reference / "report.md").read_text()))
  assert counts and any(v == "<20" for _, v in counts)
  for h, v in counts:
    assert v.startswith(("<", ">")) or int(v) == 0 or int(v) >= 20, (h, v)
  # The per-pattern detail stays next to the predictions, reloadable.
  from crl_mmnar_jax.rectifier import Rectifier
  full = json.loads((reference / "rectifier.json").read_text())
  assert any(0 < r["n"] < 20 for r in full["table"])
  Rectifier.from_dict(full)


def test_cells_helpers():
  assert [cells.shown(n, 20) for n in (0, 1, 19, 20, 500)] == [0, "<20", "<20", 20, 500]
  assert cells.shown_positives(3, 100, 20) == "<20"
  assert cells.shown_positives(95, 100, 20) == ">80"          # 5 negatives
  assert cells.shown_positives(50, 100, 20) == 50
  assert cells.shown_positives(50, 10, 20) == "<20"
  assert cells.masked_note("only one class (n_pos=3 of n=40)", 20) == \
      "only one class (n_pos<20 of n=40)"
  pooled = cells.pool_small_patterns(np.array([1, 1, 2, 3, 3, 3]),
                                     np.array([1, 1, 1, 1, 1, 0], bool), 2)
  np.testing.assert_array_equal(pooled, [1, 1, -1, 3, 3, 3])


# ----------------------------------------------------------------------------- 7. inputs


def test_tables_warn_about_empty_or_null_modalities_ignored_files_and_unknown_labels(
    tmp_path):
  ids = [f"p{i}" for i in range(6)]
  pl.DataFrame({"patient_id": ids, "y": [0, 1, 0, 1, 0, 1],
                "z": pl.Series([None] * 6, dtype=pl.Int8)}).write_parquet(
                    tmp_path / "labels.parquet")
  pl.DataFrame({"patient_id": ids, "a": [1.0] * 6,
                "b": pl.Series([None] * 6, dtype=pl.Float64)}).write_parquet(
                    tmp_path / "vitals.parquet")
  pl.DataFrame({"patient_id": pl.Series([], dtype=pl.String),
                "c": pl.Series([], dtype=pl.Float64)}).write_parquet(tmp_path / "labs.parquet")
  pl.DataFrame({"patient_id": ids[:2], "d": [None, float("nan")]}).write_parquet(
      tmp_path / "notes.parquet")
  (tmp_path / "extra.csv").write_text("patient_id,x\np0,1\n")
  _, info = load_tables_with_info(tmp_path)
  w = info["warnings"]
  assert len(w) == 5 and all("\n" not in m for m in w)
  assert "1 file(s) that are not parquet are ignored: ['extra.csv']" in w[0]
  assert "task column 'z' has no known label" in w[1]
  assert w[2].endswith("labs.parquet: no rows: modality 'labs' is never observed")
  assert "notes.parquet: every feature value is null/NaN in its 2 row(s)" in w[3]
  assert w[4].endswith("vitals.parquet: 1 feature column(s) are null/NaN in every row: ['b']")


def test_no_known_validation_labels_is_said_so():
  import dataclasses

  from crl_mmnar_jax.data.splits import check_validation_classes
  cohort = make_synthetic(40, seed=0).cohort
  labels = cohort.labels.copy()
  labels[:, 0] = np.nan
  with pytest.raises(DataError, match="task 'task0' has no known labels in the validation"):
    check_validation_classes(dataclasses.replace(cohort, labels=labels), np.arange(10))


def test_a_test_split_with_one_class_is_refused_before_anything_is_written(tmp_path):
  """The MIMIC-IV demo's own MEDS splits hold no positive of any `mimic` task in
  held_out: the run stops in one line (its test AUROC would be undefined) instead of
  reporting NaN after training."""
  import dataclasses

  from crl_mmnar_jax.data.splits import check_test_classes
  cohort = make_synthetic(40, seed=0).cohort
  labels = cohort.labels.copy()
  labels[:10, 1] = 0.0
  with pytest.raises(DataError, match=r"task 'task1' has only one class in the test split "
                     r"\(n_pos=0 of 10\): its test AUROC would be undefined"):
    check_test_classes(dataclasses.replace(cohort, labels=labels), np.arange(10))
  labels[0, 1] = 1.0
  check_test_classes(dataclasses.replace(cohort, labels=labels), np.arange(10))
