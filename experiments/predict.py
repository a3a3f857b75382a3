r"""Entry point: predictions for new patients from a finished run (docs/predict.md).

  python -m experiments.predict --workdir=W --out=FILE.parquet (--data=DIR | --config=NAME)
  python -m experiments.predict --workdir=/tmp/crl --data=/data/new_patients \
      --out=/tmp/new_predictions.parquet
  python -m experiments.predict --workdir=/tmp/crl_tiny --config=synthetic:tiny \
      --config.data.seed=7 --config.data.world_seed=0 --out=/tmp/fresh.parquet

`--data=DIR` reads a directory in the tables layout (docs/design.md, Contracts: the
training modalities as `<modality>.parquet`; `labels.parquet`, with `patient_id` and the
training task columns, is optional: without it the patients are those of the modality
files); `--config=NAME` loads the patients of that config's data source
(`--config.data.*` overrides, e.g. another synthetic seed). The run's saved
preprocessing, model (or ensemble) and rectifier are applied, never refitted; the output
(written atomically) holds `patient_id`, `pattern_id` and per task `<task>_prob` and
`<task>_prob_rectified`. Beside it, `FILE.meta.json` holds the shift check of the new
patients against the training cohort (one warning line when they differ) and, where
labels are known, per-task AUROCs. Input whose modalities, feature columns or tasks
differ from training, or a workdir without a finished run, is refused with one line and
exit code 1. See docs/predict.md.
"""

import json
import os
import sys
from typing import Sequence

from absl import flags, logging
from ml_collections import config_flags

from experiments.configs import cli

META_SUFFIX = ".meta.json"


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  """The flags of `experiments.predict` on `fv`; `argv` is the command line, where the
  config flag reads its `--config.a.b=value` overrides."""
  flags.DEFINE_string("workdir", None, "The finished run's output directory.",
                      flag_values=fv, required=True)
  flags.DEFINE_string("data", None, "A cohort directory in the tables layout.",
                      flag_values=fv)
  config_flags.DEFINE_config_file(
      "config", None, "Or: config NAME[:PRESET] from experiments/configs/ whose data "
      "source to load (--config.data.* overrides).", flag_values=fv, lock_config=True,
      sys_argv=list(argv))
  flags.DEFINE_string("out", None, "The output parquet file.", flag_values=fv,
                      required=True)
  flags.DEFINE_integer("batch_size", 0, "Patients per prediction batch (0: the run's "
                       "train.eval_batch_size).", flag_values=fv)
  cli.define_compile_cache(fv)


def meta_path(out: str) -> str:
  """Where the report beside the predictions goes: FILE.parquet -> FILE.meta.json."""
  return (out[:-len(".parquet")] if out.endswith(".parquet") else out) + META_SUFFIX


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> int:
  cli.no_positional(argv)
  logging.set_verbosity(logging.WARNING)
  has_config = fv["config"].present and fv.config is not None
  if bool(fv.data) == has_config:
    sys.exit("error: give exactly one of --data=DIR (tables layout) and --config=NAME "
             "(a data source)")
  cli.use_compile_cache(fv)
  from crl_mmnar_jax import predictor as predictor_lib
  from crl_mmnar_jax.data.io import write_atomic, write_parquet_atomic
  meta = meta_path(fv.out)
  try:
    predictor = predictor_lib.load(fv.workdir)
    frame, report = predictor.predict_and_check(fv.data or fv.config,
                                                batch_size=fv.batch_size or None)
    folder = os.path.dirname(os.path.abspath(fv.out))
    if not os.path.isdir(folder):
      sys.exit(f"error: {fv.out}: folder {folder} not found")
    write_parquet_atomic(frame, fv.out)
    source = fv.data or cli.command_line("experiments.predict", argv, fv)
    write_atomic(meta, json.dumps({
        "workdir": os.path.abspath(fv.workdir), "source": source, "predictions": fv.out,
        "method": predictor.method, "tasks": list(predictor.schema.tasks), **report},
        indent=2))
  except ValueError as e:                         # DataError, WorkdirError are ValueErrors
    sys.exit(f"error: {e}")
  except OSError as e:
    where = f"{e.filename}: " if e.filename else ""
    sys.exit(f"error: {where}{e.strerror or e}")
  shift = report["shift"]
  if shift["warning"]:
    logging.warning("predict: %s; see %s", shift["warning"], meta)
  elif not shift["checked"]:
    logging.warning("predict: no shift check: %s", shift["reason"])
  print(f"{frame.height} patients, tasks {list(predictor.schema.tasks)} "
        f"({predictor.method}, {len(predictor.units)} model(s)): {fv.out} (report: {meta})")
  return 0


SCRIPT = cli.Script(main, define_flags, __doc__, config_file=True)


def run() -> None:
  SCRIPT.run()


if __name__ == "__main__":
  run()
