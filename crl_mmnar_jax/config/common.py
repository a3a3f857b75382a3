"""The fields every config has, whatever its data source: the defaults of
`python -m experiments.run` (the choices behind them: docs/design.md, "Choices the paper
leaves open"). A data source's own fields (`data.dir`, ...) are in `sources.py`."""

from __future__ import annotations

from crl_mmnar_jax.config.field import Field

_PREPROCESS = ("standard", "quantile_normal")

FIELDS: tuple[Field, ...] = (
    Field("seed", 0, int, "the run's seed: splits, initialisation, batches, rectifier folds",
          low=0),
    Field("method", "crl_mmnar", str,
          "CRL-MMNAR, a baseline, or 'stack' (crl_mmnar_jax.methods.RUN_METHODS)"),

    # -------------------------------------------------------------------------- data
    Field("data.name", "", str, "the data source (crl_mmnar_jax.config.SOURCES), set by "
          "each config"),
    Field("data.val_fraction", 0.15, float, "patients in the validation split",
          low=0.0, high=1.0, low_open=True, high_open=True),
    Field("data.test_fraction", 0.15, float, "patients in the test split",
          low=0.0, high=1.0, low_open=True, high_open=True),
    Field("data.splits_file", "", str,
          "reuse another run's splits.parquet (joined on patient_id); '' draws them"),
    Field("data.preprocess", "standard", str, "'standard': z-scores; 'quantile_normal': "
          "per-feature quantile map to N(0, 1)", choices=_PREPROCESS),
    Field("data.extreme_factor", 1e3, float,
          "cells beyond median ± this · robust sd are not measured (0: off)", low=0.0),

    # -------------------------------------------------------------------------- model
    Field("model.dim", 128, int, "width D of the encodings, tokens and fusion", low=1),
    Field("model.n_layers", 1, int, "transformer fusion layers", low=0),
    Field("model.n_heads", 8, int, "attention heads (a divisor of model.dim)", low=1),
    Field("model.mlp_ratio", 4, int, "fusion MLP width as a multiple of D", low=1),
    Field("model.dropout", 0.1, float, "dropout rate everywhere", low=0.0, high=1.0,
          high_open=True),
    Field("model.proj_dim", 64, int, "width P of the contrastive projections", low=1),
    Field("model.use_missingness_embedding", True, bool,
          "z, the gates and the L_miss head (ablation switch)"),
    Field("model.use_modality_tokens", True, bool, "learned modality tokens t_m"),
    Field("model.use_reconstruction", True, bool, "leave-one-out decoders Rec_m (L_rec)"),
    Field("model.use_contrastive", True, bool,
          "contrastive projections (L_con; needs use_reconstruction)"),
    Field("model.miss_head", "bce", str, "L_miss: 'bce' per modality, 'pattern' a 2^M "
          "softmax", choices=("bce", "pattern")),
    Field("model.num_embedding", "none", str, "numerical feature embeddings before the "
          "encoders", choices=("none", "ple", "ple_tree", "periodic")),
    Field("model.wide", True, bool, "add a linear logit on the features and modality "
          "indicators to every neural method's (Wide & Deep; crl_mmnar_jax/wide.py)"),
    Field("model.num_bins", 48, int, "PLE: bins per feature at most (training rows)", low=1),
    Field("model.num_embedding_dim", 16, int, "width of each feature's embedding", low=1),
    Field("model.frequency_scale", 0.1, float, "periodic: sd of the initial frequencies",
          low=0.0, low_open=True),

    # -------------------------------------------------------------------------- loss
    Field("loss.pred", 1.0, float, "weight of L_pred", low=0.0),
    Field("loss.miss", 0.5, float, "weight of L_miss", low=0.0),
    Field("loss.rec", 1.0, float, "weight of L_rec", low=0.0),
    Field("loss.con", 0.3, float, "weight of L_con", low=0.0),
    Field("loss.temperature", 0.1, float, "InfoNCE temperature of L_con", low=0.0,
          low_open=True),
    Field("loss.focal_gamma", 0.0, float, "focal-loss gamma of L_pred (0: plain BCE)",
          low=0.0),
    Field("loss.rec_stop_gradient", True, bool, "the L_rec target e_m is stop-gradient"),
    Field("loss.rec_drops", 1, int, "L_rec/L_con: random observed modalities each patient "
          "drops per step, one fusion pass each (0: all, exact leave-one-out)", low=0),

    # -------------------------------------------------------------------------- train
    Field("train.batch_size", 128, int, "patients per training step", low=1),
    Field("train.eval_batch_size", 1024, int, "patients per evaluation step", low=1),
    Field("train.epochs", 30, int, "training epochs at most", low=1),
    Field("train.pretrain_epochs", 0, int,
          "epochs of the auxiliary losses alone (no L_pred) before train.epochs", low=0),
    # Above 1, AdamW steps are larger than any standardised feature: the run diverges or
    # saturates (AUROC exactly 0.5) while the loss stays finite.
    Field("train.lr", 2e-4, float, "peak AdamW learning rate", low=0.0, high=1.0,
          low_open=True),
    Field("train.final_lr_fraction", 0.05, float,
          "cosine decay ends at this fraction of train.lr", low=0.0, high=1.0),
    Field("train.warmup_steps", 100, int, "linear warm-up steps, at most "
          "train.warmup_max_fraction of the schedule", low=0),
    Field("train.warmup_max_fraction", 0.1, float, "warm-up ends within this share of the "
          "schedule's steps, whatever the cohort's size", low=0.0, high=1.0),
    Field("train.weight_decay", 1e-4, float, "AdamW weight decay", low=0.0),
    Field("train.clip_norm", 1.0, float, "global gradient-norm clip", low=0.0,
          low_open=True),
    Field("train.aux_final", 0.1, float, "auxiliary weights anneal from 1 to this",
          low=0.0, high=1.0),
    Field("train.patience", 5, int, "epochs without validation-AUROC improvement", low=1),
    Field("train.log_every", 50, int, "steps between metrics.jsonl lines", low=1),
    Field("train.checkpoint_every", 0, int,
          "steps between mid-epoch checkpoints (0: epoch ends only)", low=0),
    Field("train.progress", True, bool, "a live progress bar when stderr is a terminal"),
    Field("train.tensorboard", False, bool,
          "also WORKDIR/tensorboard/ event files (extra `tensorboard`)"),
    Field("train.compute_dtype", "float32", str, "forward/backward dtype; parameters stay "
          "float32", choices=("float32", "bfloat16")),
    Field("train.cv_folds", 1, int, ">1: K cross-fitted members (ensemble.py), "
          "out-of-fold validation", low=1, high=20),
    Field("train.scan_epoch", "auto", str, "run each epoch as one jax.lax.scan over a "
          "device-resident cohort (train/scan.py): 'auto' when one process holds every row, "
          "no train.checkpoint_every and the cohort takes <= 1 GiB; 'on'; 'off' (host loop)",
          choices=("auto", "on", "off")),
    Field("train.stack_members", True, bool,
          "cv_folds: train the members in one vmapped step (train/members.py)"),
    Field("train.data_shards", 1, int,
          ">1: each process loads only its shards' patients (data/shards.py)", low=1),

    # -------------------------------------------------------------------------- baseline
    # The baselines (crl_mmnar_jax/methods/); the neural ones share model's width, depth,
    # heads and dropout and train's schedule.
    Field("baseline.reference_size", 512, int,
          "MUSE, M3Care: training patients read at evaluation", low=1),
    Field("baseline.muse_layers", 2, int, "MUSE: graph layers", low=0),
    Field("baseline.muse_edge_dropout", 0.5, float, "MUSE: P(a patient's edges are "
          "dropped in the second view)", low=0.0, high=1.0, high_open=True),
    Field("baseline.muse_con_weight", 0.5, float, "MUSE: weight of each consistency loss",
          low=0.0),
    Field("baseline.muse_temperature", 0.07, float, "MUSE: InfoNCE temperature", low=0.0,
          low_open=True),
    Field("baseline.m3care_temperature", 0.1, float,
          "M3Care: initial (learned) similarity temperature", low=0.0, low_open=True),
    Field("baseline.logreg_l2_grid", (1e-4, 1e-3, 1e-2, 1e-1), tuple,
          "logreg: L2 penalties tried, chosen on validation AUROC", low=0.0),
    Field("baseline.gbt_n_estimators", 1000, int, "gbt: trees at most", low=1),
    Field("baseline.gbt_learning_rate", 0.05, float, "gbt: learning rate", low=0.0,
          high=1.0, low_open=True),
    Field("baseline.gbt_num_leaves", 31, int, "gbt: leaves per tree", low=2),
    Field("baseline.gbt_min_child_samples", 20, int, "gbt: rows per leaf at least", low=1),
    Field("baseline.gbt_early_stopping", 50, int,
          "gbt: rounds without validation-AUROC improvement", low=1),
    Field("baseline.gbt_feature_fraction", 1.0, float, "gbt: features sampled per tree "
          "(LightGBM feature_fraction)", low=0.0, high=1.0, low_open=True),
    Field("baseline.gbt_lambda_l2", 0.0, float,
          "gbt: L2 penalty on leaf values (LightGBM lambda_l2)", low=0.0),

    # -------------------------------------------------------------------------- stack
    Field("stack.members", "crl_mmnar,gbt,logreg", str, "method=stack: the member methods, "
          "comma-separated, each cross-fitted on the same train.cv_folds folds"),
    Field("stack.l2", 1.0, float, "method=stack: L2 penalty of the logistic stacker on the "
          "members' logits (stacking.py)", low=0.0, low_open=True),
    Field("stack.n_boot", 1000, int, "method=stack: paired bootstrap draws of the no-harm "
          "rule", low=2),
    Field("stack.z", 1.645, float, "method=stack: the stack is used where its out-of-fold "
          "AUROC gain over the best member minus z·sd is above 0", low=0.0),

    # -------------------------------------------------------------------------- rectifier
    Field("rectifier.n_folds", 5, int, "cross-fitting folds", low=2),
    Field("rectifier.kappa_grid", (0.0, 0.01, 0.02, 0.05, 0.1), tuple,
          "gate thresholds kappa tried", low=0.0),
    Field("rectifier.lambda_grid", (0.0, 0.25, 0.5, 0.75, 1.0), tuple,
          "correction strengths lambda tried", low=0.0, high=1.0),
    Field("rectifier.z", 0.0, float, "gate: |tau| - z·se must exceed kappa (0: off)",
          low=0.0),
    Field("rectifier.min_count", 20, int, "patients a pattern cell needs to be corrected",
          low=1),
    Field("rectifier.shrinkage", 20.0, float, "pseudo-count of the shrinkage of a cell's "
          "tau toward the global mean (0: off)", low=0.0),
    Field("rectifier.rule", "lcb", str, "selection: 'lcb' corrects only where the "
          "cross-fitted gain is sure, 'min' the plain minimum (rectifier/select.py)",
          choices=("lcb", "one_se", "min")),
    Field("rectifier.rule_z", 1.645, float, "lcb/one_se: z of the bound on the gain",
          low=0.0),
    Field("rectifier.auroc_guard", True, bool,
          "drop a correction that ranks the fitting rows worse"),

    # -------------------------------------------------------------------------- eval
    Field("eval.n_boot", 1000, int, "bootstrap draws of the confidence intervals", low=0),
    Field("eval.min_pattern_count", 20, int,
          "per-pattern metrics are reported for patterns this large", low=1),
    Field("eval.plots", True, bool, "write the figures"),
    Field("eval.smoke", False, bool,
          "True in the `tiny` presets: numbers that mean nothing"),
    Field("eval.reference_logreg", True, bool, "also fit the logistic-regression "
          "reference (mean imputation + indicators) on the same splits"),
)
