#!/usr/bin/env bash
# Builds deploy/docker/Dockerfile's image with podman on a machine that can reach
# no image registry: the release binaries are compiled on the host (the packages
# and features of the Dockerfile's PACKAGES and FEATURES, with its
# LIBZ_SYS_STATIC=1), stripped into a build context of their own beside the
# links its SERVICES name, and installed on a base that make-base.sh makes from
# Debian's packages
# (--build-arg BINARIES=prebuilt RUNTIME_BASE=...). The result is the image the
# Dockerfile's default path builds, on a base with the same contents as
# distroless's cc image for these binaries.
#
#   deploy/docker/build-local.sh IMAGE     # e.g. localhost/presence:dev
#
# Prints the image's size and the build's durations on stderr.
#
# Environment:
#   CARGO_TARGET_DIR  where cargo builds (default: target/ of this workspace)
#   PRESENCE_PODMAN   the podman command (default: podman; deploy/docker/podman.sh).
#                     Without CONTAINERS_CONF, podman gets a containers.conf with
#                     `default_ulimits = []`, as deploy/local/stack.sh gives it
# Runs as any user that can run podman: nothing here needs root (make-base.sh
# says when it does).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dockerfile="$repo/deploy/docker/Dockerfile"
# shellcheck source=podman.sh
. "$repo/deploy/docker/podman.sh"

log() {
    printf '==> %s\n' "$*" >&2
}

die() {
    printf 'build-local.sh: %s\n' "$*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: $0 IMAGE"
image=$1

# The Dockerfile's `ARG NAME="value"`: one place says what the image holds.
dockerfile_arg() {
    sed -n "s/^ARG $1=\"\\(.*\\)\"\$/\\1/p" "$dockerfile" | grep . || die "the Dockerfile has no ARG $1=\"...\""
}
read -r -a packages <<<"$(dockerfile_arg PACKAGES)"
features=$(dockerfile_arg FEATURES)
mapfile -t binaries < <(grep -o 'target/release/[a-z0-9-]*' "$dockerfile" | sed 's|target/release/||' | sort -u)
[ ${#binaries[@]} -gt 0 ] || die "the Dockerfile installs no target/release/ binary"
read -r -a services <<<"$(dockerfile_arg SERVICES)"

started=$SECONDS
log "LIBZ_SYS_STATIC=1 cargo build --release --locked --bins ${packages[*]} --features $features"
(cd "$repo" && LIBZ_SYS_STATIC=1 cargo build --release --locked --bins "${packages[@]}" --features "$features")
compiled=$((SECONDS - started))
target_dir=${CARGO_TARGET_DIR:-$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')}

work=$(mktemp -d "${TMPDIR:-/tmp}/presence-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
podman_keeps_ulimits "$work"
context="$work/context"
mkdir -p "$context/prebuilt"
for binary in "${binaries[@]}"; do
    install -m 0755 --strip "$target_dir/release/$binary" "$context/prebuilt/"
done
# As the Dockerfile's builder stage links them.
for service in "${services[@]}"; do
    ln -s presence-services "$context/prebuilt/$service"
done

base="localhost/presence-base:local"
# What the tags name before this build: removed after it, unless a container uses them.
previous=$("${podman[@]}" image inspect --format '{{.Id}}' "$image" "$base" 2>/dev/null || true)
"$repo/deploy/docker/make-base.sh" "$base" "$context"/prebuilt/*

log "podman build $image (BINARIES=prebuilt, RUNTIME_BASE=$base)"
"${podman[@]}" build --quiet --pull=never -f "$dockerfile" \
    --build-arg BINARIES=prebuilt --build-arg "RUNTIME_BASE=$base" -t "$image" "$context" >/dev/null
# The prebuilt stage's image, left untagged by the build; and the images this
# build's tags were taken from.
"${podman[@]}" image prune --force --filter label=org.presence.stage=prebuilt >/dev/null
for id in $previous; do
    "${podman[@]}" image rm "$id" >/dev/null 2>&1 || true
done
size=$("${podman[@]}" image inspect --format '{{.Size}}' "$image")
log "built $image: $((size / 1000000)) MB ($size bytes; binaries $(du -sh "$context/prebuilt" | cut -f1)); cargo ${compiled}s, image $((SECONDS - started - compiled))s"
