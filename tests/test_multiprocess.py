"""The multi-host path without a pod: two processes on localhost (CPU backend, gloo
collectives, two simulated devices each) train the tiny synthetic config to the same
result as one process with four devices: with every process loading every patient
(`train.data_shards=1`), and with each loading only its own shard from the generic
tables (`train.data_shards=2`)."""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import polars as pl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--config=synthetic:tiny", "--config.train.epochs=2", "--config.eval.plots=False",
        "--config.eval.n_boot=20"]


def _env(n_devices):
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "    # keeps conftest's flag
                        f"--xla_force_host_platform_device_count={n_devices}")


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run_single(tmp_path, name, args):
  single = subprocess.run([sys.executable, "-m", "experiments.run", *args,
                           f"--workdir={tmp_path / name}"], cwd=tmp_path, env=_env(4),
                          capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  return single.stdout


def _run_two(tmp_path, name, args):
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.run", *args, f"--workdir={tmp_path / name}",
       "--distributed", f"--coordinator_address=localhost:{port}", "--num_processes=2",
       f"--process_id={i}"], cwd=tmp_path, env=_env(2), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [out for out, _ in outs]


def _assert_same_run(a_dir, b_dir, atol_auroc, atol_prob):
  a = json.loads((a_dir / "results.json").read_text())
  b = json.loads((b_dir / "results.json").read_text())
  assert a["training"]["devices"] == 4 and b["training"]["devices"] == 4
  assert a["training"]["best_epoch"] == b["training"]["best_epoch"]
  for view in ("val", "test"):
    for task, m in a["metrics"][view].items():
      np.testing.assert_allclose(b["metrics"][view][task]["auroc"], m["auroc"], atol=atol_auroc)
      np.testing.assert_allclose(b["metrics"][view][task]["brier"], m["brier"],
                                 atol=atol_prob)
  pa = pl.read_parquet(a_dir / "predictions.parquet")
  pb = pl.read_parquet(b_dir / "predictions.parquet")
  assert pa["patient_id"].to_list() == pb["patient_id"].to_list()
  for c in pa.columns:
    if c.endswith("_prob"):
      np.testing.assert_allclose(pb[c].to_numpy(), pa[c].to_numpy(), atol=atol_prob)
  # Only process 0 wrote the metrics: the same lines as one process, not two copies.
  steps = lambda d: [json.loads(l)["step"] for l in
                     (d / "metrics.jsonl").read_text().splitlines() if l]
  assert steps(b_dir) == steps(a_dir)
  return a, b


def test_two_processes_match_one_process(tmp_path):
  _run_single(tmp_path, "single", ARGS)
  _run_two(tmp_path, "multi", ARGS)
  _assert_same_run(tmp_path / "single", tmp_path / "multi", 2e-3, 1e-4)


def test_two_processes_each_loading_their_shard_match_one_process(tmp_path):
  """Each process reads only its shard's rows of the tables; one process emulating the
  two shards trains the same model."""
  from crl_mmnar_jax.data import shards
  from crl_mmnar_jax.data.sources import tables
  from crl_mmnar_jax.data.sources.synthetic import make_synthetic
  cohort = make_synthetic(600, n_modalities=4, n_tasks=3, seed=0).cohort
  tables.write_tables(cohort, tmp_path / "cohort")
  args = ["--config=tables", f"--config.data.dir={tmp_path / 'cohort'}",
          "--config.train.data_shards=2", "--config.model.dim=32", "--config.model.n_heads=4",
          "--config.model.proj_dim=16", "--config.train.batch_size=64",
          "--config.train.eval_batch_size=128", "--config.train.epochs=2",
          "--config.train.warmup_steps=5", "--config.train.lr=1e-3",
          "--config.train.log_every=5", "--config.train.progress=False",
          "--config.eval.plots=False", "--config.eval.n_boot=20",
          "--config.rectifier.min_count=5", "--config.rectifier.shrinkage=5.0"]
  _run_single(tmp_path, "single", args)
  outs = _run_two(tmp_path, "multi", args)
  a, b = _assert_same_run(tmp_path / "single", tmp_path / "multi", 1e-6, 1e-6)
  assert "reference" not in b      # the reference logreg needs every row on one host

  want = np.bincount(shards.shard_of(cohort.patient_id, 2), minlength=2)
  for p, out in enumerate(outs):
    held = re.search(rf"process {p} holds shards \[{p}\] of 2: (\d+) of (\d+) patients", out)
    assert held, out[-2000:]
    assert (int(held.group(1)), int(held.group(2))) == (want[p], cohort.n)
  info = json.loads((tmp_path / "multi" / "data_info.json").read_text())
  assert info["n_patients"] == want[0] and info["counts_cover_shards"] == [0]
