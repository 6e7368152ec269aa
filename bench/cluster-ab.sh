#!/usr/bin/env bash
# Two walrus binaries against each other on the cluster's write path, in turn:
# a fresh 3-node cluster (fsync always, one worker thread per node, as
# `walrus dev-cluster` gives them on 2 cores) per run, PUT of 100-byte values at
# 64 connections to the leader for DURATION seconds. Prints each run's rate
# and the medians. Everything listens on 127.0.0.1; data lives under
# $BENCH_DIR (default: this checkout, a real disk). Usage:
#   bench/cluster-ab.sh OLD_BINARY NEW_BINARY [rounds, default 3] [seconds, default 8]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: bench/cluster-ab.sh OLD_BINARY NEW_BINARY [rounds] [seconds]" >&2
    exit 2
fi
OLD=$1 NEW=$2 ROUNDS=${3:-3} DURATION=${4:-8}
. bench/common.sh
work_dir cluster-ab

leader_address() { # http port of any node -> the leader's address, once known
    local port=$1 address
    for _ in $(seq 100); do
        address=$(curl -s "127.0.0.1:$port/cluster/status" | python3 -c '
import json, sys
try:
    print(json.load(sys.stdin).get("leader_address") or "")
except ValueError:
    print("")' || true)
        [ -n "$address" ] && { echo "$address"; return 0; }
        sleep 0.2
    done
    echo "no leader on port $port" >&2
    exit 1
}

run() { # binary label round
    local binary=$1 label=$2 round=$3 dir="$WORK/$2-$3" ports=() pids=() peers
    for i in 1 2 3; do ports[i]=$(free_port); done
    peers="1=127.0.0.1:${ports[1]},2=127.0.0.1:${ports[2]},3=127.0.0.1:${ports[3]}"
    for i in 1 2 3; do
        "$binary" serve --node-id "$i" --peers "$peers" --listen "127.0.0.1:${ports[i]}" \
            --threads 1 --data-dir "$dir/node-$i" 2>"$dir-node-$i.log" & pids+=($!)
        PIDS+=($!)
    done
    "$binary" bench http --json --endpoints "http://$(leader_address "${ports[1]}")" \
        --connections 64 --duration "$DURATION" --warmup 1 --style walrus --mix 1:0 \
        --value-size 100 > "$WORK/result-$label-$round.json"
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
    rm -rf "$dir"
}

for round in $(seq "$ROUNDS"); do
    run "$OLD" old "$round"
    run "$NEW" new "$round"
done
python3 - "$WORK" "$ROUNDS" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
rate = lambda label, r: json.load(open(f"{work}/result-{label}-{r}.json"))["ops"][0]["ops_per_sec"]
print("| run | old PUT/s | new PUT/s | new ÷ old |")
print("|---:|---:|---:|---:|")
for r in range(1, rounds + 1):
    old, new = rate("old", r), rate("new", r)
    print(f"| {r} | {old:,.0f} | {new:,.0f} | {new / old:.2f}× |")
old = statistics.median(rate("old", r) for r in range(1, rounds + 1))
new = statistics.median(rate("new", r) for r in range(1, rounds + 1))
print(f"| median | {old:,.0f} | {new:,.0f} | {new / old:.2f}× |")
EOF
