#!/usr/bin/env bash
# Checks deploy/ (Kubernetes manifests and the image's Dockerfile):
#   1. every kustomization renders (kubectl kustomize, or kustomize, v5);
#   2. every rendered resource validates: Kubernetes kinds against the schemas
#      of the oldest supported and the newest known Kubernetes, KEDA and
#      Prometheus Operator kinds against models of their published CRDs,
#      KafkaTopic against test/kafkatopic-v1beta2.schema.json; and the manifests
#      agree with the workspace: each variable they set is one the binary reads
#      (its --help), probes use the port the binary listens on, grace periods
#      cover the shutdown deadlines, topic and group names are the code's,
#      the Dockerfile builds and installs the binaries the manifests run;
#      and the event-night items (test/night.py: preStop drain, /admin/ off the
#      public entry, registry scaling, alerts, budgets, priority, zone spread,
#      memory requests, egress, credentials as files, KEDA authentication,
#      digest pinning, a controller-neutral entry, runbooks), each also run on
#      a deliberately broken copy of the rendering, which it must reject;
#   3. the alert rules parse and fire as meant (promtool check/test rules);
#   4. the binaries, started with the production overlay's environment in a
#      private network namespace, answer their probes, decide a scan, serve the
#      metrics the alerts use and stop within their grace periods.
# A Docker engine is not needed and not used: scripts/test.sh builds and runs the
# image with podman (deploy/docker/build-local.sh, deploy/local/test-stack.sh).
#
#   deploy/k8s/test.sh
#   deploy/k8s/test.sh --find-kustomize   # only check for kustomize v5 (scripts/test.sh)
#
# Environment:
#   PRESENCE_BIN_DIR    the built binaries (default: target/debug of this workspace);
#                       build them with `cargo build --workspace --all-features --bins`
#   PRESENCE_TANSU      the tansu broker (default: tansu on PATH or in ~/.cargo/bin)
#   PRESENCE_TOOLS_DIR  where the Python tools and promtool are installed
#                       (default ~/.cache/presence-tools; outside the clone)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tools=${PRESENCE_TOOLS_DIR:-${HOME:-/root}/.cache/presence-tools}
venv="$tools/venv-k8s"
# The checks run from the clone: leave no __pycache__ in it.
export PYTHONDONTWRITEBYTECODE=1

log() {
    printf '==> %s\n' "$*" >&2
}

die() {
    printf 'deploy/k8s/test.sh: %s\n' "$*" >&2
    exit 1
}

# `kubectl kustomize` (kustomize v5 inside kubectl 1.27+) or a kustomize v5 binary.
# Debian's kubernetes-client (kubectl 1.20, kustomize v2.0.3) is too old for these
# kustomizations (`patches`, `labels`), and the PyPI package named kustomize is
# another tool, so there is nothing to install from a registry here.
find_kustomize() {
    local version
    if command -v kubectl >/dev/null 2>&1; then
        version=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
        if [ "${version:-0}" -ge 5 ]; then
            kustomize=(kubectl kustomize)
            return
        fi
    fi
    if command -v kustomize >/dev/null 2>&1; then
        version=$(kustomize version 2>/dev/null | sed -n 's/^v\{0,1\}\([0-9]*\).*/\1/p')
        if [ "${version:-0}" -ge 5 ]; then
            kustomize=(kustomize build)
            return
        fi
    fi
    die "needs kustomize v5: kubectl 1.27 or newer (\`kubectl kustomize\`), or a kustomize v5 binary on PATH"
}

# The Python checks' packages, in their own virtualenv (other tools of the project
# use other venvs beside it), reinstalled only when requirements.txt changes.
ensure_venv() {
    local stamp="$venv/.requirements.sha256" want
    want=$(sha256sum "$here/test/requirements.txt" | cut -d' ' -f1)
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    log "installing the manifest checks' Python packages into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/test/requirements.txt"
    echo "$want" >"$stamp"
}

# promtool from Debian's prometheus package, unpacked (not installed: the
# package would bring a Prometheus service along).
PROMETHEUS_DEB=prometheus
ensure_promtool() {
    promtool="$tools/prometheus-deb/usr/bin/promtool"
    [ -x "$promtool" ] && return
    command -v apt-get >/dev/null 2>&1 || die "promtool is needed: install Debian's prometheus package, or Prometheus's promtool"
    log "unpacking promtool from Debian's $PROMETHEUS_DEB package into $tools"
    local download
    download=$(mktemp -d)
    # Package lists may be missing or stale on a fresh machine: update once and retry.
    if ! (cd "$download" && apt-get download -qq "$PROMETHEUS_DEB" 2>/dev/null); then
        apt-get update -qq
        (cd "$download" && apt-get download -qq "$PROMETHEUS_DEB")
    fi
    dpkg-deb -x "$download"/${PROMETHEUS_DEB}_*.deb "$tools/prometheus-deb"
    rm -rf "$download"
    [ -x "$promtool" ] || die "the $PROMETHEUS_DEB package held no usr/bin/promtool"
}

find_tansu() {
    tansu=${PRESENCE_TANSU:-$(command -v tansu || echo "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/tansu")}
    [ -x "$tansu" ] || die "tansu is needed (scripts/test.sh installs it): set PRESENCE_TANSU"
}

main() {
    local bin_dir=${PRESENCE_BIN_DIR:-$repo/target/debug}
    local name dir
    find_kustomize
    if [ "${1:-}" = "--find-kustomize" ]; then
        printf '%s\n' "${kustomize[*]}"
        return
    fi
    ensure_venv
    ensure_promtool
    find_tansu
    command -v redis-server >/dev/null 2>&1 || die "redis-server is needed (apt-get install redis-server)"
    # Global, not local: the EXIT trap runs after main has returned.
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT

    local rendered=()
    for dir in overlays/production overlays/dev examples/doors-open examples/secured examples/gateway-api; do
        name=${dir//\//-}
        log "${kustomize[*]} deploy/k8s/$dir"
        "${kustomize[@]}" "$here/$dir" >"$out/$name.yaml"
        rendered+=("$name=$out/$name.yaml")
    done

    log "validating the rendered resources and comparing them with the workspace"
    (cd "$here/test" && "$venv/bin/python" check_manifests.py --repo "$repo" --bin-dir "$bin_dir" \
        --examples "$here/examples" --rules-out "$out/rules.yaml" "${rendered[@]}")

    log "promtool check rules, promtool test rules"
    "$promtool" check rules "$out/rules.yaml" >/dev/null
    cp "$here/test/alerts.test.yaml" "$out/"
    (cd "$out" && "$promtool" test rules alerts.test.yaml)

    # Own network and mount namespaces: the binaries bind the manifests' ports and
    # resolve the manifests' host names (a private /etc/hosts), touching nothing
    # outside. Without root, a user namespace grants what that needs.
    local namespaces=(unshare --net --mount --fork)
    [ "$(id -u)" -eq 0 ] || namespaces=(unshare --user --map-root-user --net --mount --fork)
    log "running the binaries as overlays/production configures them (private network namespace)"
    "${namespaces[@]}" -- "$venv/bin/python" "$here/test/check_serve.py" --repo "$repo" \
        --rendered "$out/overlays-production.yaml" --examples "$here/examples" --bin-dir "$bin_dir" \
        --tansu "$tansu" --rules "$out/rules.yaml"
}

main "$@"
