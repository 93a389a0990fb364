# The podman command of the scripts that build and run the image
# (deploy/docker/build-local.sh and make-base.sh, deploy/local/stack.sh and
# test-stack.sh, scripts/bench/service-memory.sh), sourced by each:
#
#   PRESENCE_PODMAN  the podman command, words split on spaces (default: podman;
#                    scripts/test.sh sets `podman --runtime runc`: podman's
#                    default runtime, crun, fails on this kind of machine's
#                    cgroups, runc does not)
#
# Sets the array `podman`. podman_keeps_ulimits DIR points podman at a
# containers.conf in DIR with `default_ulimits = []` unless CONTAINERS_CONF already
# names one: otherwise runc fails to set RLIMIT_NOFILE on this kind of machine, and
# with it containers keep the host's open-files limit.
# shellcheck shell=bash

read -r -a podman <<<"${PRESENCE_PODMAN:-podman}"

podman_keeps_ulimits() {
    if [ -z "${CONTAINERS_CONF:-}" ]; then
        printf '[containers]\ndefault_ulimits = []\n' >"$1/containers.conf"
        export CONTAINERS_CONF="$1/containers.conf"
    fi
}
