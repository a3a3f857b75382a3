# shellcheck shell=bash
# Helpers shared by the launch scripts. Sourced, never run: `. "$HERE/common.sh"`.
#
# Every script prints each command before running it, one per line, prefixed with
# "+ " and quoted so that the line can be pasted into a shell; with --dry_run it only
# prints. Lines starting with "#" are comments (which step, what happens when).
# Written for bash >= 3.2 (the bash of macOS, where tpu_pod.sh may be started): no
# associative arrays, no `wait -n`, empty arrays expanded as ${a[@]+"${a[@]}"}.

CRL_DRY_RUN=0
CRL_PROG="launch/$(basename "$0")"
# The project root: the parent of launch/.
CRL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# crl_quote WORD: WORD as shell text (unquoted when safe, else in single quotes).
crl_quote() {
  local s=$1 safe='^[A-Za-z0-9_@%+=:,./-]+$'
  if [[ -z $s ]]; then
    printf "''"
  elif [[ $s =~ $safe ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

# crl_cmdline WORD...: the words as one shell command line.
crl_cmdline() {
  local out="" w
  for w in "$@"; do
    out+="${out:+ }$(crl_quote "$w")"
  done
  printf '%s' "$out"
}

# crl_show TEXT: prints "+ TEXT" (TEXT is an already quoted command line).
crl_show() {
  printf '+ %s\n' "$1"
}

# crl_note TEXT: a comment line in the printed plan.
crl_note() {
  printf '# %s\n' "$1"
}

# crl_run CMD ARG...: prints the command, then runs it unless --dry_run.
crl_run() {
  crl_show "$(crl_cmdline "$@")"
  if [[ $CRL_DRY_RUN != 1 ]]; then
    "$@"
  fi
}

# crl_warn TEXT: a message on stderr.
crl_warn() {
  printf '%s: %s\n' "$CRL_PROG" "$1" >&2
}

# crl_die TEXT [STATUS]: an error on stderr, then exit (default status 1).
crl_die() {
  printf '%s: error: %s\n' "$CRL_PROG" "$1" >&2
  exit "${2:-1}"
}

# crl_usage_error TEXT: a command-line mistake: message, hint, exit status 2.
crl_usage_error() {
  printf '%s: error: %s\nRun %s --help for usage.\n' "$CRL_PROG" "$1" "$CRL_PROG" >&2
  exit 2
}

# crl_option_name --NAME: NAME with every "-" turned into "_" (--dry-run -> --dry_run).
crl_option_name() {
  local name=${1#--}
  printf -- '--%s' "${name//-/_}"
}

# crl_split_args ARG...: sets the array CRL_ARGS to the arguments with every
# "--option=value" split into "--option" "value", so that scripts parse one form, and
# every option name in the underscore spelling of the Python scripts' absl flags
# (--dry_run, --log_dir); the older dashed spellings (--dry-run) are accepted that way.
# Left alone: everything after "--", "--config.a.b=value" overrides (passed through) and
# the value of --create_flag (a gcloud flag).
crl_split_args() {
  CRL_ARGS=()
  local a prev=""
  while (($#)); do
    a=$1
    shift
    if [[ $a == -- ]]; then
      CRL_ARGS+=(-- "$@")
      return 0
    elif [[ $a == --config.* || $prev == --create_flag ]]; then
      CRL_ARGS+=("$a")
    elif [[ $a == --*=* ]]; then
      CRL_ARGS+=("$(crl_option_name "${a%%=*}")" "${a#*=}")
    elif [[ $a == --?* ]]; then
      CRL_ARGS+=("$(crl_option_name "$a")")
    else
      CRL_ARGS+=("$a")
    fi
    prev=${CRL_ARGS[${#CRL_ARGS[@]}-1]}
  done
}

# crl_need_value "$@": fails unless option $1 is followed by a value.
crl_need_value() {
  if (($# < 2)) || [[ $2 == --* ]]; then
    crl_usage_error "option $1 needs a value"
  fi
}

# crl_need_uint OPTION VALUE: fails unless VALUE is a non-negative integer.
crl_need_uint() {
  if ! [[ $2 =~ ^[0-9]+$ ]]; then
    crl_usage_error "option $1 needs a non-negative integer, got '$2'"
  fi
}

# crl_check_exp_args HINT ARGS...: the experiment's arguments must name --workdir and
# must not set the multi-host flags, which the launcher sets (HINT says how).
crl_check_exp_args() {
  local hint=$1 a has_workdir=0
  shift
  for a in "$@"; do
    case $a in
      --workdir | --workdir=*) has_workdir=1 ;;
      --distributed | --nodistributed | --coordinator_address* | --num_processes* | --process_id*)
        crl_usage_error "'$a' is set by the launcher$hint" ;;
    esac
  done
  ((has_workdir)) || crl_usage_error "EXPERIMENT_ARGS must include --workdir=DIR (after --)"
}

# crl_pythonpath: PYTHONPATH with the project root first (so that `python -m
# experiments.run` works from any directory, installed or not).
crl_pythonpath() {
  printf '%s' "$CRL_ROOT${PYTHONPATH:+:$PYTHONPATH}"
}
