#!/usr/bin/env bash
# bench/scenarios.sh — the ferryd benchmark runs recorded in bench/RESULTS.md.
# Starts a Release ferryd on 127.0.0.1:PORT with bench/conf/bench.conf and a
# fresh spool on the same disk as the checkout, runs ferry-bench against it,
# and stops it. Loopback only; every run is bounded by ferry-bench --timeout.
#
#   bench/scenarios.sh [accept|scale|idle|fsync|all]
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
port=${FERRY_BENCH_PORT:-2599}
build=${FERRY_BUILD_DIR:-build}
work=$(mktemp -d "$PWD/.bench-XXXXXX")
pid=
cleanup() {
	[[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

start_ferryd() {
	rm -rf "$work/spool"
	sed "s|^\[limits\]|[server]\nlisten = 127.0.0.1:$port\n\n[spool]\ndirectory = $work/spool\n\n[limits]|" \
		bench/conf/bench.conf >"$work/ferry.conf"
	"$build/ferryd" -c "$work/ferry.conf" 2>"$work/ferryd.log" &
	pid=$!
	for _ in $(seq 100); do
		(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0
		sleep 0.05
	done
	echo "ferryd did not start:" >&2
	cat "$work/ferryd.log" >&2
	exit 1
}

stop_ferryd() {
	kill -TERM "$pid"
	wait "$pid" || true
	pid=
}

machine() {
	echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) CPUs, $(uname -r)," \
		"$(findmnt -no FSTYPE -T .) spool, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
}

# The disk's rate of single appending fdatasyncs, for context.
fsync_rate() {
	python3 - "$work" <<'PY'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
n, t0 = 0, time.time()
while time.time() - t0 < 3:
    os.write(fd, b"x" * 1024)
    os.fdatasync(fd)
    n += 1
os.close(fd)
os.unlink(path)
print(f"fsync probe: {n / (time.time() - t0):.0f} appending fdatasync/s (1 KiB each, one thread)")
PY
}

bench() {
	echo "\$ ferry-bench $*"
	"$build/ferry-bench" "$@" --timeout 120 "127.0.0.1:$port"
}

machine
case $what in fsync | all) fsync_rate ;; esac
case $what in accept | all)
	start_ferryd
	bench -c 100 -n 20000 -s 1024
	bench -c 100 -n 20000 -s 1024 --no-pipelining
	stop_ferryd
	;;
esac
case $what in scale | all)
	start_ferryd
	for c in 100 200 1000; do bench -c "$c" -n 20000 -s 1024; done
	stop_ferryd
	;;
esac
case $what in idle | all)
	start_ferryd # fresh: resident memory only grows
	"$build/ferry-bench" idle -c 10000 --pid "$pid" "127.0.0.1:$port"
	stop_ferryd
	;;
esac
