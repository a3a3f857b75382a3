"""Each data source's own fields (`config.data.name` -> its `data.*` fields), besides the
fields every config has (`common.py`). The loaders (`crl_mmnar_jax/data/sources/`)
check what needs their files (task names, set names, folders)."""

from __future__ import annotations

from crl_mmnar_jax.config.field import Field, SharedData

# The `meds` source's default code prefixes (the MIMIC-IV MEDS ETL: LAB//5xxxx are
# labevents, LAB//22xxxx chartevents); `data.sources.meds.DEFAULT_MODALITIES`.
MEDS_MODALITIES = ("labs=LAB//5,vitals=LAB//2|SUBJECT_WEIGHT_AT_INFUSION//|"
                   "SUBJECT_FLUID_OUTPUT//,medications=MEDICATION//|INFUSION_START//,"
                   "diagnoses=DIAGNOSIS//,procedures=PROCEDURE//")
# The eICU-CRD MEDS ETL's codes (Medical-Event-Data-Standard/eICU_MEDS event_configs:
# LAB//<labname>//<system>, VITALS//PERIODIC|APERIODIC//..., MEDICATION//STARTED|STOPPED//,
# INFUSION_DRUG//, DIAGNOSIS//ICD//9//, ADMISSION_DIAGNOSIS//, TREATMENT//ENTERED//,
# CAREPLAN_GENERAL|EOL|GOAL|INFECTIOUS_DISEASE).
EICU_MEDS_MODALITIES = ("labs=LAB//,vitals=VITALS//|SUBJECT_WEIGHT_AT_INFUSION,"
                        "medications=MEDICATION//|INFUSION_DRUG//,"
                        "diagnoses=DIAGNOSIS//|ADMISSION_DIAGNOSIS//,"
                        "procedures=TREATMENT//,care_plans=CAREPLAN_")
# `data.modalities` may name one of these instead of spelling the prefixes out.
MEDS_VOCABULARIES = {"mimic-iv": MEDS_MODALITIES, "eicu": EICU_MEDS_MODALITIES}


def _strict() -> Field:
  return Field("data.strict", False, bool,
               "True: refuse imperfect rows (file:line) instead of skipping and counting them")


def _window(hours: float) -> Field:
  return Field("data.window_hours", hours, float,
               "features come from the first this many hours of the stay", low=0.0,
               low_open=True)


def _cache_dir() -> Field:
  return Field("data.cache_dir", "", str, "keeps each extraction stage as parquet, so "
               "that a rerun skips finished stages ('': a fresh temporary folder)")


SOURCES: dict[str, tuple[Field, ...]] = {
    # The embedded synthetic MMNAR cohort (data/sources/synthetic.py, make_synthetic).
    "synthetic": (
        Field("data.n", 20_000, int, "patients drawn", low=10),
        Field("data.n_modalities", 4, int, "modalities M (m0 always observed)", low=2),
        Field("data.n_tasks", 3, int, "binary outcomes", low=1),
        Field("data.mechanism", "mnar", str, "what drives the missingness: nothing (mcar), "
              "modality 0 (mar), the latent severity (mnar)",
              choices=("mcar", "mar", "mnar")),
        Field("data.prevalence", 0.2, float, "mean outcome probability", low=0.0,
              high=1.0, low_open=True, high_open=True),
        Field("data.pattern_effect", -1.0, float, "direct effect of the observation "
              "pattern on the outcome logit; < 0: the generator's default"),
        Field("data.seed", 0, int, "the patients (and the world, unless world_seed >= 0)",
              low=0),
        Field("data.world_seed", -1, int, ">= 0: the generator's world alone", low=-1),
    ),
    # Your own cohort in the generic tables layout (docs/tables.md).
    "tables": (
        Field("data.dir", "", str, "the cohort folder: labels.parquet and one parquet "
              "file per modality"),
        Field("data.tasks", "", str, "comma-separated subset of label columns ('' = all)"),
    ),
    # PhysioNet/CinC Challenge 2012 (data/sources/physionet2012.py).
    "physionet2012": (
        Field("data.dir", SharedData("physionet2012"), str, "the set-* folders and "
              "Outcomes-*.txt (default: physionet2012/ of the shared data folder)"),
        _strict(),
        Field("data.tasks", "in_hospital_death", str,
              "comma-separated: in_hospital_death, los_gt_7"),
        _window(48.0),
        Field("data.train_sets", "", str,
              "e.g. 'a,b': with test_sets, split by set (the challenge)"),
        Field("data.test_sets", "", str, "e.g. 'c'"),
    ),
    # YAIB mortality24 demo cohorts (data/sources/yaib.py).
    "yaib": (
        Field("data.dir", SharedData("yaib-demo"), str, "the YAIB data root (default: "
              "yaib-demo/ of the shared data folder)"),
        Field("data.databases", "mimic_demo,eicu_demo", str, "comma-separated databases "
              "pooled"),
        _strict(),
        Field("data.task", "mortality24", str, "the YAIB task folder"),
        _window(24.0),
        Field("data.test_database", "", str,
              "e.g. 'mimic_demo': test on it, train on the others (external validation)"),
    ),
    # eICU-CRD v2.0 from its raw tables (data/sources/eicu.py).
    "eicu": (
        Field("data.dir", "", str, "the eICU-CRD v2.0 tables (credentialed)"),
        _strict(),
        Field("data.tasks", "mortality,icu_readmission", str, "comma-separated: mortality, "
              "icu_readmission, hospital_readmission"),
        _window(24.0),
        _cache_dir(),
    ),
    # Any MEDS root with labels in the MEDS label schema (data/sources/meds.py).
    "meds": (
        Field("data.meds_root", SharedData("meds-mimic-iv-demo"), str, "a MEDS root "
              "(data/**/*.parquet, metadata/subject_splits.parquet); default: the MIMIC-IV "
              "demo of the shared data folder"),
        Field("data.task", "", str, "labels parquet file(s) in the MEDS label schema or "
              "ACES task configs (*.yaml, run with $CRL_MMNAR_ACES), comma-separated: one "
              "task each, named by file stem"),
        Field("data.modalities", MEDS_MODALITIES, str, "code prefixes per modality: "
              "name=PREFIX|PREFIX,..., or an ETL's vocabulary by name: 'mimic-iv' (the "
              "default's prefixes) or 'eicu'"),
        Field("data.window_hours", 0.0, float, "features from events in this many hours "
              "before the prediction time (0: all history)", low=0.0),
        Field("data.numeric_codes", 16, int, "per modality: the most frequent codes with "
              "values, as last / mean / count", low=0),
        Field("data.count_codes", 16, int, "per modality: the most frequent codes without "
              "values, as counts", low=0),
        Field("data.subject_batch", 5_000, int, "subjects featurised together: memory "
              "grows with this, not with the dataset (0: all at once)", low=0),
        Field("data.text_modalities", "", str, "modalities (of data.modalities) whose "
              "events carry notes in text_value: their mean hashed n-gram embedding is "
              "added to the modality's features"),
        Field("data.text_dim", 128, int, "width of those note embeddings", low=1),
    ),
    # MIMIC-IV, raw tables or MEDS events (data/sources/mimic/).
    "mimic": (
        Field("data.dir", "", str, "raw MIMIC-IV root (hosp/, icu/, note/, cxr/)"),
        Field("data.meds", "", str, "or MEDS events: a parquet file, a folder of them, "
              "or a MEDS root (data/, metadata/)"),
        Field("data.meds_splits", True, bool, "a MEDS root's "
              "metadata/subject_splits.parquet fixes the splits (train / tuning / "
              "held_out); False draws the run's own by subject"),
        Field("data.demo_meds", SharedData("mimic-iv-demo-meds/events.parquet"), str,
              "read when dir and meds are both empty: the open MIMIC-IV demo in MEDS"),
        Field("data.version", "", str, "'2.2', '3.1' or '' (from the folder name, else "
              "unknown)"),
        _strict(),
        Field("data.tasks", "readmission_30d,icu_90d,mortality_180d", str,
              "comma-separated subset of these"),
        _cache_dir(),
        Field("data.text_encoder", "hashed", str, "note embeddings: the offline hashed "
              "encoder or Bio_ClinicalBERT", choices=("hashed", "bioclinicalbert")),
        Field("data.text_model_path", "", str, "Bio_ClinicalBERT: the model folder"),
        Field("data.text_device", "auto", str,
              "Bio_ClinicalBERT: 'auto' (GPU if any), 'cpu', 'cuda:N'"),
        Field("data.cxr_embeddings", "", str, "chest X-ray embeddings parquet ('': no cxr)"),
        Field("data.cxr_metadata", "", str,
              "'': <dir>/cxr/mimic-cxr-2.0.0-metadata.csv.gz"),
        Field("data.anchor_years", "2008-2019", str, "anchor_year_group kept ('' = all; "
              "v3.x adds 2020-2022, which has no notes or chest X-rays)"),
    ),
}
