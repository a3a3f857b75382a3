"""The sharded train step gives the same numbers on 1 and on 8 (simulated) devices."""

import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def test_one_vs_eight_devices_same_loss_and_parameters():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, os.path.join(HERE, "multidevice_check.py")],
                        capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["n_devices"] == 8
  assert len(out["batch_spec"]) == 1 and "'data'" in out["batch_spec"][0]
  # The training actually moved the parameters and the loss (the test can fail).
  assert out["losses_1"][0] != out["losses_1"][-1]
  np.testing.assert_allclose(out["losses_1"], out["losses_8"], rtol=1e-5, atol=1e-6)
  assert out["loss_diff"] < 1e-5          # every loss term and the gradient norm
  # Parameters: AdamW divides each coordinate by sqrt(v), so a gradient that is
  # numerically zero (~1e-9) turns summation-order noise into an update of up to lr;
  # such coordinates may differ by at most lr per step, all others agree to 1e-6.
  diffs = np.array(out["param_diffs"])
  assert np.all(diffs <= out["lr"] * out["n_steps"])
  assert np.mean(diffs < 1e-6) > 0.9
