"""Where a run's numbers came from: package versions, the git commit, the command line.

`gather()` never fails: a package that is not installed has version None, and outside
a git checkout (or without a `git` executable) the commit and `dirty` are None.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any, Sequence

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "polars")
_GIT_TIMEOUT_S = 10.0


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
  """The installed version of each distribution (None when absent), and python's."""
  out: dict[str, str | None] = {}
  for name in packages:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  out["python"] = platform.python_version()
  return out


def _git(args: Sequence[str], cwd: str) -> str | None:
  try:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=_GIT_TIMEOUT_S, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  return done.stdout if done.returncode == 0 else None


def git_state(path: str | None = None) -> dict[str, Any]:
  """{"commit", "dirty"} of the checkout holding `path` (default: this package).

  `dirty` is True when tracked files differ from the commit (untracked files do not
  count); both are None outside a git checkout.
  """
  cwd = path or os.path.dirname(os.path.abspath(__file__))
  if not os.path.isdir(cwd):
    cwd = os.path.dirname(cwd)
  commit = _git(["rev-parse", "HEAD"], cwd)
  if commit is None:
    return {"commit": None, "dirty": None}
  status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
  return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def gather(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """The provenance record of results.json: {"packages", "git": {"commit", "dirty"},
  "argv", "platform"}."""
  return {"packages": package_versions(), "git": git_state(),
          "argv": [str(a) for a in (sys.argv if argv is None else argv)],
          "platform": platform.platform()}
