r"""Defaults that travel: candidate settings scored across a family of simulated cohorts.

  python -m experiments.studies.travelling --family=search --seeds=0,1 \
      --labels=logreg,pn_tuned,pn_tuned_wide,hand_set,hand_set_wide --out=/tmp/travel
  python -m experiments.studies.travelling --family=check --seeds=0,1,2,3,4 \
      --labels=logreg,pn_tuned,pn_tuned_wide --out=/tmp/travel

A user who brings their own tables gets the `tables` config's defaults. Settings tuned on
one cohort need not travel, so this study writes a family of simulated MMNAR cohorts in
the tables layout (`make_synthetic` with other world seeds, MCAR and MNAR mechanisms,
weak and strong nonlinearity, 5,000 and 20,000 patients; never the synthetic config's
own world 0) and runs `python -m experiments.run --config=tables` on each, one process
per run, for every seed and every label (a method or a candidate set of CRL-MMNAR
settings, `LABELS`). The `search` family chooses the defaults (objective: the mean over
cohorts of the validation AUROC minus logistic regression + indicators' on the same
split); the `check` family, never used in choosing, tests them (paired test AUROC
differences to logistic regression over seeds). Runs already finished are reused, so an
interrupted study resumes. Writes `OUT/<family>.json` and prints markdown tables
(docs/stack.md, "Defaults that travel"). About 40 s per CRL-MMNAR run of 5,000
patients and 2 minutes of 20,000 on a 2-core CPU with `--jobs=2`.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
from typing import Sequence

import numpy as np
from absl import flags

from crl_mmnar_jax.config import default_config
from crl_mmnar_jax.data.sources.synthetic import make_synthetic
from crl_mmnar_jax.data.sources.tables import write_tables
from experiments.configs import cli, physionet2012

# name -> make_synthetic arguments (seed = world_seed: one fixed draw of patients per world).
FAMILIES: dict[str, dict[str, dict]] = {
    "search": {
        "w11_mnar_nl1_5k": dict(world_seed=11, mechanism="mnar", nonlinearity=1.0, n=5000),
        "w12_mnar_nl0.25_5k": dict(world_seed=12, mechanism="mnar", nonlinearity=0.25, n=5000),
        "w13_mcar_nl1_5k": dict(world_seed=13, mechanism="mcar", nonlinearity=1.0, n=5000),
        "w14_mnar_nl0_20k": dict(world_seed=14, mechanism="mnar", nonlinearity=0.0, n=20000),
    },
    "check": {
        "w21_mnar_nl1_20k": dict(world_seed=21, mechanism="mnar", nonlinearity=1.0, n=20000),
        "w22_mnar_nl0.25_20k": dict(world_seed=22, mechanism="mnar", nonlinearity=0.25,
                                    n=20000),
        "w23_mcar_nl0.5_5k": dict(world_seed=23, mechanism="mcar", nonlinearity=0.5, n=5000),
        "w24_mnar_nl0_5k": dict(world_seed=24, mechanism="mnar", nonlinearity=0.0, n=5000),
        "w25_mar_nl1_5k": dict(world_seed=25, mechanism="mar", nonlinearity=1.0, n=5000),
        "w26_mnar_nl2_5k": dict(world_seed=26, mechanism="mnar", nonlinearity=2.0, n=5000),
    },
}


def settings(tuned: bool, wide: bool) -> list[str]:
  """Explicit values of every field `physionet2012.TUNED` sets (its tuned values, or the
  schema's own hand-set ones) and of `model.wide`: a label means the same settings
  whatever the `tables` config's defaults are."""
  c = default_config("tables")
  out = []
  for key, value in physionet2012.TUNED.items():
    section, name = key.split(".")
    out.append(f"--config.{key}={value if tuned else c[section][name]}")
  return out + [f"--config.model.wide={wide}"]


# label -> extra arguments to `experiments.run --config=tables` (the reference first).
LABELS: dict[str, list[str]] = {
    "logreg": ["--config.method=logreg"],
    "gbt": ["--config.method=gbt"],
    "gbt_pn_tuned": ["--config.method=gbt", *settings(tuned=True, wide=False)],
    "gbt_hand_set": ["--config.method=gbt", *settings(tuned=False, wide=False)],
    "pn_tuned": settings(tuned=True, wide=False),     # the tables defaults before this study
    "pn_tuned_wide": settings(tuned=True, wide=True),
    "hand_set": settings(tuned=False, wide=False),
    "hand_set_wide": settings(tuned=False, wide=True),
    "default": [],                                    # whatever `tables` ships now
    "stack": ["--config.method=stack", "--config.train.cv_folds=5"],
}


def write_world(folder: str, spec: dict) -> str:
  """The world's cohort in the tables layout under `folder` (written once)."""
  if not os.path.exists(os.path.join(folder, "labels.parquet")):
    data = make_synthetic(spec["n"], mechanism=spec["mechanism"],
                          nonlinearity=spec["nonlinearity"], seed=spec["world_seed"],
                          world_seed=spec["world_seed"])
    tmp = folder + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    for name in os.listdir(tmp):
      os.remove(os.path.join(tmp, name))
    write_tables(data.cohort, tmp)
    os.replace(tmp, folder)
  return folder


def run_one(data_dir: str, workdir: str, seed: int, args: Sequence[str],
            extra: Sequence[str]) -> tuple[str, float]:
  """One `experiments.run` process; returns (workdir, seconds); reuses a finished run."""
  if os.path.exists(os.path.join(workdir, "results.json")):
    return workdir, 0.0
  cmd = [sys.executable, "-m", "experiments.run", "--config=tables",
         f"--config.data.dir={data_dir}", f"--config.seed={seed}",
         "--config.train.progress=False", f"--workdir={workdir}", *args, *extra]
  t0 = time.time()
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise RuntimeError(f"{workdir}: exit {proc.returncode}: {' | '.join(tail)}")
  return workdir, time.time() - t0


def read_run(workdir: str) -> dict:
  """Mean-over-tasks AUROCs of one finished run (and the stack's members, if any)."""
  with open(os.path.join(workdir, "results.json")) as f:
    r = json.load(f)
  out = {k: r["metrics"][k]["mean"]["auroc"] for k in ("val", "test", "test_rectified")
         if k in r["metrics"]}
  if "stack" in r:
    out["members"] = {m: {k: v["mean"]["auroc"] for k, v in d.items() if "mean" in v}
                      for m, d in r["stack"].get("members", {}).items()}
  return out


def summarise(runs: dict, labels: Sequence[str], ref: str = "logreg") -> dict:
  """Per world and label: test/val AUROC over seeds, the paired test difference to
  `ref` (mean, sd, seeds ahead) and the search objective (val − ref's val)."""
  out = {"worlds": {}, "objective": {}}
  for world, by_label in runs.items():
    rows = {}
    base = by_label.get(ref)
    for label in labels:
      seeds = by_label.get(label)
      if not seeds:
        continue
      test = np.array([s["test"] for s in seeds])
      row = {"test_mean": float(test.mean()),
             "test_sd": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
             "val_mean": float(np.mean([s["val"] for s in seeds])),
             "rectified_minus_raw": float(np.mean([s["test_rectified"] - s["test"]
                                                   for s in seeds])),
             "n_seeds": len(seeds)}
      if base and label != ref and len(base) == len(seeds):
        d = test - np.array([s["test"] for s in base])
        row.update(diff_mean=float(d.mean()),
                   diff_sd=float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                   ahead=int((d > 0).sum()),
                   val_gain=float(row["val_mean"] - np.mean([s["val"] for s in base])))
      if "members" in seeds[0]:
        row["members"] = {m: float(np.mean([s["members"][m]["test"] for s in seeds]))
                          for m in seeds[0]["members"]}
      rows[label] = row
    out["worlds"][world] = rows
  for label in labels:
    gains = [w[label]["val_gain"] for w in out["worlds"].values()
             if label in w and "val_gain" in w[label]]
    if gains:
      out["objective"][label] = float(np.mean(gains))
  return out


def markdown(summary: dict, labels: Sequence[str], ref: str = "logreg") -> str:
  lines = [f"| world | {' | '.join(labels)} |", "|---|" + "---|" * len(labels)]
  for world, rows in summary["worlds"].items():
    cells = []
    for label in labels:
      r = rows.get(label)
      if r is None:
        cells.append("")
      elif "diff_mean" in r:
        cells.append(f"{r['test_mean']:.4f} ({r['diff_mean']:+.4f} ± {r['diff_sd']:.4f}, "
                     f"{r['ahead']}/{r['n_seeds']})")
      else:
        cells.append(f"{r['test_mean']:.4f}")
    lines.append(f"| {world} | {' | '.join(cells)} |")
  obj = " | ".join(f"{summary['objective'].get(x, float('nan')):+.4f}" if x != ref else "—"
                   for x in labels)
  lines.append(f"| objective: mean val − {ref} val | {obj} |")
  return "\n".join(lines)


def define_flags(fv: flags.FlagValues, argv: Sequence[str] = ()) -> None:
  flags.DEFINE_enum("family", "search", list(FAMILIES), "Which family of worlds.",
                    flag_values=fv)
  flags.DEFINE_list("worlds", [], "A subset of the family's worlds (default: all).",
                    flag_values=fv)
  flags.DEFINE_list("seeds", ["0", "1"], "Run seeds (split and initialisation).",
                    flag_values=fv)
  flags.DEFINE_list("labels", ["logreg", "pn_tuned", "pn_tuned_wide"],
                    f"Labels to run (known: {', '.join(LABELS)}); logreg is the reference.",
                    flag_values=fv)
  flags.DEFINE_string("out", "/tmp/travelling", "Folder for the worlds, runs and JSON.",
                      flag_values=fv)
  flags.DEFINE_integer("jobs", 2, "Runs at once.", flag_values=fv)
  flags.DEFINE_multi_string("extra", [], "Extra arguments for every run "
                            "(e.g. --extra=--config.eval.n_boot=200).", flag_values=fv)


def main(argv: Sequence[str], fv: flags.FlagValues = flags.FLAGS) -> str:
  if len(argv) > 1:
    raise SystemExit(f"error: unexpected arguments {argv[1:]}")
  family = FAMILIES[fv.family]
  worlds = list(fv.worlds) or list(family)
  unknown = [w for w in worlds if w not in family] + [x for x in fv.labels if x not in LABELS]
  if unknown:
    raise SystemExit(f"error: unknown world or label {unknown[0]!r}")
  labels = list(fv.labels)
  if "logreg" not in labels:
    labels.insert(0, "logreg")
  seeds = [int(s) for s in fv.seeds]
  jobs = []
  for world in worlds:
    data_dir = write_world(os.path.join(fv.out, "worlds", world), family[world])
    for seed in seeds:
      for label in labels:
        jobs.append((data_dir, os.path.join(fv.out, "runs", world, label, f"s{seed}"),
                     seed, LABELS[label]))
  with concurrent.futures.ThreadPoolExecutor(max(1, fv.jobs)) as pool:
    futures = [pool.submit(run_one, *job, fv.extra) for job in jobs]
    for fut in concurrent.futures.as_completed(futures):
      workdir, secs = fut.result()
      if secs:
        print(f"{workdir}: {secs:.0f} s", flush=True)
  runs = {w: {x: [read_run(os.path.join(fv.out, "runs", w, x, f"s{s}")) for s in seeds]
              for x in labels} for w in worlds}
  summary = summarise(runs, labels)
  summary.update(family=fv.family, specs={w: family[w] for w in worlds}, seeds=seeds,
                 labels={x: LABELS[x] for x in labels}, extra=list(fv.extra))
  with open(os.path.join(fv.out, f"{fv.family}.json"), "w") as f:
    json.dump(summary, f, indent=1)
  text = markdown(summary, labels)
  print(text)
  return text


SCRIPT = cli.Script(main, define_flags, __doc__)

if __name__ == "__main__":
  SCRIPT.run()
