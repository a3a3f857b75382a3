"""Training a stack's members and stacking them: `fit_stack` (`stacking.py` does the
stacking itself).

Every member method is trained cross-fitted (`fitting.fit_cross_fitted`) with the run's
config, `method` set to the member, into its own folder `WORKDIR/stack/<member>/` (its
`members/<k>/` checkpoints, preprocessing and direct models live there, so members never
collide). The folds depend only on `seed`, `train.cv_folds` and the non-test rows
(`ensemble.member_folds`), so every member is fitted on the same folds; `fit_stack`
computes them once and checks each member's config gives the same. The members' out-of-
fold probabilities of the non-test rows and their test probabilities then go to
`stacking.stack_predictions`, with the labels of the non-test rows only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from crl_mmnar_jax import ensemble, fitting, stacking
from crl_mmnar_jax import methods as methods_lib
from crl_mmnar_jax import metrics as metrics_lib
from crl_mmnar_jax.cohort import Cohort


def member_dir(workdir: str, member: str) -> str:
  return os.path.join(workdir, stacking.STACK_DIR, member)


def check_members(config: ml_collections.ConfigDict, members: Sequence[str]) -> list[str]:
  """The member names, checked before anything is trained or written: ValueError (one
  line) on an empty or repeated list, an unknown method, "stack" itself, or
  `train.cv_folds` < 2."""
  members = [str(m) for m in members]
  if not members:
    raise ValueError("a stack needs at least one member method")
  repeated = sorted({m for m in members if members.count(m) > 1})
  if repeated:
    raise ValueError(f"stack members must be distinct, {repeated} repeated")
  if "stack" in members:
    raise ValueError("a stack cannot be a member of itself")
  for m in members:
    methods_lib.get_method(m)                 # ValueError naming the unknown method
  k = int(config.train.cv_folds)
  if k < 2:
    raise ValueError(f"a stack trains its members cross-fitted: train.cv_folds must be >= 2, "
                     f"got {k}")
  return members


def member_config(config: ml_collections.ConfigDict, member: str) -> ml_collections.ConfigDict:
  """The run's config with `method` set to the member (everything else the same)."""
  c = config.copy_and_resolve_references()
  c.method = member
  return c


@dataclasses.dataclass(frozen=True)
class StackRun:
  """`fit_stack_members`' result: the stack (`fit`), the fold of each non-test row, and
  per member its cross-fitted probabilities ({"val": OOF, "test"}) and training record."""
  fit: stacking.StackFit
  fold_N: np.ndarray
  member_probs: dict[str, dict[str, np.ndarray]]
  member_training: dict[str, dict]


def fit_stack_members(config: ml_collections.ConfigDict, members: Sequence[str], raw: Cohort,
                      nontest_rows: np.ndarray, test_rows: np.ndarray, workdir: str,
                      mesh: jax.sharding.Mesh, config_hash: str, log: Callable[[str], None],
                      *, l2: float = stacking.DEFAULT_L2,
                      n_boot: int = stacking.DEFAULT_N_BOOT,
                      z: float = stacking.DEFAULT_Z) -> StackRun:
  """Trains every member cross-fitted on the same folds and stacks them (module
  docstring). `raw` is the unstandardised cohort; only the labels of `nontest_rows` are
  read (the test rows' labels may be sealed, NaN, or anything)."""
  members = check_members(config, members)
  fold_N = ensemble.member_folds(config, raw, nontest_rows)
  probs: dict[str, dict[str, np.ndarray]] = {}
  training: dict[str, dict] = {}
  for i, name in enumerate(members):
    c = member_config(config, name)
    if not np.array_equal(ensemble.member_folds(c, raw, nontest_rows), fold_N):
      raise RuntimeError(f"stack member {name!r} would see other folds")   # a bug
    folder = member_dir(workdir, name)
    if jax.process_index() == 0:
      os.makedirs(folder, exist_ok=True)
    log(f"stack member {i + 1}/{len(members)}: {name}")
    probs[name], training[name] = fitting.fit_cross_fitted(
        c, methods_lib.get_method(name), raw, nontest_rows, test_rows, folder, mesh,
        f"{config_hash}:stack:{name}", log)
  labels_NxT = raw.labels[nontest_rows]
  fit = stacking.stack_predictions(
      np.stack([probs[m]["val"] for m in members]), labels_NxT, fold_N,
      np.stack([probs[m]["test"] for m in members]), members=members,
      task_names=raw.task_names, l2=l2, n_boot=n_boot, z=z, seed=int(config.seed))
  for r in fit.tasks:
    log(f"stack, task {r.task}: {r.rule} ({r.reason}); OOF AUROC stack "
        f"{r.stack_auroc:.4f}, best member {r.best_member} {r.best_member_auroc:.4f}")
  return StackRun(fit, fold_N, probs, training)


def stack_record(run: StackRun, raw: Cohort, nontest_rows: np.ndarray,
                 config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The `training` record of a stack (JSON-able but for NaN): every member's OOF
  metrics and training record, the stacker's weights and the rule per task, the spec
  `stacking.apply_stack` reads, and the keys every training record has."""
  labels_NxT = raw.labels[nontest_rows]
  names = list(raw.task_names)
  member_oof = {m: metrics_lib.task_metrics(labels_NxT, p["val"], names)
                for m, p in run.member_probs.items()}
  stack_oof = metrics_lib.task_metrics(labels_NxT, run.fit.val_NxT, names)
  k = int(config.train.cv_folds)
  return {"kind": "stack", "cv_folds": k,
          "fold_sizes": np.bincount(run.fold_N, minlength=k).tolist(),
          "members": list(run.member_probs), "member_training": run.member_training,
          "member_oof_metrics": member_oof, "oof_metrics": stack_oof,
          "stack": run.fit.record(), "spec": run.fit.spec,
          "model": {"stack": list(run.member_probs)},
          "devices": max(int(t.get("devices", 1)) for t in run.member_training.values()),
          "best_epoch": None, "best_step": None, "history": [],
          "resumed": any(bool(t.get("resumed")) for t in run.member_training.values()),
          "best_val_mean_auroc": stack_oof["mean"]["auroc"]}


def fit_stack(config: ml_collections.ConfigDict, members: Sequence[str], raw: Cohort,
              nontest_rows: np.ndarray, test_rows: np.ndarray, workdir: str,
              mesh: jax.sharding.Mesh, config_hash: str, log: Callable[[str], None], *,
              l2: float = stacking.DEFAULT_L2, n_boot: int = stacking.DEFAULT_N_BOOT,
              z: float = stacking.DEFAULT_Z
              ) -> tuple[dict[str, np.ndarray], dict, dict[str, dict[str, np.ndarray]]]:
  """Like `fitting.fit_cross_fitted`, for a stack of `members`: ({"val": the stack's
  OOF probabilities of `nontest_rows`, "test": its test probabilities}, float32 like
  the members', the `training` record, `stack_record`, and each member's {"val": OOF,
  "test"} probabilities)."""
  run = fit_stack_members(config, members, raw, nontest_rows, test_rows, workdir, mesh,
                          config_hash, log, l2=l2, n_boot=n_boot, z=z)
  probs = {"val": run.fit.val_NxT.astype(np.float32),
           "test": run.fit.test_NxT.astype(np.float32)}
  return probs, stack_record(run, raw, nontest_rows, config), run.member_probs
