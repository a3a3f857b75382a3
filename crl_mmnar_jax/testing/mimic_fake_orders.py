"""hosp/prescriptions, hosp/diagnoses_icd and hosp/procedures_icd of the generated
MIMIC-IV directory (`mimic_fake`)."""

from __future__ import annotations

import functools

import numpy as np
import polars as pl

from crl_mmnar_jax.testing.mimic_fake_common import (
  DAY,
  FULL_SCALE,
  HOUR,
  id_block,
  rank_in_group,
  timestamps,
)

# Prescriptions: drug, formulary_drug_cd, gsn, ndc, prod_strength, dose_val_rx,
# dose_unit_rx, form_val_disp, form_unit_disp, doses_per_24_hrs, route, drug_type, weight
DRUGS = [
    ("Sodium Chloride 0.9%  Flush", "NACLFLUSH", None, "0", "10 mL Syringe", "3", "mL",
     "0.3", "SYR", 3, "IV", "MAIN", 9),
    ("Heparin", "HEPA5I", "006549", "63323026201", "5000 Unit / mL- 1mL Vial", "5000",
     "UNIT", "1", "mL", 3, "SC", "MAIN", 7),
    ("Acetaminophen", "ACET325", "004489", "00904198261", "325mg Tablet", "650", "mg", "2",
     "TAB", 4, "PO/NG", "MAIN", 7),
    ("Docusate Sodium", "DOCU100", "003009", "00904224461", "100mg Capsule", "100", "mg",
     "1", "CAP", 2, "PO", "MAIN", 5),
    ("Senna", "SENN187", "019964", "00904516561", "1 Tablet", "8.6", "mg", "1", "TAB", 2,
     "PO/NG", "MAIN", 5),
    ("Insulin", "GLAR100I", "051483", "00088222033", "100 Units / mL - 10 mL Vial", "0",
     "UNIT", "0", "mL", 4, "SC", "MAIN", 5),
    ("Ondansetron", "ONDA2I", "025880", "00409475503", "2mg/mL-2mL", "4", "mg", "2", "mL",
     None, "IV", "MAIN", 4),
    ("Bisacodyl", "BISA10R", "002944", "00713010950", "10mg Suppository", "10", "mg", "1",
     "SUPP", 1, "PR", "MAIN", 4),
    ("Polyethylene Glycol", "PEG17", "025424", "66689001501", "1 Packet", "17", "g", "1",
     "PKT", 1, "PO/NG", "MAIN", 4),
    ("Furosemide", "FURO40", "008209", "51079007320", "40mg Tablet", "40", "mg", "1",
     "TAB", 1, "PO/NG", "MAIN", 3),
    ("Metoprolol Tartrate", "METO25", "006634", "51079025520", "25mg Tablet", "25", "mg",
     "1", "TAB", 2, "PO/NG", "MAIN", 3),
    ("Potassium Chloride", "KCL20P", "001255", "00245004101", "20mEq Packet", "40", "mEq",
     "2", "PKT", 1, "PO/NG", "MAIN", 3),
    ("Magnesium Sulfate", "MAG2PM", "016591", "00409672923", "2 g / 50 mL Premix Bag", "2",
     "gm", "1", "BAG", 1, "IV", "MAIN", 3),
    ("Pantoprazole", "PANT40", "027462", "00008084199", "40mg Tablet", "40", "mg", "1",
     "TAB", 1, "PO", "MAIN", 3),
    ("Oxycodone (Immediate Release)", "OXYC5", "004225", "00406055262", "5mg Tablet", "5",
     "mg", "1", "TAB", None, "PO/NG", "MAIN", 3),
    ("Vancomycin", "VANC1F", "009330", "00338355248", "1 g Frozen Bag", "1000", "mg", "1",
     "BAG", 2, "IV", "MAIN", 2),
    ("Piperacillin-Tazobactam", "PIPT4.5F", "016979", "00206885410", "4.5 g Frozen Bag",
     "4.5", "g", "1", "BAG", 3, "IV", "MAIN", 2),
    ("Atorvastatin", "ATOR40", "029968", "00071015623", "40mg Tablet", "40", "mg", "1",
     "TAB", 1, "PO/NG", "MAIN", 2),
    ("Aspirin", "ASA81", "004380", "00904404073", "81mg Tablet", "81", "mg", "1", "TAB", 1,
     "PO/NG", "MAIN", 2),
    ("Lorazepam", "LORA1I", "003757", "00641604401", "2mg/mL Vial", "1", "mg", "0.5", "mL",
     None, "IV", "MAIN", 1),
    ("NS", "NS1000", None, "0", "1000mL Bag", "1000", "mL", "1", "BAG", 1, "IV", "BASE", 4),
    ("D5W", "D5W250", None, "0", "250 mL Bag", "250", "mL", "1", "BAG", 1, "IV", "BASE", 2),
    ("Potassium Chloride", "KCLBASE2", "001265", "0", "2 mEq / mL", "20", "mEq", "10",
     "mL", 1, "IV", "ADDITIVE", 1),
]
N_RARE_DRUGS = 2000
RARE_DRUG_SHARE = 0.12
DRUG_FORMS = ["TAB", "CAP", "mL", "VIAL", "BAG"]
ROUTES = ["PO", "IV", "PO/NG", "SC", "IH", "TP", "IM", "PR"]

ICD9_DX = ["4019", "2724", "53081", "25000", "41401", "4280", "42731", "5849", "2859",
           "V5861", "3051", "311", "2449", "5990", "486", "0389", "99591", "78552",
           "51881", "V1582", "40390", "5859", "V4582", "2762", "2761", "49390", "2875"]
ICD10_DX = ["I10", "E785", "Z87891", "K219", "E119", "I2510", "I5033", "I4891", "N179",
            "D649", "F329", "E039", "Z7901", "N390", "J189", "A419", "R6520", "R6521",
            "J9601", "F17210", "Z794", "E872", "E871", "J449", "D696", "G4733", "F419"]
ICD9_PX = ["3893", "9604", "3995", "9671", "9904", "3491", "4513", "8856", "0040", "9672"]
ICD10_PX = ["02HV33Z", "0BH17EZ", "5A1955Z", "5A1945Z", "30233N1", "0DJ08ZZ", "3E0G76Z",
            "B2111ZZ", "0W9930Z", "5A1D70Z"]
N_RARE_CODES = 3000


@functools.lru_cache(maxsize=1)
def _rare_codes() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(11)
  letters = np.array(list("ABCDEFGHIJKLMNOPQRSTVWXYZ"))
  icd9 = np.array([str(v) for v in rng.integers(100, 99_999, N_RARE_CODES)])
  icd10 = np.array([f"{l}{v}" for l, v in zip(letters[rng.integers(0, 25, N_RARE_CODES)],
                                              rng.integers(10, 9_999, N_RARE_CODES))])
  return {"icd9": icd9, "icd10": icd10}


def _codes(rng, common: list[str], rare: np.ndarray, n: int) -> np.ndarray:
  """Zipf-like weights over the common codes, 40% of draws from the rare ones."""
  w = 1.0 / np.arange(1, len(common) + 1)
  out = np.asarray(common, dtype=object)[rng.choice(len(common), n, p=w / w.sum())]
  rare_rows = rng.random(n) < 0.4
  out[rare_rows] = rare[rng.integers(0, len(rare), int(rare_rows.sum()))]
  return out


# ------------------------------------------------------------------------------ tables

def prescriptions(rng, subj_a, hadm, admit, disch, los, cal, state, providers):
  """hosp/prescriptions of one chunk's admissions (rows in proportion to their length):
  the common drugs of `DRUGS` by weight, `RARE_DRUG_SHARE` from a long tail."""
  per_adm = FULL_SCALE["prescriptions"] / FULL_SCALE["admissions"]
  k = rng.poisson(per_adm * los / cal["los_days"])
  a = np.repeat(np.arange(len(hadm)), k)
  R = len(a)
  start = (admit[a] + (rng.random(R) * (disch[a] - admit[a])).astype(np.int64)) // 3600 * 3600
  stop = np.minimum(start + (rng.exponential(2.0, R) * DAY).astype(np.int64) // 3600 * 3600,
                    disch[a] + 12 * HOUR)
  order = np.lexsort((start, a))
  a, start, stop = a[order], start[order], stop[order]
  w = np.array([d[-1] for d in DRUGS], float)
  d = rng.choice(len(DRUGS), R, p=w / w.sum())
  rare = rng.random(R) < RARE_DRUG_SHARE
  rare_k = rng.integers(0, N_RARE_DRUGS, R)
  col = lambda j: pl.Series([x[j] for x in DRUGS], dtype=pl.Utf8).gather(d)
  rare_form = np.asarray(DRUG_FORMS, dtype=object)[rare_k % len(DRUG_FORMS)]
  rare_mg = (rare_k % 50 + 1) * 5
  poe_seq = rank_in_group(subj_a[a]) + rng.integers(0, 50)
  pharmacy = id_block(rng, state["pharmacy"], R, 1, 1)
  state["pharmacy"] += R
  r = pl.Series(rare)
  df = pl.DataFrame({
      "subject_id": subj_a[a], "hadm_id": hadm[a], "pharmacy_id": pharmacy,
      "poe_seq": poe_seq,
      "order_provider_id": pl.Series(providers[rng.integers(0, len(providers), R)]),
      "starttime": timestamps(start),
      "stoptime": timestamps(stop, rng.random(R) < 0.02),
      "form_rx": pl.Series([None, "TABLET", "SOLUTION"]).gather(
          rng.choice(3, R, p=[0.97, 0.02, 0.01])),
      "doses_per_24_hrs": pl.Series([x[9] for x in DRUGS], dtype=pl.Float64).gather(d),
  })
  rare_cols = {
      "drug_type": pl.lit("MAIN"),
      "drug": pl.format("Medication {} {}mg", pl.Series(rare_k), pl.Series(rare_mg)),
      "formulary_drug_cd": pl.format("MED{}", pl.Series(rare_k)),
      "gsn": pl.Series(rare_k + 10_000).cast(pl.Utf8).str.zfill(6),
      "ndc": pl.Series(rare_k * 7919 + 10_000_000_000).cast(pl.Utf8).str.zfill(11),
      "prod_strength": pl.format("{}mg", pl.Series(rare_mg)),
      "dose_val_rx": pl.Series(rare_mg).cast(pl.Utf8),
      "dose_unit_rx": pl.lit("mg"),
      "form_val_disp": pl.lit("1"),
      "form_unit_disp": pl.Series(rare_form.tolist(), dtype=pl.Utf8),
      "route": pl.Series(ROUTES).gather(rare_k % len(ROUTES)),
  }
  common = {"drug_type": col(11), "drug": col(0), "formulary_drug_cd": col(1),
            "gsn": col(2), "ndc": col(3), "prod_strength": col(4), "dose_val_rx": col(5),
            "dose_unit_rx": col(6), "form_val_disp": col(7), "form_unit_disp": col(8),
            "route": col(10)}
  return df.with_columns(
      poe_id=pl.format("{}-{}", pl.col("subject_id"), pl.col("poe_seq")),
      doses_per_24_hrs=pl.when(r).then(pl.lit(1.0)).otherwise(pl.col("doses_per_24_hrs")),
      **{name: pl.when(r).then(rare_cols[name]).otherwise(common[name])
         for name in common})


def icd_codes(rng, subj_a, hadm, admit, disch, group_a, n_groups):
  """hosp/diagnoses_icd and hosp/procedures_icd of one chunk's admissions (ICD-10 more
  often in later anchor_year_groups)."""
  p10 = np.linspace(0.0, 1.0, n_groups) ** 1.5
  v10 = rng.random(len(hadm)) < p10[group_a]
  rare = _rare_codes()
  per_adm = FULL_SCALE["diagnoses_icd"] / FULL_SCALE["admissions"]
  k = 1 + rng.poisson(per_adm - 1, len(hadm))
  a = np.repeat(np.arange(len(hadm)), k)
  code = np.where(v10[a], _codes(rng, ICD10_DX, rare["icd10"], len(a)),
                  _codes(rng, ICD9_DX, rare["icd9"], len(a)))
  dx = pl.DataFrame({"subject_id": subj_a[a], "hadm_id": hadm[a],
                     "seq_num": rank_in_group(a), "icd_code": pl.Series(code.tolist()),
                     "icd_version": np.where(v10[a], 10, 9)})
  k = rng.poisson(FULL_SCALE["procedures_icd"] / FULL_SCALE["admissions"], len(hadm))
  a = np.repeat(np.arange(len(hadm)), k)
  code = np.where(v10[a], _codes(rng, ICD10_PX, rare["icd10"], len(a)),
                  _codes(rng, ICD9_PX, rare["icd9"], len(a)))
  when = admit[a] + (rng.random(len(a)) * (disch[a] - admit[a])).astype(np.int64)
  px = pl.DataFrame({"subject_id": subj_a[a], "hadm_id": hadm[a],
                     "seq_num": rank_in_group(a),
                     "chartdate": timestamps(when).dt.date(),
                     "icd_code": pl.Series(code.tolist()),
                     "icd_version": np.where(v10[a], 10, 9)})
  return dx, px

