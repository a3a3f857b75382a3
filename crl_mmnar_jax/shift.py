"""Do new patients look like the training cohort? The shift check of `Predictor.predict`
(and the rest of its report: `report`).

At training time `data.standardize` keeps, per modality, what the check compares with
(saved in `preprocessing.npz`, docs/predict.md): the training mean and sd of each feature
and its number of measured training values (`n_measured`), its smallest and largest
measured training value (`min`, `max`), how many training rows observed the modality
(`n_train_observed` of `n_train_rows`), and the modality's main correlation pattern:
the top principal directions of its z-scored training rows (`components`) with the share
of variance they explain in held-out training rows (`explained`, `training_reference`).

`compare` measures new patients against it. Per feature: the standardised mean shift
|mean_new - mean_train| / sd_train and the share of measured values outside the training
[min, max]. Per modality: the observed rate (new vs training) and the share of variance
the training directions explain in the new rows. A difference counts ("flagged") when it
exceeds its threshold (the constants below) *and* is beyond sampling noise: its
probability under "same cohort, other patients" is below `NOISE_P`, so that a fresh
sample of the training population, even a small one, does not trigger it. Features and
modalities with fewer than `MIN_VALUES` new values are reported, never flagged.

A shift the marginal statistics cannot see is still caught by the structure check:
patients of another synthetic world (`data.world_seed`) have the same feature means,
ranges and observed rates, but their features co-vary along other directions.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from crl_mmnar_jax import metrics
from crl_mmnar_jax.cohort import Cohort

MEAN_SHIFT_SD = 0.5         # |mean_new - mean_train| / sd_train above this: a shifted feature
OUTSIDE_RANGE_SHARE = 0.10  # share of a feature's new values outside the training [min, max]
RATE_DIFFERENCE = 0.2       # |observed rate new - training| (absolute) of a modality
STRUCTURE_DROP = 0.2        # drop in the variance share the training directions explain
NOISE_P = 1e-5              # ... and each beyond sampling noise: its p-value below this
MIN_VALUES = 20             # new values (rows) a feature (modality) needs to be flagged
COMPONENTS = 8              # training directions per modality (at most half its features)
STRUCTURE_ROWS = 2000       # training rows the directions are fitted on, at most
STRUCTURE_MAX_FEATURES = 512  # wider modalities get no structure check
REFERENCE = ("min", "max", "n_measured", "n_train_rows", "n_train_observed", "components",
             "explained")     # the saved statistics beyond `data.standardize`'s transform
THRESHOLDS = {"mean_shift_sd": MEAN_SHIFT_SD, "outside_range_share": OUTSIDE_RANGE_SHARE,
              "observed_rate_difference": RATE_DIFFERENCE, "structure_drop": STRUCTURE_DROP,
              "noise_p": NOISE_P, "min_values": MIN_VALUES}


# ----------------------------------------------------------------------------- training


def _zscores(values_NxD: np.ndarray, mean_D: np.ndarray, sd_D: np.ndarray) -> np.ndarray:
  """z-scores with the training mean and sd; not measured (NaN) -> 0, as the model sees."""
  return np.nan_to_num((values_NxD - mean_D) / sd_D, nan=0.0)


def _directions(z_NxD: np.ndarray, k: int) -> np.ndarray:
  """(k, D): the top-k principal directions of `z_NxD` (uncentred: z is centred by the
  training mean), the eigenvectors of its Gram matrix with the largest eigenvalues."""
  _, vectors = np.linalg.eigh(z_NxD.T @ z_NxD)
  return np.ascontiguousarray(vectors[:, ::-1][:, :k].T)


def explained_share(z_NxD: np.ndarray, directions_KxD: np.ndarray) -> float:
  """The share of the rows' sum of squares that `directions_KxD` span (NaN for none)."""
  total = float(np.sum(z_NxD ** 2))
  if not total or not len(directions_KxD):
    return math.nan
  return float(np.sum((z_NxD @ directions_KxD.T) ** 2) / total)


def training_reference(values_NxD: np.ndarray, mean_D: np.ndarray, sd_D: np.ndarray
                       ) -> dict[str, np.ndarray]:
  """`min` and `max` of each feature's measured training values (NaN where none), and the
  modality's `components` (k, D) with their held-out `explained` share: the directions are
  fitted on at most `STRUCTURE_ROWS` rows; `explained` is the mean over the two halves of
  those rows of the share explained by the directions fitted on the other half (what new
  patients of the same population get, or a little less). No directions (k = 0,
  `explained` NaN) for fewer than 2 features, more than `STRUCTURE_MAX_FEATURES`, or
  fewer than 4k rows.

  `values_NxD`: the observed training rows, NaN where not measured (or extreme)."""
  values_NxD = np.asarray(values_NxD, np.float64)
  n, d = values_NxD.shape
  low = np.fmin.reduce(values_NxD, 0, initial=np.nan)      # NaN where never measured
  high = np.fmax.reduce(values_NxD, 0, initial=np.nan)
  k = min(COMPONENTS, d // 2)
  out = {"min": low, "max": high, "components": np.zeros((0, d)),
         "explained": np.float64(np.nan)}
  if k < 1 or d > STRUCTURE_MAX_FEATURES or n < 4 * k:
    return out
  rows = np.arange(n)
  if n > STRUCTURE_ROWS:
    rows = np.sort(np.random.default_rng(0).choice(n, STRUCTURE_ROWS, replace=False))
  z = _zscores(values_NxD[rows], mean_D, sd_D)
  order = np.random.default_rng(1).permutation(len(rows))
  a, b = order[:len(rows) // 2], order[len(rows) // 2:]
  held_out = [explained_share(z[b], _directions(z[a], k)),
              explained_share(z[a], _directions(z[b], k))]
  out["components"] = _directions(z, k)
  out["explained"] = np.float64(np.nanmean(held_out) if not np.isnan(held_out).all()
                                else np.nan)
  return out


def has_reference(stats: Mapping[str, Mapping[str, Any]]) -> bool:
  """Whether saved statistics hold what `compare` needs (a workdir trained before the
  check existed does not)."""
  return all(key in s for s in stats.values() for key in REFERENCE)


# ----------------------------------------------------------------------------- new patients


def _normal_p(z: np.ndarray) -> np.ndarray:
  """Two-sided p-value of a standard normal statistic."""
  return np.vectorize(lambda v: math.erfc(abs(v) / math.sqrt(2.0)) if np.isfinite(v)
                      else (0.0 if np.isinf(v) else 1.0), otypes=[float])(z)


def outside_range_p(share_D: np.ndarray, n_new_D: np.ndarray, n_train_D: np.ndarray
                    ) -> np.ndarray:
  """How likely the training range of `n_train` values leaves out at least the share's
  lower bound (share - 2 standard errors) of its population: the mass outside the range
  of n values is Beta(2, n - 1), P(> s) = (1 - s)^n + n s (1 - s)^(n - 1)."""
  se = np.sqrt(share_D * (1 - share_D) / np.maximum(n_new_D, 1))
  s = np.clip(share_D - 2 * se, 0.0, 1.0 - 1e-12)
  n = np.maximum(n_train_D, 1).astype(np.float64)
  with np.errstate(divide="ignore"):
    log_tail = (n - 1) * np.log1p(-s)
  return np.minimum(np.exp(log_tail) * (1 - s + n * s), 1.0)


def _nan_to_none(x: Any) -> Any:
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def _feature_rows(name: str, columns: Sequence[str], x_NxD: np.ndarray,
                  s: Mapping[str, np.ndarray]) -> list[dict]:
  """One modality's per-feature rows (its observed new rows `x_NxD`)."""
  x = x_NxD.astype(np.float64)
  finite = np.isfinite(x)
  with np.errstate(invalid="ignore"):
    clean = finite & (x >= s["low"]) & (x <= s["high"])    # what the model reads
  v = np.where(clean, x, np.nan)
  n_clean = clean.sum(0)
  n_new = finite.sum(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_new = np.where(n_clean > 0, np.nansum(v, 0) / np.maximum(n_clean, 1), np.nan)
    var_new = np.where(n_clean > 0, np.nansum((v - mean_new) ** 2, 0)
                       / np.maximum(n_clean, 1), np.nan)
    shift = np.abs(mean_new - s["mean"]) / s["sd"]
    n_train = np.asarray(s["n_measured"], np.float64)
    se = np.sqrt(s["sd"] ** 2 / np.maximum(n_train, 1) + var_new / np.maximum(n_clean, 1))
    p_mean = _normal_p((mean_new - s["mean"]) / se)
    outside = (finite & ((x < s["min"]) | (x > s["max"]))).sum(0)
    share = np.where(n_new > 0, outside / np.maximum(n_new, 1), np.nan)
  p_range = outside_range_p(np.nan_to_num(share), n_new, n_train)
  enough = (n_clean >= MIN_VALUES) & (n_train >= MIN_VALUES)
  rows = []
  for j, column in enumerate(columns):
    flag_mean = bool(enough[j] and shift[j] > MEAN_SHIFT_SD and p_mean[j] < NOISE_P)
    flag_range = bool(n_new[j] >= MIN_VALUES and np.isfinite(s["min"][j])
                      and share[j] > OUTSIDE_RANGE_SHARE and p_range[j] < NOISE_P)
    rows.append({
        "feature": f"{name}/{column}", "modality": name, "column": str(column),
        "n_new": int(n_new[j]), "n_train": int(n_train[j]),
        "mean_train": float(s["mean"][j]), "sd_train": float(s["sd"][j]),
        "mean_new": float(mean_new[j]), "mean_shift_sd": float(shift[j]),
        "mean_shift_p": float(p_mean[j]),
        "min_train": float(s["min"][j]), "max_train": float(s["max"][j]),
        "outside_range_share": float(share[j]), "outside_range_p": float(p_range[j]),
        "shifted": flag_mean, "outside_range": flag_range})
  return [{k: _nan_to_none(v) for k, v in r.items()} for r in rows]


def _modality_row(name: str, m: int, cohort: Cohort, s: Mapping[str, np.ndarray]) -> dict:
  n, observed = cohort.n, cohort.present[:, m]
  n_obs = int(observed.sum())
  n_train, k_train = int(s["n_train_rows"]), int(s["n_train_observed"])
  rate_new, rate_train = n_obs / max(n, 1), k_train / max(n_train, 1)
  pooled = (n_obs + k_train) / max(n + n_train, 1)
  se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / max(n, 1) + 1 / max(n_train, 1)))
  p_rate = float(_normal_p(np.array((rate_new - rate_train) / se)))
  rate_flag = (n >= MIN_VALUES and abs(rate_new - rate_train) > RATE_DIFFERENCE
               and p_rate < NOISE_P)
  x = cohort.features[m][observed].astype(np.float64)
  with np.errstate(invalid="ignore"):
    v = np.where(np.isfinite(x) & (x >= s["low"]) & (x <= s["high"]), x, np.nan)
  explained_new = explained_share(_zscores(v, s["mean"], s["sd"]), s["components"])
  explained_train = float(s["explained"])
  structure_flag = bool(n_obs >= max(MIN_VALUES, 4 * len(s["components"]))
                        and explained_train - explained_new > STRUCTURE_DROP)
  row = {"modality": name, "patients_new": n, "observed_new": n_obs,
         "patients_train": n_train, "observed_train": k_train, "observed_rate_new": rate_new,
         "observed_rate_train": rate_train, "observed_rate_p": p_rate,
         "rate_differs": bool(rate_flag), "components": int(len(s["components"])),
         "explained_train": explained_train, "explained_new": explained_new,
         "structure_differs": structure_flag}
  return {k: _nan_to_none(v) for k, v in row.items()}


def _pct(x: float) -> str:
  return f"{100 * x:.0f}%"


def summary(features: list[dict], modalities: list[dict]) -> str | None:
  """The one-line summary of the flagged differences, or None when there is none."""
  parts = []
  shifted = [r for r in features if r["shifted"]]
  if shifted:
    top = max(shifted, key=lambda r: r["mean_shift_sd"])
    parts.append(f"{len(shifted)} of {len(features)} features shift by more than "
                 f"{MEAN_SHIFT_SD:g} train SD (largest: {top['feature']} "
                 f"{top['mean_shift_sd']:.1f} SD)")
  outside = [r for r in features if r["outside_range"]]
  if outside:
    top = max(outside, key=lambda r: r["outside_range_share"])
    one = len(outside) == 1
    parts.append(f"{len(outside)} feature{'' if one else 's'} ha{'s' if one else 've'} more "
                 f"than {_pct(OUTSIDE_RANGE_SHARE)} of {'its' if one else 'their'} values "
                 f"outside the training range (largest: {top['feature']} "
                 f"{_pct(top['outside_range_share'])})")
  parts += [f"modality {r['modality']} observed in {_pct(r['observed_rate_new'])} vs "
            f"{_pct(r['observed_rate_train'])} in training"
            for r in modalities if r["rate_differs"]]
  structure = [r for r in modalities if r["structure_differs"]]
  if structure:
    names = ", ".join(r["modality"] for r in structure)
    new = np.mean([r["explained_new"] for r in structure])
    train = np.mean([r["explained_train"] for r in structure])
    parts.append(f"the features of modalit{'ies' if len(structure) > 1 else 'y'} {names} "
                 f"co-vary differently (the training's main directions explain "
                 f"{_pct(new)} of their variance vs {_pct(train)} in held-out training "
                 f"patients)")
  if not parts:
    return None
  return "new patients differ from the training cohort: " + "; ".join(parts)


def compare(cohort: Cohort, stats: Mapping[str, Mapping[str, np.ndarray]],
            columns: Sequence[Sequence[str] | None]) -> dict[str, Any]:
  """The shift table of `cohort` (raw, in the training schema) against the training
  statistics `stats` (one model's, `predictor.read_preprocessing`); `columns`: the
  training feature columns per modality (None: numbered). JSON-friendly: `checked`,
  `thresholds`, `modalities` and `features` (one row each; NaN as None), `warning` (the
  one-line summary, or None). A workdir without the statistics (trained before the check
  existed) gets `checked` False and the reason."""
  if not has_reference(stats):
    return {"checked": False, "reason": "the workdir's preprocessing.npz predates the "
            "shift check; rerun the same experiments.run command with this workdir (the "
            "trained model is reused) to save the training ranges", "warning": None}
  features, modalities = [], []
  for m, name in enumerate(cohort.modality_names):
    s = stats[name]
    d = cohort.features[m].shape[1]
    names = columns[m] if columns[m] is not None else [f"#{j}" for j in range(d)]
    observed = cohort.present[:, m]
    features += _feature_rows(name, names, cohort.features[m][observed], s)
    modalities.append(_modality_row(name, m, cohort, s))
  return {"checked": True, "thresholds": dict(THRESHOLDS), "modalities": modalities,
          "features": features, "warning": summary(features, modalities)}


def label_metrics(cohort: Cohort, probs_NxT: np.ndarray, rectified_NxT: np.ndarray
                  ) -> dict[str, dict] | None:
  """Per task, on the patients with a known label: their number (`n_labelled`) and the
  AUROC of the model's and of the rectified probabilities (None with one class); None
  when no label is known (new patients usually have none)."""
  known_NxT = ~np.isnan(cohort.labels)
  if not known_NxT.any():
    return None
  out = {}
  for t, name in enumerate(cohort.task_names):
    rows = known_NxT[:, t]
    y = cohort.labels[rows, t]
    both = rows.any() and 0 < y.sum() < len(y)
    out[name] = {"n_labelled": int(rows.sum()),
                 "auroc": float(metrics.auroc(y, probs_NxT[rows, t])) if both else None,
                 "auroc_rectified": (float(metrics.auroc(y, rectified_NxT[rows, t]))
                                     if both else None)}
  return out


def report(cohort: Cohort, probs_NxT: np.ndarray, rectified_NxT: np.ndarray,
           stats: Mapping[str, Mapping[str, np.ndarray]],
           columns: Sequence[Sequence[str] | None]) -> dict[str, Any]:
  """What `Predictor.predict_and_check` reports beside its predictions: `n_patients`,
  `shift` (`compare`) and `metrics` (`label_metrics`)."""
  return {"n_patients": int(cohort.n), "shift": compare(cohort, stats, columns),
          "metrics": label_metrics(cohort, probs_NxT, rectified_NxT)}
