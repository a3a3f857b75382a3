"""The command-line plumbing every experiment script shares (absl flags).

A script defines its flags in `define_flags(fv, argv)`, on the `FlagValues` it is given
and never at import (so that one process can import several scripts, each with its own
`--workdir`), and its `main(argv, fv)`: absl's main, `argv` the positional arguments
(program name first), `fv` the parsed flags. It ends with

  SCRIPT = cli.Script(main, define_flags, __doc__)

  if __name__ == "__main__":
    SCRIPT.run()

`SCRIPT.run()` is the command line: the flags go on absl's `flags.FLAGS` and
`absl.app.run` calls `main`. `SCRIPT(argv)` parses `argv` into a fresh `FlagValues` and
returns what `main` returns, in this process (tests). Either way:

* `--help` (also `-help`, `--helpshort`, `-h`, `-?`) prints the script's docstring, its
  flags and its extra help (run and sweep: the configs and the methods) and exits with
  status 0 (absl alone exits with 1); `--helpfull` is absl's (every module's flags);
* a bad flag or flag value stops with one line, `error: ...`;
* with `config_file=True` (run, mmnar_injection, tune), `--config=NAME[:PRESET]` or
  `--config NAME[:PRESET]` names a file of experiments/configs/ (`resolve_config_argv`)
  and a bad `--config.a.b=value` override or preset stops with one line too.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
import textwrap
from typing import Any, Callable, NoReturn, Sequence

from absl import app, flags

from experiments.configs import CONFIG_DIR, available_configs, resolve_config_argv

HELP_FLAGS = ("--help", "-help", "--helpshort", "-helpshort", "-h", "-?")

Main = Callable[[list[str], flags.FlagValues], Any]
DefineFlags = Callable[[flags.FlagValues, Sequence[str]], None]


def wants_help(argv: Sequence[str]) -> bool:
  """Whether a help flag comes before any `--` (after which arguments are positional)."""
  for a in argv[1:]:
    if a == "--":
      return False
    if a in HELP_FLAGS:
      return True
  return False


def no_positional(argv: Sequence[str]) -> None:
  """Exits with one line if absl left positional arguments (program name aside)."""
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {list(argv[1:])} (--help lists the flags)")


def command_line(module: str, argv: Sequence[str], fv: flags.FlagValues) -> str:
  """`python -m MODULE`, the positional arguments and every flag given, as absl
  serialises them (a config file as its NAME[:PRESET]): the command outputs record."""
  given = []
  for name in fv:
    flag = fv[name]
    if flag.present and flag.name == name:      # once per flag (not per short name)
      text = flag.serialize()
      prefix = f"--{name}={CONFIG_DIR}{os.sep}"
      if text.startswith(prefix):               # --config=/.../configs/x.py:tiny
        stem, sep, rest = text[len(prefix):].partition(":")
        text = f"--{name}={stem.removesuffix('.py')}{sep}{rest}"
      given.append(text)
  return " ".join(["python", "-m", module, *argv[1:], *given])


def define_compile_cache(fv: flags.FlagValues) -> None:
  """`--compile_cache` (crl_mmnar_jax/compile_cache.py) on `fv`."""
  flags.DEFINE_string(
      "compile_cache", "auto", "Persistent XLA compilation cache: 'auto' "
      "($CRL_MMNAR_COMPILE_CACHE, else ~/.cache/crl_mmnar_jax/xla), a folder, or 'off'. "
      "A rerun, every seed and every trial read the programs compiled before.",
      flag_values=fv)


def use_compile_cache(fv: flags.FlagValues) -> str | None:
  """Turns the cache `--compile_cache` names on (before anything compiles); a folder that
  cannot be created is one line."""
  from crl_mmnar_jax import compile_cache  # JAX: not for --help
  try:
    return compile_cache.enable(fv.compile_cache)
  except ValueError as e:
    sys.exit(f"error: {e}")


def compile_cache_line(folder: str | None) -> str:
  """What the cache did in this process, for the script's last lines."""
  from crl_mmnar_jax import compile_cache
  if folder is None:
    return "compile cache: off"
  done = compile_cache.counts()
  return (f"compile cache: {done['read']} programs read, {done['written']} compiled and "
          f"written ({folder})")


def flag_help(fv: flags.FlagValues) -> str:
  """The flags of `fv`, one entry each (absl's text without the module headers)."""
  text = fv.get_help(prefix="", include_special_flags=False)
  lines = [line for line in text.splitlines() if line.startswith(" ")]
  return textwrap.indent(textwrap.dedent("\n".join(lines)), "  ")


def configs_and_methods() -> str:
  """The extra help of run and sweep: every config (first docstring line) and method."""
  # Imported here: the method registry imports JAX (seconds), which `--help` of the
  # light scripts (summarize, compare) never reaches.
  from crl_mmnar_jax.methods import RUN_METHODS
  lines = textwrap.wrap(
      "Configs (--config=NAME, or NAME:tiny for the smoke-run preset every config has): "
      "the files of experiments/configs/, whose docstrings say how to run them and what "
      "to expect.", width=88)
  for name in available_configs():
    doc = importlib.import_module(f"experiments.configs.{name}").__doc__ or ""
    lines.append(f"  {name:14s} {doc.strip().splitlines()[0] if doc.strip() else ''}")
  lines += ["", "Methods (--config.method=NAME; sweep: --methods=NAME,NAME,...):",
            textwrap.fill(", ".join(RUN_METHODS), width=88, initial_indent="  ",
                          subsequent_indent="  ")]
  return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Script:
  """One entry point: its main, its flags, its docstring (the head of `--help`)."""

  main: Main
  define_flags: DefineFlags
  doc: str
  config_file: bool = False                   # --config names a file of configs/
  extra_help: Callable[[], str] | None = None

  def help(self) -> str:
    fv = flags.FlagValues()
    self.define_flags(fv, ["help"])
    text = [self.doc.strip(), "", "Flags:", flag_help(fv)]
    if self.extra_help is not None:
      text += ["", self.extra_help()]
    return "\n".join(text)

  def _argv(self, argv: Sequence[str]) -> list[str]:
    argv = list(argv)
    if wants_help(argv):
      print(self.help())
      sys.exit(0)
    return resolve_config_argv(argv) if self.config_file else argv

  def _define_and_parse(self, argv: list[str], fv: flags.FlagValues) -> list[str]:
    """The script's flags on `fv`, then absl's parsing of `argv` into `fv` (a config
    flag reads the config and its overrides in either step); a mistake is one line."""
    try:
      self.define_flags(fv, argv)
      return fv(argv)
    except flags.Error as e:
      lines = [line.strip() for line in str(e).splitlines() if line.strip()]
      # An exception inside a config's get_config comes with its traceback: keep the
      # last line (e.g. "ValueError: unknown synthetic preset 'nope' (known: 'tiny')").
      message = lines[-1] if "Traceback" in str(e) else " ".join(lines)
      sys.exit(f"error: {message} (--help lists the flags)")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      if not self.config_file:
        raise
      overrides = [a for a in argv if a.startswith("--config.")]
      # A KeyError's message is "'name'\nDid you mean ...": one line naming the field.
      if isinstance(e, AttributeError) and e.args and isinstance(e.args[0], KeyError):
        e = e.args[0]
      lines = [line.strip() for line in str(e.args[0] if e.args else e).splitlines()]
      if isinstance(e, KeyError) and lines and re.fullmatch(r"'[^']*'", lines[0]):
        name = lines[0].strip("'\"")
        overrides = [a for a in overrides
                     if name in a.partition("=")[0].split(".")[1:]] or overrides
        what = f"unknown field {lines[0]}" + (f" ({' '.join(lines[1:])})" if lines[1:] else "")
      else:
        what = " ".join(lines) or repr(e)
      sys.exit(f"error: invalid config override {' '.join(overrides)}: {what}; every "
               f"--config.a.b=value must name an existing field of the config with a "
               f"value of its type")

  def __call__(self, argv: Sequence[str]) -> Any:
    """Runs the script in this process on `argv` (program name first) with a fresh
    `FlagValues`; returns what `main` returns."""
    argv = self._argv(argv)
    fv = flags.FlagValues()
    return self.main(self._define_and_parse(argv, fv), fv)

  def run(self, argv: Sequence[str] | None = None) -> NoReturn:
    """The command line: `absl.app.run(main)` with the flags on `flags.FLAGS`."""
    argv = self._argv(sys.argv if argv is None else argv)

    def main(rest):   # an int is an exit status; other results (for tests) are not
      result = self.main(rest, flags.FLAGS)
      return result if isinstance(result, int) and not isinstance(result, bool) else None

    app.run(main, argv=argv,
            flags_parser=lambda a: self._define_and_parse(a, flags.FLAGS))
    raise AssertionError("absl.app.run returned")   # it exits
