"""The package's shape: no import cycle, no private name used across modules, small modules.

The import graph is read with `ast` (every import statement, including those inside
functions and under `TYPE_CHECKING`), so a cycle hidden behind a lazy import fails too.
"""

from __future__ import annotations

import ast
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("crl_mmnar_jax", "experiments")
MAX_LINES = 600


def _modules() -> dict[str, str]:
  """Dotted module name -> file path, for every .py file of the checked packages."""
  out = {}
  for package in PACKAGES:
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      for f in files:
        if not f.endswith(".py"):
          continue
        path = os.path.join(folder, f)
        rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
        if rel[-1] == "__init__":
          rel = rel[:-1]
        out[".".join(rel)] = path
  return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom, current: str, is_package: bool) -> str:
  if not node.level:
    return module
  base = current.split(".")
  base = base if is_package else base[:-1]
  base = base[:len(base) - (node.level - 1)]
  return ".".join(base + ([module] if module else []))


def imports_of(name: str, path: str) -> list[tuple[str, list[str]]]:
  """(imported module, [names imported from it]) for each import of a checked package."""
  tree = ast.parse(open(path).read(), path)
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] in PACKAGES:
          out.append((alias.name, []))
    elif isinstance(node, ast.ImportFrom):
      target = _resolve(node.module or "", node, name, path.endswith("__init__.py"))
      if target.split(".")[0] not in PACKAGES:
        continue
      plain = []
      for alias in node.names:
        sub = f"{target}.{alias.name}"
        if sub in MODULES:          # `from pkg import submodule`
          out.append((sub, []))
        else:
          plain.append(alias.name)
      if plain:
        out.append((target, plain))
  return out


def import_graph() -> dict[str, set[str]]:
  graph = {}
  for name, path in MODULES.items():
    graph[name] = {t for t, _ in imports_of(name, path) if t in MODULES and t != name}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle as [a, b, ..., a], or None (iterative three-colour DFS)."""
  colour = dict.fromkeys(graph, 0)
  for start in sorted(graph):
    if colour[start]:
      continue
    stack, path = [(start, iter(sorted(graph[start])))], [start]
    colour[start] = 1
    while stack:
      node, children = stack[-1]
      child = next(children, None)
      if child is None:
        colour[node] = 2
        stack.pop()
        path.pop()
      elif colour[child] == 1:
        return path[path.index(child):] + [child]
      elif colour[child] == 0:
        colour[child] = 1
        stack.append((child, iter(sorted(graph[child]))))
        path.append(child)
  return None


def test_find_cycle_finds_cycles_and_accepts_dags():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
  assert find_cycle({"x": {"x"}}) == ["x", "x"]


def test_no_import_cycle():
  cycle = find_cycle(import_graph())
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _private_uses(name: str, path: str) -> list[str]:
  bad = []
  for target, names in imports_of(name, path):
    if target == name:
      continue
    bad += [f"from {target} import {n}" for n in names if n.startswith("_")
            and not n.startswith("__")]
  # `module._name` where `module` was imported from a checked package
  tree = ast.parse(open(path).read(), path)
  aliases = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      target = _resolve(node.module, node, name, path.endswith("__init__.py"))
      for a in node.names:
        if f"{target}.{a.name}" in MODULES:
          aliases[a.asname or a.name] = f"{target}.{a.name}"
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name in MODULES and a.asname:
          aliases[a.asname] = a.name
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in aliases and node.attr.startswith("_")
        and not node.attr.startswith("__")):
      bad.append(f"{aliases[node.value.id]}.{node.attr} (line {node.lineno})")
  return bad


def test_no_private_name_used_across_modules():
  bad = {name: b for name, path in MODULES.items() if (b := _private_uses(name, path))}
  assert not bad, f"private names used across modules: {bad}"


def test_private_check_catches_a_private_import(tmp_path, monkeypatch):
  f = tmp_path / "x.py"
  f.write_text("from crl_mmnar_jax.cohort import _hidden\n"
               "from crl_mmnar_jax import cohort as c\nc._other\n")
  monkeypatch.setitem(MODULES, "crl_mmnar_jax.fake_x", str(f))
  assert _private_uses("crl_mmnar_jax.fake_x", str(f)) == [
      "from crl_mmnar_jax.cohort import _hidden", "crl_mmnar_jax.cohort._other (line 3)"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small(name):
  n = sum(1 for _ in open(MODULES[name]))
  assert n <= MAX_LINES, f"{MODULES[name]} has {n} lines (at most {MAX_LINES})"


def test_no_reference_to_a_missing_design_file_or_issue_numbers():
  bad = []
  for name, path in MODULES.items():
    text = open(path).read()
    if "DESIGN.md" in text:
      bad.append(f"{path}: cites DESIGN.md (use docs/design.md)")
    if re.search(r"\b[Ii]ssue\s*#?\d+", text):
      bad.append(f"{path}: refers to an issue number")
  assert not bad, bad
  assert os.path.isfile(os.path.join(ROOT, "docs", "design.md"))


# ----------------------------------------------------------------------------- __init__.py

INITS = sorted(name for name, path in MODULES.items() if path.endswith("__init__.py"))
# What a package's __init__.py may hold besides imports, `__all__` and its docstring, and
# why. crl_mmnar_jax: `load(workdir)` imports the predictor on use, so that
# `import crl_mmnar_jax` stays light (docs/predict.md), and `__version__`.
INIT_EXTRAS = {"crl_mmnar_jax": frozenset({"__version__", "load", "TYPE_CHECKING"})}
# Packages whose logic has not moved into named modules yet: the test fails once it has
# (strict xfail), and the entry goes.
INIT_PENDING: dict[str, str] = {}


def init_logic(path: str, extras: frozenset[str] = frozenset()) -> list[str]:
  """The statements of an __init__.py beyond imports, `__all__` and the docstring (and
  the names in `extras`: assignments, functions, `if NAME:` blocks of imports)."""
  bad = []
  for i, node in enumerate(ast.parse(open(path).read(), path).body):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      continue
    if (i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)):
      continue
    targets = (node.targets if isinstance(node, ast.Assign)
               else [node.target] if isinstance(node, ast.AnnAssign) else [])
    if targets and all(isinstance(t, ast.Name) and t.id in {"__all__"} | extras
                       for t in targets):
      continue
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in extras:
      continue
    if (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
        and node.test.id in extras and not node.orelse
        and all(isinstance(b, (ast.Import, ast.ImportFrom)) for b in node.body)):
      continue
    bad.append(f"line {node.lineno}: {ast.unparse(node).splitlines()[0][:60]}")
  return bad


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=INIT_PENDING[n]))
    if n in INIT_PENDING else n for n in INITS])
def test_init_only_re_exports(name):
  bad = init_logic(MODULES[name], INIT_EXTRAS.get(name, frozenset()))
  assert not bad, (f"{MODULES[name]} holds logic (move it into a named module and "
                   f"re-export it): {bad}")


def test_init_check_catches_logic(tmp_path):
  f = tmp_path / "__init__.py"
  f.write_text('"""Doc."""\nfrom a import b\n__all__ = ["b"]\nX = 1\ndef f():\n  pass\n'
               'if TYPE_CHECKING:\n  import c\n')
  assert init_logic(str(f)) == ["line 4: X = 1", "line 5: def f():",
                                "line 7: if TYPE_CHECKING:"]
  assert init_logic(str(f), frozenset({"X", "f", "TYPE_CHECKING"})) == []


# ----------------------------------------------------------------------------- scripts

NOTEBOOKS = sorted(os.path.join(ROOT, "notebooks", f)
                   for f in os.listdir(os.path.join(ROOT, "notebooks")) if f.endswith(".py"))
EXPERIMENT = "crl_mmnar_jax.experiment"
EXPERIMENT_PUBLIC = {"train_and_evaluate", "train_and_evaluate_seeds", "train_and_evaluate_many"}


def experiment_internals(name: str, path: str) -> list[str]:
  """What a script takes from `crl_mmnar_jax.experiment` besides `train_and_evaluate`
  (the library's public homes: `data.splits.make_splits`, `workdir.config_hash`, ...)."""
  tree = ast.parse(open(path).read(), path)
  bad, aliases = [], set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      target = _resolve(node.module, node, name, path.endswith("__init__.py"))
      for a in node.names:
        if target == EXPERIMENT and a.name not in EXPERIMENT_PUBLIC:
          bad.append(f"from {EXPERIMENT} import {a.name} (line {node.lineno})")
        elif f"{target}.{a.name}" == EXPERIMENT:
          aliases.add(a.asname or a.name)
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name == EXPERIMENT:
          if a.asname:
            aliases.add(a.asname)
          else:
            bad.append(f"import {EXPERIMENT} (line {node.lineno}): import its public names")
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in aliases and node.attr not in EXPERIMENT_PUBLIC):
      bad.append(f"{EXPERIMENT}.{node.attr} (line {node.lineno})")
  return bad


def _scripts() -> dict[str, str]:
  out = {name: path for name, path in MODULES.items() if name.startswith("experiments")}
  for path in NOTEBOOKS:
    out["notebooks." + os.path.basename(path)[:-3]] = path
  return out


def test_scripts_use_only_the_public_entry_point_of_experiment():
  bad = {name: b for name, path in _scripts().items() if (b := experiment_internals(name, path))}
  assert not bad, (f"scripts reach into {EXPERIMENT} (import from the public homes "
                   f"instead): {bad}")


def test_experiment_check_catches_internals(tmp_path):
  f = tmp_path / "x.py"
  f.write_text("from crl_mmnar_jax.experiment import make_splits, train_and_evaluate\n"
               "from crl_mmnar_jax import experiment as ex\nex.config_hash\n"
               "ex.train_and_evaluate\n")
  assert experiment_internals("experiments.x", str(f)) == [
      "from crl_mmnar_jax.experiment import make_splits (line 1)",
      "crl_mmnar_jax.experiment.config_hash (line 3)"]


def test_notebooks_use_no_private_name():
  bad = {path: b for path in NOTEBOOKS
         if (b := _private_uses("notebooks." + os.path.basename(path)[:-3], path))}
  assert not bad, f"private names used by notebooks: {bad}"


# ----------------------------------------------------------------------------- one loop

STEP_NAMES = ("step_fn", "make_step", "make_train_step", "prefetched")
LOOP_MODULES = {"crl_mmnar_jax.train.step", "crl_mmnar_jax.train.members",
                "crl_mmnar_jax.train.loop", "experiments.bench.train"}   # bench times the step


def steps_taken_outside_the_loop(modules: dict[str, str]) -> list[str]:
  """Modules (other than the loop's own and the benchmark) that use a training step
  directly: a second training loop would have to."""
  bad = []
  for name, path in modules.items():
    if name in LOOP_MODULES:
      continue
    tree = ast.parse(open(path).read(), path)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    bad += [f"{name}: {s}" for s in STEP_NAMES if s in used]
  return bad


def test_one_training_loop():
  """Only `train/loop.py` runs training steps (through `train/members.py`)."""
  assert not steps_taken_outside_the_loop(MODULES)


def test_one_loop_check_catches_a_second_loop(tmp_path):
  path = tmp_path / "second.py"
  path.write_text("from crl_mmnar_jax.train import step\n"
                  "def fit(s, b):\n  return step.make_step(s, b)\n")
  assert steps_taken_outside_the_loop({"crl_mmnar_jax.second": str(path)}) == [
      "crl_mmnar_jax.second: make_step"]


# ----------------------------------------------------------------------------- lazy imports


def stdlib_imports_in_functions(path: str) -> list[str]:
  """Standard-library imports made inside a function: nothing is saved by delaying them,
  and they hide the module's dependencies (a function-level import is kept for heavy or
  optional packages only: JAX behind `--help`, LightGBM, matplotlib, torch)."""
  tree = ast.parse(open(path).read(), path)
  bad = []
  for fn in ast.walk(tree):
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    for node in ast.walk(fn):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
            a.name for a in node.names]
        bad += [f"line {node.lineno}: {n}" for n in names
                if n.split(".")[0] in sys.stdlib_module_names]
  return bad


def test_no_standard_library_import_inside_a_function():
  bad = {path: b for path in MODULES.values() if (b := stdlib_imports_in_functions(path))}
  assert not bad, bad


def test_lazy_import_check_catches_one(tmp_path):
  path = tmp_path / "m.py"
  path.write_text("import json\ndef f():\n  import os\n  import jax\n  return os, jax\n")
  assert stdlib_imports_in_functions(str(path)) == ["line 3: os"]
