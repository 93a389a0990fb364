#!/usr/bin/env bash
# Resident memory of the distributed services under load: the figures behind the
# Kubernetes memory requests (docs/operations.md, "Memory requests").
#
#   scripts/bench/service-memory.sh [OUT_DIR]
#
# Builds the image (deploy/docker/build-local.sh; or takes PRESENCE_IMAGE) and
# presence-loadgen, starts deploy/local/stack.sh with the services in containers of
# that image, as Kubernetes runs them, then with presence-loadgen uploads PRESENCE_BENCH_TICKETS tickets (default 200,000) in one
# inventory request and drives enters at 64 connections for PRESENCE_BENCH_SECONDS
# (default 30), sampling each service's resident memory (VmRSS) every second.
# Prints a markdown table: per service, RSS once ready (idle), the most during the
# drive (scans only), and the peak of the whole run (VmHWM: the upload included).
# Loopback only; the loadgen report and the stack's logs stay in OUT_DIR.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=proc.sh
. "$repo/scripts/bench/proc.sh"
out=${1:-$(mktemp -d -t presence-memory.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
seconds=${PRESENCE_BENCH_SECONDS:-30}
tickets=${PRESENCE_BENCH_TICKETS:-200000}
bin=${CARGO_TARGET_DIR:-$repo/target}/release
key=memory-$RANDOM$RANDOM
image=${PRESENCE_IMAGE:-localhost/presence:memory}
# shellcheck source=../../deploy/docker/podman.sh
. "$repo/deploy/docker/podman.sh"
readonly SERVICES=(gateway validator registry)

log() {
    printf '==> %s\n' "$*" >&2
}

mib() {
    awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'
}

peak_kib() {
    awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}

cd "$repo"
if [ -z "${PRESENCE_IMAGE:-}" ]; then
    deploy/docker/build-local.sh "$image"
fi
log "building presence-loadgen"
# LIBZ_SYS_STATIC as for the image, so that neither build invalidates the other.
LIBZ_SYS_STATIC=1 cargo build --release --locked -q -p presence-loadgen

log "deploy/local/stack.sh up, the services from $image"
stack_env=$(PRESENCE_API_KEY=$key PRESENCE_IMAGE="$image" PRESENCE_STACK_DIR="$out/stack" \
    deploy/local/stack.sh up)
eval "$stack_env"
trap 'deploy/local/stack.sh down "$PRESENCE_STACK_DIR" >/dev/null 2>&1 || true' EXIT
declare -A pid idle most
for name in "${SERVICES[@]}"; do
    # The service's own process (PID 1 of its container), as the host sees it.
    pid[$name]=$("${podman[@]}" inspect --format '{{.State.Pid}}' "$(<"$PRESENCE_STACK_DIR/$name.container")")
    idle[$name]=$(rss_kib "${pid[$name]}")
    most[$name]=0
done

log "loadgen: $tickets tickets, then enters at 64 connections for ${seconds}s"
PRESENCE_API_KEY=$key "$bin/presence-loadgen" --url "$PRESENCE_URL" --json \
    --tickets "$tickets" --inventory-batch "$tickets" --concurrency 64 \
    --duration "${seconds}s" --warmup 5s >"$out/loadgen.json" 2>"$out/loadgen.log" &
driver=$!
# Only the drive's samples: from the moment the generator's setup is done.
wait_for_drive "$out/loadgen.log" "$driver"
while kill -0 "$driver" 2>/dev/null; do
    for name in "${SERVICES[@]}"; do
        rss=$(rss_kib "${pid[$name]}")
        ((rss > most[$name])) && most[$name]=$rss
    done
    sleep 1
done
wait "$driver" || log "loadgen did not pass (see $out/loadgen.json)"

echo
echo "$(nproc) cores, commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'); $tickets tickets, enters at 64 connections for ${seconds}s: $(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print("%.0f/s, codes %s" % (r["throughput_per_second"], r["http_codes"]))' "$out/loadgen.json")"
echo
echo "| service | RSS once ready | RSS under scan load (most) | peak, upload included (VmHWM) |"
echo "|---|---|---|---|"
for name in "${SERVICES[@]}"; do
    echo "| presence-$name | $(mib "${idle[$name]}") MiB | $(mib "${most[$name]}") MiB | $(mib "$(peak_kib "${pid[$name]}")") MiB |"
done
log "report and logs: $out"
