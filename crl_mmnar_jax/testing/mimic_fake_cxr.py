"""MIMIC-CXR 2.0.0 metadata and image embeddings of the generated MIMIC-IV directory
(`mimic_fake`)."""

from __future__ import annotations

import numpy as np
import polars as pl

from crl_mmnar_jax.testing.mimic_fake_common import (
  FULL_SCALE,
  id_block,
  outpatient_times,
  rank_in_group,
  timestamps,
)

CXR_PROCEDURES = [("CHEST (PA AND LAT)", 0.45), ("CHEST (PORTABLE AP)", 0.45),
                  ("CHEST (PRE-OP PA AND LAT)", 0.04), ("CHEST (SINGLE VIEW)", 0.06)]
CXR_SIZES = [(3056, 2544), (2544, 3056), (2539, 3050), (3050, 2539), (2048, 2500)]
CXR_IN_SHARE = 0.7          # share of studies inside admissions
IMAGES_PER_STUDY = FULL_SCALE["cxr_images"] / FULL_SCALE["cxr_studies"]


def cxr_tables(rng, subject, t0, pat, admit, disch, state, dim):
  """The CXR metadata rows of one chunk (studies inside admissions and outpatient, 1-3
  images each) and one embedding row (``dicom_id`` + `dim` float32 columns) per image."""
  n, A = len(subject), len(pat)
  k_in = rng.poisson(CXR_IN_SHARE * FULL_SCALE["cxr_studies"] / FULL_SCALE["admissions"], A)
  k_out = rng.poisson((1 - CXR_IN_SHARE) * FULL_SCALE["cxr_studies"] / FULL_SCALE["patients"],
                      n)
  ai = np.repeat(np.arange(A), k_in)
  po = np.repeat(np.arange(n), k_out)
  t_in = admit[ai] + (rng.random(len(ai)) * (disch[ai] - admit[ai])).astype(np.int64)
  times = np.concatenate([t_in, outpatient_times(rng, t0, po)])
  subj = np.concatenate([subject[pat[ai]], subject[po]])
  order = np.lexsort((times, subj))
  times, subj = times[order], subj[order]
  n_st = len(times)
  study = id_block(rng, state["study"], n_st, state["study_stride"], 50_000_000)
  state["study"] += n_st
  n_img = 1 + rng.binomial(2, (IMAGES_PER_STUDY - 1) / 2, n_st)
  st = np.repeat(np.arange(n_st), n_img)
  img_k = rank_in_group(st)
  proc_i = rng.choice(len(CXR_PROCEDURES), n_st,
                      p=np.array([p[1] for p in CXR_PROCEDURES]) / sum(
                          p[1] for p in CXR_PROCEDURES))[st]
  portable = proc_i == 1
  view = np.where(img_k == 1, np.where(portable, 2, 0), np.where(img_k == 2, 1, 3))
  views = [("PA", "postero-anterior"), ("LATERAL", "lateral"), ("AP", "antero-posterior"),
           ("LL", "left lateral")]
  size = rng.integers(0, len(CXR_SIZES), len(st))
  hexes = rng.integers(0, 2 ** 32, (len(st), 5), dtype=np.uint64)
  dicom = ["-".join(f"{v:08x}" for v in row) for row in hexes.tolist()]
  millis = rng.integers(0, 1000, len(st))
  ts = timestamps(times[st])
  meta = pl.DataFrame({
      "dicom_id": pl.Series(dicom, dtype=pl.Utf8), "subject_id": subj[st], "study_id": study[st],
      "PerformedProcedureStepDescription": pl.Series(
          [p[0] for p in CXR_PROCEDURES]).gather(proc_i),
      "ViewPosition": pl.Series([v[0] for v in views]).gather(view),
      "Rows": np.array([c[0] for c in CXR_SIZES])[size],
      "Columns": np.array([c[1] for c in CXR_SIZES])[size],
      "StudyDate": ts.dt.strftime("%Y%m%d").cast(pl.Int64),
      "StudyTime": ts.dt.strftime("%H%M%S").cast(pl.Float64) + millis / 1000.0,
      "ProcedureCodeSequence_CodeMeaning": pl.Series(
          [p[0] for p in CXR_PROCEDURES]).gather(proc_i),
      "ViewCodeSequence_CodeMeaning": pl.Series([v[1] for v in views]).gather(view),
      "PatientOrientationCodeSequence_CodeMeaning": pl.Series(
          ["Erect", "Recumbent", None]).gather(np.where(portable, 1,
                                                       rng.choice([0, 2], len(st),
                                                                  p=[0.95, 0.05]))),
  })
  emb = rng.standard_normal((len(st), dim), dtype=np.float32)
  emb_df = pl.DataFrame(emb, schema=[f"emb_{j:04d}" for j in range(dim)], orient="row")
  return meta, emb_df.insert_column(0, meta["dicom_id"])

