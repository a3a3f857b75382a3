r"""Tune: a hyperparameter search on validation data only (Optuna TPE, pruning, resumable).

  python -m experiments.tune --config=synthetic --trials=40 --workdir=/tmp/tune_syn
  python -m experiments.tune --config=synthetic --config.method=gbt --trials=40 \
      --workdir=/tmp/tune_syn_gbt                  # the same budget for the trees
  python -m experiments.run --config=/tmp/tune_syn/best_config.py --workdir=/tmp/syn_best

Every trial is `train_and_evaluate` (what `experiments.run` runs, on the cohort loaded
and featurised once for the whole search: `crl_mmnar_jax.data.reuse_loaded`; programs of
shapes compiled before come from the compilation cache) in WORKDIR/trials/NNN,
with the config's search space (`get_search_space(method)` in experiments/configs/NAME.py;
a field given on the command line is held fixed) sampled by a TPE sampler seeded from
`--config.seed`. The objective is the validation mean AUROC of the trial's results
(`metrics.val.mean.auroc`); test labels stay sealed inside every trial and no test
metric is read. Neural trials report their validation AUROC after every epoch and a
median pruner stops the unpromising ones (`--pruner=none` turns it off; not with
`train.cv_folds`). Trials skip the bootstrap intervals and plots (`eval.n_boot=0`,
`eval.plots=False`), which do not change the objective. `--batch=N` asks N trials at a
time and trains them together (`experiment.train_and_evaluate_many`): trials of one
model shape (width, depth, numerical embedding) share one vmapped step whatever their
learning rates, weight decays, dropout rates and loss weights; batched trials are not
pruned. It pays on accelerators, where one small model leaves the device mostly idle;
on a CPU keep N = 1.

The study lives in WORKDIR/journal.log (Optuna's journal file; no database). Rerunning
the same command continues to `--trials` finished trials in all; a trial cut short by a
crash or a signal is run again with the same parameters in the same sub-workdir (its
training resumes from its checkpoint). A trial whose loss became NaN counts as failed.
Outputs, rewritten atomically after every trial: `trials.csv` (number, state, validation
mean AUROC, duration, parameters), `best.json` and `best_config.py`, a config for
`experiments.run` (the base config, the command-line overrides and the best parameters).
Bad arguments stop with one line before anything runs. See docs/tuning.md.
"""

from __future__ import annotations

import ast
import copy
import csv
import importlib
import io
import json
import math
import os
import signal
import sys
import textwrap
import time
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from experiments.configs import CONFIG_DIR, available_configs, cli
from experiments.configs.base import get_field, set_fields

KINDS = ("float", "int", "categorical")
# Settings of every trial that leave the objective unchanged (evaluation extras).
TRIAL_SETTINGS = {"eval.n_boot": 0, "eval.plots": False, "train.progress": False}
STUDY = "tune"
FINISHED = ("COMPLETE", "PRUNED")


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  config_flags.DEFINE_config_file(
      "config", os.path.join(CONFIG_DIR, "synthetic.py"),
      "Config NAME[:PRESET] from experiments/configs/ (one with get_search_space).",
      flag_values=fv, lock_config=True, sys_argv=list(argv))
  flags.DEFINE_string("workdir", None, "Output directory of the search (rerun = resume).",
                      flag_values=fv, required=True)
  flags.DEFINE_integer("trials", 20, "Finished trials in all (rerunning continues to this).",
                       flag_values=fv)
  flags.DEFINE_list("search", [], "Search only these fields of the config's space "
                    "(comma-separated; default: all of them).", flag_values=fv)
  flags.DEFINE_enum("pruner", "median", ["median", "none"],
                    "median: stop a neural trial whose validation AUROC after an epoch is "
                    "below the median of earlier trials at that epoch.", flag_values=fv)
  flags.DEFINE_integer("prune_warmup", 2, "Epochs before a trial may be pruned.",
                       flag_values=fv)
  flags.DEFINE_integer("prune_startup", 5, "Trials that finish before pruning starts.",
                       flag_values=fv)
  flags.DEFINE_integer("batch", 1, "Trials at a time, trained together: the trials of "
                       "one model shape in one vmapped step (pays on accelerators; "
                       "batched trials are not pruned).", flag_values=fv)
  cli.define_compile_cache(fv)


# ----------------------------------------------------------------------------- config


def set_field(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
  set_fields(config, {field: value})


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def overrides_of(config: ml_collections.ConfigDict, base: ml_collections.ConfigDict
                 ) -> dict[str, Any]:
  """The fields of `config` that differ from `base` (the command line's overrides)."""
  new, old = flatten(config), flatten(base)
  return {k: v for k, v in new.items() if k not in old or old[k] != v}


def config_name(fv: flags.FlagValues) -> tuple[str, str]:
  """(NAME, PRESET) of the --config flag; a file outside experiments/configs/ is refused."""
  value = fv["config"].serialize().removeprefix("--config=")
  path, _, preset = value.partition(":")
  name = os.path.basename(path).removesuffix(".py")
  if os.path.dirname(os.path.abspath(path)) != CONFIG_DIR or name not in available_configs():
    raise ValueError(f"--config={value}: tune a config of experiments/configs/ "
                     f"({', '.join(available_configs())})")
  return name, preset


def check_space(space: dict, config: ml_collections.ConfigDict, where: str) -> None:
  """Each entry is (kind, args, log) on an existing field, and every corner of it (low,
  high, each choice) passes `check_config`; a ValueError naming the entry otherwise."""
  from crl_mmnar_jax.config_check import check_config
  for field, spec in space.items():
    if not (isinstance(spec, tuple) and len(spec) == 3 and spec[0] in KINDS):
      raise ValueError(f"{where}: {field}: {spec!r} is not (kind, args, log) with kind one "
                       f"of {', '.join(KINDS)}")
    kind, args, log = spec
    try:
      current = get_field(config, field)
    except KeyError:
      raise ValueError(f"{where}: {field} is not a field of the config") from None
    if kind == "categorical":
      values = list(args)
      bad = not values or log
    else:
      values = list(args)
      bad = len(values) != 2 or not values[0] < values[1] or (log and values[0] <= 0)
      bad = bad or (kind == "int" and not all(isinstance(v, int) for v in values))
    if bad:
      raise ValueError(f"{where}: {field}: bad range {args!r} for a {kind}"
                       f"{' on a log scale' if log else ''}")
    for value in values:
      trial_config = copy.deepcopy(config)
      try:
        set_field(trial_config, field, value)
        check_config(trial_config)
      except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {field}={value!r} (current {current!r}): {e}") from None


def search_space(name: str, config: ml_collections.ConfigDict, only: Sequence[str],
                 fixed: dict[str, Any]) -> dict[str, tuple]:
  """The space of config `name` for its method, restricted to `only` (if given), less
  the fields fixed on the command line; checked (`check_space`)."""
  module = importlib.import_module(f"experiments.configs.{name}")
  if not hasattr(module, "get_search_space"):
    tunable = [n for n in available_configs() if hasattr(
        importlib.import_module(f"experiments.configs.{n}"), "get_search_space")]
    raise ValueError(f"config {name!r} has no search space (get_search_space); configs "
                     f"with one: {', '.join(tunable)}")
  space = dict(module.get_search_space(str(config.method)))
  where = f"experiments/configs/{name}.py get_search_space({config.method!r})"
  if not space:
    raise ValueError(f"method {config.method!r} has nothing to search in {name}: it "
                     f"selects its own settings on validation (see docs/tuning.md)")
  unknown = [f for f in only if f not in space]
  if unknown:
    raise ValueError(f"--search: unknown search field(s) {', '.join(unknown)} for method "
                     f"{config.method!r}; the space of {name} is {', '.join(space)}")
  if only:
    space = {f: space[f] for f in only}
  space = {f: s for f, s in space.items() if f not in fixed}
  if not space:
    raise ValueError(f"nothing left to search: every field of the space is fixed on the "
                     f"command line ({', '.join(fixed)})")
  check_space(space, config, where)
  return space


def trial_config(config: ml_collections.ConfigDict, params: dict[str, Any]
                 ) -> ml_collections.ConfigDict:
  out = copy.deepcopy(config)
  for field, value in {**TRIAL_SETTINGS, **params}.items():
    try:
      get_field(out, field)
    except KeyError:
      continue
    set_field(out, field, value)
  return out


def suggest(trial: Any, space: dict[str, tuple]) -> dict[str, Any]:
  params = {}
  for field, (kind, args, log) in space.items():
    if kind == "float":
      params[field] = trial.suggest_float(field, float(args[0]), float(args[1]), log=bool(log))
    elif kind == "int":
      params[field] = trial.suggest_int(field, int(args[0]), int(args[1]), log=bool(log))
    else:
      params[field] = trial.suggest_categorical(field, list(args))
  return params


# ----------------------------------------------------------------------------- study


def import_optuna():
  try:
    import optuna
  except ImportError:
    raise ValueError("experiments.tune needs Optuna: pip install -e \".[tune]\"") from None
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  return optuna


def trial_seed(seed: int, n_done: int) -> int:
  """The sampler's seed for the trial after `n_done` finished ones: a function of the
  history only, so a resumed search samples what an uninterrupted one would."""
  return int(np.random.SeedSequence([int(seed), int(n_done)]).generate_state(1)[0])


def counted(trial: Any) -> bool:
  """Finished: complete, pruned, or failed in itself (a NaN loss), not cut short."""
  return trial.state.name in FINISHED or (trial.state.name == "FAIL"
                                          and "error" in trial.user_attrs)


def trial_dir(number: int) -> str:
  return os.path.join("trials", f"{number:03d}")


def requeue_interrupted(study: Any, log: Callable[[str], None]) -> None:
  """Trials left running by a crash (the search holds WORKDIR's lock, so none is live)
  or failed by a signal are marked failed and enqueued again with their parameters and
  sub-workdir."""
  optuna = sys.modules["optuna"]
  for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
    study.tell(t.number, state=optuna.trial.TrialState.FAIL)
  trials = study.get_trials(deepcopy=False)
  rerun = {t.user_attrs.get("rerun_of") for t in trials}
  for t in trials:
    if t.state.name == "FAIL" and not counted(t) and t.number not in rerun:
      log(f"trial {t.number} was cut short: running it again")
      study.enqueue_trial(dict(t.params), user_attrs={
          "rerun_of": t.number, "workdir": t.user_attrs.get("workdir", trial_dir(t.number))})


def check_identity(study: Any, identity: dict[str, Any], workdir: str) -> None:
  """The study in `workdir` must be of this config (training settings) and space."""
  stored = study.user_attrs
  if not stored:
    for key, value in identity.items():
      study.set_user_attr(key, value)
    return
  for key, value in identity.items():
    if stored.get(key) != value:
      raise ValueError(f"{workdir} holds a search of another {key} ({stored.get(key)!r}, "
                       f"now {value!r}); use another --workdir or delete it")


def _announce(trial: Any, params: dict[str, Any], log: Callable[[str], None]) -> str:
  attrs = trial.user_attrs
  rel = attrs.get("workdir") or trial_dir(trial.number)
  if "workdir" not in attrs:
    trial.set_user_attr("workdir", rel)
  log(f"trial {trial.number} ({rel}): "
      + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                  for k, v in params.items()))
  return rel


def _settle(optuna: Any, study: Any, trial: Any, train: Callable[[], dict],
            log: Callable[[str], None]) -> None:
  """Runs `train` (the trial's `train_and_evaluate`) and tells the study the trial's
  validation mean AUROC, or that it was pruned or failed; a trial cut short (any other
  exception) is told failed, to be run again on the next start, and the exception
  raised."""
  from crl_mmnar_jax.train.loop import NonFiniteLossError
  TrialState = optuna.trial.TrialState
  try:
    t0 = time.perf_counter()
    results = train()
    value = float(results["metrics"]["val"]["mean"]["auroc"])
    if "duration_s" not in trial.user_attrs:
      trial.set_user_attr("duration_s", round(time.perf_counter() - t0, 2))
  except optuna.TrialPruned as e:
    study.tell(trial, state=TrialState.PRUNED)
    log(f"trial {trial.number} pruned ({e})")
    return
  except NonFiniteLossError as e:
    trial.set_user_attr("error", str(e).splitlines()[0][:300])
    study.tell(trial, state=TrialState.FAIL)
    log(f"trial {trial.number} failed: {e}")
    return
  except BaseException:
    study.tell(trial, state=TrialState.FAIL)   # cut short: run again on the next start
    raise
  if math.isnan(value):
    trial.set_user_attr("error", "validation mean AUROC undefined")
    study.tell(trial, state=TrialState.FAIL)
    return
  study.tell(trial, value)
  log(f"trial {trial.number}: validation mean AUROC {value:.4f}")


def run_trial(optuna: Any, study: Any, config: ml_collections.ConfigDict,
              space: dict[str, tuple], workdir: str, log: Callable[[str], None]) -> None:
  """Asks for one trial, trains it through `train_and_evaluate` in its sub-workdir and
  tells the study its validation mean AUROC (or that it was pruned or failed)."""
  from crl_mmnar_jax.experiment import train_and_evaluate
  trial = study.ask()
  try:
    params = suggest(trial, space)
    if "rerun_of" in trial.user_attrs:      # its epochs before the crash count for pruning
      old = study.get_trials(deepcopy=False)[int(trial.user_attrs["rerun_of"])]
      for step, value in sorted(old.intermediate_values.items()):
        trial.report(value, step)
    rel = _announce(trial, params, log)
  except BaseException:
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    raise

  def on_epoch(epoch: int, value: float) -> None:
    trial.report(value, epoch)
    if trial.should_prune():
      raise optuna.TrialPruned(f"epoch {epoch}: validation mean AUROC {value:.4f}")

  _settle(optuna, study, trial, lambda: train_and_evaluate(
      trial_config(config, params), os.path.join(workdir, rel),
      log=lambda line: log(f"  [{trial.number}] {line}"), on_epoch=on_epoch), log)


def run_batch(optuna: Any, study: Any, config: ml_collections.ConfigDict,
              space: dict[str, tuple], workdir: str, size: int,
              log: Callable[[str], None]) -> None:
  """Asks for `size` trials and trains them together (`train_and_evaluate_many`: the
  trials of one model shape in one vmapped step, their stacked checkpoints in
  WORKDIR/trials/batch-N-M), then tells the study each one's validation mean AUROC.
  Batched trials are not pruned, and each records the batch's duration. When a trial's
  loss becomes NaN the whole batch stops; its trials are then trained one by one, so
  that only that trial fails. A batch cut short is run again, trial by trial, on the
  next start (`requeue_interrupted`)."""
  from crl_mmnar_jax.experiment import train_and_evaluate, train_and_evaluate_many
  from crl_mmnar_jax.train.loop import NonFiniteLossError
  trials, configs, dirs = [], [], []
  try:
    for _ in range(size):
      trial = study.ask()
      trials.append(trial)
      params = suggest(trial, space)
      dirs.append(os.path.join(workdir, _announce(trial, params, log)))
      configs.append(trial_config(config, params))
    shared = os.path.join(workdir, "trials", "batch-" + "-".join(
        f"{t.number:03d}" for t in trials))
    t0 = time.perf_counter()
    results = train_and_evaluate_many(configs, dirs, shared,
                                      log=lambda line: log(f"  [batch] {line}"))
    seconds = round(time.perf_counter() - t0, 2)
  except NonFiniteLossError as e:
    log(f"trials {[t.number for t in trials]}: {str(e).splitlines()[0]}; "
        f"training them one by one")
    for trial, c, d in zip(trials, configs, dirs):
      _settle(optuna, study, trial, lambda c=c, d=d, n=trial.number: train_and_evaluate(
          c, d, log=lambda line: log(f"  [{n}] {line}")), log)
    return
  except BaseException:
    for trial in trials:
      study.tell(trial, state=optuna.trial.TrialState.FAIL)   # cut short: run again
    raise
  for trial, r in zip(trials, results):
    trial.set_user_attr("duration_s", seconds)
    _settle(optuna, study, trial, lambda r=r: r, log)


def search(config: ml_collections.ConfigDict, name: str, preset: str, workdir: str,
           n_trials: int, space: dict[str, tuple], overrides: dict[str, Any],
           pruner: Any = None, log: Callable[[str], None] = print, batch: int = 1) -> dict:
  """Runs (or continues) the search to `n_trials` finished trials; writes the outputs
  and returns best.json's contents. `pruner`: an Optuna pruner (default: none).
  `batch` > 1: that many trials at a time, trained together (`run_batch`)."""
  from crl_mmnar_jax import workdir as workdir_lib
  from crl_mmnar_jax.workdir import training_hash
  optuna = import_optuna()
  os.makedirs(workdir, exist_ok=True)
  with workdir_lib.WorkdirLock(workdir, log):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(os.path.join(workdir, "journal.log")))
    seed = int(config.seed)

    def load(n_done: int):
      return optuna.create_study(
          storage=storage, study_name=STUDY, direction="maximize", load_if_exists=True,
          sampler=optuna.samplers.TPESampler(seed=trial_seed(seed, n_done)),
          pruner=pruner or optuna.pruners.NopPruner())

    study = load(0)
    check_identity(study, {"config": f"{name}{':' if preset else ''}{preset}",
                           "method": str(config.method),
                           "training_hash": training_hash(trial_config(config, {})),
                           "space": json.dumps(space, sort_keys=True)}, workdir)
    requeue_interrupted(study, log)
    write_outputs(study, name, preset, workdir, space, overrides)
    while True:
      n_done = sum(counted(t) for t in study.get_trials(deepcopy=False))
      if n_done >= n_trials:
        break
      study = load(n_done)
      if batch > 1:
        run_batch(optuna, study, config, space, workdir, min(batch, n_trials - n_done), log)
      else:
        run_trial(optuna, study, config, space, workdir, log)
      write_outputs(study, name, preset, workdir, space, overrides)
    return write_outputs(study, name, preset, workdir, space, overrides)


# ----------------------------------------------------------------------------- outputs


def trials_csv(trials: list, space: dict[str, tuple]) -> str:
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(["number", "state", "val_mean_auroc", "duration_s", "workdir", "rerun_of",
              "error"] + [f"params.{f}" for f in space])
  for t in trials:
    value = "" if t.value is None else repr(float(t.value))
    duration = t.user_attrs.get("duration_s")
    if duration is None and t.datetime_start and t.datetime_complete:
      duration = round((t.datetime_complete - t.datetime_start).total_seconds(), 2)
    w.writerow([t.number, t.state.name, value, "" if duration is None else duration,
                t.user_attrs.get("workdir", ""), t.user_attrs.get("rerun_of", ""),
                t.user_attrs.get("error", "")] + [t.params.get(f, "") for f in space])
  return buf.getvalue()


def literal(field: str, value: Any) -> str:
  text = repr(value)
  try:
    same = ast.literal_eval(text) == value
  except (ValueError, SyntaxError):
    same = False
  if not same:
    raise ValueError(f"{field}={value!r} cannot be written to best_config.py")
  return text


def best_config_source(name: str, preset: str, overrides: dict[str, Any], best: dict) -> str:
  lines = "\n".join(f"    {json.dumps(k)}: {literal(k, v)}," for k, v in overrides.items())
  return f'''r"""The best trial of `python -m experiments.tune` in {best["search_workdir"]}:
trial {best["trial"]} of {best["n_finished"]}, validation mean AUROC {best["val_mean_auroc"]:.4f}.

Written by experiments.tune after every trial (do not edit); the search read validation
labels only. Run it (test metrics, bootstrap intervals, plots):
  python -m experiments.run --config={os.path.join(best["search_workdir"], "best_config.py")} \\
      --workdir=DIR
"""

import importlib

BASE = {name!r}
PRESET = {preset!r}
OVERRIDES = {{   # the search's command-line overrides, then the best trial's parameters
{lines}
}}


def get_config(arg: str = ""):
  if arg:
    raise ValueError(f"best_config.py takes no preset (got {{arg!r}}); override fields "
                     f"with --config.a.b=value")
  c = importlib.import_module(f"experiments.configs.{{BASE}}").get_config(PRESET)
  for field, value in OVERRIDES.items():
    *parents, key = field.split(".")
    node = c
    for p in parents:
      node = node[p]
    node[key] = value
  return c
'''


def write_outputs(study: Any, name: str, preset: str, workdir: str,
                  space: dict[str, tuple], overrides: dict[str, Any]) -> dict:
  """trials.csv, best.json and (once a trial is complete) best_config.py, atomically."""
  from crl_mmnar_jax.data.io import write_atomic
  trials = study.get_trials(deepcopy=False)
  write_atomic(os.path.join(workdir, "trials.csv"), trials_csv(trials, space))
  complete = [t for t in trials if t.state.name == "COMPLETE"]
  states = [t.state.name for t in trials if counted(t)]
  best: dict[str, Any] = {
      "config": f"{name}{':' if preset else ''}{preset}", "objective":
      "validation mean AUROC (metrics.val.mean.auroc of the trial's results)",
      "search_workdir": os.path.abspath(workdir), "n_finished": len(states),
      "n_complete": states.count("COMPLETE"), "n_pruned": states.count("PRUNED"),
      "n_failed": states.count("FAIL"), "search_space": {k: list(v) for k, v in space.items()},
      "command_line_overrides": overrides, "trial": None}
  if complete:
    top = max(complete, key=lambda t: (t.value, -t.number))   # ties: the earliest
    best.update(trial=top.number, val_mean_auroc=float(top.value), params=dict(top.params),
                workdir=top.user_attrs.get("workdir", trial_dir(top.number)))
    source = best_config_source(name, preset, {**overrides, **top.params}, best)
    write_atomic(os.path.join(workdir, "best_config.py"), source)
  write_atomic(os.path.join(workdir, "best.json"), json.dumps(best, indent=2, default=list))
  return best


# ----------------------------------------------------------------------------- main


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> dict:
  cli.no_positional(argv)
  logging.set_verbosity(logging.WARNING)
  cache = cli.use_compile_cache(fv)
  from crl_mmnar_jax import workdir as workdir_lib
  from crl_mmnar_jax.config_check import check_config
  from crl_mmnar_jax.methods import get_method
  from crl_mmnar_jax.train.loop import NonFiniteLossError
  config = fv.config
  try:
    if fv.trials < 1:
      raise ValueError(f"--trials={fv.trials}: must be >= 1")
    if fv.prune_warmup < 0 or fv.prune_startup < 0:
      raise ValueError("--prune_warmup and --prune_startup must be >= 0")
    if fv.batch < 1:
      raise ValueError(f"--batch={fv.batch}: must be >= 1")
    name, preset = config_name(fv)
    get_method(str(config.method))
    check_config(config)
    base = importlib.import_module(f"experiments.configs.{name}").get_config(preset)
    overrides = overrides_of(config, base)
    space = search_space(name, config, fv.search, overrides)
    for field, value in overrides.items():
      literal(field, value)
    optuna = import_optuna()
    pruner = None
    if fv.pruner == "median":
      pruner = optuna.pruners.MedianPruner(n_startup_trials=fv.prune_startup,
                                           n_warmup_steps=fv.prune_warmup)
  except ValueError as e:
    sys.exit(f"error: {e}")
  signal.signal(signal.SIGTERM, workdir_lib.raise_interrupted)
  from crl_mmnar_jax.data import reuse_loaded
  try:
    with reuse_loaded():       # the cohort is loaded and featurised once for every trial
      best = search(config, name, preset, fv.workdir, fv.trials, space, overrides, pruner,
                    batch=fv.batch)
  except (ValueError, NonFiniteLossError) as e:   # DataError, WorkdirError are ValueErrors
    sys.exit(f"error: {e}")
  except OSError as e:
    where = f"{e.filename}: " if e.filename else ""
    print(f"error: {where}{e.strerror or e} (rerun the same command once it is fixed)",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)
  except KeyboardInterrupt as e:
    workdir_lib.exit_interrupted(e, " (the search continues where it stopped)")
  if best["trial"] is None:
    print(f"no trial completed ({best['n_finished']} finished); outputs in {fv.workdir}")
  else:
    print(f"best: trial {best['trial']}, validation mean AUROC {best['val_mean_auroc']:.4f} "
          f"({best['n_finished']} trials); config {fv.workdir}/best_config.py")
  print(cli.compile_cache_line(cache))
  return best


def spaces_help() -> str:
  """The extra help: the configs with a search space and what each searches."""
  lines = ["Search spaces (get_search_space in experiments/configs/NAME.py; docs/tuning.md):"]
  for name in available_configs():
    module = importlib.import_module(f"experiments.configs.{name}")
    if hasattr(module, "get_search_space"):
      for method in ("crl_mmnar", "gbt"):
        lines += textwrap.wrap(", ".join(module.get_search_space(method)), width=88,
                               initial_indent=f"  {name + ' ' + method:24s} ",
                               subsequent_indent=" " * 27)
  return "\n".join(lines)


SCRIPT = cli.Script(main, define_flags, __doc__, config_file=True, extra_help=spaces_help)


def run() -> None:
  SCRIPT.run()


if __name__ == "__main__":
  run()
