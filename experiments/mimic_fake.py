"""Command line of the generated MIMIC-IV directory (`crl_mmnar_jax.testing.mimic_fake`,
where the generator and its documentation live)::

  python -m experiments.mimic_fake --dir=/tmp/mimic_0.1 --scale=0.1

writes the directory at `--scale` × the real sizes, prints rows and MiB per table and
saves what `write_fake_mimic` returns as ``<dir>/fake_mimic.json``. `write_fake_mimic`,
`table_path`, `FULL_SCALE`, `COLUMNS` and `VERSIONS` are re-exported here for the
callers of this module (experiments/bench/extraction.py).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

from crl_mmnar_jax.testing.mimic_fake import (
  COLUMNS,
  FULL_SCALE,
  VERSIONS,
  table_path,
  write_fake_mimic,
)

__all__ = ["COLUMNS", "FULL_SCALE", "VERSIONS", "main", "table_path", "write_fake_mimic"]


def _define_flags() -> dict[str, Any]:
  """The flags, defined when the command line runs (not on import, so that importing
  this module next to other absl programs defines nothing)."""
  from absl import flags
  return {
      "dir": flags.DEFINE_string("dir", None, "Output directory.", required=True),
      "scale": flags.DEFINE_float("scale", 0.1, "Fraction of the real database's sizes."),
      "seed": flags.DEFINE_integer("seed", 0, "Random seed (the output is deterministic)."),
      "no_compress": flags.DEFINE_bool("no_compress", False,
                                       "Plain .csv files instead of .csv.gz."),
      "no_notes": flags.DEFINE_bool("no_notes", False, "Skip note/ (discharge, radiology)."),
      "no_cxr": flags.DEFINE_bool("no_cxr", False, "Skip cxr/ (metadata and embeddings)."),
      "chart_ratio": flags.DEFINE_float("chart_ratio", 1.0,
                                        "chartevents rows relative to the real ratio."),
      "cxr_dim": flags.DEFINE_integer("cxr_dim", 1024, "Width of the CXR embeddings."),
      "version": flags.DEFINE_enum("version", "2.2", sorted(VERSIONS), "MIMIC-IV version."),
  }


def _run(args: dict[str, Any]) -> None:
  directory = args["dir"].value
  info = write_fake_mimic(directory, scale=args["scale"].value, seed=args["seed"].value,
                          compress=not args["no_compress"].value,
                          with_notes=not args["no_notes"].value,
                          with_cxr=not args["no_cxr"].value,
                          chart_ratio=args["chart_ratio"].value,
                          cxr_dim=args["cxr_dim"].value, version=args["version"].value)
  for table, rows in info["rows"].items():
    print(f"{table:16s} {rows:>12,d} rows  {info['bytes'][table] / 2**20:10.1f} MiB")
  print(f"{info['patients']:,d} patients, {info['seconds']:.1f} s -> {directory}")
  with open(os.path.join(directory, "fake_mimic.json"), "w") as f:
    json.dump(info, f, indent=2)


_HELP = ("--help", "-help", "--helpshort", "-helpshort", "--helpfull", "-helpfull", "-?")


def main(argv: Sequence[str] | None = None) -> None:
  """Parses `argv` (program name first; default `sys.argv`) and writes the directory.
  ``-h`` / ``--help`` list the flags and exit with status 0 (absl alone exits with 1)."""
  from absl import app
  argv = ["--help" if a == "-h" else a for a in (sys.argv if argv is None else argv)]
  args = _define_flags()
  try:
    app.run(lambda _: _run(args), argv=argv)
  except SystemExit as e:
    if e.code == 1 and any(a in _HELP for a in argv[1:]):
      raise SystemExit(0) from None
    raise


if __name__ == "__main__":
  main()
