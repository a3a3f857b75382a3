"""One config schema (`crl_mmnar_jax.config`): every field the code reads is declared there,
and every default that mirrors a field (the command line's configs, library dataclasses,
function signatures) equals the schema's.

The reads are found with `ast`: attribute chains and string subscripts on a config
(`config.model.dim`, `member_config.seed`, `self.config.train.x`, `p.config.seed`,
`config.data["dir"]`; `c.x.y` in experiments/configs/), on a section bound to a name
(`t = config.train`, `data, model = config.data, config.model`) and on a parameter that
some call passes a config or a section (`gbt_nan_missing(..., config.baseline, ...)`
makes `b.gbt_num_leaves` in its body a read of `baseline.gbt_num_leaves`).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import os
import shutil
import subprocess
import sys

import pytest

from crl_mmnar_jax import config as schema
from crl_mmnar_jax.config import paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("crl_mmnar_jax", "experiments")
CONFIGS = ("synthetic", "physionet2012", "yaib", "tables", "mimic", "eicu", "injection",
           "meds")

SECTIONS = frozenset(n.split(".")[0] for n in schema.declared_names() if "." in n)
ROOT_NAMES = frozenset({"config", "member_config", "base_config"})
# ConfigDict's own methods: never field names.
METHODS = frozenset({
    "get", "items", "keys", "values", "update", "to_dict", "to_json", "to_json_best_effort",
    "to_yaml", "lock", "unlock", "unlocked", "ignore_type", "copy_and_resolve_references",
    "get_ref", "is_locked", "is_type_safe", "convert_dict", "get_type"})
# Files allowed to read config fields through `.get(key, default)`: none (every config
# carries every field of the schema, so a fallback could only disagree with it).
FALLBACKS_LEFT: frozenset[str] = frozenset()


# ----------------------------------------------------------------------------- the scanner


@dataclasses.dataclass
class Reads:
  fields: dict[str, list[str]] = dataclasses.field(default_factory=dict)     # name -> where
  fallbacks: list[str] = dataclasses.field(default_factory=list)             # where

  def add(self, name: str, where: str) -> None:
    self.fields.setdefault(name, []).append(where)


def _functions(trees: dict[str, ast.Module]) -> dict[str, list[ast.FunctionDef]]:
  out: dict[str, list] = {}
  for tree in trees.values():
    for n in ast.walk(tree):
      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
        out.setdefault(n.name, []).append(n)
  return out


def _own_nodes(scope: ast.AST) -> tuple[list[ast.AST], list[ast.AST]]:
  """The nodes of `scope` outside nested functions and classes, and those nested ones."""
  own, nested, todo = [], [], list(ast.iter_child_nodes(scope))
  while todo:
    n = todo.pop()
    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      nested.append(n)
      own.extend(n.decorator_list)
      continue
    own.append(n)
    todo.extend(ast.iter_child_nodes(n))
  return own, nested


class _Scanner:
  """Config reads of a set of files; `params[function][parameter]` holds "" (a whole
  config) or a section name, learnt from the calls (run it until nothing changes)."""

  def __init__(self, trees: dict[str, ast.Module]):
    self.trees = trees
    self.functions = _functions(trees)
    self.params: dict[str, dict[str, str]] = {}

  def run(self) -> Reads:
    while True:
      before = {k: dict(v) for k, v in self.params.items()}
      reads = Reads()
      for path, tree in self.trees.items():
        modules = {a.asname or a.name.split(".")[0] for n in ast.walk(tree)
                   if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        roots = ROOT_NAMES | ({"c"} if path.startswith("experiments/configs/") else set())
        self._scope(tree, {r: "" for r in roots}, path, modules, reads)
      if self.params == before:
        return reads

  def _kind(self, node: ast.AST, aliases: dict[str, str], modules: set[str]) -> str | None:
    """"" for a whole config, a section name for a section, None for anything else."""
    if isinstance(node, ast.Name):
      return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
      if node.attr in ROOT_NAMES and isinstance(node.value, ast.Name) and \
          node.value.id not in modules:                      # self.config, p.config
        return ""
      if node.attr in SECTIONS and self._kind(node.value, aliases, modules) == "":
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
      if node.slice.value in SECTIONS and self._kind(node.value, aliases, modules) == "":
        return node.slice.value
    return None

  def _scope(self, scope: ast.AST, aliases: dict[str, str], path: str, modules: set[str],
             reads: Reads) -> None:
    aliases = dict(aliases)
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
      a = scope.args
      for p in a.posonlyargs + a.args + a.kwonlyargs:
        if aliases.get(p.arg) != "":            # a root name (`config`) stays a config
          aliases.pop(p.arg, None)
      aliases.update(self.params.get(scope.name, {}))
    own, nested = _own_nodes(scope)
    for _ in range(2):                          # an alias of an alias
      for n in own:
        if isinstance(n, ast.Assign) and len(n.targets) == 1:
          t, v = n.targets[0], n.value
          pairs = (zip(t.elts, v.elts) if isinstance(t, ast.Tuple) and isinstance(v, ast.Tuple)
                   else [(t, v)])
          for target, value in pairs:
            kind = self._kind(value, aliases, modules)
            if isinstance(target, ast.Name) and kind is not None:
              aliases[target.id] = kind
    for n in own:
      self._node(n, aliases, path, modules, reads)
    for n in nested:
      self._scope(n, aliases, path, modules, reads)

  def _name(self, kind: str, key: str) -> str:
    return f"{kind}.{key}" if kind else key

  def _node(self, n: ast.AST, aliases: dict[str, str], path: str, modules: set[str],
            reads: Reads) -> None:
    where = f"{path}:{getattr(n, 'lineno', '?')}"
    if isinstance(n, ast.Attribute):
      kind = self._kind(n.value, aliases, modules)
      if kind is not None and n.attr not in METHODS and not (kind == "" and n.attr in SECTIONS):
        reads.add(self._name(kind, n.attr), where)
    elif isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) \
        and isinstance(n.slice.value, str):
      kind = self._kind(n.value, aliases, modules)
      if kind is not None and not (kind == "" and n.slice.value in SECTIONS):
        reads.add(self._name(kind, n.slice.value), where)
    elif isinstance(n, ast.Call):
      f = n.func
      if isinstance(f, ast.Attribute) and f.attr in ("get", "update"):
        kind = self._kind(f.value, aliases, modules)
        if kind is not None:
          if f.attr == "get" and n.args and isinstance(n.args[0], ast.Constant):
            reads.add(self._name(kind, n.args[0].value), where)
            reads.fallbacks.append(f"{where}: .get({n.args[0].value!r}, ...)")
          for k in n.keywords if f.attr == "update" else ():
            if k.arg is not None:
              reads.add(self._name(kind, k.arg), where)
      if isinstance(f, ast.Name) and f.id == "getattr" and len(n.args) >= 2:
        kind = self._kind(n.args[0], aliases, modules)
        if kind is not None and isinstance(n.args[1], ast.Constant):
          reads.add(self._name(kind, n.args[1].value), where)
          if len(n.args) > 2:
            reads.fallbacks.append(f"{where}: getattr(..., {n.args[1].value!r}, default)")
      self._learn(n, aliases, modules)

  def _learn(self, call: ast.Call, aliases: dict[str, str], modules: set[str]) -> None:
    """Parameters of the called function(s) that receive a config or a section."""
    f = call.func
    callee = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    if callee is None or callee not in self.functions:
      return
    args = [(i, self._kind(a, aliases, modules)) for i, a in enumerate(call.args)]
    kws = [(k.arg, self._kind(k.value, aliases, modules)) for k in call.keywords if k.arg]
    for fn in self.functions[callee]:
      params = [p.arg for p in fn.args.posonlyargs + fn.args.args]
      if params and params[0] in ("self", "cls") and isinstance(f, ast.Attribute):
        params = params[1:]
      names = {p.arg for p in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs}
      learnt = [(params[i], k) for i, k in args if k is not None and i < len(params)]
      learnt += [(name, k) for name, k in kws if k is not None and name in names]
      for name, kind in learnt:
        if name not in ROOT_NAMES:
          self.params.setdefault(fn.name, {})[name] = kind


def _trees() -> dict[str, ast.Module]:
  out = {}
  for package in PACKAGES:
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      for f in sorted(files):
        if f.endswith(".py"):
          path = os.path.join(folder, f)
          rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
          out[rel] = ast.parse(open(path).read(), rel)
  return out


def scan(trees: dict[str, ast.Module] | None = None) -> Reads:
  return _Scanner(_trees() if trees is None else trees).run()


@pytest.fixture(scope="module")
def reads() -> Reads:
  return scan()


def test_the_scanner_sees_chains_aliases_subscripts_and_parameters():
  code = '''
def f(config, member):
  t = config.train
  data, model = config.data, config.model
  x = config.model.dim + t.epochs + data.n + model["proj_dim"] + config.seed
  g(config.baseline, y=config.rectifier)
  member.config.eval.n_boot
  config.loss.get("rec_drops", 0)
  config.eval.update(plots=False)
  config.to_dict()
  return config.data.nope

def g(b, y=None):
  def inner():
    return y.rule
  return b.gbt_num_leaves + inner()
'''
  got = scan({"crl_mmnar_jax/x.py": ast.parse(code)})
  assert set(got.fields) == {
      "train.epochs", "data.n", "model.dim", "model.proj_dim", "seed", "eval.n_boot",
      "loss.rec_drops", "eval.plots", "data.nope", "baseline.gbt_num_leaves", "rectifier.rule"}
  assert got.fallbacks == ["crl_mmnar_jax/x.py:8: .get('rec_drops', ...)"]


def test_every_field_the_code_reads_is_declared(reads):
  assert len(reads.fields) > 80         # the scanner sees the code
  declared = schema.declared_names()
  missing = {name: where[:3] for name, where in reads.fields.items() if name not in declared}
  assert not missing, f"config fields read but not declared in crl_mmnar_jax/config: {missing}"


def test_no_config_fallback_defaults_outside_the_files_still_listed(reads):
  bad = [w for w in reads.fallbacks if w.split(":")[0] not in FALLBACKS_LEFT]
  assert not bad, f"config fields read with a fallback default (read them directly): {bad}"


# ----------------------------------------------------------------------------- the schema


def _all_fields():
  return [(source, f) for source in ("", *schema.SOURCES) for f in
          (schema.FIELDS if source == "" else schema.SOURCES[source])]


@pytest.mark.parametrize("source,field", _all_fields(), ids=lambda x: getattr(x, "name", x))
def test_each_declaration_is_complete_and_its_default_allowed(source, field):
  assert field.doc and "\n" not in field.doc
  assert field.type in (int, float, bool, str, tuple)
  assert field.allows(field.default_value()), field
  assert field.name.count(".") <= 1 and (source == "" or field.name.startswith("data."))


def test_each_name_is_declared_once_per_config():
  for source in ("", *schema.SOURCES):
    names = [f.name for f in schema.fields_of(source)]
    assert len(names) == len(set(names)), source


def test_unknown_source_is_refused_in_one_line():
  with pytest.raises(ValueError, match=r"^unknown data source 'nope' \(known: synthetic"):
    schema.default_config("nope")


def test_the_command_line_configs_start_from_the_schema():
  from experiments.configs import base
  assert base.get_base_config().to_dict() == schema.default_config().to_dict()
  for name in CONFIGS:
    config = importlib.import_module(f"experiments.configs.{name}").get_config()
    source = config.data.name
    assert set(_flat(config.to_dict())) == {f.name for f in schema.fields_of(source)}, name


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def _defaults(fn) -> dict:
  return {k: p.default for k, p in inspect.signature(fn).parameters.items()
          if p.default is not inspect.Parameter.empty}


def _check(what: str, got: dict, fields: dict[str, str], source: str = "",
           convert=lambda name, v: v) -> None:
  """got[param] == the schema default of fields[param], for every listed param."""
  bad = {p: (got[p], convert(name, schema.field(name, source).default_value()))
         for p, name in fields.items()
         if got[p] != convert(name, schema.field(name, source).default_value())}
  assert not bad, f"{what}: defaults differ from the schema's (got, schema): {bad}"


def test_model_config_and_loss_weights_defaults_equal_the_schema():
  from crl_mmnar_jax.losses import LossWeights
  from crl_mmnar_jax.model import ModelConfig
  model = {f.name: f.default for f in dataclasses.fields(ModelConfig)
           if f.default is not dataclasses.MISSING}
  _check("ModelConfig", model, {k: f"model.{k}" for k in model if k != "rec_drops"})
  _check("ModelConfig", model, {"rec_drops": "loss.rec_drops"})   # a loss setting
  weights = {f.name: f.default for f in dataclasses.fields(LossWeights)}
  _check("LossWeights", weights, {k: f"loss.{k}" for k in weights})


def test_embedding_standardize_and_baseline_defaults_equal_the_schema():
  from crl_mmnar_jax.data import standardize
  from crl_mmnar_jax.embeddings import KINDS, EmbeddingSpec
  from crl_mmnar_jax.methods import direct
  spec = {f.name: f.default for f in dataclasses.fields(EmbeddingSpec)}
  _check("EmbeddingSpec", spec, {"dim": "model.num_embedding_dim",
                                 "frequency_scale": "model.frequency_scale"})
  _check("standardize", _defaults(standardize.standardize),
         {"preprocess": "data.preprocess", "extreme_factor": "data.extreme_factor"})
  _check("logreg_mean_impute", _defaults(direct.logreg_mean_impute),
         {"l2_grid": "baseline.logreg_l2_grid"})
  assert schema.field("model.num_embedding").choices == KINDS
  assert schema.field("data.preprocess").choices == standardize.PREPROCESS


def test_rectifier_fit_defaults_equal_the_schema():
  from crl_mmnar_jax import rectifier
  from crl_mmnar_jax.rectifier import select
  _check("rectifier.fit", _defaults(rectifier.fit), {
      "seed": "seed", **{k: f"rectifier.{k}" for k in (
          "n_folds", "kappa_grid", "lambda_grid", "z", "min_count", "shrinkage", "rule",
          "rule_z", "auroc_guard")}})
  assert set(schema.field("rectifier.rule").choices) == set(select.RULES)


def _csv(name, value):
  return tuple(s for s in value.split(",") if s) if name.endswith(("tasks", "databases")) \
      else None if name.endswith("cache_dir") and value == "" else value


def test_data_source_defaults_equal_the_schema():
  from crl_mmnar_jax.data import text_embed
  from crl_mmnar_jax.data.sources import eicu, mimic, physionet2012, synthetic, yaib
  _check("make_synthetic", _defaults(synthetic.make_synthetic),
         {k: f"data.{k}" for k in ("n", "n_modalities", "n_tasks", "mechanism", "prevalence",
                                   "seed")}, "synthetic")
  assert schema.field("data.mechanism", "synthetic").choices == synthetic.MECHANISMS
  loaders = {"physionet2012": (physionet2012.load_physionet2012, ("tasks", "window_hours",
                                                                  "strict")),
             "yaib": (yaib.load_yaib, ("databases", "task", "window_hours", "strict")),
             "eicu": (eicu.load_eicu, ("tasks", "window_hours", "cache_dir", "strict")),
             "mimic": (mimic.load_mimic, ("version", "tasks", "cache_dir", "text_encoder",
                                          "text_model_path", "cxr_embeddings", "cxr_metadata",
                                          "anchor_years", "strict", "text_device"))}
  for source, (loader, params) in loaders.items():
    _check(loader.__name__, _defaults(loader), {p: f"data.{p}" for p in params}, source,
           convert=_csv)
  assert schema.field("data.text_encoder", "mimic").choices == text_embed.ENCODERS


# ----------------------------------------------------------------------------- shared data


def test_shared_data_comes_from_the_environment_first(tmp_path, monkeypatch):
  monkeypatch.setenv(schema.DATA_ENV, str(tmp_path))
  assert schema.shared_data_dir() == str(tmp_path)
  assert schema.default_config("physionet2012").data.dir == str(tmp_path / "physionet2012")
  assert schema.default_config("mimic").data.demo_meds == str(
      tmp_path / "mimic-iv-demo-meds" / "events.parquet")


def test_shared_data_next_to_the_current_repository_only_where_it_exists(tmp_path,
                                                                         monkeypatch):
  monkeypatch.delenv(schema.DATA_ENV, raising=False)
  monkeypatch.setattr(paths, "checkout_root", lambda: None)     # as if installed
  repo = tmp_path / "repo"
  (repo / "sub").mkdir(parents=True)
  (repo / "pyproject.toml").write_text("")
  monkeypatch.chdir(repo / "sub")
  assert schema.shared_data_dir() is None                       # no ../shared/data
  assert schema.default_config("physionet2012").data.dir == ""
  assert schema.default_config("yaib").data.dir == ""
  assert schema.default_config("mimic").data.demo_meds == ""
  (tmp_path / "shared" / "data").mkdir(parents=True)
  assert schema.shared_data_dir() == str(tmp_path / "shared" / "data")
  assert schema.default_config("yaib").data.dir == str(tmp_path / "shared" / "data" /
                                                       "yaib-demo")


def test_an_installed_copy_imports_and_builds_from_any_directory(tmp_path):
  """The config package alone, copied outside any checkout, run from elsewhere."""
  code = ("import os, sys; sys.path.insert(0, sys.argv[1]); "
          "from crl_mmnar_jax.config import default_config, shared_data_dir; "
          "c = default_config('physionet2012'); "
          "print(repr(shared_data_dir()), repr(c.data.dir), c.model.dim)")
  site = tmp_path / "site"
  (site / "crl_mmnar_jax").mkdir(parents=True)
  (site / "crl_mmnar_jax" / "__init__.py").write_text("")
  shutil.copytree(os.path.join(ROOT, "crl_mmnar_jax", "config"),
                  site / "crl_mmnar_jax" / "config")
  env = {k: v for k, v in os.environ.items() if k != schema.DATA_ENV}
  env.pop("PYTHONPATH", None)
  out = subprocess.run([sys.executable, "-c", code, str(site)], cwd=str(tmp_path),
                       capture_output=True, text=True, env=env, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == ["None", "''", "128"]
