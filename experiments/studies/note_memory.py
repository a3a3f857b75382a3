"""Peak RSS of the MIMIC-IV note stage (`mimic.stages.note_stage`) on generated notes
(docs/cohorts_memory.md).

  python -m experiments.studies.note_memory gen SCALE DIR   # SCALE x MIMIC-IV-Note as
      # DIR/{discharge,radiology}.csv.gz, texts from the sentence pools of
      # crl_mmnar_jax.testing.mimic_fake_notes, every note in its subject's window
  python -m experiments.studies.note_memory run DIR TABLE [N_SUBJECTS [STAGES_PY]]
      # the stage alone in this fresh process (hashed encoder): one JSON line with the
      # peak RSS; N_SUBJECTS pads the cohort with subjects without notes; STAGES_PY runs
      # the note_stage of another copy of stages.py (e.g. an older one) instead

The peak is ``ru_maxrss`` minus the RSS after imports (``stage_peak_mb``).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import polars as pl


def _rss_mb() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def gen(scale: float, folder: str) -> None:
  from crl_mmnar_jax.testing.mimic_fake_common import FULL_SCALE
  from crl_mmnar_jax.testing.mimic_fake_notes import DISCHARGE_SENTENCES, RADIOLOGY_SENTENCES
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  n_subjects = int(FULL_SCALE["admitted_patients"] * scale)
  subjects = np.sort(rng.choice(10_000_000, n_subjects, replace=False)) + 10_000_000
  np.save(os.path.join(folder, "subjects.npy"), subjects)
  for table, sentences, words in (("discharge", DISCHARGE_SENTENCES, 900),
                                  ("radiology", RADIOLOGY_SENTENCES, 120)):
    n = int(FULL_SCALE[table] * scale)
    k_N = np.maximum(1, rng.poisson(words / np.mean([len(s.split()) for s in sentences]), n))
    pick = rng.integers(0, len(sentences), k_N.sum())
    ends = np.cumsum(k_N)
    texts = [" ".join(sentences[j] for j in pick[e - k:e]) for e, k in zip(ends, k_N)]
    out = os.path.join(folder, f"{table}.csv")
    pl.DataFrame({"subject_id": rng.choice(subjects, n), "note_id": np.arange(n),
                  "text": texts}).with_columns(
        charttime=pl.lit(datetime.datetime(2150, 1, 1))).write_csv(out)
    subprocess.run(["gzip", "-1", "-f", out], check=True)
    print(f"{table}: {n} notes, {sum(map(len, texts)) / 1e6:.0f}M characters")


def run(folder: str, table: str, n_subjects: int = 0, stages_py: str = "") -> None:
  from crl_mmnar_jax.data.sources.mimic import NOTE_BATCH_CHARS
  from crl_mmnar_jax.data.sources.mimic.stages import note_stage
  from crl_mmnar_jax.data.text_embed import get_encoder
  if stages_py:
    spec = importlib.util.spec_from_file_location("stages_under_test", stages_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    note_stage = module.note_stage
  subjects = np.load(os.path.join(folder, "subjects.npy"))
  if n_subjects > len(subjects):
    extra = np.setdiff1d(np.arange(30_000_000, 30_000_000 + n_subjects), subjects)
    subjects = np.sort(np.concatenate([subjects, extra[:n_subjects - len(subjects)]]))
  rows = pl.scan_csv(os.path.join(folder, f"{table}.csv.gz"), infer_schema=False,
                     schema_overrides={"subject_id": pl.Int64, "note_id": pl.Int64,
                                       "charttime": pl.Datetime("us")})
  base = _rss_mb()
  start = time.perf_counter()
  df, report = note_stage(rows, table, table, subjects, lambda: get_encoder("hashed"),
                          folder, NOTE_BATCH_CHARS)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(json.dumps({"stages": stages_py or "current", "table": table,
                    "subjects": len(subjects), **report, "baseline_rss_mb": round(base),
                    "peak_rss_mb": round(peak), "stage_peak_mb": round(peak - base),
                    "seconds": round(time.perf_counter() - start, 1),
                    "output_mb": round(df.estimated_size() / 2**20)}))


if __name__ == "__main__":
  if sys.argv[1:2] == ["gen"] and len(sys.argv) == 4:
    gen(float(sys.argv[2]), sys.argv[3])
  elif sys.argv[1:2] == ["run"] and 4 <= len(sys.argv) <= 6:
    run(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0,
        sys.argv[5] if len(sys.argv) > 5 else "")
  else:
    sys.exit(__doc__)
