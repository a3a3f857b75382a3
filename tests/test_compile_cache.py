"""The persistent compilation cache (crl_mmnar_jax/compile_cache.py): a second process
compiles nothing the first compiled."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from crl_mmnar_jax import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = """
import json, sys
import jax, jax.numpy as jnp
from crl_mmnar_jax import compile_cache
folder = compile_cache.enable(sys.argv[1])
f = jax.jit(lambda x, w: jnp.tanh(x @ w).sum(0))
g = jax.jit(lambda x: jnp.cumsum(x * 3.0, axis=0))
x = jnp.ones((16, 8))
f(x, jnp.ones((8, 4))).block_until_ready()
g(x).block_until_ready()
print(json.dumps(dict(compile_cache.counts(), folder=folder)))
"""


def _run(setting, env=None):
  proc = subprocess.run([sys.executable, "-c", PROGRAM, setting], capture_output=True,
                        text=True, cwd=ROOT, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_second_process_reads_every_program_the_first_compiled(tmp_path):
  folder = str(tmp_path / "cache")
  first = _run(folder)
  assert first["folder"] == folder and first["read"] == 0 and first["written"] >= 2
  entries = [f for f in os.listdir(folder) if not f.endswith("-atime")]
  assert len(entries) >= first["written"]
  second = _run(folder)
  assert second["written"] == 0 and second["read"] == first["written"]


def test_off_compiles_without_a_cache(tmp_path):
  env = dict(os.environ, CRL_MMNAR_COMPILE_CACHE="off")
  out = _run("auto", env)
  assert out == {"read": 0, "written": 0, "folder": None}


def test_auto_prefers_the_project_variable_then_jax_then_the_user_cache(monkeypatch, tmp_path):
  monkeypatch.setenv("CRL_MMNAR_COMPILE_CACHE", str(tmp_path / "a"))
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "b"))
  assert compile_cache.resolve("auto") == str(tmp_path / "a")
  monkeypatch.delenv("CRL_MMNAR_COMPILE_CACHE")
  assert compile_cache.resolve("auto") == str(tmp_path / "b")
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.resolve("auto") == str(tmp_path / "xdg" / "crl_mmnar_jax" / "xla")
  assert compile_cache.resolve(" OFF ") is None and compile_cache.resolve("0") is None
  assert compile_cache.resolve("~/x") == os.path.join(os.path.expanduser("~"), "x")


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(ValueError, match=r"^--compile_cache=.*file/c: cannot create the "
                                       r"folder \(.*\); give another folder or 'off'$"):
    compile_cache.enable(str(blocker / "c"))
