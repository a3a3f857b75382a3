"""The one-off studies behind numbers in the docs; each is its own command line
(`python -m experiments.studies.NAME --help` lists its flags).

- `mmnar_injection`: does the rectifier recover a known effect? Injects MNAR drops and
  a +0.1 effect of known size into a cohort; the injection tables of docs/results.md
  ("MMNAR injection"), `injection.md/.json/.png` in the workdir.
  `python -m experiments.studies.mmnar_injection --workdir=/tmp/injection_run
  --strengths=0,1,2,3 --seeds=4 --n=6000 --methods=crl_mmnar --effect=0.1`
- `pattern_stability`: the rectifier refitted on each run's validation predictions;
  "Pattern stability and the long tail" in docs/results.md, `stability.md/.csv/.json`.
  `python -m experiments.studies.pattern_stability WORKDIR [WORKDIR ...] --repeats=50`
- `rectifier_null`: harm without a pattern effect, power with one (simulation); the
  table of docs/rectifier.md. `python -m experiments.studies.rectifier_null --reps=200`
- `plain_aggregates`: LightGBM on plain per-variable aggregates of PhysioNet 2012 against
  the featuriser; docs/plain_aggregates.md, docs/plain_aggregates.json and the row of
  docs/cohorts.md. `python -m experiments.studies.plain_aggregates --seeds=0,1,2,3,4
  --out=docs/plain_aggregates.json`
- `synthetic_ceiling`: the learnable ceiling of the synthetic cohort; "The learnable
  ceiling" in docs/results.md, docs/synthetic_ceiling.json.
  `python -m experiments.studies.synthetic_ceiling --n_big=500000 --seeds=0,1,2,3,4
  --out=docs/synthetic_ceiling.json`
- `shift_check`: `predict`'s shift check on fresh samples of the training world and of
  other synthetic worlds; the table of docs/predict.md ("Do the new patients look like
  the training cohort?"). `python -m experiments.studies.shift_check`
- `note_memory`: the peak RSS of the MIMIC-IV note stage on generated notes; the table of
  docs/cohorts_memory.md. `python -m experiments.studies.note_memory gen 0.1 /tmp/notes`,
  then `python -m experiments.studies.note_memory run /tmp/notes discharge` (one JSON
  line). Not in `experiments/bench/`: that package imports jax, which would sit in the
  baseline it measures.
- `meds_synthetic`: the synthetic MMNAR cohort written as a MEDS root plus one labels
  parquet per task (docs/meds.md). `python -m experiments.studies.meds_synthetic
  --out=/tmp/meds_synth --n=5000 --mechanism=mnar`
- `meds_tab`: MEDS-Tab (tabularisation + XGBoost) on a MEDS root and one labels parquet,
  run from its own environment; held_out AUROC and MEDS predictions (docs/meds.md).
  `python -m experiments.studies.meds_tab --meds_root=DIR --labels=L.parquet
  --workdir=/tmp/mt`
- `travelling`: candidate default settings scored across a family of simulated cohorts
  in the tables layout, paired against logistic regression; docs/travelling.md.
  `python -m experiments.studies.travelling --family=check --seeds=0,1,2,3,4
  --labels=logreg,default --out=/tmp/travel`
"""
