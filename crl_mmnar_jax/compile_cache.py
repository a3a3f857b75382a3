"""JAX's persistent compilation cache: compile each program once per shape, ever.

The experiment scripts call `enable` before anything compiles (`--compile_cache`, default
`auto`): a rerun, a resumed run, every seed of a sweep and every trial of a search with
the same shapes read their programs from the cache instead of compiling them again.

* `auto`: `$CRL_MMNAR_COMPILE_CACHE` (a folder or `off`) when set, else
  `$JAX_COMPILATION_CACHE_DIR` (the test suite sets its own), else
  `$XDG_CACHE_HOME/crl_mmnar_jax/xla` (by default `~/.cache/crl_mmnar_jax/xla`);
* a folder: that folder (created if needed);
* `off`: no persistent cache (what JAX does by default).

Several processes may share one folder: JAX keys an entry by the program, the compiler
and its flags, and the devices; with `jax_compilation_cache_max_size` set (here
`MAX_BYTES`) it evicts the least recently used entries under a file lock (`filelock`).
An unreadable entry (a process killed while writing it) is compiled again with a
warning, never used. A library user calls `enable()` once, before training.
"""

from __future__ import annotations

import os

import jax

ENV = "CRL_MMNAR_COMPILE_CACHE"
MAX_BYTES = 4 << 30                     # least-recently-used entries go beyond 4 GiB
OFF = ("off", "none", "false", "no", "0")
_HITS, _MISSES = "/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"
_counts = {_HITS: 0, _MISSES: 0}
_listening = False


def default_folder() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "crl_mmnar_jax", "xla")


def resolve(setting: str = "auto") -> str | None:
  """The folder `setting` names (None: the cache is off)."""
  s = setting.strip()
  if s.lower() in OFF or not s:
    return None
  if s == "auto":
    s = (os.environ.get(ENV) or os.environ.get("JAX_COMPILATION_CACHE_DIR")
         or default_folder())
    if s.lower() in OFF:
      return None
  return os.path.abspath(os.path.expanduser(s))


def _count(event: str, **kwargs) -> None:
  if event in _counts:
    _counts[event] += 1


def enable(setting: str = "auto") -> str | None:
  """Turns the persistent cache on in `resolve(setting)` (or off); returns the folder.
  Raises ValueError naming the folder when it cannot be created."""
  global _listening
  folder = resolve(setting)
  if folder is None:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise ValueError(f"--compile_cache={folder}: cannot create the folder "
                     f"({e.strerror or e}); give another folder or 'off'") from None
  os.environ["JAX_COMPILATION_CACHE_DIR"] = folder          # and the subprocesses'
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  if not _listening:
    jax.monitoring.register_event_listener(_count)
    _listening = True
  return folder


def counts() -> dict[str, int]:
  """{"read": programs read from the cache, "written": programs compiled and written}
  in this process since `enable`."""
  return {"read": _counts[_HITS], "written": _counts[_MISSES]}
