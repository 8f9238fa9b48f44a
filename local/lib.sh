# shellcheck shell=bash disable=SC2034
# Shared by local/up, local/down and local/test. Source it; it defines functions and paths only.
#
# Everything the local stack starts is recorded in local/.state/pids/<name>.pid, one line:
#   proc <pid> <start-time>     a process group started with setsid (or a daemon's pid)
#   pg <version> <cluster>      a Postgres cluster started with pg_ctlcluster
# so that local/down (and local/test) stop exactly what the stack started and nothing else.

LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$LOCAL_DIR")
STATE=$LOCAL_DIR/.state
LOGS=$STATE/logs
PIDS=$STATE/pids
ENV_FILE=$STATE/env

PG_HOST=127.0.0.1 PG_PORT=5432
REDIS_HOST=127.0.0.1 REDIS_PORT=6379
MOTO_URL=http://127.0.0.1:5000
STRIPE_URL=http://127.0.0.1:8420
WATCH_ADDR=127.0.0.1 WATCH_PORT=9000
WATCH_URL=http://$WATCH_ADDR:$WATCH_PORT
LOCAL_ACCOUNT_ID=000000000000
# Template parameters for local name resolution (space-separated KEY=VALUE; override in the env).
LOCAL_STACK_PARAMS=${LOCAL_STACK_PARAMS:-Stage=dev}

if [[ -t 2 ]]; then _B=$'\033[1m' _R=$'\033[31m' _Y=$'\033[33m' _G=$'\033[32m' _N=$'\033[0m'; else _B='' _R='' _Y='' _G='' _N=''; fi

say() { printf '%s==>%s %s\n' "$_B" "$_N" "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
warn() { printf '%swarning:%s %s\n' "$_Y" "$_N" "$*" >&2; }
die() { printf '%serror:%s %s\n' "$_R" "$_N" "$*" >&2; exit 1; }

# Run as root, or through sudo when there is one.
as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root for: $*"
  fi
}

# --- probes -------------------------------------------------------------------------------------

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

http_code() { curl -s -o /dev/null --max-time "${2:-3}" -w '%{http_code}' "$1" 2>/dev/null || true; }

# Any HTTP answer at all (404 included).
http_answers() { local c; c=$(http_code "$1"); [[ -n $c && $c != 000 ]]; }

pg_ready() {
  if command -v pg_isready >/dev/null 2>&1; then pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
  else port_open "$PG_HOST" "$PG_PORT"
  fi
}

redis_ready() {
  local line=''
  { exec 3<>"/dev/tcp/$REDIS_HOST/$REDIS_PORT"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  IFS= read -r -t 2 line <&3 || true
  exec 3<&- 3>&-
  [[ $line == +PONG* ]]
}

moto_ready() { [[ $(http_code "$MOTO_URL/moto-api/") == 200 ]]; }

localstripe_ready() { [[ $(curl -s -o /dev/null --max-time 3 -w '%{http_code}' -u sk_test_local: "$STRIPE_URL/v1/customers" 2>/dev/null) == 200 ]]; }

watch_ready() { http_answers "$WATCH_URL/"; }

# wait_for DESC TIMEOUT LOG PID CMD...: poll CMD until it succeeds; fail early if PID dies.
wait_for() {
  local desc=$1 timeout=$2 log=$3 pid=$4 start=$SECONDS
  shift 4
  until "$@"; do
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      [[ -n $log && -f $log ]] && tail -n 30 "$log" >&2
      die "$desc exited before it answered${log:+ (log: $log)}"
    fi
    if (( SECONDS - start >= timeout )); then
      [[ -n $log && -f $log ]] && tail -n 30 "$log" >&2
      die "$desc did not answer within ${timeout}s${log:+ (log: $log)}"
    fi
    sleep 0.5
  done
}

# --- process records ----------------------------------------------------------------------------

proc_start_time() { [[ -r /proc/$1/stat ]] && sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f20; }

record_proc() { # NAME PID
  mkdir -p "$PIDS"
  printf 'proc %s %s\n' "$2" "$(proc_start_time "$2")" >"$PIDS/$1.pid"
}

record_pg() { mkdir -p "$PIDS"; printf 'pg %s %s\n' "$2" "$3" >"$PIDS/$1.pid"; }

# True if the recorded process NAME is still the one we started (guards against pid reuse).
recorded_alive() {
  local f=$PIDS/$1.pid kind pid st
  [[ -f $f ]] || return 1
  read -r kind pid st <"$f" || return 1
  [[ $kind == proc ]] || return 1
  kill -0 "$pid" 2>/dev/null && [[ $(proc_start_time "$pid") == "$st" ]]
}

# start_bg NAME LOG CMD...: run CMD detached in its own session (so its children can be stopped
# as a group), record it, and leave its pid in STARTED_PID.
start_bg() {
  local name=$1 log=$2
  shift 2
  mkdir -p "$LOGS" "$PIDS"
  printf '\n=== %s: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log"
  setsid "$@" >>"$log" 2>&1 </dev/null &
  STARTED_PID=$!
  record_proc "$name" "$STARTED_PID"
}

# stop_recorded NAME: stop what the record NAME describes, if it is still ours; remove the record.
stop_recorded() {
  local name=$1 f=$PIDS/$1.pid kind a b i
  [[ -f $f ]] || return 0
  read -r kind a b <"$f" || true
  case $kind in
    proc)
      if recorded_alive "$name"; then
        say "stopping $name (pid $a)"
        kill -TERM -- "-$a" 2>/dev/null || kill -TERM "$a" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do kill -0 "$a" 2>/dev/null || break; sleep 0.25; done
        if kill -0 "$a" 2>/dev/null; then
          kill -KILL -- "-$a" 2>/dev/null || kill -KILL "$a" 2>/dev/null || true
        fi
        # The group may outlive its leader (cargo lambda watch's function processes).
        kill -TERM -- "-$a" 2>/dev/null || true
      fi
      ;;
    pg)
      say "stopping postgres cluster $a/$b"
      as_root pg_ctlcluster --skip-systemctl-redirect "$a" "$b" stop -m fast || warn "pg_ctlcluster stop failed"
      ;;
  esac
  rm -f "$f"
}

recorded_names() { local f; for f in "$PIDS"/*.pid; do [[ -e $f ]] && basename "$f" .pid; done; return 0; }

# Stop order: consumers first, then services.
STOP_ORDER=(pump watch localstripe moto redis postgres)

stop_names() { # NAME... : stops the given records in STOP_ORDER, then any others
  local n m
  for n in "${STOP_ORDER[@]}"; do
    for m in "$@"; do [[ $m == "$n" ]] && stop_recorded "$n"; done
  done
  for m in "$@"; do [[ -f $PIDS/$m.pid ]] && stop_recorded "$m"; done
  return 0
}

# --- environment --------------------------------------------------------------------------------

load_env() {
  [[ -f $ENV_FILE ]] || die "$ENV_FILE is missing: run local/up first"
  set -a
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  set +a
}

# --- cargo lambda watch -------------------------------------------------------------------------

# Start `cargo lambda watch` on 127.0.0.1:9000 unless something already answers there.
# Sends one request to every function of the router (Cargo.toml), so each is compiled and started
# before anything times out on its first request.
warm_functions() {
  local path
  while read -r path; do
    curl -s -o /dev/null -m "${WATCH_START_TIMEOUT:-300}" "$WATCH_URL$path" || true
  done < <(python3 - "$ROOT/Cargo.toml" <<'PY'
import re, sys, tomllib
router = tomllib.load(open(sys.argv[1], "rb"))["workspace"]["metadata"]["lambda"]["watch"]["router"]
seen = set()
for path, target in router.items():
    fns = {target} if isinstance(target, str) else {t["function"] for t in target}
    if not fns <= seen:
        seen |= fns
        print(re.sub(r"{[^}]+}", "warm-up", path))
PY
)
}

start_watch() {
  if watch_ready; then
    note "cargo lambda watch: already answering on $WATCH_URL (reused)"
    return 0
  fi
  if port_open "$WATCH_ADDR" "$WATCH_PORT"; then die "port $WATCH_PORT is taken by something that does not answer HTTP"; fi
  [[ -f $ENV_FILE ]] || die "$ENV_FILE is missing: run local/up --services-only first"
  # WATCH_EXTRA_ARGS: local/test passes --ignore-changes, so files written during a test run
  # never restart a function mid-request.
  # shellcheck disable=SC2086
  (cd "$ROOT" && start_bg watch "$LOGS/watch.log" cargo lambda watch -A "$WATCH_ADDR" -P "$WATCH_PORT" --env-file "$ENV_FILE" ${WATCH_EXTRA_ARGS:-})
  local pid
  read -r _ pid _ <"$PIDS/watch.pid"
  note "cargo lambda watch: started (pid $pid, log $LOGS/watch.log)"
  wait_for "cargo lambda watch" "${WATCH_START_TIMEOUT:-300}" "$LOGS/watch.log" "$pid" watch_ready
}
