"""The row policy for imperfect rows of released data (docs/design.md, Real data).

Real releases hold rows that cannot be used: a line with an empty parameter name, a
value that does not parse, an id with no partner in another table. By default every
loader skips such a row and counts it per file and per problem (`RowProblems`), puts
the counts into its info (``info["skipped"]``, which the runner writes to
``data_info.json``) and logs one summary line; rows or records whose loss changes the
cohort are also counted in the loader's own attrition. ``--config.data.strict=True``
turns the first problem into the `DataError` naming the file (and line) instead.
`CsvTables` applies the policy to values of typed CSV scans that do not parse.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import polars as pl
from absl import logging

from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.io import ParseError, count_unparsable, scan_csv

T = TypeVar("T")


class RowProblems:
  """The policy for imperfect rows of released data (docs/design.md, Real data).

  By default (``strict=False``) a row that cannot be used (malformed, an unknown name, a
  value that does not parse or cannot be true, an orphan id) is skipped and counted per
  file and per problem (`found`); the loader puts `report` into its info (the runner
  writes it to ``data_info.json``) and `log` prints one summary line. ``strict=True``
  raises the first problem as a `DataError` naming the file (and the line where the
  format has lines) instead.
  """

  def __init__(self, strict: bool = False):
    self.strict = bool(strict)
    self.counts: dict[str, dict[str, int]] = {}

  def found(self, file: str, problem: str, n: int, error: str | Callable[[], str],
            refuse: bool = True) -> None:
    """`n` rows of `file` have `problem`. Strict (and `refuse`): raises
    ``DataError(error)`` (a string, or a function making it). Otherwise counted."""
    if n <= 0:
      return
    if self.strict and refuse:
      raise DataError(error() if callable(error) else error)
    per = self.counts.setdefault(str(file), {})
    per[problem] = per.get(problem, 0) + int(n)

  def merge(self, counts: dict[str, dict[str, int]]) -> None:
    """Adds counts of the form of `counts` (e.g. a cached stage's, from its report)."""
    for file, per in counts.items():
      for problem, n in per.items():
        mine = self.counts.setdefault(file, {})
        mine[problem] = mine.get(problem, 0) + int(n)

  def total(self) -> int:
    return sum(n for per in self.counts.values() for n in per.values())

  def report(self) -> dict:
    """{strict, n_rows, by_problem {problem: n}, by_file {file: {problem: n}}}."""
    by_problem: dict[str, int] = {}
    for per in self.counts.values():
      for p, n in per.items():
        by_problem[p] = by_problem.get(p, 0) + n
    return {"strict": self.strict, "n_rows": self.total(),
            "by_problem": dict(sorted(by_problem.items())),
            "by_file": {f: dict(sorted(p.items())) for f, p in sorted(self.counts.items())}}

  def log(self, source: str) -> None:
    """One console line summarising what was skipped (nothing when nothing was)."""
    if not self.counts:
      return
    top = sorted(self.report()["by_problem"].items(), key=lambda kv: -kv[1])[:5]
    logging.warning("%s: skipped %d imperfect row(s) in %d file(s), e.g. %s (counts per file "
                    "and problem in the info 'skipped'; data.strict=True refuses them)",
                    source, self.total(), len(self.counts), dict(top))


class CsvTables:
  """Typed scans of a database's CSV tables under a `RowProblems` policy.

  `scan` is `scan_csv`; `run(compute)` runs a stage. When a value of some table does
  not parse (`ParseError`): strict, the error stands; otherwise the unparsable values
  of that table are counted (`count_unparsable`, one more pass over it) and the stage
  runs again with that table read leniently (such a value reads as null: its row is
  dropped where the value is needed). Clean tables cost nothing extra.
  """

  def __init__(self, problems: RowProblems):
    self.problems = problems
    self._columns: dict[str, dict[str, pl.DataType]] = {}
    self._lenient: set[str] = set()

  def scan(self, path: str, columns: dict[str, pl.DataType], what: str,
           name_empty_file: bool = True) -> pl.LazyFrame:
    self._columns.setdefault(path, {}).update(columns)
    return scan_csv(path, columns, what, name_empty_file=name_empty_file,
                    lenient=path in self._lenient)

  def run(self, compute: Callable[[], T]) -> T:
    while True:
      before = {f: dict(p) for f, p in self.problems.counts.items()}
      try:
        return compute()
      except ParseError as e:
        self.problems.counts = before           # the failed attempt's counts are void
        if self.problems.strict or e.path in self._lenient or e.path not in self._columns:
          raise
        types = self._columns[e.path]
        counts = count_unparsable(e.path, types)
        for col, n in counts.items():
          self.problems.found(e.path, f"{col}: value does not parse as {types[col]}", n,
                              str(e))
        if not counts:
          raise
        self._lenient.add(e.path)
