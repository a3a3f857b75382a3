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
  assert out["loss_diff"] < 1e-5
  assert out["param_diff"] < 1e-5 * max(1.0, out["param_scale"])
