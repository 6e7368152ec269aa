#!/usr/bin/env bash
# walrus against Redis 7 with the same client, redis-benchmark, in one run:
#   walrus (--resp-listen, fsync always: a reply leaves after fdatasync),
#   redis-server with appendonly yes + appendfsync always (the same promise),
#   redis-server with appendfsync everysec (for reference: may lose ~1 s).
# Runs alternate servers; every server listens on 127.0.0.1 and stops at the
# end; data lives under $BENCH_DIR (default: this checkout, a real disk; /tmp
# may be tmpfs, where fsync is free). Usage:
#   bench/redis.sh [rounds, default 3] [request scale, default 1]
# (WALRUS=path/to/walrus to use a given binary instead of building one.)
# Prints a Markdown table of medians over the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SCALE=${2:-1}
case $SCALE in
    ''|*[!0-9]*|0) echo "request scale must be a whole number ≥ 1, got '$SCALE'" >&2; exit 2 ;;
esac

. bench/common.sh
if ! need redis-server || ! need redis-benchmark; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
walrus_binary  # WALRUS=path/to/walrus skips the build
work_dir redis-bench

# Ready means answering PING, not only accepting connections.
wait_redis() { for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }

WALRUS_PORT=$(free_port); ALWAYS_PORT=$(free_port); EVERYSEC_PORT=$(free_port)
"$WALRUS" serve --listen 127.0.0.1:0 --resp-listen "127.0.0.1:$WALRUS_PORT" \
    --data-dir "$WORK/walrus" 2>"$WORK/walrus.log" & PIDS+=($!)
for mode in always everysec; do
    port=$ALWAYS_PORT; [ "$mode" = everysec ] && port=$EVERYSEC_PORT
    mkdir -p "$WORK/redis-$mode"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/redis-$mode" --save "" \
        --appendonly yes --appendfsync "$mode" --daemonize no --logfile "$WORK/redis-$mode.log" & PIDS+=($!)
done
wait_redis "$WALRUS_PORT"; wait_redis "$ALWAYS_PORT"; wait_redis "$EVERYSEC_PORT"
echo "redis: $(redis-server --version)" >&2

port_of() { # server name -> its port
    case $1 in
        walrus) echo "$WALRUS_PORT" ;;
        redis-always) echo "$ALWAYS_PORT" ;;
        redis-everysec) echo "$EVERYSEC_PORT" ;;
    esac
}

requests() { # clients pipeline -> request count (each run takes a few seconds)
    local n=20000
    [ "$1" -gt 1 ] && n=$((n * 5))
    [ "$2" -gt 1 ] && n=$((n * 4))
    echo $((n * SCALE))
}

echo "server,round,clients,pipeline,test,rps,avg_ms,min_ms,p50_ms,p95_ms,p99_ms,max_ms" > "$WORK/results.csv"
for round in $(seq "$ROUNDS"); do
    for clients in 1 64; do
        for pipeline in 1 16; do
            for server in walrus redis-always redis-everysec; do
                port=$(port_of "$server")
                echo "round $round: $server -c $clients -P $pipeline" >&2
                redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -d 100 -r 100000 \
                    -n "$(requests "$clients" "$pipeline")" -c "$clients" -P "$pipeline" --csv \
                    | tail -n +2 | tr -d '"' \
                    | sed "s/^/$server,$round,$clients,$pipeline,/" >> "$WORK/results.csv"
            done
        done
    done
    # The same SET and GET over RESP3 (HELLO 3 first), as clients that
    # default to it connect.
    for server in walrus redis-always redis-everysec; do
        port=$(port_of "$server")
        echo "round $round: $server RESP3 -c 64" >&2
        redis-benchmark -3 -h 127.0.0.1 -p "$port" -t set,get -d 100 -r 100000 \
            -n $((100000 * SCALE)) -c 64 --csv \
            | tail -n +2 | tr -d '"' | sed -E 's/^(SET|GET),/\1 RESP3,/' \
            | sed "s/^/$server,$round,64,1,/" >> "$WORK/results.csv"
    done
    # Read-modify-write on one hot key (redis-benchmark's INCR uses a single
    # key unless -r is given) and MULTI/EXEC of five SETs (redis-benchmark has
    # no transaction test: walrus's own RESP load generator sends it).
    for server in walrus redis-always redis-everysec; do
        port=$(port_of "$server")
        echo "round $round: $server INCR one key, MULTI/EXEC -c 64" >&2
        redis-benchmark -h 127.0.0.1 -p "$port" -t incr -n $((40000 * SCALE)) -c 64 --csv \
            | tail -n +2 | tr -d '"' | sed "s/^/$server,$round,64,1,/" >> "$WORK/results.csv"
        "$WALRUS" bench resp --address "127.0.0.1:$port" --connections 64 --tests multi \
            --duration $((5 * SCALE)) --warmup 1 --json \
            | python3 -c "import json, sys; r = json.load(sys.stdin)['rows'][0]; print('MULTI/EXEC 5 SET,%s,0,0,0,0,%s,0' % (r['ops_per_sec'], r['latency']['p99_us'] / 1000))" \
            | sed "s/^/$server,$round,64,1,/" >> "$WORK/results.csv"
    done
done

python3 - "$WORK/results.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def median(server, test, clients, pipeline, field):
    values = [float(r[field]) for r in rows if r["server"] == server and r["test"] == test
              and r["clients"] == clients and r["pipeline"] == pipeline]
    return statistics.median(values) if values else float("nan")
print("| test | -c | -P | walrus ops/s | redis always ops/s | walrus / redis always | redis everysec ops/s | walrus p99 ms | redis always p99 ms |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for test in ("SET", "GET"):
    for clients in ("1", "64"):
        for pipeline in ("1", "16"):
            w = median("walrus", test, clients, pipeline, "rps")
            a = median("redis-always", test, clients, pipeline, "rps")
            e = median("redis-everysec", test, clients, pipeline, "rps")
            wp = median("walrus", test, clients, pipeline, "p99_ms")
            ap = median("redis-always", test, clients, pipeline, "p99_ms")
            print(f"| {test} | {clients} | {pipeline} | {w:,.0f} | {a:,.0f} | {w / a:.2f}x | {e:,.0f} | {wp:.3f} | {ap:.3f} |")
for test in ("SET RESP3", "GET RESP3", "INCR", "MULTI/EXEC 5 SET"):
    w = median("walrus", test, "64", "1", "rps")
    a = median("redis-always", test, "64", "1", "rps")
    e = median("redis-everysec", test, "64", "1", "rps")
    wp = median("walrus", test, "64", "1", "p99_ms")
    ap = median("redis-always", test, "64", "1", "p99_ms")
    print(f"| {test} | 64 | 1 | {w:,.0f} | {a:,.0f} | {w / a:.2f}x | {e:,.0f} | {wp:.3f} | {ap:.3f} |")
PY
