"""Run as one of two processes (see test_shards.py): `shards` across real processes.

  python tests/multiprocess_shards_check.py PORT PROCESS_ID

Each process "loads" only its shard of a synthetic cohort; the script checks the
gathered index, the held rows, `gather_rows`, the standardisation statistics (against
one process emulating the two shards, bit for bit) and that a loader error on one
process is raised on both. Exits non-zero on the first mismatch.
"""

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from crl_mmnar_jax import distributed
from crl_mmnar_jax.data import shards  # noqa: E402
from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.sources.synthetic import make_synthetic  # noqa: E402
from crl_mmnar_jax.data.standardize import standardize  # noqa: E402


def main(port: int, pid: int) -> None:
  distributed.initialize_distributed(f"localhost:{port}", 2, pid)
  syn = make_synthetic(300, n_modalities=3, n_tasks=2, seed=5)
  full = syn.cohort
  keep = shards.keep_fn(2, shards.held_shards(2))

  def load_mine():
    mask = keep(full.patient_id)
    return full.subset(mask), {"truth": syn.true_prob_NxT[mask]}

  cohort, layout, extras = shards.assemble(load_mine, 2)
  # What one process emulating both shards builds: shard-major, ids sorted.
  order = np.lexsort((full.patient_id, shards.shard_of(full.patient_id, 2)))
  emulated = full.subset(order)
  np.testing.assert_array_equal(cohort.patient_id, emulated.patient_id)
  np.testing.assert_array_equal(cohort.present, emulated.present)
  np.testing.assert_array_equal(cohort.labels, emulated.labels)
  np.testing.assert_array_equal(extras["truth"], syn.true_prob_NxT[order])
  np.testing.assert_array_equal(layout.shard_N, shards.shard_of(emulated.patient_id, 2))
  assert layout.held == (pid,) and layout.distributed

  mine = np.flatnonzero(layout.shard_N == pid)
  others = np.flatnonzero(layout.shard_N != pid)
  assert isinstance(cohort.features[0], shards.HeldRows)
  np.testing.assert_array_equal(cohort.features[1][mine], emulated.features[1][mine])
  try:
    cohort.features[1][others[:2]]
    raise AssertionError("read a row held by the other process")
  except DataError:
    pass
  s0, s1 = (np.flatnonzero(layout.shard_N == s) for s in (0, 1))
  rows = np.array([s1[0], s0[0], s1[-1], s0[-1], s1[3]])     # the same on both processes
  for m in range(3):
    np.testing.assert_array_equal(shards.gather_rows(cohort.features[m], rows),
                                  emulated.features[m][rows])

  train = np.flatnonzero(np.arange(cohort.n) % 4 != 0)
  std, stats = standardize(cohort, train, layout)
  one = shards.Layout(2, layout.shard_N, (0, 1))
  std1, stats1 = standardize(emulated, train, one)
  for name in cohort.modality_names:
    np.testing.assert_array_equal(stats[name]["mean"], stats1[name]["mean"])
    np.testing.assert_array_equal(stats[name]["sd"], stats1[name]["sd"])
  for m in range(3):
    np.testing.assert_array_equal(std.features[m][mine], std1.features[m][mine])

  def fail_on_1():
    if pid == 1:
      raise DataError("broken.parquet: column 'x' is bad")
    return load_mine()

  try:
    shards.assemble(fail_on_1, 2)
    raise AssertionError("a loader error on process 1 was not raised")
  except DataError as e:
    assert "broken.parquet" in str(e) and (pid == 1 or "process 1" in str(e)), str(e)
  print(f"process {pid}: ok")
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]))
