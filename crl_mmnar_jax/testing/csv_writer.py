"""`CsvWriter`: appends polars DataFrames to CSV files, streamed, gzip on a background
thread (what `mimic_fake.write_fake_mimic` writes its tables with)."""

from __future__ import annotations

import gzip
import io
import os
import queue
import threading
from typing import Any

import polars as pl


class CsvWriter:
  """Appends DataFrames to CSV files (gzip level 1 when `compress`). CSV encoding runs
  in the caller's thread; compression and disk writes on one background thread, with at
  most `depth` encoded chunks waiting, so memory stays bounded."""

  def __init__(self, compress: bool, depth: int = 3):
    self.compress = compress
    self._files: dict[str, Any] = {}
    self._raw: dict[str, Any] = {}
    self._columns: dict[str, list[str]] = {}
    self.paths: dict[str, str] = {}
    self.rows: dict[str, int] = {}
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._error: BaseException | None = None
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def open(self, table: str, path: str, columns: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    raw = open(path, "wb")
    # mtime=0: the same arguments give byte-identical files.
    self._files[table] = (gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0)
                          if self.compress else raw)
    self._raw[table] = raw
    self._columns[table] = columns
    self.paths[table] = path
    self.rows[table] = 0
    header = (",".join(columns) + "\n").encode()
    self._queue.put((table, header))

  def write(self, table: str, df: pl.DataFrame) -> None:
    if self._error is not None:
      raise self._error
    if not len(df):
      return
    buf = io.BytesIO()
    df.select(self._columns[table]).write_csv(
        buf, include_header=False, datetime_format="%Y-%m-%d %H:%M:%S",
        date_format="%Y-%m-%d")
    self.rows[table] += len(df)
    self._queue.put((table, buf.getvalue()))

  def _run(self) -> None:
    while True:
      item = self._queue.get()
      if item is None:
        return
      if self._error is None:
        try:
          self._files[item[0]].write(item[1])
        except BaseException as e:      # reported by the next write() or close()
          self._error = e

  def close(self) -> None:
    self._queue.put(None)
    self._thread.join()
    for table, f in self._files.items():
      f.close()
      self._raw[table].close()
    if self._error is not None:
      raise self._error

