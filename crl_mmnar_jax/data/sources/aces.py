"""Task labels from ACES (PyPI `es-aces`, command `aces-cli`), run in its own environment.

ACES turns a MEDS root and a task YAML into labels in the MEDS label schema
(``subject_id, prediction_time, boolean_value``), what ``--config=meds
--config.data.task=FILE`` reads. es-aces 0.7 pins polars < 2 while this project runs on
polars 2.x, so it is never imported here: `extract_labels` runs `aces-cli` in a subprocess, one
Hydra multirun over the root's shards (``data/**/*.parquet``, as ACES's own sharded
mode), and joins the shards' labels into ``<out_dir>/<yaml stem>.parquet``.

The executable: the ``aces_cli`` argument, else ``$CRL_MMNAR_ACES``, else ``aces-cli`` on
PATH. A separate environment, e.g.::

  python3 -m venv ~/venv-aces && ~/venv-aces/bin/pip install es-aces
  export CRL_MMNAR_ACES=~/venv-aces/bin/aces-cli

Task configs for the paper's MIMIC-IV tasks: ``experiments/configs/aces/``. Every
problem (no executable, no YAML, no shard, ACES failing) raises `DataError` in one line
naming the file at fault.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess

import polars as pl

from crl_mmnar_jax.data.errors import DataError

ENV_VAR = "CRL_MMNAR_ACES"
INSTALL_HINT = "pip install es-aces in a separate venv"
LABEL_COLUMNS = ("subject_id", "prediction_time", "boolean_value")
_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception)\b")


def find_aces(aces_cli: str = "") -> str:
  """The path of the ACES executable: `aces_cli`, else ``$CRL_MMNAR_ACES``, else
  ``aces-cli`` on PATH; DataError naming what was looked for when it is not there."""
  name = aces_cli or os.environ.get(ENV_VAR, "") or "aces-cli"
  found = shutil.which(os.path.expanduser(name))
  if found is None:
    source = "argument" if aces_cli else (f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "PATH")
    raise DataError(f"{name}: ACES executable not found (from {source}; {INSTALL_HINT} and "
                    f"set ${ENV_VAR} to its bin/aces-cli)")
  return found


def meds_shards(meds_root: str) -> list[str]:
  """The root's shards for ACES: paths under ``data/`` without ``.parquet``, sorted."""
  data = os.path.join(meds_root, "data")
  shards = sorted(os.path.relpath(os.path.join(d, f), data)[:-len(".parquet")]
                  for d, _, files in os.walk(data) for f in files if f.endswith(".parquet"))
  if not shards:
    raise DataError(f"{data}: no .parquet shard (expected a MEDS root with data/**/*.parquet)")
  return shards


def _quoted(value: str) -> str:
  """A Hydra override value as a quoted string (paths with spaces, commas, '=')."""
  return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _last_error(text: str) -> str:
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  errors = [ln for ln in lines if _ERROR_LINE.match(ln)]
  rest = [ln for ln in lines if not ln.startswith("Set the environment variable HYDRA_FULL")]
  return (errors or rest or ["no error message"])[-1]


def extract_labels(meds_root: str, task_yaml: str, out_dir: str, aces_cli: str = "",
                   timeout_s: float | None = None) -> str:
  """Runs ACES on `meds_root` with `task_yaml`; returns the labels parquet path.

  Args:
    meds_root: a MEDS root (``data/**/*.parquet`` shards).
    task_yaml: an ACES task configuration (``.yaml``); its stem names the output.
    out_dir: where ACES writes ``<stem>/<shard>.parquet`` and its logs
      (``<stem>/.logs``); the joined labels go to ``<out_dir>/<stem>.parquet``.
    aces_cli: the executable; "" = ``$CRL_MMNAR_ACES``, else ``aces-cli`` on PATH.
    timeout_s: seconds before ACES is stopped (None: no limit).

  Returns:
    ``<out_dir>/<stem>.parquet``: ACES's label columns (MEDS label schema), rows of
    every shard, sorted by subject_id and prediction_time.
  """
  task_yaml = os.path.abspath(task_yaml)
  if not os.path.isfile(task_yaml):
    raise DataError(f"{task_yaml}: ACES task config not found")
  if not task_yaml.endswith(".yaml"):
    raise DataError(f"{task_yaml}: ACES reads task configs named *.yaml only")
  shards = meds_shards(meds_root)
  exe = find_aces(aces_cli)
  name = os.path.basename(task_yaml)[:-len(".yaml")]
  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  cmd = [exe, "-m", f"config_path={_quoted(task_yaml)}", "data=sharded", "data.standard=meds",
         f"data.root={_quoted(os.path.abspath(os.path.join(meds_root, 'data')))}",
         "data.shard=" + ",".join(_quoted(s) for s in shards),
         f"cohort_dir={_quoted(out_dir)}", f"cohort_name={_quoted(name)}"]
  parts = [os.path.join(out_dir, name, s + ".parquet") for s in shards]
  for p in parts:                         # never join a previous run's shard
    if os.path.isfile(p):
      os.remove(p)
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
  try:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s,
                          check=False)
  except subprocess.TimeoutExpired:
    raise DataError(f"{task_yaml}: aces-cli ({exe}) ran past {timeout_s} s") from None
  except OSError as e:
    raise DataError(f"{task_yaml}: cannot run aces-cli {exe} ({e})") from None
  if done.returncode != 0:
    raise DataError(f"{task_yaml}: aces-cli failed (exit {done.returncode}): "
                    f"{_last_error(done.stderr.strip() or done.stdout)} (logs: "
                    f"{os.path.join(out_dir, name, '.logs')})")
  missing = [p for p in parts if not os.path.isfile(p)]
  if missing:
    raise DataError(f"{missing[0]}: aces-cli exited 0 but did not write this shard's labels")
  labels = pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed")
  if len(labels) == 0:
    raise DataError(f"{task_yaml}: ACES matched no subject of {meds_root} (0 label rows): "
                    f"check the task's trigger and predicate codes against the root's "
                    f"codes (metadata/codes.parquet)")
  out = os.path.join(out_dir, name + ".parquet")
  labels.sort(*LABEL_COLUMNS[:2]).write_parquet(out)
  return out


def cache_folder(meds_root: str, task_yaml: str) -> str:
  """Where `labels_for` keeps a task's labels: under ``$XDG_CACHE_HOME`` (else ~/.cache)
  ``/crl_mmnar_jax/aces/``, keyed by the YAML's bytes and the root's data folder and shards
  (path, size and modification time), so a changed config or dataset is extracted afresh."""
  h = hashlib.sha256()
  with open(task_yaml, "rb") as f:
    h.update(f.read())
  data = os.path.join(os.path.abspath(meds_root), "data")
  h.update(os.path.realpath(data).encode() + b"\0")
  for shard in meds_shards(meds_root):
    st = os.stat(os.path.join(data, shard + ".parquet"))
    h.update(f"{shard}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "crl_mmnar_jax", "aces", h.hexdigest()[:16])


def labels_for(meds_root: str, task_yaml: str, aces_cli: str = "") -> str:
  """The labels parquet of `task_yaml` on `meds_root`: extracted once with
  `extract_labels` into `cache_folder`, then reused."""
  if not os.path.isfile(task_yaml):
    raise DataError(f"{os.path.abspath(task_yaml)}: ACES task config not found")
  folder = cache_folder(meds_root, task_yaml)
  out = os.path.join(folder, os.path.basename(task_yaml)[:-len(".yaml")] + ".parquet")
  return out if os.path.isfile(out) else extract_labels(meds_root, task_yaml, folder, aces_cli)
