#!/usr/bin/env bash
# Profiles one load scenario against a fresh single-node raftkine and prints whose code the
# server's CPU went to (cpu_owners.py beside this script). Needs `perf` (Debian: linux-perf)
# and python3, and a release build of both binaries (`cargo build --release --bins`).
#
#   bench/profile/profile.sh put --key-size 8 --val-size 256 --sequential-keys \
#       --key-space-size 30000 --total 30000 --conns 100 --clients 1000
#
# The arguments are a raftkine-bench scenario with its flags (see `raftkine-bench --help`); give
# the flags of the `make bench` row to profile (bench/src/compare/plan.rs). Like the row, the
# profile is of a fresh server. Environment: RAFTKINE_BIN (default target/release/raftkine),
# PERF_FREQ (default 1000 Hz), KEEP=DIR to keep perf.data and the perf script output in DIR,
# WARMUP=1 to run the scenario for 2 s before profiling it (a warmed-up put rewrites the keys
# the warm-up wrote, which no `make bench` put row does).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
server=${RAFTKINE_BIN:-$root/target/release/raftkine}
bench=$root/target/release/raftkine-bench
freq=${PERF_FREQ:-1000}
[ $# -gt 0 ] || { sed -n '2,14p' "$0"; exit 2; }
command -v perf >/dev/null || { echo "perf is not installed (Debian: apt-get install linux-perf)"; exit 2; }
[ -x "$server" ] && [ -x "$bench" ] || { echo "build first: cargo build --release --bins"; exit 2; }

work=${KEEP:-$(mktemp -d)}
mkdir -p "$work"
port=$((24000 + RANDOM % 1000))
"$server" --storage-dir "$work/data" --listen "127.0.0.1:$port" \
    --peer-listen "tcp://127.0.0.1:$((port + 1000))" > "$work/server.log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
ready=
for _ in $(seq 100); do
    if "$bench" --endpoints "127.0.0.1:$port" range probe --total 1 >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.1
done
[ -n "$ready" ] || { echo "raftkine did not answer on 127.0.0.1:$port within 10 s:"; tail -20 "$work/server.log"; exit 1; }

if [ "${WARMUP:-0}" = 1 ]; then
    "$bench" --endpoints "127.0.0.1:$port" "$@" --max-seconds 2 >/dev/null 2>&1 || true
fi
perf record -q -F "$freq" --call-graph dwarf,32768 -p "$pid" -o "$work/perf.data" 2>/dev/null &
perf_pid=$!
sleep 0.5
"$bench" --endpoints "127.0.0.1:$port" "$@" | grep -E "Requests/sec|Average|p99:" || true
kill -INT "$perf_pid"
wait "$perf_pid" || true
perf script -i "$work/perf.data" 2>/dev/null > "$work/perf.txt"
python3 "$here/cpu_owners.py" < "$work/perf.txt"
