#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
#
# experiments.run on the GPUs of one node: ONE process drives every visible GPU (the
# data-parallel mesh spans all local devices, so each global batch is split over them;
# the batch size must be a multiple of the number of GPUs). With --num_nodes N > 1, run
# this script once on every node with its --node_rank: each node's process joins the
# others through jax.distributed (--distributed --coordinator_address --num_processes
# --process_id), and the workdir must then be on storage shared by all nodes.
#
# JAX needs its CUDA build on the node (the plain `pip install -e .` gives the CPU one):
#   pip install -U "jax[cuda12]"        (or --install, which runs
#   python3 -m pip install -e <project root> "jax[cuda12]", keeping the project's jax pin)
#
# The command (single node):
#   env CUDA_VISIBLE_DEVICES=0,1 JAX_PLATFORMS=cuda PYTHONPATH=<root> PYTHONUNBUFFERED=1 \
#       python3 -m experiments.run EXPERIMENT_ARGS...
# JAX_PLATFORMS=cuda makes a missing or broken CUDA install an error instead of a silent
# fall back to the CPU.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

usage() {
  cat <<EOF
Usage: $CRL_PROG [options] -- EXPERIMENT_ARGS...

Runs python -m experiments.run on the GPUs of this node, one process for all of them.

Options (environment variable in brackets):
  --gpus LIST          CUDA_VISIBLE_DEVICES for the run, e.g. 0,1,2,3 (default: leave
                       it as it is, i.e. every GPU the node shows)
  --num_nodes N        nodes taking part (default 1); N > 1 adds --distributed
  --node_rank R        this node's index, 0..N-1 (default 0; node 0 hosts the
                       coordinator)
  --coordinator H:P    host:port of node 0, reachable from every node (required when
                       N > 1)
  --platform P         JAX_PLATFORMS (default cuda; rocm for AMD GPUs; "" lets JAX
                       choose)
  --install            first run python3 -m pip install -e <project root> "jax[EXTRA]"
  --jax_extra EXTRA    the extra of --install (default cuda12)
  --log_dir DIR        also write the output to DIR/node-R.log (tee)
  --python PY          interpreter (default python3) [PYTHON]
  --dry_run            print the commands, run nothing
  -h, --help           this help

EXPERIMENT_ARGS (after --) go to experiments.run unchanged and must include
--workdir=DIR. Install the CUDA build of JAX first:  pip install -U "jax[cuda12]"

Examples:
  $CRL_PROG --gpus 0,1 -- --config=synthetic --workdir=/tmp/crl_gpu
  # two nodes (run on each, with its rank):
  $CRL_PROG --num_nodes 2 --node_rank 0 --coordinator 10.0.0.2:12355 -- \\
      --config=synthetic --workdir=/shared/crl_gpu2
EOF
}

GPUS=""
NUM_NODES=1
NODE_RANK=0
COORDINATOR=""
PLATFORM=cuda
INSTALL=0
JAX_EXTRA=cuda12
LOG_DIR=""
PYTHON=${PYTHON:-python3}
EXP_ARGS=()

crl_split_args "$@"
set -- ${CRL_ARGS[@]+"${CRL_ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry_run) CRL_DRY_RUN=1 ;;
    --gpus) crl_need_value "$@"; GPUS=$2; shift ;;
    --num_nodes) crl_need_value "$@"; NUM_NODES=$2; shift ;;
    --node_rank) crl_need_value "$@"; NODE_RANK=$2; shift ;;
    --coordinator) crl_need_value "$@"; COORDINATOR=$2; shift ;;
    --platform)
      (($# >= 2)) || crl_usage_error "option $1 needs a value"
      PLATFORM=$2; shift ;;
    --install) INSTALL=1 ;;
    --jax_extra) crl_need_value "$@"; JAX_EXTRA=$2; shift ;;
    --log_dir) crl_need_value "$@"; LOG_DIR=$2; shift ;;
    --python) crl_need_value "$@"; PYTHON=$2; shift ;;
    --) shift; EXP_ARGS+=("$@"); break ;;
    --config | --config.* | --workdir)
      crl_usage_error "unknown option '$1' (experiment flags go after --)" ;;
    *) crl_usage_error "unknown option '$1'" ;;
  esac
  shift
done

if [[ -n $GPUS ]] && ! [[ $GPUS =~ ^[A-Za-z0-9-]+(,[A-Za-z0-9-]+)*$ ]]; then
  crl_usage_error "--gpus takes a comma-separated list such as 0,1,3, got '$GPUS'"
fi
crl_need_uint --num_nodes "$NUM_NODES"
crl_need_uint --node_rank "$NODE_RANK"
((NUM_NODES >= 1)) || crl_usage_error "--num_nodes must be at least 1"
((NODE_RANK < NUM_NODES)) || crl_usage_error "--node_rank must be below --num_nodes ($NUM_NODES)"
if ((NUM_NODES > 1)); then
  [[ -n $COORDINATOR ]] || crl_usage_error "--coordinator HOST:PORT is required with --num_nodes > 1"
  [[ $COORDINATOR =~ ^[^:]+:[0-9]+$ ]] || crl_usage_error "--coordinator must be HOST:PORT, got '$COORDINATOR'"
elif [[ -n $COORDINATOR ]]; then
  crl_usage_error "--coordinator only makes sense with --num_nodes > 1"
fi
crl_check_exp_args " (--num_nodes, --node_rank, --coordinator)" ${EXP_ARGS[@]+"${EXP_ARGS[@]}"}

if ((INSTALL)); then
  crl_note "install the package and the CUDA build of JAX"
  crl_run "$PYTHON" -m pip install -e "$CRL_ROOT" "jax[$JAX_EXTRA]"
fi

# Without JAX's CUDA plugin, JAX_PLATFORMS=cuda fails deep inside jax; say why up front.
CHECK_CODE='import importlib.util as u, sys; sys.exit(all(u.find_spec(m) is None for m in ("jax_cuda12_plugin", "jax_cuda13_plugin")))'
if [[ $PLATFORM == cuda ]]; then
  if [[ $CRL_DRY_RUN == 1 ]]; then
    crl_note "check: $(crl_cmdline "$PYTHON" -c "$CHECK_CODE") (else: pip install -U 'jax[cuda12]')"
  elif ! PYTHONPATH=$(crl_pythonpath) "$PYTHON" -c "$CHECK_CODE"; then
    crl_die "JAX's CUDA plugin is not installed for $PYTHON: run  pip install -U \"jax[cuda12]\"  (or add --install), or pass --platform '' to let JAX choose"
  fi
fi

envs=()
[[ -z $GPUS ]] || envs+=("CUDA_VISIBLE_DEVICES=$GPUS")
envs+=("JAX_PLATFORMS=$PLATFORM" "PYTHONPATH=$(crl_pythonpath)" PYTHONUNBUFFERED=1)
cmd=(env "${envs[@]}" "$PYTHON" -m experiments.run ${EXP_ARGS[@]+"${EXP_ARGS[@]}"})
if ((NUM_NODES > 1)); then
  cmd+=(--distributed "--coordinator_address=$COORDINATOR" "--num_processes=$NUM_NODES"
        "--process_id=$NODE_RANK")
  crl_note "node $NODE_RANK of $NUM_NODES, coordinator $COORDINATOR: run this script on every node"
else
  crl_note "one process for all the GPUs in CUDA_VISIBLE_DEVICES=${GPUS:-(unchanged)}"
fi

if [[ -z $LOG_DIR ]]; then
  crl_run "${cmd[@]}"
else
  log=$LOG_DIR/node-$NODE_RANK.log
  crl_run mkdir -p "$LOG_DIR"
  crl_show "$(crl_cmdline "${cmd[@]}") 2>&1 | tee $(crl_quote "$log")"
  if [[ $CRL_DRY_RUN != 1 ]]; then
    "${cmd[@]}" 2>&1 | tee "$log"
  fi
fi
