r"""Sweep: methods x variants x seeds on identical splits, one comparison table.

  python -m experiments.sweep --config=synthetic --workdir=/tmp/sweep --seeds=5 \
      --methods=crl_mmnar,logreg,mean_impute_mlp,late_fusion
  python -m experiments.sweep --config=synthetic --workdir=/tmp/ablate --seeds=5 \
      --variants=ablations
  python -m experiments.sweep --config=synthetic --workdir=/tmp/sens --seeds=3 \
      --grid=loss.con=0,0.1,0.3,1.0 --kappas=0,0.01,0.02,0.05,0.1

Every run is `python -m experiments.run --config=CONFIG --workdir=WORKDIR/runs/NAME/seedK
--config.seed=K --config.method=METHOD [overrides]` in its own process (a failing run is
recorded and the sweep goes on). With `--stack_seeds=on` (`auto`: on an accelerator) a
neural run's seeds are one process instead, `experiments.run --workdir=WORKDIR/runs/NAME
--seeds=0,1,...`, every seed's model (and its `train.cv_folds` members) trained in one
vmapped step; it writes the same WORKDIR/runs/NAME/seedK, results equal to float
tolerance (docs/speed.md). A run whose `results.json` exists is reused; an
unfinished one resumes; a workdir that holds another config is refused by the runner
and reported. The seed fixes the patient-level split and the initialisation, so every
method and variant of seed K sees the same train/validation/test patients (the sweep
checks that the `splits.parquet` files agree).

Variants (`--variants`, comma-separated, applied to `crl_mmnar`): the paper's Table 2
ablations are `ablations` = crl_mmnar (the full model), no_missingness (no z, no gating, no L_miss),
no_reconstruction (L_rec weight 0; the decoders are still trained by L_con),
no_contrastive (no L_con); "without the rectifier" is the unrectified column of every
row. `--grid=a.b=v1,v2` (repeatable) adds one run per value (cartesian product over
several grids). `--kappas` adds the post-hoc rectifier sensitivity: the rectifier is
refitted on each run's validation predictions with κ fixed to each value (λ still
chosen on validation) and evaluated on test.

Outputs in WORKDIR: `summary.md` (per task, one line per run), `comparison.md` and
`comparison.csv` (per run, task and
with/without rectifier: mean ± sd over seeds of test AUROC, AUPRC, Brier and ECE, the
mean bootstrap 95% interval of the AUROC, and the paired AUROC difference to the first
run), `comparison.png`, `kappa.md`/`kappa.csv` with `--kappas`, and `sweep.json`
(the run list and each run's status).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import os
import re
import subprocess
import sys
import time
from typing import Sequence

import numpy as np
from absl import flags

from experiments.configs import cli

ABLATIONS = {   # "crl_mmnar" (the full model) is also the run of --methods=crl_mmnar
    "crl_mmnar": {},
    "no_missingness": {"model.use_missingness_embedding": "False"},
    "no_reconstruction": {"loss.rec": "0.0"},
    "no_contrastive": {"model.use_contrastive": "False", "loss.con": "0.0"},
}
METRICS = ("auroc", "auprc", "brier", "ece")


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  method: str
  overrides: tuple[tuple[str, str], ...] = ()

  def args(self, config: str, workdir: str, seed: int, common: tuple[tuple[str, str], ...]
           ) -> list[str]:
    sets = dict(common)
    sets.update(self.overrides)
    return ([sys.executable, "-m", "experiments.run", f"--config={config}",
             f"--workdir={workdir}", f"--config.seed={seed}", f"--config.method={self.method}"]
            + [f"--config.{k}={v}" for k, v in sets.items()])


def _pairs(items: list[str], what: str) -> tuple[tuple[str, str], ...]:
  out = []
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise SystemExit(f"error: {what} {item!r} must look like a.b=value")
    out.append((key.removeprefix("config."), value))
  return tuple(out)


def plan(methods: list[str], variants: list[str], grids: list[str]) -> list[Run]:
  """The runs of a sweep, in table order (duplicates removed)."""
  runs = [Run(m, m) for m in methods]
  for v in variants:
    names = list(ABLATIONS) if v == "ablations" else [v]
    for name in names:
      if name not in ABLATIONS:
        raise SystemExit(f"error: unknown variant {name!r}; known: ablations, "
                         f"{', '.join(ABLATIONS)}")
      run_name = name if name == "crl_mmnar" else f"crl_mmnar/{name}"
      runs.append(Run(run_name, "crl_mmnar", tuple(ABLATIONS[name].items())))
  if grids:
    axes = []
    for g in grids:
      key, sep, values = g.partition("=")
      if not sep or not values:
        raise SystemExit(f"error: --grid {g!r} must look like a.b=v1,v2,...")
      axes.append([(key.removeprefix("config."), v) for v in values.split(",")])
    for combo in itertools.product(*axes):
      label = ",".join(f"{k}={v}" for k, v in combo)
      runs.append(Run(f"crl_mmnar[{label}]", "crl_mmnar", tuple(combo)))
  seen, unique = set(), []
  for r in runs:
    if r.name not in seen:
      seen.add(r.name)
      unique.append(r)
  if not unique:
    raise SystemExit("error: nothing to run: give --methods, --variants or --grid")
  return unique


def run_dir(workdir: str, run: Run, seed: int) -> str:
  """WORKDIR/runs/NAME/seedK, NAME with every character but [A-Za-z0-9._-] replaced by
  "_" ("crl_mmnar[loss.con=0.1]" -> "crl_mmnar_loss.con_0.1_"): checkpoint paths must
  not hold glob characters."""
  return os.path.join(workdir, "runs", re.sub(r"[^A-Za-z0-9._-]", "_", run.name),
                      f"seed{seed}")


def expected_hash(args: list[str]) -> str:
  """The config hash `experiments.run` would compute for these arguments, parsed by the
  same absl/ml_collections machinery (so a reused run is exactly this config)."""
  from ml_collections import config_flags

  from crl_mmnar_jax.workdir import config_hash
  from experiments.configs import resolve_config_argv
  argv = ["sweep"] + [a for a in resolve_config_argv(args[3:])
                      if a.startswith("--config")]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  return config_hash(fv.config)


def reused(run: Run, seed: int, config: str, workdir: str,
           common: tuple[tuple[str, str], ...]) -> dict | None:
  """The status record of a finished run that is reused (or refused: another config's
  results), None when the run is still to do."""
  d = run_dir(workdir, run, seed)
  record = {"run": run.name, "seed": seed, "workdir": d}
  if not os.path.exists(os.path.join(d, "results.json")):
    return None
  with open(os.path.join(d, "config.json")) as f:
    found = json.load(f).get("_config_hash")
  if found != expected_hash(run.args(config, d, seed, common)):
    return dict(record, status="failed",
                error=f"{d} holds results of another config (hash {found}); delete it "
                      f"or use another --workdir")
  return dict(record, status="reused")


def _last_line(path: str, returncode: int) -> str:
  with open(path, errors="replace") as f:
    tail = [line.strip() for line in f if line.strip()]
  return tail[-1] if tail else f"exit {returncode}"


def execute(run: Run, seed: int, config: str, workdir: str,
            common: tuple[tuple[str, str], ...]) -> dict:
  """Runs (or reuses) one run; returns its status record."""
  done = reused(run, seed, config, workdir, common)
  if done is not None:
    return done
  d = run_dir(workdir, run, seed)
  record = {"run": run.name, "seed": seed, "workdir": d}
  os.makedirs(d, exist_ok=True)
  t0 = time.perf_counter()
  with open(os.path.join(d, "run.log"), "ab") as log:
    proc = subprocess.run(run.args(config, d, seed, common), stdout=log,
                          stderr=subprocess.STDOUT, cwd=_repo_root())
  record["seconds"] = round(time.perf_counter() - t0, 1)
  if proc.returncode != 0:
    return dict(record, status="failed",
                error=_last_line(os.path.join(d, "run.log"), proc.returncode))
  return dict(record, status="done")


def seeds_args(run: Run, seeds: list[int], config: str, workdir: str,
               common: tuple[tuple[str, str], ...]) -> list[str]:
  """The command that runs `seeds` of `run` together: `experiments.run --seeds`, whose
  WORKDIR/seedK are the run's `run_dir`s."""
  parent = os.path.dirname(run_dir(workdir, run, seeds[0]))
  return [a for a in run.args(config, parent, seeds[0], common)
          if not a.startswith("--config.seed=")] + [f"--seeds={','.join(map(str, seeds))}"]


def execute_seeds(run: Run, seeds: list[int], config: str, workdir: str,
                  common: tuple[tuple[str, str], ...]) -> list[dict]:
  """Runs the seeds of one run in one process, their models trained together
  (`experiments.run --seeds`); finished seeds are reused. Returns a record per seed."""
  records = {s: reused(run, s, config, workdir, common) for s in seeds}
  todo = [s for s in seeds if records[s] is None]
  if todo:
    parent = os.path.dirname(run_dir(workdir, run, todo[0]))
    os.makedirs(parent, exist_ok=True)
    args = seeds_args(run, todo, config, workdir, common)
    log_path = os.path.join(parent, "run.log")
    t0 = time.perf_counter()
    with open(log_path, "ab") as log:
      proc = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, cwd=_repo_root())
    seconds = round(time.perf_counter() - t0, 1)
    for s in todo:
      d = run_dir(workdir, run, s)
      rec = {"run": run.name, "seed": s, "workdir": d, "seconds": seconds,
             "stacked_seeds": todo}
      records[s] = (dict(rec, status="done") if proc.returncode == 0 else dict(
          rec, status="failed", error=_last_line(log_path, proc.returncode)))
  return [records[s] for s in seeds]


def stacks_seeds(setting: str, run: Run, n_seeds: int) -> bool:
  """Whether `--stack_seeds=setting` trains this run's seeds together: `on` for a neural
  method, `auto` for a neural method on an accelerator (on a CPU one model at a time is
  as fast, docs/speed.md), never for a direct method or a stack."""
  from crl_mmnar_jax import methods
  if setting == "off" or n_seeds < 2 or run.method == methods.STACK or not isinstance(
      methods.get_method(run.method), methods.NeuralMethod):
    return False
  if setting == "on":
    return True
  import jax
  return jax.default_backend() != "cpu"


def _repo_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- tables


def load_results(workdir: str, runs: list[Run], seeds: list[int]) -> dict[str, dict[int, dict]]:
  out = {}
  for r in runs:
    for s in seeds:
      path = os.path.join(run_dir(workdir, r, s), "results.json")
      if os.path.exists(path):
        with open(path) as f:
          out.setdefault(r.name, {})[s] = json.load(f)
  return out


def mean_sd(values) -> tuple[float, float]:
  """Mean and sample sd of the non-missing values (None and NaN are skipped)."""
  a = np.asarray(values, dtype=float)
  a = a[~np.isnan(a)]
  if len(a) == 0:
    return float("nan"), float("nan")
  return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def comparison_rows(results: dict[str, dict[int, dict]], tasks: list[str]) -> list[dict]:
  """Per run, view (test / test_rectified) and task: mean and sd over seeds, the mean
  bootstrap CI of the AUROC and the paired AUROC difference to the first run."""
  names = list(results)
  rows = []
  for name in names:
    by_seed = results[name]
    for view in ("test", "test_rectified"):
      for task in tasks:
        get = lambda r: r["metrics"][view][task]
        row = {"run": name, "rectifier": view == "test_rectified", "task": task,
               "n_seeds": len(by_seed)}
        for m in METRICS:
          row[m] = mean_sd([get(r).get(m, float("nan")) for r in by_seed.values()])
        cis = [get(r).get("ci95", {}).get("auroc") for r in by_seed.values()]
        cis = [c for c in cis if c and c[0] is not None]
        row["auroc_ci95"] = tuple(np.mean(cis, axis=0).tolist()) if cis else None
        base = results[names[0]]
        common = sorted(set(base) & set(by_seed))
        diffs = [get(by_seed[s])["auroc"] - base[s]["metrics"][view][task]["auroc"]
                 for s in common]
        row["delta_auroc"] = mean_sd(diffs) if name != names[0] else (0.0, 0.0)
        row["n_paired"] = len(common)
        rows.append(row)
  return rows


def fmt(ms: tuple[float, float], digits: int = 3) -> str:
  """'mean ± sd', 'mean' when sd is undefined, 'n/a' when the mean is."""
  mean, sd = ms
  if np.isnan(mean):
    return "n/a"
  return f"{mean:.{digits}f}" if np.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown(rows: list[dict], first: str) -> str:
  lines = ["| run | rectifier | task | seeds | test AUROC | mean bootstrap 95% CI | "
           f"Δ AUROC vs {first} (paired) | AUPRC | Brier | ECE |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    ci = (f"[{r['auroc_ci95'][0]:.3f}, {r['auroc_ci95'][1]:.3f}]" if r["auroc_ci95"]
          else "n/a")
    delta = "—" if r["run"] == first else f"{fmt(r['delta_auroc'])} (n={r['n_paired']})"
    lines.append(f"| {r['run']} | {'yes' if r['rectifier'] else 'no'} | {r['task']} | "
                 f"{r['n_seeds']} | {fmt(r['auroc'])} | {ci} | {delta} | "
                 f"{fmt(r['auprc'])} | {fmt(r['brier'], 4)} | {fmt(r['ece'], 4)} |")
  return "\n".join(lines)


def summary_markdown(rows: list[dict], task: str, first: str) -> str:
  """One line per run for one task: AUROC without and with the rectifier, the paired
  AUROC difference to the first run, AUPRC, Brier (without -> with) and ECE."""
  by = {(r["run"], r["rectifier"]): r for r in rows if r["task"] == task}
  lines = [f"| run | seeds | test AUROC | + rectifier | Δ AUROC vs {first} (paired) | AUPRC | "
           "Brier (→ rectified) | ECE |", "|---|---|---|---|---|---|---|---|"]
  for name in dict.fromkeys(r["run"] for r in rows):
    raw, rect = by[(name, False)], by[(name, True)]
    delta = "—" if name == first else fmt(raw["delta_auroc"])
    lines.append(f"| {name} | {raw['n_seeds']} | {fmt(raw['auroc'])} | {fmt(rect['auroc'])} | "
                 f"{delta} | {fmt(raw['auprc'])} | {fmt(raw['brier'], 4)} → "
                 f"{rect['brier'][0]:.4f} | {fmt(raw['ece'], 4)} |")
  return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["run", "rectifier", "task", "n_seeds"]
             + [f"{m}_{s}" for m in METRICS for s in ("mean", "sd")]
             + ["auroc_ci95_lo", "auroc_ci95_hi", "delta_auroc_mean", "delta_auroc_sd",
                "n_paired"])
  for r in rows:
    ci = r["auroc_ci95"] or (float("nan"), float("nan"))
    w.writerow([r["run"], r["rectifier"], r["task"], r["n_seeds"]]
               + [v for m in METRICS for v in r[m]] + list(ci) + list(r["delta_auroc"])
               + [r["n_paired"]])
  return buf.getvalue()


def plot(rows: list[dict], task: str, path: str) -> None:
  from matplotlib.figure import Figure
  runs = list(dict.fromkeys(r["run"] for r in rows))
  fig = Figure(figsize=(max(5.0, 0.9 * len(runs) + 2), 3.6))
  ax = fig.subplots()
  for k, (rect, marker) in enumerate(((False, "o"), (True, "s"))):
    sel = [next(r for r in rows if r["run"] == name and r["rectifier"] == rect
                and r["task"] == task) for name in runs]
    x = np.arange(len(runs)) + (k - 0.5) * 0.2
    ax.errorbar(x, [r["auroc"][0] for r in sel],
                yerr=[0 if np.isnan(r["auroc"][1]) else r["auroc"][1] for r in sel],
                fmt=marker, capsize=3, label="rectified" if rect else "raw")
  ax.set_xticks(np.arange(len(runs)), runs, rotation=30, ha="right", fontsize=8)
  ax.set_ylabel(f"test AUROC ({task}), mean ± sd")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------- κ sensitivity


def kappa_rows(results: dict[str, dict[int, dict]], kappas: list[float], workdir: str,
               runs: list[Run]) -> list[dict]:
  """Test Brier and AUROC (mean over tasks) with the rectifier refitted on validation
  predictions at each fixed κ; mean ± sd over seeds."""
  import polars as pl

  from crl_mmnar_jax import metrics as metrics_lib
  from crl_mmnar_jax import rectifier as rectifier_lib
  out = []
  by_name = {r.name: r for r in runs}
  for name, by_seed in results.items():
    for kappa in kappas:
      brier, auc = [], []
      for seed, res in by_seed.items():
        d = run_dir(workdir, by_name[name], seed)
        pred = pl.read_parquet(os.path.join(d, "predictions.parquet"))
        with open(os.path.join(d, "config.json")) as f:
          cfg = json.load(f)["rectifier"]
        tasks = res["cohort"]["tasks"]
        val, test = pred.filter(pl.col("split") == "val"), pred.filter(pl.col("split") == "test")
        arr = lambda df, suffix: np.stack(
            [df[f"{t}_{suffix}"].cast(pl.Float64).fill_null(np.nan).to_numpy() for t in tasks], 1)
        rect = rectifier_lib.fit(
            arr(val, "prob"), arr(val, "label"), val["pattern_id"].to_numpy(),
            n_folds=int(cfg["n_folds"]), kappa_grid=(kappa,),
            lambda_grid=tuple(cfg["lambda_grid"]), z=float(cfg["z"]),
            min_count=int(cfg["min_count"]), shrinkage=float(cfg["shrinkage"]), seed=seed)
        p = rect.apply(arr(test, "prob"), test["pattern_id"].to_numpy())
        m = metrics_lib.task_metrics(arr(test, "label"), p, tasks)["mean"]
        brier.append(m["brier"])
        auc.append(m["auroc"])
      out.append({"run": name, "kappa": kappa, "n_seeds": len(by_seed),
                  "brier": mean_sd(brier), "auroc": mean_sd(auc)})
  return out


def kappa_markdown(rows: list[dict]) -> str:
  lines = ["| run | κ | seeds | test Brier (mean over tasks) | test AUROC (mean over tasks) |",
           "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['run']} | {r['kappa']:g} | {r['n_seeds']} | {fmt(r['brier'], 4)} | "
                 f"{fmt(r['auroc'])} |")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def _check_same_splits(workdir: str, runs: list[Run], seeds: list[int]) -> list[str]:
  """Names of runs whose splits.parquet differs from the first run's for some seed."""
  import polars as pl
  bad = []
  for s in seeds:
    ref = None
    for r in runs:
      path = os.path.join(run_dir(workdir, r, s), "splits.parquet")
      if not os.path.exists(path):
        continue
      df = pl.read_parquet(path).sort("patient_id")
      if ref is None:
        ref = df
      elif not df.equals(ref):
        bad.append(f"{r.name} (seed {s})")
  return bad


def _write(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  """The flags of `experiments.sweep` on `fv` (`argv` unused: no config-file flag)."""
  del argv
  flags.DEFINE_string("config", "synthetic", "NAME[:PRESET] as for experiments.run.",
                      flag_values=fv)
  flags.DEFINE_string("workdir", None, "Output directory (rerun = reuse finished runs).",
                      flag_values=fv, required=True)
  flags.DEFINE_list("methods", [], "Method names (crl_mmnar_jax.methods.RUN_METHODS).",
                    flag_values=fv)
  flags.DEFINE_list("variants", [], "'ablations' or some of: " + ", ".join(ABLATIONS),
                    flag_values=fv)
  flags.DEFINE_multi_string("grid", [], "a.b=v1,v2 (repeatable).", flag_values=fv)
  flags.DEFINE_multi_string("set", [], "a.b=value for every run (repeatable).",
                            flag_values=fv)
  flags.DEFINE_integer("seeds", 5, "Seeds first_seed..first_seed+N-1.", flag_values=fv)
  flags.DEFINE_integer("first_seed", 0, "The first seed.", flag_values=fv)
  flags.DEFINE_list("kappas", [], "Post-hoc κ sensitivity values, e.g. 0,0.02,0.05.",
                    flag_values=fv)
  flags.DEFINE_bool("dry_run", False, "Print the commands only.", flag_values=fv)
  flags.DEFINE_enum("stack_seeds", "auto", ["auto", "on", "off"],
                    "Train a neural run's seeds together, in one process and one vmapped "
                    "step (experiments.run --seeds): on, off, or auto (on when JAX's "
                    "default backend is an accelerator).", flag_values=fv)
  cli.define_compile_cache(fv)


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> int:
  cli.no_positional(argv)
  methods = list(fv.methods)
  from crl_mmnar_jax.methods import RUN_METHODS  # JAX: not for --help
  unknown = [m for m in methods if m not in RUN_METHODS]
  if unknown:
    raise SystemExit(f"error: unknown method(s) {unknown}; known: {', '.join(RUN_METHODS)}")
  runs = plan(methods, list(fv.variants), list(fv.grid))
  common = _pairs(fv.set, "--set")
  seeds = list(range(fv.first_seed, fv.first_seed + fv.seeds))
  try:
    kappas = [float(k) for k in fv.kappas]
  except ValueError as e:
    raise SystemExit(f"error: --kappas: {e}") from None
  config, workdir = fv.config, fv.workdir
  if fv.compile_cache != "auto":       # every run's process (compile_cache.ENV)
    os.environ["CRL_MMNAR_COMPILE_CACHE"] = fv.compile_cache
  together = [r for r in runs if stacks_seeds(fv.stack_seeds, r, len(seeds))]
  if fv.dry_run:
    for r in runs:
      if r in together:
        print(" ".join(seeds_args(r, seeds, config, workdir, common)))
        continue
      for s in seeds:
        print(" ".join(r.args(config, run_dir(workdir, r, s), s, common)))
    return 0
  os.makedirs(workdir, exist_ok=True)
  status: list[dict] = []

  def report(recs: list[dict]) -> None:
    for rec in recs:
      status.append(rec)
      print(f"[{len(status)}/{len(runs) * len(seeds)}] {rec['run']} seed {rec['seed']}: "
            f"{rec['status']}" + (f" ({rec['seconds']} s)" if "seconds" in rec else "")
            + (" (seeds trained together)" if "stacked_seeds" in rec else "")
            + (f": {rec['error']}" if "error" in rec else ""), flush=True)
    _write(os.path.join(workdir, "sweep.json"), json.dumps(
        {"config": config, "set": dict(common), "seeds": seeds,
         "runs": [dataclasses.asdict(x) for x in runs], "status": status}, indent=2))

  for r in together:        # each run's seeds in one process
    report(execute_seeds(r, seeds, config, workdir, common))
  # Seed-major: an interrupted sweep has every run for its first seeds.
  for s, r in itertools.product(seeds, [r for r in runs if r not in together]):
    report([execute(r, s, config, workdir, common)])
  results = load_results(workdir, runs, seeds)
  if not results:
    print("no finished runs: nothing to summarise", file=sys.stderr)
    return 1
  mismatched = _check_same_splits(workdir, runs, seeds)
  if mismatched:
    raise SystemExit(f"error: splits differ from the first run's for {mismatched}: the "
                     f"runs are not comparable (different data or splits settings)")
  tasks = ["mean"] + next(iter(next(iter(results.values())).values()))["cohort"]["tasks"]
  rows = comparison_rows(results, tasks)
  first = next(iter(results))
  _write(os.path.join(workdir, "comparison.md"), markdown(rows, first) + "\n")
  _write(os.path.join(workdir, "comparison.csv"), to_csv(rows))
  plot(rows, "mean", os.path.join(workdir, "comparison.png"))
  summary = "\n\n".join(f"### {task}\n\n" + summary_markdown(rows, task, first)
                         for task in tasks)
  _write(os.path.join(workdir, "summary.md"), summary + "\n")
  print(summary_markdown(rows, "mean", first))
  if kappas:
    krows = kappa_rows(results, kappas, workdir, runs)
    _write(os.path.join(workdir, "kappa.md"), kappa_markdown(krows) + "\n")
    with open(os.path.join(workdir, "kappa.csv"), "w") as f:
      f.write("run,kappa,n_seeds,brier_mean,brier_sd,auroc_mean,auroc_sd\n")
      for r in krows:
        f.write(f"{r['run']},{r['kappa']},{r['n_seeds']},{r['brier'][0]},{r['brier'][1]},"
                f"{r['auroc'][0]},{r['auroc'][1]}\n")
    print(kappa_markdown(krows))
  failed = [s for s in status if s["status"] == "failed"]
  return 1 if failed else 0


SCRIPT = cli.Script(main, define_flags, __doc__, extra_help=cli.configs_and_methods)

if __name__ == "__main__":
  SCRIPT.run()
