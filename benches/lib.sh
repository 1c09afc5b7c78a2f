# Functions the benches/run-*.sh scripts share; sourced by them from the
# workspace root (`source benches/lib.sh`), after `set -euo pipefail`.
#
#   build_release                  release data plane and shoal-bench: DP, BENCH
#   machine_description            CPUs, model, kernel
#   describe_run SERVER_LINE       work directory, MACHINE, server, load at start
#   free_port [tcp|udp] [PORT...]  a free loopback port, not one of PORT...
#   shoal_config SRC DEST OLD:NEW  SRC with its listeners moved to free ports
#   wait_for_line FILE TEXT [N]    TEXT in FILE within N tenths of a second
#   wait_for_listen PORT [N]       a TCP listener on 127.0.0.1:PORT within N tenths
#   stop_pid PID                   SIGTERM, up to 10 s, SIGKILL, reaped
#   start_shoal NAME CONFIG        a fresh data plane: SERVER_PID, SERVER_LOG
#   start_nginx NAME WORKERS       a fresh nginx on $WORK/nginx.conf: SERVER_PID(S)
#   stop_server                    stops what start_shoal/start_nginx started
#   server_log_summary SERVER      its warnings and errors, in one line
#   record_run [--report] K=V...   one line of RESULTS_JSONL
#   summary_python ARG...          the Python on stdin, after SUMMARY_HELPERS
#   summary_only A1 A2 A3 ARG...   with A1 = --summary: summarize A2 A3 ARG..., exit
#   publish_summary SCRIPT ARG...  `summarize ARG...`, printed and appended
#
# Every wait is bounded; a server that does not start ends the script with
# its log. The scripts set NGINX, WORK (their work directory),
# RESULTS_JSONL and RESULTS_FILE before they use what reads them.

# Where cargo builds; the scripts run the release binaries from there.
TARGET_DIR=${CARGO_TARGET_DIR:-target}

# build_release: builds the release data plane and load generator and
# sets DP and BENCH to them.
build_release() {
    cargo build --release -p shoal-dataplane -p shoal-benches >/dev/null
    DP=$TARGET_DIR/release/shoal-dataplane
    BENCH=$TARGET_DIR/release/shoal-bench
}

# The machine in one line: "2 CPUs (model), kernel 6.1.0".
machine_description() {
    echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r)"
}

# describe_run SERVER_LINE: prints the work directory, the machine (and
# sets MACHINE to it, for the summary), SERVER_LINE (the compared server's
# version) and the load average at the start.
describe_run() {
    echo "work directory: $WORK"
    MACHINE="$(machine_description), open-file limit $(ulimit -n)"
    echo "machine: $MACHINE"
    echo "$1"
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# free_port [tcp|udp] [PORT...]: a loopback port nothing is bound to (at
# the time of the call) and none of the PORTs given.
free_port() {
    local proto=${1:-tcp} port
    [ $# -eq 0 ] || shift
    for _ in $(seq 20); do
        port=$(python3 -c 'import socket, sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "$proto")
        case " $* " in
            *" $port "*) ;;
            *) echo "$port"; return ;;
        esac
    done
    echo "no free $proto port found" >&2
    return 1
}

# shoal_config SOURCE DEST OLD:NEW...: SOURCE (a data plane config) with
# each line `bind = "127.0.0.1:OLD"` bound to port NEW instead, written to
# DEST; ends the script if a port could not be set.
shoal_config() {
    local source=$1 dest=$2 pair
    shift 2
    local edits=()
    for pair in "$@"; do
        edits+=(-e "s/^bind = \"127.0.0.1:${pair%%:*}\"/bind = \"127.0.0.1:${pair#*:}\"/")
    done
    sed "${edits[@]}" "$source" >"$dest"
    for pair in "$@"; do
        grep -q "127.0.0.1:${pair#*:}" "$dest" || { echo "cannot set the ports in $dest"; exit 1; }
    done
}

# wait_for_line FILE TEXT [TENTHS]: succeeds once FILE holds TEXT, fails
# after TENTHS tenths of a second (default 100).
wait_for_line() {
    for _ in $(seq "${3:-100}"); do
        grep -q "$2" "$1" 2>/dev/null && return
        sleep 0.1
    done
    return 1
}

# wait_for_listen PORT [TENTHS]: succeeds once a TCP socket listens on
# 127.0.0.1:PORT, fails after TENTHS tenths of a second (default 100).
wait_for_listen() {
    for _ in $(seq "${2:-100}"); do
        ss -ltn | grep -q "127.0.0.1:$1 " && return
        sleep 0.1
    done
    return 1
}

# stop_pid PID: SIGTERM, up to 10 s to exit, then SIGKILL; reaped.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# The server of the current run (one at a time): its pid, the pids to
# sample (--server-pid) and its log.
SERVER_PID=""
SERVER_PIDS=""
SERVER_LOG=""

# start_shoal NAME CONFIG: the data plane (--cores 2) on CONFIG, logging
# to $WORK/NAME.log, ready.
start_shoal() {
    SERVER_LOG=$WORK/$1.log
    : >"$SERVER_LOG"
    "$DP" --cores 2 --config "$2" --stats-interval 0s 2>"$SERVER_LOG" &
    SERVER_PID=$!
    SERVER_PIDS=$SERVER_PID
    wait_for_line "$SERVER_LOG" "shoal-dataplane ready" && return
    echo "shoal-dataplane did not start:"; cat "$SERVER_LOG"; exit 1
}

# start_nginx NAME WORKERS: nginx on $WORK/nginx.conf (prefix $WORK/nginx/,
# output to $WORK/nginx-NAME.out), listening on NGINX_PORT with at least
# WORKERS worker processes up; with WORKERS > 0 the master and its
# workers are sampled together.
start_nginx() {
    SERVER_LOG=$WORK/nginx/error.log
    : >"$SERVER_LOG"
    "$NGINX" -c "$WORK/nginx.conf" -p "$WORK/nginx/" >>"$WORK/nginx-$1.out" 2>&1 &
    SERVER_PID=$!
    SERVER_PIDS=$SERVER_PID
    for _ in $(seq 100); do
        if ss -ltn | grep -q "127.0.0.1:$NGINX_PORT " \
            && { [ "$2" -eq 0 ] || [ "$(pgrep -P "$SERVER_PID" | wc -l)" -ge "$2" ]; }; then
            [ "$2" -eq 0 ] || SERVER_PIDS="$SERVER_PID,$(pgrep -P "$SERVER_PID" | paste -sd, -)"
            return
        fi
        sleep 0.1
    done
    echo "nginx did not start:"; cat "$WORK/nginx-$1.out" "$SERVER_LOG"; exit 1
}

stop_server() {
    [ -z "$SERVER_PID" ] || stop_pid "$SERVER_PID"
    SERVER_PID=""
    SERVER_PIDS=""
}

# server_log_summary shoal|nginx: what the server logged at warning level
# or above during the run, the three most frequent, in one line.
server_log_summary() {
    if [ "$1" = shoal ]; then
        grep -E " (WARN|ERROR) " "$SERVER_LOG" | sed -E 's/^[^ ]+ +//' | sort | uniq -c | sort -rn | head -3 \
            | awk '{$1=$1" x"; print}' | paste -sd ';' - || true
    else
        grep -E "\[(warn|error|crit|alert|emerg)\]" "$SERVER_LOG" | sed -E 's/^[^[]*//; s/, client:.*//' \
            | sort | uniq -c | sort -rn | head -3 | awk '{$1=$1" x"; print}' | paste -sd ';' - || true
    fi
}

# record_run [--report] KEY=VALUE...: appends one JSON object to
# RESULTS_JSONL: the pairs in order (KEY:int=VALUE for a number) and, with
# --report, "report": the JSON report on stdin without its histogram.
record_run() {
    python3 -c '
import json, sys
args, record = sys.argv[1:], {}
with_report = args[:1] == ["--report"]
for pair in args[1:] if with_report else args:
    key, value = pair.split("=", 1)
    if key.endswith(":int"):
        key, value = key[:-4], int(value)
    record[key] = value
if with_report:
    report = json.load(sys.stdin)
    report.pop("latency_histogram_v2_base64", None)
    record["report"] = report
print(json.dumps(record))' "$@" >>"$RESULTS_JSONL"
}

# What the scripts' `summarize` programs share: the runs of a results.jsonl
# (load_runs) and the report of one (rep), number formats and ratios, and
# a report's server and latency figures (None where missing).
SUMMARY_HELPERS='
import json, sys

def load_runs(path, *fields):
    """The runs keyed by those fields, and the first field in run order."""
    runs, order = {}, []
    for line in open(path):
        r = json.loads(line)
        runs[tuple(r[f] for f in fields)] = r
        if r[fields[0]] not in order:
            order.append(r[fields[0]])
    return runs, order

def rep(*key):
    r = runs.get(key)
    return None if r is None or "report" not in r else r["report"]

def fmt(v, spec="{:,.0f}"):
    return "n/a" if v is None else spec.format(v)

def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else "%.2f" % (a / b)

def srv(d, key):
    return None if d is None else (d.get("server") or {}).get(key)

def lat(d, key):
    return None if d is None else (d.get("latency_us") or {}).get(key)
'

# summary_python ARG...: runs the Python program on stdin after
# SUMMARY_HELPERS, with ARG... as sys.argv[1:].
summary_python() {
    python3 -c "$SUMMARY_HELPERS$(cat)" "$@"
}

# summary_only "${1:-}" "${2:-}" "${3:-}" ARG...: given a script's first
# three arguments; when they are `--summary RESULTS_JSONL [MACHINE]`,
# prints `summarize RESULTS_JSONL MACHINE ARG...` (MACHINE: "as in that
# run" if not given) and ends the script.
summary_only() {
    [ "$1" = --summary ] || return 0
    summarize "$2" "${3:-as in that run}" "${@:4}"
    exit 0
}

# publish_summary SCRIPT ARG...: the markdown of `summarize ARG...` (each
# script defines its own), kept in $WORK/summary.md, printed and appended
# to RESULTS_FILE ("-": only printed) under a heading naming SCRIPT.
publish_summary() {
    local script=$1
    shift
    echo; echo "== summary"
    summarize "$@" >"$WORK/summary.md"
    cat "$WORK/summary.md"
    if [ "$RESULTS_FILE" != "-" ]; then
        {
            echo
            echo "### $script output, $(date -u +%Y-%m-%dT%H:%MZ)"
            echo
            cat "$WORK/summary.md"
        } >>"$RESULTS_FILE"
        echo; echo "appended to $RESULTS_FILE; raw reports in $RESULTS_JSONL"
    fi
}
