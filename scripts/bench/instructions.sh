#!/usr/bin/env bash
# Instructions per scan, counted by valgrind's callgrind: exact and repeatable
# where wall time is not, so a change's effect on the CPU a scan costs can be
# read to the instruction. Builds the release harness (benches/instructions),
# then for each path runs its warm-up scans and `scans` measured scans under
# callgrind, keeping only the counts of the measured scans (the harness's
# `measured_scans`; every thread of the process), and prints instructions per
# scan and the functions with the most inclusive instructions.
#   scripts/bench/instructions.sh [scans=2000] [path...]
# Paths: validator-embedded, validator-redis, gateway (all three by default).
# validator-redis runs against a redis-server this script starts on a free
# loopback port (Redis's own CPU is not counted: it is another process).
# Logs are written as production writes them (PRESENCE_LOG_FORMAT=json, as the
# k8s manifests set it; RUST_LOG=info), to a file.
# Environment:
#   PRESENCE_LOG_FORMAT=json  text measures the default of a terminal instead
#   PRESENCE_INSTR_RUNS=1   runs of each path (two show whether the count repeats)
#   PRESENCE_INSTR_TOP=25   functions listed per path (0: none)
#   PRESENCE_INSTR_OUT=dir  where the profiles are kept (default: a temporary
#                           directory, removed); open one with callgrind_annotate
#                           or kcachegrind: <path>.<run>.out.2 is the measured part
#   PRESENCE_BIN_DIR=dir    use the presence-instructions binary there; no build
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
scans=${1:-2000}
shift || true
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(validator-embedded validator-redis gateway)
runs=${PRESENCE_INSTR_RUNS:-1}
top=${PRESENCE_INSTR_TOP:-25}
export PRESENCE_LOG_FORMAT=${PRESENCE_LOG_FORMAT:-json} RUST_LOG=${RUST_LOG:-info}

for tool in valgrind callgrind_annotate; do
    command -v "$tool" >/dev/null || { echo "needs $tool (Debian: apt-get install valgrind)" >&2; exit 2; }
done
if [ -n "${PRESENCE_BIN_DIR:-}" ]; then
    bin=$PRESENCE_BIN_DIR/presence-instructions
else
    cargo build --release -p presence-instructions --manifest-path "$root/Cargo.toml" >&2
    bin=${CARGO_TARGET_DIR:-$root/target}/release/presence-instructions
fi

work=$(mktemp -d)
out=${PRESENCE_INSTR_OUT:-$work/profiles}
mkdir -p "$out"
redis_pid=
cleanup() {
    [ -z "$redis_pid" ] || { kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT

# A private redis-server on a free loopback port, nothing kept on disk.
start_redis() {
    command -v redis-server >/dev/null || { echo "validator-redis needs redis-server" >&2; exit 2; }
    local port
    for _ in 1 2 3 4 5; do
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$work" \
            >"$work/redis.log" 2>&1 &
        redis_pid=$!
        for _ in $(seq 100); do
            redis-cli -p "$port" ping >/dev/null 2>&1 && { redis_url=redis://127.0.0.1:$port/0; return; }
            kill -0 "$redis_pid" 2>/dev/null || break
            sleep 0.05
        done
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=
    done
    echo "redis-server did not start: $(tail -n 3 "$work/redis.log")" >&2
    exit 1
}

redis_url=
for path in "${paths[@]}"; do
    case $path in
        validator-embedded | gateway) ;;
        validator-redis) [ -n "$redis_url" ] || start_redis ;;
        *) echo "unknown path $path (validator-embedded, validator-redis, gateway)" >&2; exit 2 ;;
    esac
done

echo "instructions per scan, $scans measured scans a run, $PRESENCE_LOG_FORMAT logs ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'), valgrind $(valgrind --version | sed 's/valgrind-//'))"
for path in "${paths[@]}"; do
    for run in $(seq "$runs"); do
        [ "$path" != validator-redis ] || redis-cli -u "$redis_url" flushall >/dev/null
        profile=$out/$path.$run.out
        # Dumps as `measured_scans` starts (.1: the setup and warm-up) and as the
        # scans end (.2: the measured scans); the final dump holds the rest.
        if ! valgrind --tool=callgrind --callgrind-out-file="$profile" \
            --dump-before='*::measured_scans' --dump-before='*::measurement_ends' \
            "$bin" "$path" --scans "$scans" ${redis_url:+--redis-url "$redis_url"} \
            >"$work/stdout" 2>"$work/log"; then
            echo "$path failed:" >&2
            tail -n 20 "$work/log" >&2
            exit 1
        fi
        measured=$profile.2
        [ -f "$measured" ] || { echo "$path: no measured profile ($measured); were measured_scans and measurement_ends called?" >&2; exit 1; }
        total=$(callgrind_annotate "$measured" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
        echo "$path run $run: $((total / scans)) instructions per scan ($total in all; $(cat "$work/stdout"))"
        if [ "$run" = 1 ] && [ "$top" -gt 0 ]; then
            for kind in inclusive self; do
                echo "  top $top functions by $kind instructions per scan:"
                callgrind_annotate --inclusive="$([ $kind = inclusive ] && echo yes || echo no)" \
                    --auto=no --threshold=100 "$measured" 2>/dev/null \
                    | python3 "$root/scripts/bench/callgrind_top.py" "$total" "$scans" "$top"
            done
        fi
    done
done
