"""Fake data for tests and benchmarks, in the published raw layouts of the databases
the loaders read (the real ones are credentialed). Nothing here is imported by the
library itself.

* `mimic_fake`: ``write_fake_mimic(directory, scale=...)``, a generated MIMIC-IV v2.2
  (or v3.1) directory with MIMIC-IV-Note and MIMIC-CXR tables at any fraction of the
  real sizes, deterministic for a seed (used by ``experiments/bench/`` and
  ``experiments/mimic_fake.py``, its command line). Its tables come from
  `mimic_fake_events` (labevents, chartevents, d_labitems, d_items),
  `mimic_fake_orders` (prescriptions, diagnoses_icd, procedures_icd),
  `mimic_fake_notes` (discharge, radiology) and `mimic_fake_cxr` (CXR metadata and
  embeddings); `mimic_fake_common` holds the layout (real row counts, column order,
  table paths taken from the loader's `crl_mmnar_jax.data.sources.mimic.schema`) and
  shared helpers, `csv_writer` the streaming gzip CSV writer.
* `mimic_fixture`: a small hand-made MIMIC-IV fixture (raw tables and the same data as
  MEDS events) with the labels expected of it.
* `eicu_fixture`: a small hand-made eICU-CRD v2.0 fixture.
"""
