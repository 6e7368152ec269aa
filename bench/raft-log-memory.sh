#!/usr/bin/env bash
# The Raft log's memory under large values: a 3-node cluster on loopback takes
# 6,000 PUTs of 64 KiB over 48 keys (six curl loops through node 1), so the
# state stays small (3 MiB) while 375 MiB of log goes by; prints each node's
# peak RSS (VmHWM) and the wall time. Compare binaries side by side:
#   bench/raft-log-memory.sh OLD_BINARY target/release/walrus
set -euo pipefail
binaries=("${@:-target/release/walrus}")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for binary in "${binaries[@]}"; do
    dir=$(mktemp -d)
    head -c 65536 /dev/zero | tr '\0' v > "$dir/value"
    ports=($(free_port) $(free_port) $(free_port))
    peers="1=127.0.0.1:${ports[0]},2=127.0.0.1:${ports[1]},3=127.0.0.1:${ports[2]}"
    pids=()
    for id in 1 2 3; do
        "$binary" serve --node-id "$id" --peers "$peers" --listen "127.0.0.1:${ports[$((id - 1))]}" \
            --data-dir "$dir/node-$id" > "$dir/log-$id" 2>&1 &
        pids+=($!)
    done
    for _ in $(seq 1 100); do
        curl -sf "localhost:${ports[0]}/ready" > /dev/null && break
        sleep 0.1
    done
    started=$(date +%s.%N)
    writers=()
    for writer in 1 2 3 4 5 6; do
        (for index in $(seq 1 1000); do
            curl -s -o /dev/null -X PUT --data-binary "@$dir/value" \
                "localhost:${ports[0]}/kv/big-$writer-$((index % 8))"
        done) &
        writers+=($!)
    done
    wait "${writers[@]}"
    finished=$(date +%s.%N)
    peaks=""
    for pid in "${pids[@]}"; do
        peaks+="$(awk '/VmHWM/ {printf "%d", $2 / 1024}' "/proc/$pid/status") "
    done
    printf '%s: peak RSS per node (MiB): %s; %.1f s\n' "$binary" "$peaks" "$(echo "$finished - $started" | bc)"
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
    rm -rf "$dir"
done
