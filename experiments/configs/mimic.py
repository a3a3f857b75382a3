r"""MIMIC-IV v2.2 / v3.1: raw tables or MEDS events (credentialed: bring your own copy).

Run (raw PhysioNet layout: hosp/, icu/, optionally note/ and cxr/):
  python -m experiments.run --config=mimic --config.data.dir=/path/to/mimiciv/2.2 \
      --config.data.cache_dir=/tmp/mimic_cache --workdir=/tmp/crl_mimic
  (add --config.data.cxr_embeddings=EMB.parquet for the chest X-ray modality, and
  --config.data.text_encoder=bioclinicalbert --config.data.text_model_path=DIR for
  Bio_ClinicalBERT note embeddings instead of the offline hashed encoder)

Run (MEDS: the MIMIC-IV MEDS ETL's root, a folder of event parquet files, or one file):
  python -m experiments.run --config=mimic --config.data.meds=/path/to/mimic-iv-meds \
      --workdir=/tmp/crl_mimic_meds
  (a MEDS root's metadata/subject_splits.parquet fixes train / val / test; add
  --config.data.meds_splits=False to draw the run's own. The demo root's held_out has no
  positive of any task, so on ../shared/data/meds-mimic-iv-demo pass that flag.)

With neither data.dir nor data.meds it reads the open MIMIC-IV demo in MEDS form
(`data.demo_meds`, ../shared/data/mimic-iv-demo-meds/events.parquet), so
`python -m experiments.run --config=mimic` works out of the box where that file exists
(and says so in one line where it does not).

Cohort: adults, first hospital episode per subject (the split unit; admissions less than
6 h apart are one episode), survived it, anchor_year_group in `data.anchor_years`;
an attrition table and the cohort fingerprint land in WORKDIR/data_info.json. Tasks,
counted from the index discharge: `readmission_30d` (unplanned: elective and
same-day-surgery admissions do not count), `icu_90d` (ICU stay in a later admission),
`mortality_180d`. Modalities: ehr (always observed), cxr, discharge_note,
radiology_note; a modality observed for nobody is dropped (the MEDS demo has no notes
and no images, so it trains on ehr alone). Definitions: `crl_mmnar_jax/data/sources/mimic/`.

Demo: 100 subjects; 95 in the cohort (5 died in their first admission); 13 are
readmitted within 30 days (15 before episodes and planned admissions: one admission 1
minute after an observation stay, one same-day surgery), 14 go to an ICU within 90 days
and 9 die within 180 days.
Validation and test splits hold 14 subjects each, so the counts per split are tiny:
seed 0 (the default) has both classes of every task in validation; some seeds do not
(seed 9 has no 180-day death in validation and the runner stops with a one-line
message: pick another seed, `--config.data.val_fraction=0.25`, or drop the task with
`--config.data.tasks=readmission_30d,icu_90d`). Expected result on the demo: noise.
Seed 0 with `--config.train.epochs=3` gave (with the labels before the episode rule)
test AUROC 0.43 for readmission_30d (4
positives of 14), 0.88 for icu_90d (4 of 14) and 0.00 for mortality_180d (1 of 14),
mean 0.43 (the logistic-regression reference: mean 0.30). On full MIMIC-IV the result
depends on your copy; there is no shared copy to report numbers from.

Preset `tiny` (smoke runs): 2 epochs of a D = 32 model, 50 bootstrap draws, no progress
bar, on whatever data the flags name (the demo by default):
  python -m experiments.run --config=mimic:tiny --workdir=/tmp/crl_mimic_tiny
On the demo, about 25 seconds of CPU; its AUROCs (seed 0: mean 0.45) are noise, like
the full demo run's.
"""

from experiments.configs.base import apply_preset, get_base_config, tiny


def get_config(arg: str = ""):
  c = get_base_config("mimic")   # data.*: crl_mmnar_jax/config/sources.py
  c.model.dim = 64
  c.model.mlp_ratio = 2
  c.model.proj_dim = 32
  c.train.lr = 5e-4
  return apply_preset(c, "mimic", arg, {"tiny": tiny})
