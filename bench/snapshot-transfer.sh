#!/usr/bin/env bash
# What sending a snapshot to a new node costs: a one-node cluster is filled
# with large values and compacted into one snapshot, then an empty node 2 is
# added as a learner and catches up from that snapshot. Reports the snapshot's
# size, how long add-learner took, the leader's resident memory growth while it
# sent, and the new node's peak resident memory.
#
#   bench/snapshot-transfer.sh                 # this checkout's release build
#   WALRUS=path/to/walrus bench/snapshot-transfer.sh
#   ROUNDS=3 VALUE_SIZE=65536 KEYS=4000 bench/snapshot-transfer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
walrus_binary
work_dir snapshot-transfer
ROUNDS=${ROUNDS:-1}
VALUE_SIZE=${VALUE_SIZE:-65536}
KEYS=${KEYS:-4000}

kib() { awk -v field="$2:" '$1 == field { print $2 }' "/proc/$1/status"; }

round() {
    local dir=$WORK/round-$1 p1 p2 r1 r2 leader follower
    mkdir -p "$dir"
    p1=$(free_port); p2=$(free_port); r1=$(free_port); r2=$(free_port)
    "$WALRUS" serve --node-id 1 --peers "1=127.0.0.1:$p1" --listen "127.0.0.1:$p1" \
        --resp-listen "127.0.0.1:$r1" --data-dir "$dir/d1" 2>"$dir/n1.log" &
    leader=$!; PIDS+=("$leader")
    wait_port "$p1"
    until curl -sf "http://127.0.0.1:$p1/ready" >/dev/null; do sleep 0.1; done
    # Every key written at least once: KEYS sequential writes, then load.
    "$WALRUS" bench http --endpoints "http://127.0.0.1:$p1" --mix 1:0 --connections 16 \
        --value-size "$VALUE_SIZE" --keys "$KEYS" --duration 6 --warmup 0 >/dev/null
    local compacted
    compacted=$(curl -sf -X POST "http://127.0.0.1:$p1/admin/compact")
    local before
    before=$(kib "$leader" VmRSS)
    "$WALRUS" serve --node-id 2 --listen "127.0.0.1:$p2" --resp-listen "127.0.0.1:$r2" \
        --data-dir "$dir/d2" 2>"$dir/n2.log" &
    follower=$!; PIDS+=("$follower")
    wait_port "$p2"
    local started ended
    started=$(date +%s.%N)
    "$WALRUS" cluster add-learner "2=127.0.0.1:$p2" --endpoints "http://127.0.0.1:$p1" >/dev/null
    ended=$(date +%s.%N)
    local snapshot_bytes
    snapshot_bytes=$(echo "$compacted" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
    printf '%s\t%d MiB\t%.2f s\t%d MiB\t%d MiB\t%d MiB\n' "$1" \
        $((snapshot_bytes >> 20)) "$(python3 -c "print($ended - $started)")" \
        $(( ($(kib "$leader" VmHWM) - before) >> 10 )) $(( $(kib "$leader" VmHWM) >> 10 )) \
        $(( $(kib "$follower" VmHWM) >> 10 ))
    kill "$leader" "$follower"; wait "$leader" "$follower" 2>/dev/null || true
}

printf 'round\tsnapshot\tadd-learner\tleader peak growth\tleader peak\tnew node peak\n'
for round_number in $(seq "$ROUNDS"); do round "$round_number"; done
