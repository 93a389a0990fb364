#!/usr/bin/env bash
# Tests deploy/local/stack.sh as a developer uses it: `up`, inventory, a device and
# scans through the gateway, the state seen in Redis, `status`, `down`, and then
# that no process the stack started is left. Also: `up` refuses without a key and
# next to a running stack, a service that fails at start leaves nothing behind,
# and a scaled-out stack (PRESENCE_STACK_INSTANCES=2 over a 3-node Redis Cluster)
# decides a ticket's scans the same through either gateway.
#
#   deploy/local/test-stack.sh                             # builds the release binaries
#   PRESENCE_BIN_DIR=target/debug deploy/local/test-stack.sh # reuses built ones
#   PRESENCE_IMAGE=localhost/presence:dev deploy/local/test-stack.sh
#                      # the services from the image (deploy/docker/build-local.sh),
#                      # also checking that each container runs as 65532, read-only,
#                      # without capabilities
#
# Needs what stack.sh needs (python3, curl, redis-server, tansu); Linux, for the
# check that no process holds a file of the stack open.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

stack=deploy/local/stack.sh
# shellcheck source=../docker/podman.sh
. deploy/docker/podman.sh
# A developer's shell may export settings the services read; the test sets its own.
unset PRESENCE_API_KEY PRESENCE_API_KEYS_FILE PRESENCE_STACK_DIR PRESENCE_TOPIC_PREFIX \
    PRESENCE_PARTITIONS PRESENCE_REPLY_PARTITIONS PRESENCE_INSTANCE_ID PRESENCE_KAFKA_BROKERS \
    PRESENCE_REDIS_URL PRESENCE_REDIS_CLUSTER PRESENCE_URL PRESENCE_URLS \
    PRESENCE_STACK_INSTANCES PRESENCE_STACK_REDIS
# Physical path: it is compared with the targets of /proc/*/fd links.
work=$(cd "$(mktemp -d "${TMPDIR:-/tmp}/presence-stack-test.XXXXXX")" && pwd -P)
checks=0

clean_up() {
    local status=$? stack_dir
    for stack_dir in "$work"/*/; do
        "$stack" down "$stack_dir" >/dev/null 2>&1 || true
    done
    if ((status == 0)); then
        rm -rf "$work"
    else
        printf 'stack test: FAILED; stacks and logs kept in %s\n' "$work" >&2
    fi
}
trap clean_up EXIT

ok() {
    checks=$((checks + 1))
    printf 'ok %d - %s\n' "$checks" "$*"
}

fail() {
    printf 'not ok - %s\n' "$*" >&2
    exit 1
}

# Pids of the processes that hold a file under directory $1 open.
holders() {
    # Processes come and go while find walks /proc: its complaints are noise.
    find /proc/[0-9]*/fd -maxdepth 1 -lname "$1/*" 2>/dev/null | cut -d/ -f3 | sort -u || true
}

alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $state != Z* ]]
}

# The value of KEY in KEY=value lines $2.
value_of() {
    printf '%s\n' "$2" | sed -n "s/^$1=//p"
}

# Field $2 (a Python subscript like ["result"]["status"]) of JSON $1.
field() {
    python3 -c 'import json, sys; print(eval("json.loads(sys.argv[1])" + sys.argv[2]))' "$1" "$2"
}

# Loads a venue, an event on now (ms $3), a gate and ticket STACK-T1 through the
# gateway at $1 with admin key $2, and configures a device there: sets device_id
# and gate_id.
set_up_venue() {
    local url=$1 key=$2 now=$3 inventory reply
    inventory=$(printf '%s\n' \
        '{"type":"venue","id":"STACK-V","name":"Stack Arena"}' \
        "{\"type\":\"event\",\"id\":\"STACK-E\",\"venueId\":\"STACK-V\",\"doorsOpen\":$((now - 3600000)),\"endsAt\":$((now + 3600000))}" \
        '{"type":"gate","venueId":"STACK-V","name":"North"}' \
        '{"type":"ticket","token":"STACK-T1","eventId":"STACK-E","places":["A:1:1"]}')
    reply=$(curl -sS --max-time 30 -X POST "$url/admin/v1/inventory" -H "X-Api-Key: $key" --data-binary "$inventory")
    [ "$(field "$reply" '["message"]["applied"]')" = 4 ] || fail "inventory: $reply"
    reply=$(curl -sS --max-time 10 -X POST "$url/presence/v1/device/init?apikey=$key" \
        -d '{"venueId":"STACK-V","name":"s1","mac":"00:00:00:00:00:01","ip":"10.0.0.1","gateName":"North","serial":"S1","model":"M"}')
    [ "$(field "$reply" '["result"]["status"]')" = OKAY ] || fail "device init: $reply"
    device_id=$(field "$reply" '["message"]["id"]')
    gate_id=$(field "$reply" '["message"]["gateId"]')
}

# An enter of STACK-T1 at scan time $3 (ms) through the gateway at $1 with key $2,
# from the device set_up_venue configured; prints the answer.
scan() {
    curl -sS --max-time 10 -X POST "$1/presence/v1/ticket/enter?apikey=$2" \
        -d "{\"token\":\"STACK-T1\",\"venueId\":\"STACK-V\",\"deviceId\":$device_id,\"gateId\":$gate_id,\"gateName\":\"North\",\"deviceOs\":\"Printed\",\"scanTime\":$3}"
}

test_refuses_without_a_key() {
    local out status=0
    out=$("$stack" up 2>"$work/no-key.err") || status=$?
    ((status != 0)) || fail "up without PRESENCE_API_KEY succeeded"
    [ -z "$out" ] || fail "up without a key printed: $out"
    grep -q PRESENCE_API_KEY "$work/no-key.err" || fail "the refusal does not name PRESENCE_API_KEY"
    ok "up refuses to start without PRESENCE_API_KEY"
}

test_failed_start_leaves_nothing() {
    local dir="$work/failing" status=0
    PRESENCE_API_KEY=k PRESENCE_API_KEYS_FILE="$work/missing.toml" PRESENCE_STACK_DIR="$dir" \
        "$stack" up >/dev/null 2>"$work/failing.err" || status=$?
    ((status != 0)) || fail "up succeeded with a gateway that cannot start"
    grep -q 'presence-gateway exited' "$work/failing.err" ||
        fail "the failure does not name the gateway: $(cat "$work/failing.err")"
    grep -q 'cannot read the API keys file' "$work/failing.err" ||
        fail "the failure does not show the gateway's log"
    [ -z "$(holders "$dir")" ] || fail "processes left after a failed up: $(holders "$dir")"
    ! compgen -G "$dir/*.pid" >/dev/null || fail "pid files left after a failed up"
    ok "a failed up stops what it started and shows the failing log"
}

# Each service's container runs as Kubernetes runs it: user 65532, a read-only
# root filesystem with no writable mount, no capability, no privilege gain.
test_containers_hardened() {
    local dir=$1 name container facts
    for name in validator registry gateway; do
        container=$(<"$dir/$name.container")
        facts=$("${podman[@]}" inspect --format \
            '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.EffectiveCaps}} {{.HostConfig.SecurityOpt}} {{.Config.Image}}' \
            "$container") || fail "no container $container for presence-$name"
        [[ $facts == "65532:65532 true [] [no-new-privileges] $PRESENCE_IMAGE"* ]] ||
            fail "presence-$name's container: user, read-only, capabilities, options, image = $facts"
        "${podman[@]}" exec "$container" presence-$name --version >/dev/null 2>&1 ||
            fail "presence-$name --version does not run in its container"
        ! "${podman[@]}" exec "$container" /bin/sh -c true >/dev/null 2>&1 ||
            fail "presence-$name's container has a shell"
    done
    ok "the services run from $PRESENCE_IMAGE as 65532, read-only, with no capabilities and no shell"
}

test_up_scan_down() {
    local dir="$work/stack" out url key=test-key-$RANDOM now pids pid name status=0
    out=$(PRESENCE_API_KEY=$key PRESENCE_STACK_DIR=$dir "$stack" up 2>"$work/up.err") ||
        fail "up failed: $(cat "$work/up.err")"
    printf '%s\n' "$out" | grep -qv '^[A-Z_]*=' && fail "up printed more than KEY=value lines: $out"
    url=$(printf '%s\n' "$out" | tail -n 1 | sed -n 's/^PRESENCE_URL=//p')
    [[ $url =~ ^http://127\.0\.0\.1:[0-9]+$ ]] || fail "the last line is not PRESENCE_URL=http://...: $out"
    local brokers redis_url
    brokers=$(value_of PRESENCE_KAFKA_BROKERS "$out")
    redis_url=$(value_of PRESENCE_REDIS_URL "$out")
    [[ $brokers =~ ^127\.0\.0\.1:[0-9]+$ ]] || fail "PRESENCE_KAFKA_BROKERS missing: $out"
    [[ $redis_url =~ ^redis://127\.0\.0\.1:[0-9]+/0$ ]] || fail "PRESENCE_REDIS_URL missing: $out"
    ok "up prints the stack's addresses, PRESENCE_URL last"

    "$stack" status "$dir" >"$work/status.out" || fail "status of a running stack: $(cat "$work/status.out")"
    [ "$(grep -cE 'pid [0-9]+ +ready$' "$work/status.out")" = 5 ] ||
        fail "not all 5 ready: $(cat "$work/status.out")"
    PRESENCE_API_KEY=$key PRESENCE_STACK_DIR=$dir "$stack" up >/dev/null 2>"$work/again.err" || status=$?
    if ((status == 0)) || ! grep -q 'already running' "$work/again.err"; then
        fail "a second up in the same directory was not refused"
    fi
    ok "status shows five ready processes; a second up in the directory is refused"
    grep -E 'ready at .* s after its start' "$work/up.err" | sed 's/^==> /   /'
    if [ -n "${PRESENCE_IMAGE:-}" ]; then
        test_containers_hardened "$dir"
    fi

    now=$(($(date +%s) * 1000))
    local reply
    set_up_venue "$url" "$key" "$now"
    reply=$(scan "$url" "$key" "$now")
    [ "$(field "$reply" '["result"]["status"]')" = OKAY ] || fail "first enter: $reply"
    reply=$(scan "$url" "$key" $((now + 1)))
    [ "$(field "$reply" '["result"]["status"]')" = ALREADY_ENTERED ] || fail "second enter: $reply"
    [[ $(redis-cli -u "$redis_url" get 'presence:{t:STACK-T1}:st') == *'"IN"'* ]] ||
        fail "Redis at $redis_url does not hold the ticket's IN state"
    ok "inventory, device init and enters through the gateway; the state is in Redis"

    pids=$(cat "$dir"/*.pid)
    [ "$(wc -w <<<"$pids")" = 5 ] || fail "expected 5 pid files, got: $pids"
    "$stack" down "$dir" 2>"$work/down.err" || fail "down failed: $(cat "$work/down.err")"
    for name in presence-gateway presence-registry presence-validator tansu redis-server; do
        grep -q "stopped $name (pid" "$work/down.err" || fail "down did not report $name: $(cat "$work/down.err")"
    done
    for pid in $pids; do
        ! alive "$pid" || fail "pid $pid still runs after down"
    done
    [ -z "$(holders "$dir")" ] || fail "processes still hold files of the stack: $(holders "$dir")"
    ok "down stops the five processes it names, and none is left"

    status=0
    "$stack" status "$dir" >/dev/null || status=$?
    ((status != 0)) || fail "status succeeds on a stopped stack"
    "$stack" down "$dir" 2>"$work/down-again.err" || fail "a second down failed"
    grep -q 'nothing was running' "$work/down-again.err" || fail "a second down: $(cat "$work/down-again.err")"
    ok "status fails and down is a no-op once the stack is down"
}

# Two of each service over a 3-node Redis Cluster: `up` lists both gateways,
# `status` shows the ten processes ready, a ticket entered through one gateway is
# ALREADY_ENTERED through the other, its state is in the cluster, and `down`
# stops all ten.
test_scaled_out() {
    local dir="$work/scaled" out key=test-key-$RANDOM first second redis_url now reply pids pid name
    out=$(PRESENCE_API_KEY=$key PRESENCE_STACK_DIR=$dir PRESENCE_STACK_INSTANCES=2 \
        PRESENCE_STACK_REDIS=cluster "$stack" up 2>"$work/scaled-up.err") ||
        fail "a scaled-out up failed: $(cat "$work/scaled-up.err")"
    IFS=, read -r first second <<<"$(value_of PRESENCE_URLS "$out")"
    [[ $first =~ ^http://127\.0\.0\.1:[0-9]+$ && $second =~ ^http://127\.0\.0\.1:[0-9]+$ &&
        $first != "$second" ]] || fail "PRESENCE_URLS does not name two gateways: $out"
    [ "$(value_of PRESENCE_URL "$out")" = "$first" ] || fail "PRESENCE_URL is not the first gateway: $out"
    redis_url=$(value_of PRESENCE_REDIS_URL "$out")
    [ "$(value_of PRESENCE_REDIS_CLUSTER "$out")" = true ] &&
        [ "$(tr , '\n' <<<"$redis_url" | grep -cE '^redis://127\.0\.0\.1:[0-9]+/0$')" = 3 ] ||
        fail "not a Redis Cluster of three seed nodes: $out"
    "$stack" status "$dir" >"$work/scaled-status.out" ||
        fail "status of a scaled-out stack: $(cat "$work/scaled-status.out")"
    [ "$(grep -cE 'pid [0-9]+ +ready$' "$work/scaled-status.out")" = 10 ] ||
        fail "not all 10 ready: $(cat "$work/scaled-status.out")"
    for name in gateway-2 validator-2 registry-2 redis-3; do
        grep -qE " $name +pid [0-9]+ +ready$" "$work/scaled-status.out" ||
            fail "status does not show $name ready: $(cat "$work/scaled-status.out")"
    done
    ok "PRESENCE_STACK_INSTANCES=2 over a Redis Cluster: two gateways listed, ten processes ready"

    now=$(($(date +%s) * 1000))
    set_up_venue "$first" "$key" "$now"
    reply=$(scan "$first" "$key" "$now")
    [ "$(field "$reply" '["result"]["status"]')" = OKAY ] || fail "enter through $first: $reply"
    reply=$(scan "$second" "$key" $((now + 1)))
    [ "$(field "$reply" '["result"]["status"]')" = ALREADY_ENTERED ] ||
        fail "enter through $second after one through $first: $reply"
    # -c follows the cluster's redirection to the node that holds the key.
    [[ $(redis-cli -c -u "${redis_url%%,*}" get 'presence:{t:STACK-T1}:st') == *'"IN"'* ]] ||
        fail "the Redis Cluster at $redis_url does not hold the ticket's IN state"
    ok "entered through one gateway, ALREADY_ENTERED through the other; the state is in the cluster"

    pids=$(cat "$dir"/*.pid)
    [ "$(wc -w <<<"$pids")" = 10 ] || fail "expected 10 pid files, got: $pids"
    "$stack" down "$dir" 2>"$work/scaled-down.err" || fail "down failed: $(cat "$work/scaled-down.err")"
    [ "$(grep -c 'stopped .* (pid' "$work/scaled-down.err")" = 10 ] ||
        fail "down did not report ten processes: $(cat "$work/scaled-down.err")"
    for pid in $pids; do
        ! alive "$pid" || fail "pid $pid still runs after down"
    done
    [ -z "$(holders "$dir")" ] || fail "processes still hold files of the stack: $(holders "$dir")"
    ok "down stops the ten processes, and none is left"
}

started=$SECONDS
test_refuses_without_a_key
test_failed_start_leaves_nothing
test_up_scan_down
test_scaled_out
printf 'stack test: all %d checks passed in %ds\n' "$checks" $((SECONDS - started))
