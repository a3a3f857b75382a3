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
metrics and preprocessing live in `WORKDIR/members/k/`. This module plans the members
and combines their predictions; `fitting.py` trains them. The members of a neural method
train together through the one training loop (`train/loop.py`), their states stacked
in one `jax.vmap`ped step and checkpointed in `WORKDIR/members/stacked/`; members whose
models differ in structure train in groups of one structure (`train.members`), and a
direct method's members are fitted one after the other. Either way a killed run
resumes where it was, and the K prepared (standardised) cohorts are held in memory
together.
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


def plan_members(config: ml_collections.ConfigDict, cohort: Cohort,
                 nontest_rows: np.ndarray, workdir: str,
                 prepare: Callable[[Cohort, np.ndarray], tuple[Cohort, dict]],
                 log: Callable[[str], None]) -> tuple[list[MemberPlan], np.ndarray]:
  """The K members' plans and the fold of each non-test row. `cohort` is the
  unstandardised cohort with test labels hidden; `prepare(cohort, train_rows)`
  standardises with a member's training rows only (`data.standardize.standardize`)."""
  k = int(config.train.cv_folds)
  fold = member_folds(config, cohort, nontest_rows)
  plans = []
  for f in range(k):
    train, held = nontest_rows[fold != f], nontest_rows[fold == f]
    member_config = config.copy_and_resolve_references()
    member_config.seed = int(config.seed) * k + f
    member_cohort, stats = prepare(cohort, train)
    member_dir = os.path.join(workdir, "members", str(f))
    if jax.process_index() == 0:
      os.makedirs(member_dir, exist_ok=True)
    log(f"member {f + 1}/{k}: train {len(train)}, held out {len(held)}")
    plans.append(MemberPlan(f, member_config, member_cohort, stats, train, held, member_dir))
  return plans, fold


def schedule_steps_per_epoch(config: ml_collections.ConfigDict,
                             plans: list[MemberPlan]) -> int:
  """The learning-rate schedule's steps per epoch shared by every member: the largest
  member's, so that members training together share one schedule."""
  return max(-(-len(p.train) // int(config.train.batch_size)) for p in plans)


def combine(plans: list[MemberPlan], fold: np.ndarray, n_test: int,
            outputs: list[tuple[dict[str, np.ndarray], dict]], stacked: bool
            ) -> tuple[dict[str, np.ndarray], dict]:
  """Each member's (probabilities {"val": its held-out fold, "test": test rows},
  training record) -> ({"val": out-of-fold probabilities of the non-test rows, "test":
  the members' mean}, the run's training record)."""
  k = len(plans)
  n_tasks = outputs[0][0]["test"].shape[1]
  oof = np.full((len(fold), n_tasks), np.nan, np.float32)
  test_sum = np.zeros((n_test, n_tasks), np.float64)
  members = []
  for p, (probs, record) in zip(plans, outputs):
    oof[fold == p.fold] = probs["val"]
    test_sum += probs["test"]
    members.append({"fold": p.fold, "n_train": int(len(p.train)),
                    "n_held_out": int(len(p.held)), "resumed": record["resumed"],
                    "checkpoint": record.get("checkpoint"),
                    **{key: record[key] for key in
                       ("best_epoch", "best_step", "best_val_mean_auroc")}})
  last = outputs[-1][1]
  record = {"kind": "cross_fitted", "cv_folds": k, "members": members, "stacked": stacked,
            "model": last["model"], "devices": last["devices"],
            "best_epoch": None, "best_step": None, "history": [],
            "resumed": any(m["resumed"] for m in members),
            "best_val_mean_auroc": float(np.nanmean([m["best_val_mean_auroc"]
                                                     for m in members]))}
  return {"val": oof, "test": (test_sum / k).astype(np.float32)}, record
