"""Chest X-ray embeddings from TFRecord files, without TensorFlow.

PhysioNet's "Generalized Image Embeddings for the MIMIC Chest X-Ray dataset" ships one
TFRecord file per image, ``files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.tfrecord``, holding a
``tf.train.Example`` whose float feature ``embedding`` is the image's vector (1,376
values). This module reads that layout with the standard library and numpy:

* the record framing (`read_records`): per record, ``uint64 length``, ``uint32 masked
  CRC-32C of the length``, ``length`` bytes of data, ``uint32 masked CRC-32C of the
  data`` (all little-endian; mask: ``((c >> 15) | (c << 17)) + 0xa282ead8``). The length
  CRC is always checked; the data CRC when ``verify=True`` (pure Python: slower).
* the ``tf.train.Example`` protobuf message (`parse_example`): ``Example.features`` (1)
  -> ``Features.feature`` (map<string, Feature>, 1) -> ``Feature`` oneof
  ``bytes_list`` (1), ``float_list`` (2, packed or not), ``int64_list`` (3, packed or
  not). Unknown fields are skipped by wire type.

`read_embeddings` turns a file, or a folder searched recursively, into a frame
``dicom_id`` + ``e0000..`` (float32); the dicom id is the file name's stem (or, with
several records in a file, the ``image/id`` bytes feature when present). Reading only
the images asked for (``dicom_ids``) selects files by name before opening them.
"""

from __future__ import annotations

import os
import struct
from typing import Iterable, Iterator

import numpy as np
import polars as pl

from crl_mmnar_jax.data.errors import DataError

EMBEDDING_KEY = "embedding"
ID_KEY = "image/id"
SUFFIX = ".tfrecord"
_MASK_DELTA = 0xA282EAD8


def _crc32c_table() -> list[int]:
  table = []
  for n in range(256):
    c = n
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of `data`."""
  c = 0xFFFFFFFF
  for b in data:
    c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
  """TFRecord's masked CRC-32C."""
  c = crc32c(data)
  return (((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(path: str, verify: bool = False) -> Iterator[bytes]:
  """The data of each record of a TFRecord file (uncompressed)."""
  with open(path, "rb") as f:
    raw = f.read()
  pos, k = 0, 0
  while pos < len(raw):
    if pos + 12 > len(raw):
      raise DataError(f"{path}: record {k} truncated in its header")
    header = raw[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    (length_crc,) = struct.unpack("<I", raw[pos + 8:pos + 12])
    if masked_crc(header) != length_crc:
      raise DataError(f"{path}: record {k} has a corrupt length (CRC mismatch); not an "
                      f"uncompressed TFRecord file?")
    start, end = pos + 12, pos + 12 + length
    if end + 4 > len(raw):
      raise DataError(f"{path}: record {k} truncated ({length} bytes announced)")
    data = raw[start:end]
    if verify and masked_crc(data) != struct.unpack("<I", raw[end:end + 4])[0]:
      raise DataError(f"{path}: record {k} data CRC mismatch")
    yield data
    pos, k = end + 4, k + 1


# ----------------------------------------------------------------------------- protobuf


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  result, shift = 0, 0
  while True:
    if pos >= len(buf):
      raise DataError("truncated varint in a tf.train.Example")
    b = buf[pos]
    result |= (b & 0x7F) << shift
    pos += 1
    if not b & 0x80:
      return result, pos
    shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
  """(field number, wire type, value) of a protobuf message; length-delimited values
  are bytes, varints ints, fixed 32/64-bit values their raw bytes' integer."""
  pos = 0
  while pos < len(buf):
    key, pos = _varint(buf, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _varint(buf, pos)
    elif wire == 1:
      value, pos = buf[pos:pos + 8], pos + 8
    elif wire == 2:
      n, pos = _varint(buf, pos)
      value, pos = buf[pos:pos + n], pos + n
    elif wire == 5:
      value, pos = buf[pos:pos + 4], pos + 4
    else:
      raise DataError(f"unsupported protobuf wire type {wire} in a tf.train.Example")
    yield number, wire, value


def _feature(buf: bytes) -> list | np.ndarray:
  """A `Feature` message: its bytes (list), floats (float32 array) or ints (list)."""
  for number, _, kind in _fields(buf):
    if number == 1:                                   # BytesList
      return [v for n, _, v in _fields(kind) if n == 1]
    if number == 2:                                   # FloatList
      parts = [np.frombuffer(v, "<f4") for n, w, v in _fields(kind) if n == 1]
      return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    if number == 3:                                   # Int64List
      out = []
      for n, w, v in _fields(kind):
        if n != 1:
          continue
        if w == 2:                                    # packed varints
          p = 0
          while p < len(v):
            x, p = _varint(v, p)
            out.append(x - (1 << 64) if x >= 1 << 63 else x)
        else:
          out.append(v - (1 << 64) if v >= 1 << 63 else v)
      return out
  return []


def parse_example(data: bytes) -> dict[str, list | np.ndarray]:
  """A serialized ``tf.train.Example`` -> {feature name: values}."""
  out: dict[str, list | np.ndarray] = {}
  for number, _, features in _fields(data):
    if number != 1:
      continue
    for n, _, entry in _fields(features):
      if n != 1:
        continue
      key, value = "", b""
      for m, _, v in _fields(entry):
        if m == 1:
          key = v.decode("utf-8")
        elif m == 2:
          value = v
      out[key] = _feature(value)
  return out


# ----------------------------------------------------------------------------- files


def tfrecord_files(path: str) -> list[str]:
  """`path` itself, or every ``*.tfrecord`` under the folder `path`, sorted."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise DataError(f"{path}: CXR embeddings file or folder not found")
  return sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                if f.endswith(SUFFIX))


def read_embeddings(path: str, dicom_ids: Iterable[str] | None = None,
                    verify: bool = False) -> pl.DataFrame:
  """``dicom_id`` + ``e0000..`` float32 columns from TFRecord embeddings (module
  docstring); only the files of `dicom_ids` when given."""
  files = tfrecord_files(path)
  if not files:
    raise DataError(f"{path}: no {SUFFIX} file")
  probe = None
  if dicom_ids is not None:
    wanted = set(dicom_ids)
    chosen = [f for f in files if os.path.basename(f)[:-len(SUFFIX)] in wanted]
    if not chosen:                 # none wanted: one file still gives the width
      probe = read_embeddings(files[0], verify=verify).head(0)
    files = chosen
  if probe is not None:
    return probe
  ids, rows = [], []
  for f in files:
    records = list(read_records(f, verify=verify))
    for data in records:
      ex = parse_example(data)
      if EMBEDDING_KEY not in ex or not isinstance(ex[EMBEDDING_KEY], np.ndarray):
        raise DataError(f"{f}: tf.train.Example without a float feature "
                        f"'{EMBEDDING_KEY}' (has {sorted(ex)})")
      stem = os.path.basename(f)[:-len(SUFFIX)] if f.endswith(SUFFIX) else None
      name = stem if len(records) == 1 and stem else None
      if name is None and ex.get(ID_KEY):
        name = os.path.splitext(os.path.basename(ex[ID_KEY][0].decode("utf-8")))[0]
      if name is None:
        raise DataError(f"{f}: cannot tell which image a record belongs to (no file "
                        f"name per image and no '{ID_KEY}' feature)")
      ids.append(name)
      rows.append(ex[EMBEDDING_KEY])
  widths = {len(r) for r in rows}
  if len(widths) > 1:
    raise DataError(f"{path}: embeddings of different lengths {sorted(widths)}")
  dim = widths.pop() if widths else 0
  x = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
  names = [f"e{j:04d}" for j in range(dim)]
  return pl.DataFrame({"dicom_id": pl.Series(ids, dtype=pl.String)}).hstack(
      pl.DataFrame(x, schema=names, orient="row"))
