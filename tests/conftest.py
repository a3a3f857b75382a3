"""Session-wide test settings.

One persistent XLA compilation cache for the whole test session, shared by the tests'
own process and every `python -m experiments...` subprocess they start (through
JAX_COMPILATION_CACHE_DIR): many tests train the same tiny configurations, and compiling
the train step dominates their time on CPU. The cache lives in the session's temporary
directory (one per worker under `pytest -n N`), so every session starts cold and
nothing leaks between sessions.

The tests' programs are compiled at LLVM optimisation level 1 instead of 2
(`--xla_backend_optimization_level=1`, set here before JAX starts and inherited by the
subprocesses): the same HLO and fusions, results within float32 rounding of the
default's (a tiny run's probabilities at most 1.2e-7 apart), and the train step
compiles about 1.5x faster; the suite is mostly compilation. Users' runs keep XLA's
default.
"""

import os

import pytest

TEST_XLA_FLAG = "--xla_backend_optimization_level=1"
if TEST_XLA_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAG}".strip()


@pytest.fixture(scope="session", autouse=True)
def _shared_compilation_cache(tmp_path_factory):
  import jax
  folder = str(tmp_path_factory.getbasetemp() / "jax_cache")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  yield
