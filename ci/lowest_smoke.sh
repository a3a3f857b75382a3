#!/usr/bin/env bash
# The lowest allowed versions of the core dependencies (ci/lowest.txt) in a second
# virtual environment, then a smoke subset: the tables and PhysioNet 2012 loader tests
# and a `synthetic:tiny` run. Called by .ci/run after the main test command; about
# 3 minutes on 2 cores, installs included.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
# shellcheck disable=SC1091
. "$scratch/venv/bin/activate"
python -m pip install -q --upgrade pip
# Test tools at any allowed version; the core dependencies exactly at their lowest.
python -m pip install -q -r ci/lowest.txt "pytest>=8,<10" "pyarrow>=16" "hypothesis>=6,<7"
python -m pip install -q -e . --no-deps
python -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|flax|optax|orbax-checkpoint|chex|numpy|polars) '
echo "lowest versions: installed in ${SECONDS}s"
python -m pytest -q -p no:cacheprovider tests/test_tables.py tests/test_physionet2012.py \
  -m "not slow"
python -m experiments.run --config=synthetic:tiny --workdir="$scratch/run"
test -s "$scratch/run/results.json"
echo "lowest versions: smoke subset passed in ${SECONDS}s"
