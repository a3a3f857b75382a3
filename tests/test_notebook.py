"""The notebooks: stored without outputs, in sync with their paired .py, and they run.

`notebooks/quickstart.ipynb` (synthetic data) and `notebooks/physionet2012.ipynb`
(PhysioNet 2012 set A, read from ../shared/data; skipped when it is absent) are each
paired with a `.py` of the same name (jupytext "percent" format) and stored without
outputs. Edit the .py, then regenerate the notebook (`--update` keeps the cell ids, so
the diff shows only what changed):

    jupytext --update --to ipynb notebooks/NAME.py

After editing the .ipynb in Jupyter or Colab instead, carry the edits to the .py with
`jupytext --to py:percent notebooks/NAME.ipynb`, then rewrite the notebook without
outputs with `jupytext --to ipynb notebooks/NAME.py`.

The execution test runs a notebook end to end on CPU in a kernel started from this
interpreter (`sys.executable`, through a kernel spec written to a temporary directory),
with the working tree first on PYTHONPATH, so it exercises this checkout and never
reaches the notebook's Colab install branch; `test_install_cell_without_repo_url`
runs that branch's guard instead.
"""

import dataclasses
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
KERNEL_NAME = "crl-mmnar-notebook-test"


@dataclasses.dataclass(frozen=True)
class Notebook:
  name: str
  total_limit_s: int        # the whole notebook, kernel start included
  cell_timeout_s: int       # any single cell
  min_pngs: int             # plots the run must show
  expect: tuple[str, ...]   # text every run's outputs hold
  needs: str | None = None  # a data folder; the execution test skips without it

  @property
  def ipynb(self) -> str:
    return os.path.join(ROOT, "notebooks", f"{self.name}.ipynb")

  @property
  def py(self) -> str:
    return os.path.join(ROOT, "notebooks", f"{self.name}.py")

  def sync_hint(self) -> str:
    return (f"regenerate the notebook from the .py with `jupytext --update --to ipynb "
            f"notebooks/{self.name}.py` (if you edited the .ipynb, first `jupytext --to "
            f"py:percent notebooks/{self.name}.ipynb`)")

  def clear_hint(self) -> str:
    return (f"rewrite it from the .py without outputs with `jupytext --to ipynb "
            f"notebooks/{self.name}.py` (if you edited the .ipynb, first `jupytext --to "
            f"py:percent notebooks/{self.name}.ipynb`)")


NOTEBOOKS = {
    # About 40 s on an idle 2-core CPU.
    "quickstart": Notebook("quickstart", 180, 150, 4, ("finished in",)),
    # Three physionet2012:tiny runs on set A: 110 s of CPU time (as a script), 200 s wall
    # here with a load average of 10; the limits leave room for a shared CI machine.
    "physionet2012": Notebook(
        "physionet2012", 300, 240, 1,
        ("3997 stays, 554 in-hospital deaths", "missingness indicators only", "λ = "),
        needs=os.path.join(SHARED_DATA, "physionet2012", "set-a")),
}
PARAMS = [pytest.param(nb, id=name) for name, nb in NOTEBOOKS.items()]


def _require(module: str, dist: str):
  """Imports a notebook tool; a missing one is a failure (CI installs the dev extra)."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    pytest.fail(f"cannot import {module!r} ({e}). The notebook tests need the notebook "
                f"tooling of the dev extra: pip install -e '.[dev]' (provides {dist}).",
                pytrace=False)


def _read_ipynb(notebook: Notebook):
  nbformat = _require("nbformat", "nbformat")
  return nbformat.read(notebook.ipynb, as_version=4)


def _cells(nb) -> list[tuple[str, str]]:
  return [(c.cell_type, c.source.rstrip()) for c in nb.cells]


@pytest.mark.parametrize("notebook", PARAMS)
def test_stored_notebook_is_valid_and_has_no_outputs(notebook):
  nbformat = _require("nbformat", "nbformat")
  nb = _read_ipynb(notebook)
  nbformat.validate(nb)
  dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
           and (c.get("outputs") or c.get("execution_count") is not None)]
  assert not dirty, (
      f"notebooks/{notebook.name}.ipynb is stored with outputs or execution counts in "
      f"code cell(s) {dirty}; {notebook.clear_hint()}")
  attachments = [i for i, c in enumerate(nb.cells) if c.get("attachments")]
  assert not attachments, f"cells {attachments} carry attachments"


@pytest.mark.parametrize("notebook", PARAMS)
def test_notebook_and_py_are_in_sync(notebook):
  jupytext = _require("jupytext", "jupytext")
  nb = _read_ipynb(notebook)
  py = jupytext.read(notebook.py, fmt="py:percent")
  nb_cells, py_cells = _cells(nb), _cells(py)
  nb_code = [s for t, s in nb_cells if t == "code"]
  py_code = [s for t, s in py_cells if t == "code"]
  assert nb_code, f"notebooks/{notebook.name}.ipynb has no code cells"
  for i, (a, b) in enumerate(zip(nb_code, py_code)):
    assert a == b, (f"code cell {i} differs between {notebook.name}.ipynb and .py; "
                    f"{notebook.sync_hint()}.\n--- ipynb ---\n{a}\n--- py ---\n{b}")
  assert len(nb_code) == len(py_code), (
      f"{notebook.name}.ipynb has {len(nb_code)} code cells, the .py {len(py_code)}; "
      f"{notebook.sync_hint()}")
  assert nb_cells == py_cells, f"the markdown cells differ; {notebook.sync_hint()}"
  formats = nb.metadata.get("jupytext", {}).get("formats", "")
  assert "py:percent" in formats, (
      f"{notebook.name}.ipynb is not paired with the percent-format .py (jupytext formats = "
      f"{formats!r}); {notebook.sync_hint()}")


def _kernel_manager(tmp_path):
  """A kernel manager whose only kernel spec launches ipykernel in sys.executable."""
  _require("ipykernel", "ipykernel")
  kernelspec = _require("jupyter_client.kernelspec", "jupyter-client (with nbclient)")
  manager = _require("jupyter_client.manager", "jupyter-client (with nbclient)")
  spec_dir = tmp_path / "kernels" / KERNEL_NAME
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": f"Python ({sys.executable})",
      "language": "python",
  }))
  ksm = kernelspec.KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")],
                                     ensure_native_kernel=False)
  assert ksm.get_kernel_spec(KERNEL_NAME).argv[0] == sys.executable
  return manager.KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)


def _text(cell) -> str:
  parts = []
  for out in cell.get("outputs", []):
    if out.get("output_type") == "stream":
      parts.append(out.get("text", ""))
    elif "data" in out:
      parts.append(out["data"].get("text/plain", ""))
  return "".join(parts)


def _install_cell(nb):
  cell = next((c for c in nb.cells if c.cell_type == "code"
               and 'find_spec("crl_mmnar_jax")' in c.source), None)
  assert cell is not None, "no install cell (find_spec(\"crl_mmnar_jax\")) found"
  return cell


@pytest.mark.parametrize("notebook", PARAMS)
def test_install_cell_without_repo_url(notebook, monkeypatch, capsys):
  """As shipped (REPO_URL unset), a notebook opened where the package is not importable
  prints one line saying what to set, and runs no pip."""
  cell = _install_cell(_read_ipynb(notebook)).source
  assert cell.lstrip().startswith('REPO_URL = ""'), (
      f"{notebook.name}: REPO_URL must be the first line of the install cell, unset")
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
      None if name == "crl_mmnar_jax" else real_find_spec(name, *a)))
  calls = []
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
  exec(compile(cell, f"{notebook.name}-install-cell", "exec"), {})
  out = capsys.readouterr().out.strip().splitlines()
  assert calls == [], f"pip was run without a repository URL: {calls}"
  assert len(out) == 1 and "set REPO_URL" in out[0], out
  # With a URL, the same cell installs from it.
  exec(compile(cell.replace('REPO_URL = ""', 'REPO_URL = "https://github.com/o/r"', 1),
               f"{notebook.name}-install-cell", "exec"), {})
  assert len(calls) == 1 and any("git+https://github.com/o/r" in str(a) for a in calls[0][0])


@pytest.mark.slow
@pytest.mark.parametrize("notebook", PARAMS)
def test_notebook_executes_on_cpu(tmp_path, notebook):
  if notebook.needs and not os.path.isdir(notebook.needs):
    pytest.skip(f"{notebook.name}: data not found at {notebook.needs} (see docs/data.md)")
  nbclient = _require("nbclient", "nbclient")
  nbformat = _require("nbformat", "nbformat")
  nb = _read_ipynb(notebook)
  # One extra cell, in memory only: which interpreter and which package the kernel ran.
  nb.cells.append(nbformat.v4.new_code_cell(
      "import sys, crl_mmnar_jax\nprint(sys.executable)\nprint(crl_mmnar_jax.__file__)"))
  env = dict(os.environ)
  env.update({
      "JAX_PLATFORMS": "cpu",
      "PYTHONPATH": os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p]),
      "TMPDIR": str(tmp_path),                  # the notebook's mkdtemp workdir lands here
      "IPYTHONDIR": str(tmp_path / "ipython"),  # no profile or history in the user's home
      "OMP_NUM_THREADS": "1",   # LightGBM: no thread contention on a shared CI machine
  })
  km = _kernel_manager(tmp_path)
  client = nbclient.NotebookClient(
      nb, km=km, timeout=notebook.cell_timeout_s, startup_timeout=120,
      allow_errors=False, record_timing=True,
      extra_arguments=["--HistoryManager.hist_file=:memory:"],
      resources={"metadata": {"path": str(tmp_path)}})
  t0 = time.perf_counter()
  try:
    client.execute(env=env, cwd=str(tmp_path))
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"{notebook.name} raised in a cell:\n{e}", pytrace=False)
  except nbclient.exceptions.CellTimeoutError as e:
    pytest.fail(f"a {notebook.name} cell ran longer than {notebook.cell_timeout_s} s:\n{e}",
                pytrace=False)
  finally:       # the kernel (over 1 GB) would otherwise live until this worker ends
    if km.has_kernel and km.is_alive():
      km.shutdown_kernel(now=True)
  elapsed = time.perf_counter() - t0

  errors = [i for i, c in enumerate(nb.cells) for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors, f"error outputs in cells {errors}"
  assert elapsed < notebook.total_limit_s, (
      f"{notebook.name} took {elapsed:.0f} s, over the {notebook.total_limit_s} s budget")
  code = [c for c in nb.cells if c.cell_type == "code"]
  install = _install_cell(nb)
  assert "nothing to install" in _text(install), (
      f"the install cell did not find the package already importable: {_text(install)}")
  executable, package = _text(code[-1]).split()
  assert os.path.realpath(executable) == os.path.realpath(sys.executable)
  assert os.path.realpath(package).startswith(os.path.realpath(ROOT) + os.sep), package
  text = "\n".join(_text(c) for c in code)
  missing = [s for s in notebook.expect if s not in text]
  assert not missing, f"{notebook.name}: outputs lack {missing}"
  pngs = sum("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []))
  assert pngs >= notebook.min_pngs, (
      f"{notebook.name}: expected at least {notebook.min_pngs} plots, got {pngs} PNG outputs")
