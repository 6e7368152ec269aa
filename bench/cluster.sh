#!/usr/bin/env bash
# Side-by-side cluster benchmark, one run, the same load generator for both:
#   3 walrus nodes (Raft, fsync always) vs 3 etcd 3.4 nodes (Debian's package,
#   v3 JSON gateway), and a single walrus node for the cluster/single ratio.
# Load goes to every node of a cluster (connections spread over the endpoints:
# followers forward writes and take read indexes from the leader) and, for
# PUT, also straight to the leader. GETs are linearizable on both systems.
# Then: the time from kill -9 of the walrus leader to the first acknowledged
# write through a survivor, median of FAILOVERS (default 5) trials.
# The machine's cores are shared as `walrus dev-cluster` shares them: each
# walrus node runs `--threads` = cores / 3, at least 1 (W_THREADS overrides);
# the single node and etcd keep their defaults (etcd measured slower with
# GOMAXPROCS=1, BENCHMARKS.md). The CPU steal over the whole run is printed
# at the end: a virtual machine's neighbours can take a fifth of its time.
# Everything listens on 127.0.0.1; data lives under $BENCH_DIR (default: this
# checkout, a real disk). Usage:
#   bench/cluster.sh [seconds per run, default 10] [rounds, default 3]
# Prints Markdown tables of medians over the rounds (runs alternate systems).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${2:-3}
FAILOVERS=${FAILOVERS:-5}

. bench/common.sh
if ! need etcd; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
walrus_binary  # WALRUS=path/to/walrus skips the build
work_dir cluster-bench

declare -a W_HTTP E_CLIENT E_PEER
for i in 1 2 3; do W_HTTP[$i]=$(free_port); E_CLIENT[$i]=$(free_port); E_PEER[$i]=$(free_port); done
SINGLE_PORT=$(free_port)
W_PEERS="1=127.0.0.1:${W_HTTP[1]},2=127.0.0.1:${W_HTTP[2]},3=127.0.0.1:${W_HTTP[3]}"
E_CLUSTER="e1=http://127.0.0.1:${E_PEER[1]},e2=http://127.0.0.1:${E_PEER[2]},e3=http://127.0.0.1:${E_PEER[3]}"
declare -a W_PID

CORES=$(nproc)
W_THREADS=${W_THREADS:-$(( CORES / 3 > 0 ? CORES / 3 : 1 ))}
start_walrus_node() { # id
    "$WALRUS" serve --node-id "$1" --peers "$W_PEERS" --listen "127.0.0.1:${W_HTTP[$1]}" \
        --threads "$W_THREADS" --data-dir "$WORK/walrus-$1" 2>>"$WORK/walrus-$1.log" & W_PID[$1]=$!
    PIDS+=(${W_PID[$1]})
}
for i in 1 2 3; do
    start_walrus_node "$i"
    etcd --name "e$i" --data-dir "$WORK/etcd-$i" \
        --listen-client-urls "http://127.0.0.1:${E_CLIENT[$i]}" --advertise-client-urls "http://127.0.0.1:${E_CLIENT[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${E_PEER[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${E_PEER[$i]}" \
        --initial-cluster "$E_CLUSTER" --initial-cluster-state new --log-level error >"$WORK/etcd-$i.log" 2>&1 & PIDS+=($!)
done
"$WALRUS" serve --listen "127.0.0.1:$SINGLE_PORT" --data-dir "$WORK/single" 2>"$WORK/single.log" & PIDS+=($!)
for i in 1 2 3; do wait_port "${W_HTTP[$i]}"; wait_port "${E_CLIENT[$i]}"; done
wait_port "$SINGLE_PORT"

walrus_leader() { # prints the leader's HTTP port
    for _ in $(seq 100); do
        local id
        id=$(curl -sf "http://127.0.0.1:${W_HTTP[1]}/cluster/status" 2>/dev/null \
            | python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader_id") or "")' 2>/dev/null || true)
        if [ -z "$id" ]; then
            id=$(curl -sf "http://127.0.0.1:${W_HTTP[2]}/cluster/status" 2>/dev/null \
                | python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader_id") or "")' 2>/dev/null || true)
        fi
        if [ -n "$id" ]; then echo "${W_HTTP[$id]}"; return 0; fi
        sleep 0.1
    done
    echo "no walrus leader" >&2; exit 1
}
etcd_leader() { # prints the leader's client port
    for i in 1 2 3; do
        if curl -sf -X POST "http://127.0.0.1:${E_CLIENT[$i]}/v3/maintenance/status" -d '{}' \
            | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["leader"]==s["header"]["member_id"] else 1)'; then
            echo "${E_CLIENT[$i]}"; return 0
        fi
    done
    echo "no etcd leader" >&2; exit 1
}
all_urls() { # port...
    local urls=() port
    for port in "$@"; do urls+=("http://127.0.0.1:$port"); done
    (IFS=,; echo "${urls[*]}")
}

run() { # name connections style mix urls
    local name=$1 conns=$2 style=$3 mix=$4 urls=$5
    "$WALRUS" bench http --json --endpoints "$urls" --connections "$conns" --duration "$DURATION" \
        --warmup 1 --style "$style" --mix "$mix" --value-size 100 \
        > "$WORK/result-$name-$conns-$round.json"
}
cpu_times() { head -1 /proc/stat; }
STAT_START=$(cpu_times)
W_ALL=$(all_urls "${W_HTTP[1]}" "${W_HTTP[2]}" "${W_HTTP[3]}")
E_ALL=$(all_urls "${E_CLIENT[1]}" "${E_CLIENT[2]}" "${E_CLIENT[3]}")
for round in $(seq "$ROUNDS"); do
    W_LEADER=$(all_urls "$(walrus_leader)")
    E_LEADER=$(all_urls "$(etcd_leader)")
    for conns in 1 64; do
        run walrus-PUT-leader "$conns" walrus 1:0 "$W_LEADER"
        run etcd-PUT-leader "$conns" etcd 1:0 "$E_LEADER"
        run walrus-PUT-any "$conns" walrus 1:0 "$W_ALL"
        run etcd-PUT-any "$conns" etcd 1:0 "$E_ALL"
        run single-PUT "$conns" walrus 1:0 "http://127.0.0.1:$SINGLE_PORT"
    done
    run walrus-GET-any 64 walrus 0:1 "$W_ALL"
    run etcd-GET-any 64 etcd 0:1 "$E_ALL"
done

# Failover: kill -9 the leader, time until a survivor acknowledges a write.
: > "$WORK/failover.txt"
for trial in $(seq "$FAILOVERS"); do
    leader_port=$(walrus_leader)
    for i in 1 2 3; do [ "${W_HTTP[$i]}" = "$leader_port" ] && victim=$i; done
    survivor=$(( victim % 3 + 1 ))
    start=$(date +%s%N)
    kill -9 "${W_PID[$victim]}"
    until curl -sf -m 10 -X PUT "http://127.0.0.1:${W_HTTP[$survivor]}/kv/failover-$trial" -d x >/dev/null; do sleep 0.01; done
    echo $(( ($(date +%s%N) - start) / 1000000 )) >> "$WORK/failover.txt"
    start_walrus_node "$victim"
    wait_port "${W_HTTP[$victim]}"
    sleep 2
done

python3 - "$WORK" "$ROUNDS" "$W_THREADS" "$STAT_START" "$(cpu_times)" <<'PY'
import glob, json, statistics, sys
work, rounds, threads = sys.argv[1], sys.argv[2], sys.argv[3]
# /proc/stat's cpu line: user nice system idle iowait irq softirq steal ...
start, end = ([int(v) for v in line.split()[1:]] for line in sys.argv[4:6])
delta = [b - a for a, b in zip(start, end)]
steal = 100 * delta[7] / max(1, sum(delta[:8]))
results = {}
for path in glob.glob(f"{work}/result-*.json"):
    name, conns, _ = path.split("/result-")[1].rsplit("-", 2)
    op = json.load(open(path))["ops"][0]
    results.setdefault((name, int(conns)), []).append(
        (op["ops_per_sec"], op["latency"]["p50_us"], op["latency"]["p99_us"], op["errors"]))
def row(name, conns):
    rows = results[(name, conns)]
    return (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows),
            statistics.median(r[2] for r in rows), sum(r[3] for r in rows))
print(f"Medians of {rounds} alternating rounds; 3 walrus nodes (--threads {threads}) vs 3 etcd 3.4 "
      f"nodes on one machine; load generator: walrus bench http, 100-byte values; "
      f"CPU steal during the run {steal:.1f} %.\n")
print("| load | connections | walrus req/s | walrus p50 / p99 | etcd req/s | etcd p50 / p99 | walrus ÷ etcd |")
print("|---|---:|---:|---:|---:|---:|---:|")
for label, w, e, conns in [
    ("PUT to the leader", "walrus-PUT-leader", "etcd-PUT-leader", 1),
    ("PUT to the leader", "walrus-PUT-leader", "etcd-PUT-leader", 64),
    ("PUT to every node", "walrus-PUT-any", "etcd-PUT-any", 1),
    ("PUT to every node", "walrus-PUT-any", "etcd-PUT-any", 64),
    ("linearizable GET, every node", "walrus-GET-any", "etcd-GET-any", 64),
]:
    wr, wp50, wp99, werr = row(w, conns)
    er, ep50, ep99, eerr = row(e, conns)
    print(f"| {label} | {conns} | {wr:,.0f} | {wp50:.0f} / {wp99:.0f} µs | {er:,.0f} | {ep50:.0f} / {ep99:.0f} µs | {wr / er:.2f}× |"
          + (f" errors: walrus {werr}, etcd {eerr}" if werr or eerr else ""))
for conns in (1, 64):
    single = row("single-PUT", conns)[0]
    leader = row("walrus-PUT-leader", conns)[0]
    print(f"\nCluster PUT to the leader at {conns} connection(s): {leader:,.0f}/s, "
          f"{leader / single:.2f}× a single walrus node in the same run ({single:,.0f}/s).")
failovers = sorted(int(line) for line in open(f"{work}/failover.txt"))
print(f"\nkill -9 of the walrus leader to the first acknowledged write through a survivor: "
      f"median {statistics.median(failovers)} ms over {len(failovers)} trials ({failovers} ms).")
PY
