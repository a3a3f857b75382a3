"""Benchmark sections of the credentialed-data extractions on generated data: `eicu`
(`load_eicu` on synthetic eICU-CRD directories) and `mimic` (`load_mimic` on generated
MIMIC-IV directories, with a line fit and a figure); each load in its own process
(`load_case`) so that its peak RSS is its own."""

from __future__ import annotations

import gzip
import importlib
import os
import resource
import tempfile
import time
from typing import Any, Callable

import numpy as np

from experiments.bench.common import (
  Options,
  Result,
  child,
  env_sizes,
  folder_mb,
  peak_rss_bytes,
  rss_bytes,
)

# Synthetic eICU-CRD scales (patients) for `bench_eicu`; override with
# CRL_BENCH_EICU_PATIENTS=1000,20000.
EICU_BENCH_PATIENTS = (1_000, 10_000)


def _write_synthetic_eicu(folder: str, n_patients: int, seed: int = 0) -> dict[str, int]:
  """A synthetic eICU-CRD v2.0 directory (gzipped CSVs, the columns `load_eicu` reads).

  1.25 unit stays per patient; periodic vitals every 5 min for 36 h (every variable
  20% missing), aperiodic vitals every 30 min for 60% of stays, 30 labs, 10
  medication orders, 4 infusion records, 6 intake/output rows, 5 diagnoses, 4
  treatments, 10 respiratory chart rows and 1 culture per stay on average, with
  offsets from -6 h to 48 h. Returns rows per table.
  """
  import polars as pl

  from crl_mmnar_jax.data.sources import eicu
  rng = np.random.default_rng(seed)
  n_stays = int(n_patients * 1.25)
  stay = np.arange(1, n_stays + 1, dtype=np.int64) + 100_000
  pid = rng.integers(0, n_patients, n_stays)
  pid[:n_patients] = np.arange(n_patients)
  hs = pid * 10 + rng.integers(0, 2, n_stays)
  ages = rng.integers(10, 95, n_stays)
  patient = pl.DataFrame({
      "patientunitstayid": stay, "patienthealthsystemstayid": hs,
      "gender": np.where(rng.random(n_stays) < 0.5, "Male", "Female"),
      "age": np.where(ages > 89, "> 89", ages.astype(str)),
      "admissionheight": rng.normal(170, 10, n_stays).round(1),
      "admissionweight": rng.normal(80, 15, n_stays).round(1),
      "hospitaladmitoffset": -rng.integers(0, 3000, n_stays),
      "hospitaldischargeyear": 2014 + hs % 10 % 2,
      "hospitaldischargestatus": np.where(rng.random(n_stays) < 0.1, "Expired", "Alive"),
      "unittype": np.asarray(eicu.UNIT_TYPES)[rng.integers(0, 8, n_stays)],
      "unitadmitsource": np.asarray(eicu.ADMIT_SOURCES)[rng.integers(0, 8, n_stays)],
      "unitvisitnumber": rng.integers(1, 3, n_stays),
      "uniquepid": np.char.add("0", pid.astype(str)),
      # 90% of unit stays outlast the 24 h window (the others leave the cohort).
      "unitdischargeoffset": rng.integers(600, 10_000, n_stays),
      "unitdischargestatus": np.where(rng.random(n_stays) < 0.05, "Expired", "Alive"),
      "hospitaldischargeoffset": rng.integers(10_000, 20_000, n_stays),
  })
  tables = {"patient": patient}

  def events(per_stay: float, every: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    if every is not None:                      # a regular grid from 0 to 36 h
      k = int(36 * 60 / every)
      return np.repeat(stay, k), np.tile(np.arange(k) * int(every), n_stays)
    counts = rng.poisson(per_stay, n_stays)
    return np.repeat(stay, counts), rng.integers(-360, 48 * 60, int(counts.sum()))

  def maybe(x: np.ndarray, p: float = 0.2) -> np.ndarray:
    return np.where(rng.random(len(x)) < p, np.nan, x)

  s, t = events(0, every=5)
  tables["vitalPeriodic"] = pl.DataFrame(
      {"patientunitstayid": s, "observationoffset": t,
       **{v: maybe(rng.normal(80, 10, len(s)).round(1)) for v in eicu.PERIODIC_VITALS}})
  s, t = events(0, every=30)
  keep = np.isin(s, stay[rng.random(n_stays) < 0.6])
  tables["vitalAperiodic"] = pl.DataFrame(
      {"patientunitstayid": s[keep], "observationoffset": t[keep],
       **{v: rng.normal(90, 15, int(keep.sum())).round() for v in eicu.APERIODIC_VITALS}})
  s, t = events(30)
  tables["lab"] = pl.DataFrame({
      "patientunitstayid": s, "labresultoffset": t,
      "labname": np.asarray(eicu.LAB_NAMES + ("rare lab",))[
          rng.integers(0, len(eicu.LAB_NAMES) + 1, len(s))],
      "labresult": rng.normal(50, 20, len(s)).round(2)})
  drugs = np.asarray([f"DRUG {k} MG" for k in range(300)])
  s, t = events(10)
  tables["medication"] = pl.DataFrame({
      "patientunitstayid": s, "drugorderoffset": t,
      "drugordercancelled": np.where(rng.random(len(s)) < 0.05, "Yes", "No"),
      "drugname": drugs[rng.integers(0, 300, len(s))]})
  s, t = events(4)
  tables["infusionDrug"] = pl.DataFrame({"patientunitstayid": s, "infusionoffset": t,
                                         "drugname": drugs[rng.integers(0, 40, len(s))]})
  s, t = events(6)
  tables["intakeOutput"] = pl.DataFrame({
      "patientunitstayid": s, "intakeoutputoffset": t,
      "intaketotal": rng.integers(0, 2000, len(s)).astype(float),
      "outputtotal": rng.integers(0, 2000, len(s)).astype(float),
      "nettotal": rng.integers(-1000, 1000, len(s)).astype(float)})
  s, t = events(5)
  tables["diagnosis"] = pl.DataFrame({
      "patientunitstayid": s, "diagnosisoffset": t,
      "diagnosisstring": np.char.add("system|problem ",
                                     rng.integers(0, 500, len(s)).astype(str)),
      "icd9code": np.char.add("4", rng.integers(10, 99, len(s)).astype(str))})
  s, t = events(4)
  tables["treatment"] = pl.DataFrame({
      "patientunitstayid": s, "treatmentoffset": t,
      "treatmentstring": np.char.add("therapy|", rng.integers(0, 200, len(s)).astype(str))})
  s, t = events(10)
  tables["respiratoryCharting"] = pl.DataFrame({
      "patientunitstayid": s, "respchartoffset": t,
      "respchartvaluelabel": np.char.add("label ", rng.integers(0, 20, len(s)).astype(str))})
  s, t = events(1)
  tables["microLab"] = pl.DataFrame({
      "patientunitstayid": s, "culturetakenoffset": t,
      "culturesite": np.char.add("site ", rng.integers(0, 10, len(s)).astype(str)),
      "organism": np.where(rng.random(len(s)) < 0.5, "no growth", "Escherichia coli")})
  os.makedirs(folder, exist_ok=True)
  for name, df in tables.items():
    with gzip.open(os.path.join(folder, f"{name}.csv.gz"), "wb", compresslevel=1) as f:
      df.write_csv(f)
  return {name: len(df) for name, df in tables.items()}


def load_case(loader: str, folder: str, **kwargs: Any) -> Result:
  """`loader` ("module.function" of crl_mmnar_jax.data.sources, returning (Cohort, info)) on
  `folder` in this (fresh) process: wall time, CPU time (user + system, all threads:
  less sensitive than the wall time to other jobs on a shared machine) and peak RSS
  (the process's high-water mark, so the interpreter and the imports are included:
  see `rss_before_mb`)."""
  module, function = loader.rsplit(".", 1)
  fn = getattr(importlib.import_module(f"crl_mmnar_jax.data.sources.{module}"), function)
  rss0 = rss_bytes()
  cpu0 = resource.getrusage(resource.RUSAGE_SELF)
  start = time.perf_counter()
  cohort, _ = fn(folder, **kwargs)
  wall = time.perf_counter() - start
  usage = resource.getrusage(resource.RUSAGE_SELF)
  cpu = usage.ru_utime + usage.ru_stime - cpu0.ru_utime - cpu0.ru_stime
  return {"load_s": wall, "cpu_s": cpu, "rss_peak_mb": peak_rss_bytes() / 2**20,
          "rss_before_mb": rss0 / 2**20, "patients_kept": cohort.n}


def eicu_case(folder: str) -> Result:
  """`load_eicu` on `folder` in this (fresh) process: wall time and peak RSS."""
  return load_case("eicu.load_eicu", folder, cache_dir=None)


def _extraction_bench(section: str, sizes, write: Callable[[str, Any], Result],
                      case: Callable[[str, Result], str]) -> list[Result]:
  """For each size: `write(folder, size)` generates a raw dataset in a fresh temporary
  folder (not timed; returns the row fields of the result), then the expression
  `case(folder, written)` (a `bench.load_case(...)` call) runs in its own process so
  that its peak RSS is its own. Temporary folders go under $CRL_BENCH_TMP if set."""
  results = []
  for size in sizes:
    with tempfile.TemporaryDirectory(prefix=f"bench_{section}_",
                                     dir=os.environ.get("CRL_BENCH_TMP")) as folder:
      written = write(folder, size)
      mb = folder_mb(folder)
      r = child(case(folder, written))
    results.append({"section": section, **written, "gz_mb": mb, **r})
  return results


def bench_eicu(opts: Options) -> list[Result]:
  """`load_eicu` on synthetic eICU-CRD directories (`EICU_BENCH_PATIENTS`), each load in
  its own process so that its peak RSS is its own."""

  def write(folder: str, n_patients: int) -> Result:
    rows = _write_synthetic_eicu(folder, n_patients)
    return {"patients": n_patients, "unit_stays": rows["patient"],
            "table_rows": sum(rows.values()), "vital_periodic_rows": rows["vitalPeriodic"]}

  del opts
  return _extraction_bench("eicu", env_sizes("CRL_BENCH_EICU_PATIENTS",
                                             EICU_BENCH_PATIENTS, int),
                           write, lambda folder, _: f"bench.eicu_case({folder!r})")


# Generated MIMIC-IV scales (fractions of the full database: 1/80 ... 1/10) for
# `bench_mimic`; override with CRL_BENCH_MIMIC_SCALES=0.0125,0.1.
MIMIC_BENCH_SCALES = (0.0125, 0.025, 0.05, 0.1)
MIMIC_MEMORY_BUDGET_GIB = 4.0


def bench_mimic(opts: Options) -> list[Result]:
  """`load_mimic` (every table, notes and CXR included, fresh cache) on generated
  MIMIC-IV v2.2 directories (`experiments.mimic_fake`) at `MIMIC_BENCH_SCALES`, each
  extraction in its own process. Adds a row comparing the largest and the smallest
  scale, a least-squares line time = a + b · lab rows, and draws
  `<figure_dir>/bench_mimic.png` (time and peak RSS against lab rows)."""
  from experiments import mimic_fake

  def write(folder: str, scale: float) -> Result:
    info = mimic_fake.write_fake_mimic(os.path.join(folder, "mimic"), scale=scale)
    rows = info["rows"]
    return {"scale": scale, "patients": info["patients"],
            "admissions": rows["admissions"], "lab_rows": rows["labevents"],
            "chart_rows": rows["chartevents"],
            "table_rows": sum(v for k, v in rows.items() if k != "cxr_embeddings"),
            "generate_s": info["seconds"], "_info": info}

  def case(folder: str, written: Result) -> str:
    info = written.pop("_info")
    kwargs = dict(version="2.2", cache_dir=os.path.join(folder, "cache"),
                  cxr_embeddings=info["cxr_embeddings"], cxr_metadata=info["cxr_metadata"])
    return f"bench.load_case('mimic.load_mimic', {info['directory']!r}, **{kwargs!r})"

  results = _extraction_bench("mimic", env_sizes("CRL_BENCH_MIMIC_SCALES",
                                                 MIMIC_BENCH_SCALES, float), write, case)
  if len(results) >= 2:
    summary = mimic_summary(results)
    plot_mimic(results, summary, opts.figure_path("bench_mimic.png"))
    results.append(summary)
  return results


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
  """Least-squares y = a + b·x: (a, b, R²)."""
  b, a = np.polyfit(x, y, 1)
  r2 = 1 - np.sum((y - (a + b * x)) ** 2) / np.sum((y - y.mean()) ** 2)
  return float(a), float(b), float(r2)


def mimic_summary(results: list[Result]) -> Result:
  """The largest scale against the smallest (rows, wall and CPU time, peak RSS), and
  straight-line fits of wall and CPU time against lab rows."""
  x = np.array([r["lab_rows"] for r in results], float)
  a, b, r2 = _line_fit(x, np.array([r["load_s"] for r in results]))
  ca, cb, cr2 = _line_fit(x, np.array([r["cpu_s"] for r in results]))
  lo, hi = min(results, key=lambda r: r["scale"]), max(results, key=lambda r: r["scale"])
  return {
      "section": "mimic", "scale": f"{hi['scale']:g} / {lo['scale']:g}",
      "lab_rows_ratio": hi["lab_rows"] / lo["lab_rows"],
      "table_rows_ratio": hi["table_rows"] / lo["table_rows"],
      "time_ratio": hi["load_s"] / lo["load_s"], "cpu_ratio": hi["cpu_s"] / lo["cpu_s"],
      "rss_peak_ratio": hi["rss_peak_mb"] / lo["rss_peak_mb"],
      "fit_s_per_million_lab_rows": b * 1e6, "fit_intercept_s": a, "fit_r2": r2,
      "cpu_fit_s_per_million_lab_rows": cb * 1e6, "cpu_fit_intercept_s": ca,
      "cpu_fit_r2": cr2,
      "largest_under_memory_budget": hi["rss_peak_mb"] < MIMIC_MEMORY_BUDGET_GIB * 1024}


def plot_mimic(results: list[Result], summary: Result, path: str) -> None:
  """Extraction wall and CPU time (with their fitted lines) and peak RSS against lab
  rows; `results` are the per-scale rows of `bench_mimic`."""
  from matplotlib.figure import Figure
  x = np.array([r["lab_rows"] for r in results]) / 1e6
  fig = Figure(figsize=(9.5, 4))
  ax_t, ax_m = fig.subplots(1, 2)
  grid = np.linspace(0, x.max() * 1.05, 50)
  for key, fit, marker, label in (("load_s", "", "o", "wall time"),
                                  ("cpu_s", "cpu_", "s", "CPU time (user + system)")):
    y = [r[key] for r in results]
    points = ax_t.plot(x, y, marker, label=label)[0]
    a, b = summary[f"{fit}fit_intercept_s"], summary[f"{fit}fit_s_per_million_lab_rows"]
    a = 0.0 if abs(a) < 0.05 else a                      # no "-0.0 s"
    ax_t.plot(grid, a + b * grid, "-", lw=1, color=points.get_color(),
              label=f"{a:.1f} s + {b:.2f} s per M lab rows "
                    f"($R^2$ = {summary[f'{fit}fit_r2']:.3f})")
  for xi, r in zip(x, results):
    ax_t.annotate(f"1/{1 / r['scale']:.0f}", (xi, r["load_s"]), textcoords="offset points",
                  xytext=(4, 4), fontsize=8)
  ax_t.set(xlabel="labevents rows (millions)", ylabel="extraction time (s)",
           title="load_mimic on generated MIMIC-IV", xlim=(0, None), ylim=(0, None))
  ax_t.legend(fontsize=7, loc="upper left")
  ax_m.plot(x, [r["rss_peak_mb"] / 1024 for r in results], "o-", label="peak RSS")
  ax_m.axhline(MIMIC_MEMORY_BUDGET_GIB, color="k", ls=":", lw=1,
               label=f"{MIMIC_MEMORY_BUDGET_GIB:g} GiB budget")
  ax_m.set(xlabel="labevents rows (millions)", ylabel="GiB", title="peak resident memory",
           xlim=(0, None), ylim=(0, None))
  ax_m.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  print(f"mimic: wrote {path}")
