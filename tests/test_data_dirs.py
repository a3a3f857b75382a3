"""Every real-data config reads `--config.data.dir` (the shared data folder, $CRL_MMNAR_DATA
or ../shared/data, is a default, not a requirement), and a missing folder or file stops
with one line naming the path and where to get the data (docs/data.md)."""

import importlib
import os
import subprocess
import sys

import pytest

from crl_mmnar_jax import data as data_lib
from crl_mmnar_jax.data.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_YAIB = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "yaib-demo"))

CREDENTIALED = "wget -r -N -c -np --user USER --ask-password"
# config -> (a fragment of the download command every missing-folder message must hold)
SOURCES = {
    "physionet2012": "https://physionet.org/files/challenge-2012/1.0.0/set-a.tar.gz",
    "yaib": "git clone --depth 1 https://github.com/rvandewater/YAIB",
    "eicu": f"{CREDENTIALED} https://physionet.org/files/eicu-crd/2.0/",
    "mimic": f"{CREDENTIALED} https://physionet.org/files/mimiciv/2.2/",
}


def _config(name: str, **data):
  config = importlib.import_module(f"experiments.configs.{name}").get_config("tiny")
  for key, value in data.items():
    config.data[key] = value
  return config


def _error(config) -> str:
  with pytest.raises(DataError) as e:
    data_lib.load(config)
  message = str(e.value)
  assert "\n" not in message, f"not one line: {message!r}"
  return message


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_missing_data_dir_names_it_and_the_download(tmp_path, name):
  missing = str(tmp_path / "nowhere" / name)
  message = _error(_config(name, dir=missing))
  assert message.startswith(f"{missing}: no such folder"), message
  assert SOURCES[name] in message, message
  assert "docs/data.md" in message, message


def test_physionet_missing_set_and_outcomes(tmp_path):
  root = tmp_path / "p12"
  root.mkdir()
  message = _error(_config("physionet2012", dir=str(root)))   # a folder without sets
  assert message.startswith(f"{root}: no set-* directory"), message
  assert SOURCES["physionet2012"] in message and "docs/data.md" in message
  (root / "set-a").mkdir()
  (root / "set-a" / "132539.txt").write_text("Time,Parameter,Value\n00:00,RecordID,132539\n")
  # A set named by the split-by-set flags that is not there.
  message = _error(_config("physionet2012", dir=str(root), train_sets="a", test_sets="c"))
  assert message.startswith(f"{root / 'set-c'}: no such folder"), message
  assert "challenge-2012/1.0.0/set-c.tar.gz" in message and "Outcomes-c.txt" in message
  assert f"-C {root}" in message and "docs/data.md" in message
  # The records without their outcomes file.
  message = _error(_config("physionet2012", dir=str(root)))
  assert message.startswith(f"{root / 'Outcomes-a.txt'}: no such file"), message
  assert "challenge-2012/1.0.0/Outcomes-a.txt" in message and "docs/data.md" in message


def test_yaib_missing_database_folder(tmp_path):
  (tmp_path / "mortality24" / "eicu_demo").mkdir(parents=True)
  message = _error(_config("yaib", dir=str(tmp_path)))
  folder = os.path.join(str(tmp_path), "mortality24", "mimic_demo")
  assert message.startswith(f"{folder}: no such folder"), message
  assert SOURCES["yaib"] in message and "docs/data.md" in message
  assert f"cp -r /tmp/YAIB/demo_data/mortality24 {tmp_path}/`" in message, message
  # The folder without its files.
  (tmp_path / "mortality24" / "mimic_demo").mkdir()
  message = _error(_config("yaib", dir=str(tmp_path)))
  assert message.startswith(f"{os.path.join(folder, 'outc.parquet')}: file not found"), message
  assert SOURCES["yaib"] in message and "docs/data.md" in message


def test_mimic_missing_demo_and_meds(tmp_path):
  absent = str(tmp_path / "absent.parquet")
  message = _error(_config("mimic", demo_meds=absent))
  assert absent in message and "mimic-iv-demo-meds/0.0.1" in message, message
  assert "docs/data.md" in message
  message = _error(_config("mimic", meds=absent))
  assert message.startswith(f"{absent}: MEDS events file not found"), message
  assert "mimic-iv-demo-meds/0.0.1" in message and "docs/data.md" in message


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_YAIB, "mortality24")),
                    reason=f"YAIB demo data not found at {SHARED_YAIB}")
def test_yaib_reads_data_dir_elsewhere(tmp_path):
  """The same cohort from another folder (a symlink to the shared copy, no copy)."""
  (tmp_path / "mortality24").symlink_to(os.path.join(SHARED_YAIB, "mortality24"))
  config = _config("yaib", databases="mimic_demo")
  default = data_lib.load(config)
  config.data.dir = str(tmp_path)
  moved = data_lib.load(config)
  assert moved.cohort.n == default.cohort.n == 99
  assert moved.cohort.patient_id.tolist() == default.cohort.patient_id.tolist()


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_YAIB, "mortality24")),
                    reason=f"YAIB demo data not found at {SHARED_YAIB}")
def test_data_folder_from_the_environment(tmp_path, monkeypatch):
  """$CRL_MMNAR_DATA replaces ../shared/data as the configs' default data folder."""
  from crl_mmnar_jax.config import DATA_ENV
  assert _config("yaib").data.dir == SHARED_YAIB        # the repository's default
  (tmp_path / "yaib-demo").mkdir()
  (tmp_path / "yaib-demo" / "mortality24").symlink_to(os.path.join(SHARED_YAIB, "mortality24"))
  monkeypatch.setenv(DATA_ENV, str(tmp_path))
  config = _config("yaib", databases="mimic_demo")
  assert config.data.dir == str(tmp_path / "yaib-demo")
  assert data_lib.load(config).cohort.n == 99


def test_command_line_missing_dir_is_one_line(tmp_path):
  missing = str(tmp_path / "nowhere")
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.run", "--config=physionet2012:tiny",
       f"--config.data.dir={missing}", f"--workdir={workdir}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode != 0
  lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
  assert "Traceback" not in proc.stderr, proc.stderr
  assert any(f"{missing}: no such folder" in ln and "docs/data.md" in ln for ln in lines), (
      proc.stderr)
