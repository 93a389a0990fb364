#!/usr/bin/env bash
# Presence's distributed mode on one machine: Redis (one server, or a 3-node
# Redis Cluster), a Kafka-protocol broker (tansu) and one or more of each of
# presence-gateway, presence-validator and presence-registry, each on a free
# loopback port.
#
#   PRESENCE_API_KEY=secret deploy/local/stack.sh up   # starts it; prints KEY=value lines
#   deploy/local/stack.sh status [DIR]                 # what runs, and whether it is ready
#   deploy/local/stack.sh down [DIR]                   # stops what `up` started
#
# `up` prints only KEY=value lines on stdout (PRESENCE_STACK_DIR, PRESENCE_REDIS_URL,
# PRESENCE_KAFKA_BROKERS, ..., PRESENCE_URLS: every gateway's URL, separated by
# commas, and PRESENCE_URL last: the first gateway's), so `eval "$(... up)"` sets
# them in a shell; progress and errors go to stderr. `status` and `down` find the
# stack in DIR, else in $PRESENCE_STACK_DIR, and handle every instance.
#
# Environment:
#   PRESENCE_API_KEY        the gateway's admin key; `up` refuses to start without it
#   PRESENCE_STACK_DIR      pids, logs (NAME.log) and Redis data; `up` defaults to a new
#                           temporary directory
#   PRESENCE_BIN_DIR        where presence-gateway, presence-validator and
#                           presence-registry are; default: built here with
#                           `cargo build --release`
#   PRESENCE_IMAGE          run the three services from this container image
#                           instead (deploy/docker/build-local.sh builds one), with
#                           podman on the host network, as user 65532, with a
#                           read-only root filesystem (no tmpfs either), no
#                           capabilities and no-new-privileges, as the Kubernetes
#                           manifests run them. Settings pass through as below;
#                           a file a *_FILE setting names is mounted read-only
#   PRESENCE_PODMAN         the podman command for PRESENCE_IMAGE (default: podman;
#                           e.g. `podman --runtime runc`; deploy/docker/podman.sh).
#                           Without CONTAINERS_CONF, `up` points podman at a
#                           containers.conf in the stack directory with
#                           `default_ulimits = []`, so the runtime keeps the host's
#                           open-files limit
#   PRESENCE_TANSU          the tansu binary; default: tansu on PATH or in
#                           ~/.cargo/bin, installed with cargo when missing
#   PRESENCE_TANSU_STORAGE  where the broker keeps topics: `memory` (default), or a
#                           PostgreSQL server URL (e.g. postgres://postgres@127.0.0.1:5432)
#                           on which `up` creates a database of its own, with the
#                           tables of tests/src/tansu_postgres.sql, and `down` drops it.
#                           tansu's in-memory log costs more CPU per record as it
#                           grows; its PostgreSQL storage does not grow that way but
#                           collapsed at 85 scans/s here (docs/reliability.md)
#   PRESENCE_STACK_TIMEOUT  seconds each start-up step may take (default 60)
#   PRESENCE_STACK_INSTANCES
#                           how many of each service to start (default 1): the
#                           gateways share the reply topic, the validators and the
#                           registries their consumer groups. The first of each is
#                           named `gateway`, `validator`, `registry` in the stack
#                           directory, the others `gateway-2`, ...
#   PRESENCE_STACK_REDIS    `server` (default): one Redis; `cluster`: a Redis
#                           Cluster of 3 primaries (`redis`, `redis-2`, `redis-3`),
#                           the services given every node as a seed
#                           (PRESENCE_REDIS_CLUSTER=true). Both persist as in
#                           production
# Other settings the services read (RUST_LOG, PRESENCE_TOPIC_PREFIX,
# PRESENCE_PARTITIONS, PRESENCE_REPLY_PARTITIONS, PRESENCE_API_KEYS_FILE, ...) pass
# through to them. `up` logs each service's time from start to ready.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Start order by kind; `down` stops in the reverse order, so the services still
# reach the broker while they drain (a gateway leaves the gateways' group last
# thing). A kind may run several instances: `gateway`, `gateway-2`, ...
readonly KINDS=(redis tansu validator registry gateway)
# Primaries of a Redis Cluster: the fewest Redis Cluster accepts.
readonly CLUSTER_NODES=3
readonly TANSU_VERSION=0.6.0
readonly SERVICES_BUILD=(cargo build --release --all-features --bins
    -p presence-gateway -p presence-validator -p presence-registry)
# How long a component may take to exit after SIGTERM (the services drain for up
# to 10 s) before it is killed.
readonly STOP_TIMEOUT=20
readonly POLL=0.1
readonly PORT_ATTEMPTS=3

timeout=${PRESENCE_STACK_TIMEOUT:-60}
instances=${PRESENCE_STACK_INSTANCES:-1}
redis_kind=${PRESENCE_STACK_REDIS:-server}
dir=
started=()
declare -A launched=()
# The stack's own settings: never passed to a service's container.
readonly STACK_SETTINGS='^(PRESENCE_STACK_DIR|PRESENCE_STACK_TIMEOUT|PRESENCE_STACK_INSTANCES|PRESENCE_STACK_REDIS|PRESENCE_BIN_DIR|PRESENCE_IMAGE|PRESENCE_PODMAN|PRESENCE_TANSU|PRESENCE_TANSU_STORAGE)$'
# shellcheck source=../docker/podman.sh
. "$(dirname "${BASH_SOURCE[0]}")/../docker/podman.sh"

log() {
    printf '==> %s\n' "$*" >&2
}

die() {
    printf 'stack.sh: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

# The kind of component $1: `gateway` for `gateway` and `gateway-2`.
kind_of() {
    echo "${1%-[0-9]*}"
}

binary_of() {
    case $(kind_of "$1") in
        redis) echo redis-server ;;
        tansu) echo tansu ;;
        *) echo "presence-$(kind_of "$1")" ;;
    esac
}

# The name of instance $2 (from 1) of kind $1.
instance_name() {
    if (($2 == 1)); then echo "$1"; else echo "$1-$2"; fi
}

# The components of the stack in $dir that have a pid file, in start order.
components_in_dir() {
    local kind file
    for kind in "${KINDS[@]}"; do
        for file in "$dir/$kind.pid" "$dir/$kind"-[0-9]*.pid; do
            [ -f "$file" ] && basename "$file" .pid
        done
    done
    return 0
}

# Whether pid $1 is a live process (a zombie is not).
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $state != Z* ]]
}

# Prints the pid of component $1 if the process `up` started for it still runs:
# the pid file must name a live process with the start time recorded with it, so
# that a pid the system has since given to another process is never touched.
running_pid() {
    local name=$1 pid started
    [ -f "$dir/$name.pid" ] || return 1
    pid=$(<"$dir/$name.pid")
    started=$(ps -o lstart= -p "$pid" 2>/dev/null) || return 1
    [ -f "$dir/$name.started" ] && [ "$started" = "$(<"$dir/$name.started")" ] || return 1
    alive "$pid" || return 1
    echo "$pid"
}

# The end of component $1's log; a backtrace (RUST_BACKTRACE) is cut so that the
# error above it stays in view.
log_tail() {
    local file="$dir/$1.log"
    if [ -s "$file" ]; then
        printf -- '--- last lines of %s ---\n' "$file" >&2
        awk 'tolower($0) ~ /^stack backtrace:/ { print "[backtrace omitted]"; exit } { print }' "$file" |
            tail -n 40 >&2
        printf -- '---\n' >&2
    fi
}

# Stops component $1 if it runs: SIGTERM, then SIGKILL after STOP_TIMEOUT.
stop() {
    local name=$1 pid deadline
    pid=$(running_pid "$name") || {
        rm -f "$dir/$name.pid" "$dir/$name.started" "$dir/$name.port"
        return 1
    }
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$pid" && ((SECONDS < deadline)); do
        sleep "$POLL"
    done
    if alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        while alive "$pid"; do sleep "$POLL"; done
        log "killed $(binary_of "$name") (pid $pid): still running ${STOP_TIMEOUT}s after SIGTERM"
        # Killing `podman run` leaves its container running.
        if [ -f "$dir/$name.container" ]; then
            "${podman[@]}" rm --force --time 0 "$(<"$dir/$name.container")" >/dev/null 2>&1 || true
        fi
    else
        log "stopped $(binary_of "$name") (pid $pid)"
    fi
    # `up` reaps its own children when it cleans up after a failure.
    wait "$pid" 2>/dev/null || true
    rm -f "$dir/$name.pid" "$dir/$name.started" "$dir/$name.container" "$dir/$name.port"
}

# Runs "$@" in the background as component $1, output to NAME.log, and records
# its pid and start time.
launch() {
    local name=$1 pid
    shift
    "$@" </dev/null >"$dir/$name.log" 2>&1 &
    pid=$!
    launched[$name]=$EPOCHREALTIME
    echo "$pid" >"$dir/$name.pid"
    ps -o lstart= -p "$pid" >"$dir/$name.started" 2>/dev/null || true
    started+=("$name")
}

# Polls "$@" until it succeeds. Returns 1 if component $1's process exits
# meanwhile, 2 when PRESENCE_STACK_TIMEOUT elapses.
wait_until() {
    local name=$1 deadline=$((SECONDS + timeout))
    shift
    until "$@" >/dev/null; do
        running_pid "$name" >/dev/null || return 1
        ((SECONDS < deadline)) || return 2
        sleep "$POLL"
    done
}

# Like wait_until, but a failure ends `up` with the component's log.
must_wait() {
    local name=$1 what=$2 status=0
    shift 2
    wait_until "$name" "$@" || status=$?
    case $status in
        0) return 0 ;;
        1) log_tail "$name"; die "$(binary_of "$name") exited before $what" ;;
        *) log_tail "$name"; die "$(binary_of "$name"): no $what within ${timeout}s" ;;
    esac
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The first line of component $1's log that starts with $2, without the prefix.
announced() {
    local line
    line=$(grep -m 1 "^$2" "$dir/$1.log" 2>/dev/null) || return 1
    printf '%s\n' "${line#"$2"}"
}

ready() {
    curl -fsS -o /dev/null --max-time 2 "$1/readyz" 2>/dev/null
}

# Whether Redis component $1 answers on port $2.
redis_ready() {
    # Only our server writes our log: a PONG from another server on the port
    # must not count.
    grep -q 'Ready to accept connections' "$dir/$1.log" 2>/dev/null &&
        [ "$(redis-cli -h 127.0.0.1 -p "$2" ping 2>/dev/null)" = PONG ]
}

tansu_ready() {
    grep -q '^ready in' "$dir/tansu.log" 2>/dev/null && port_open "$1"
}

require() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is needed: $2"
}

# Points $dir at the stack: the argument, else PRESENCE_STACK_DIR.
find_stack() {
    dir=${1:-${PRESENCE_STACK_DIR:-}}
    [ -n "$dir" ] || die "which stack? Pass the directory \`up\` printed (PRESENCE_STACK_DIR=...) or set PRESENCE_STACK_DIR"
    [ -d "$dir" ] || die "$dir does not exist"
    dir=$(cd "$dir" && pwd)
}

ensure_cargo_path() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
        export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    fi
}

find_tansu() {
    if [ -n "${PRESENCE_TANSU:-}" ]; then
        [ -x "$PRESENCE_TANSU" ] || die "PRESENCE_TANSU=$PRESENCE_TANSU is not an executable"
        tansu=$PRESENCE_TANSU
        return
    fi
    ensure_cargo_path
    if tansu=$(command -v tansu); then
        return
    fi
    tansu="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    if [ ! -x "$tansu" ]; then
        require cargo "install the Rust toolchain (rustup), or point PRESENCE_TANSU at a tansu binary"
        log "installing the tansu broker with cargo (about 12 minutes on 2 cores)"
        cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,postgres >&2
        [ -x "$tansu" ] || die "cargo install tansu did not leave $tansu"
    fi
}

find_services() {
    if [ -n "${PRESENCE_IMAGE:-}" ]; then
        require "${podman[0]}" "PRESENCE_IMAGE runs the services with podman (apt-get install podman)"
        "${podman[@]}" image exists "$PRESENCE_IMAGE" ||
            die "no image $PRESENCE_IMAGE in podman's storage: build it with deploy/docker/build-local.sh"
        podman_keeps_ulimits "$dir"
        return
    fi
    if [ -n "${PRESENCE_BIN_DIR:-}" ]; then
        bin_dir=$PRESENCE_BIN_DIR
    else
        ensure_cargo_path
        require cargo "install the Rust toolchain (rustup), or point PRESENCE_BIN_DIR at built binaries"
        log "${SERVICES_BUILD[*]}"
        (cd "$repo" && "${SERVICES_BUILD[@]}") >&2
        bin_dir="$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release"
    fi
    local name
    for name in validator registry gateway; do
        [ -x "$bin_dir/presence-$name" ] || die "$bin_dir/presence-$name is missing"
    done
}

# Starts Redis node $1 (a component name) with "${@:2}" added to its
# arguments; sets redis_port to its port.
start_redis_node() {
    local name=$1 attempt status
    shift
    mkdir -p "$dir/$name"
    for ((attempt = 1; attempt <= PORT_ATTEMPTS; attempt++)); do
        redis_port=$(free_port)
        # Persistence as in production (docs/design.md, "Redis: durability"): every
        # answered scan is in the synced append-only file, so it survives a Redis restart.
        launch "$name" redis-server --port "$redis_port" --bind 127.0.0.1 \
            --dir "$dir/$name" --appendonly yes --appendfsync always --daemonize no "$@"
        status=0
        wait_until "$name" redis_ready "$name" "$redis_port" || status=$?
        ((status == 1)) || break
        # Most likely another process took the port since it was picked.
        log "redis-server exited on port $redis_port; trying another port"
    done
    case $status in
        0) log "redis-server ($name) listening on 127.0.0.1:$redis_port" ;;
        1) log_tail "$name"; die "redis-server did not start in $PORT_ATTEMPTS attempts" ;;
        *) log_tail "$name"; die "redis-server did not answer PING within ${timeout}s" ;;
    esac
    echo "$redis_port" >"$dir/$name.port"
}

cluster_ok() {
    redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}

# Sets redis_url (and redis_env) for the services: one server, or the seed
# list of a Redis Cluster formed of CLUSTER_NODES new nodes.
start_redis() {
    local index name ports=() seeds=()
    if [ "$redis_kind" = server ]; then
        start_redis_node redis
        redis_url="redis://127.0.0.1:$redis_port/0"
        redis_env=()
        return
    fi
    # A cluster is formed of empty nodes on new ports: an earlier one's data and
    # node table cannot be taken over.
    for ((index = 1; index <= CLUSTER_NODES; index++)); do
        name=$(instance_name redis "$index")
        [ -z "$(ls -A "$dir/$name" 2>/dev/null)" ] ||
            die "$dir/$name holds an earlier Redis's data: a Redis Cluster starts empty; use another PRESENCE_STACK_DIR"
    done
    for ((index = 1; index <= CLUSTER_NODES; index++)); do
        name=$(instance_name redis "$index")
        # The default bus port is the port + 10000, which may be taken or past 65535.
        start_redis_node "$name" --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-port "$(free_port)"
        ports+=("$redis_port")
        seeds+=("redis://127.0.0.1:$redis_port/0")
    done
    redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-yes >"$dir/redis-cluster.log" 2>&1 || {
        cat "$dir/redis-cluster.log" >&2
        die "redis-cli --cluster create failed"
    }
    for ((index = 1; index <= CLUSTER_NODES; index++)); do
        must_wait "$(instance_name redis "$index")" "cluster_state:ok" cluster_ok "${ports[index - 1]}"
    done
    log "Redis Cluster of $CLUSTER_NODES primaries formed (ports ${ports[*]})"
    redis_url=$(IFS=,; echo "${seeds[*]}")
    redis_env=(PRESENCE_REDIS_CLUSTER=true)
}

# The broker's --storage-engine, creating its PostgreSQL database if asked to.
tansu_storage() {
    local server name
    case ${PRESENCE_TANSU_STORAGE:-memory} in
        memory) echo memory://tansu/ ;;
        postgres://* | postgresql://*)
            require psql "apt-get install postgresql-client"
            server=${PRESENCE_TANSU_STORAGE%/}
            # Lower-case letters, digits and `_`: a plain identifier, no quoting.
            name="presence_stack_$(date +%s)_$RANDOM"
            psql "$server/postgres" --no-psqlrc -q -v ON_ERROR_STOP=1 \
                -c "create database $name" >&2 ||
                die "cannot create database $name on $server"
            printf '%s\n%s\n' "$server" "$name" >"$dir/tansu.database"
            psql "$server/$name" --no-psqlrc -q -v ON_ERROR_STOP=1 \
                -f "$repo/tests/src/tansu_postgres.sql" >&2 ||
                die "cannot create tansu's tables in $name on $server"
            # Without TLS: tansu checks a server's certificate against the system's
            # roots, which a local server's self-signed one fails.
            echo "$server/$name?sslmode=disable"
            ;;
        *) die "PRESENCE_TANSU_STORAGE=$PRESENCE_TANSU_STORAGE is neither memory nor a postgres:// URL" ;;
    esac
}

# Drops the broker's PostgreSQL database, if `up` created one.
drop_tansu_database() {
    local server name
    [ -f "$dir/tansu.database" ] || return 0
    { read -r server && read -r name; } <"$dir/tansu.database"
    if psql "$server/postgres" --no-psqlrc -q -v ON_ERROR_STOP=1 \
        -c "drop database if exists $name with (force)" >&2; then
        log "dropped the broker's database $name"
        rm -f "$dir/tansu.database"
    else
        log "could not drop the broker's database $name on $server"
    fi
}

start_tansu() {
    local attempt status url storage
    storage=$(tansu_storage)
    for ((attempt = 1; attempt <= PORT_ATTEMPTS; attempt++)); do
        kafka_port=$(free_port)
        url="tcp://127.0.0.1:$kafka_port"
        # tansu reads these from the environment too; they are meant for the
        # services (RUST_LOG) or for no one here.
        launch tansu env -u CLUSTER_ID -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT -u RUST_LOG \
            "$tansu" broker --listener-url "$url" --advertised-listener-url "$url" \
            --storage-engine "$storage"
        status=0
        wait_until tansu tansu_ready "$kafka_port" || status=$?
        ((status == 1)) || break
        log "tansu exited on port $kafka_port; trying another port"
    done
    case $status in
        0) log "tansu listening on 127.0.0.1:$kafka_port" ;;
        1) log_tail tansu; die "tansu did not start in $PORT_ATTEMPTS attempts" ;;
        *) log_tail tansu; die "tansu did not accept connections within ${timeout}s" ;;
    esac
}

# The command that runs service instance $1 with the settings "${@:2}" (NAME=value): the
# binary, or with PRESENCE_IMAGE a container of the image, as Kubernetes runs it.
service_command() {
    local name=$1 setting var container
    shift
    if [ -z "${PRESENCE_IMAGE:-}" ]; then
        printf '%s\0' env "$@" "$bin_dir/$(binary_of "$name")"
        return
    fi
    container="presence-stack-$(basename "$dir" | tr -c 'a-zA-Z0-9_.\n-' _)-$name"
    echo "$container" >"$dir/$name.container"
    printf '%s\0' "${podman[@]}" run --rm --pull=never --name "$container" --network host \
        --user 65532:65532 --read-only --read-only-tmpfs=false --cap-drop=ALL \
        --security-opt no-new-privileges
    # The settings a service reads pass through, as without a container; a file
    # one names (PRESENCE_API_KEYS_FILE, ..._PASSWORD_FILE) is mounted read-only.
    local explicit=" ${*%%=*} "
    while IFS= read -r var; do
        [[ $var =~ $STACK_SETTINGS || $explicit == *" $var "* ]] && continue
        printf '%s\0' --env "$var"
        if [[ $var == *_FILE && -f ${!var} ]]; then
            printf '%s\0' --volume "${!var}:${!var}:ro"
        fi
    done < <(compgen -e | grep -E '^(PRESENCE_|RUST_LOG$|OTEL_)')
    for setting in "$@"; do
        printf '%s\0' --env "$setting"
    done
    printf '%s\0' "$PRESENCE_IMAGE" "$(binary_of "$name")"
}

launch_service() {
    local name=$1 command=()
    shift
    mapfile -d '' command < <(service_command "$name" "$@")
    launch "$name" "${command[@]}"
}

# The URL component $1 announced: a gateway's API, another service's probes.
announced_url() {
    case $(kind_of "$1") in
        gateway) announced "$1" PRESENCE_URL= ;;
        *) announced "$1" PRESENCE_OPS_URL= ;;
    esac
}

# Waits until every service instance is ready, polling them together, and logs
# each one's time from its start to its first ready /readyz.
wait_ready() {
    local deadline=$((SECONDS + timeout)) name url pending=("${services[@]}") left
    while ((${#pending[@]} > 0)); do
        left=()
        for name in "${pending[@]}"; do
            url=$(announced_url "$name")
            if ready "$url"; then
                log "$(binary_of "$name") ($name) ready at $url/readyz $(awk -v a="${launched[$name]}" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s after its start"
            elif ! running_pid "$name" >/dev/null; then
                log_tail "$name"
                die "$(binary_of "$name") ($name) exited before ready at $url/readyz"
            else
                left+=("$name")
            fi
        done
        pending=("${left[@]}")
        ((${#pending[@]} == 0)) && break
        if ((SECONDS >= deadline)); then
            log_tail "${pending[0]}"
            die "$(binary_of "${pending[0]}") (${pending[0]}): no ready at $(announced_url "${pending[0]}")/readyz within ${timeout}s"
        fi
        sleep "$POLL"
    done
}

# The announced URLs of every instance of kind $1, separated by commas.
urls_of() {
    local name urls=()
    for name in "${services[@]}"; do
        [ "$(kind_of "$name")" = "$1" ] && urls+=("$(announced_url "$name")")
    done
    (IFS=,; echo "${urls[*]}")
}

start_services() {
    # NO_COLOR: the logs go to files, where colour codes are noise. tansu holds an
    # empty fetch to its end even when records arrive, so consumers ask it for short
    # waits (docs/design.md, "The test broker"); Kafka needs no such thing.
    local common=(NO_COLOR=1 "PRESENCE_KAFKA_BROKERS=127.0.0.1:$kafka_port"
        "PRESENCE_REDIS_URL=$redis_url" "${redis_env[@]}"
        "PRESENCE_KAFKA_FETCH_WAIT_MS=${PRESENCE_KAFKA_FETCH_WAIT_MS:-10}")
    local kind index name
    services=()
    for kind in validator registry gateway; do
        for ((index = 1; index <= instances; index++)); do
            name=$(instance_name "$kind" "$index")
            # Port 0: each service binds a free port and announces it.
            if [ "$kind" = gateway ]; then
                launch_service "$name" "${common[@]}" PRESENCE_LISTEN=127.0.0.1:0
            else
                launch_service "$name" "${common[@]}" PRESENCE_OPS_LISTEN=127.0.0.1:0
            fi
            services+=("$name")
        done
    done
    for name in "${services[@]}"; do
        must_wait "$name" "announcing its address" announced_url "$name"
    done
    # Ready once each consumer holds its partitions and Redis and the broker answer.
    wait_ready
}

# Stops what a failed `up` had started, newest first.
clean_up_failed_up() {
    local status=$? i
    trap - EXIT
    if ((status != 0 && ${#started[@]} > 0)); then
        log "up did not finish; stopping what it started"
        for ((i = ${#started[@]} - 1; i >= 0; i--)); do
            stop "${started[i]}" || true
        done
        drop_tansu_database
        log "logs are in $dir"
    fi
    exit "$status"
}

cmd_up() {
    [ -n "${PRESENCE_API_KEY:-}" ] ||
        die "PRESENCE_API_KEY is not set: it is the stack's admin API key (e.g. PRESENCE_API_KEY=\$(openssl rand -hex 16) $0 up)"
    [[ $timeout =~ ^[1-9][0-9]*$ ]] || die "PRESENCE_STACK_TIMEOUT=$timeout is not a number of seconds"
    [[ $instances =~ ^[1-9][0-9]?$ ]] ||
        die "PRESENCE_STACK_INSTANCES=$instances is not a number of instances from 1 to 99"
    [[ $redis_kind =~ ^(server|cluster)$ ]] ||
        die "PRESENCE_STACK_REDIS=$redis_kind is neither server nor cluster"
    # A static group member's id names one process: two sharing it fence each other.
    if ((instances > 1)) && [ -n "${PRESENCE_INSTANCE_ID:-}" ]; then
        die "PRESENCE_INSTANCE_ID names one instance; unset it to start $instances of each service"
    fi
    require python3 "it picks the free ports"
    require curl "it probes /readyz"
    require redis-server "apt-get install redis-server"
    require redis-cli "apt-get install redis-tools"
    if [ -n "${PRESENCE_STACK_DIR:-}" ]; then
        mkdir -p "$PRESENCE_STACK_DIR"
        dir=$(cd "$PRESENCE_STACK_DIR" && pwd)
        local name
        for name in $(components_in_dir); do
            if running_pid "$name" >/dev/null; then
                die "a stack is already running in $dir: stop it first with \`$0 down $dir\`"
            fi
        done
    else
        dir=$(mktemp -d "${TMPDIR:-/tmp}/presence-stack.XXXXXX")
    fi
    log "stack directory: $dir"
    find_tansu
    find_services
    [ -n "${PRESENCE_IMAGE:-}" ] && log "services from image $PRESENCE_IMAGE (${podman[*]})"
    trap clean_up_failed_up EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_redis
    start_tansu
    start_services
    {
        printf 'PRESENCE_STACK_DIR=%q\n' "$dir"
        # Loopback URLs (digits, dots, colons, slashes, commas): nothing to quote,
        # and a comma stays readable to scripts that split the lists.
        printf 'PRESENCE_REDIS_URL=%s\n' "$redis_url"
        [ "$redis_kind" = cluster ] && printf 'PRESENCE_REDIS_CLUSTER=true\n'
        printf 'PRESENCE_KAFKA_BROKERS=%q\n' "127.0.0.1:$kafka_port"
        printf 'PRESENCE_TOPIC_PREFIX=%q\n' "${PRESENCE_TOPIC_PREFIX:-presence.}"
        printf 'PRESENCE_VALIDATOR_OPS_URL=%q\n' "$(announced_url validator)"
        printf 'PRESENCE_REGISTRY_OPS_URL=%q\n' "$(announced_url registry)"
        printf 'PRESENCE_VALIDATOR_OPS_URLS=%s\n' "$(urls_of validator)"
        printf 'PRESENCE_REGISTRY_OPS_URLS=%s\n' "$(urls_of registry)"
        printf 'PRESENCE_URLS=%s\n' "$(urls_of gateway)"
        printf 'PRESENCE_URL=%q\n' "$(announced_url gateway)"
    } >"$dir/stack.env"
    trap - EXIT INT TERM
    log "ready; stop it with: $0 down $dir"
    cat "$dir/stack.env"
}

cmd_down() {
    find_stack "${1:-}"
    local name i stopped=0 components
    mapfile -t components < <(components_in_dir)
    for ((i = ${#components[@]} - 1; i >= 0; i--)); do
        name=${components[i]}
        if stop "$name"; then
            stopped=$((stopped + 1))
        else
            log "$(binary_of "$name") ($name) was not running"
        fi
    done
    drop_tansu_database
    rm -f "$dir/stack.env"
    if ((stopped == 0)); then
        log "nothing was running in $dir"
    else
        log "stopped $stopped processes; logs are in $dir"
    fi
}

cmd_status() {
    find_stack "${1:-}"
    local name pid health healthy=0 total=0
    local PRESENCE_KAFKA_BROKERS=''
    if [ -f "$dir/stack.env" ]; then
        # Written by `up` with %q: plain assignments.
        # shellcheck disable=SC1091
        source "$dir/stack.env"
    fi
    for name in $(components_in_dir); do
        total=$((total + 1))
        if ! pid=$(running_pid "$name"); then
            printf '%-20s %-12s not running\n' "$(binary_of "$name")" "$name"
            continue
        fi
        case $(kind_of "$name") in
            redis) [ "$(redis-cli -p "$(<"$dir/$name.port")" ping 2>/dev/null)" = PONG ] ;;
            tansu) port_open "${PRESENCE_KAFKA_BROKERS##*:}" ;;
            *) ready "$(announced_url "$name")" ;;
        esac && health=ready || health="NOT ready"
        [ "$health" = ready ] && healthy=$((healthy + 1))
        printf '%-20s %-12s pid %-8s %s\n' "$(binary_of "$name")" "$name" "$pid" "$health"
    done
    ((total > 0 && healthy == total))
}

main() {
    local command=${1:-}
    shift || true
    case $command in
        up) cmd_up ;;
        down) cmd_down "$@" ;;
        status) cmd_status "$@" ;;
        -h | --help | help) usage ;;
        *) usage; exit 2 ;;
    esac
}

main "$@"
