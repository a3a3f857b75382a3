"""Fault injection: real runs of the command line killed at chosen moments, then rerun.

A run of `synthetic:tiny` (200 patients, 2 epochs of 3 steps, a checkpoint every step)
is killed with SIGKILL after the data is loaded, in the middle of an epoch, during a
checkpoint save and while the outputs are written, one kill after the other on the
same workdir; the final rerun must give the predictions and metrics of an
uninterrupted run bit for bit. A SIGTERM from outside stops a run with one line and
exit code 143, and the same command resumes it. The kills come from the hook
`workdir.fault_point` (``CRL_FAULT``); runs share a persistent XLA compilation cache, so
after the first each takes a few seconds.
"""

import json
import signal
import time

import polars as pl
import pytest
from test_reliability import cli

ARGS = ["--config=synthetic:tiny", "--config.data.n=200", "--config.train.epochs=2",
        "--config.train.checkpoint_every=1", "--config.eval.plots=false",
        "--config.eval.n_boot=20"]


def reference_run(tmp_path_factory) -> tuple:
  """One uninterrupted run of ARGS, shared by the modules of a session."""
  base = tmp_path_factory.getbasetemp()
  cache, workdir = base / "jax_cache", base / "fault_reference"
  if not (workdir / "results.json").exists():
    proc = cli([*ARGS, f"--workdir={workdir}"], base, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, cache


def same_outputs(a, b) -> None:
  assert pl.read_parquet(a / "predictions.parquet").equals(
      pl.read_parquet(b / "predictions.parquet"))
  ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
  for key in ("metrics", "per_pattern", "rectifier", "cohort"):
    assert ra[key] == rb[key], key
  assert ra["training"]["history"] == rb["training"]["history"]


def leftovers(workdir) -> list[str]:
  return [p.name for p in workdir.rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  return reference_run(tmp_path_factory)


def test_sigkill_at_each_stage_then_rerun_gives_identical_outputs(reference, tmp_path):
  ref, cache = reference
  workdir = tmp_path / "run"
  args = [*ARGS, f"--workdir={workdir}"]
  kills = [
      ("data_loaded", lambda: not workdir.exists()),                 # nothing written yet
      ("step#4", lambda: (workdir / "checkpoints" / "latest" / "3").is_dir()),  # mid-epoch
      ("checkpoint_save#2=kill+0.03", lambda: True),                 # inside an orbax save
      ("outputs", lambda: (workdir / "predictions.parquet").exists()
       and not (workdir / "results.json").exists()),                 # between two outputs
  ]
  for fault, check in kills:
    proc = cli(args, tmp_path, cache, fault=fault)
    assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr[-2000:])
    assert check(), fault
  final = cli(args, tmp_path, cache)
  assert final.returncode == 0, final.stderr[-3000:]
  assert "resuming from step 6" in final.stdout
  same_outputs(ref, workdir)
  assert leftovers(workdir) == []
  assert not (workdir / ".lock").read_text()          # released


def test_sigkill_at_a_random_moment_then_rerun_gives_identical_outputs(reference, tmp_path):
  ref, cache = reference
  workdir = tmp_path / "run"
  args = [*ARGS, f"--workdir={workdir}"]
  proc = cli(args, tmp_path, cache, background=True)
  deadline = time.time() + 120
  latest = workdir / "checkpoints" / "latest"
  while time.time() < deadline and proc.poll() is None:
    if latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir()):
      break
    time.sleep(0.01)
  time.sleep(0.15)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  rerun = cli(args, tmp_path, cache)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  same_outputs(ref, workdir)


def test_sigterm_stops_with_one_line_and_the_same_command_resumes(reference, tmp_path):
  ref, cache = reference
  workdir = tmp_path / "run"
  args = [*ARGS, f"--workdir={workdir}"]
  proc = cli(args, tmp_path, cache, fault="step#2=sigterm")
  assert proc.returncode == 143, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      "interrupted (SIGTERM) at step 2; rerun the same command to resume")
  assert "Traceback" not in proc.stderr
  assert sorted(p.name for p in (workdir / "checkpoints" / "latest").iterdir()) == ["1", "2"]
  rerun = cli(args, tmp_path, cache)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "resuming from step 2" in rerun.stdout
  same_outputs(ref, workdir)
