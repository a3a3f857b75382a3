"""Pattern-wise post-hoc correction ("rectifier") of any model's probabilities.

docs/design.md, "The method", item 10. After a model is trained, for task t and observation
pattern δ the rectifier estimates the mean residual

    τ̂_{δ,t} = mean over fitting patients with pattern δ of (y − p̂)

on the probability scale and, where that shift is worth it, applies
``p' = clip(p + λ_t · τ_{δ,t}, 0, 1)``. Everything is estimated by K-fold
cross-fitting on the fitting (validation) data only (docs/design.md, "Evaluation"):

1. Rows are dealt to K folds stratified by pattern (`stratified_folds`).
2. One jitted `jax.ops.segment_sum` over ids ``fold * P + pattern_index`` gives the
   per-(fold, pattern, task) sums of r, r² and the count; the out-of-fold (OOF)
   statistics of fold k are the sums over the other folds.
3. Shrinkage toward the OOF global mean (pseudo-count `shrinkage`), a minimum count
   and the gate ``|τ| > κ`` (and ``|τ| − z·se > κ`` when z > 0) decide the correction.
4. κ and λ are chosen per task on the cross-fitted predictions (each row corrected
   with τ̂ from the other folds) by exact per-row Brier score or log loss
   differences against the uncorrected predictions, summed in float64, and a
   correction is kept only when its improvement beats its spread (`rule`, `rule_z`;
   see `rectifier.select`). By default ("lcb", z = 1.645) the candidate with the
   largest paired lower confidence bound on the improvement over λ = 0 is taken if
   that bound is positive, else λ = 0 (no correction); "one_se" is the
   one-standard-error rule on the spread across folds, "min" the plain minimum (λ > 0
   then wins on noise in about half the fits without any pattern effect).
5. The table applied to new data holds the mean of the K OOF estimates per pattern
   and task, with the same shrinkage, minimum count and gate at the selected κ.

Count scale: out-of-fold, everywhere. Every count that enters the minimum count, the
shrinkage or the standard-error gate is a number of labelled rows outside the fold
being corrected. In cross-fitting fold k uses its own OOF count n_k; the final table
uses the mean OOF count n̄ = mean_k n_k = (K − 1)/K · n for the shrinkage and for the
standard error of the gate (sd / sqrt(n̄)), and requires min_k n_k >= `min_count`. So a
pattern is corrected on new data only if the minimum count admitted it in every fold
during the selection of κ and λ; the table's `n` and `se` columns still report the full
count n and sd / sqrt(n).

Honest metrics: `Rectifier.oof_probs_NxT` (each fitting row corrected with τ̂ from the
other folds) is out-of-fold for τ̂ but in-sample for the choice of κ and λ, which used
every fitting label; validation "rectified" metrics are therefore slightly optimistic,
and only held-out (test) data measure the rectifier without bias.
`rectifier.bootstrap` gives per-pattern bootstrap intervals of τ̂ and paired bootstrap
intervals of the (rectified − raw) AUROC and Brier score.

Numpy in, numpy out: `fit` works on the predictions of any model. Conventions follow
`cohort.py`: the pattern id is the integer whose bit m says modality m was observed,
labels are 0/1 with NaN for "unknown" (ignored, per task).

Code: `cross_fit` (`fit`, the steps above), `result` (`Rectifier`: apply, table,
rectifier.json), `folds` (step 1: folds, pattern ids, size buckets), `select` (step 4's
rules), `checks` (argument checks), `bootstrap` (intervals). This package re-exports.

Example::

  rect = rectifier.fit(val_probs_NxT, val_labels_NxT, val_pattern_N)
  test_rectified_NxT = rect.apply(test_probs_NxT, test_pattern_N)
  json.dump(rect.to_dict(), f)
"""

from __future__ import annotations

from crl_mmnar_jax.rectifier.cross_fit import MAX_ROWS, fit
from crl_mmnar_jax.rectifier.folds import compact_patterns, stratified_folds
from crl_mmnar_jax.rectifier.result import FORMAT, Rectifier
from crl_mmnar_jax.rectifier.select import CRITERIA as SELECTIONS
from crl_mmnar_jax.rectifier.select import LOGLOSS_EPS, RULES

__all__ = ["FORMAT", "LOGLOSS_EPS", "MAX_ROWS", "RULES", "SELECTIONS", "Rectifier",
           "compact_patterns", "fit", "stratified_folds"]
