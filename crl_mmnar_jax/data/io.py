"""File helpers shared by the data sources and the experiment runner.

* Reading parquet files (`read_parquet`, `read_kept_rows`) and checking ids and task
  names (`id_kind`, `ids_to_numpy`, `check_tasks`, `few` for error messages).
* Reading the CSV tables of the credentialed databases (eICU-CRD, MIMIC-IV): a table
  is ``<name>.csv.gz`` or plain ``<name>.csv`` (`table_path`, `require_table`); it is
  scanned lazily as a typed projection after its header was checked (`scan_csv`), and
  collected or sunk to parquet with parse errors reported as `DataError` naming the
  file (`collect`, `sink`).
* Lenient reading for the row policy of `row_policy`: `scan_csv(lenient=True)` reads
  values that do not parse as null, `count_unparsable` counts them, `ParseError` names
  the file whose value did not parse.
* Atomic writes (`write_atomic`, `write_parquet_atomic`): a crash leaves either the
  old or the new file, never a partial one.
* The staged parquet cache of the big loaders (`cache_folder`, `cached_stage`): each
  stage writes ``<stage>.parquet`` plus ``<stage>.json`` (its report) into the cache
  folder, and a rerun reads finished stages instead of computing them.

Every problem with the input raises `DataError` naming the file.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
from typing import Callable, Sequence

import numpy as np
import polars as pl

from crl_mmnar_jax.data.errors import DataError

# ----------------------------------------------------------------------------- parquet


def few(series: pl.Series, k: int = 5) -> list:
  """Up to k distinct values of a series, sorted, for error messages."""
  return series.unique().sort().head(k).to_list()


def read_parquet(path: str) -> pl.DataFrame:
  """The whole file; any reader error is a `DataError` naming the file."""
  try:
    return pl.read_parquet(path)
  except Exception as e:  # pylint: disable=broad-except  (any reader error is bad input)
    raise DataError(f"{path}: cannot read as parquet ({type(e).__name__}: {e})") from None


def id_kind(dtype: pl.DataType) -> str | None:
  """'int' or 'str' for dtypes usable as ids, else None."""
  if dtype.is_integer():
    return "int"
  if dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)):
    return "str"
  return None


def ids_to_numpy(ids: pl.Series) -> np.ndarray:
  """Int64 ids as an int64 array, string ids as a unicode array."""
  out = ids.to_numpy()
  return out.astype(np.int64) if ids.dtype == pl.Int64 else out.astype(str)


def read_kept_rows(path: str, keep: Callable[[np.ndarray], np.ndarray],
                   id_column: str) -> pl.DataFrame:
  """The rows of a parquet file whose `id_column` value `keep` selects: a scan filtered
  on the id column, so the other rows' features are not materialised. Files with an
  unusable id column are read whole, so that the loader's usual checks name the
  problem."""
  try:
    ids = pl.read_parquet(path, columns=[id_column])[id_column]
  except Exception:  # pylint: disable=broad-except  (no id column, unreadable: report below)
    return read_parquet(path)
  kind = id_kind(ids.dtype)
  if kind is None or ids.null_count():
    return read_parquet(path)
  cast = pl.Int64 if kind == "int" else pl.String
  try:
    ids = ids.cast(cast)
  except Exception:  # pylint: disable=broad-except
    return read_parquet(path)
  wanted = ids.filter(pl.Series(np.asarray(keep(ids_to_numpy(ids)), bool)))
  try:
    return pl.scan_parquet(path).filter(
        pl.col(id_column).cast(cast).is_in(wanted.implode())).collect()
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"{path}: cannot read as parquet ({type(e).__name__}: {e})") from None


def check_tasks(tasks: Sequence[str], known: Sequence[str]) -> list[str]:
  """The requested task names as a list; DataError unless each is known and named once."""
  tasks = list(tasks)
  bad = [t for t in tasks if t not in known]
  if bad or not tasks or len(set(tasks)) != len(tasks):
    raise DataError(f"tasks {tasks}: each must be one of {list(known)}, named once "
                    f"(unknown: {bad})")
  return tasks


# ----------------------------------------------------------------------------- csv tables


def link_copied_as_text(path: str) -> str:
  """"" or, where `path` is a small file holding one path (a symbolic link that a copy
  or an archive turned into text), a sentence saying so and how to restore the link."""
  try:
    if not os.path.isfile(path) or os.path.getsize(path) > 4096:
      return ""
    with open(path, encoding="utf-8") as f:
      text = f.read().strip()
  except (OSError, UnicodeDecodeError):
    return ""
  if not text or "\n" in text or "/" not in text:
    return ""
  return (f"it is a file holding the text {text!r}, not a folder: a symbolic link "
          f"copied as text? Restore it with `ln -sfn {text} {path}`, or point at the "
          f"folder itself")


def table_path(directory: str, name: str) -> str | None:
  """``<directory>/<name>.csv.gz``, else ``<name>.csv``, else None."""
  for ext in (".csv.gz", ".csv"):
    path = os.path.join(directory, name + ext)
    if os.path.isfile(path):
      return path
  return None


def require_table(directory: str, name: str, database: str) -> str:
  """`table_path`, or a DataError naming both file names tried."""
  path = table_path(directory, name)
  if path is None:
    raise DataError(f"{os.path.join(directory, name)}.csv.gz: required {database} table "
                    f"'{name}' not found (neither .csv.gz nor .csv)")
  return path


def header(path: str) -> list[str]:
  """The column names of a CSV file's first line ([] for an empty file)."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rt", encoding="utf-8", newline="") as f:
      line = f.readline()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}:1: cannot read the header ({e})") from None
  return [c.strip().strip('"') for c in line.rstrip("\r\n").split(",")] if line else []


def scan_csv(path: str, columns: dict[str, pl.DataType], what: str, *,
             name_empty_file: bool = True, lenient: bool = False) -> pl.LazyFrame:
  """Lazy, typed projection of a CSV file to `columns`, its header checked first.

  Args:
    path: the file.
    columns: the columns read and their types (other columns are ignored).
    what: the table, as error messages name it (e.g. "eICU table 'lab'").
    name_empty_file: an empty file raises "empty file without a header line"; False:
      it raises as a file lacking every column.
    lenient: read every column as text and convert it to its type afterwards, a value
      that does not parse becoming null (`CsvTables` uses this after counting them).
  """
  names = header(path)
  if name_empty_file and not names:
    raise DataError(f"{path}:1: empty file without a header line (expected {what} columns "
                    f"{list(columns)})")
  missing = [c for c in columns if c not in names]
  if missing:
    raise DataError(f"{path}:1: {what} lacks column(s) {missing} (header has {names[:20]})")
  if lenient:
    lf = pl.scan_csv(path, schema_overrides={c: pl.String for c in columns},
                     infer_schema=False, null_values=[""], raise_if_empty=False)
    return lf.select(_parse_text(c, t) for c, t in columns.items())
  return pl.scan_csv(path, schema_overrides=columns, infer_schema=False, null_values=[""],
                     raise_if_empty=False).select(list(columns))


_DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M",
                     "%Y-%m-%d")


def _parse_text(column: str, dtype: pl.DataType) -> pl.Expr:
  """A text column converted to `dtype`; a value that does not parse becomes null."""
  v = pl.col(column).str.strip_chars()
  if dtype == pl.String:
    return pl.col(column)
  if dtype == pl.Date:
    return v.str.to_date("%Y-%m-%d", strict=False).alias(column)
  if isinstance(dtype, pl.Datetime):
    unit = dtype.time_unit or "us"
    return pl.coalesce([v.str.to_datetime(f, time_unit=unit, strict=False)
                        for f in _DATETIME_FORMATS]).alias(column)
  return v.cast(dtype, strict=False).alias(column)


def count_unparsable(path: str, columns: dict[str, pl.DataType]) -> dict[str, int]:
  """Per typed column of `columns`, the non-empty values of `path` that do not parse as
  its type (one streaming pass over the file read as text)."""
  typed = {c: t for c, t in columns.items() if t != pl.String}
  if not typed:
    return {}
  lf = pl.scan_csv(path, schema_overrides={c: pl.String for c in typed},
                   infer_schema=False, null_values=[""], raise_if_empty=False)
  counts = collect(lf.select(
      (pl.col(c).is_not_null() & _parse_text(c, t).is_null()).sum().alias(c)
      for c, t in typed.items()), path, "cannot read as text")
  return {c: int(counts[c][0]) for c in typed if counts[c][0]}


class ParseError(DataError):
  """A value of the file `path` does not parse as its column's type."""

  def __init__(self, message: str, path: str):
    super().__init__(message)
    self.path = path


def _parse_error(path: str, error: str, e: Exception) -> ParseError:
  """polars' first line, without the value it quotes (messages name the file and column,
  never a value)."""
  msg = str(e).splitlines()[0] if str(e) else type(e).__name__
  msg = re.sub(r"parse `[^`]*`", "parse a value", msg)
  msg = re.sub(r"(values?):? \[.*\]", r"\1", msg)
  return ParseError(f"{path}: {error}: {msg}", path)


def collect(lf: pl.LazyFrame, path: str, error: str) -> pl.DataFrame:
  """Streaming collection; a value that does not parse raises `ParseError` (a
  DataError) ``"<path>: <error>: <polars' first line>"``."""
  try:
    return lf.collect(engine="streaming")
  except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError) as e:
    raise _parse_error(path, error, e) from None


def sink(lf: pl.LazyFrame, out: str, path: str, error: str,
         row_group_size: int | None = None) -> None:
  """``lf.sink_parquet(out)`` with `collect`'s error for a value of `path`. The sink
  buffers a row group in memory: give a small `row_group_size` for wide rows (texts)."""
  try:
    lf.sink_parquet(out, row_group_size=row_group_size)
  except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError) as e:
    raise _parse_error(path, error, e) from None


# ----------------------------------------------------------------------------- writing


def _tmp_path(path: str, hidden: bool) -> str:
  """A temporary name in `path`'s folder: ``<path>.tmp<pid>`` or ``.<name>.tmp<pid>``."""
  if not hidden:
    return f"{path}.tmp{os.getpid()}"
  folder, name = os.path.split(path)
  return os.path.join(folder, f".{name}.tmp{os.getpid()}")


def write_atomic(path: str, data: bytes | str, *, hidden: bool = False) -> None:
  """Writes a file so that a crash leaves either the old or the new contents.

  The data go to a temporary file in the same folder (hidden: a dot name), flushed to
  disk, then renamed over `path`.
  """
  tmp = _tmp_path(path, hidden)
  with open(tmp, "wb") as f:
    f.write(data.encode() if isinstance(data, str) else data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_parquet_atomic(df: pl.DataFrame, path: str, *, hidden: bool = False) -> None:
  """Writes `df` to a temporary name in the same folder (hidden: a dot name), then
  renames it to `path`; a failed write leaves no temporary file behind."""
  tmp = _tmp_path(path, hidden)
  try:
    df.write_parquet(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


# ----------------------------------------------------------------------------- stage cache


def cache_folder(cache_dir: str | os.PathLike | None, name: str, key: str) -> str:
  """``<cache_dir>/<name>-<key>`` (created); None: a fresh temporary folder."""
  if cache_dir is None:
    return tempfile.mkdtemp(prefix=f"crl_{name}_")
  folder = os.path.join(os.fspath(cache_dir), f"{name}-{key}")
  os.makedirs(folder, exist_ok=True)
  return folder


def cached_stage(folder: str, stage: str, compute: Callable[[], tuple[pl.DataFrame, dict]],
                 ran: list[str]) -> tuple[pl.DataFrame, dict]:
  """Stage `stage` from `folder` if it is finished there, else `compute()`d and written.

  A finished stage is ``<stage>.parquet`` plus ``<stage>.json`` (its report, JSON). The
  report is written first and the parquet file last, each atomically, so the parquet
  file marks a complete stage. The names of computed stages are appended to `ran`.
  """
  path = os.path.join(folder, f"{stage}.parquet")
  report = os.path.join(folder, f"{stage}.json")
  if os.path.isfile(path) and os.path.isfile(report):
    with open(report) as f:
      return pl.read_parquet(path), json.load(f)
  df, info = compute()
  write_atomic(report, json.dumps(info), hidden=True)
  write_parquet_atomic(df, path, hidden=True)     # parquet last: the marker
  ran.append(stage)
  return df, info
