#!/usr/bin/env bash
# Power cuts of the real binary on LazyFS (see power_cut.py): builds LazyFS
# from a checkout of https://github.com/dsrhaslab/lazyfs against Debian's
# libfuse3, spdlog and toml11, mounts three instances under a work directory,
# and runs the single, cluster-all and cluster-one modes. Not part of CI: CI
# cannot fetch LazyFS's source. Needs root (FUSE mounts with allow_other).
#
#   tests/lazyfs/run.sh LAZYFS_SOURCE [ROUNDS] [-- more walrus serve flags]
#
# WALRUS=path uses that binary instead of a fresh release build; KEEP=1 keeps
# the work directory (the nodes' logs are in it); MODES picks modes (default
# "single cluster-all cluster-one"); CACHE sets each LazyFS cache (default
# 1GB, allocated up front). LazyFS runs without eviction: its LRU eviction
# aborts (std::out_of_range) under this load, and a cache that fills up
# writes around itself, so power_cut.py stops a mode whose cache gets near
# full rather than report what LazyFS did as walrus's doing.
set -euo pipefail

source=${1:?usage: tests/lazyfs/run.sh LAZYFS_SOURCE [ROUNDS] [-- walrus serve flags]}
shift
rounds=6
if [ $# -gt 0 ] && [ "$1" != "--" ]; then rounds=$1; shift; fi
[ "${1:-}" = "--" ] && shift
here=$(cd "$(dirname "$0")" && pwd)

if [ -z "${WALRUS:-}" ]; then
    cargo build --release -q --bin walrus
    WALRUS=${CARGO_TARGET_DIR:-$PWD/target}/release/walrus
fi

if ! command -v cmake >/dev/null || [ ! -e /usr/include/fuse3/fuse.h ] \
    || [ ! -d /usr/include/spdlog ] || [ ! -d /usr/include/toml11 ]; then
    apt-get update -q && apt-get install -y -q cmake g++ fuse3 libfuse3-dev libspdlog-dev libtoml11-dev
fi

# LazyFS's CMake files fetch spdlog and toml11 from GitHub; build a copy that
# takes Debian's packages instead.
build=$(mktemp -d)
cp -r "$source"/. "$build"
sed -i -e '/^include(FetchContent)/,/^FetchContent_MakeAvailable(spdlog)/c\find_package(toml11 REQUIRED)\nfind_package(spdlog REQUIRED)' \
    -e '/set_target_properties(spdlog/d' \
    -e 's/target_link_libraries(pcache toml11::toml11 spdlog)/target_link_libraries(pcache toml11::toml11 spdlog::spdlog)/' \
    "$build/libs/libpcache/CMakeLists.txt"
sed -i 's/target_link_libraries(${CMAKE_PROJECT_NAME} fuse3 Threads::Threads libpcache.so)/find_package(spdlog REQUIRED)\n&\ntarget_link_libraries(${CMAKE_PROJECT_NAME} spdlog::spdlog)/' \
    "$build/lazyfs/CMakeLists.txt"
(cd "$build/libs/libpcache" && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build -j2 >/dev/null)
(cd "$build/lazyfs" && cmake -S . -B build -DLAZYFS_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build -j2 >/dev/null)
lazyfs=$build/lazyfs/build/lazyfs
grep -q '^user_allow_other' /etc/fuse.conf 2>/dev/null || echo user_allow_other >> /etc/fuse.conf

# On the real disk: LazyFS passes synced data through to it.
work=$(mktemp -d -p "${BENCH_DIR:-$PWD}" lazyfs.XXXXXX)
mounts=()
lazyfs_pids=()
cleanup() {
    for spec in "${mounts[@]}"; do
        fusermount3 -u "${spec%%:*}" 2>/dev/null || umount -l "${spec%%:*}" 2>/dev/null || true
    done
    for pid in "${lazyfs_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$build"
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
for index in 1 2 3; do
    dir=$work/lazyfs-$index
    mkdir -p "$dir/mnt" "$dir/root"
    cat > "$dir/config.toml" <<EOF
[faults]
fifo_path="$dir/faults.fifo"
fifo_path_completed="$dir/done.fifo"
[cache]
apply_eviction=false
[cache.simple]
custom_size="${CACHE:-1GB}"
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile=""
EOF
    # Its log goes to standard output, which it flushes line by line (a log
    # file it buffers), so power_cut.py can read its answers there.
    "$lazyfs" "$dir/mnt" --config-path "$dir/config.toml" -o allow_other -o modules=subdir \
        -o "subdir=$dir/root" -f > "$dir/lazyfs.out" 2>&1 &
    lazyfs_pids+=($!)
    mounts+=("$dir/mnt:$dir/faults.fifo:$dir/done.fifo:$dir/lazyfs.out")
done
for spec in "${mounts[@]}"; do
    for _ in $(seq 300); do grep -q " ${spec%%:*} fuse" /proc/mounts && break; sleep 0.1; done
    grep -q " ${spec%%:*} fuse" /proc/mounts || { echo "LazyFS did not mount ${spec%%:*}" >&2; exit 1; }
done

mkdir -p "$work/logs"
status=0
for mode in ${MODES:-single cluster-all cluster-one}; do
    echo "== $mode"
    case $mode in
        cluster-one) given=$(IFS=,; echo "${mounts[*]}") ;;
        *) given=${mounts[0]} ;;
    esac
    python3 "$here/power_cut.py" "$mode" --walrus "$WALRUS" --mounts "$given" \
        --logs "$work/logs" --rounds "$rounds" -- "$@" || status=1
done
exit $status
