"""Which process holds which patients: fixed data shards that one process can emulate.

With `train.data_shards = S > 1`, every patient belongs to shard
``crc32(str(patient_id)) % S``, a function of its id alone, so a loader can drop other
shards' patients before it reads their data. Process p of P holds the shards
``[p S/P, (p+1) S/P)`` (S must be a multiple of P) and loads only their rows.

Everything that depends on the layout is a function of (config, data) alone, never of
P, so one process with S shards trains exactly what P processes with S shards train:

* the global row order is shard-major, patients sorted by id inside a shard;
* each global batch is S blocks of ``batch_size / S`` rows, block s drawn from shard s
  (the slice of process p is then exactly the blocks of its shards);
* an epoch shuffles each shard with its own stream ``(seed, epoch, s)``;
* sums over patients (the standardisation statistics) are summed per shard first, then
  over shards in shard order.

What every process still has for all N patients is the small per-patient index (id,
presence, labels, group, predefined split), gathered once after loading: splits and
model selection need it. Features of another process's patients are a `HeldRows` that
raises if read, so nothing can silently use a row this process does not hold.

`S = 1` (the default) is the replicated layout: every process loads every patient and
builds its slice of each global batch, the global order and the epoch order are those
of a single process.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zlib
from typing import Callable, Sequence

import jax
import numpy as np

from crl_mmnar_jax import distributed
from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data.errors import DataError


def shard_of(patient_id_N: np.ndarray, n_shards: int) -> np.ndarray:
  """The shard of every id: ``crc32(str(id)) % n_shards`` (int32; stable everywhere)."""
  ids = np.asarray(patient_id_N)
  if n_shards == 1:
    return np.zeros(len(ids), np.int32)
  as_text = (str(int(i)) if ids.dtype.kind in "iu" else str(i) for i in ids)
  return np.fromiter((zlib.crc32(t.encode()) % n_shards for t in as_text), np.int32,
                     count=len(ids))


def held_shards(n_shards: int, process_index: int | None = None,
                process_count: int | None = None) -> tuple[int, ...]:
  """The shards process `process_index` of `process_count` holds."""
  p = jax.process_index() if process_index is None else process_index
  n_proc = jax.process_count() if process_count is None else process_count
  if n_shards < 1:
    raise ValueError(f"train.data_shards={n_shards} must be >= 1")
  if n_shards == 1:
    return (0,)
  if n_shards % n_proc:
    raise ValueError(f"train.data_shards={n_shards} must be 1 (every process loads every "
                     f"patient) or a multiple of the number of processes ({n_proc})")
  k = n_shards // n_proc
  return tuple(range(p * k, (p + 1) * k))


def check_batch_divides_shards(batch_size: int, n_shards: int, what: str) -> None:
  """Raises unless `batch_size` (the setting `what`) is a multiple of `n_shards`."""
  if batch_size % n_shards:
    raise ValueError(f"{what}={batch_size} must be a multiple of train.data_shards="
                     f"{n_shards} (each batch takes batch_size / data_shards rows from "
                     f"every shard)")


@dataclasses.dataclass(frozen=True)
class Layout:
  """How the cohort's N rows are spread over shards and which this process holds."""

  n_shards: int
  shard_N: np.ndarray             # (N,) shard of every cohort row
  held: tuple[int, ...]           # shards whose rows this process holds

  @classmethod
  def single(cls, n: int) -> "Layout":
    return cls(1, np.zeros(n, np.int32), (0,))

  @property
  def distributed(self) -> bool:
    """True when some rows live on other processes."""
    return self.n_shards > 1 and len(self.held) < self.n_shards

  def check_batch_divides_shards(self, batch_size: int, what: str) -> None:
    check_batch_divides_shards(batch_size, self.n_shards, what)

  def n_batches(self, rows: np.ndarray, batch_size: int) -> int:
    counts = np.bincount(self.shard_N[np.asarray(rows)], minlength=self.n_shards)
    block = batch_size // self.n_shards
    return int(-(-counts.max(initial=0) // block))

  def batch_items(self, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """(n_batches, batch_size) positions in `rows`, -1 for padding (`batch_layout`)."""
    return batch_layout(self.shard_N[np.asarray(rows)], self.n_shards, batch_size)

  def batches(self, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """(n_batches, batch_size) cohort rows, -1 for padding."""
    rows = np.asarray(rows)
    items = self.batch_items(rows, batch_size)
    return np.where(items >= 0, rows[np.maximum(items, 0)], -1)

  def epoch_order(self, rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of `rows` for one epoch, a pure function of (seed, epoch):
    one permutation of all rows when S = 1, else one per shard (shard-major)."""
    rows = np.asarray(rows)
    if self.n_shards == 1:
      return rows[np.random.default_rng([seed, epoch]).permutation(len(rows))]
    parts = []
    for s in range(self.n_shards):
      mine = rows[self.shard_N[rows] == s]
      parts.append(mine[np.random.default_rng([seed, epoch, s]).permutation(len(mine))])
    return np.concatenate(parts)

  def sum_per_shard(self, rows: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]
                    ) -> np.ndarray:
    """``sum_s fn(rows of shard s)``, summed over shards in shard order on every process;
    `fn` is called only for the held shards (collective when `distributed`)."""
    rows = np.asarray(rows)
    parts = {s: np.asarray(fn(rows[self.shard_N[rows] == s]), np.float64) for s in self.held}
    shape = next(iter(parts.values())).shape
    table = np.zeros((self.n_shards,) + shape, np.float64)
    for s, v in parts.items():
      table[s] = v
    if self.distributed:      # each shard is held by one process: the others add zeros
      table = allgather_arrays(table).sum(axis=0)
    total = np.zeros(shape, np.float64)
    for s in range(self.n_shards):
      total = total + table[s]
    return total


def batch_layout(item_shard_K: np.ndarray, n_shards: int, batch_size: int) -> np.ndarray:
  """Items 0..K-1 into batches of S blocks: block s of batch b holds shard s's items
  ``[b B_s, (b+1) B_s)`` in item order, B_s = batch_size / S; -1 pads a short block.

  With S = 1 this is the items in order, cut every `batch_size`, the last batch padded
  at its end. Returns an int64 (n_batches, batch_size) array of item indices.
  """
  block = batch_size // n_shards
  per = [np.flatnonzero(np.asarray(item_shard_K) == s) for s in range(n_shards)]
  nb = max((-(-len(p) // block) for p in per), default=0)
  out = np.full((nb, n_shards, block), -1, np.int64)
  for s, p in enumerate(per):
    flat = out[:, s, :].reshape(-1)
    flat[:len(p)] = p
    out[:, s, :] = flat.reshape(nb, block)
  return out.reshape(nb, n_shards * block)


# ----------------------------------------------------------------------------- rows


class HeldRows:
  """An (N, d) feature matrix of which this process holds rows [start, start + n_local).

  Indexing with rows (integers or a boolean mask) returns them if they are all held and
  raises `DataError` otherwise; converting the whole matrix to numpy raises too. Rows of
  other processes are reached only through the collective `gather_rows`.
  """

  def __init__(self, local: np.ndarray, start: int, n: int):
    self.local, self.start, self.n = local, int(start), int(n)
    self.shape = (self.n, int(local.shape[1]))
    self.dtype = local.dtype
    self.ndim = 2

  @property
  def stop(self) -> int:
    return self.start + self.local.shape[0]

  def _local_rows(self, rows) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.dtype == bool:
      if rows.shape != (self.n,):
        raise IndexError(f"boolean row mask of shape {rows.shape} for {self.n} rows")
      rows = np.flatnonzero(rows)
    if rows.dtype.kind not in "iu":
      raise TypeError(f"HeldRows takes row indices or a row mask, got {rows.dtype}")
    rows = np.where(rows < 0, rows + self.n, rows)
    outside = (rows < self.start) | (rows >= self.stop)
    if outside.any():
      raise DataError(
          f"feature row {int(rows[outside][0])} is held by another process "
          f"(train.data_shards > 1: this process holds rows {self.start}..{self.stop - 1}); "
          f"this method needs every patient's features on every process: use "
          f"train.data_shards=1")
    return rows - self.start

  def __getitem__(self, rows) -> np.ndarray:
    if isinstance(rows, tuple):
      raise TypeError("HeldRows supports row indexing only: use held[rows][:, cols]")
    return self.local[self._local_rows(rows)]

  def __len__(self) -> int:
    return self.n

  def __array__(self, dtype=None, copy=None):
    raise DataError("the features of this cohort are spread over processes "
                    "(train.data_shards > 1); this method needs all of them on every "
                    "process: use train.data_shards=1")

  def map_local(self, fn: Callable[[np.ndarray, slice], np.ndarray]) -> "HeldRows":
    """A new HeldRows of ``fn(local, slice of the held rows)``."""
    return HeldRows(fn(self.local, slice(self.start, self.stop)), self.start, self.n)


def map_rows(x: np.ndarray | HeldRows, fn: Callable[[np.ndarray, slice], np.ndarray]):
  """``fn(rows, slice)`` over the rows this process holds (all rows of a numpy array)."""
  if isinstance(x, HeldRows):
    return x.map_local(fn)
  return fn(x, slice(0, x.shape[0]))


def gather_rows(x: np.ndarray | HeldRows, rows: np.ndarray) -> np.ndarray:
  """``x[rows]`` on every process, wherever the rows are held (collective for HeldRows:
  every process must call it with the same rows)."""
  rows = np.asarray(rows, np.int64)
  if not isinstance(x, HeldRows):
    return x[rows]
  mine = (rows >= x.start) & (rows < x.stop)
  part = np.zeros((len(rows), x.shape[1]), x.dtype)
  part[mine] = x.local[rows[mine] - x.start]
  return allgather_arrays(part).sum(axis=0, dtype=x.dtype)   # one holder per row


# ----------------------------------------------------------------------------- gathering


def allgather_arrays(a: np.ndarray) -> np.ndarray:
  """(P, *a.shape): every process's `a` (same shape and dtype everywhere), bit-exact."""
  a = np.ascontiguousarray(a)
  parts = distributed.allgather_bytes(a.tobytes())
  return np.stack([np.frombuffer(p, a.dtype).reshape(a.shape) for p in parts])


def _pack(arrays: dict[str, np.ndarray | None], meta: dict) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8),
           **{k: v for k, v in arrays.items() if v is not None})
  return buf.getvalue()


def _unpack(b: bytes) -> tuple[dict[str, np.ndarray], dict]:
  with np.load(io.BytesIO(b), allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files if k != "__meta__"}
    return arrays, json.loads(z["__meta__"].tobytes().decode())


_INDEX = ("patient_id", "present", "labels", "group_id", "split")


def _index_arrays(c: Cohort) -> dict[str, np.ndarray | None]:
  out = {k: getattr(c, k) for k in _INDEX}
  for k in ("patient_id", "group_id", "split"):
    if out[k] is not None and out[k].dtype.kind == "O":
      out[k] = out[k].astype(str)
  return out


def _shape_meta(c: Cohort) -> dict:
  return {"modality_names": list(c.modality_names), "task_names": list(c.task_names),
          "input_dims": list(c.input_dims),
          "feature_names": None if c.feature_names is None else [list(f) for f in
                                                                  c.feature_names]}


def _shard_major(c: Cohort, n_shards: int, extras: dict) -> tuple[Cohort, dict]:
  if n_shards == 1:
    return c, extras
  order = np.lexsort((c.patient_id, shard_of(c.patient_id, n_shards)))
  return c.subset(order), {k: None if v is None else v[order] for k, v in extras.items()}


def assemble(load: Callable[[], tuple[Cohort, dict[str, np.ndarray | None]]], n_shards: int
             ) -> tuple[Cohort, Layout, dict[str, np.ndarray | None]]:
  """Runs this process's `load()` (its shards' patients) and builds the global view.

  `load` returns (local cohort, extras: per-row arrays such as the fixed test mask, or
  None). Returns (cohort, layout, extras) over all N patients: in the distributed
  layout the cohort's features are `HeldRows`, everything else is complete. A loader
  error on any process is raised on every process (naming the process).
  """
  held = held_shards(n_shards)
  gathered = n_shards > 1 and jax.process_count() > 1
  if not gathered:
    cohort, extras = load()
    cohort, extras = _shard_major(cohort, n_shards, extras)
    return cohort, Layout(n_shards, shard_of(cohort.patient_id, n_shards), held), extras

  error, local, extras = None, None, {}
  try:
    local, extras = load()
    shard_N = shard_of(local.patient_id, n_shards)
    if not np.isin(shard_N, held).all():
      n_bad = int((~np.isin(shard_N, held)).sum())
      raise DataError(f"the loader returned {n_bad} patient(s) of shards this process does "
                      f"not hold; it must keep only train.data_shards {list(held)}")
    local, extras = _shard_major(local, n_shards, extras)
  except Exception as e:     # noqa: BLE001 (re-raised below, on every process)
    error = e
  payload = (_pack({}, {"error": f"{type(error).__name__}: {error}"}) if error is not None
             else _pack({**_index_arrays(local),
                         **{f"extra_{k}": v for k, v in extras.items()}},
                        {"error": None, "shape": _shape_meta(local),
                         "extras": sorted(extras)}))
  parts = [_unpack(b) for b in distributed.allgather_bytes(payload)]
  failed = [(p, m["error"]) for p, (_, m) in enumerate(parts) if m["error"]]
  if error is not None:
    raise error
  if failed:
    p, msg = failed[0]
    raise DataError(f"process {p} failed to load its patients: {msg}")
  shapes = {json.dumps(m["shape"], sort_keys=True) for _, m in parts}
  if len(shapes) != 1:
    raise DataError(f"the processes loaded cohorts of different shapes (modalities, tasks "
                    f"or feature columns): {sorted(shapes)}")

  def cat(key: str) -> np.ndarray | None:
    have = [a.get(key) for a, _ in parts]
    if all(h is None for h in have):
      return None
    if any(h is None for h in have):
      raise DataError(f"'{key}' is given for some processes' patients but not others'")
    return np.concatenate(have)

  counts = [len(a["patient_id"]) for a, _ in parts]
  n, start = sum(counts), sum(counts[:jax.process_index()])
  cohort = dataclasses.replace(
      local, patient_id=cat("patient_id"), present=cat("present"), labels=cat("labels"),
      group_id=cat("group_id"), split=cat("split"),
      features=tuple(HeldRows(f, start, n) for f in local.features))
  extras = {k: cat(f"extra_{k}") for k in extras}
  return cohort, Layout(n_shards, shard_of(cohort.patient_id, n_shards), held), extras


def describe(layout: Layout, n_local: int, n: int) -> str:
  if layout.n_shards == 1:
    return "every process holds every patient (train.data_shards=1)"
  return (f"process {jax.process_index()} holds shards {list(layout.held)} of "
          f"{layout.n_shards}: {n_local} of {n} patients")


def keep_fn(n_shards: int, held: Sequence[int]) -> Callable[[np.ndarray], np.ndarray] | None:
  """A loader's row filter: patient ids -> bool mask of this process's patients (None
  when the process holds every shard)."""
  if len(set(held)) == n_shards:
    return None
  held_arr = np.asarray(held)
  return lambda ids: np.isin(shard_of(ids, n_shards), held_arr)


def n_local(cohort: Cohort) -> int:
  f = cohort.features[0]
  return f.local.shape[0] if isinstance(f, HeldRows) else cohort.n

