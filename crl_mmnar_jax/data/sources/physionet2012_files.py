"""Reading the PhysioNet 2012 challenge files line by line under the row policy.

`parse_records` reads every record file (``Time,Parameter,Value`` lines) in one polars
pass, `record_ids` checks each file's RecordID, `parse_outcomes` and `match_outcomes`
read an ``Outcomes-<set>.txt`` file. What the loader makes of them is described in
`crl_mmnar_jax.data.sources.physionet2012`.

Every imperfect line goes through `RowProblems` (`data.row_policy`): by default it is
skipped and counted per file and per problem; ``strict`` raises ``path:line: problem``
at the first one. Messages name the file, the line and the column or parameter, never a
value or a RecordID (beyond the record's file name). A record that cannot be used at all (no or a wrong RecordID, a
RecordID already read, no outcome line) is dropped, and counted as such.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import polars as pl

from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.row_policy import RowProblems

HEADER = "Time,Parameter,Value"
OUTCOME_COLUMNS = ("RecordID", "Length_of_stay", "In-hospital_death")
TIME_PATTERN = r"^(\d{2,3}):([0-5]\d)$"
NOT_UTF8 = "\ufffd"


# ----------------------------------------------------------------------------- lines


def read_lines(paths: Sequence[str], problems: RowProblems) -> pl.DataFrame:
  """All lines of all files: columns file (index into paths), line (1-based), text.

  Files are read as bytes in Python (one read per file), joined, decoded once and split
  into lines in a single polars call; trailing whitespace (including '\\r') is stripped.
  An empty file has no line (its record is then dropped for lacking a RecordID); bytes
  that are not UTF-8 decode to U+FFFD and their line is skipped by `parse_records`.
  """
  raws, n_lines = [], []
  for path in paths:
    with open(path, "rb") as f:
      raw = f.read()
    if not raw.strip():
      problems.found(path, "empty file", 1, f"{path}:1: empty file (expected a header line)")
      raw = b""
    elif not raw.endswith(b"\n"):
      raw += b"\n"
    raws.append(raw)
    n_lines.append(raw.count(b"\n"))
  big = b"".join(raws)
  try:
    text = big.decode("utf-8")
  except UnicodeDecodeError as e:
    if problems.strict:
      ends = np.cumsum([len(r) for r in raws])
      k = int(np.searchsorted(ends, e.start, side="right"))
      line = big[ends[k] - len(raws[k]):e.start].count(b"\n") + 1
      raise DataError(f"{paths[k]}:{line}: not UTF-8 text ({e.reason})") from None
    text = big.decode("utf-8", errors="replace")
  del raws, big
  n_L = np.asarray(n_lines, dtype=np.int64)
  total = int(n_L.sum())
  lines = pl.Series("text", [text]).str.split("\n").explode().head(total)
  del text
  starts = np.repeat(np.cumsum(n_L) - n_L, n_L)
  return pl.DataFrame({
      "file": np.repeat(np.arange(len(paths), dtype=np.int32), n_L),
      "line": (np.arange(total, dtype=np.int64) - starts + 1),
      "text": lines.str.strip_chars_end(),
  }, schema={"file": pl.Int32, "line": pl.Int64, "text": pl.String})


def skip_if(df: pl.DataFrame, bad: pl.Expr, paths: Sequence[str], problems: RowProblems,
            problem: str | pl.Expr, describe: Callable[[dict], str]) -> pl.DataFrame:
  """`df` without the rows where `bad` holds, each counted per file under `problem` (a
  string, or an expression giving it per row). Strict: raises DataError at the first
  such row, ``'path:line: describe(row)'``."""
  flag = bad.fill_null(True)
  hits = df.filter(flag)
  if not len(hits):
    return df
  if problems.strict:
    row = hits.sort("file", "line").row(0, named=True)
    more = f" ({len(hits)} such lines in all)" if len(hits) > 1 else ""
    raise DataError(f"{paths[row['file']]}:{row['line']}: {describe(row)}{more}")
  key = problem if isinstance(problem, pl.Expr) else pl.lit(problem)
  for file, name, n in hits.group_by("file", key.alias("_problem")).len().iter_rows():
    problems.found(paths[file], name, n, "")
  return df.filter(~flag)


def split_fields(df: pl.DataFrame, n_fields: int, paths: Sequence[str],
                 problems: RowProblems, expected: str) -> pl.DataFrame:
  """Adds columns f0..f{n-1} (stripped); lines with another comma count are skipped."""
  found = pl.col("text").str.count_matches(",", literal=True) + 1
  df = skip_if(df, found != n_fields, paths, problems,
               f"malformed line (not {n_fields} comma-separated fields)",
               lambda r: f"expected {n_fields} comma-separated fields ({expected}), found "
                         f"{r['text'].count(',') + 1}")
  fields = pl.col("text").str.split_exact(",", n_fields - 1)
  return df.with_columns(
      fields.struct.field(f"field_{k}").str.strip_chars().alias(f"f{k}")
      for k in range(n_fields))


# ----------------------------------------------------------------------------- records


def parse_records(paths: Sequence[str], static: Sequence[str], parameters: Sequence[str],
                  problems: RowProblems) -> tuple[pl.DataFrame, pl.DataFrame]:
  """(descriptor lines, time-series lines) of the record files, every line checked.

  `static` are the descriptors besides Weight, `parameters` every known name. Both
  frames have columns file, line, param, time_s, hours, value, value_s; descriptor
  lines are the static descriptors plus each file's first Weight line at 00:00.
  """
  lines = read_lines(paths, problems)
  skip = lambda df, bad, problem, describe: skip_if(df, bad, paths, problems, problem,
                                                    describe)
  skip(lines, (pl.col("line") == 1) & (pl.col("text").str.strip_chars() != HEADER),
       "header line is not 'Time,Parameter,Value'",
       lambda r: f"expected the header {HEADER!r} on the first line")
  body = lines.filter((pl.col("line") > 1) & (pl.col("text").str.strip_chars() != ""))
  body = skip(body, pl.col("text").str.contains(NOT_UTF8, literal=True), "not UTF-8 text",
              lambda r: "not UTF-8 text")
  body = split_fields(body, 3, paths, problems, HEADER)
  body = body.rename({"f0": "time_s", "f1": "param", "f2": "value_s"})
  body = body.with_columns(
      pl.col("time_s").str.extract(TIME_PATTERN, 1).cast(pl.Int64).alias("_hh"),
      pl.col("time_s").str.extract(TIME_PATTERN, 2).cast(pl.Int64).alias("_mm"),
      pl.col("value_s").cast(pl.Float64, strict=False).alias("value"),
  )
  body = skip(body, pl.col("_hh").is_null(), "time not HH:MM",
              lambda r: "time is not HH:MM (hours and minutes from ICU admission)")
  body = skip(body, ~pl.col("param").is_in(list(parameters)),
              pl.format("unknown parameter '{}'", pl.col("param")),
              lambda r: f"unknown parameter {r['param']!r} (the challenge defines "
                        f"{sorted(parameters, key=str.lower)})")
  body = skip(body, ~pl.col("value").is_finite(),
              pl.format("value of {} is not a number", pl.col("param")),
              lambda r: f"value of {r['param']} is not a number")
  body = body.with_columns(
      (pl.col("_hh") + pl.col("_mm") / 60.0).alias("hours")).drop("_hh", "_mm")

  is_static = pl.col("param").is_in(list(static))
  body = skip(body, is_static & (pl.col("hours") != 0.0),
              pl.format("descriptor {} not at 00:00", pl.col("param")),
              lambda r: f"descriptor {r['param']} must be recorded at 00:00")
  weight0 = (pl.col("param") == "Weight") & (pl.col("hours") == 0.0)
  body = body.with_columns(
      pl.int_range(pl.len()).over("file", "param", weight0).alias("_k"))
  body = skip(body, is_static & (pl.col("_k") > 0),
              pl.format("descriptor {} repeated (later line skipped)", pl.col("param")),
              lambda r: f"descriptor {r['param']} given more than once in this record")
  is_desc = is_static | (weight0 & (pl.col("_k") == 0))
  cols = ["file", "line", "param", "time_s", "hours", "value", "value_s"]
  return body.filter(is_desc).select(cols), body.filter(~is_desc).select(cols)


def record_ids(desc: pl.DataFrame, paths: Sequence[str], problems: RowProblems
               ) -> tuple[np.ndarray, dict[str, list[str]]]:
  """((F,) int64 RecordID per file, -1 for a dropped file; {reason: [dropped paths]}).

  A file is dropped (strict: DataError) when it has no RecordID line, its RecordID is
  not a positive integer or does not match the file name, or an earlier file (by set,
  then name) already had that RecordID.
  """
  dropped: dict[str, list[str]] = {}

  def drop(file: int, reason: str, error: str) -> None:
    problems.found(paths[file], f"record dropped: {reason}", 1, error)
    dropped.setdefault(reason, []).append(paths[file])

  rec = desc.filter(pl.col("param") == "RecordID")
  has = np.zeros(len(paths), dtype=bool)
  has[rec["file"].to_numpy()] = True
  for f in np.flatnonzero(~has):
    drop(int(f), "no RecordID line",
         f"{paths[f]}:2: no RecordID descriptor in this record (expected "
         f"'00:00,RecordID,<id>' after the header; {int((~has).sum())} file(s) lack one)")
  stems_F = np.asarray([os.path.splitext(os.path.basename(p))[0] for p in paths])
  ids_F = np.full(len(paths), -1, dtype=np.int64)
  seen: dict[int, str] = {}
  for r in rec.sort("file").iter_rows(named=True):
    f, v = int(r["file"]), r["value"]
    where = f"{paths[f]}:{r['line']}"
    if not (v > 0 and v == round(v)):
      drop(f, "RecordID not a positive integer",
           f"{where}: RecordID is not a positive integer")
    elif str(int(v)) != stems_F[f]:
      drop(f, "RecordID does not match the file name",
           f"{where}: RecordID does not match the file name (a record belongs in "
           f"<RecordID>.txt)")
    elif int(v) in seen:
      n_rep = int(rec["value"].is_duplicated().sum())
      drop(f, "duplicate RecordID (an earlier file has it)",
           f"{where}: duplicate RecordID, also in {seen[int(v)]} ({n_rep} lines "
           f"with a repeated RecordID in all)")
    else:
      seen[int(v)] = where
      ids_F[f] = int(v)
  return ids_F, dropped


# ----------------------------------------------------------------------------- outcomes


def parse_outcomes(path: str, problems: RowProblems) -> pl.DataFrame:
  """RecordID, Length_of_stay, In-hospital_death (Int64, null = -1/empty), line.

  Unusable lines (wrong field count, not integers, a death flag other than 0/1/-1, a
  negative length of stay, a RecordID on an earlier line) are skipped and counted; a
  header lacking a needed column is always an error.
  """
  lines = read_lines([path], problems)
  if not len(lines):
    raise DataError(f"{path}:1: empty file (expected the header "
                    f"RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death)")
  header = [h.strip() for h in lines["text"][0].split(",")]
  missing = [c for c in OUTCOME_COLUMNS if c not in header]
  if missing:
    raise DataError(f"{path}:1: header lacks column(s) {missing} (found {header}; "
                    f"expected RecordID,SAPS-I,SOFA,Length_of_stay,Survival,"
                    f"In-hospital_death)")
  skip = lambda df, bad, problem, describe: skip_if(df, bad, [path], problems, problem,
                                                    describe)
  body = lines.filter((pl.col("line") > 1) & (pl.col("text").str.strip_chars() != ""))
  body = skip(body, pl.col("text").str.contains(NOT_UTF8, literal=True), "not UTF-8 text",
              lambda r: "not UTF-8 text")
  body = split_fields(body, len(header), [path], problems, ",".join(header))
  out = body.select("file", "line", *(
      pl.col(f"f{header.index(c)}").alias(c) for c in OUTCOME_COLUMNS))
  for c in OUTCOME_COLUMNS:
    parsed = pl.col(c).cast(pl.Int64, strict=False)
    unparsable = parsed.is_null() if c == "RecordID" else parsed.is_null() & (pl.col(c) != "")
    out = skip(out, unparsable, f"{c} not an integer",
               lambda r, c=c: f"{c} is not an integer")
    out = out.with_columns(parsed.alias(c))
  out = skip(out, pl.col("RecordID") <= 0, "RecordID not a positive integer",
             lambda r: "RecordID is not a positive integer")
  out = skip(out, ~pl.col("In-hospital_death").is_in([0, 1, -1]).fill_null(True),
             "In-hospital_death not 0, 1 or -1",
             lambda r: "In-hospital_death must be 0, 1 or -1 (unknown)")
  out = skip(out, (pl.col("Length_of_stay") < -1).fill_null(False),
             "Length_of_stay negative",
             lambda r: "Length_of_stay is negative (-1 = unknown)")
  out = skip(out, ~pl.col("RecordID").is_first_distinct(),
             "RecordID on an earlier line (later line skipped)",
             lambda r: "this line's RecordID appears on more than one line")
  return out.with_columns(
      pl.when(pl.col(c) >= 0).then(pl.col(c)).alias(c)
      for c in ("Length_of_stay", "In-hospital_death"))


def match_outcomes(out: pl.DataFrame, path: str, ids: np.ndarray, rec_paths: Sequence[str],
                   problems: RowProblems, dropped_ids: set[int]
                   ) -> tuple[pl.DataFrame, np.ndarray]:
  """(outcome rows in the order of `ids`, (F,) bool: the record has an outcome line).

  `ids` are one set's RecordIDs (-1: a dropped file). Outcome lines of records dropped
  before (`dropped_ids`, by file name) are ignored; other lines without a record file
  are skipped and counted, records without an outcome line dropped and counted (strict:
  DataError for either).
  """
  files = pl.DataFrame({"RecordID": ids, "_pos": np.arange(len(ids))}).filter(
      pl.col("RecordID") > 0)
  extra = (out.join(files, on="RecordID", how="anti")
           .filter(~pl.col("RecordID").is_in(sorted(dropped_ids))).sort("line"))
  if len(extra):
    few = ", ".join(str(n) for n in extra["line"].head(5))
    problems.found(path, "outcome line without a record file", len(extra),
                   f"{path}:{extra['line'][0]}: {len(extra)} RecordID(s) have no record "
                   f"file in {os.path.dirname(rec_paths[0]) if rec_paths else 'the set'} "
                   f"(line(s) {few}{', ...' if len(extra) > 5 else ''})")
  lacking = files.join(out, on="RecordID", how="anti").sort("_pos")
  if len(lacking):
    few = ", ".join(f"{rec_paths[p]}:2" for p in lacking["_pos"].head(5))
    error = (f"{path}: no outcome line for {len(lacking)} record(s) ({few}"
             f"{', ...' if len(lacking) > 5 else ''})")
    for p in lacking["_pos"].to_list():
      problems.found(rec_paths[p], "record dropped: no outcome line", 1, error)
  has_F = np.zeros(len(ids), bool)
  has_F[files.join(out, on="RecordID", how="semi")["_pos"].to_numpy()] = True
  all_files = pl.DataFrame({"RecordID": ids})
  return all_files.join(out, on="RecordID", how="left", maintain_order="left"), has_F
