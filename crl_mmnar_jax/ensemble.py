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
checkpoints and metrics live in `WORKDIR/members/k/`. The members of a neural method
train together, in one `jax.vmap`ped step (`train/stacked.py`, checkpointed in
`WORKDIR/members/stacked/`); they train one after the other when they cannot
(`stacked.why_not_stacked`), and a direct method's members are always fitted one after
the other. Either way a killed run resumes where it was, and the K prepared
(standardised) cohorts are held in memory together.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import ml_collections
import numpy as np

from crl_mmnar_jax.cohort import Cohort
from crl_mmnar_jax.data import splits as splits_lib
from crl_mmnar_jax.data.errors import DataError

FitFn = Callable[..., tuple[dict[str, np.ndarray], dict]]


@dataclasses.dataclass(frozen=True)
class MemberPlan:
  """Member `fold`: its config (seed set), standardised cohort, rows and folder."""
  fold: int
  config: ml_collections.ConfigDict
  cohort: Cohort
  stats: dict
  train: np.ndarray
  held: np.ndarray
  workdir: str


TogetherFn = Callable[[list[MemberPlan], int], "bool | None"]


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
                log: Callable[[str], None],
                train_together: TogetherFn | None = None,
                ) -> tuple[dict[str, np.ndarray], dict, np.ndarray]:
  """Trains the K members; returns ({"val": OOF probs of `nontest_rows`, "test": mean
  probs of `test_rows`}, the training record, the fold of each non-test row).

  `fit_member(member_config, standardised_cohort, stats, train_rows, val_rows,
  {"val": ..., "test": ...}, member_workdir, schedule_steps_per_epoch)` trains one
  member (or restores it once trained) and returns its (probabilities per row set,
  training record), as `experiment.fit_and_predict` does; the schedule's steps per
  epoch are the largest member's. `prepare(cohort, train_rows)` standardises with a
  member's training rows only (`data.standardize.standardize`). `cohort` is the
  unstandardised cohort with test labels hidden. `train_together(members)` (neural
  methods: `train.stacked`) may first train all members in one vmapped step; it
  returns whether they were resumed, or None when they must train one by one.
  """
  k = int(config.train.cv_folds)
  fold = member_folds(config, cohort, nontest_rows)
  oof = np.full((len(nontest_rows), cohort.n_tasks), np.nan, np.float32)
  test_sum = np.zeros((len(test_rows), cohort.n_tasks), np.float64)
  plans = []
  for f in range(k):
    train, held = nontest_rows[fold != f], nontest_rows[fold == f]
    member_config = config.copy_and_resolve_references()
    member_config.seed = int(config.seed) * k + f
    member_cohort, stats = prepare(cohort, train)
    member_dir = os.path.join(workdir, "members", str(f))
    if jax.process_index() == 0:
      os.makedirs(member_dir, exist_ok=True)
    plans.append(MemberPlan(f, member_config, member_cohort, stats, train, held, member_dir))
  per_epoch = max(-(-len(p.train) // int(config.train.batch_size)) for p in plans)
  together = None if train_together is None else train_together(plans, per_epoch)
  members = []
  for p in plans:
    log(f"member {p.fold + 1}/{k}: train {len(p.train)}, held out {len(p.held)}")
    probs, record = fit_member(p.config, p.cohort, p.stats, p.train, p.held,
                               {"val": p.held, "test": test_rows}, p.workdir, per_epoch)
    oof[fold == p.fold] = probs["val"]
    test_sum += probs["test"]
    resumed = record.get("resumed") if together is None else together
    members.append({"fold": p.fold, "n_train": int(len(p.train)),
                    "n_held_out": int(len(p.held)), "resumed": resumed,
                    **{key: record.get(key) for key in
                       ("best_epoch", "best_step", "best_val_mean_auroc")}})
  record = {"kind": "cross_fitted", "cv_folds": k, "members": members,
            "stacked": together is not None,
            "model": record.get("model"), "devices": record.get("devices"),
            "best_epoch": None, "best_step": None, "history": [],
            "resumed": any(m["resumed"] for m in members),
            "best_val_mean_auroc": float(np.nanmean([m["best_val_mean_auroc"]
                                                     for m in members]))}
  return {"val": oof, "test": (test_sum / k).astype(np.float32)}, record, fold
