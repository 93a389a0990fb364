#!/usr/bin/env bash
# Scale-out on one machine: the single-instance stack against two of each service,
# on one Redis and over a 3-node Redis Cluster, in one run, driven alike:
#
#   scripts/bench/scale.sh [OUT_DIR]
#
# Builds the release binaries, then for each round starts deploy/local/stack.sh
# with one of each service and one Redis, drives it, stops it, and does the same
# with PRESENCE_STACK_INSTANCES=2, then with PRESENCE_STACK_INSTANCES=2
# PRESENCE_STACK_REDIS=cluster (the middle layout tells what the instances cost
# from what the cluster costs). Each drive is
# presence-loadgen's closed loop of enters of distinct tickets at 64 connections,
# spread over every gateway (--url takes PRESENCE_URLS), after a 5 s warm-up.
# Prints a markdown table: the rate, p50 and p99, and the CPU per scan of each kind
# of process (the instances of a kind added up), read from /proc around the drive
# and divided by the scans sent; for Redis also each node's own (a venue's stats
# keys share one hash slot, so in a cluster the node serving it does more than the
# others: the difference is what the stats cost). Reports, logs and stack directories stay in
# OUT_DIR (default a new temporary directory). Loopback only.
#
#   PRESENCE_BENCH_SECONDS  measured seconds of each drive (default 20)
#   PRESENCE_BENCH_ROUNDS   rounds, each driving the three layouts in turn (default 2):
#                           the spread between rounds shows how noisy the machine is
#   PRESENCE_TANSU_STORAGE  the stacks' broker storage (deploy/local/stack.sh)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=proc.sh
. "$repo/scripts/bench/proc.sh"
out=${1:-$(mktemp -d -t presence-scale.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
seconds=${PRESENCE_BENCH_SECONDS:-20}
rounds=${PRESENCE_BENCH_ROUNDS:-2}
readonly CONNECTIONS=64
readonly KINDS=(gateway validator registry redis tansu)
bin=${CARGO_TARGET_DIR:-$repo/target}/release
key=bench-$RANDOM$RANDOM
ticks=$(getconf CLK_TCK)
rows=()
stack_dir=

log() {
    printf '==> %s\n' "$*" >&2
}

stop_stack() {
    if [ -n "$stack_dir" ]; then
        "$repo/deploy/local/stack.sh" down "$stack_dir" >/dev/null 2>&1 || true
        stack_dir=
    fi
}
trap stop_stack EXIT

# Drives the stack of PRESENCE_STACK_INSTANCES=$1, PRESENCE_STACK_REDIS=$2 once,
# as round $3, and adds its row.
measure() {
    local instances=$1 redis=$2 run=$3 layout name stack_env driver sent file kind pid i
    layout="$instances of each, Redis $redis"
    name="$instances-$redis-$run"
    log "$name: stack.sh up with $instances of each service, Redis $redis"
    stack_env=$(PRESENCE_API_KEY=$key PRESENCE_BIN_DIR="$bin" PRESENCE_STACK_DIR="$out/$name" \
        PRESENCE_STACK_INSTANCES=$instances PRESENCE_STACK_REDIS=$redis \
        "$repo/deploy/local/stack.sh" up 2>"$out/$name-up.log")
    stack_dir="$out/$name"
    local PRESENCE_URLS
    eval "$stack_env"
    # Each process's kind, from the stack's pid files (gateway, gateway-2, ...).
    local pids=() kinds=()
    for file in "$stack_dir"/*.pid; do
        kind=$(basename "$file" .pid)
        pids+=("$(<"$file")")
        kinds+=("${kind%-[0-9]*}")
    done
    log "$name: presence-loadgen at $CONNECTIONS connections over $PRESENCE_URLS"
    PRESENCE_API_KEY=$key "$bin/presence-loadgen" --url "$PRESENCE_URLS" --json \
        --tickets 200000 --concurrency "$CONNECTIONS" --duration "${seconds}s" --warmup 5s \
        >"$out/$name.json" 2>"$out/$name.log" &
    driver=$!
    # The CPU of the drive alone, from the moment the generator's setup is done.
    wait_for_drive "$out/$name.log" "$driver"
    local before=()
    for pid in "${pids[@]}"; do before+=("$(cpu_ticks "$pid")"); done
    wait "$driver" || log "$name: loadgen did not pass (see $out/$name.json)"
    local -A micros=()
    local used redis_nodes=()
    for kind in "${KINDS[@]}"; do micros[$kind]=0; done
    for i in "${!pids[@]}"; do
        used=$((($(cpu_ticks "${pids[i]}") - before[i]) * 1000000 / ticks))
        micros[${kinds[i]}]=$((micros[${kinds[i]}] + used))
        [ "${kinds[i]}" = redis ] && redis_nodes+=("$used")
    done
    stop_stack
    sent=$(jq '.sent + .warmup.sent' "$out/$name.json")
    local per_node=()
    for used in "${redis_nodes[@]}"; do per_node+=("$((used / sent))"); done
    local row="| $layout | $run | $(jq -r '"\(.throughput_per_second | floor) | \(.latency_us.p50 / 1000) | \(.latency_us.p99 / 1000) | \(.http_codes | tostring)"' "$out/$name.json")"
    local own=0 all=0
    for kind in "${KINDS[@]}"; do
        row+=" | $((micros[$kind] / sent))"
        all=$((all + micros[$kind]))
        case $kind in gateway | validator | registry) own=$((own + micros[$kind])) ;; esac
    done
    rows+=("$row | $(IFS=/; echo "${per_node[*]}") | $((own / sent)) | $((all / sent)) |")
}

command -v jq >/dev/null || { echo "jq is required (apt-get install jq)" >&2; exit 1; }
cd "$repo"
log "building release binaries"
cargo build --release --all-features --bins -q \
    -p presence-gateway -p presence-validator -p presence-registry -p presence-loadgen

for ((run = 1; run <= rounds; run++)); do
    measure 1 server "$run"
    measure 2 server "$run"
    measure 2 cluster "$run"
done

printf '| layout | round | scans/s | p50 ms | p99 ms | HTTP codes | gateway µs | validator µs | registry µs | Redis µs | tansu µs | Redis per node µs | Presence µs | all µs |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n'
printf '%s\n' "${rows[@]}"
log "reports and logs in $out"
