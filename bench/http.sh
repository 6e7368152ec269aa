#!/usr/bin/env bash
# Side-by-side HTTP benchmark, one run, same load generator for every server:
#   walrus (durable PUT, GET), nginx serving a 5-byte static file (the machine's
#   HTTP ceiling), etcd 3.4 single node through its v3 JSON gateway, and the
#   original design (map + JSON-lines log, fsync per write) reproduced by
#   `walrus bench original-server`.
# Everything listens on 127.0.0.1 and stops at the end; data lives under
# $BENCH_DIR (default: this checkout, a real disk). Usage:
#   bench/http.sh [seconds per run, default 10] [rounds, default 3]
# Prints a Markdown table of medians over the rounds (runs alternate servers).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${2:-3}

. bench/common.sh
if ! need nginx || ! need etcd; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light etcd-server >/dev/null
fi
walrus_binary  # WALRUS=path/to/walrus skips the build
work_dir http-bench

NGINX_PORT=$(free_port); ETCD_PORT=$(free_port); ETCD_PEER=$(free_port); WALRUS_PORT=$(free_port)
ORIGINAL_PORT=$(free_port)

mkdir -p "$WORK/www" "$WORK/nginx"
chmod 755 "$WORK" "$WORK/www"  # nginx workers run as www-data
printf 'hello' > "$WORK/www/hello.txt"
cat > "$WORK/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server { listen 127.0.0.1:$NGINX_PORT; root $WORK/www; }
}
CONF
nginx -c "$WORK/nginx.conf" & PIDS+=($!)

etcd --name bench --data-dir "$WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER" --log-level error >"$WORK/etcd.log" 2>&1 & PIDS+=($!)

"$WALRUS" serve --listen "127.0.0.1:$WALRUS_PORT" --data-dir "$WORK/walrus" 2>"$WORK/walrus.log" & WALRUS_PID=$!
PIDS+=($WALRUS_PID)
"$WALRUS" bench original-server --listen "127.0.0.1:$ORIGINAL_PORT" --data-dir "$WORK/original" 2>"$WORK/original.log" & PIDS+=($!)
wait_port "$NGINX_PORT"; wait_port "$ETCD_PORT"; wait_port "$WALRUS_PORT"; wait_port "$ORIGINAL_PORT"

run() { # name connections style mix url [extra]
    local name=$1 conns=$2 style=$3 mix=$4 url=$5; shift 5
    "$WALRUS" bench http --json --endpoints "$url" --connections "$conns" --duration "${RUN_SECONDS:-$DURATION}" \
        --warmup 1 --style "$style" --mix "$mix" --value-size 100 "$@" \
        > "$WORK/result-$name-$conns-$round.json"
}
for round in $(seq "$ROUNDS"); do
    for conns in 1 64; do
        run nginx-GET "$conns" static 0:1 "http://127.0.0.1:$NGINX_PORT/hello.txt"
        run walrus-PUT "$conns" walrus 1:0 "http://127.0.0.1:$WALRUS_PORT" --pid "$WALRUS_PID"
        run walrus-GET "$conns" walrus 0:1 "http://127.0.0.1:$WALRUS_PORT"
        run etcd-PUT "$conns" etcd 1:0 "http://127.0.0.1:$ETCD_PORT"
        run original-PUT "$conns" walrus 1:0 "http://127.0.0.1:$ORIGINAL_PORT"
    done
done

# Memory over a long write run: RSS should stay flat beyond the data stored
# (10,000 keys of 100 bytes).
RSS_SECONDS=${RSS_SECONDS:-60}
round=rss
RUN_SECONDS=$RSS_SECONDS run walrus-RSS 64 walrus 1:1 "http://127.0.0.1:$WALRUS_PORT" --pid "$WALRUS_PID"

python3 - "$WORK" "$ROUNDS" <<'PY'
import glob, json, statistics, sys
work, rounds = sys.argv[1], sys.argv[2]
results = {}
for path in glob.glob(f"{work}/result-*-[0-9]*.json"):
    name, conns = path.split("/result-")[1].rsplit("-", 2)[:2]
    report = json.load(open(path))
    op = report["ops"][0]
    results.setdefault((name, int(conns)), []).append(
        (op["ops_per_sec"], op["latency"]["p50_us"], op["latency"]["p99_us"], op["errors"]))
print(f"Medians of {rounds} alternating rounds; load generator: walrus bench http on the same machine.\n")
print("| server, operation | connections | req/s | p50 | p99 | errors | vs nginx GET | vs original PUT |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for conns in (1, 64):
    nginx = statistics.median(r[0] for r in results[("nginx-GET", conns)])
    original = statistics.median(r[0] for r in results[("original-PUT", conns)])
    for name in ("nginx-GET", "walrus-PUT", "walrus-GET", "etcd-PUT", "original-PUT"):
        rows = results[(name, conns)]
        rate = statistics.median(r[0] for r in rows)
        p50 = statistics.median(r[1] for r in rows)
        p99 = statistics.median(r[2] for r in rows)
        errors = sum(r[3] for r in rows)
        print(f"| {name.replace('-', ' ')} | {conns} | {rate:,.0f} | {p50:.0f} µs | {p99:.0f} µs | {errors} | {rate / nginx:.2f}× | {rate / original:.2f}× |")
rss = json.load(open(f"{work}/result-walrus-RSS-64-rss.json"))
r = rss["rss"]
ops = sum(op["operations"] for op in rss["ops"])
print(f"\nwalrus RSS over {rss['duration_seconds']:.0f} s of 64-connection PUT/GET ({ops:,} requests, 10,000 keys): "
      f"{r['start_bytes']/2**20:.1f} MiB at start, {r['end_bytes']/2**20:.1f} MiB at end, peak {r['peak_bytes']/2**20:.1f} MiB")
PY
