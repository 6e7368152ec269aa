#!/usr/bin/env bash
# `walrus bench store` several times; prints the median of each figure, since
# one run on a shared virtual disk can be off by 2x either way.
#   bench/store.sh [runs, default 3] [extra flags for walrus bench store]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
shift || true
. bench/common.sh
walrus_binary  # WALRUS=path/to/walrus skips the build
work_dir store-bench  # on a real disk: /tmp may be tmpfs, where fsync is free
for run in $(seq "$RUNS"); do
    "$WALRUS" bench store --json --dir "$WORK/data" "$@" > "$WORK/run-$run.json" 2>/dev/null
done
python3 - "$WORK" "$RUNS" <<'PY'
import glob, json, statistics, sys
work, runs = sys.argv[1], sys.argv[2]
reports = [json.load(open(path)) for path in sorted(glob.glob(f"{work}/run-*.json"))]
def median(values):
    return statistics.median(values)
print(f"Medians of {runs} runs of `walrus bench store`.\n")
print("| run | writers | writes/s | p50 | p99 | p999 | writes per sync | vs original (median of per-run ratios) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for index, row in enumerate(reports[0]["rows"]):
    same = [report["rows"][index] for report in reports]
    rate = median(r["ops_per_sec"] for r in same)
    lat = lambda field: median(r["latency"][field] for r in same)
    per_sync = "" if row["writes_per_sync"] is None else f"{median(r['writes_per_sync'] for r in same):.1f}"
    ratio = "" if row["ratio"] is None else f"{median(r['ratio'] for r in same):.2f}×"
    print(f"| {row['name']} | {row['concurrency']} | {rate:,.0f} | {lat('p50_us'):.2f} µs | {lat('p99_us'):.2f} µs | {lat('p999_us'):.1f} µs | {per_sync} | {ratio} |")
extended = [report["extended"] for report in reports if report.get("extended")]
if extended:
    get = lambda field: median(e[field] for e in extended)
    ratio = median(e["p99_during_snapshot_us"] / e["p99_without_snapshot_us"] for e in extended)
    print("\n| measurement | median |\n|---|---:|")
    print(f"| replay of {extended[0]['replay_records']:,} records | {get('replay_seconds'):.2f} s ({get('replay_records_per_sec')/1e6:.2f} M records/s) |")
    print(f"| write a snapshot of {extended[0]['snapshot_keys']:,} keys | {get('snapshot_write_seconds'):.2f} s |")
    print(f"| open with a {extended[0]['snapshot_keys']:,}-key snapshot | {get('open_with_snapshot_seconds'):.3f} s |")
    print(f"| MemStore RAM per key (14-byte keys, 100-byte values) | {get('memstore_bytes_per_key'):.0f} bytes |")
    print(f"| p99 write, 8 writers, no snapshot | {get('p99_without_snapshot_us'):.0f} µs |")
    print(f"| p99 write, 8 writers, during a snapshot | {get('p99_during_snapshot_us'):.0f} µs ({ratio:.2f}× the p99 without, median of per-run ratios) |")
PY
