"""The multi-host path without a pod: two processes on localhost (CPU backend, gloo
collectives, two simulated devices each) train the tiny synthetic config to the same
result as one process with four devices."""

import json
import os
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
              XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}")


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  single = subprocess.run([sys.executable, "-m", "experiments.run", *ARGS,
                           f"--workdir={tmp_path / 'single'}"], cwd=tmp_path, env=_env(4),
                          capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]

  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.run", *ARGS, f"--workdir={tmp_path / 'multi'}",
       "--distributed", f"--coordinator_address=localhost:{port}", "--num_processes=2",
       f"--process_id={i}"], cwd=tmp_path, env=_env(2), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]

  a = json.loads((tmp_path / "single" / "results.json").read_text())
  b = json.loads((tmp_path / "multi" / "results.json").read_text())
  assert a["training"]["devices"] == 4 and b["training"]["devices"] == 4
  assert a["training"]["best_epoch"] == b["training"]["best_epoch"]
  for view in ("val", "test"):
    for task, m in a["metrics"][view].items():
      np.testing.assert_allclose(b["metrics"][view][task]["auroc"], m["auroc"], atol=2e-3)
      np.testing.assert_allclose(b["metrics"][view][task]["brier"], m["brier"], atol=1e-4)
  pa = pl.read_parquet(tmp_path / "single" / "predictions.parquet")
  pb = pl.read_parquet(tmp_path / "multi" / "predictions.parquet")
  assert pa["patient_id"].to_list() == pb["patient_id"].to_list()
  for c in pa.columns:
    if c.endswith("_prob"):
      np.testing.assert_allclose(pb[c].to_numpy(), pa[c].to_numpy(), atol=1e-4)
  # Only process 0 wrote the metrics: the same lines as one process, not two copies.
  steps = lambda d: [json.loads(l)["step"] for l in
                     (tmp_path / d / "metrics.jsonl").read_text().splitlines() if l]
  assert steps("multi") == steps("single")
