"""ci/lowest.txt (the versions ci/lowest_smoke.sh installs) agrees with the lower bounds
of pyproject.toml's core dependencies, so the smoke run in CI tests what pip may pick."""

from __future__ import annotations

import os
import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lowest() -> dict[str, Version]:
  pins = {}
  with open(os.path.join(ROOT, "ci", "lowest.txt")) as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      if not line:
        continue
      m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][0-9A-Za-z.]*)", line)
      assert m, f"ci/lowest.txt: {line!r} is not NAME==VERSION"
      name = canonicalize_name(m.group(1))
      assert name not in pins, f"ci/lowest.txt names {name} twice"
      pins[name] = Version(m.group(2))
  return pins


def _lower_bounds() -> dict[str, Version | None]:
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
  out = {}
  for dep in deps:
    req = Requirement(dep)
    lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==")]
    out[canonicalize_name(req.name)] = max(lows) if lows else None
  return out


def test_every_core_dependency_is_pinned_at_its_lower_bound():
  pins, bounds = _lowest(), _lower_bounds()
  for name, low in bounds.items():
    assert low is not None, f"pyproject.toml: {name} has no lower bound"
    assert name in pins, f"ci/lowest.txt lacks {name} (pyproject.toml: >={low})"
    assert pins[name] == low, (f"ci/lowest.txt pins {name}=={pins[name]} but pyproject.toml "
                               f"allows >={low}")


def test_lowest_pins_satisfy_pyproject():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    deps = [Requirement(d) for d in tomllib.load(f)["project"]["dependencies"]]
  pins = _lowest()
  for req in deps:
    assert req.specifier.contains(pins[canonicalize_name(req.name)]), req
  # jaxlib is not a direct dependency but must match jax exactly.
  assert pins.get("jaxlib") == pins["jax"]
