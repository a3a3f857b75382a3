"""Session-wide test settings.

One persistent XLA compilation cache for the whole test session, shared by the tests'
own processes (every `pytest -n N` worker) and every `python -m experiments...`
subprocess they start (through JAX_COMPILATION_CACHE_DIR): many tests train the same
tiny configurations, and compiling dominates their time on CPU. The cache lives in the
session's temporary directory, so every session starts cold and nothing leaks between
sessions.

The tests' programs are compiled without LLVM's optimisations
(`--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true`, set here
before JAX starts and inherited by the subprocesses): the same HLO and fusions, results
within float32 rounding of the default's, and the model tests run about 1.3x faster
than at level 1 (test_model.py: 145 s -> 112 s on a 2-core CPU); the suite is mostly
compilation. Users' runs keep XLA's default.
"""

import os

import pytest

TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0",
                  "--xla_llvm_disable_expensive_passes=true")
for _flag in TEST_XLA_FLAGS:
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()


@pytest.fixture(scope="session", autouse=True)
def _shared_compilation_cache(tmp_path_factory):
  import jax
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):      # .../pytest-N/popen-gwK: one per session
    base = base.parent
  folder = str(base / "jax_cache")
  os.environ.pop("CRL_MMNAR_COMPILE_CACHE", None)   # a user's own would win (compile_cache)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  yield
