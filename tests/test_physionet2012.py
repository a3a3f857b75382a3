"""Tests for `physionet2012`: challenge-format fixtures value by value, every bad-input
error, and the real set A (skipped when ../shared/data is absent)."""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest

from crl_mmnar_jax.data.errors import DataError
from crl_mmnar_jax.data.featurize import STATS
from crl_mmnar_jax.data.sources import physionet2012 as pn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_DIR = os.path.join(ROOT, "..", "shared", "data", "physionet2012")
NAN = float("nan")
HEADER = "Time,Parameter,Value"
OUTCOME_HEADER = "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death"

# Exactly the challenge format. Line numbers (1 = header) matter for the error tests.
RECORDS = {
    ("a", 132001): [
        HEADER,
        "00:00,RecordID,132001",      # 2
        "00:00,Age,54",
        "00:00,Gender,0",
        "00:00,Height,-1",
        "00:00,ICUType,4",
        "00:00,Weight,-1",            # 7: admission weight not recorded
        "00:07,GCS,15",               # 8
        "00:07,HR,73",
        "00:07,NISysABP,147",
        "00:37,HR,77",
        "00:37,Temp,35.6",
        "00:37,Temp,0",               # impossible: dropped
        "01:37,HR,60",
        "02:00,Weight,80.5",          # the Weight time series
        "48:00,HR,90",                # window end, inclusive
        "48:30,HR,200",               # outside the 48 h window
    ],
    ("a", 132002): [
        HEADER,
        "00:00,RecordID,132002",
        "00:00,Age,90",
        "00:00,Gender,1",
        "00:00,Height,175.3",
        "00:00,ICUType,2",
        "00:00,Weight,82",            # admission weight (first Weight at 00:00)
        "00:00,Weight,81",            # a second one at 00:00: time series
        "00:10,pH,7.35",
        "00:10,PaO2,95",
        "00:10,MechVent,1",
        "01:10,pH,7.45",
        "01:40,Lactate,2.1",
    ],
    ("a", 132003): [                  # descriptors only: dropped
        HEADER,
        "00:00,RecordID,132003",
        "00:00,Age,-1",
        "00:00,Gender,-1",
        "00:00,Height,431.8",
        "00:00,ICUType,3",
        "00:00,Weight,70",
    ],
    ("b", 142001): [
        HEADER,
        "00:00,RecordID,142001",
        "00:00,Age,40",
        "00:00,Gender,1",
        "00:00,Height,13",            # impossible height: not recorded
        "00:00,ICUType,1",
        "00:00,Weight,-1",
        "05:00,TroponinT,0.5",
        "06:00,Cholesterol,150",
    ],
}
OUTCOMES = {
    "a": [OUTCOME_HEADER,
          "132002,16,8,8,3,1",        # line 2 (not in file order: joined by id)
          "132001,6,1,5,-1,0",        # line 3
          "132003,-1,-1,-1,-1,0"],    # line 4
    "b": [OUTCOME_HEADER,
          "142001,10,2,7,-1,0"],      # 7 days: not > 7
}


def _write(root, records=None, outcomes=None) -> str:
  records = RECORDS if records is None else records
  outcomes = OUTCOMES if outcomes is None else outcomes
  for (s, rid), lines in records.items():
    os.makedirs(root / f"set-{s}", exist_ok=True)
    (root / f"set-{s}" / f"{rid}.txt").write_text("\n".join(lines) + "\n")
  for s, lines in outcomes.items():
    (root / f"Outcomes-{s}.txt").write_text("\n".join(lines) + "\n")
  return str(root)


def _stats(cohort, row: int, modality: str, var: str) -> np.ndarray:
  m = cohort.modality_names.index(modality)
  cols = [cohort.feature_names[m].index(f"{var}_{s}") for s in STATS]
  return cohort.features[m][row, cols]


def _check(actual, expected) -> None:
  np.testing.assert_allclose(actual, np.asarray(expected, np.float64), rtol=1e-6, atol=1e-6,
                             equal_nan=True)


UNMEASURED = [NAN, NAN, NAN, NAN, NAN, 0.0, NAN, NAN]


@pytest.fixture(scope="module")
def fixture_cohort(tmp_path_factory):
  root = tmp_path_factory.mktemp("pn")
  return pn.load_physionet2012(_write(root), tasks=("in_hospital_death", "los_gt_7"))


def test_dropped_stays_are_logged_by_count_not_record_id(tmp_path, caplog):
  import logging
  with caplog.at_level(logging.WARNING):
    pn.load_physionet2012(_write(tmp_path))
  lines = [r.getMessage() for r in caplog.records if "no time-series value" in r.getMessage()]
  assert len(lines) == 1 and "dropped 1 stay(s)" in lines[0]
  assert "132003" not in lines[0]                              # the stay's RecordID


def test_fixture_rows_labels_and_info(fixture_cohort):
  cohort, info = fixture_cohort
  np.testing.assert_array_equal(cohort.patient_id, [132001, 132002, 142001])
  np.testing.assert_array_equal(info["set"], ["a", "a", "b"])
  assert cohort.modality_names == ("descriptors",) + tuple(g.name for g in pn.GROUPS)
  assert cohort.task_names == ("in_hospital_death", "los_gt_7")
  _check(cohort.labels, [[0, 0], [1, 1], [0, 0]])          # LoS 5, 8, 7 days
  assert info["n_stays_read"] == {"a": 3, "b": 1, "total": 4}
  assert info["n_stays"] == 3
  assert info["n_no_time_series"] == 1 and info["no_time_series_ids"] == [132003]
  assert info["n_measurements"] == 18 and info["n_descriptor_lines"] == 24
  assert info["out_of_range_dropped"] == {"Temp": 1}
  assert info["descriptors"]["Height"] == {"not_recorded": 1, "out_of_range": 1}
  assert info["descriptors"]["Weight"] == {"not_recorded": 2, "out_of_range": 0}
  assert info["descriptors"]["Gender"] == {"not_recorded": 0, "out_of_range": 0}
  assert info["positives"] == {"in_hospital_death": 1, "los_gt_7": 1}
  frac = info["observed_fraction"]
  assert frac["descriptors"] == 1.0 and frac["vitals"] == pytest.approx(2 / 3)
  assert frac["noninvasive_bp"] == pytest.approx(1 / 3) and frac["arterial_bp"] == 0.0
  assert frac["cardiac"] == pytest.approx(1 / 3) and frac["blood_gas"] == pytest.approx(1 / 3)
  assert info["featurize"]["n_out_of_window"] == 1          # HR at 48:30


def test_fixture_descriptors(fixture_cohort):
  cohort, _ = fixture_cohort
  assert cohort.feature_names[0] == pn.DESCRIPTOR_FEATURES
  _check(cohort.features[0], [
      [54, 0, NAN, NAN, 0, 0, 0, 1],          # height and weight -1: not recorded
      [90, 1, 175.3, 82, 0, 1, 0, 0],         # the first 00:00 Weight line
      [40, 1, NAN, NAN, 1, 0, 0, 0],          # height 13 cm: impossible
  ])


def test_fixture_time_series_value_by_value(fixture_cohort):
  cohort, _ = fixture_cohort
  m = {name: j for j, name in enumerate(cohort.modality_names)}
  np.testing.assert_array_equal(cohort.present[:, m["vitals"]], [True, True, False])
  # 132001 HR at 7, 37, 97 min and 48 h: 73, 77, 60, 90 (200 at 48:30 is outside).
  t = np.array([7 / 60, 37 / 60, 97 / 60, 48.0])
  v = np.array([73.0, 77.0, 60.0, 90.0])
  sxy = float(((t - t.mean()) * (v - 75.0)).sum())
  sxx = float(((t - t.mean()) ** 2).sum())
  _check(_stats(cohort, 0, "vitals", "HR"),
         [90, 75, 60, 90, math.sqrt((4 + 4 + 225 + 225) / 4), 4, 48, sxy / sxx])
  _check(_stats(cohort, 0, "vitals", "Temp"), [35.6, 35.6, 35.6, 35.6, 0, 1, 37 / 60, NAN])
  _check(_stats(cohort, 0, "vitals", "GCS"), [15, 15, 15, 15, 0, 1, 7 / 60, NAN])
  _check(_stats(cohort, 0, "vitals", "Weight"), [80.5, 80.5, 80.5, 80.5, 0, 1, 2, NAN])
  _check(_stats(cohort, 0, "noninvasive_bp", "NISysABP"),
         [147, 147, 147, 147, 0, 1, 7 / 60, NAN])
  _check(_stats(cohort, 0, "noninvasive_bp", "NIMAP"), UNMEASURED)
  # 132002: the second 00:00 Weight is the only vitals value.
  _check(_stats(cohort, 1, "vitals", "Weight"), [81, 81, 81, 81, 0, 1, 0, NAN])
  _check(_stats(cohort, 1, "vitals", "HR"), UNMEASURED)
  _check(_stats(cohort, 1, "blood_gas", "pH"),
         [7.45, 7.4, 7.35, 7.45, 0.05, 2, 70 / 60, 0.1])     # +0.1 over one hour
  _check(_stats(cohort, 1, "blood_gas", "PaO2"), [95, 95, 95, 95, 0, 1, 10 / 60, NAN])
  _check(_stats(cohort, 1, "blood_gas", "MechVent"), [1, 1, 1, 1, 0, 1, 10 / 60, NAN])
  _check(_stats(cohort, 1, "blood_gas", "FiO2"), UNMEASURED)
  _check(_stats(cohort, 1, "lactate", "Lactate"), [2.1, 2.1, 2.1, 2.1, 0, 1, 100 / 60, NAN])
  _check(_stats(cohort, 2, "cardiac", "TroponinT"), [0.5, 0.5, 0.5, 0.5, 0, 1, 5, NAN])
  _check(_stats(cohort, 2, "cardiac", "Cholesterol"), [150, 150, 150, 150, 0, 1, 6, NAN])
  _check(_stats(cohort, 2, "cardiac", "TroponinI"), UNMEASURED)
  # Unobserved modalities: rows exactly zero.
  for j in range(cohort.n_modalities):
    assert np.all(cohort.features[j][~cohort.present[:, j]] == 0.0)
  assert cohort.present[:, m["descriptors"]].all()
  assert not cohort.present[:, m["arterial_bp"]].any()


def test_sets_window_and_tasks(tmp_path):
  root = _write(tmp_path)
  cohort, info = pn.load_physionet2012(root, sets=("b",))
  np.testing.assert_array_equal(cohort.patient_id, [142001])
  assert info["sets"] == ["b"] and cohort.task_names == ("in_hospital_death",)
  cohort, _ = pn.load_physionet2012(root, sets=("a",), window_hours=1.0)
  # Within the first hour 132001 keeps HR 73, 77 (and 132002 its pH at 10 min only).
  _check(_stats(cohort, 0, "vitals", "HR")[:6], [77, 75, 73, 77, 2, 2])
  _check(_stats(cohort, 1, "blood_gas", "pH")[5], 1)
  with pytest.raises(DataError, match="set-z"):
    pn.load_physionet2012(root, sets=("z",))
  with pytest.raises(DataError, match="mortality_30d"):
    pn.load_physionet2012(root, tasks=("mortality_30d",))


def test_a_link_copied_as_text_is_named_with_the_command_that_restores_it(tmp_path):
  """A copy that turned the symbolic links of a folder like physionet2012-ab/ into small
  text files holding their targets: one line naming the file, its text and `ln -sfn`."""
  source = tmp_path / "p12"
  _write(source)
  linked = tmp_path / "ab"
  linked.mkdir()
  (linked / "set-a").write_text("../p12/set-a")
  (linked / "Outcomes-a.txt").write_text("../p12/Outcomes-a.txt")
  with pytest.raises(DataError) as e:
    pn.load_physionet2012(str(linked), sets=("a",))
  message = str(e.value)
  assert "\n" not in message and message.startswith(str(linked / "set-a"))
  assert "'../p12/set-a'" in message and f"ln -sfn ../p12/set-a {linked / 'set-a'}" in message
  (linked / "set-a").unlink()
  os.symlink(source / "set-a", linked / "set-a")           # the folder restored, not the file
  with pytest.raises(DataError, match=r"Outcomes-a\.txt: .*symbolic link copied as text"):
    pn.load_physionet2012(str(linked), sets=("a",))
  (linked / "Outcomes-a.txt").unlink()
  os.symlink(source / "Outcomes-a.txt", linked / "Outcomes-a.txt")
  cohort, _ = pn.load_physionet2012(str(linked), sets=("a",))
  assert len(cohort.patient_id) == 2


def _replace(record, line: int, text: str | None):
  """RECORDS with one line of `record` replaced (None: removed)."""
  records = {k: list(v) for k, v in RECORDS.items()}
  lines = records[record]
  if text is None:
    del lines[line - 1]
  else:
    lines[line - 1] = text
  return records


A1 = ("a", 132001)
MALFORMED = "malformed line (not 3 comma-separated fields)"
DROPPED = "record dropped: "
# (case, records, strict error location, strict error text, the problem counted without
# strict for 132001.txt; "record dropped: ..." means the record leaves the cohort)
BAD_RECORDS = [
    ("malformed line", _replace(A1, 9, "00:07,HR"), "132001.txt:9", "3 comma-separated",
     MALFORMED),
    ("extra field", _replace(A1, 9, "00:07,HR,73,1"), "132001.txt:9", "found 4", MALFORMED),
    ("non-numeric value", _replace(A1, 11, "00:37,HR,abc"), "132001.txt:11",
     "not a number", "value of HR is not a number"),
    ("unknown parameter", _replace(A1, 9, "00:07,HeartRate,73"), "132001.txt:9",
     "HeartRate", "unknown parameter 'HeartRate'"),
    ("empty parameter", _replace(A1, 9, "10:45,,1.9"), "132001.txt:9",
     "unknown parameter ''", "unknown parameter ''"),
    ("time not HH:MM", _replace(A1, 12, "0:37,Temp,35.6"), "132001.txt:12", "HH:MM",
     "time not HH:MM"),
    ("minutes over 59", _replace(A1, 12, "00:75,Temp,35.6"), "132001.txt:12", "HH:MM",
     "time not HH:MM"),
    ("no RecordID", _replace(A1, 2, None), "132001.txt:2", "no RecordID",
     DROPPED + "no RecordID line"),
    ("RecordID twice", _replace(A1, 8, "00:00,RecordID,132001"), "132001.txt:8",
     "more than once", "descriptor RecordID repeated (later line skipped)"),
    ("RecordID vs file name", _replace(A1, 2, "00:00,RecordID,132009"), "132001.txt:2",
     "file name", DROPPED + "RecordID does not match the file name"),
    ("descriptor late", _replace(A1, 3, "01:00,Age,54"), "132001.txt:3", "00:00",
     "descriptor Age not at 00:00"),
    ("bad header", _replace(A1, 1, "Time,Param,Value"), "132001.txt:1", "header",
     "header line is not 'Time,Parameter,Value'"),
]


@pytest.mark.parametrize("name,records,where,what,problem", BAD_RECORDS,
                         ids=[c[0] for c in BAD_RECORDS])
def test_bad_records(tmp_path, name, records, where, what, problem):
  """strict=True refuses the line naming file and line; by default it is skipped (or the
  record dropped) and counted per file and per problem."""
  del name
  root = _write(tmp_path, records=records)
  with pytest.raises(DataError) as e:
    pn.load_physionet2012(root, strict=True)
  assert where in str(e.value) and what in str(e.value)
  _no_raw_values(str(e.value), records[A1], where)
  cohort, info = pn.load_physionet2012(root)
  by_file = info["skipped"]["by_file"]
  path = os.path.join(root, "set-a", "132001.txt")
  assert by_file[path][problem] == 1, by_file
  assert info["skipped"]["by_problem"][problem] == 1
  assert info["skipped"]["strict"] is False
  if problem.startswith(DROPPED):
    assert cohort.patient_id.tolist() == [132002, 142001]
    assert info["n_records_dropped"] == 1
    assert list(info["records_dropped"].values()) == [[path]]
  else:
    assert cohort.patient_id.tolist() == [132001, 132002, 142001]
    assert info["n_records_dropped"] == 0


def _no_raw_values(msg: str, lines: list[str], where: str) -> None:
  """The strict message names file, line and column/parameter but no value of the bad
  line (nor the RecordID, outside the record's file name)."""
  line = int(where.rsplit(":", 1)[1]) if ":" in where else None
  text = msg.split(where, 1)[1]                    # what follows "path:line"
  if line is not None and 1 < line <= len(lines):
    for field in lines[line - 1].split(",")[2:]:   # the value (Parameter is a column)
      if field:
        assert not re.search(rf"(?<![\w.]){re.escape(field)}(?![\w.])", text), (field, msg)
  assert "132001" not in text.replace("132001.txt", "") and "132009" not in text, msg


def test_skipped_lines_change_nothing_else(tmp_path, fixture_cohort):
  """A skipped line leaves every other value as it was: 132001 with a malformed HR line
  added equals the fixture except for that line's absence (nothing else moves)."""
  base, _ = fixture_cohort
  records = {k: list(v) for k, v in RECORDS.items()}
  records[A1].insert(9, "10:45,,1.9")
  records[A1].insert(10, "11:00,HR")
  cohort, info = pn.load_physionet2012(_write(tmp_path, records=records),
                                       tasks=("in_hospital_death", "los_gt_7"))
  for a, b in zip(cohort.features, base.features):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(cohort.labels, base.labels)
  assert info["skipped"]["n_rows"] == 3        # the two lines and Temp 0 (out of range)


def test_empty_parameter_lines_like_the_released_test_set(tmp_path):
  """Lines ``HH:MM,,value`` spread over records: loaded by default, counted per file; the
  stays and their other values unchanged; strict refuses at the first, naming it."""
  records = {k: list(v) for k, v in RECORDS.items()}
  records[A1] += ["10:45,,1.9", "11:45,,2.0"]
  records[("b", 142001)].insert(8, "05:30,,0.7")
  root = _write(tmp_path, records=records)
  cohort, info = pn.load_physionet2012(root)
  assert cohort.patient_id.tolist() == [132001, 132002, 142001]
  skipped = info["skipped"]
  assert skipped["by_problem"]["unknown parameter ''"] == 3
  assert skipped["by_file"][os.path.join(root, "set-a", "132001.txt")][
      "unknown parameter ''"] == 2
  assert skipped["by_file"][os.path.join(root, "set-b", "142001.txt")] == {
      "unknown parameter ''": 1}
  assert info["n_measurements"] == 18           # the fixture's 18 usable lines
  with pytest.raises(DataError, match=r"set-a/132001\.txt:18: unknown parameter '' .*"
                                      r"\(3 such lines in all\)"):
    pn.load_physionet2012(root, strict=True)


def test_undecodable_bytes_and_empty_file(tmp_path):
  root = _write(tmp_path)
  path = tmp_path / "set-a" / "132002.txt"
  lines = path.read_bytes().split(b"\n")
  lines[9] = b"00:10,PaO2,9\xff5"                                 # line 10
  path.write_bytes(b"\n".join(lines))
  with pytest.raises(DataError, match=r"132002\.txt:10: not UTF-8"):
    pn.load_physionet2012(root, strict=True)
  cohort, info = pn.load_physionet2012(root)
  assert info["skipped"]["by_file"][str(path)] == {"not UTF-8 text": 1}
  pao2 = _stats(cohort, 1, "blood_gas", "PaO2")
  _check(pao2, UNMEASURED)                                        # its only line skipped
  path.write_bytes(b"")
  with pytest.raises(DataError, match=r"132002\.txt:1: empty file"):
    pn.load_physionet2012(root, strict=True)
  cohort, info = pn.load_physionet2012(root)
  assert info["skipped"]["by_file"][str(path)] == {
      "empty file": 1, "record dropped: no RecordID line": 1}
  assert info["records_dropped"] == {"no RecordID line": [str(path)]}
  assert cohort.patient_id.tolist() == [132001, 142001]


def test_duplicate_record_ids_across_sets(tmp_path):
  records = dict(RECORDS)
  records[("b", 132001)] = RECORDS[A1]
  outcomes = dict(OUTCOMES, b=OUTCOMES["b"] + ["132001,6,1,5,-1,0"])
  root = _write(tmp_path, records=records, outcomes=outcomes)
  with pytest.raises(DataError) as e:
    pn.load_physionet2012(root, strict=True)
  msg = str(e.value)
  assert "set-b/132001.txt:2" in msg and "set-a/132001.txt:2" in msg
  assert "duplicate RecordID, also in" in msg
  assert "132001" not in msg.replace("132001.txt", "")         # only as the file names
  cohort, info = pn.load_physionet2012(root)     # the later file (set b) is dropped
  assert info["records_dropped"] == {"duplicate RecordID (an earlier file has it)": [
      os.path.join(root, "set-b", "132001.txt")]}
  np.testing.assert_array_equal(info["set"], ["a", "a", "b"])
  assert cohort.patient_id.tolist() == [132001, 132002, 142001]


def _outcomes(s: str, line: int, text: str | None):
  """OUTCOMES with line `line` of set `s` replaced, appended (one past the end) or
  removed (text None)."""
  outcomes = {k: list(v) for k, v in OUTCOMES.items()}
  if text is None:
    del outcomes[s][line - 1]
  elif line == len(outcomes[s]) + 1:
    outcomes[s].append(text)
  else:
    outcomes[s][line - 1] = text
  return outcomes


# (case, outcomes, strict error location and text, the file and problem counted without
# strict, whether 132001 stays in the cohort: a record whose outcome line is skipped is
# dropped, and counted so in its record file as well)
BAD_OUTCOMES = [
    ("outcome without record", _outcomes("a", 5, "132999,1,1,3,-1,0"), "Outcomes-a.txt:5",
     "no record file in", "Outcomes-a.txt", "outcome line without a record file", True),
    ("record without outcome", _outcomes("a", 3, None), "Outcomes-a.txt",
     "132001.txt:2", "set-a/132001.txt", "record dropped: no outcome line", False),
    ("duplicate outcome", _outcomes("a", 5, "132001,6,1,5,-1,0"), "Outcomes-a.txt:5",
     "more than one line", "Outcomes-a.txt",
     "RecordID on an earlier line (later line skipped)", True),
    ("non-integer death", _outcomes("a", 3, "132001,6,1,5,-1,yes"), "Outcomes-a.txt:3",
     "In-hospital_death", "Outcomes-a.txt", "In-hospital_death not an integer", False),
    ("death not 0/1", _outcomes("a", 3, "132001,6,1,5,-1,2"), "Outcomes-a.txt:3",
     "0, 1 or -1", "Outcomes-a.txt", "In-hospital_death not 0, 1 or -1", False),
    ("short outcome line", _outcomes("a", 3, "132001,6,1,5"), "Outcomes-a.txt:3",
     "6 comma-separated", "Outcomes-a.txt",
     "malformed line (not 6 comma-separated fields)", False),
]


@pytest.mark.parametrize("name,outcomes,where,what,file,problem,kept", BAD_OUTCOMES,
                         ids=[c[0] for c in BAD_OUTCOMES])
def test_bad_outcomes(tmp_path, name, outcomes, where, what, file, problem, kept):
  del name
  root = _write(tmp_path, outcomes=outcomes)
  with pytest.raises(DataError) as e:
    pn.load_physionet2012(root, strict=True)
  assert where in str(e.value) and what in str(e.value)
  msg = str(e.value).replace("132001.txt", "<file>")
  for raw in ("132999", "132001", "yes", ",2"):                 # no RecordID, no value
    assert raw not in msg, msg
  cohort, info = pn.load_physionet2012(root)
  by_file = info["skipped"]["by_file"]
  assert by_file[os.path.join(root, file)][problem] == 1
  record = os.path.join(root, "set-a", "132001.txt")
  if kept:
    assert cohort.patient_id.tolist() == [132001, 132002, 142001]
    assert by_file[record] == {"Temp outside its valid range [25, 45]": 1}   # counted only
    assert info["n_records_dropped"] == 0
  else:
    assert cohort.patient_id.tolist() == [132002, 142001]
    assert by_file[record] == {"record dropped: no outcome line": 1}
    assert info["records_dropped"] == {"no outcome line": [record]}


def test_outcome_header_lacking_a_column_is_always_an_error(tmp_path):
  root = _write(tmp_path, outcomes=_outcomes("a", 1, "RecordID,SAPS-I,SOFA,Survival"))
  with pytest.raises(DataError, match=r"Outcomes-a\.txt:1: .*Length_of_stay"):
    pn.load_physionet2012(root)


def test_crlf_and_unknown_outcomes_labels(tmp_path):
  for (s, rid), lines in RECORDS.items():
    os.makedirs(tmp_path / f"set-{s}", exist_ok=True)
    (tmp_path / f"set-{s}" / f"{rid}.txt").write_bytes(
        ("\r\n".join(lines) + "\r\n").encode())
  outcomes = _outcomes("a", 3, "132001,6,1,-1,-1,-1")    # LoS and death unknown
  for s, lines in outcomes.items():
    (tmp_path / f"Outcomes-{s}.txt").write_text("\n".join(lines) + "\n")
  cohort, info = pn.load_physionet2012(str(tmp_path), tasks=("in_hospital_death",
                                                             "los_gt_7"))
  _check(cohort.labels, [[NAN, NAN], [1, 1], [0, 0]])
  assert info["labels_known"] == {"in_hospital_death": 2, "los_gt_7": 2}
  _check(_stats(cohort, 1, "blood_gas", "pH")[:4], [7.45, 7.4, 7.35, 7.45])


# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_set_a():
  if not os.path.isdir(os.path.join(REAL_DIR, "set-a")):
    pytest.skip(f"PhysioNet 2012 set A not found at {os.path.abspath(REAL_DIR)} "
                f"(../shared/data/physionet2012 relative to the project root)")
  return pn.load_physionet2012(REAL_DIR, sets=("a",))


def test_real_set_a_counts(real_set_a):
  cohort, info = real_set_a
  assert info["n_stays_read"]["total"] == 4000
  # Three records hold descriptors only; they are dropped and reported (all survived).
  assert info["no_time_series_ids"] == [140501, 140936, 141264]
  assert cohort.n == 3997 == info["n_stays"]
  assert int(np.nansum(cohort.labels[:, 0])) == 554 == info["positives"]["in_hospital_death"]
  assert not np.isnan(cohort.labels).any()
  assert info["n_measurements"] == 1733980 and info["n_descriptor_lines"] == 24000
  assert set(info["set"].tolist()) == {"a"}
  assert cohort.present[:, 0].all()
  frac = cohort.present.mean(axis=0)
  for name, f in zip(cohort.modality_names[1:], frac[1:]):
    assert 0.0 < f < 1.0, name
  assert info["out_of_range_dropped"]["Temp"] == 130     # 0 °C, -17.8 °C, 1-3 °C values
  assert info["out_of_range_dropped"]["pH"] == 11        # e.g. 735 for 7.35
  # Set A has no imperfect line: only values outside the valid ranges are counted.
  assert info["n_records_dropped"] == 0
  assert all("outside its valid range" in p for p in info["skipped"]["by_problem"])
  assert info["skipped"]["n_rows"] == sum(info["out_of_range_dropped"].values())
  cohort.validate("set A")


def test_real_set_a_loads_bit_for_bit_the_same(real_set_a):
  """Loading twice gives identical features: with `pl.cov` in the group_by, slopes of
  set A differed in their last bits from load to load, so a rerun's data fingerprint
  changed and a finished workdir refused to be evaluated again."""
  from crl_mmnar_jax.workdir import data_fingerprint
  first, _ = real_set_a
  again, _ = pn.load_physionet2012(REAL_DIR, sets=("a",))
  for a, b in zip(first.features, again.features):
    np.testing.assert_array_equal(a, b)
  split = np.zeros(first.n, int)
  assert data_fingerprint(first, split) == data_fingerprint(again, split)


def _raw_record(path: str) -> dict[str, list[tuple[float, float]]]:
  """Time series of one record by plain Python (descriptor lines skipped)."""
  series: dict[str, list[tuple[float, float]]] = {}
  seen_weight0 = False
  with open(path) as f:
    for line in f.read().splitlines()[1:]:
      time, param, value = line.split(",")
      hours = int(time[:2]) + int(time[3:]) / 60
      if param in ("RecordID", "Age", "Gender", "Height", "ICUType"):
        continue
      if param == "Weight" and hours == 0 and not seen_weight0:
        seen_weight0 = True
        continue
      lo, hi = pn.VALID_RANGES[param]
      if lo <= float(value) <= hi:
        series.setdefault(param, []).append((hours, float(value)))
  return series


@pytest.mark.parametrize("record_id", [132539, 132551, 140100])
def test_real_records_match_plain_python(real_set_a, record_id):
  cohort, _ = real_set_a
  row = int(np.flatnonzero(cohort.patient_id == record_id)[0])
  series = _raw_record(os.path.join(REAL_DIR, "set-a", f"{record_id}.txt"))
  for m, group in enumerate(pn.GROUPS, start=1):
    assert cohort.present[row, m] == any(v in series for v in group.variables)
    if not cohort.present[row, m]:
      continue
    for var in group.variables:
      if var not in series:
        _check(_stats(cohort, row, group.name, var), UNMEASURED)
        continue
      t = np.array([p[0] for p in series[var]])
      v = np.array([p[1] for p in series[var]])
      last = v[np.flatnonzero(t == t.max())[-1]]
      slope = np.polyfit(t, v, 1)[0] if np.unique(t).size > 1 else NAN
      _check(_stats(cohort, row, group.name, var),
             [last, v.mean(), v.min(), v.max(), v.std(), v.size, t.max(), slope])


def test_split_by_set_through_the_config(tmp_path):
  """--config.data.train_sets=a --config.data.test_sets=b: set b is exactly the test set."""
  from crl_mmnar_jax import data as data_lib
  from experiments.configs import physionet2012 as p12_config
  config = p12_config.get_config()
  config.data.dir = _write(tmp_path)
  config.data.train_sets = "a"
  config.data.test_sets = "b"
  loaded = data_lib.load(config)
  np.testing.assert_array_equal(loaded.test_mask_N, loaded.cohort.patient_id >= 142000)
  assert loaded.test_mask_N.sum() == 1
  assert "set" not in loaded.info                      # per-row arrays stay out of results
  config.data.test_sets = "a"                          # a set both for training and test
  with pytest.raises(DataError, match=r"sets=\['a', 'a'\] must name at least one set, each once"):
    data_lib.load(config)


def test_keep_reads_only_those_records(tmp_path):
  root = _write(tmp_path)
  full, _ = pn.load_physionet2012(root)
  for parity in (0, 1):
    keep = lambda ids, parity=parity: np.asarray(ids) % 2 == parity
    part, info = pn.load_physionet2012(root, keep=keep)
    want = full.patient_id % 2 == parity
    np.testing.assert_array_equal(part.patient_id, full.patient_id[want])
    for a, b in zip(part.features, full.features):
      np.testing.assert_array_equal(a, b[want])
    np.testing.assert_array_equal(part.labels, full.labels[want])
    assert info["n_stays_read"]["total"] == sum(rid % 2 == parity for _, rid in RECORDS)
  with pytest.raises(DataError, match="fewer train.data_shards"):
    pn.load_physionet2012(root, keep=lambda ids: np.zeros(len(ids), bool))


def test_keep_still_reports_an_outcome_without_record(tmp_path):
  outcomes = {**OUTCOMES, "b": OUTCOMES["b"] + ["142999,10,2,7,-1,0"]}
  root = _write(tmp_path, outcomes=outcomes)
  odd = lambda ids: np.asarray(ids) % 2 == 1
  # 142999 is odd: the odd ids' loader reports it (by line, not by RecordID).
  with pytest.raises(DataError, match=r"Outcomes-b\.txt:\d+: 1 RecordID\(s\) have no record "
                                      r"file") as e:
    pn.load_physionet2012(root, keep=odd, strict=True)
  assert "142999" not in str(e.value)
  outcome_b = os.path.join(root, "Outcomes-b.txt")
  _, info = pn.load_physionet2012(root, keep=odd)
  assert info["skipped"]["by_file"][outcome_b] == {"outcome line without a record file": 1}
  _, info = pn.load_physionet2012(root, keep=lambda ids: np.asarray(ids) % 2 == 0,
                                  strict=True)
  assert outcome_b not in info["skipped"]["by_file"]


def test_strict_through_the_config(tmp_path):
  """--config.data.strict: False (default) counts the empty-parameter lines in the info
  that the runner writes to data_info.json; True refuses them naming file and line."""
  import json

  from crl_mmnar_jax import data as data_lib
  from experiments.configs import physionet2012 as p12_config
  records = {k: list(v) for k, v in RECORDS.items()}
  records[A1].append("10:45,,1.9")
  config = p12_config.get_config()
  config.data.dir = _write(tmp_path, records=records)
  assert config.data.strict is False
  loaded = data_lib.load(config)
  assert loaded.info["skipped"]["by_problem"]["unknown parameter ''"] == 1
  json.dumps(loaded.info)                              # JSON-able, as data_info.json
  config.data.strict = True
  with pytest.raises(DataError, match=r"set-a/132001\.txt:18: unknown parameter ''"):
    data_lib.load(config)
