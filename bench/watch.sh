#!/usr/bin/env bash
# What watchers cost writers: durable PUT throughput (walrus bench http, 64
# connections, 100-byte values) against one walrus with no watchers, with
# 1,000 idle watchers (a prefix no write touches), and with 10 active watchers
# (curl reading a watch of every key, each receiving every change), in alternating
# rounds; and the server's resident memory per idle watcher.
# Usage: bench/watch.sh [seconds per run, default 10] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${2:-3}
IDLE=${IDLE:-1000}
ACTIVE=${ACTIVE:-10}

. bench/common.sh
walrus_binary  # WALRUS=path/to/walrus skips the build
work_dir watch-bench

PORT=$(free_port)
"$WALRUS" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --max-connections 4096 \
    2>"$WORK/walrus.log" &
WALRUS_PID=$!
PIDS+=($WALRUS_PID)
wait_port "$PORT"
URL="http://127.0.0.1:$PORT"

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$WALRUS_PID/status"; }
watchers() { curl -s "$URL/metrics" | awk '/^walrus_watchers / { print $2 }'; }
wait_watchers() { # count
    for _ in $(seq 200); do [ "$(watchers)" = "$1" ] && return 0; sleep 0.05; done
    echo "expected $1 watchers, the server has $(watchers)" >&2; exit 1
}

# Holds N idle watch streams open (reading the keep-alive comments) until killed.
idle_watchers() {
    python3 - "$PORT" "$1" <<'PY' &
import selectors, socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
selector = selectors.DefaultSelector()
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /kv/?watch=true&prefix=idle/ HTTP/1.1\r\nHost: bench\r\n\r\n")
    s.setblocking(False)
    selector.register(s, selectors.EVENT_READ)
while True:
    for key, _ in selector.select():
        if not key.fileobj.recv(65536):
            selector.unregister(key.fileobj)
PY
    IDLE_PID=$!
}

run() { # name
    "$WALRUS" bench http --json --endpoints "$URL" --connections 64 --duration "$DURATION" \
        --warmup 1 --mix 1:0 --value-size 100 > "$WORK/result-$1-$round.json"
}

for round in $(seq "$ROUNDS"); do
    wait_watchers 0
    run none

    before=$(rss_kib)
    idle_watchers "$IDLE"
    wait_watchers "$IDLE"
    sleep 1
    echo "$before $(rss_kib)" > "$WORK/rss-$round.txt"
    run idle
    kill "$IDLE_PID"; wait "$IDLE_PID" 2>/dev/null || true

    wait_watchers 0
    ACTIVE_PIDS=()
    for _ in $(seq "$ACTIVE"); do
        curl -sN "$URL/kv/?watch=true" > /dev/null &
        ACTIVE_PIDS+=($!)
    done
    wait_watchers "$ACTIVE"
    run active
    kill "${ACTIVE_PIDS[@]}"; wait "${ACTIVE_PIDS[@]}" 2>/dev/null || true
done

python3 - "$WORK" "$ROUNDS" "$IDLE" "$ACTIVE" <<'PY'
import glob, json, statistics, sys
work, rounds, idle, active = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
results = {}
for path in glob.glob(f"{work}/result-*.json"):
    name = path.split("/result-")[1].rsplit("-", 1)[0]
    op = json.load(open(path))["ops"][0]
    results.setdefault(name, []).append((op["ops_per_sec"], op["latency"]["p50_us"], op["latency"]["p99_us"], op["errors"]))
print(f"Medians of {rounds} alternating rounds; walrus bench http, 64 connections, durable PUT of 100 bytes.\n")
print("| watchers | PUT/s | p50 | p99 | errors | vs none |")
print("|---|---:|---:|---:|---:|---:|")
none = statistics.median(r[0] for r in results["none"])
labels = {"none": "none", "idle": f"{idle:,} idle (prefix no write touches)", "active": f"{active} active (every change)"}
for name in ("none", "idle", "active"):
    rows = results[name]
    rate = statistics.median(r[0] for r in rows)
    print(f"| {labels[name]} | {rate:,.0f} | {statistics.median(r[1] for r in rows):.0f} µs | "
          f"{statistics.median(r[2] for r in rows):.0f} µs | {sum(r[3] for r in rows)} | {rate / none:.2f}× |")
growth = [int(b) - int(a) for a, b in (open(p).read().split() for p in glob.glob(f"{work}/rss-*.txt"))]
per = statistics.median(growth) * 1024 / idle
print(f"\nServer RSS growth with {idle:,} idle watchers open: median {statistics.median(growth)/1024:.1f} MiB, "
      f"{per/1024:.1f} KiB per watcher (connection, task, TCP buffers and registration).")
PY
