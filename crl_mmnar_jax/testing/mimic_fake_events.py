"""hosp/labevents, icu/chartevents and their dictionaries (d_labitems, d_items) of the
generated MIMIC-IV directory (`mimic_fake`): real itemids with values drawn around
the means seen in the MIMIC-IV demo."""

from __future__ import annotations

import functools

import numpy as np
import polars as pl

from crl_mmnar_jax.testing.mimic_fake_common import (
  COLUMNS,
  DAY,
  FULL_SCALE,
  HOUR,
  fmt_number,
  id_block,
  nullable_int,
  outpatient_times,
  timestamps,
)

# Labs: itemid, label, fluid, category, unit, mean, sd, decimals, ref low, ref high
# (means and sds as in the MIMIC-IV demo; text-valued items have mean None).
LABS = [
    (50868, "Anion Gap", "Blood", "Chemistry", "mEq/L", 15.0, 4.3, 0, 8, 20),
    (50882, "Bicarbonate", "Blood", "Chemistry", "mEq/L", 24.9, 4.9, 0, 22, 32),
    (50902, "Chloride", "Blood", "Chemistry", "mEq/L", 101.1, 6.4, 0, 96, 108),
    (50912, "Creatinine", "Blood", "Chemistry", "mg/dL", 1.54, 1.48, 1, 0.5, 1.2),
    (50931, "Glucose", "Blood", "Chemistry", "mg/dL", 144.0, 76.0, 0, 70, 100),
    (50971, "Potassium", "Blood", "Chemistry", "mEq/L", 4.19, 0.63, 1, 3.3, 5.1),
    (50983, "Sodium", "Blood", "Chemistry", "mEq/L", 137.5, 5.3, 0, 133, 145),
    (51006, "Urea Nitrogen", "Blood", "Chemistry", "mg/dL", 27.9, 23.8, 0, 6, 20),
    (51221, "Hematocrit", "Blood", "Hematology", "%", 30.8, 6.6, 1, 36, 48),
    (51222, "Hemoglobin", "Blood", "Hematology", "g/dL", 10.06, 2.2, 1, 12, 16),
    (51248, "MCH", "Blood", "Hematology", "pg", 29.9, 2.8, 1, 27, 32),
    (51249, "MCHC", "Blood", "Hematology", "g/dL", 32.3, 1.5, 1, 31, 37),
    (51250, "MCV", "Blood", "Hematology", "fL", 91.7, 7.8, 0, 82, 98),
    (51265, "Platelet Count", "Blood", "Hematology", "K/uL", 209.6, 140.5, 0, 150, 440),
    (51277, "RDW", "Blood", "Hematology", "%", 15.9, 2.6, 1, 10.5, 15.5),
    (51279, "Red Blood Cells", "Blood", "Hematology", "m/uL", 3.40, 0.79, 2, 4.2, 5.4),
    (51301, "White Blood Cells", "Blood", "Hematology", "K/uL", 10.5, 6.0, 1, 4.0, 11.0),
    (52172, "RDW-SD", "Blood", "Hematology", "fL", 54.5, 10.7, 1, 35.1, 46.3),
    (50893, "Calcium, Total", "Blood", "Chemistry", "mg/dL", 8.57, 0.79, 1, 8.4, 10.3),
    (50960, "Magnesium", "Blood", "Chemistry", "mg/dL", 2.04, 0.37, 1, 1.6, 2.6),
    (50970, "Phosphate", "Blood", "Chemistry", "mg/dL", 3.67, 1.43, 1, 2.7, 4.5),
    (51237, "INR(PT)", "Blood", "Hematology", None, 1.50, 0.73, 1, 0.9, 1.1),
    (51274, "PT", "Blood", "Hematology", "sec", 16.4, 8.1, 1, 9.4, 12.5),
    (51275, "PTT", "Blood", "Hematology", "sec", 42.4, 24.1, 1, 25, 36.5),
    (50861, "Alanine Aminotransferase (ALT)", "Blood", "Chemistry", "IU/L", 100.0, 460.0,
     0, 0, 40),
    (50863, "Alkaline Phosphatase", "Blood", "Chemistry", "IU/L", 112.4, 74.8, 0, 35, 105),
    (50878, "Asparate Aminotransferase (AST)", "Blood", "Chemistry", "IU/L", 118.3, 594.0,
     0, 0, 40),
    (50885, "Bilirubin, Total", "Blood", "Chemistry", "mg/dL", 1.53, 3.6, 1, 0, 1.5),
    (52033, "Specimen Type", "Blood", "Blood Gas", None, None, None, 0, None, None),
    (50802, "Base Excess", "Blood", "Blood Gas", "mEq/L", -2.0, 5.8, 0, None, None),
    (50804, "Calculated Total CO2", "Blood", "Blood Gas", "mEq/L", 24.2, 6.1, 0, 21, 30),
    (50818, "pCO2", "Blood", "Blood Gas", "mm Hg", 41.4, 11.4, 0, 35, 45),
    (50820, "pH", "Blood", "Blood Gas", "units", 7.36, 0.097, 2, 7.35, 7.45),
    (50821, "pO2", "Blood", "Blood Gas", "mm Hg", 129.5, 96.7, 0, 85, 105),
    (50813, "Lactate", "Blood", "Blood Gas", "mmol/L", 2.41, 1.93, 1, 0.5, 2.0),
    (51146, "Basophils", "Blood", "Hematology", "%", 0.8, 1.6, 1, 0, 1),
    (51200, "Eosinophils", "Blood", "Hematology", "%", 2.3, 3.2, 1, 1, 4),
    (51244, "Lymphocytes", "Blood", "Hematology", "%", 24.6, 21.3, 1, 18, 42),
    (51254, "Monocytes", "Blood", "Hematology", "%", 8.4, 7.5, 1, 2, 11),
    (51256, "Neutrophils", "Blood", "Hematology", "%", 59.3, 22.2, 1, 50, 70),
    (50934, "H", "Blood", "Chemistry", None, 19.4, 52.0, 0, None, None),
    (50947, "I", "Blood", "Chemistry", None, 0.9, 1.0, 0, None, None),
    (51678, "L", "Blood", "Chemistry", None, 14.5, 15.0, 0, None, None),
]
LAB_TEXT_VALUES = {52033: ["ART.", "VEN.", "MIX.", "CENTRAL VENOUS."]}
# Specimens: (weight, itemids sharing one specimen_id and charttime).
LAB_PANELS = [
    (0.28, [50868, 50882, 50902, 50912, 50931, 50971, 50983, 51006]),           # BMP
    (0.25, [51221, 51222, 51248, 51249, 51250, 51265, 51277, 51279, 51301, 52172]),  # CBC
    (0.13, [50893, 50960, 50970]),
    (0.08, [51237, 51274, 51275]),                                            # coagulation
    (0.06, [50861, 50863, 50878, 50885]),                                      # liver
    (0.05, [52033, 50802, 50804, 50818, 50820, 50821]),                        # blood gas
    (0.03, [50813]),                                                           # lactate
    (0.05, [51146, 51200, 51244, 51254, 51256]),                               # differential
    (0.03, [50934, 50947, 51678]),                                             # HIL indices
    (0.04, [-1]),                           # one of the rare itemids (`RARE_LAB_ITEMS`)
]
RARE_LAB_ITEMS = np.array(sorted(set(range(50800, 53200, 7)) -
                                 {lab[0] for lab in LABS}), dtype=np.int64)
LAB_COMMENTS = ["___", "HEMOLYSIS FALSELY ELEVATES K", "VERIFIED BY REPLICATE ANALYSIS.",
                "IF FASTING, 70-100 NORMAL, >125 PROVISIONAL DIABETES.",
                "NOTIFIED ___ AT 10:15AM."]

# Chart items: itemid, label, abbreviation, category, unit, mean, sd, decimals, weight,
# normal low, normal high (text items: mean None, values from CHART_TEXT_VALUES).
CHART_ITEMS = [
    (220045, "Heart Rate", "HR", "Routine Vital Signs", "bpm", 91, 18.7, 0, 13913, 60, 100),
    (220210, "Respiratory Rate", "RR", "Respiratory", "insp/min", 20, 5.6, 0, 13913, 12, 20),
    (220277, "O2 saturation pulseoxymetry", "SpO2", "Respiratory", "%", 96.8, 2.96, 0,
     13540, 90, 100),
    (220179, "Non Invasive Blood Pressure systolic", "NBPs", "Routine Vital Signs", "mmHg",
     115, 21.8, 0, 8347, 90, 140),
    (220180, "Non Invasive Blood Pressure diastolic", "NBPd", "Routine Vital Signs",
     "mmHg", 63, 14.9, 0, 8349, 60, 90),
    (220181, "Non Invasive Blood Pressure mean", "NBPm", "Routine Vital Signs", "mmHg",
     75, 15.2, 0, 8342, 60, 110),
    (220050, "Arterial Blood Pressure systolic", "ABPs", "Routine Vital Signs", "mmHg",
     114, 20.1, 0, 5525, 90, 140),
    (220051, "Arterial Blood Pressure diastolic", "ABPd", "Routine Vital Signs", "mmHg",
     59, 10.9, 0, 5524, 60, 90),
    (220052, "Arterial Blood Pressure mean", "ABPm", "Routine Vital Signs", "mmHg", 78,
     20.1, 0, 5560, 60, 110),
    (223761, "Temperature Fahrenheit", "Temperature F", "Routine Vital Signs", "°F", 98.6,
     1.08, 1, 3379, 97, 100.4),
    (223762, "Temperature Celsius", "Temperature C", "Routine Vital Signs", "°C", 37.0,
     0.6, 1, 600, 36, 38),
    (220739, "GCS - Eye Opening", "GCS - Eye Opening", "Neurological", None, 3.25, 1.05, 0,
     3274, None, None),
    (223900, "GCS - Verbal Response", "GCS - Verbal Response", "Neurological", None, 3.0,
     1.87, 0, 3266, None, None),
    (223901, "GCS - Motor Response", "GCS - Motor Response", "Neurological", None, 5.26,
     1.45, 0, 3251, None, None),
    (220621, "Glucose (serum)", "Glucose (serum)", "Labs", "mg/dL", 140, 50, 0, 1500, 70,
     100),
    (225664, "Glucose finger stick (range 70-100)", "Glucose FS", "Routine Vital Signs",
     "mg/dL", 145, 48, 0, 2000, 70, 100),
    (224639, "Daily Weight", "Daily Weight", "General", "kg", 82, 22, 1, 300, None, None),
    (226512, "Admission Weight (Kg)", "Admit Wt", "General", "kg", 82, 22, 1, 150, None,
     None),
    (227969, "Safety Measures", "Safety Measures", "Treatments", None, None, None, 0,
     19330, None, None),
    (220048, "Heart Rhythm", "Heart Rhythm", "Routine Vital Signs", None, None, None, 0,
     12460, None, None),
    (224641, "Alarms On", "Alarms On", "Alarms", None, None, None, 0, 3020, None, None),
    (223835, "Inspired O2 Fraction", "FiO2", "Respiratory", None, 47, 17, 0, 1746, None,
     None),
]
CHART_TEXT_VALUES = {
    227969: ["Bed locked in low position", "Siderails up x 2", "Call light within reach",
             "Seizure precautions"],
    220048: ["SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "AF (Atrial Fibrillation)",
             "SB (Sinus Bradycardia)", "Paced"],
    224641: ["Yes", "No"],
}
# Other charted items (nursing documentation, ventilator settings ...): text or number.
N_OTHER_CHART_ITEMS = 240
OTHER_CHART_SHARE = 0.65
OTHER_CHART_TEXT = ["WNL", "Within Normal Limits", "Yes", "No", "Clear", "Diminished",
                    "Intact", "Dry", "Pink", "Warm", "Normal", "Absent", "Present",
                    "Oriented x3", "Sedated", "Assist", "Unable to assess", "None"]

LAB_IN_SHARE = 0.5          # share of lab rows with a hadm_id


# ------------------------------------------------------------------------------ tables

def labevents(rng, subject, t0, pat, admit, disch, hadm, los, cal, state, providers):
  """hosp/labevents of one chunk: specimens inside admissions (in proportion to their
  length) and outpatient ones, one row per (specimen, item) (module docstring of
  `mimic_fake`)."""
  panel_w = np.array([p[0] for p in LAB_PANELS])
  panel_w = panel_w / panel_w.sum()
  panel_len = np.array([len(p[1]) for p in LAB_PANELS])
  panel_flat = np.concatenate([p[1] for p in LAB_PANELS]).astype(np.int64)
  panel_start = np.r_[0, np.cumsum(panel_len)[:-1]]
  mean_panel = float(panel_w @ panel_len)
  n, A = len(subject), len(pat)
  per_adm = LAB_IN_SHARE * FULL_SCALE["labevents"] / FULL_SCALE["admissions"] / mean_panel
  per_pat = (1 - LAB_IN_SHARE) * FULL_SCALE["labevents"] / FULL_SCALE["patients"] / mean_panel
  k_in = rng.poisson(per_adm * los / cal["los_days"])
  k_out = rng.poisson(per_pat, n)
  a = np.repeat(np.arange(A), k_in)
  frac = rng.random(len(a))
  t_in = np.where(rng.random(len(a)) < 0.1,
                  admit[a] - (frac * 12 * HOUR).astype(np.int64),
                  admit[a] + (frac * (disch[a] - admit[a])).astype(np.int64)) // 60 * 60
  h_in = np.where(rng.random(len(a)) < 0.02, -1, hadm[a])
  p_out = np.repeat(np.arange(n), k_out)
  spec_subject = np.concatenate([subject[pat[a]], subject[p_out]])
  spec_hadm = np.concatenate([h_in, np.full(len(p_out), -1)])
  spec_time = np.concatenate([t_in, outpatient_times(rng, t0, p_out)])
  n_spec = len(spec_time)
  panel = rng.choice(len(LAB_PANELS), n_spec, p=panel_w)
  spec_id = id_block(rng, state["specimen"], n_spec, 1, 1)
  state["specimen"] += n_spec
  spec_priority = rng.choice(3, n_spec, p=[0.6, 0.3, 0.1])
  spec_provider = np.where(rng.random(n_spec) < 0.7, len(providers),
                           rng.integers(0, len(providers), n_spec))
  spec_store = spec_time + rng.integers(10, 240, n_spec) * 60
  # one row per (specimen, item)
  rows_per = panel_len[panel]
  s = np.repeat(np.arange(n_spec), rows_per)
  within = np.arange(len(s)) - np.repeat(np.cumsum(rows_per) - rows_per, rows_per)
  item = panel_flat[panel_start[panel[s]] + within]
  rare = item < 0
  item[rare] = RARE_LAB_ITEMS[rng.integers(0, len(RARE_LAB_ITEMS), int(rare.sum()))]
  order = np.lexsort((item, spec_time[s], spec_subject[s]))
  s, item = s[order], item[order]
  R = len(s)
  # per-item parameters
  lab_ids = np.array([lab[0] for lab in LABS])
  pos = np.searchsorted(lab_ids, item, sorter=np.argsort(lab_ids))
  pos = np.argsort(lab_ids)[np.clip(pos, 0, len(lab_ids) - 1)]
  known = lab_ids[pos] == item
  mean = np.array([np.nan if lab[5] is None else lab[5] for lab in LABS])[pos]
  sd = np.array([np.nan if lab[6] is None else lab[6] for lab in LABS])[pos]
  mean = np.where(known, mean, 10.0)
  sd = np.where(known, sd, 3.0)
  dec = np.where(known, np.array([lab[7] for lab in LABS])[pos], 1)
  lo = np.where(known, np.array([np.nan if lab[8] is None else lab[8] for lab in LABS])[pos],
                np.nan)
  hi = np.where(known, np.array([np.nan if lab[9] is None else lab[9] for lab in LABS])[pos],
                np.nan)
  # lognormal for skewed positive values, normal otherwise
  cv = sd / np.abs(mean)
  skewed = (cv > 0.25) & (mean > 0)
  sig2 = np.log1p(cv ** 2)
  z = rng.standard_normal(R)
  val = np.where(skewed, mean * np.exp(np.sqrt(sig2) * z - sig2 / 2), mean + sd * z)
  val = np.where(skewed | (mean <= 0) | (mean - 3 * sd < 0), val, np.maximum(val, 0.0))
  uom = np.array([lab[4] for lab in LABS], dtype=object)[pos]
  uom = np.where(known, uom, None)
  text_item = np.isin(item, list(LAB_TEXT_VALUES))
  text_vals = LAB_TEXT_VALUES[52033]
  df = pl.DataFrame({
      "subject_id": spec_subject[s],
      "hadm_id": nullable_int(spec_hadm[s], spec_hadm[s] < 0),
      "specimen_id": spec_id[s], "itemid": item,
      "order_provider_id": pl.Series(list(providers) + [None], dtype=pl.Utf8).gather(
          spec_provider[s]),
      "charttime": timestamps(spec_time[s]), "storetime": timestamps(spec_store[s]),
      "_val": val, "_dec": dec, "_text": text_item,
      "_tv": pl.Series(text_vals).gather(rng.integers(0, len(text_vals), R)),
      "_blank": rng.random(R) < 0.01,
      "valueuom": pl.Series(uom.tolist(), dtype=pl.Utf8),
      "ref_range_lower": lo, "ref_range_upper": hi,
      "priority": pl.Series(["ROUTINE", "STAT", None]).gather(spec_priority[s]),
      "comments": pl.Series(LAB_COMMENTS + [None]).gather(
          np.where(rng.random(R) < 0.05, rng.integers(0, len(LAB_COMMENTS), R),
                   len(LAB_COMMENTS))),
  })
  first_id = state["labevent"]
  state["labevent"] += R
  return df.with_columns(
      labevent_id=pl.int_range(first_id, first_id + R, dtype=pl.Int64),
      ref_range_lower=pl.col("ref_range_lower").fill_nan(None),
      ref_range_upper=pl.col("ref_range_upper").fill_nan(None),
      valuenum=pl.when(pl.col("_text")).then(None).otherwise(
          pl.when(pl.col("_dec") == 0).then(pl.col("_val").round(0))
          .when(pl.col("_dec") == 1).then(pl.col("_val").round(1))
          .otherwise(pl.col("_val").round(2))),
      value=pl.when(pl.col("_text")).then(pl.col("_tv"))
      .when(pl.col("_blank")).then(pl.lit("___"))
      .otherwise(fmt_number(pl.col("_val"), pl.col("_dec"))),
  ).with_columns(
      flag=pl.when((pl.col("valuenum") < pl.col("ref_range_lower")) |
                   (pl.col("valuenum") > pl.col("ref_range_upper")))
      .then(pl.lit("abnormal")).otherwise(None),
  )


@functools.lru_cache(maxsize=1)
def _chart_table() -> dict[str, np.ndarray]:
  """Every chart item (the named ones and `N_OTHER_CHART_ITEMS` others) with its
  parameters and sampling weight."""
  rng = np.random.default_rng(5)
  named = CHART_ITEMS
  w_named = np.array([c[8] for c in named], float)
  w_named = (1 - OTHER_CHART_SHARE) * w_named / w_named.sum()
  other_ids = np.sort(rng.choice(np.arange(223_000, 230_000), N_OTHER_CHART_ITEMS,
                                 replace=False))
  other_ids = other_ids[~np.isin(other_ids, [c[0] for c in named])]
  k = len(other_ids)
  w_other = 1.0 / np.arange(1, k + 1) ** 0.8
  w_other = OTHER_CHART_SHARE * w_other / w_other.sum()
  other_text = rng.random(k) < 0.6
  ids = np.r_[[c[0] for c in named], other_ids]
  text = np.r_[[c[5] is None for c in named], other_text]
  mean = np.r_[[np.nan if c[5] is None else c[5] for c in named],
               np.where(other_text, np.nan, rng.uniform(1, 200, k).round())]
  sd = np.r_[[np.nan if c[6] is None else c[6] for c in named], mean[len(named):] * 0.2]
  dec = np.r_[[c[7] for c in named], np.zeros(k, int)]
  uom = [c[4] for c in named] + [None if t else "units" for t in other_text]
  labels = ([c[1] for c in named] + [f"Charted item {i}" for i in other_ids])
  abbrev = ([c[2] for c in named] + [f"Item {i}" for i in other_ids])
  category = ([c[3] for c in named] + ["Other"] * k)
  low = [c[9] for c in named] + [None] * k
  high = [c[10] for c in named] + [None] * k
  return {"ids": ids, "w": np.r_[w_named, w_other], "text": text, "mean": mean, "sd": sd,
          "dec": dec, "uom": np.asarray(uom, dtype=object), "labels": labels,
          "abbrev": abbrev, "category": category, "low": low, "high": high}


def chartevents(rng, subject, hadm, stay_id, tin, tout, cal, chart_ratio):
  """icu/chartevents of one chunk's ICU stays (rows in proportion to stay length)."""
  t = _chart_table()
  per_stay = chart_ratio * FULL_SCALE["chartevents"] / FULL_SCALE["icustays"]
  k = rng.poisson(per_stay * (tout - tin) / DAY / cal["icu_days"])
  s = np.repeat(np.arange(len(stay_id)), k)
  R = len(s)
  time_ = tin[s] + (rng.random(R) * (tout[s] - tin[s])).astype(np.int64)
  outside = rng.random(R) < 0.01
  shift = rng.integers(1, 6 * HOUR, R)
  time_ = np.where(outside, np.where(rng.random(R) < 0.5, tin[s] - shift, tout[s] + shift),
                   time_) // 60 * 60
  which = np.minimum(np.searchsorted(np.cumsum(t["w"]), rng.random(R) * t["w"].sum()),
                     len(t["ids"]) - 1)
  order = np.lexsort((which, time_, s))
  s, time_, which = s[order], time_[order], which[order]
  text = t["text"][which]
  val = t["mean"][which] + t["sd"][which] * rng.standard_normal(R)
  val = np.clip(val, 0.0, np.where(t["uom"][which] == "%", 100.0, np.inf))  # SpO2 <= 100
  text_vocab = pl.Series(OTHER_CHART_TEXT + [v for vs in CHART_TEXT_VALUES.values()
                                               for v in vs])
  tv = text_vocab.gather(rng.integers(0, len(OTHER_CHART_TEXT), R))
  for item, vals in CHART_TEXT_VALUES.items():   # the named text items' own values
    rows = np.flatnonzero(t["ids"][which] == item)
    if len(rows):
      tv = tv.scatter(rows, pl.Series(vals).gather(rng.integers(0, len(vals), len(rows))))
  df = pl.DataFrame({
      "subject_id": subject[s], "hadm_id": hadm[s], "stay_id": stay_id[s],
      "caregiver_id": rng.integers(1_000, 99_999, R),
      "charttime": timestamps(time_),
      "storetime": timestamps(time_ + rng.integers(0, 90, R) * 60),
      "itemid": t["ids"][which],
      "_val": val, "_dec": t["dec"][which], "_text": text, "_tv": tv,
      "valueuom": pl.Series(t["uom"][which].tolist(), dtype=pl.Utf8),
      "warning": (rng.random(R) < 0.005).astype(np.int64),
  })
  return df.with_columns(
      value=pl.when(pl.col("_text")).then(pl.col("_tv"))
      .otherwise(fmt_number(pl.col("_val"), pl.col("_dec"))),
      valuenum=pl.when(pl.col("_text")).then(None)
      .when(pl.col("_dec") == 0).then(pl.col("_val").round(0))
      .otherwise(pl.col("_val").round(1)),
  )


# ---------------------------------------------------------------------------- dictionaries

def dictionaries() -> dict[str, pl.DataFrame]:
  """hosp/d_labitems and icu/d_items: every itemid that labevents / chartevents use."""
  labs = sorted(LABS, key=lambda lab: lab[0])
  rare = [(int(i), f"Lab item {int(i)}", "Blood", "Chemistry") for i in RARE_LAB_ITEMS]
  d_labitems = pl.DataFrame(
      [(lab[0], lab[1], lab[2], lab[3]) for lab in labs] + rare,
      schema=COLUMNS["d_labitems"], orient="row").sort("itemid")
  t = _chart_table()
  d_items = pl.DataFrame({
      "itemid": t["ids"], "label": t["labels"], "abbreviation": t["abbrev"],
      "linksto": ["chartevents"] * len(t["ids"]), "category": t["category"],
      "unitname": pl.Series(t["uom"].tolist(), dtype=pl.Utf8),
      "param_type": ["Text" if x else "Numeric" for x in t["text"]],
      "lownormalvalue": pl.Series(t["low"], dtype=pl.Float64),
      "highnormalvalue": pl.Series(t["high"], dtype=pl.Float64)}).sort("itemid")
  return {"d_labitems": d_labitems, "d_items": d_items}

