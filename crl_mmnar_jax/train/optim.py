"""The optimiser and the loss-weight schedule, each a pure function of the config."""

from __future__ import annotations

import math

import ml_collections
import optax


def warmup_steps(config: ml_collections.ConfigDict, total_steps: int) -> int:
  """`train.warmup_steps`, capped at `train.warmup_max_fraction` of the schedule: on a small
  cohort (2 steps an epoch) 100 absolute steps would outlast the run."""
  t = config.train
  cap = int(float(t.warmup_max_fraction) * total_steps)
  return min(int(t.warmup_steps), cap, max(total_steps - 1, 0))


def lr_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """The learning rate of each update: linear warmup, then cosine decay. Update k
  (1-based, as `metrics.jsonl` counts steps) uses the value at k - 1."""
  t = config.train
  warmup = warmup_steps(config, total_steps)
  return optax.warmup_cosine_decay_schedule(0.0, t.lr, warmup, max(total_steps, warmup + 1),
                                            end_value=t.lr * t.final_lr_fraction)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  t = config.train
  lr = lr_schedule(config, total_steps)
  return optax.chain(optax.clip_by_global_norm(t.clip_norm),
                     optax.adamw(lr, weight_decay=t.weight_decay))


def loss_scales(config: ml_collections.ConfigDict, epoch: int) -> tuple[float, float]:
  """(aux_scale, pred_scale) for an epoch: pre-training, then a cosine anneal of the
  auxiliary weight from 1 to `train.aux_final` over the joint epochs."""
  t = config.train
  if epoch < t.pretrain_epochs:
    return 1.0, 0.0
  joint = max(t.epochs - 1, 1)
  frac = min((epoch - t.pretrain_epochs) / joint, 1.0)
  return t.aux_final + (1.0 - t.aux_final) * 0.5 * (1 + math.cos(math.pi * frac)), 1.0
