#!/usr/bin/env bash
# A throughput figure of the embedded server: builds the release binary, starts
# `presence serve` on a free port in a fresh data dir, and runs wrk-enter.sh
# against it (see there for the arguments after the first). The per-key rate
# limit is off (PRESENCE_KEY_RATE=0, the default, whatever the environment says):
# the run measures the server, not its limit.
#   scripts/bench/embedded-wrk.sh [connections=64] [seconds=20] [tickets-per-thread=400000]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cargo build --release -p presence --manifest-path "$root/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$root/target}/release/presence
work=$(mktemp -d)
key=bench-$RANDOM$RANDOM
PRESENCE_KEY_RATE=0 "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" --api-key "$key" >"$work/out" 2>"$work/log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q PRESENCE_URL= "$work/out" && break; sleep 0.1; done
url=$(sed -n 's/^PRESENCE_URL=//p' "$work/out")
"$root/scripts/bench/wrk-enter.sh" "$url" "$key" "$@"
echo "server RSS: $(ps -o rss= -p $server) KiB"
