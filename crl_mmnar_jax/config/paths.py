"""Where the shared data folder is (the open datasets' default location, docs/data.md)."""

from __future__ import annotations

import os

DATA_ENV = "CRL_MMNAR_DATA"   # the shared data folder, when set


def shared_data_dir() -> str | None:
  """The folder of the open datasets: `$CRL_MMNAR_DATA` if set; else `../shared/data`
  next to the root of the repository the current directory is in, or next to this
  package's source checkout, where that folder exists; else None (the data-source
  defaults inside it are then empty, and `--config.data.dir` names the data)."""
  env = os.environ.get(DATA_ENV, "")
  if env:
    return os.path.abspath(os.path.expanduser(env))
  for root in (repository_root(os.getcwd()), checkout_root()):
    if root is not None:
      folder = os.path.normpath(os.path.join(root, "..", "shared", "data"))
      if os.path.isdir(folder):
        return folder
  return None


def repository_root(start: str) -> str | None:
  """The nearest folder at or above `start` holding `.git` or `pyproject.toml`."""
  folder = os.path.abspath(start)
  while True:
    if any(os.path.exists(os.path.join(folder, m)) for m in (".git", "pyproject.toml")):
      return folder
    parent = os.path.dirname(folder)
    if parent == folder:
      return None
    folder = parent


def checkout_root() -> str | None:
  """The source checkout this package is imported from (the folder holding both the
  package and `pyproject.toml`); None for an installed copy."""
  package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  root = os.path.dirname(package)
  return root if os.path.isfile(os.path.join(root, "pyproject.toml")) else None
