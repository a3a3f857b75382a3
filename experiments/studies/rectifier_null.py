r"""Does the rectifier do harm without a pattern effect, and find a real one?

  python -m experiments.studies.rectifier_null --reps=200 [--out=/tmp/rectifier_null.json]

Simulation (all settings are flags). A perfectly calibrated model: the true
probability is p = sigmoid(μ + σ·x), x ~ N(0, 1), and the model predicts exactly p.
Every patient has one of `n_patterns` missingness patterns (ids 0..P-1, equally
likely). Per repetition a validation set (`n_val` rows) and a test set (`n_test`
rows) are drawn; the rectifier is fitted on validation only, with its default settings
and each rule in `--rules`, and applied to test. Two scenarios, on the same draws:

* null: labels ~ Bernoulli(p) in every pattern (no pattern effect). Any correction
  is fitted noise; the target is λ > 0 in at most 10% of runs and a mean test
  ΔAUROC (rectified − raw) of at least −0.0001.
* shift: as null, but in pattern 1 labels ~ Bernoulli(clip(p + shift)) and in
  pattern 2 ~ Bernoulli(clip(p − shift)) (a real ±`shift` on the probability scale);
  the target is both patterns corrected in at least 90% of runs.

Printed: a markdown table per scenario and rule: the fraction of runs with λ > 0,
the fraction with the shifted patterns corrected (each, and both), the mean number
of unshifted patterns corrected, and mean test ΔAUROC and ΔBrier with their standard
errors over runs. `--out` writes the same figures (and the settings) as JSON.

Results (defaults: μ = −1, σ = 1, i.e. prevalence 0.3 and E[p(1 − p)] = 0.18; 200
runs, seed 0; about 1.5 minutes on 2 cores):

| scenario | rule | λ > 0 | +shift | −shift | both | test ΔAUROC | test ΔBrier |
|---|---|---|---|---|---|---|---|
| null | lcb (z=1.645), the default | 0.090 | | | | −0.00003 | +0.000010 |
| null | one_se (z=1) | 0.195 | | | | −0.00030 | +0.000088 |
| null | one_se (z=1.645) | 0.090 | | | | −0.00016 | +0.000049 |
| null | min (before the audit) | 0.485 | | | | −0.00042 | +0.000123 |
| shift | lcb (z=1.645), the default | 0.730 | 0.675 | 0.695 | 0.640 | +0.00261 | −0.000642 |
| shift | one_se (z=1) | 0.780 | 0.710 | 0.750 | 0.680 | +0.00328 | −0.000773 |
| shift | one_se (z=1.645) | 0.530 | 0.485 | 0.515 | 0.470 | +0.00229 | −0.000534 |
| shift | min (before the audit) | 0.955 | 0.855 | 0.905 | 0.805 | +0.00368 | −0.000873 |

1,000 runs of "lcb" (seed 1): λ > 0 in 8.4% of null runs (mean ΔAUROC −0.00003);
shifted patterns corrected in 68% / 69% of runs (both 63%). The null targets are met.
The shift target (each shifted pattern corrected in >= 90% of runs) is not, at 1,500
validation rows: a ±0.08 shift at ~190 rows per pattern is only about 2.6 standard
errors, and even a dedicated omnibus chi-square test of "some pattern is shifted" at
10% size detects it in only ~87% of samples (the plain minimum reaches 86% / 90% by
correcting on noise in half the null runs). With `--n_val=3000` "lcb" corrects the
shifted patterns in 91.5% / 90% of runs (both 86%, λ > 0 in 95.5%) and still chooses
λ > 0 in 7% of null runs. With a rarer outcome (`--logit_mean=-2 --logit_sd=1.2`):
null 8.5% (ΔAUROC −0.00008), shift 80.5% / 80% corrected.
"""

from __future__ import annotations

import json
import time

import numpy as np
from absl import app, flags

from crl_mmnar_jax import metrics as metrics_lib
from crl_mmnar_jax import rectifier
from crl_mmnar_jax.rectifier import select as rectifier_select

_REPS = flags.DEFINE_integer("reps", 200, "Repetitions per scenario.")
_N_VAL = flags.DEFINE_integer("n_val", 1500, "Validation rows per repetition.")
_N_TEST = flags.DEFINE_integer("n_test", 20000, "Test rows per repetition.")
_N_PATTERNS = flags.DEFINE_integer("n_patterns", 8, "Missingness patterns.")
_SHIFT = flags.DEFINE_float("shift", 0.08, "Shift of the two shifted patterns.")
_MU = flags.DEFINE_float("logit_mean", -1.0, "μ of the true logit.")
_SIGMA = flags.DEFINE_float("logit_sd", 1.0, "σ of the true logit.")
_RULES = flags.DEFINE_list(
    "rules", ["lcb", "one_se:1", "one_se:1.645", "min"],
    "Selection rules to compare, each RULE or RULE:Z (Z defaults to "
    "rectifier_select.DEFAULT_RULE_Z).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the simulation.")
_OUT = flags.DEFINE_string("out", "", "Path of the JSON with the figures ('' = none).")

SCENARIOS = ("null", "shift")
SHIFTED = (1, 2)      # pattern ids of the +shift and −shift patterns


def draw(rng: np.random.Generator, n: int, n_patterns: int, shift: float, mu: float,
         sigma: float) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """One sample of n rows: {scenario: (probs_N, labels_N, pattern_N)}.

  Both scenarios share the predictions, the patterns and the uniform draws of the
  labels, so they differ only by the shift.
  """
  p_N = 1.0 / (1.0 + np.exp(-(mu + sigma * rng.standard_normal(n))))
  pattern_N = rng.integers(0, n_patterns, size=n)
  u_N = rng.random(n)
  shift_N = np.where(pattern_N == SHIFTED[0], shift,
                     np.where(pattern_N == SHIFTED[1], -shift, 0.0))
  truth = {"null": p_N, "shift": np.clip(p_N + shift_N, 0.0, 1.0)}
  return {s: (p_N, (u_N < truth[s]).astype(np.float64), pattern_N) for s in SCENARIOS}


def parse_rules(specs: list[str]) -> list[tuple[str, float]]:
  """["lcb", "one_se:1"] -> [("lcb", DEFAULT_RULE_Z), ("one_se", 1.0)]."""
  rules = []
  for spec in specs:
    rule, _, z = spec.partition(":")
    if rule not in rectifier_select.RULES:
      raise app.UsageError(f"--rules: {rule!r} is not one of {rectifier_select.RULES}")
    try:
      default_z = 0.0 if rule == "min" else rectifier_select.DEFAULT_RULE_Z
      rules.append((rule, float(z) if z else default_z))
    except ValueError:
      raise app.UsageError(f"--rules: {spec!r}: Z must be a number") from None
  return rules


def rule_name(rule: str, z: float) -> str:
  return rule if rule == "min" else f"{rule} (z={z:g})"


def one_run(rng: np.random.Generator, rules: list[tuple[str, float]]) -> dict:
  """Fits every rule on one validation draw per scenario and scores it on test."""
  args = (_N_PATTERNS.value, _SHIFT.value, _MU.value, _SIGMA.value)
  val, test = draw(rng, _N_VAL.value, *args), draw(rng, _N_TEST.value, *args)
  out = {}
  for scenario in SCENARIOS:
    p_val, y_val, pat_val = val[scenario]
    p_test, y_test, pat_test = test[scenario]
    auc0, brier0 = metrics_lib.auroc(y_test, p_test), metrics_lib.brier(y_test, p_test)
    for rule, z in rules:
      rect = rectifier.fit(p_val, y_val, pat_val, rule=rule, rule_z=z)
      q_test = rect.apply(p_test, pat_test)
      corrected = {int(pid): bool(rect.corrected_PxT[i, 0])
                   for i, pid in enumerate(rect.patterns.tolist())}
      out[scenario, rule_name(rule, z)] = {
          "lambda_pos": bool(rect.lambda_T[0] > 0),
          "shifted_corrected": [corrected.get(pid, False) for pid in SHIFTED],
          "others_corrected": sum(v for pid, v in corrected.items() if pid not in SHIFTED),
          "d_auroc": metrics_lib.auroc(y_test, q_test) - auc0,
          "d_brier": metrics_lib.brier(y_test, q_test) - brier0,
      }
  return out


def summarize(runs: list[dict], scenario: str, rule: str) -> dict:
  """Fractions and means over runs for one scenario and rule."""
  rs = [r[scenario, rule] for r in runs]
  shifted = np.array([r["shifted_corrected"] for r in rs])
  mean_se = lambda x: (float(np.mean(x)), float(np.std(x, ddof=1) / np.sqrt(len(x))))
  d_auc, d_auc_se = mean_se([r["d_auroc"] for r in rs])
  d_brier, d_brier_se = mean_se([r["d_brier"] for r in rs])
  return {
      "scenario": scenario, "rule": rule, "reps": len(rs),
      "frac_lambda_pos": float(np.mean([r["lambda_pos"] for r in rs])),
      "frac_corrected_plus": float(shifted[:, 0].mean()),
      "frac_corrected_minus": float(shifted[:, 1].mean()),
      "frac_corrected_both": float(shifted.all(1).mean()),
      "mean_others_corrected": float(np.mean([r["others_corrected"] for r in rs])),
      "mean_d_auroc": d_auc, "se_d_auroc": d_auc_se,
      "mean_d_brier": d_brier, "se_d_brier": d_brier_se,
  }


def markdown(rows: list[dict]) -> list[str]:
  lines = [("| scenario | rule | λ > 0 | +shift corrected | −shift corrected | both | "
            "others corrected (mean #) | test ΔAUROC (se) | test ΔBrier (se) |"),
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['scenario']} | {r['rule']} | {r['frac_lambda_pos']:.3f} | "
        f"{r['frac_corrected_plus']:.3f} | {r['frac_corrected_minus']:.3f} | "
        f"{r['frac_corrected_both']:.3f} | {r['mean_others_corrected']:.2f} | "
        f"{r['mean_d_auroc']:+.5f} ({r['se_d_auroc']:.5f}) | "
        f"{r['mean_d_brier']:+.6f} ({r['se_d_brier']:.6f}) |")
  return lines


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  rules = parse_rules(list(_RULES.value))
  start = time.perf_counter()
  rng = np.random.default_rng(_SEED.value)
  runs = [one_run(rng, rules) for _ in range(_REPS.value)]
  rows = [summarize(runs, s, rule_name(*r)) for s in SCENARIOS for r in rules]
  elapsed = time.perf_counter() - start
  settings = {"reps": _REPS.value, "n_val": _N_VAL.value, "n_test": _N_TEST.value,
              "n_patterns": _N_PATTERNS.value, "shift": _SHIFT.value,
              "logit_mean": _MU.value, "logit_sd": _SIGMA.value,
              "rules": [{"rule": r, "rule_z": z} for r, z in rules], "seed": _SEED.value,
              "shifted_patterns": list(SHIFTED)}
  print(f"Rectifier null/shift simulation: {settings}\n")
  print("\n".join(markdown(rows)))
  print(f"\n{elapsed:.1f} s")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump({"settings": settings, "results": rows, "elapsed_s": elapsed}, f,
                indent=2)


if __name__ == "__main__":
  app.run(main)
