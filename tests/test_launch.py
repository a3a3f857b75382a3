"""The launch scripts in launch/: syntax, shellcheck, --help, bad options, and the exact
commands they print with --dry_run.

Nothing is trained here and no cloud is touched: gcloud, python, curl, gcsfuse, sudo and
uv are fakes on PATH that record every call (a dry run must record none). The failure
paths (the TPU launcher's delete-on-failure trap, local.sh stopping the other processes)
run the real scripts against those fakes.
"""

import importlib.util
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = ["tpu_pod.sh", "run_worker.sh", "gpu.sh", "local.sh"]
ALL_SHELL = SCRIPTS + ["common.sh"]
TPU = ["gcloud", "compute", "tpus", "tpu-vm"]

FAKE = r"""#!/usr/bin/env bash
# Records its name and arguments; behaves as the tests ask through FAKE_* variables.
name=$(basename "$0")
{ printf '%s' "$name"; printf ' %q' "$@"; printf '\n'; } >> "$FAKE_LOG"
case $name in
  gcloud)
    if [[ " $* " == *" describe "* ]]; then echo 2; fi
    if [[ $4 == scp && $5 == --recurse && -n ${FAKE_STAGE_LIST:-} ]]; then
      (cd "$6" && find . -type f | sort) > "$FAKE_STAGE_LIST"
    fi
    if [[ -n ${FAKE_FAIL:-} && "$*" == *"$FAKE_FAIL"* ]]; then
      echo "fake gcloud failure" >&2
      exit 7
    fi
    ;;
  python*)
    id=x
    for a in "$@"; do
      case $a in --process_id=*) id=${a#*=} ;; esac
    done
    echo "fake python $*"
    if [[ " ${FAKE_FAIL_IDS:-} " == *" $id "* ]]; then
      echo "boom from process $id" >&2
      exit 3
    fi
    if [[ -n ${FAKE_SLEEP:-} ]]; then
      echo $$ >> "$FAKE_SLEEP"
      exec sleep 60
    fi
    exit "${FAKE_RC:-0}"
    ;;
esac
exit 0
"""
FAKE_NAMES = ["gcloud", "python3", "python", "curl", "gcsfuse", "sudo", "uv", "nvidia-smi"]


class Env:
  """A temporary cwd, HOME and TMPDIR, with the fakes first on PATH."""

  def __init__(self, tmp_path):
    self.tmp = tmp_path
    self.bin = tmp_path / "bin"
    self.cwd = tmp_path / "cwd"
    self.home = tmp_path / "home"
    self.tmpdir = tmp_path / "tmp"
    for d in (self.bin, self.cwd, self.home, self.tmpdir):
      d.mkdir()
    fake = self.bin / "fake"
    fake.write_text(FAKE)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    for name in FAKE_NAMES:
      (self.bin / name).symlink_to(fake)
    self.log = tmp_path / "calls.log"
    self.vars = {
        "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(self.home), "TMPDIR": str(self.tmpdir), "FAKE_LOG": str(self.log),
        "LC_ALL": "C",
    }
    for k in ("CRL_TPU_NAME", "CRL_TPU_ZONE", "CRL_TPU_TYPE", "CRL_TPU_VERSION", "CRL_PROJECT",
              "CRL_CONFIG", "CRL_WORKDIR", "CRL_WORKER_ID", "TPU_WORKER_ID", "CRL_PORT",
              "CRL_LOG_DIR", "CRL_NUM_PROCESSES", "CRL_DEVICES_PER_PROCESS", "PYTHON",
              "PYTHONPATH", "XLA_FLAGS"):
      self.vars[k] = None

  def run(self, script, *args, extra_env=None, timeout=30, cwd=None):
    env = {k: v for k, v in os.environ.items()}
    for k, v in {**self.vars, **(extra_env or {})}.items():
      if v is None:
        env.pop(k, None)
      else:
        env[k] = v
    return subprocess.run(["bash", os.path.join(LAUNCH, script), *args], cwd=cwd or self.cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)

  def calls(self):
    if not self.log.exists():
      return []
    return [shlex.split(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def env(tmp_path):
  return Env(tmp_path)


def commands(stdout):
  """The printed commands ("+ " lines), each split into words as a shell would."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def option_value(argv, name):
  return argv[argv.index(name) + 1]


def assert_dry(env, proc):
  """A dry run: exit 0, nothing called, nothing written."""
  assert proc.returncode == 0, proc.stderr
  assert env.calls() == [], f"--dry_run ran commands: {env.calls()}"
  assert os.listdir(env.cwd) == [] and os.listdir(env.tmpdir) == []


# ----------------------------------------------------------------------------- all scripts


@pytest.mark.parametrize("script", ALL_SHELL)
def test_bash_syntax(script):
  proc = subprocess.run(["bash", "-n", os.path.join(LAUNCH, script)], capture_output=True,
                        text=True)
  assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", ALL_SHELL)
def test_shellcheck_clean(script):
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed (apt-get install -y shellcheck): lint not checked")
  proc = subprocess.run(["shellcheck", "-x", os.path.join("launch", script)], cwd=ROOT,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", ALL_SHELL)
def test_every_disabled_shellcheck_warning_is_justified(script):
  lines = open(os.path.join(LAUNCH, script)).read().splitlines()
  for i, line in enumerate(lines):
    if "shellcheck disable" in line:
      above = lines[i - 1].strip()
      assert above.startswith("#") and "shellcheck" not in above, (
          f"{script}:{i + 1}: a disabled warning needs a comment saying why, on the line above")


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_executable(script):
  assert os.access(os.path.join(LAUNCH, script), os.X_OK)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(env, script, flag):
  proc = env.run(script, flag)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith(f"Usage: launch/{script}")
  assert "--dry_run" in proc.stdout
  assert env.calls() == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_option_fails_with_a_message(env, script):
  proc = env.run(script, "--dry_run", "--no_such_option")
  assert proc.returncode == 2
  assert f"launch/{script}: error: unknown option '--no_such_option'" in proc.stderr
  assert "--help" in proc.stderr
  assert commands(proc.stdout) == [] and env.calls() == []


OLD_SPELLINGS = {   # script: its options as the absl flags spell them, one set per test
    "tpu_pod.sh": ["--workdir=gs://b/r", "--accelerator_type=v4-32", "--log_dir", "L",
                   "--remote_dir=code", "--python_version", "3.11", "--gcs_direct",
                   "--create_flag", "--network=my-net"],
    "run_worker.sh": ["--worker_id", "3", "--log_dir=L", "--python_version=3.11",
                      "--jax_extra", "tpu", "--gcs_mount_root", "/m", "--install=never",
                      "--workdir=gs://b/x"],
    "gpu.sh": ["--num_nodes=2", "--node_rank", "1", "--coordinator=h:1", "--jax_extra=rocm",
               "--install", "--log_dir", "L", "--", "--workdir=/w"],
    "local.sh": ["--num_processes", "3", "--devices_per_process=2", "--log_dir=L",
                 "--port=23456", "--", "--workdir=/w", "--config.train.dry-run=1"],
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_options_are_spelled_with_underscores_and_the_old_dashes_still_work(env, script):
  """Every launcher option is spelled like the absl flags of the Python scripts
  (--dry_run, --log_dir); the dashed spelling of before (--dry-run) means the same, and
  nothing after -- or in a --create_flag value is respected."""
  args = OLD_SPELLINGS[script]
  usage = env.run(script, "--help").stdout
  for a in args:
    if a.startswith("--") and "." not in a and a != "--network=my-net":
      assert a.split("=")[0] in usage, a
  assert not re.search(r"^  --\w+-", usage, flags=re.M)      # no dashed option in --help
  new = env.run(script, "--dry_run", *args)
  assert_dry(env, new)
  dashed = []
  for i, a in enumerate(args):
    before = "--" not in args[:i] and not (i and args[i - 1] == "--create_flag")
    name, sep, value = a.partition("=")
    dashed.append(name.replace("_", "-") + sep + value if before and a.startswith("--")
                  else a)
  assert dashed != args
  old = env.run(script, "--dry-run", *dashed)
  assert_dry(env, old)
  strip = lambda out: [c for c in commands(out) if not any("coordinator_address" in w
                                                           for w in c)]
  assert strip(old.stdout) == strip(new.stdout) and commands(new.stdout)
  if script == "tpu_pod.sh":
    assert "--network=my-net" in gcloud_commands(new.stdout)[0]
  if script == "local.sh":
    assert "--config.train.dry-run=1" in commands(new.stdout)[1]


@pytest.mark.parametrize("script,option", [("tpu_pod.sh", "--zone"), ("local.sh", "--port"),
                                           ("gpu.sh", "--gpus"), ("run_worker.sh", "--log_dir")])
def test_option_without_value(env, script, option):
  proc = env.run(script, "--dry_run", option)
  assert proc.returncode == 2 and f"option {option} needs a value" in proc.stderr


# ----------------------------------------------------------------------------- tpu_pod.sh

POD_ARGS = ["--name", "crl-test", "--zone=europe-west4-b", "--accelerator_type", "v5litepod-16",
            "--workdir", "gs://my-bucket/crl/run 1", "--config", "synthetic:tiny",
            "--config.seed=2", "--", "--config.train.epochs=3"]


def gcloud_commands(stdout):
  return [c for c in commands(stdout) if c[0] == "gcloud"]


def test_tpu_pod_dry_run_prints_every_step(env):
  proc = env.run("tpu_pod.sh", "--dry_run", *POD_ARGS)
  assert_dry(env, proc)
  cmds = commands(proc.stdout)
  gc = gcloud_commands(proc.stdout)
  assert [c[4] for c in gc] == ["create", "scp", "ssh", "ssh", "describe", "scp", "delete"]
  create, push, install, run, describe, fetch, delete = gc
  zone = "--zone=europe-west4-b"
  assert create == TPU + ["create", "crl-test", zone, "--accelerator-type=v5litepod-16",
                          "--version=v2-alpha-tpuv5-lite"]
  # The code is staged (without .git/.venv) and copied recursively to every worker.
  stage = os.path.join(str(env.tmpdir), "crl-tpu-stage.crl-test", "crl_mmnar_jax")
  tar = next(c for c in cmds if c[0] == "tar")
  assert tar[:3] == ["tar", "-C", ROOT] and "--exclude=./.git" in tar
  assert "--exclude=./.venv" in tar and tar[-6:] == ["|", "tar", "-C", stage, "-xf", "-"]
  assert push == TPU + ["scp", "--recurse", stage, "crl-test:", zone, "--worker=all"]
  # Install, then run, on all workers; the remote command line survives the quoting.
  for ssh in (install, run):
    assert ssh[:6] == TPU + ["ssh", "crl-test"]
    assert zone in ssh and "--worker=all" in ssh
  remote_install = shlex.split(option_value(install, "--command"))
  assert remote_install[:5] == ["cd", "crl_mmnar_jax", "&&", "bash", "launch/run_worker.sh"]
  assert "--install_only" in remote_install
  assert option_value(remote_install, "--jax_extra") == "tpu"
  assert option_value(remote_install, "--venv") == ".venv"
  remote_run = shlex.split(option_value(run, "--command"))
  assert remote_run[:5] == ["cd", "crl_mmnar_jax", "&&", "bash", "launch/run_worker.sh"]
  assert option_value(remote_run, "--workdir") == "gs://my-bucket/crl/run 1"
  assert option_value(remote_run, "--log_dir") == "logs"
  assert option_value(remote_run, "--tee") == "0"
  experiment = remote_run[remote_run.index("--") + 1:]
  assert experiment == ["--config=synthetic:tiny", "--config.seed=2", "--config.train.epochs=3"]
  # Logs come back one worker at a time; the slice is deleted without a prompt.
  assert describe[:6] == TPU + ["describe", "crl-test"]
  assert fetch == TPU + ["scp", "crl-test:crl_mmnar_jax/logs/worker-W.log", "logs/tpu-crl-test/",
                         zone, "--worker=W"]
  assert delete == TPU + ["delete", "crl-test", zone, "--quiet"]


def test_tpu_pod_keep_reuse_spot_project(env):
  proc = env.run("tpu_pod.sh", "--dry_run", "--keep", "--reuse", *POD_ARGS)
  assert_dry(env, proc)
  assert [c[4] for c in gcloud_commands(proc.stdout)] == ["scp", "ssh", "ssh", "describe", "scp"]
  assert "# 6. (--keep) the slice is kept" in proc.stdout

  proc = env.run("tpu_pod.sh", "--dry_run", "--workdir=gs://b/r", "--spot", "--project", "my-proj",
                 "--create_flag=--network=my-net")
  assert_dry(env, proc)
  create = gcloud_commands(proc.stdout)[0]
  assert create == TPU + ["create", "crl-mmnar", "--zone=us-central1-a", "--project=my-proj",
                          "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite",
                          "--spot", "--network=my-net"]
  assert all("--project=my-proj" in c for c in gcloud_commands(proc.stdout))


def test_tpu_pod_options_from_environment(env):
  proc = env.run("tpu_pod.sh", "--dry_run", extra_env={
      "CRL_TPU_NAME": "envslice", "CRL_TPU_ZONE": "us-east5-a", "CRL_TPU_TYPE": "v6e-16",
      "CRL_WORKDIR": "gs://b/env", "CRL_CONFIG": "yaib"})
  assert_dry(env, proc)
  create = gcloud_commands(proc.stdout)[0]
  assert create == TPU + ["create", "envslice", "--zone=us-east5-a", "--accelerator-type=v6e-16",
                          "--version=v2-alpha-tpuv6e"]
  run = shlex.split(option_value(gcloud_commands(proc.stdout)[3], "--command"))
  assert run[-2:] == ["--", "--config=yaib"] and option_value(run, "--workdir") == "gs://b/env"


@pytest.mark.parametrize("accelerator,runtime", [
    ("v4-32", "tpu-ubuntu2204-base"), ("v5p-16", "v2-alpha-tpuv5"),
    ("v5litepod-32", "v2-alpha-tpuv5-lite"), ("v6e-64", "v2-alpha-tpuv6e")])
def test_tpu_pod_runtime_from_accelerator_type(env, accelerator, runtime):
  proc = env.run("tpu_pod.sh", "--dry_run", "--workdir=gs://b/r", f"--accelerator_type={accelerator}")
  assert_dry(env, proc)
  assert f"--version={runtime}" in gcloud_commands(proc.stdout)[0]


@pytest.mark.parametrize("args,message", [
    ([], "--workdir is required"),
    (["--workdir", "relative/dir"], "--workdir must be gs://BUCKET/PATH or an absolute path"),
    (["--workdir=gs://b/r", "--accelerator_type=x9-8"], "pass --version"),
    (["--workdir=gs://b/r", "--name=Bad_Name"], "--name must be lowercase"),
    (["--workdir=gs://b/r", "--", "--workdir=/other"], "give '--workdir=/other' as an option"),
    (["--workdir=gs://b/r", "--", "--process_id=1"], "is set on the workers"),
])
def test_tpu_pod_bad_arguments(env, args, message):
  proc = env.run("tpu_pod.sh", "--dry_run", *args)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr
  assert env.calls() == []


def test_tpu_pod_remote_command_runs_on_a_worker(env, tmp_path):
  """The --command string, run by a worker's shell (here: bash in a fake home with the
  code in ~/crl_mmnar_jax), reaches run_worker.sh with every argument intact."""
  proc = env.run("tpu_pod.sh", "--dry_run", *POD_ARGS)
  remote = option_value(gcloud_commands(proc.stdout)[3], "--command")
  remote = remote.replace("launch/run_worker.sh", "launch/run_worker.sh --dry_run --worker_id 0", 1)
  os.symlink(ROOT, env.home / "crl_mmnar_jax")
  worker = subprocess.run(["bash", "-c", remote], cwd=env.home, capture_output=True, text=True,
                          env={**os.environ, **{k: v for k, v in env.vars.items() if v}},
                          timeout=30)
  assert worker.returncode == 0, worker.stderr
  assert env.calls() == []
  cmds = commands(worker.stdout)
  mount = os.path.join(str(env.home), "gcs", "my-bucket")
  gcsfuse = next(c for c in cmds if c[0] == "gcsfuse")
  assert gcsfuse[-2:] == ["my-bucket", mount] and "--implicit-dirs" in gcsfuse
  code = os.path.join(str(env.home), "crl_mmnar_jax")   # ~/crl_mmnar_jax on the worker
  assert cmds[-1][:4] == ["env", f"PYTHONPATH={code}", "PYTHONUNBUFFERED=1", ".venv/bin/python"]
  assert cmds[-1][4:] == ["-m", "experiments.run", "--config=synthetic:tiny", "--config.seed=2",
                          "--config.train.epochs=3", f"--workdir={mount}/crl/run 1",
                          "--distributed", "2>&1", "|", "tee", "logs/worker-0.log"]


def test_tpu_pod_success_deletes_the_slice_and_fetches_every_log(env):
  stage_list = env.tmp / "stage.txt"
  proc = env.run("tpu_pod.sh", "--workdir=gs://b/r", "--name=ok", "--log_dir", str(env.tmp / "got"),
                 extra_env={"FAKE_STAGE_LIST": str(stage_list)})
  assert proc.returncode == 0, proc.stderr
  calls = env.calls()
  assert [c[4] for c in calls] == ["create", "scp", "ssh", "ssh", "describe", "scp", "scp", "delete"]
  assert [c[-1] for c in calls[5:7]] == ["--worker=0", "--worker=1"]   # describe said 2 workers
  staged = stage_list.read_text().split()
  for f in ("./pyproject.toml", "./experiments/run.py", "./crl_mmnar_jax/model.py",
            "./launch/run_worker.sh", "./launch/common.sh"):
    assert f in staged
  assert not any(f.startswith(("./.git/", "./.venv/")) or "__pycache__" in f for f in staged)
  assert os.listdir(env.tmpdir) == []          # the staging directory is removed


def test_tpu_pod_failure_trap_deletes_the_slice(env):
  proc = env.run("tpu_pod.sh", "--workdir=gs://b/r", "--name=fails",
                 extra_env={"FAKE_FAIL": "--tee 0"})   # the run step fails
  assert proc.returncode == 7
  assert "failed (exit status 7)" in proc.stderr
  calls = env.calls()
  assert [c[4] for c in calls] == ["create", "scp", "ssh", "ssh", "describe", "scp", "scp", "delete"]
  assert calls[-1] == TPU + ["delete", "fails", "--zone=us-central1-a", "--quiet"]
  assert os.listdir(env.tmpdir) == []


def test_tpu_pod_failure_with_keep_keeps_the_slice(env):
  proc = env.run("tpu_pod.sh", "--workdir=gs://b/r", "--keep", extra_env={"FAKE_FAIL": "--tee 0"})
  assert proc.returncode == 7
  assert [c[4] for c in env.calls()][-1] != "delete"
  assert "keeping the slice (--keep); delete it with: gcloud compute tpus tpu-vm delete" in proc.stderr


def test_tpu_pod_failed_create_deletes_nothing(env):
  proc = env.run("tpu_pod.sh", "--workdir=gs://b/r", extra_env={"FAKE_FAIL": "tpu-vm create"})
  assert proc.returncode == 7
  assert [c[4] for c in env.calls()] == ["create"]
  assert "the create step did not finish" in proc.stderr


# ----------------------------------------------------------------------------- run_worker.sh


def test_run_worker_dry_run_plain(env):
  proc = env.run("run_worker.sh", "--dry_run", "--worker_id", "3", "--log_dir", "my logs",
                 "--install", "never", "--workdir", "/shared/run 1", "--",
                 "--config=synthetic:tiny", "--config.seed=4")
  assert_dry(env, proc)
  cmds = commands(proc.stdout)
  assert cmds == [
      ["mkdir", "-p", "my logs"],
      ["env", f"PYTHONPATH={ROOT}", "PYTHONUNBUFFERED=1", "python3", "-m", "experiments.run",
       "--config=synthetic:tiny", "--config.seed=4", "--workdir=/shared/run 1", "--distributed",
       ">", "my logs/worker-3.log", "2>&1"]]


def test_run_worker_dry_run_install_with_venv_and_wheel(env):
  proc = env.run("run_worker.sh", "--dry_run", "--install=always", "--venv", "venv dir",
                 "--python_version", "3.11", "--wheel", "dist/crl.whl", "--jax_extra", "cuda12",
                 "--install_only")
  assert_dry(env, proc)
  assert commands(proc.stdout) == [
      ["python3", "-m", "pip", "install", "--upgrade", "uv"],
      ["python3", "-m", "uv", "venv", "--seed", "--python", "3.11", "venv dir"],
      ["venv dir/bin/python", "-m", "pip", "install", "dist/crl.whl", "jax[cuda12]"]]


def test_run_worker_dry_run_gcs_direct_and_worker_id_from_env(env):
  proc = env.run("run_worker.sh", "--dry_run", "--install=never", "--gcs_direct",
                 "--workdir=gs://b/x", "--log_dir=L", extra_env={"TPU_WORKER_ID": "5"})
  assert_dry(env, proc)
  cmds = commands(proc.stdout)
  assert not any(c[0] == "gcsfuse" for c in cmds)
  assert "--workdir=gs://b/x" in cmds[-1] and cmds[-1][-3:] == [">", "L/worker-5.log", "2>&1"]


def test_run_worker_runs_and_reports(env):
  fake_python = str(env.bin / "python3")
  ok = env.run("run_worker.sh", "--install=never", "--worker_id=2", "--log_dir", "logs",
               "--workdir", "/w", "--", "--config=synthetic", extra_env={"PYTHON": fake_python})
  assert ok.returncode == 0, ok.stderr
  assert "worker 2: exit status 0 (log: logs/worker-2.log)" in ok.stdout
  log = (env.cwd / "logs" / "worker-2.log").read_text()
  assert "fake python -m experiments.run --config=synthetic --workdir=/w --distributed" in log
  bad = env.run("run_worker.sh", "--install=never", "--worker_id=1", "--log_dir", "logs",
                "--workdir", "/w", extra_env={"PYTHON": fake_python, "FAKE_RC": "3"})
  assert bad.returncode == 3
  assert "worker 1: exit status 3" in bad.stdout and "last lines of logs/worker-1.log" in bad.stderr


@pytest.mark.parametrize("args,message", [
    ([], "--workdir is required"),
    (["--workdir=/w", "--", "--workdir=/x"], "not after --"),
    (["--workdir=/w", "--install=sometimes"], "--install must be auto, always or never"),
    (["--workdir=/w", "--worker_id=a"], "non-negative integer"),
])
def test_run_worker_bad_arguments(env, args, message):
  proc = env.run("run_worker.sh", "--dry_run", *args)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------- gpu.sh


def test_gpu_dry_run_single_node(env):
  proc = env.run("gpu.sh", "--dry_run", "--gpus", "0,1", "--", "--config=synthetic",
                 "--workdir=/tmp/g h")
  assert_dry(env, proc)
  assert commands(proc.stdout) == [[
      "env", "CUDA_VISIBLE_DEVICES=0,1", "JAX_PLATFORMS=cuda", f"PYTHONPATH={ROOT}",
      "PYTHONUNBUFFERED=1", "python3", "-m", "experiments.run", "--config=synthetic",
      "--workdir=/tmp/g h"]]


def test_gpu_dry_run_multi_node_with_install_and_log(env):
  proc = env.run("gpu.sh", "--dry_run", "--num_nodes=2", "--node_rank=1",
                 "--coordinator=10.0.0.1:1234", "--install", "--log_dir", "logs", "--",
                 "--config=synthetic", "--workdir=/shared/g")
  assert_dry(env, proc)
  install, mkdir, run = commands(proc.stdout)
  assert install == ["python3", "-m", "pip", "install", "-e", ROOT, "jax[cuda12]"]
  assert mkdir == ["mkdir", "-p", "logs"]
  assert "CUDA_VISIBLE_DEVICES" not in " ".join(run)
  assert run[-9:] == ["--workdir=/shared/g", "--distributed", "--coordinator_address=10.0.0.1:1234",
                      "--num_processes=2", "--process_id=1", "2>&1", "|", "tee", "logs/node-1.log"]


@pytest.mark.parametrize("args,message", [
    (["--num_nodes=2", "--", "--workdir=/w"], "--coordinator HOST:PORT is required"),
    (["--num_nodes=2", "--node_rank=2", "--coordinator=h:1", "--", "--workdir=/w"],
     "--node_rank must be below"),
    (["--gpus=0;1", "--", "--workdir=/w"], "--gpus takes a comma-separated list"),
    (["--", "--config=synthetic"], "must include --workdir"),
    (["--", "--workdir=/w", "--distributed"], "is set by the launcher"),
])
def test_gpu_bad_arguments(env, args, message):
  proc = env.run("gpu.sh", "--dry_run", *args)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_gpu_says_when_jax_has_no_cuda_plugin(env):
  if any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin")):
    pytest.skip("this Python has JAX's CUDA plugin")
  proc = env.run("gpu.sh", "--python", sys.executable, "--", "--workdir=/w")
  assert proc.returncode == 1
  assert "JAX's CUDA plugin is not installed" in proc.stderr and 'jax[cuda12]' in proc.stderr


# ----------------------------------------------------------------------------- local.sh


def test_local_dry_run_prints_one_command_per_process(env):
  proc = env.run("local.sh", "--dry_run", "--num_processes", "3", "--devices_per_process", "2",
                 "--port", "23456", "--", "--config=synthetic:tiny", "--workdir=/tmp/x y")
  assert_dry(env, proc)
  cmds = commands(proc.stdout)
  assert cmds[0] == ["mkdir", "-p", "logs"]
  runs = cmds[1:]
  assert len(runs) == 3
  for i, c in enumerate(runs):
    assert c == ["env", "JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=2",
                 f"PYTHONPATH={ROOT}", "PYTHONUNBUFFERED=1", "python3", "-m", "experiments.run",
                 "--config=synthetic:tiny", "--workdir=/tmp/x y", "--distributed",
                 "--coordinator_address=localhost:23456", "--num_processes=3",
                 f"--process_id={i}", ">", f"logs/process-{i}.log", "2>&1", "&"]


def test_local_dry_run_random_port_and_existing_xla_flags(env):
  proc = env.run("local.sh", "--dry_run", "--log_dir=L", "--", "--workdir=/w",
                 extra_env={"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"})
  assert_dry(env, proc)
  runs = commands(proc.stdout)[1:]
  assert len(runs) == 2                                    # default: 2 processes
  ports = {next(a for a in c if a.startswith("--coordinator_address=")) for c in runs}
  assert len(ports) == 1
  port = int(ports.pop().rsplit(":", 1)[1])
  assert 20000 <= port < 40000
  assert runs[0][2] == ("XLA_FLAGS=--xla_cpu_enable_fast_math=false "
                        "--xla_force_host_platform_device_count=1")
  assert [c[-3] for c in runs] == ["L/process-0.log", "L/process-1.log"]


@pytest.mark.parametrize("args,message", [
    (["--num_processes=0", "--", "--workdir=/w"], "at least 1"),
    (["--devices_per_process=two", "--", "--workdir=/w"], "non-negative integer"),
    (["--port=70000", "--", "--workdir=/w"], "1-65535"),
    (["--", "--config=synthetic"], "must include --workdir"),
    (["--", "--workdir=/w", "--process_id=1"], "is set by the launcher"),
    (["--config=synthetic"], "experiment flags go after --"),
])
def test_local_bad_arguments(env, args, message):
  proc = env.run("local.sh", "--dry_run", *args)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_local_waits_for_all_and_writes_one_log_per_process(env):
  proc = env.run("local.sh", "--num_processes", "3", "--python", str(env.bin / "python3"), "--",
                 "--workdir=/w")
  assert proc.returncode == 0, proc.stderr
  for i in range(3):
    log = (env.cwd / "logs" / f"process-{i}.log").read_text()
    assert f"--num_processes=3 --process_id={i}" in log
    assert f"process {i} exited with status 0" in proc.stdout


def test_local_one_failure_stops_the_others(env):
  pids_file = env.tmp / "sleepers"
  t0 = time.monotonic()
  try:
    proc = env.run("local.sh", "--num_processes", "3", "--grace", "1", "--python",
                   str(env.bin / "python3"), "--", "--workdir=/w",
                   extra_env={"FAKE_FAIL_IDS": "1", "FAKE_SLEEP": str(pids_file)})
    assert time.monotonic() - t0 < 20          # the sleepers (60 s) were not waited for
    assert proc.returncode == 3
    assert "process 1 failed with status 3" in proc.stderr
    assert "boom from process 1" in proc.stderr          # the end of its log
    for pid in map(int, pids_file.read_text().split()):
      with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
  finally:
    if pids_file.exists():
      for pid in map(int, pids_file.read_text().split()):
        try:
          os.kill(pid, 9)
        except ProcessLookupError:
          pass


def test_local_interrupt_stops_every_process(env):
  pids_file = env.tmp / "sleepers"
  full_env = {k: v for k, v in {**os.environ, **env.vars, "FAKE_SLEEP": str(pids_file)}.items()
              if v is not None}
  proc = subprocess.Popen(["bash", os.path.join(LAUNCH, "local.sh"), "--num_processes", "2",
                           "--python", str(env.bin / "python3"), "--", "--workdir=/w"],
                          cwd=env.cwd, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  pids = []
  try:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
      pids = pids_file.read_text().split() if pids_file.exists() else []
      if len(pids) == 2:
        break
      time.sleep(0.05)
    assert len(pids) == 2
    proc.terminate()
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 143 and "interrupted: stopping all processes" in err
    for pid in map(int, pids):
      with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
  finally:
    if proc.poll() is None:
      proc.kill()
    for pid in map(int, pids):
      try:
        os.kill(pid, 9)
      except ProcessLookupError:
        pass
