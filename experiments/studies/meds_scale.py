r"""The `meds` featuriser on a MEDS dataset of MIMIC-IV's size: time and peak memory.

  python -m experiments.studies.meds_scale --out=/tmp/meds_scale \
      --json_out=docs/runs/meds_scale.json
  (defaults: 300,000 subjects, 1,500 events per subject on average: 450 million events,
  about MIMIC-IV v2.2's 299,712 patients in MEDS; measures 30,000 labelled subjects at
  `data.subject_batch` 20,000, 5,000 (the default) and 2,000, and 100,000 and 300,000 at
  5,000)
  python -m experiments.studies.meds_scale --out=/tmp/meds_small --subjects=20000 \
      --events_per_subject=300 --measure=5000:2000,20000:2000     # a 2-minute look

Writes a MEDS root once (reused when `out/manifest.json` matches the flags): per subject
a latent severity z; `GENDER//F|M` (static), `MEDS_BIRTH`, a prediction time (uniform
over 2020-2021) and a heavy-tailed number of events (log-normal, mean
`events_per_subject`) between 30 days before and 10 days after it (the ones after it
must not reach a feature). Each of five modalities is observed with a probability that
rises with z (clinician-driven, MNAR); an observed modality's events use MIMIC-IV MEDS
codes (`LAB//5xxxx` labs and `LAB//22xxxx` vitals with values that shift with z,
`MEDICATION//`, `DIAGNOSIS//`, `PROCEDURE//` without), codes Zipf-distributed over
vocabularies of 1,000 / 500 / 2,000 / 5,000 / 500 codes. Shards of `shard_subjects`
subjects under data/{train,tuning,held_out}/ (80 / 10 / 10 by subject), sorted by
subject and time, row groups of 100,000 rows (what lets a subject batch skip the rest);
`metadata/subject_splits.parquet`; `labels/all.parquet` (task `all`: 1 with
probability sigmoid(1.2 z - 1.5)), and `labels/label_<K>.parquet` its first K subjects'
rows, written when a measurement asks for K.

Each measurement (`--measure=K:BATCH,...`) runs `meds.load_meds` on the first K subjects
with `subject_batch=BATCH` in a fresh process and reports its wall time, its peak
resident memory (VmHWM), the memory of the process before loading (imports) and
the cohort's own arrays (features + present; they grow with K by design). What must
stay flat when K grows at a fixed batch is `working_mb`: the peak minus the imports'
memory minus the cohort.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import resource
import time
from typing import Sequence

import numpy as np
import polars as pl
from absl import flags

from crl_mmnar_jax.data.sources import meds
from experiments.configs import cli

SPLITS = (("train", 0.8), ("tuning", 0.1), ("held_out", 0.1))
# modality: (code format, vocabulary size, share of events, numeric, P(observed) at z=0)
MODALITIES = (("LAB//5{:04d}", 1000, 0.30, True, 0.85),
              ("LAB//22{:04d}", 500, 0.50, True, 0.60),
              ("MEDICATION//DRUG{:04d}", 2000, 0.12, False, 0.75),
              ("DIAGNOSIS//ICD//10//D{:04d}", 5000, 0.05, False, 0.40),
              ("PROCEDURE//P{:04d}", 500, 0.03, False, 0.30))
ROW_GROUP = 100_000
_START, _MINUTE = np.datetime64("2020-01-01T00:00", "us"), np.timedelta64(60_000_000, "us")


def _code_table() -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
  """Every code (strings), each modality's code indices into it, and per code its
  value mean (NaN: no value)."""
  codes, index, means = ["MEDS_BIRTH", "GENDER//F", "GENDER//M"], [], [np.nan] * 3
  rng = np.random.default_rng(12345)
  for fmt, size, _, numeric, _ in MODALITIES:
    index.append(np.arange(len(codes), len(codes) + size))
    codes += [fmt.format(k) for k in range(size)]
    means += list(rng.normal(0, 3, size) if numeric else [np.nan] * size)
  return np.asarray(codes, dtype=object), index, np.asarray(means)


def write_shard(path: str, first: int, n: int, events_per_subject: float,
                seed: int) -> pl.DataFrame:
  """Subjects first..first+n-1 as MEDS events at `path`; returns their labels."""
  per_subject = np.random.default_rng([seed, first, 0])    # z, times, sex, label
  rng = np.random.default_rng([seed, first, 1])            # the events
  codes, index, means = _code_table()
  sid = np.arange(first, first + n, dtype=np.int64)
  z = per_subject.normal(size=n)
  pt = _START + per_subject.integers(0, 2 * 365 * 24 * 60, n) * _MINUTE
  birth = pt - ((18 + per_subject.random(n) * 72) * 365.25 * 24 * 60).astype(
      np.int64) * _MINUTE
  gender = 1 + (per_subject.random(n) < 0.5)
  y = per_subject.random(n) < 1 / (1 + np.exp(-(1.2 * z - 1.5)))
  count = np.maximum(1, rng.lognormal(np.log(events_per_subject) - 0.5, 1.0, n)).astype(int)
  logit = np.log(np.array([m[4] for m in MODALITIES]) / (1 - np.array([m[4] for m in
                                                                         MODALITIES])))
  seen = rng.random((n, len(MODALITIES))) < 1 / (1 + np.exp(-(logit + 1.0 * z[:, None])))
  seen[~seen.any(1), 0] = True
  share = seen * np.array([m[2] for m in MODALITIES])
  per = rng.multinomial(count, share / share.sum(1, keepdims=True))      # (n, M)
  subj, mod = np.repeat(np.arange(n), per.sum(1)), np.concatenate(
      [np.repeat(np.arange(len(MODALITIES)), row) for row in per])
  code = np.empty(len(subj), np.int64)
  for m, (_, size, _, _, _) in enumerate(MODALITIES):
    at = mod == m
    zipf = 1.0 / np.arange(1, size + 1)
    code[at] = index[m][np.searchsorted(np.cumsum(zipf / zipf.sum()), rng.random(at.sum()),
                                        side="right").clip(max=size - 1)]
  value = means[code] + 0.5 * z[subj] + rng.normal(size=len(subj))
  offset = rng.integers(-30 * 24 * 60, 10 * 24 * 60, len(subj))
  times = pt[subj] + offset * _MINUTE
  all_sid = np.concatenate([sid, sid, sid[subj]])
  all_time = np.concatenate([np.full(n, np.datetime64("NaT"), "datetime64[us]"), birth,
                             times])
  all_code = np.concatenate([gender, np.zeros(n, np.int64), code])
  all_value = np.concatenate([np.full(2 * n, np.nan), value])
  order = np.lexsort((all_time.astype(np.int64), all_sid))   # NaT (static) sorts first
  frame = pl.DataFrame({
      "subject_id": all_sid[order],
      "time": pl.Series(all_time[order]),
      "code": pl.Series(codes[all_code[order]], dtype=pl.String),
      "numeric_value": pl.Series(all_value[order], dtype=pl.Float32).fill_nan(None)})
  frame.write_parquet(path, row_group_size=ROW_GROUP)
  return pl.DataFrame({"subject_id": sid, "prediction_time": pl.Series(pt),
                       "boolean_value": y})


def labels_file(out: str, k: int) -> str:
  """labels/label_<k>.parquet: the first k subjects' rows of labels/all.parquet."""
  path = os.path.join(out, "labels", f"label_{k}.parquet")
  if not os.path.isfile(path):
    pl.read_parquet(os.path.join(out, "labels", "all.parquet")).head(k).write_parquet(path)
  return path


def write_root(out: str, subjects: int, events_per_subject: float, shard_subjects: int,
               seed: int) -> None:
  """The MEDS root (see the module docstring), unless `out` already holds this one."""
  manifest = {"subjects": subjects, "events_per_subject": events_per_subject,
              "shard_subjects": shard_subjects, "seed": seed, "version": 2}
  path = os.path.join(out, "manifest.json")
  if os.path.isfile(path) and json.load(open(path)).get("root") == manifest:
    return
  bounds = np.cumsum([0] + [round(f * subjects) for _, f in SPLITS])
  bounds[-1] = subjects
  labels, splits = [], []
  t0 = time.perf_counter()
  for (name, _), lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
    os.makedirs(os.path.join(out, "data", name), exist_ok=True)
    for k, first in enumerate(range(lo, hi, shard_subjects)):
      n = min(shard_subjects, hi - first)
      labels.append(write_shard(os.path.join(out, "data", name, f"{k}.parquet"), int(first),
                                n, events_per_subject, seed))
      splits.append(pl.DataFrame({"subject_id": np.arange(first, first + n),
                                  "split": [name] * n}))
      print(f"shard {name}/{k}: subjects {first}..{first + n - 1} "
            f"({time.perf_counter() - t0:.0f} s)", flush=True)
  os.makedirs(os.path.join(out, "metadata"), exist_ok=True)
  os.makedirs(os.path.join(out, "labels"), exist_ok=True)
  pl.concat(splits).write_parquet(os.path.join(out, "metadata", "subject_splits.parquet"))
  pl.concat(labels).write_parquet(os.path.join(out, "labels", "all.parquet"))
  events = pl.scan_parquet(os.path.join(out, "data", "**", "*.parquet")).select(
      pl.len()).collect().item()
  json.dump({"root": manifest, "events": int(events),
             "write_s": round(time.perf_counter() - t0, 1)}, open(path, "w"))


def _rss_mb() -> float:
  """This process's peak resident memory: VmHWM of /proc/self/status (reset by exec,
  unlike ru_maxrss, which a spawned child inherits from its parent), else ru_maxrss."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_one(root: str, labels: str, batch: int) -> dict:
  """Runs in a fresh process: load_meds' time and this process's peak memory."""
  before = _rss_mb()
  t0 = time.perf_counter()
  cohort, info = meds.load_meds(root, labels, subject_batch=batch)
  seconds = time.perf_counter() - t0
  cohort_mb = (sum(x.nbytes for x in cohort.features) + cohort.present.nbytes) / 2**20
  return {"rows": cohort.n, "subject_batch": batch, "batches": info["subject_batches"],
          "seconds": round(seconds, 1), "peak_rss_mb": round(_rss_mb()),
          "rss_after_imports_mb": round(before), "cohort_mb": round(cohort_mb, 1),
          "working_mb": round(_rss_mb() - before - cohort_mb),
          "modalities": list(cohort.modality_names),
          "features": int(sum(x.shape[1] for x in cohort.features))}


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  del argv
  flags.DEFINE_string("out", "/tmp/meds_scale", "the MEDS root (written once)", flag_values=fv)
  flags.DEFINE_integer("subjects", 300_000, "subjects in the root", flag_values=fv)
  flags.DEFINE_float("events_per_subject", 1500.0, "mean events per subject",
                     flag_values=fv)
  flags.DEFINE_integer("shard_subjects", 10_000, "subjects per data shard", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "generator seed", flag_values=fv)
  flags.DEFINE_string("measure", "30000:20000,30000:5000,30000:2000,100000:5000,"
                      "300000:5000", "K:BATCH pairs (labelled subjects : subject_batch)",
                      flag_values=fv)
  flags.DEFINE_string("json_out", "", "also write the figures here", flag_values=fv)


def main(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> list[dict]:
  cli.no_positional(argv)
  pairs = [tuple(int(v) for v in p.split(":")) for p in fv.measure.split(",") if p]
  if any(k > fv.subjects for k, _ in pairs):
    raise SystemExit(f"--measure asks for more subjects than --subjects={fv.subjects}")
  write_root(fv.out, fv.subjects, fv.events_per_subject, fv.shard_subjects, fv.seed)
  manifest = json.load(open(os.path.join(fv.out, "manifest.json")))
  results = []
  for k, batch in pairs:
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
      r = pool.submit(measure_one, fv.out, labels_file(fv.out, k), batch).result()
    results.append({**r, "subjects_in_root": fv.subjects, "events_in_root": manifest["events"]})
    print(json.dumps(results[-1]), flush=True)
  if fv.json_out:
    with open(fv.json_out, "w") as f:
      json.dump({"root": manifest, "cpus": os.cpu_count(), "measurements": results}, f,
                indent=1)
  return results


SCRIPT = cli.Script(main, define_flags, __doc__)

if __name__ == "__main__":
  SCRIPT.run()
