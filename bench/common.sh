# Shared by the bench/*.sh scripts (sourced, not run): tool checks, the walrus
# binary, a work directory on a real disk, free loopback ports, and stopping
# every started server on exit.

need() { command -v "$1" >/dev/null 2>&1; }

# Sets WALRUS: the given binary, or a fresh release build.
walrus_binary() {
    if [ -z "${WALRUS:-}" ]; then
        cargo build --release -q --bin walrus
        WALRUS=${CARGO_TARGET_DIR:-$PWD/target}/release/walrus
    fi
}

# Sets WORK under $BENCH_DIR (default: this checkout, a real disk; /tmp may be
# tmpfs, where fsync is free) and arranges for PIDS to be stopped and WORK
# removed on exit (KEEP=1 keeps it).
work_dir() {
    WORK=$(mktemp -d -p "${BENCH_DIR:-$PWD}" "$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until something accepts TCP connections on 127.0.0.1:$1.
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
