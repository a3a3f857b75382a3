"""note/discharge and note/radiology (MIMIC-IV-Note v2.2) of the generated MIMIC-IV
directory (`mimic_fake`): texts assembled from a pool of clinical sentences."""

from __future__ import annotations

import numpy as np
import polars as pl

from crl_mmnar_jax.testing.mimic_fake_common import (
  DAY,
  FULL_SCALE,
  nullable_int,
  outpatient_times,
  rank_in_group,
  timestamps,
)
from crl_mmnar_jax.testing.mimic_fake_cxr import CXR_PROCEDURES

# Sentences the notes are assembled from ("___" is MIMIC's de-identification mark).
DISCHARGE_SENTENCES = [
    "Patient is a ___ year old woman with a history of hypertension and diabetes who "
    "presents with worsening shortness of breath over the past three days.",
    "He was in his usual state of health until ___ when he developed substernal chest "
    "pain radiating to the left arm.",
    "In the ED, initial vitals were notable for tachycardia and a low grade fever.",
    "Labs were notable for an elevated white count and a creatinine above baseline.",
    "A chest radiograph showed a right lower lobe opacity concerning for pneumonia.",
    "She was started on broad spectrum antibiotics and given two liters of fluid.",
    "Blood cultures were drawn prior to antibiotics and remained negative at discharge.",
    "The patient was admitted to the medicine service for further management.",
    "Troponins were trended and peaked at ___ before downtrending.",
    "Cardiology was consulted and recommended medical management with aspirin and a "
    "statin.",
    "His home metoprolol was held in the setting of hypotension and restarted on "
    "hospital day two.",
    "Acute kidney injury was felt to be prerenal and resolved with hydration.",
    "Her potassium was repleted and her electrolytes were monitored daily.",
    "Diuresis was achieved with intravenous furosemide with good urine output.",
    "The patient was transferred to the ICU for hypoxemia requiring high flow oxygen.",
    "She was weaned to room air and remained stable on the floor.",
    "Physical therapy evaluated the patient and recommended discharge to rehab.",
    "Insulin sliding scale was continued and blood sugars were well controlled.",
    "A CT of the abdomen and pelvis showed no acute intra abdominal process.",
    "GI was consulted for the drop in hemoglobin and an endoscopy was performed.",
    "The patient tolerated a regular diet and ambulated without assistance.",
    "Pain was controlled with acetaminophen and low dose oxycodone as needed.",
    "He was counseled on smoking cessation and given nicotine replacement.",
    "Anticoagulation with heparin was started for new atrial fibrillation.",
    "Echocardiogram showed a preserved ejection fraction without wall motion "
    "abnormalities.",
    "Mental status returned to baseline after treatment of the urinary tract infection.",
    "Vital signs at discharge were stable and the patient was afebrile.",
    "The patient will follow up with her primary care physician within one week.",
    "Please return to the emergency department if you develop chest pain, fever or "
    "shortness of breath.",
    "Take all medications as prescribed and weigh yourself every morning.",
    "Lungs were clear to auscultation bilaterally without wheezes or crackles.",
    "Abdomen soft, non tender, non distended, with normal bowel sounds.",
    "Extremities warm and well perfused with trace bilateral lower extremity edema.",
    "Neuro: alert and oriented times three, moving all extremities.",
    "WBC ___ HGB ___ HCT ___ PLT ___ NA ___ K ___ CL ___ HCO3 ___ BUN ___ CREAT ___.",
]
RADIOLOGY_SENTENCES = [
    "The lungs are clear without focal consolidation, pleural effusion or pneumothorax.",
    "Heart size is normal and the mediastinal contours are unremarkable.",
    "There is a new right lower lobe opacity which may reflect pneumonia or aspiration.",
    "Small bilateral pleural effusions with adjacent atelectasis.",
    "Moderate pulmonary vascular congestion and mild interstitial edema.",
    "An endotracheal tube terminates about 4 cm above the carina.",
    "A right internal jugular central venous catheter ends in the mid SVC.",
    "An enteric tube courses below the diaphragm and out of view.",
    "No acute osseous abnormality is seen.",
    "Compared to the prior study there is no significant interval change.",
    "Stable moderate cardiomegaly.",
    "Mild degenerative changes of the thoracic spine.",
    "No evidence of free intraperitoneal air.",
    "The liver is normal in echotexture without focal lesion.",
    "There is no intracranial hemorrhage, mass effect or midline shift.",
]
INDICATIONS = ["shortness of breath", "fever", "chest pain", "hypoxia", "line placement",
               "eval for pneumonia", "abdominal pain", "fall, eval for fracture"]
CHIEF_COMPLAINTS = ["Shortness of breath", "Chest pain", "Abdominal pain", "Fever",
                    "Altered mental status", "Fall", "Weakness", "Nausea and vomiting",
                    "Syncope", "Cough", "Hypotension", "GI bleed"]
SERVICES = ["MEDICINE", "SURGERY", "CARDIOTHORACIC", "NEUROLOGY", "ORTHOPAEDICS"]

RADIOLOGY_IN_SHARE = 0.55   # share of radiology reports inside admissions
P_DISCHARGE_NOTE = FULL_SCALE["discharge"] / FULL_SCALE["admissions"]


def _words_per_sentence(sentences: list[str]) -> float:
  return float(np.mean([len(x.split()) for x in sentences]))


def _texts(rng, sentences: list[str], n_sentences: np.ndarray, sections: list[str],
           heads: list[str]) -> list[str]:
  """One text per entry of `n_sentences`: `heads[i]`, then the sentences split evenly
  across `sections` (each a heading line)."""
  pool = np.asarray(sentences, dtype=object)
  picks = pool[rng.integers(0, len(pool), int(n_sentences.sum()))]
  out, o = [], 0
  k = len(sections)
  for head, m in zip(heads, n_sentences):
    parts = [head]
    per = -(-int(m) // k)
    for s, title in enumerate(sections):
      chunk = picks[o + s * per: o + min(m, (s + 1) * per)]
      parts.append(f"{title}:\n{' '.join(chunk)}\n \n")
    out.append("".join(parts))
    o += int(m)
  return out


def note_tables(rng, subject, t0, pat, admit, disch, hadm, opts):
  """note/discharge (for `P_DISCHARGE_NOTE` of one chunk's admissions) and
  note/radiology (inside admissions and outpatient), texts from the sentence pools."""
  n, A = len(subject), len(pat)
  # discharge summaries
  has = rng.random(A) < P_DISCHARGE_NOTE
  a = np.flatnonzero(has)
  n_sent = np.maximum(rng.poisson(max(opts["discharge_words"] - 70, 0) /
                                  _words_per_sentence(DISCHARGE_SENTENCES), len(a)), 4)
  sex = np.where(rng.random(len(a)) < 0.5, "F", "M")
  cc = np.asarray(CHIEF_COMPLAINTS)[rng.integers(0, len(CHIEF_COMPLAINTS), len(a))]
  svc = np.asarray(SERVICES)[rng.integers(0, len(SERVICES), len(a))]
  heads = [f" \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___"
           f"              Discharge Date:   ___\n \nDate of Birth:  ___             "
           f"Sex:   {x}\n \nService: {v}\n \nAllergies: \nNo Known Allergies / Adverse "
           f"Drug Reactions\n \nAttending: ___.\n \nChief Complaint:\n{c}\n \n"
           for x, v, c in zip(sex, svc, cc)]
  text = _texts(rng, DISCHARGE_SENTENCES, n_sent,
                ["History of Present Illness", "Physical Exam", "Pertinent Results",
                 "Brief Hospital Course", "Discharge Instructions"], heads)
  day = disch[a] // DAY * DAY
  ds = pl.DataFrame({"subject_id": subject[pat[a]], "hadm_id": hadm[a],
                     "charttime": timestamps(day),
                     "storetime": timestamps(disch[a] + rng.integers(1 * 60, 48 * 60,
                                                                     len(a)) * 60),
                     "text": pl.Series(text, dtype=pl.Utf8)})
  # radiology reports: inside admissions (with hadm_id) and outpatient
  k_in = rng.poisson(RADIOLOGY_IN_SHARE * FULL_SCALE["radiology"] / FULL_SCALE["admissions"],
                     A)
  k_out = rng.poisson((1 - RADIOLOGY_IN_SHARE) * FULL_SCALE["radiology"] /
                      FULL_SCALE["patients"], n)
  ai = np.repeat(np.arange(A), k_in)
  po = np.repeat(np.arange(n), k_out)
  t_in = (admit[ai] + (rng.random(len(ai)) * (disch[ai] - admit[ai])).astype(np.int64))
  times = np.concatenate([t_in, outpatient_times(rng, t0, po)]) // 60 * 60
  subj = np.concatenate([subject[pat[ai]], subject[po]])
  h = np.concatenate([hadm[ai], np.full(len(po), -1)])
  order = np.lexsort((times, subj))
  times, subj, h = times[order], subj[order], h[order]
  m = len(times)
  exam = np.asarray([p[0] for p in CXR_PROCEDURES] + ["CT HEAD W/O CONTRAST",
                                                       "CT ABD & PELVIS WITH CONTRAST",
                                                       "LIVER OR GALLBLADDER US (SINGLE "
                                                       "ORGAN)"])
  ex = exam[rng.integers(0, len(exam), m)]
  ind = np.asarray(INDICATIONS)[rng.integers(0, len(INDICATIONS), m)]
  heads = [f"EXAMINATION:  {e}\n\nINDICATION:  ___ with {i}\n\nTECHNIQUE:  As per "
           f"protocol.\n\nCOMPARISON:  ___\n\n" for e, i in zip(ex, ind)]
  n_sent = np.maximum(rng.poisson(max(opts["radiology_words"] - 15, 0) /
                                  _words_per_sentence(RADIOLOGY_SENTENCES), m), 2)
  text = _texts(rng, RADIOLOGY_SENTENCES, n_sent, ["FINDINGS", "IMPRESSION"], heads)
  rr = pl.DataFrame({"subject_id": subj, "hadm_id": nullable_int(h, h < 0),
                     "charttime": timestamps(times),
                     "storetime": timestamps(times + rng.integers(10, 600, m) * 60),
                     "text": pl.Series(text, dtype=pl.Utf8)})
  notes = []
  for df, kind in ((ds, "DS"), (rr, "RR")):
    seq = rank_in_group(df["subject_id"].to_numpy()) + rng.integers(0, 20)
    notes.append(df.with_columns(note_seq=pl.Series(seq), note_type=pl.lit(kind))
                 .with_columns(note_id=pl.format("{}-{}-{}", "subject_id", "note_type",
                                                 "note_seq")))
  return notes[0], notes[1]

