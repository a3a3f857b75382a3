"""The optimiser and the loss-weight schedule, each a pure function of the config."""

from __future__ import annotations

import math

import jax.numpy as jnp
import ml_collections
import optax


def warmup_steps(config: ml_collections.ConfigDict, total_steps: int) -> int:
  """`train.warmup_steps`, capped at `train.warmup_max_fraction` of the schedule: on a small
  cohort (2 steps an epoch) 100 absolute steps would outlast the run."""
  t = config.train
  cap = int(float(t.warmup_max_fraction) * total_steps)
  return min(int(t.warmup_steps), cap, max(total_steps - 1, 0))


def warmup_cosine(count, peak, end_fraction, warmup, horizon):
  """The learning rate at optimizer count `count` (update `count + 1`): linear from 0 to
  `peak` over `warmup` steps, then a cosine decay to `peak * end_fraction` at `horizon`
  (optax's `warmup_cosine_decay_schedule`). Every argument may be an array, so that the
  schedule is data of the optimizer's state, not constants of the compiled step."""
  c = jnp.asarray(count, jnp.float32)
  warmup, horizon = jnp.asarray(warmup, jnp.float32), jnp.asarray(horizon, jnp.float32)
  rising = peak * jnp.minimum(c, warmup) / jnp.maximum(warmup, 1.0)
  decay = jnp.maximum(horizon - warmup, 1.0)
  frac = jnp.clip(c - warmup, 0.0, decay) / decay
  falling = peak * ((1.0 - end_fraction) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
                    + end_fraction)
  return jnp.where(c < warmup, rising, falling)


def _hyperparams(config: ml_collections.ConfigDict, total_steps: int) -> dict[str, float]:
  t = config.train
  warmup = warmup_steps(config, total_steps)
  return {"peak": float(t.lr), "end_fraction": float(t.final_lr_fraction),
          "warmup": float(warmup), "horizon": float(max(total_steps, warmup + 1)),
          "weight_decay": float(t.weight_decay), "clip_norm": float(t.clip_norm)}


def lr_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """The learning rate of each update: linear warmup, then cosine decay. Update k
  (1-based, as `metrics.jsonl` counts steps) uses the value at k - 1."""
  h = _hyperparams(config, total_steps)
  return lambda count: warmup_cosine(count, h["peak"], h["end_fraction"], h["warmup"],
                                     h["horizon"])


def _clipped_adamw(peak, end_fraction, warmup, horizon, weight_decay, clip_norm):
  lr = lambda count: warmup_cosine(count, peak, end_fraction, warmup, horizon)
  return optax.chain(optax.clip_by_global_norm(clip_norm),
                     optax.adamw(lr, weight_decay=weight_decay))


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """Gradient clipping and AdamW on the warmup-cosine schedule, every number of it (peak
  learning rate, warmup, horizon, final fraction, weight decay, clip norm) a
  hyperparameter held in the optimizer's state (`optax.inject_hyperparams`): members
  stacked on one step may differ in them (`train.members`), and runs that differ only
  in them share one compiled step."""
  return optax.inject_hyperparams(_clipped_adamw)(**_hyperparams(config, total_steps))


def loss_scales(config: ml_collections.ConfigDict, epoch: int) -> tuple[float, float]:
  """(aux_scale, pred_scale) for an epoch: pre-training, then a cosine anneal of the
  auxiliary weight from 1 to `train.aux_final` over the joint epochs."""
  t = config.train
  if epoch < t.pretrain_epochs:
    return 1.0, 0.0
  joint = max(t.epochs - 1, 1)
  frac = min((epoch - t.pretrain_epochs) / joint, 1.0)
  return t.aux_final + (1.0 - t.aux_final) * 0.5 * (1 + math.cos(math.pi * frac)), 1.0
