r"""Does `predict`'s shift check stay quiet on the training population and see another
synthetic world? The table of docs/predict.md ("Do the new patients look like the
training cohort?").

  python -m experiments.studies.shift_check \
      [--sizes=240:150:100,120:80:100,80:40:100,600:600:50,3000:1000:20] [--out=FILE.json]

For each TRAIN:NEW:REPS and repetition r: a synthetic cohort of TRAIN patients of world
`r mod 5` (seed 1000 + r), whose first 70% give the training statistics
(`data.standardize`, as a run saves them); NEW patients of the same world (seed
5000 + r) and NEW patients of world 100 + r (seed 9000 + r) are compared with them
(`shift.compare`). Printed: per size, how many repetitions warned, and the share of
variance the training directions explain in modalities m1-m3 (held-out training rows,
the same world, another world: median and range). About a minute on 2 cores.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
from absl import flags

from experiments.configs import cli


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  del argv
  flags.DEFINE_list("sizes", ["240:150:100", "120:80:100", "80:40:100", "600:600:50",
                              "3000:1000:20"],
                    "TRAIN:NEW:REPS: training cohort size, new patients, repetitions.",
                    flag_values=fv)
  flags.DEFINE_string("out", None, "Also write the figures as JSON here.", flag_values=fv)


def one_size(n_train: int, n_new: int, reps: int) -> dict:
  """Warnings and explained shares over `reps` repetitions of one size."""
  from crl_mmnar_jax import shift
  from crl_mmnar_jax.data.sources.synthetic import make_synthetic
  from crl_mmnar_jax.data.standardize import standardize
  warned = {"same": 0, "other": 0}
  explained: dict[str, list[float]] = {"train": [], "same": [], "other": []}
  for r in range(reps):
    train = make_synthetic(n_train, seed=1000 + r, world_seed=r % 5).cohort
    stats = standardize(train, np.arange(int(0.7 * n_train)))[1]
    for kind, seed, world in (("same", 5000 + r, r % 5), ("other", 9000 + r, 100 + r)):
      new = make_synthetic(n_new, seed=seed, world_seed=world).cohort
      report = shift.compare(new, stats, train.feature_names)
      warned[kind] += report["warning"] is not None
      for row in report["modalities"][1:]:
        if row["explained_new"] is not None:
          explained[kind].append(row["explained_new"])
          if kind == "same":
            explained["train"].append(row["explained_train"])
  spread = {k: [float(np.median(v)), float(np.min(v)), float(np.max(v))] if v else None
            for k, v in explained.items()}
  return {"n_train": n_train, "n_new": n_new, "reps": reps, "warned": warned,
          "explained": spread}


def markdown(rows: list[dict]) -> list[str]:
  def cell(v):
    return "" if v is None else f"{v[0]:.2f} ({v[1]:.2f}–{v[2]:.2f})"
  lines = ["| training / new patients | repetitions | same world: warned | another world: "
           "warned | explained, held-out training | same world | another world |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    e = r["explained"]
    lines.append(f"| {r['n_train']:,} / {r['n_new']:,} | {r['reps']} | {r['warned']['same']} "
                 f"| {r['warned']['other']} | {cell(e['train'])} | {cell(e['same'])} | "
                 f"{cell(e['other'])} |")
  return lines


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> int:
  cli.no_positional(argv)
  try:
    sizes = [tuple(int(x) for x in s.split(":")) for s in fv.sizes]
    if any(len(s) != 3 or min(s) < 1 for s in sizes):
      raise ValueError
  except ValueError:
    raise SystemExit(f"error: --sizes takes TRAIN:NEW:REPS, positive integers, got "
                     f"{fv.sizes}") from None
  rows = [one_size(*s) for s in sizes]
  print("\n".join(markdown(rows)))
  if fv.out:
    from crl_mmnar_jax.data.io import write_atomic
    write_atomic(fv.out, json.dumps(rows, indent=2))
  return 0


SCRIPT = cli.Script(main, define_flags, __doc__)


if __name__ == "__main__":
  SCRIPT.run()
