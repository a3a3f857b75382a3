#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
#
# What every worker of a TPU pod slice runs (tpu_pod.sh starts it on all workers at once
# through `gcloud compute tpus tpu-vm ssh --worker=all`); usable on any multi-host
# machine where jax.distributed.initialize() finds its arguments (Cloud TPU, SLURM) or
# where JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID are set.
#
# Steps:
#  1. (--venv DIR, only when DIR/bin/python is missing) create a virtual environment
#     with uv, which also fetches a Python >= 3.11 when the system's is older (jax 0.10
#     needs 3.11; the TPU VM images run Ubuntu 22.04 with Python 3.10):
#       python3 -m pip install --upgrade uv            (only when uv is not on PATH)
#       python3 -m uv venv --seed --python 3.12 DIR
#  2. (when needed, see --install) install the package and the jax plugin:
#       DIR/bin/python -m pip install -e <project root> 'jax[tpu]'
#  3. (--workdir gs://BUCKET/PATH) mount the bucket with Cloud Storage FUSE at
#     ~/gcs/BUCKET (installing gcsfuse with apt when missing) and use
#     ~/gcs/BUCKET/PATH as the workdir; see "Shared workdir" in launch/README.md.
#  4. run, with PYTHONUNBUFFERED=1 (live logs) and PYTHONPATH=<project root>:
#       python -m experiments.run EXPERIMENT_ARGS... --workdir=DIR --distributed \
#           > LOG_DIR/worker-ID.log 2>&1
#     then print "worker ID: exit status S" (and the end of the log when S != 0).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

usage() {
  cat <<EOF
Usage: $CRL_PROG [options] --workdir DIR [-- EXPERIMENT_ARGS...]

Runs python -m experiments.run EXPERIMENT_ARGS --workdir=DIR --distributed on this
worker, after installing the package when needed.

Options (environment variable in brackets):
  --workdir DIR          the run's workdir, the same on every worker: a path on shared
                         storage, or gs://BUCKET/PATH (mounted with gcsfuse, see
                         --gcs_direct) [CRL_WORKDIR]
  --worker_id ID         this worker's index, used to name the log (default:
                         CRL_WORKER_ID, TPU_WORKER_ID, the GCE metadata
                         agent-worker-number, else 0)
  --log_dir DIR          write the output to DIR/worker-ID.log instead of stdout
  --tee ID               with --log_dir: worker ID also copies its log to stdout
  --venv DIR             use (and create with uv when missing) a virtual environment
  --python_version V     Python of a new --venv (default 3.12)
  --jax_extra EXTRA      also install "jax[EXTRA]" (tpu, cuda12, ...)
  --wheel FILE           install this wheel instead of the source tree (pip install -e)
  --install MODE         auto: install when an import check fails (default);
                         always; never
  --install_only         install (steps 1-2) and exit
  --gcs_mount_root DIR   where gs:// buckets are mounted (default \$HOME/gcs)
  --gcs_direct           pass a gs:// workdir to the program unchanged instead of
                         mounting it (for a library version that writes to GCS itself)
  --python PY            interpreter without --venv (default python3) [PYTHON]
  --dry_run              print the commands, run nothing
  -h, --help             this help

Example (on each worker of a pod, from the project root):
  $CRL_PROG --venv .venv --jax_extra tpu --log_dir logs \\
      --workdir gs://my-bucket/crl/run1 -- --config=synthetic --config.seed=1
EOF
}

WORKDIR=${CRL_WORKDIR:-}
WORKER_ID=${CRL_WORKER_ID:-${TPU_WORKER_ID:-}}
LOG_DIR=""
TEE_ID=""
VENV=""
PY_VERSION=3.12
JAX_EXTRA=""
WHEEL=""
INSTALL=auto
INSTALL_ONLY=0
GCS_MOUNT_ROOT=${HOME:-/tmp}/gcs
GCS_DIRECT=0
PYTHON=${PYTHON:-python3}
EXP_ARGS=()

crl_split_args "$@"
set -- ${CRL_ARGS[@]+"${CRL_ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry_run) CRL_DRY_RUN=1 ;;
    --workdir) crl_need_value "$@"; WORKDIR=$2; shift ;;
    --worker_id) crl_need_value "$@"; WORKER_ID=$2; shift ;;
    --log_dir) crl_need_value "$@"; LOG_DIR=$2; shift ;;
    --tee) crl_need_value "$@"; TEE_ID=$2; shift ;;
    --venv) crl_need_value "$@"; VENV=$2; shift ;;
    --python_version) crl_need_value "$@"; PY_VERSION=$2; shift ;;
    --jax_extra) crl_need_value "$@"; JAX_EXTRA=$2; shift ;;
    --wheel) crl_need_value "$@"; WHEEL=$2; shift ;;
    --install) crl_need_value "$@"; INSTALL=$2; shift ;;
    --install_only) INSTALL_ONLY=1 ;;
    --gcs_mount_root) crl_need_value "$@"; GCS_MOUNT_ROOT=$2; shift ;;
    --gcs_direct) GCS_DIRECT=1 ;;
    --python) crl_need_value "$@"; PYTHON=$2; shift ;;
    --) shift; EXP_ARGS+=("$@"); break ;;
    --config | --config.*)
      crl_usage_error "unknown option '$1' (experiment flags go after --)" ;;
    *) crl_usage_error "unknown option '$1'" ;;
  esac
  shift
done

case $INSTALL in
  auto | always | never) ;;
  *) crl_usage_error "--install must be auto, always or never, got '$INSTALL'" ;;
esac
[[ -z $WORKER_ID ]] || crl_need_uint --worker_id "$WORKER_ID"
[[ -z $TEE_ID ]] || crl_need_uint --tee "$TEE_ID"
for a in ${EXP_ARGS[@]+"${EXP_ARGS[@]}"}; do
  case $a in
    --workdir | --workdir=*)
      crl_usage_error "give the workdir as '$CRL_PROG --workdir DIR', not after --" ;;
    --distributed | --nodistributed)
      crl_usage_error "'$a' is set by the launcher; leave it out of EXPERIMENT_ARGS" ;;
  esac
done
if ((!INSTALL_ONLY)) && [[ -z $WORKDIR ]]; then
  crl_usage_error "--workdir is required"
fi

# ------------------------------------------------------------------ 1-2. installation
SYS_PY=$PYTHON
PY=$PYTHON
if [[ -n $VENV ]]; then
  PY=$VENV/bin/python
fi
PYPATH=$(crl_pythonpath)
# Modules whose absence means "not installed" (find_spec imports nothing heavy).
CHECK_MODULES=(crl_mmnar_jax jax jaxlib flax optax orbax.checkpoint chex polars ml_collections absl matplotlib)
case $JAX_EXTRA in
  tpu) CHECK_MODULES+=(libtpu) ;;
  cuda12*) CHECK_MODULES+=(jax_cuda12_plugin) ;;
  cuda13*) CHECK_MODULES+=(jax_cuda13_plugin) ;;
esac
CHECK_CODE='import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))'

installed() {
  [[ -x $PY ]] || command -v "$PY" >/dev/null 2>&1 || return 1
  PYTHONPATH=$PYPATH "$PY" -c "$CHECK_CODE" "${CHECK_MODULES[@]}" 2>/dev/null
}

do_install() {
  if [[ -n $VENV ]] && { [[ $CRL_DRY_RUN == 1 ]] || [[ ! -x $PY ]]; }; then
    crl_note "create the virtual environment $VENV (only when $PY is missing)"
    local uv=(uv)
    if [[ $CRL_DRY_RUN == 1 ]] || ! command -v uv >/dev/null 2>&1; then
      crl_note "(install uv only when it is not on PATH)"
      crl_run "$SYS_PY" -m pip install --upgrade uv
      uv=("$SYS_PY" -m uv)
    fi
    crl_run "${uv[@]}" venv --seed --python "$PY_VERSION" "$VENV"
  fi
  local pkgs=()
  if [[ -n $WHEEL ]]; then
    pkgs+=("$WHEEL")
  else
    pkgs+=(-e "$CRL_ROOT")
  fi
  if [[ -n $JAX_EXTRA ]]; then
    pkgs+=("jax[$JAX_EXTRA]")
  fi
  crl_run "$PY" -m pip install "${pkgs[@]}"
}

case $INSTALL in
  always) do_install ;;
  never) ;;
  auto)
    if [[ $CRL_DRY_RUN == 1 ]]; then
      crl_note "install only if this check fails: $(crl_cmdline env "PYTHONPATH=$PYPATH" "$PY" -c "$CHECK_CODE" "${CHECK_MODULES[@]}")"
      do_install
    elif ! installed; then
      do_install
    else
      crl_note "already installed ($PY finds ${CHECK_MODULES[*]})"
    fi
    ;;
esac
if ((INSTALL_ONLY)); then
  exit 0
fi

# ------------------------------------------------------------------ 3. gs:// workdirs
RUN_WORKDIR=$WORKDIR
if [[ $WORKDIR == gs://* ]] && ((!GCS_DIRECT)); then
  rest=${WORKDIR#gs://}
  bucket=${rest%%/*}
  path=${rest#"$bucket"}
  path=${path#/}
  path=${path%/}
  [[ -n $bucket ]] || crl_usage_error "no bucket in --workdir '$WORKDIR'"
  mnt=$GCS_MOUNT_ROOT/$bucket
  RUN_WORKDIR=$mnt${path:+/$path}
  if [[ $CRL_DRY_RUN == 1 ]] || ! mountpoint -q "$mnt" 2>/dev/null; then
    if [[ $CRL_DRY_RUN == 1 ]] || ! command -v gcsfuse >/dev/null 2>&1; then
      crl_note "install Cloud Storage FUSE (only when gcsfuse is missing)"
      # The $(lsb_release ...) is for the root shell started by sudo, hence single quotes.
      # shellcheck disable=SC2016
      crl_run sudo bash -c 'set -e; echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" > /etc/apt/sources.list.d/gcsfuse.list; curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg -o /usr/share/keyrings/cloud.google.asc; apt-get update -q; apt-get install -y -q gcsfuse'
    fi
    crl_note "mount gs://$bucket at $mnt (only when not mounted yet)"
    crl_run mkdir -p "$mnt"
    # --implicit-dirs: see directories created by other workers' mounts;
    # --metadata-cache-ttl-secs=0: no stale listings between workers;
    # --rename-dir-limit: lets orbax rename its temporary checkpoint directories
    # (atomic only on buckets with hierarchical namespace).
    crl_run gcsfuse --implicit-dirs --metadata-cache-ttl-secs=0 --rename-dir-limit=200000 \
      "$bucket" "$mnt"
  fi
fi

# ------------------------------------------------------------------ 4. the run
if [[ -z $WORKER_ID ]]; then
  if [[ $CRL_DRY_RUN == 1 ]]; then
    crl_note "worker id: at run time from the GCE metadata agent-worker-number (else 0)"
    WORKER_ID=N
  elif command -v curl >/dev/null 2>&1 && WORKER_ID=$(curl -sf --max-time 5 \
      -H 'Metadata-Flavor: Google' \
      http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number) \
      && [[ $WORKER_ID =~ ^[0-9]+$ ]]; then
    :
  else
    WORKER_ID=0
  fi
fi

cmd=(env "PYTHONPATH=$PYPATH" PYTHONUNBUFFERED=1 "$PY" -m experiments.run
     ${EXP_ARGS[@]+"${EXP_ARGS[@]}"} "--workdir=$RUN_WORKDIR" --distributed)
rc=0
if [[ -z $LOG_DIR ]]; then
  crl_run "${cmd[@]}" || rc=$?
else
  log=$LOG_DIR/worker-$WORKER_ID.log
  crl_run mkdir -p "$LOG_DIR"
  if [[ -n $TEE_ID && $TEE_ID == "$WORKER_ID" ]]; then
    crl_show "$(crl_cmdline "${cmd[@]}") 2>&1 | tee $(crl_quote "$log")"
    if [[ $CRL_DRY_RUN != 1 ]]; then
      "${cmd[@]}" 2>&1 | tee "$log" || rc=$?
    fi
  else
    crl_show "$(crl_cmdline "${cmd[@]}") > $(crl_quote "$log") 2>&1"
    if [[ $CRL_DRY_RUN != 1 ]]; then
      "${cmd[@]}" >"$log" 2>&1 || rc=$?
    fi
  fi
fi
if [[ $CRL_DRY_RUN == 1 ]]; then
  exit 0
fi
echo "worker $WORKER_ID: exit status $rc${LOG_DIR:+ (log: $log)}"
if ((rc != 0)) && [[ -n $LOG_DIR ]]; then
  echo "worker $WORKER_ID: last lines of $log:" >&2
  tail -n 20 "$log" >&2 || true
fi
exit "$rc"
