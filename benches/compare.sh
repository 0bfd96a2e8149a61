#!/usr/bin/env bash
# tarn vs coturn on this machine: the same loads against both servers in one run,
# alternating tarn, coturn, tarn, coturn ... (median per side), then one table.
#
#   benches/compare.sh                      # full run (3 rounds, 10 s per load; ~12 min)
#   benches/compare.sh --quick              # 2 rounds, 3 s per load (~3 min)
#   benches/compare.sh --out results.md     # also write the table (and run facts) there
#   benches/compare.sh --rounds 5 --duration 5 --only paced-channel-100,binding
#   TARN_THREADS=1 benches/compare.sh       # thread counts per server (default: nproc each)
#
# Both servers run on loopback only, started by hand with temporary configurations
# (never as a service) and killed on exit. coturn is Debian's `turnserver`
# (`bash .ci/setup coturn` installs it). The load generator is
# benches/load/load.rs (`cargo run --release --example load -- --help`).
set -euo pipefail

cd "$(dirname "$0")/.."

QUICK=0
ROUNDS=""
DURATION=""
OUT=""
ONLY=""
KEEP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --only) ONLY="$2"; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-2}; DURATION=${DURATION:-3}; WARMUP=0.5
else
    ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; WARMUP=1
fi
if [[ $ROUNDS -lt 2 ]]; then
    echo "compare.sh: at least 2 rounds per side" >&2
    exit 2
fi

TARN_PORT=${TARN_PORT:-7478}
COTURN_PORT=${COTURN_PORT:-7479}
# One relay range for both servers (only one holds allocations at a time: every load
# releases its allocations before the next starts). Below the ephemeral port range
# (32768-60999 here), so client and peer sockets never take a relay port.
RELAY_MIN=${RELAY_MIN:-10000}
RELAY_MAX=${RELAY_MAX:-31999}
THREADS=${THREADS:-$(nproc)}
# Each server's worker threads (tarn shards, coturn relay threads); both default to
# THREADS. On a small machine the load generator needs a core of its own, so the
# best setting per server can differ: BENCHMARKS.md shows both.
TARN_THREADS=${TARN_THREADS:-$THREADS}
COTURN_THREADS=${COTURN_THREADS:-$THREADS}
REALM=bench.test

for tool in turnserver jq python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "compare.sh: $tool is missing (coturn: bash .ci/setup coturn; jq, python3: apt-get)" >&2
        exit 2
    fi
done

echo "compare.sh: building tarn and the load generator (release)" >&2
cargo build --release --quiet --bin tarn --example load
TARGET_DIR=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)}
TARN_BIN=$TARGET_DIR/release/tarn
LOAD_BIN=$TARGET_DIR/release/examples/load

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tarn-compare.XXXXXX")
TARN_PID=""
COTURN_PID=""
cleanup() {
    local pid
    for pid in $TARN_PID $COTURN_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $TARN_PID $COTURN_PID; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then
        echo "compare.sh: logs and raw results kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in "$TARN_PORT" "$COTURN_PORT"; do
    if ss -Huln "sport = :$port" | grep -q .; then
        echo "compare.sh: UDP port $port is taken (set TARN_PORT / COTURN_PORT)" >&2
        exit 2
    fi
done

SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

mkdir -p "$WORK/state"
cat >"$WORK/tarn.toml" <<EOF
[server]
realm = "$REALM"
listen = ["127.0.0.1:$TARN_PORT"]
relay_address = ["127.0.0.1"]
relay_ports = "$RELAY_MIN-$RELAY_MAX"
threads = $TARN_THREADS
state_directory = "$WORK/state"
drain_timeout = 0

[auth]
secrets = ["$SECRET"]

[peers]
allow = ["127.0.0.1/32"]

[limits]
max_allocations = 30000
allocations_per_user = 64
allocations_per_address = 30000
unauthenticated_rate = 0
allocation_bandwidth_kbps = 0
total_bandwidth_kbps = 0

[log]
level = "warn"

[metrics]
listen = ""
EOF

cat >"$WORK/coturn.conf" <<EOF
listening-ip=127.0.0.1
relay-ip=127.0.0.1
listening-port=$COTURN_PORT
min-port=$RELAY_MIN
max-port=$RELAY_MAX
relay-threads=$COTURN_THREADS
use-auth-secret
static-auth-secret=$SECRET
realm=$REALM
allow-loopback-peers
no-tls
no-dtls
no-cli
no-software-attribute
log-file=$WORK/coturn.log
simple-log
pidfile=$WORK/coturn.pid
userdb=$WORK/turndb
EOF

# Waits (bounded) until a server answers Binding requests.
wait_ready() {
    local name=$1 port=$2 pid=$3 _
    for _ in $(seq 1 50); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "compare.sh: $name exited; its log:" >&2
            cat "$WORK/$name".* >&2 || true
            exit 1
        fi
        if "$LOAD_BIN" binding --server "127.0.0.1:$port" --secret "$SECRET" --realm "$REALM" \
            --clients 1 --duration 0.1 --warmup 0 --json 2>/dev/null |
            tail -1 | jq -e '.responses > 0' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "compare.sh: $name does not answer on UDP 127.0.0.1:$port" >&2
    exit 1
}

# (Re)starts one server: a fresh process, so that memory readings start clean.
start_server() {
    local name=$1 old
    if [[ $name == tarn ]]; then
        old=$TARN_PID
    else
        old=$COTURN_PID
    fi
    if [[ -n $old ]]; then
        kill "$old" 2>/dev/null || true
        wait "$old" 2>/dev/null || true
    fi
    if [[ $name == tarn ]]; then
        "$TARN_BIN" --config "$WORK/tarn.toml" >>"$WORK/tarn.log" 2>&1 &
        TARN_PID=$!
        wait_ready tarn "$TARN_PORT" "$TARN_PID"
    else
        turnserver -c "$WORK/coturn.conf" >>"$WORK/coturn.out" 2>&1 &
        COTURN_PID=$!
        wait_ready coturn "$COTURN_PORT" "$COTURN_PID"
    fi
}
start_server tarn
start_server coturn

COTURN_VERSION=$(turnserver --version 2>/dev/null | head -1 || echo "?")
TARN_VERSION=$(git describe --always --dirty 2>/dev/null || echo "?")
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')

# name | load arguments (server, credentials, timing and --json are added)
LOADS=(
    "paced-channel-100|relay --allocations 100 --framing channel --rate 20000"
    "paced-send-100|relay --allocations 100 --framing send --rate 20000"
    "paced-channel-10k|relay --allocations 10000 --framing channel --rate 20000"
    "saturation|relay --allocations 100 --framing channel --window 4"
    "saturation-deep|relay --allocations 100 --framing channel --window 16"
    "alloc-cycle|alloc-cycle --clients 8 --new-socket --socket-pool 1000"
    "binding|binding --clients 8"
    # Runs on freshly started servers (see below), so that earlier loads' heap does
    # not hide what holding allocations costs.
    "hold-2000|hold --allocations 2000"
)

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
START=$(date +%s)
echo "compare.sh: $ROUNDS rounds x ${#LOADS[@]} loads x 2 servers, ${DURATION} s each" >&2

run_one() {
    local load=$1 args=$2 server=$3 round=$4 port pid out
    if [[ $server == tarn ]]; then port=$TARN_PORT; pid=$TARN_PID; else port=$COTURN_PORT; pid=$COTURN_PID; fi
    out=$WORK/$load.$server.$round.txt
    local load1
    load1=$(cut -d' ' -f1 /proc/loadavg)
    # shellcheck disable=SC2086 # $args is a list of arguments
    if timeout 300 "$LOAD_BIN" $args --server "127.0.0.1:$port" --secret "$SECRET" \
        --realm "$REALM" --server-pid "$pid" --duration "$DURATION" --warmup "$WARMUP" \
        --json --label "$server" >"$out" 2>&1; then
        tail -1 "$out" | jq -c --arg load "$load" --arg server "$server" --argjson round "$round" \
            --argjson loadavg "$load1" '. + {load: $load, server: $server, round: $round, loadavg: $loadavg}' \
            >>"$RESULTS"
        printf '  %-18s %-6s round %d  %s\n' "$load" "$server" "$round" \
            "$(grep -m1 -E '^  (round trips|cycles|responses|per alloc)' "$out" | sed 's/^ *//')" >&2
    else
        jq -nc --arg load "$load" --arg server "$server" --argjson round "$round" \
            --arg error "$(grep -v '^ ' "$out" | grep -m1 -i error || tail -1 "$out")" \
            '{load: $load, server: $server, round: $round, error: $error}' >>"$RESULTS"
        printf '  %-18s %-6s round %d  FAILED: %s\n' "$load" "$server" "$round" \
            "$(grep -m1 -i error "$out" || tail -1 "$out")" >&2
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "compare.sh: $server died during $load" >&2
        exit 1
    fi
    sleep 0.5
}

for entry in "${LOADS[@]}"; do
    load=${entry%%|*}
    args=${entry#*|}
    if [[ -n $ONLY && ",$ONLY," != *",$load,"* ]]; then
        continue
    fi
    for round in $(seq 1 "$ROUNDS"); do
        for server in tarn coturn; do
            if [[ $load == hold-* ]]; then
                start_server "$server"
            fi
            run_one "$load" "$args" "$server" "$round"
        done
    done
done
ELAPSED=$(( $(date +%s) - START ))

TABLE=$WORK/table.md
python3 - "$RESULTS" >"$TABLE" <<'PY'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(load, server, key):
    vals = [r[key] for r in rows
            if r["load"] == load and r["server"] == server and r.get(key) is not None]
    return statistics.median(vals) if vals else None

def fmt(v, d=1):
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{d}f}"

def ratio(t, c):
    if t is None or c is None or c == 0:
        return "n/a"
    return f"{t / c:.2f}"

def failures(load):
    f = [f"{r['server']} round {r['round']}: {r['error']}" for r in rows
         if r["load"] == load and "error" in r]
    return f

out = []
out.append("| load | metric | tarn | coturn | tarn/coturn |")
out.append("|---|---|---:|---:|---:|")
def row(load, label, key, d=1):
    t, c = med(load, "tarn", key), med(load, "coturn", key)
    out.append(f"| {load} | {label} | {fmt(t, d)} | {fmt(c, d)} | {ratio(t, c)} |")
for load in ["paced-channel-100", "paced-send-100", "paced-channel-10k"]:
    row(load, "server CPU µs per round trip", "server_cpu_us_per_rt", 2)
    row(load, "RTT p50 µs", "rtt_p50_us", 0)
    row(load, "RTT p99 µs", "rtt_p99_us", 0)
    row(load, "loss %", "loss_pct", 3)
    row(load, "round trips/s achieved", "round_trips_per_s", 0)
for load in ["saturation", "saturation-deep"]:
    row(load, "round trips/s", "round_trips_per_s", 0)
    row(load, "loss %", "loss_pct", 3)
    row(load, "server CPU µs per round trip", "server_cpu_us_per_rt", 2)
    row(load, "RTT p99 µs", "rtt_p99_us", 0)
row("alloc-cycle", "cycles/s", "cycles_per_s", 0)
row("alloc-cycle", "server CPU µs per cycle", "server_cpu_us_per_cycle", 1)
row("binding", "responses/s", "responses_per_s", 0)
row("binding", "server CPU µs per response", "server_cpu_us_per_response", 2)
row("hold-2000", "KiB per allocation", "kib_per_allocation", 2)
row("hold-2000", "RSS start KiB", "rss_start_kib", 0)
row("hold-2000", "RSS held KiB", "rss_held_kib", 0)
row("hold-2000", "RSS after release KiB", "rss_after_kib", 0)
row("hold-2000", "RSS after release vs start %", "rss_after_vs_start_pct", 1)

# tarn's own 10,000-allocation figure against its 100-allocation one.
t100 = med("paced-channel-100", "tarn", "server_cpu_us_per_rt")
t10k = med("paced-channel-10k", "tarn", "server_cpu_us_per_rt")
c100 = med("paced-channel-100", "coturn", "server_cpu_us_per_rt")
c10k = med("paced-channel-10k", "coturn", "server_cpu_us_per_rt")
out.append(f"| 10k vs 100 allocations | CPU per round trip, 10k / 100 | {ratio(t10k, t100)} | {ratio(c10k, c100)} | |")

# Targets.
def tgt(name, ok, text):
    mark = "n/a" if ok is None else ("met" if ok else "NOT met")
    return f"| {name} | {text} | {mark} |"
def r(a, b):
    return None if a is None or b in (None, 0) else a / b
targets = ["", "| target | measured | |", "|---|---|---|"]
for load, what in [("paced-channel-100", "ChannelData"), ("paced-send-100", "Send")]:
    x = r(med(load, "tarn", "server_cpu_us_per_rt"), med(load, "coturn", "server_cpu_us_per_rt"))
    targets.append(tgt(f"(a) CPU/RT ≤ 0.5× coturn, {what}", None if x is None else x <= 0.5,
                       f"{x:.2f}×" if x is not None else "n/a"))
x = r(t10k, t100)
targets.append(tgt("(b) 10k allocations ≤ 1.2× tarn's 100", None if x is None else x <= 1.2,
                   f"{x:.2f}×" if x is not None else "n/a"))
x = r(med("saturation", "tarn", "round_trips_per_s"), med("saturation", "coturn", "round_trips_per_s"))
lt, lc = med("saturation", "tarn", "loss_pct"), med("saturation", "coturn", "loss_pct")
ok = None if x is None or lt is None or lc is None else (x >= 1.1 and lt <= lc)
targets.append(tgt("(c) saturation ≥ 1.1× coturn, loss no higher", ok,
                   f"{x:.2f}×, loss {lt:.3f}% vs {lc:.3f}%" if ok is not None else "n/a"))
x = r(med("saturation-deep", "tarn", "round_trips_per_s"), med("saturation-deep", "coturn", "round_trips_per_s"))
lt, lc = med("saturation-deep", "tarn", "loss_pct"), med("saturation-deep", "coturn", "loss_pct")
ok = None if x is None or lt is None or lc is None else (x >= 1.1 and lt <= lc)
targets.append(tgt("(c') same, deep queue (window 16)", ok,
                   f"{x:.2f}×, loss {lt:.3f}% vs {lc:.3f}%" if ok is not None else "n/a"))
x = r(med("alloc-cycle", "tarn", "cycles_per_s"), med("alloc-cycle", "coturn", "cycles_per_s"))
targets.append(tgt("(d) allocation cycles/s ≥ 2× coturn", None if x is None else x >= 2,
                   f"{x:.2f}×" if x is not None else "n/a"))
x = r(med("binding", "tarn", "responses_per_s"), med("binding", "coturn", "responses_per_s"))
targets.append(tgt("(d) Binding/s, 8 clients ≥ 2× coturn", None if x is None else x >= 2,
                   f"{x:.2f}×" if x is not None else "n/a"))
x = r(med("hold-2000", "tarn", "kib_per_allocation"), med("hold-2000", "coturn", "kib_per_allocation"))
targets.append(tgt("(e) RSS per held allocation ≤ 0.25× coturn", None if x is None else x <= 0.25,
                   f"{x:.2f}×" if x is not None else "n/a"))
y = med("hold-2000", "tarn", "rss_after_vs_start_pct")
targets.append(tgt("(e) tarn RSS after release within 10% of start", None if y is None else abs(y) <= 10,
                   f"{y:+.1f}%" if y is not None else "n/a"))
for load, what in [("paced-channel-100", "ChannelData"), ("paced-send-100", "Send")]:
    t, c = med(load, "tarn", "rtt_p99_us"), med(load, "coturn", "rtt_p99_us")
    targets.append(tgt(f"(f) p99 RTT ≤ coturn's, paced {what}", None if t is None or c is None else t <= c,
                       f"{t:.0f} µs vs {c:.0f} µs" if t is not None and c is not None else "n/a"))
out += targets
fails = [f for load in sorted({r['load'] for r in rows}) for f in failures(load)]
if fails:
    out.append("")
    out.append("Failed runs (left out of the medians):")
    out += [f"- {f}" for f in fails]
loads = [r["loadavg"] for r in rows if "loadavg" in r]
if loads:
    out.append("")
    out.append(f"1-minute load average at the start of each run: min {min(loads):.2f}, "
               f"median {statistics.median(loads):.2f}, max {max(loads):.2f}")
print("\n".join(out))
PY

{
    echo "tarn $TARN_VERSION vs coturn $COTURN_VERSION; $(nproc) cores ($CPU_MODEL), threads: tarn $TARN_THREADS, coturn $COTURN_THREADS;"
    echo "$ROUNDS rounds x ${DURATION} s per load (+${WARMUP} s warm-up), alternating tarn/coturn, medians;"
    echo "finished $(date -u '+%Y-%m-%d %H:%M UTC') after ${ELAPSED} s; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    cat "$TABLE"
} >"$WORK/report.md"

cat "$WORK/report.md"
if [[ -n $OUT ]]; then
    cp "$WORK/report.md" "$OUT"
    cp "$RESULTS" "${OUT%.*}.jsonl"
    echo "compare.sh: table written to $OUT (raw results: ${OUT%.*}.jsonl)" >&2
fi
