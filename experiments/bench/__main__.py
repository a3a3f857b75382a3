"""`python -m experiments.bench [--only=SECTION,...] [--out=FILE]`: see `sections`."""

from experiments.bench.sections import SCRIPT

if __name__ == "__main__":
  SCRIPT.run()
