#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
#
# CRL-MMNAR on a Cloud TPU VM pod slice, from your workstation (needs gcloud, logged in,
# with a project and the TPU API enabled). The steps and their commands:
#
#  0. stage the code (no .git, .venv, logs, caches) in a temporary directory:
#       tar -C <project root> --exclude=... -cf - . | tar -C STAGE/crl_mmnar_jax -xf -
#  1. create the slice (skipped with --reuse):
#       gcloud compute tpus tpu-vm create NAME --zone=ZONE --accelerator-type=TYPE \
#           --version=RUNTIME [--project=P] [--spot] [extra --create_flag flags]
#     TYPE is chips or cores and generation (v5litepod-16: 16 v5e chips on 4 hosts);
#     RUNTIME is the VM image (default from TYPE: v2-alpha-tpuv6e, v2-alpha-tpuv5,
#     v2-alpha-tpuv5-lite, tpu-ubuntu2204-base for v4 and older).
#  2. copy the code to every worker (the hosts of the slice), into ~/crl_mmnar_jax:
#       gcloud compute tpus tpu-vm scp --recurse STAGE/crl_mmnar_jax NAME: --zone=ZONE --worker=all
#  3. install on every worker (a uv virtual environment with Python 3.12, the package
#     and jax[tpu]; see run_worker.sh):
#       gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all \
#           --command 'cd crl_mmnar_jax && bash launch/run_worker.sh --install_only ...'
#  4. run on every worker at once; jax.distributed.initialize() finds the other hosts by
#     itself on a TPU slice. Each worker writes ~/crl_mmnar_jax/logs/worker-N.log;
#     worker 0's log is also streamed here (tee), the others print one status line:
#       gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all \
#           --command 'cd crl_mmnar_jax && bash launch/run_worker.sh --workdir W ... -- --config=C ...'
#  5. fetch the logs (one scp per worker: gcloud copies to this machine from one worker
#     at a time):
#       gcloud compute tpus tpu-vm describe NAME --zone=ZONE --format='value(networkEndpoints.len())'
#       gcloud compute tpus tpu-vm scp NAME:crl_mmnar_jax/logs/worker-W.log LOG_DIR/ --zone=ZONE --worker=W
#  6. delete the slice (unless --keep):
#       gcloud compute tpus tpu-vm delete NAME --zone=ZONE --quiet
#
# If any step fails (or Ctrl-C), a trap fetches the logs it can and deletes the slice,
# unless --keep. The outputs are in the workdir, which must be shared by all workers:
# gs://BUCKET/PATH (mounted on every worker with Cloud Storage FUSE) or a path on a
# shared file system mounted on every worker. Rerunning the same command resumes.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

usage() {
  cat <<EOF
Usage: $CRL_PROG --workdir gs://BUCKET/PATH [options] [--config.a.b=value ...] [-- EXPERIMENT_ARGS...]

Creates a Cloud TPU VM slice, copies this project to every worker, installs it, runs
python -m experiments.run on all workers, fetches one log per worker, deletes the slice.

Options (environment variable in brackets):
  --workdir W             the run's workdir, shared by all workers (required):
                          gs://BUCKET/PATH, or a path on a file system every worker
                          mounts [CRL_WORKDIR]
  --config NAME[:ARGS]    experiment config (default synthetic) [CRL_CONFIG]
  --config.a.b=value      config overrides, passed through (also after --)
  --name NAME             slice name (default crl-mmnar) [CRL_TPU_NAME]
  --zone ZONE             zone (default us-central1-a) [CRL_TPU_ZONE]
  --accelerator_type T    e.g. v5litepod-16, v4-32, v6e-16 (default v5litepod-16)
                          [CRL_TPU_TYPE]
  --version RUNTIME       TPU VM runtime image (default: from the accelerator type)
                          [CRL_TPU_VERSION]
  --project PROJECT       Google Cloud project (default: gcloud's) [CRL_PROJECT]
  --spot                  create a Spot slice (cheaper, can be preempted; rerun resumes)
  --create_flag FLAG      extra flag for 'tpu-vm create' (repeatable), e.g.
                          --create_flag=--network=my-net
  --reuse                 use an existing slice NAME: skip the create step
  --keep                  do not delete the slice (at the end or on failure)
  --log_dir DIR           where the workers' logs are fetched (default logs/tpu-NAME)
  --remote_dir DIR        the code's directory in the workers' home (default crl_mmnar_jax)
  --python_version V      Python of the workers' virtual environment (default 3.12)
  --gcs_direct            give the gs:// workdir to the program as is (no FUSE mount)
  --dry_run               print every command, run nothing
  -h, --help              this help

Example:
  $CRL_PROG --zone=us-central1-a --accelerator_type=v5litepod-16 \\
      --workdir=gs://my-bucket/crl/synthetic-seed1 --config=synthetic --config.seed=1
EOF
}

NAME=${CRL_TPU_NAME:-crl-mmnar}
ZONE=${CRL_TPU_ZONE:-us-central1-a}
TYPE=${CRL_TPU_TYPE:-v5litepod-16}
VERSION=${CRL_TPU_VERSION:-}
PROJECT=${CRL_PROJECT:-}
CONFIG=${CRL_CONFIG:-synthetic}
WORKDIR=${CRL_WORKDIR:-}
SPOT=0
REUSE=0
KEEP=0
LOG_DIR=""
REMOTE_DIR=crl_mmnar_jax
PY_VERSION=3.12
GCS_DIRECT=0
CREATE_FLAGS=()
EXP_ARGS=()

crl_split_args "$@"
set -- ${CRL_ARGS[@]+"${CRL_ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry_run) CRL_DRY_RUN=1 ;;
    --workdir) crl_need_value "$@"; WORKDIR=$2; shift ;;
    --config) crl_need_value "$@"; CONFIG=$2; shift ;;
    --config.*) EXP_ARGS+=("$1") ;;
    --name) crl_need_value "$@"; NAME=$2; shift ;;
    --zone) crl_need_value "$@"; ZONE=$2; shift ;;
    --accelerator_type) crl_need_value "$@"; TYPE=$2; shift ;;
    --version) crl_need_value "$@"; VERSION=$2; shift ;;
    --project) crl_need_value "$@"; PROJECT=$2; shift ;;
    --spot) SPOT=1 ;;
    --create_flag)
      (($# >= 2)) || crl_usage_error "option $1 needs a value"
      CREATE_FLAGS+=("$2"); shift ;;
    --reuse) REUSE=1 ;;
    --keep) KEEP=1 ;;
    --log_dir) crl_need_value "$@"; LOG_DIR=$2; shift ;;
    --remote_dir) crl_need_value "$@"; REMOTE_DIR=$2; shift ;;
    --python_version) crl_need_value "$@"; PY_VERSION=$2; shift ;;
    --gcs_direct) GCS_DIRECT=1 ;;
    --) shift; EXP_ARGS+=("$@"); break ;;
    *) crl_usage_error "unknown option '$1'" ;;
  esac
  shift
done

[[ -n $WORKDIR ]] || crl_usage_error "--workdir is required (gs://BUCKET/PATH or a path shared by all workers)"
if [[ $WORKDIR != gs://* && $WORKDIR != /* ]]; then
  crl_usage_error "--workdir must be gs://BUCKET/PATH or an absolute path on storage every worker mounts, got '$WORKDIR'"
fi
[[ $NAME =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
  crl_usage_error "--name must be lowercase letters, digits and hyphens, starting with a letter, got '$NAME'"
[[ $REMOTE_DIR =~ ^[A-Za-z0-9._-]+$ && $REMOTE_DIR != . && $REMOTE_DIR != .. ]] ||
  crl_usage_error "--remote_dir must be a plain directory name, got '$REMOTE_DIR'"
[[ -n $ZONE ]] || crl_usage_error "--zone must not be empty"
for a in ${EXP_ARGS[@]+"${EXP_ARGS[@]}"}; do
  case $a in
    --workdir | --workdir=* | --config | --config=*)
      crl_usage_error "give '$a' as an option of $CRL_PROG (--workdir W, --config NAME)" ;;
    --distributed | --nodistributed | --coordinator_address* | --num_processes* | --process_id*)
      crl_usage_error "'$a' is set on the workers by run_worker.sh; leave it out" ;;
  esac
done
if [[ -z $VERSION ]]; then
  case $TYPE in
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) VERSION=tpu-ubuntu2204-base ;;
    *) crl_usage_error "no default runtime for accelerator type '$TYPE': pass --version" ;;
  esac
fi
LOG_DIR=${LOG_DIR:-logs/tpu-$NAME}

# Flags every gcloud command gets.
GFLAGS=("--zone=$ZONE")
[[ -z $PROJECT ]] || GFLAGS+=("--project=$PROJECT")
TPU=(gcloud compute tpus tpu-vm)

# What each worker runs, as one shell command line for `ssh --command`.
WORKER=(bash launch/run_worker.sh --venv .venv --python_version "$PY_VERSION" --jax_extra tpu)
INSTALL_CMD="cd $(crl_quote "$REMOTE_DIR") && $(crl_cmdline "${WORKER[@]}" --install_only)"
RUN_ARGS=("${WORKER[@]}" --log_dir logs --tee 0 --workdir "$WORKDIR")
((!GCS_DIRECT)) || RUN_ARGS+=(--gcs_direct)
RUN_ARGS+=(-- "--config=$CONFIG" ${EXP_ARGS[@]+"${EXP_ARGS[@]}"})
RUN_CMD="cd $(crl_quote "$REMOTE_DIR") && $(crl_cmdline "${RUN_ARGS[@]}")"

STAGE_PARENT="${TMPDIR:-/tmp}/crl-tpu-stage.$NAME"
STAGE="$STAGE_PARENT/$REMOTE_DIR"
SLICE_MAY_EXIST=0
CREATING=0
FINISHED=0

fetch_logs() {
  crl_note "fetch the workers' logs into $LOG_DIR/"
  crl_run mkdir -p "$LOG_DIR"
  local describe=("${TPU[@]}" describe "$NAME" "${GFLAGS[@]}" '--format=value(networkEndpoints.len())')
  if [[ $CRL_DRY_RUN == 1 ]]; then
    crl_show "$(crl_cmdline "${describe[@]}")"
    crl_note "then for each worker W in 0..(that number - 1):"
    crl_show "$(crl_cmdline "${TPU[@]}" scp "$NAME:$REMOTE_DIR/logs/worker-W.log" "$LOG_DIR/" "${GFLAGS[@]}" --worker=W)"
    return 0
  fi
  local n w
  crl_show "$(crl_cmdline "${describe[@]}")"
  n=$("${describe[@]}") || return 1
  [[ $n =~ ^[0-9]+$ ]] || return 1
  for ((w = 0; w < n; w++)); do
    crl_run "${TPU[@]}" scp "$NAME:$REMOTE_DIR/logs/worker-$w.log" "$LOG_DIR/" "${GFLAGS[@]}" "--worker=$w" ||
      crl_warn "could not fetch the log of worker $w"
  done
}

delete_slice() {
  crl_note "delete the slice (it costs money while it exists)"
  crl_run "${TPU[@]}" delete "$NAME" "${GFLAGS[@]}" --quiet
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ $CRL_DRY_RUN != 1 ]]; then
    rm -rf "$STAGE_PARENT"
  fi
  if ((rc != 0 && CREATING)); then
    crl_warn "the create step did not finish (exit status $rc); if the slice was created anyway, it costs money until deleted:"
    crl_warn "  list: $(crl_cmdline "${TPU[@]}" list "${GFLAGS[@]}")"
    crl_warn "  delete: $(crl_cmdline "${TPU[@]}" delete "$NAME" "${GFLAGS[@]}" --quiet)"
  elif ((rc != 0 && !FINISHED && SLICE_MAY_EXIST)); then
    crl_warn "failed (exit status $rc)"
    fetch_logs || crl_warn "could not fetch the logs"
    if ((KEEP)); then
      crl_warn "keeping the slice (--keep); delete it with: $(crl_cmdline "${TPU[@]}" delete "$NAME" "${GFLAGS[@]}" --quiet)"
    else
      delete_slice || crl_warn "DELETE FAILED: the slice may still exist and cost money; run: $(crl_cmdline "${TPU[@]}" delete "$NAME" "${GFLAGS[@]}" --quiet)"
    fi
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

crl_note "slice $NAME: $TYPE ($VERSION) in $ZONE; workdir $WORKDIR; config $CONFIG"

# 0. Stage the code.
crl_note "0. stage the code"
crl_run rm -rf "$STAGE_PARENT"
crl_run mkdir -p "$STAGE"
TAR_OUT=(tar -C "$CRL_ROOT" --exclude=./.git --exclude=./.venv --exclude=./.venv-ci
         --exclude=./logs --exclude=./workdirs --exclude=./build --exclude=./dist
         --exclude=./.whl --exclude=./.gl --exclude=__pycache__ --exclude=.pytest_cache
         '--exclude=*.egg-info' -cf - .)
TAR_IN=(tar -C "$STAGE" -xf -)
crl_show "$(crl_cmdline "${TAR_OUT[@]}") | $(crl_cmdline "${TAR_IN[@]}")"
if [[ $CRL_DRY_RUN != 1 ]]; then
  "${TAR_OUT[@]}" | "${TAR_IN[@]}"
fi

# 1. Create the slice.
if ((REUSE)); then
  crl_note "1. (--reuse) use the existing slice $NAME"
else
  crl_note "1. create the slice"
  CREATE=("${TPU[@]}" create "$NAME" "${GFLAGS[@]}" "--accelerator-type=$TYPE" "--version=$VERSION")
  ((!SPOT)) || CREATE+=(--spot)
  CREATE+=(${CREATE_FLAGS[@]+"${CREATE_FLAGS[@]}"})
  # A failed create leaves nothing to delete (and a name clash must not delete someone
  # else's slice); an interrupted one may still finish on the server: see on_exit.
  CREATING=1
  crl_run "${CREATE[@]}"
  CREATING=0
fi
SLICE_MAY_EXIST=1

# 2. Copy the code to every worker.
crl_note "2. copy the code to every worker (~/$REMOTE_DIR)"
crl_run "${TPU[@]}" scp --recurse "$STAGE" "$NAME:" "${GFLAGS[@]}" --worker=all

# 3. Install on every worker.
crl_note "3. install on every worker"
crl_run "${TPU[@]}" ssh "$NAME" "${GFLAGS[@]}" --worker=all --command "$INSTALL_CMD"

# 4. Run on every worker.
crl_note "4. run on every worker (worker 0's log is streamed here)"
crl_run "${TPU[@]}" ssh "$NAME" "${GFLAGS[@]}" --worker=all --command "$RUN_CMD"

# 5. Logs.
fetch_logs || crl_warn "could not fetch the logs"

# 6. Delete.
FINISHED=1
if ((KEEP)); then
  crl_note "6. (--keep) the slice is kept; delete it with: $(crl_cmdline "${TPU[@]}" delete "$NAME" "${GFLAGS[@]}" --quiet)"
else
  delete_slice
fi
crl_note "done: outputs in $WORKDIR, logs in $LOG_DIR/"
