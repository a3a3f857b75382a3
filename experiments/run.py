r"""Entry point: python -m experiments.run --config=NAME[:PRESET] --workdir=DIR [overrides].

  python -m experiments.run --config=synthetic --workdir=/tmp/crl
  python -m experiments.run --config=synthetic:tiny --workdir=/tmp/crl_tiny \
      --config.train.epochs=5 --config.seed=1
  python -m experiments.run --config=synthetic:tiny --workdir=/tmp/crl_seeds --seeds=0,1,2

NAME is a file in experiments/configs/ (its docstring says what it runs and what to
expect; `--config NAME` works too); every config has the smoke-run preset `tiny`.
`--config.a.b=value` overrides any field. A run prints one summary line, one line per
epoch and the test result (a progress bar on top when stderr is a terminal); the
resolved config goes to WORKDIR/config.json, and docs/outputs.md lists everything the
workdir holds. Rerunning with the same workdir resumes; a
workdir holding another training config, or checkpoints trained on other data, is
refused. Known failures end with one line on stderr and a non-zero exit code: bad input
or settings, a busy or corrupt workdir (1), an I/O error naming the path (1), and
SIGINT/SIGTERM (130/143; the run stops between training steps with a checkpoint, and
the same command resumes it). See docs/reliability.md.

`--seeds=0,1,2` runs the config once per seed, in WORKDIR/seed0, WORKDIR/seed1, ...
(each what `--config.seed=K --workdir=WORKDIR/seedK` would write), a neural method's
models of every seed trained together in one vmapped step
(`experiment.train_and_evaluate_seeds`; `experiments.sweep --stack_seeds`).
"""

import os
import signal
import sys
from typing import Sequence

from absl import flags, logging
from ml_collections import config_flags

from experiments.configs import CONFIG_DIR, cli


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  """The flags of `experiments.run` on `fv`; `argv` is the command line, where the
  config flag reads its `--config.a.b=value` overrides."""
  config_flags.DEFINE_config_file(
      "config", os.path.join(CONFIG_DIR, "synthetic.py"),
      "Config NAME[:PRESET] from experiments/configs/.", flag_values=fv, lock_config=True,
      sys_argv=list(argv))
  flags.DEFINE_string("workdir", None, "Output directory (rerun = resume).", flag_values=fv,
                      required=True)
  flags.DEFINE_bool(
      "distributed", os.environ.get("CRL_DISTRIBUTED", "") == "1",
      "Call jax.distributed.initialize() (multi-host: TPU pods, several GPU nodes, or N "
      "local processes). On a TPU pod the arguments are detected; elsewhere pass the "
      "three flags below (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).",
      flag_values=fv)
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0.", flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "Number of processes.", flag_values=fv)
  flags.DEFINE_integer("process_id", None, "This process's index.", flag_values=fv)
  flags.DEFINE_list(
      "seeds", [], "Run the config once per seed K (overriding config.seed), each in "
      "WORKDIR/seedK as `--config.seed=K --workdir=WORKDIR/seedK` would, with the seeds' "
      "neural models trained together in one vmapped step (docs/speed.md).",
      flag_values=fv)
  cli.define_compile_cache(fv)


def summary(fv: flags.FlagValues) -> str:
  """The one line a run starts with: config, method, data, epochs and workdir (the whole
  resolved config goes to WORKDIR/config.json)."""
  config = fv.config
  name = config_flags.get_config_filename(fv["config"])
  stem, sep, preset = name.partition(":")
  if os.path.dirname(os.path.abspath(stem)) == CONFIG_DIR:
    stem = os.path.basename(stem).removesuffix(".py")
  t = config.train
  epochs = f"{int(t.epochs)} epochs"
  if int(t.pretrain_epochs):
    epochs = f"{int(t.pretrain_epochs)} pre-training + {epochs}"
  where = (f"workdir {fv.workdir} (resolved config: {os.path.join(fv.workdir, 'config.json')})"
           if not fv.seeds else f"seeds {','.join(fv.seeds)} in {os.path.join(fv.workdir, 'seedK')}")
  return (f"run: config {stem}{sep}{preset}, method {config.method}, data "
          f"{config.data.name}, {epochs}, {where}")


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> None:
  cli.no_positional(argv)
  config = fv.config
  logging.set_verbosity(logging.WARNING)
  # The library is imported here, not at the top: `--help` and a bad flag answer without
  # loading JAX, and `jax.distributed.initialize` runs before anything touches a backend.
  if fv.distributed:
    from crl_mmnar_jax import distributed
    distributed.initialize_distributed(fv.coordinator_address, fv.num_processes,
                                       fv.process_id)
  cache = cli.use_compile_cache(fv)
  from crl_mmnar_jax import workdir as workdir_lib
  from crl_mmnar_jax.config_check import check_config
  from crl_mmnar_jax.experiment import train_and_evaluate, train_and_evaluate_seeds
  from crl_mmnar_jax.train.loop import NonFiniteLossError
  try:
    check_config(config)     # a bad setting: its one line, not first a line naming a
  except ValueError as e:    # config.json that will never be written
    sys.exit(f"error: {e}")
  try:
    seeds = [int(k) for k in fv.seeds]
  except ValueError:
    seeds = []
  if len(set(seeds)) != len(fv.seeds):
    sys.exit(f"error: --seeds={','.join(fv.seeds)}: give distinct integers, e.g. "
             f"--seeds=0,1,2")
  print(summary(fv), flush=True)
  signal.signal(signal.SIGTERM, workdir_lib.raise_interrupted)  # one line, not a silent death
  try:
    if seeds:
      out = train_and_evaluate_seeds(config, seeds, fv.workdir)
    else:
      out = [train_and_evaluate(config, fv.workdir)]
  except (ValueError, NonFiniteLossError) as e:   # DataError, WorkdirError are ValueErrors
    sys.exit(f"error: {e}")
  except OSError as e:                            # a full or read-only disk, a bad path
    where = f"{e.filename}: " if e.filename else ""
    print(f"error: {where}{e.strerror or e} (rerun the same command once it is fixed)",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)    # not sys.exit: orbax's abandoned writer threads would print at shutdown
  except KeyboardInterrupt as e:                  # SIGINT; SIGTERM raises Interrupted
    workdir_lib.exit_interrupted(e)
  for results in out:
    test = results["metrics"]["test"].get("mean", {})
    rect = results["metrics"]["test_rectified"].get("mean", {})
    where = os.path.join(fv.workdir, f"seed{results['seed']}") if seeds else fv.workdir
    print(("" if not seeds else f"seed {results['seed']}: ")
          + f"test mean AUROC {test.get('auroc', float('nan')):.4f} "
          f"(rectified {rect.get('auroc', float('nan')):.4f}); outputs in {where}")
  print(cli.compile_cache_line(cache))


SCRIPT = cli.Script(main, define_flags, __doc__, config_file=True,
                    extra_help=cli.configs_and_methods)


def run() -> None:
  SCRIPT.run()


if __name__ == "__main__":
  run()
