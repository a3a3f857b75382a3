"""Run as a separate process with 8 simulated CPU devices (see test_sharding.py).

Trains a few steps of the tiny model on a 1-device mesh and on an 8-device mesh from
the same initial state and batches, and prints the max differences as JSON.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from crl_mmnar_jax import methods
from crl_mmnar_jax.data.shards import Layout  # noqa: E402
from crl_mmnar_jax.data.sources.synthetic import make_synthetic  # noqa: E402
from crl_mmnar_jax.train import mesh as mesh_lib  # noqa: E402
from crl_mmnar_jax.train import optim  # noqa: E402
from crl_mmnar_jax.train import step as step_lib
from experiments.configs import synthetic  # noqa: E402


def run(devices, config, cohort, n_steps=4):
  mesh = mesh_lib.make_mesh(devices)
  tx = optim.make_optimizer(config, 100)
  mcfg = methods.model_config(config, cohort)
  graphdef, state = step_lib.create_state(mcfg, methods.loss_weights(config), tx, 0, mesh)
  step_fn = step_lib.make_train_step(graphdef, methods.loss_weights(config), mcfg.miss_head)
  order = Layout.single(cohort.n).epoch_order(np.arange(cohort.n), 0, 0)
  bs = config.train.batch_size
  losses = []
  for s in range(n_steps):
    rows = order[s * bs:(s + 1) * bs]
    if s == n_steps - 1:
      rows = rows[: bs - 5]    # a partial, padded batch
    batch = mesh_lib.put_batch(mesh_lib.local_batch(cohort, rows, bs), mesh)
    state, parts = step_fn(state, batch, jax.random.key(0), np.int32(s),
                           jnp.float32(1.0), jnp.float32(1.0))
    losses.append({k: float(v) for k, v in parts.items()})
  leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
  shardings = {str(batch.present_BxM.sharding.spec)}
  return losses, leaves, shardings


def main():
  assert len(jax.devices()) == 8, jax.devices()
  config = synthetic.get_config("tiny")
  cohort = make_synthetic(300, seed=1).cohort
  l1, p1, _ = run(jax.devices()[:1], config, cohort)
  l8, p8, s8 = run(jax.devices(), config, cohort)
  loss_diff = max(abs(a[k] - b[k]) for a, b in zip(l1, l8) for k in a)
  diffs = [float(np.max(np.abs(a - b))) for a, b in zip(p1, p8) if a.size]
  print(json.dumps({"loss_diff": loss_diff, "param_diffs": diffs, "lr": config.train.lr,
                    "n_steps": len(l1), "losses_1": [x["total"] for x in l1],
                    "losses_8": [x["total"] for x in l8], "n_devices": len(jax.devices()),
                    "batch_spec": sorted(s8)}))


if __name__ == "__main__":
  main()
