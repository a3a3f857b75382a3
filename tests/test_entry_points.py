"""One convention for the experiment scripts and the configs: absl flags, `--help` that
lists what there is and exits 0, one-line errors, and a `tiny` preset in every config."""

import importlib
import os
import re
import subprocess
import sys

import pytest
from absl import flags

from crl_mmnar_jax.methods import RUN_METHODS
from experiments import bench, run, summarize, sweep, tune
from experiments.configs import CONFIG_DIR, available_configs, cli, resolve_config_argv
from experiments.studies import mmnar_injection, pattern_stability

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("run", "sweep", "studies.pattern_stability", "summarize",
           "studies.mmnar_injection", "bench", "tune", "predict")
CONFIGS = ("eicu", "injection", "meds", "mimic", "physionet2012", "synthetic", "tables",
           "yaib")


def _env():
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")


def _one_line_exit(excinfo) -> str:
  message = str(excinfo.value.code)
  assert message.startswith("error: ") and "\n" not in message, message
  return message


# ----------------------------------------------------------------------------- --help


@pytest.fixture(scope="module")
def helps():
  """`python -m experiments.X --help` of every script, started together."""
  procs = {s: subprocess.Popen([sys.executable, "-m", f"experiments.{s}", "--help"], cwd=ROOT,
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
           for s in SCRIPTS}
  out = {}
  for s, p in procs.items():
    stdout, stderr = p.communicate(timeout=300)
    out[s] = (p.returncode, stdout, stderr)
  return out


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_0_with_the_docstring_and_the_flags(helps, script):
  rc, out, err = helps[script]
  assert rc == 0, err[-2000:]
  module = importlib.import_module(f"experiments.{script}")
  assert out.startswith(module.__doc__.strip().splitlines()[0])
  assert "Flags:" in out
  fv = flags.FlagValues()
  module.define_flags(fv, ["help"])
  for name in fv:
    if fv[name].name == name and name not in ("flagfile", "undefok"):
      assert re.search(rf"--(\[no\])?{name}:", out), (script, name)


@pytest.mark.parametrize("script", ["run", "sweep"])
def test_help_of_run_and_sweep_lists_configs_and_methods(helps, script):
  _, out, _ = helps[script]
  configs = out[out.index("Configs ("):out.index("Methods (")]
  listed = re.findall(r"^  (\w+) ", configs, flags=re.M)
  assert listed == available_configs()
  assert set(CONFIGS) <= set(listed)
  methods = out[out.index("Methods ("):]
  for m in RUN_METHODS:
    assert re.search(rf"\b{m}\b", methods), m


def test_short_help_spellings_and_help_after_double_dash():
  for spelling in ("-h", "--helpshort", "-?"):
    assert cli.wants_help(["prog", "--workdir=/w", spelling])
  assert not cli.wants_help(["prog", "--", "--help"])
  assert not cli.wants_help(["prog", "--helpfull"])      # absl's own, every module's flags


def test_help_in_process_exits_0(capsys):
  with pytest.raises(SystemExit) as e:
    summarize.SCRIPT(["summarize", "--help"])
  assert e.value.code == 0
  assert "--task:" in capsys.readouterr().out


def test_importing_every_script_defines_no_global_flag():
  """Several scripts define --workdir or --config: each defines its flags only when run."""
  from experiments import predict
  for module in (bench, mmnar_injection, pattern_stability, run, summarize, sweep, tune,
                 predict):
    assert isinstance(module.SCRIPT, cli.Script)
  for name in ("workdir", "config", "only", "repeats", "dry_run", "task", "trials", "search"):
    assert name not in flags.FLAGS, name


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_has_a_tiny_preset(name):
  assert name in available_configs()
  module = importlib.import_module(f"experiments.configs.{name}")
  full, tiny = module.get_config(), module.get_config("tiny")
  assert tiny.train.progress is False
  assert tiny.train.epochs <= 3 and tiny.train.epochs < full.train.epochs
  assert tiny.model.dim <= 32
  assert tiny.eval.n_boot <= 100
  assert tiny.data.name == full.data.name
  assert ":tiny" in module.__doc__ or '"tiny"' in module.__doc__
  assert "python -m experiments." in module.__doc__


@pytest.mark.parametrize("name", CONFIGS)
def test_an_unknown_preset_is_one_line_naming_the_known_ones(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  with pytest.raises(ValueError) as e:
    module.get_config("nope")
  message = str(e.value)
  assert "\n" not in message
  known = "'tiny', 'tuned'" if name == "synthetic" else "'tiny'"
  assert message.startswith(f"unknown {name} preset 'nope' (known: {known})")


def test_synthetic_tiny_is_the_600_patient_smoke_run():
  from experiments.configs import synthetic
  c = synthetic.get_config("tiny")
  assert (c.data.n, c.train.epochs, c.train.batch_size, c.model.dim, c.eval.n_boot,
          c.rectifier.min_count) == (600, 3, 64, 32, 100, 5)


# ----------------------------------------------------------------------------- --config


def test_config_with_a_space_resolves_like_with_an_equals_sign():
  path = os.path.join(CONFIG_DIR, "synthetic.py")
  for argv in (["run", "--config", "synthetic:tiny", "--workdir=/w"],
               ["run", "--config=synthetic:tiny", "--workdir=/w"],
               ["run", "-config", "synthetic:tiny", "--workdir=/w"]):
    assert resolve_config_argv(argv) == ["run", f"--config={path}:tiny", "--workdir=/w"]
  assert resolve_config_argv(["run", "--config", "synthetic"]) == ["run", f"--config={path}"]
  # Overrides and what follows `--` are left alone.
  assert resolve_config_argv(["run", "--config.seed=1", "--", "--config", "x"]) == \
      ["run", "--config.seed=1", "--", "--config", "x"]


@pytest.mark.parametrize("argv,expected", [
    (["run", "--config"], "--config needs a value"),
    (["run", "--config", "--workdir=/w"], "--config needs a value"),
    (["run", "--config", "nope:tiny"], "unknown config 'nope'"),
])
def test_bad_config_argument_is_one_line(argv, expected):
  with pytest.raises(SystemExit) as e:
    resolve_config_argv(argv)
  assert expected in _one_line_exit(e)
  for name in CONFIGS:
    assert name in str(e.value.code)


def test_config_with_a_space_reaches_the_config_and_its_overrides():
  argv = resolve_config_argv(["run", "--config", "synthetic:tiny", "--workdir=/w",
                              "--config.train.epochs=5"])
  fv = flags.FlagValues()
  run.define_flags(fv, argv)
  assert fv(argv) == ["run"]
  assert (fv.config.data.n, fv.config.train.epochs, fv.workdir) == (600, 5, "/w")
  assert cli.command_line("experiments.run", ["run"], fv) == (
      "python -m experiments.run --config=synthetic:tiny --workdir=/w "
      "--config.train.epochs=5")


def test_run_with_a_space_and_a_bad_preset_fails_in_one_line(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.run", "--config", "synthetic:nope",
                         f"--workdir={tmp_path / 'w'}"], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      "error: ValueError: unknown synthetic preset 'nope' (known: 'tiny', 'tuned') "
      "(--help lists the flags)"]
  assert not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------- flags


@pytest.mark.parametrize("script,argv,expected", [
    (sweep, ["--workdir=/w", "--methods=logreg", "--seeds=abc"], "--seeds"),
    (sweep, ["--methods=logreg"], "--workdir must have a value"),
    (sweep, ["--workdir=/w", "--methods=logreg", "--dry-run"], "dry-run"),
    (sweep, ["--workdir=/w", "--methods=logreg", "stray"], "unexpected arguments ['stray']"),
    (mmnar_injection, ["--workdir=/w", "--dry-run"], "dry-run"),
    (mmnar_injection, ["--workdir=/w", "--config=injection:smoke", "--dry_run"],
     "unknown injection preset 'smoke' (known: 'tiny')"),
    (mmnar_injection, ["--workdir=/w", "--config.train.nope=1", "--dry_run"],
     "invalid config override"),
    (pattern_stability, ["/w", "--resample=bootstrap"], "--resample"),
    (pattern_stability, ["--repeats=3"], "at least one run directory"),
    (bench, ["--only=nope"], "unknown section(s) ['nope']"),
])
def test_bad_command_lines_are_one_line(script, argv, expected):
  with pytest.raises(SystemExit) as e:
    script.SCRIPT(["prog", *argv])
  assert expected in _one_line_exit(e)


def test_sweep_dry_run_prints_the_run_commands(capsys):
  assert sweep.SCRIPT(["sweep", "--config", "synthetic:tiny", "--workdir=/w", "--seeds=2",
                       "--methods=crl_mmnar,logreg", "--grid=loss.con=0,1",
                       "--set=train.epochs=2", "--set=eval.n_boot=0", "--dry_run"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 4 * 2
  assert lines[2].split()[1:] == [
      "-m", "experiments.run", "--config=synthetic:tiny", "--workdir=/w/runs/logreg/seed0",
      "--config.seed=0", "--config.method=logreg", "--config.train.epochs=2",
      "--config.eval.n_boot=0"]
  assert lines[-1].endswith("--config.eval.n_boot=0 --config.loss.con=1")


def test_injection_records_its_command_with_the_config_name():
  argv = resolve_config_argv(["prog", "--workdir=/w", "--config=injection:tiny",
                              "--strengths=0,2", "--config.train.epochs=2"])
  fv = flags.FlagValues()
  mmnar_injection.define_flags(fv, argv)
  rest = fv(argv)
  assert fv.config.model.dim == 16 and fv.config.train.epochs == 2
  assert cli.command_line("experiments.studies.mmnar_injection", rest, fv) == (
      "python -m experiments.studies.mmnar_injection --config=injection:tiny --workdir=/w "
      "--strengths=0,2 --config.train.epochs=2")


# ----------------------------------------------------------------------------- bench


def test_bench_keeps_its_names_and_every_child_call_exists():
  assert bench.PAPER_DIMS == (30, 1024, 768, 768)
  assert callable(bench.train_step_throughput)
  assert list(bench.SECTIONS) == ["train", "scaling", "rectifier", "featurize", "eicu",
                                  "mimic", "shards"]
  # Child processes evaluate strings such as "bench.shard_load_case(...)": every name
  # they call must exist in experiments.bench.
  called = set()
  folder = os.path.join(ROOT, "experiments", "bench")
  for f in os.listdir(folder):
    if f.endswith(".py"):
      called |= set(re.findall(r"\bbench\.(\w+)\(", open(os.path.join(folder, f)).read()))
  assert {"train_step_throughput", "featurize_case", "eicu_case", "load_case",
          "shard_load_case"} <= called
  for name in called:
    assert callable(getattr(bench, name)), name


def test_bench_child_imports_bench():
  from experiments.bench.common import child
  assert child("{'dims': list(bench.PAPER_DIMS)}") == {"dims": [30, 1024, 768, 768]}
