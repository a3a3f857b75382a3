r"""Entry point: python -m experiments.run --config=NAME[:ARGS] --workdir=DIR [overrides].

  python -m experiments.run --config=synthetic --workdir=/tmp/crl
  python -m experiments.run --config=synthetic:tiny --workdir=/tmp/crl_tiny \
      --config.train.epochs=5 --config.seed=1

NAME is a file in experiments/configs/ (its docstring says what it runs and what to
expect); `--config.a.b=value` overrides any field. Rerunning with the same workdir
resumes; a workdir holding another config is refused.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.configs import CONFIG_DIR, resolve_config_argv

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(CONFIG_DIR, "synthetic.py"),
    "Config NAME[:ARGS] from experiments/configs/.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (rerun = resume).")
flags.mark_flag_as_required("workdir")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", os.environ.get("CRL_DISTRIBUTED", "") == "1",
    "Call jax.distributed.initialize() (multi-host: TPU pods, several GPU nodes, or N "
    "local processes). On a TPU pod the arguments are detected; elsewhere pass the "
    "three flags below (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  logging.set_verbosity(logging.WARNING)
  if _DISTRIBUTED.value:
    from crl_mmnar_jax import distributed
    distributed.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                    _PROCESS_ID.value)
  import json

  from crl_mmnar_jax.experiment import config_to_dict, train_and_evaluate
  from crl_mmnar_jax.train.loop import NonFiniteLossError
  print(json.dumps(config_to_dict(config), indent=2, sort_keys=True))
  try:
    results = train_and_evaluate(config, _WORKDIR.value)
  except (ValueError, NonFiniteLossError) as e:   # DataError is a ValueError
    sys.exit(f"error: {e}")
  test = results["metrics"]["test"].get("mean", {})
  rect = results["metrics"]["test_rectified"].get("mean", {})
  print(f"test mean AUROC {test.get('auroc', float('nan')):.4f} "
        f"(rectified {rect.get('auroc', float('nan')):.4f}); outputs in {_WORKDIR.value}")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with config-override mistakes reported as one clear line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
    if "Traceback" in message:   # an exception inside get_config: keep its last line
      message = [l for l in message.splitlines() if l.strip()][-1]
    sys.exit(f"error: {message}\nPass --helpfull to list the flags.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    overrides = [a for a in argv if a.startswith("--config.")]
    sys.exit(f"error: invalid config override {e} in {' '.join(overrides)}; every "
             f"--config.a.b=value must name an existing field of the config with a value "
             f"of its type")


def run() -> None:
  sys.argv = resolve_config_argv(sys.argv)
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
