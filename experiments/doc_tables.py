r"""Tables in the docs that describe a shipped default, written from the run they describe.

A block in a Markdown file

  <!-- table: docs/runs/synthetic_seed0.json -->
  ...
  <!-- /table -->

holds what `render` writes from that JSON file (a run's figures, kept small by
`summarise`). `tests/test_doc_tables.py` fails when a block differs from its file, so a
figure in the docs cannot drift from the run it quotes.

Record a run, then rewrite every block that quotes it:
  python -m experiments.doc_tables --record=/tmp/crl_synthetic \
      --out=docs/runs/synthetic_seed0.json --wall_s=95 \
      --command="python -m experiments.run --config=synthetic --workdir=/tmp/crl_synthetic"
  python -m experiments.doc_tables --write      # or --check (exit 1 when a block is stale)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

from absl import flags

from experiments.configs import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("docs/results.md",)        # the files with blocks (README: test_doc_tables)
BLOCK = re.compile(r"(<!-- table: (?P<src>\S+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
KEEP = ("method", "seed", "cohort", "training", "metrics", "reference", "oracle", "rectifier",
        "timing")


def summarise(results: dict, command: str, wall_s: float) -> dict:
  """What a doc table needs from a run's results.json (and the command's wall time)."""
  r = {k: results[k] for k in KEEP if k in results}
  r["training"] = {"best_epoch": r["training"]["best_epoch"],
                   "epochs_run": len(r["training"]["history"])}
  r["metrics"] = {k: r["metrics"][k] for k in ("test", "test_rectified")}
  r["cohort"] = {k: r["cohort"][k] for k in ("name", "n", "n_train", "n_test", "tasks")}
  if "rectifier" in r:
    r["rectifier"] = {"lambda": r["rectifier"]["lambda"]}
  return {"command": command, "wall_s": round(float(wall_s), 1), "results": r}


def minutes(seconds: float) -> str:
  m, s = divmod(int(round(seconds)), 60)
  return f"{m} min {s} s" if m else f"{s} s"


def _row(name: str, metrics: dict, tasks: Sequence[str], ci: bool) -> str:
  cells = []
  for t in tasks:
    m = metrics[t]
    lo, hi = m["ci95"]["auroc"] if ci else (None, None)
    cells.append(f"{m['auroc']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if ci else ""))
  mean = metrics["mean"]
  return (f"| {name} | " + " | ".join(cells) +
          f" | {mean['auroc']:.4f} | {mean['brier']:.4f} | {mean['ece']:.4f} |")


def render(summary: dict) -> str:
  """The block's Markdown: the test metrics of the model, the rectified model, the
  reference logistic regression and (synthetic) the oracle, and one sentence of context."""
  r = summary["results"]
  tasks = r["cohort"]["tasks"]
  lines = ["| model | " + " | ".join(f"{t} AUROC [95% CI]" for t in tasks) +
           " | mean AUROC | mean Brier | mean ECE |",
           "|---" * (len(tasks) + 4) + "|",
           _row("CRL-MMNAR", r["metrics"]["test"], tasks, True),
           _row("CRL-MMNAR + rectifier", r["metrics"]["test_rectified"], tasks, True)]
  ref = (r.get("reference") or {}).get("logreg_mean_impute")
  if ref:
    lines.append(_row("logistic regression, mean imputation + indicators", ref, tasks, False))
  if r.get("oracle"):
    lines.append(_row("oracle (true probabilities)", r["oracle"]["test"], tasks, False))
  t, c = r["training"], r["cohort"]
  mean = r["metrics"]["test"]["mean"]["auroc"]
  text = (f"\n`{summary['command']}`: {c['n_test']:,} test patients, seed {r['seed']}, best "
          f"epoch {t['best_epoch']} of {t['epochs_run']} (early stopping), "
          f"{minutes(summary['wall_s'])} for the whole command on an idle 2-core CPU.")
  if ref:
    text += (f" CRL-MMNAR is {mean - ref['mean']['auroc']:+.3f} mean AUROC from the "
             f"logistic regression")
    text += (f" and {mean - r['oracle']['test']['mean']['auroc']:+.3f} from the oracle."
             if r.get("oracle") else ".")
  lam = (r.get("rectifier") or {}).get("lambda", {})
  if lam:
    text += " Rectifier λ: " + ", ".join(f"{k} {v:g}" for k, v in lam.items()) + "."
  return "\n".join(lines) + "\n" + text + "\n"


def blocks(text: str, root: str = ROOT) -> list[tuple[str, str, str]]:
  """(source path, the block's body, what `render` writes from the source) per block."""
  out = []
  for m in BLOCK.finditer(text):
    with open(os.path.join(root, m["src"])) as f:
      out.append((m["src"], m["body"], render(json.load(f))))
  return out


def rewrite(text: str, root: str = ROOT) -> str:
  def one(m):
    with open(os.path.join(root, m["src"])) as f:
      return m[1] + render(json.load(f)) + m[4]
  return BLOCK.sub(one, text)


def define_flags(fv: flags.FlagValues, argv: Sequence[str] = ()) -> None:
  flags.DEFINE_string("record", None, "A run's workdir: summarise its results.json into "
                      "--out.", flag_values=fv)
  flags.DEFINE_string("out", None, "The JSON file --record writes.", flag_values=fv)
  flags.DEFINE_float("wall_s", None, "--record: the command's measured wall time, seconds.",
                     flag_values=fv)
  flags.DEFINE_string("command", None, "--record: the command that made the run.",
                      flag_values=fv)
  flags.DEFINE_bool("write", False, "Rewrite every block from its source.", flag_values=fv)
  flags.DEFINE_bool("check", False, "Exit 1 naming each stale block.", flag_values=fv)


def main(argv: Sequence[str], fv: flags.FlagValues = flags.FLAGS) -> int:
  if len(argv) > 1:
    raise SystemExit(f"error: unexpected arguments {argv[1:]}")
  if fv.record:
    if not (fv.out and fv.wall_s and fv.command):
      raise SystemExit("error: --record needs --out, --wall_s and --command")
    with open(os.path.join(fv.record, "results.json")) as f:
      summary = summarise(json.load(f), fv.command, fv.wall_s)
    with open(fv.out, "w") as f:
      json.dump(summary, f, indent=1)
      f.write("\n")
  stale = 0
  for name in DOCS:
    path = os.path.join(ROOT, name)
    with open(path) as f:
      text = f.read()
    if fv.write:
      with open(path, "w") as f:
        f.write(rewrite(text))
    elif fv.check:
      for src, body, want in blocks(text):
        if body != want:
          stale += 1
          print(f"{name}: the table from {src} is stale (python -m experiments.doc_tables "
                f"--write)")
  return 1 if stale else 0


SCRIPT = cli.Script(main, define_flags, __doc__)

if __name__ == "__main__":
  SCRIPT.run()
