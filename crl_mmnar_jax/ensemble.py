"""Cross-fitted ensembles (`train.cv_folds=K`): every non-test patient trains K-1 members.

The non-test patients are dealt to K folds (`splits.assign_folds`, stratified like the
validation split). Member k trains on the other K-1 folds and is early-stopped (or, for
a direct method, selected) on fold k, with its own standardisation from its own
training rows. Then:

* each non-test patient's out-of-fold (OOF) probability comes from the one member that
  never trained on it: these are the "validation" predictions that model selection
  reports and the rectifier is fitted on (K times more rows than one validation split);
* a test patient's probability is the mean of the K members' probabilities.

Member k's seed is `seed * K + k` (distinct members, the same for a rerun); its
checkpoints and metrics live in `WORKDIR/members/k/`, so a killed run resumes the
member it was training and keeps the finished ones. The members train one after the
other: a member costs what one run costs.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import ml_collections
import numpy as np

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data import splits as splits_lib
from crl_mmnar_jax.data.errors import DataError

FitFn = Callable[..., tuple[dict[str, np.ndarray], dict]]


def member_folds(config: ml_collections.ConfigDict, cohort: Cohort,
                 nontest_rows: np.ndarray) -> np.ndarray:
  """Fold of each non-test row (labels of non-test patients only are read)."""
  k = int(config.train.cv_folds)
  fold = splits_lib.assign_folds(
      cohort.patient_id[nontest_rows], cohort.pattern[nontest_rows],
      cohort.labels[nontest_rows], k, seed=int(config.seed),
      group_id=None if cohort.group_id is None else cohort.group_id[nontest_rows])
  for f in range(k):
    held = nontest_rows[fold == f]
    for t, name in enumerate(cohort.task_names):
      y = cohort.labels[held, t]
      y = y[~np.isnan(y)]
      if len(y) == 0 or y.min() == y.max():
        raise DataError(f"train.cv_folds={k}: fold {f} has one class of task '{name}' "
                        f"({int(y.sum())} of {len(y)} positive); use fewer folds")
  return fold


def fit_members(config: ml_collections.ConfigDict, cohort: Cohort,
                nontest_rows: np.ndarray, test_rows: np.ndarray, workdir: str,
                fit_member: FitFn,
                prepare: Callable[[Cohort, np.ndarray], tuple[Cohort, dict]],
                log: Callable[[str], None]) -> tuple[dict[str, np.ndarray], dict, np.ndarray]:
  """Trains the K members; returns ({"val": OOF probs of `nontest_rows`, "test": mean
  probs of `test_rows`}, the training record, the fold of each non-test row).

  `fit_member(member_config, standardised_cohort, stats, train_rows, val_rows,
  {"val": ..., "test": ...}, member_workdir)` trains one member and returns its
  (probabilities per row set, training record), as `experiment.fit_and_predict` does.
  `prepare(cohort, train_rows)` standardises with a member's training rows only
  (`data.standardize.standardize`). `cohort` is the unstandardised cohort with test
  labels hidden.
  """
  k = int(config.train.cv_folds)
  fold = member_folds(config, cohort, nontest_rows)
  oof = np.full((len(nontest_rows), cohort.n_tasks), np.nan, np.float32)
  test_sum = np.zeros((len(test_rows), cohort.n_tasks), np.float64)
  members = []
  for f in range(k):
    train, held = nontest_rows[fold != f], nontest_rows[fold == f]
    member_config = config.copy_and_resolve_references()
    member_config.seed = int(config.seed) * k + f
    member_cohort, stats = prepare(cohort, train)
    member_dir = os.path.join(workdir, "members", str(f))
    if jax.process_index() == 0:
      os.makedirs(member_dir, exist_ok=True)
    log(f"member {f + 1}/{k}: train {len(train)}, held out {len(held)}")
    probs, record = fit_member(member_config, member_cohort, stats, train, held,
                               {"val": held, "test": test_rows}, member_dir)
    oof[fold == f] = probs["val"]
    test_sum += probs["test"]
    members.append({"fold": f, "n_train": int(len(train)), "n_held_out": int(len(held)),
                    **{key: record.get(key) for key in
                       ("best_epoch", "best_step", "best_val_mean_auroc", "resumed")}})
  record = {"kind": "cross_fitted", "cv_folds": k, "members": members,
            "model": record.get("model"), "devices": record.get("devices"),
            "best_epoch": None, "best_step": None, "history": [],
            "resumed": any(m["resumed"] for m in members),
            "best_val_mean_auroc": float(np.nanmean([m["best_val_mean_auroc"]
                                                     for m in members]))}
  return {"val": oof, "test": (test_sum / k).astype(np.float32)}, record, fold

