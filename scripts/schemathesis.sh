#!/usr/bin/env bash
# Schemathesis against /openapi.json of both modes: the embedded `presence serve`
# and the distributed stack (deploy/local/stack.sh), each on its own free ports,
# with a small inventory and one configured device so that the document's examples
# are real tickets. Every generated request must get no 5xx, a documented status,
# content type, headers and body; any failure fails this script.
#
#   scripts/schemathesis.sh                       # both modes
#   scripts/schemathesis.sh embedded              # one mode: embedded or distributed
#
# Environment:
#   SCHEMATHESIS                the schemathesis program; default: the one
#                               scripts/test.sh installs in
#                               ${PRESENCE_TOOLS_DIR:-~/.cache/presence-tools}/venv-schemathesis
#   PRESENCE_BIN_DIR            where presence, presence-gateway, presence-validator
#                               and presence-registry are; default: target/debug
#   PRESENCE_SCHEMATHESIS_EXAMPLES  generated cases per operation (default 100: about
#                               a minute per mode on 2 cores)
#   PRESENCE_SCHEMATHESIS_SEED  the generator's seed (default 1: the same cases on
#                               every run, so a red run is reproducible; change it
#                               to explore)
# Reports (JUnit, and a cassette of every request) are kept when a mode fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

schemathesis=${SCHEMATHESIS:-${PRESENCE_TOOLS_DIR:-$HOME/.cache/presence-tools}/venv-schemathesis/bin/schemathesis}
bin_dir=${PRESENCE_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/debug}
examples=${PRESENCE_SCHEMATHESIS_EXAMPLES:-100}
seed=${PRESENCE_SCHEMATHESIS_SEED:-1}
key=schemathesis-$RANDOM$RANDOM
# A developer's shell may export settings the servers read; each mode sets its own.
unset PRESENCE_API_KEY PRESENCE_API_KEYS_FILE PRESENCE_STACK_DIR PRESENCE_TOPIC_PREFIX \
    PRESENCE_INSTANCE_ID PRESENCE_LISTEN PRESENCE_DATA_DIR PRESENCE_INVENTORY
work=$(mktemp -d "${TMPDIR:-/tmp}/presence-schemathesis.XXXXXX")
embedded_pid=
stack_dir=
failed=0

log() {
    printf '==> %s\n' "$*" >&2
}

die() {
    printf 'schemathesis.sh: %s\n' "$*" >&2
    exit 1
}

# Stops whatever this script started, whatever way it ends.
clean_up() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$embedded_pid" ] && kill -0 "$embedded_pid" 2>/dev/null; then
        kill -TERM "$embedded_pid" 2>/dev/null || true
        wait "$embedded_pid" 2>/dev/null || true
    fi
    if [ -n "$stack_dir" ]; then
        deploy/local/stack.sh down "$stack_dir" >/dev/null 2>&1 || true
    fi
    if ((status == 0)); then
        rm -rf "$work"
    else
        log "logs and reports kept in $work"
    fi
    exit "$status"
}
trap clean_up EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The SPEC's inventory example and a group ticket: the document's request examples
# name this venue, gate (id 1) and ticket, and the device init_device configures
# (id 1), so the examples phase scans a real ticket through a real scanner.
write_inventory() {
    cat >"$work/inventory.ndjson" <<'EOF'
{"type":"venue","id":"KovZpZAnAtJJ","name":"Arena"}
{"type":"event","id":"3F005062B2B4E313","venueId":"KovZpZAnAtJJ","name":"Show","doorsOpen":1480000000000,"endsAt":1480030000000,"status":"ACTIVE","allowReentry":true}
{"type":"gate","venueId":"KovZpZAnAtJJ","name":"Gate 2","allowedSections":["PIT1"],"allowedEvents":["3F005062B2B4E313"],"openFrom":null,"openUntil":null}
{"type":"ticket","token":"721744537954","eventId":"3F005062B2B4E313","places":["PIT1:3:4"],"status":"VALID","validFrom":null,"validUntil":null}
{"type":"ticket","token":"721744537955","eventId":"3F005062B2B4E313","places":["PIT1:3:5","PIT1:3:6"]}
EOF
}

# Configures the scanner the examples use; prints the device/init answer.
init_device() {
    local url=$1 reply
    reply=$(curl -sS --max-time 30 -X POST "$url/presence/v1/device/init" -H "X-Api-Key: $key" \
        -d '{"venueId":"KovZpZAnAtJJ","name":"East 1","mac":"00:24:06:F0:F9:FB","ip":"192.168.1.1","gateName":"Gate 2","serial":"aBcDEFg12","model":"Janam XT2"}')
    [[ $reply == *'"status":"OKAY"'* ]] || die "device/init at $url: $reply"
    log "device: $reply"
}

# Runs schemathesis against the server at $2, as mode $1.
run_schemathesis() {
    local mode=$1 url=$2 status=0 started=$SECONDS
    mkdir -p "$work/$mode"
    log "schemathesis $mode: $url/openapi.json ($examples cases per operation, seed $seed)"
    # In $work: whatever schemathesis leaves in its working directory stays there.
    # One worker: with more, hypothesis on Python 3.11 fails now and then while
    # describing its filters in parallel threads ("AST constructor recursion depth
    # mismatch"), an error of the tool, not of the server.
    (cd "$work/$mode" && SCHEMATHESIS_HOOKS="$repo/scripts/schemathesis/hooks.py" \
        "$schemathesis" --no-color --config-file "$repo/scripts/schemathesis/schemathesis.toml" \
        run "$url/openapi.json" \
        --header "X-Api-Key: $key" \
        --max-examples "$examples" \
        --seed "$seed" \
        --workers 1 \
        --request-timeout 10 \
        --generation-database none \
        --report junit,vcr --report-dir "$work/$mode/report") || status=$?
    log "schemathesis $mode: exit $status in $((SECONDS - started))s"
    if ((status != 0)); then
        failed=1
    fi
}

test_embedded() {
    local out="$work/embedded.out" url=
    [ -x "$bin_dir/presence" ] || die "$bin_dir/presence is missing: cargo build --workspace --all-features --bins"
    NO_COLOR=1 "$bin_dir/presence" serve --listen 127.0.0.1:0 --data-dir "$work/embedded-data" \
        --api-key "$key" --inventory "$work/inventory.ndjson" \
        </dev/null >"$out" 2>"$work/embedded.log" &
    embedded_pid=$!
    local deadline=$((SECONDS + 60))
    until url=$(sed -n 's/^PRESENCE_URL=//p' "$out" 2>/dev/null) && [ -n "$url" ]; do
        kill -0 "$embedded_pid" 2>/dev/null || {
            tail -n 20 "$work/embedded.log" >&2
            die "presence serve exited before serving"
        }
        ((SECONDS < deadline)) || die "presence serve did not announce its address within 60s"
        sleep 0.1
    done
    init_device "$url"
    run_schemathesis embedded "$url"
    kill -0 "$embedded_pid" 2>/dev/null || die "presence serve stopped during the run"
    kill -TERM "$embedded_pid"
    wait "$embedded_pid" || die "presence serve did not stop cleanly (exit $?)"
    embedded_pid=
}

test_distributed() {
    local env url
    stack_dir="$work/stack"
    env=$(PRESENCE_API_KEY=$key PRESENCE_STACK_DIR=$stack_dir PRESENCE_BIN_DIR=$bin_dir \
        deploy/local/stack.sh up) || die "deploy/local/stack.sh up failed"
    url=$(printf '%s\n' "$env" | sed -n 's/^PRESENCE_URL=//p')
    local reply
    reply=$(curl -sS --max-time 30 -X POST "$url/admin/v1/inventory" -H "X-Api-Key: $key" \
        --data-binary @"$work/inventory.ndjson")
    [[ $reply == *'"status":"OKAY"'* ]] || die "inventory: $reply"
    init_device "$url"
    run_schemathesis distributed "$url"
    # A service that fell over under the fuzzing is a failure even if every
    # answer before it was fine.
    deploy/local/stack.sh status "$stack_dir" >&2 || die "a process of the stack stopped during the run"
    deploy/local/stack.sh down "$stack_dir" 2>/dev/null || die "deploy/local/stack.sh down failed"
    stack_dir=
}

main() {
    local modes=("$@")
    ((${#modes[@]} > 0)) || modes=(embedded distributed)
    [ -x "$schemathesis" ] || die "no schemathesis at $schemathesis (scripts/test.sh installs it; or set SCHEMATHESIS)"
    command -v curl >/dev/null 2>&1 || die "curl is needed"
    write_inventory
    local mode started=$SECONDS
    for mode in "${modes[@]}"; do
        case $mode in
            embedded) test_embedded ;;
            distributed) test_distributed ;;
            *) die "unknown mode $mode (embedded or distributed)" ;;
        esac
    done
    if ((failed)); then
        die "schemathesis found failures (reports in $work)"
    fi
    log "schemathesis: ${modes[*]} passed in $((SECONDS - started))s"
}

main "$@"
