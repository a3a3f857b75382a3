#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
#
# N processes of `python -m experiments.run` on this one machine, joined by
# jax.distributed over localhost, each with K simulated CPU devices: the multi-host code
# path of a TPU pod (process 0 writes the metrics and reports, every process writes its
# part of the checkpoints, batches are split by process) without a pod.
#
# Each process i runs:
#   env JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=K \
#       PYTHONPATH=<project root> PYTHONUNBUFFERED=1 \
#       python3 -m experiments.run ARGS... --distributed \
#       --coordinator_address=localhost:PORT --num_processes=N --process_id=i \
#       > LOG_DIR/process-i.log 2>&1 &
# then the script waits for all of them. When one fails, the others are stopped (SIGTERM,
# then SIGKILL after a grace period), the end of the failed log is printed and the exit
# status is that process's. Ctrl-C stops all of them.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

usage() {
  cat <<EOF
Usage: $CRL_PROG [options] -- EXPERIMENT_ARGS...

Starts N processes of experiments.run on this machine (CPU), joined by
jax.distributed over localhost, one log per process, and waits for all of them.

Options (environment variable in brackets):
  --num_processes N          processes to start (default 2) [CRL_NUM_PROCESSES]
  --devices_per_process K    simulated CPU devices per process, through
                             XLA_FLAGS=--xla_force_host_platform_device_count=K
                             (default 1) [CRL_DEVICES_PER_PROCESS]
  --port PORT                coordinator port on localhost (default: a random free
                             port in 20000-39999) [CRL_PORT]
  --log_dir DIR              logs go to DIR/process-I.log (default logs) [CRL_LOG_DIR]
  --python PY                Python interpreter (default python3) [PYTHON]
  --grace SECONDS            after a failure, how long the others get between SIGTERM
                             and SIGKILL (default 10)
  --dry_run                  print the commands, run nothing
  -h, --help                 this help

EXPERIMENT_ARGS (after --) go to every process unchanged; they must include
--workdir=DIR (one workdir shared by all processes). The launcher adds --distributed,
--coordinator_address, --num_processes and --process_id itself.

Example:
  $CRL_PROG --num_processes 2 --devices_per_process 2 -- \\
      --config=synthetic:tiny --workdir=/tmp/crl_local2
Rerunning the same command resumes from the workdir's last checkpoint.
EOF
}

NUM=${CRL_NUM_PROCESSES:-2}
DEVICES=${CRL_DEVICES_PER_PROCESS:-1}
PORT=${CRL_PORT:-}
LOG_DIR=${CRL_LOG_DIR:-logs}
PYTHON=${PYTHON:-python3}
GRACE=10
EXP_ARGS=()

crl_split_args "$@"
set -- ${CRL_ARGS[@]+"${CRL_ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry_run) CRL_DRY_RUN=1 ;;
    --num_processes) crl_need_value "$@"; NUM=$2; shift ;;
    --devices_per_process) crl_need_value "$@"; DEVICES=$2; shift ;;
    --port) crl_need_value "$@"; PORT=$2; shift ;;
    --log_dir) crl_need_value "$@"; LOG_DIR=$2; shift ;;
    --python) crl_need_value "$@"; PYTHON=$2; shift ;;
    --grace) crl_need_value "$@"; GRACE=$2; shift ;;
    --) shift; EXP_ARGS+=("$@"); break ;;
    --config | --config.* | --workdir)
      crl_usage_error "unknown option '$1' (experiment flags go after --)" ;;
    *) crl_usage_error "unknown option '$1'" ;;
  esac
  shift
done

crl_need_uint --num_processes "$NUM"
crl_need_uint --devices_per_process "$DEVICES"
crl_need_uint --grace "$GRACE"
((NUM >= 1)) || crl_usage_error "--num_processes must be at least 1"
((DEVICES >= 1)) || crl_usage_error "--devices_per_process must be at least 1"
[[ -n $LOG_DIR ]] || crl_usage_error "--log_dir must not be empty"

crl_check_exp_args "; leave it out of EXPERIMENT_ARGS" ${EXP_ARGS[@]+"${EXP_ARGS[@]}"}

# A TCP connection to the port succeeds when something listens there.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

if [[ -z $PORT ]]; then
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    PORT=$((20000 + RANDOM % 20000))
    if [[ $CRL_DRY_RUN == 1 ]] || ! port_in_use "$PORT"; then
      break
    fi
  done
fi
crl_need_uint --port "$PORT"
((PORT >= 1 && PORT <= 65535)) || crl_usage_error "--port must be in 1-65535, got $PORT"
if [[ $CRL_DRY_RUN != 1 ]] && port_in_use "$PORT"; then
  crl_die "port $PORT on localhost is in use; pick another with --port"
fi

XLA="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$DEVICES"
PYPATH=$(crl_pythonpath)

crl_note "$NUM processes x $DEVICES CPU devices, coordinator localhost:$PORT, logs in $LOG_DIR/"
crl_run mkdir -p "$LOG_DIR"

PIDS=()
STATUS=()
stop_all() {  # stop_all SIGNAL: sends SIGNAL to every started process still running
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill "-$1" "$pid" 2>/dev/null || true
  done
}
any_running() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    if kill -0 "$pid" 2>/dev/null; then
      return 0
    fi
  done
  return 1
}
on_signal() {  # on_signal STATUS
  trap - INT TERM
  crl_warn "interrupted: stopping all processes"
  stop_all TERM
  wait 2>/dev/null || true
  exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

for ((i = 0; i < NUM; i++)); do
  cmd=(env JAX_PLATFORMS=cpu "XLA_FLAGS=$XLA" "PYTHONPATH=$PYPATH" PYTHONUNBUFFERED=1
       "$PYTHON" -m experiments.run ${EXP_ARGS[@]+"${EXP_ARGS[@]}"}
       --distributed "--coordinator_address=localhost:$PORT" "--num_processes=$NUM"
       "--process_id=$i")
  log="$LOG_DIR/process-$i.log"
  crl_show "$(crl_cmdline "${cmd[@]}") > $(crl_quote "$log") 2>&1 &"
  if [[ $CRL_DRY_RUN != 1 ]]; then
    "${cmd[@]}" >"$log" 2>&1 &
    PIDS+=($!)
    STATUS+=("")
  fi
done
crl_note "wait for all $NUM; if one fails, stop the others"
[[ $CRL_DRY_RUN == 1 ]] && exit 0

failed=-1
done_count=0
while ((done_count < NUM)); do
  for ((i = 0; i < NUM; i++)); do
    [[ -z ${STATUS[i]} ]] || continue
    if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
      rc=0
      wait "${PIDS[i]}" || rc=$?
      STATUS[i]=$rc
      done_count=$((done_count + 1))
      echo "process $i exited with status $rc (log: $LOG_DIR/process-$i.log)"
      if ((rc != 0 && failed < 0)); then
        failed=$i
      fi
    fi
  done
  if ((failed >= 0)); then
    break
  fi
  sleep 0.2
done

if ((failed >= 0)); then
  if any_running; then
    crl_warn "process $failed failed: stopping the others (SIGTERM, SIGKILL after ${GRACE}s)"
    stop_all TERM
    for ((t = 0; t < GRACE * 5; t++)); do
      any_running || break
      sleep 0.2
    done
    stop_all KILL
  fi
  wait 2>/dev/null || true
  crl_warn "process $failed failed with status ${STATUS[failed]}; last lines of $LOG_DIR/process-$failed.log:"
  tail -n 20 "$LOG_DIR/process-$failed.log" >&2 || true
  exit "${STATUS[failed]}"
fi
echo "all $NUM processes finished; logs in $LOG_DIR/"
