#!/usr/bin/env bash
# Makes a minimal runtime base image locally, for machines that cannot pull
# deploy/docker/Dockerfile's public base (gcr.io/distroless/cc-debian12):
#
#   deploy/docker/make-base.sh IMAGE BINARY...
#
# The root holds what distroless's cc image holds for these binaries and nothing
# else: the shared libraries BINARY... link (as `ldd` resolves them here), each
# unpacked from the Debian package that owns it at the version installed here,
# Debian's CA certificates (ca-certificates) as the bundle
# /etc/ssl/certs/ca-certificates.crt, the user and group `nonroot` (65532), and an
# empty /tmp. No shell, no package manager. The packages come through apt
# (`apt-get download`, apt's candidate version: security fixes included), from
# whatever source this machine's apt is configured with. Then `podman import`
# makes IMAGE of the root.
#
# The binaries must have been built on this machine (or one with the same Debian
# release): the libraries are this system's.
#
# Runs as any user: the root's owners are set in the archive podman imports
# (root's, and 65532 for /home/nonroot), not on disk, so nothing is chowned.
# Only when apt's package lists are missing or stale does it need root, for the
# `apt-get update` it then runs.
#
# Environment:
#   PRESENCE_PODMAN  the podman command (default: podman; deploy/docker/podman.sh)
set -euo pipefail

log() {
    printf '==> %s\n' "$*" >&2
}

die() {
    printf 'make-base.sh: %s\n' "$*" >&2
    exit 1
}

[ $# -ge 2 ] || die "usage: $0 IMAGE BINARY..."
image=$1
shift
# shellcheck source=podman.sh
. "$(dirname "${BASH_SOURCE[0]}")/podman.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/presence-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
podman_keeps_ulimits "$work"
root="$work/root"
mkdir -p "$root" "$work/debs" "$work/unpacked"

# The libraries' resolved paths, the dynamic loader's among them.
libraries=$(ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }' | sort -u)
[ -n "$libraries" ] || die "ldd found no shared libraries in $*: are they dynamically linked?"

# The package owning each library (dpkg knows the path before or after the /usr merge).
owner() {
    local path=$1 real
    real=$(readlink -f "$path")
    dpkg-query -S "$path" 2>/dev/null || dpkg-query -S "$real" 2>/dev/null ||
        dpkg-query -S "${real#/usr}" 2>/dev/null || die "no Debian package owns $path"
}
packages=$(for library in $libraries; do owner "$library"; done | cut -d: -f1 | sort -u)
packages="$packages ca-certificates"

log "unpacking $(echo $packages) from Debian's packages"
(cd "$work/debs" && apt-get download -qq $packages 2>/dev/null) || {
    # Package lists may be missing or stale on a fresh machine: update once and retry.
    apt-get update -qq
    (cd "$work/debs" && apt-get download -qq $packages)
}
# apt's candidate: the newest of the release (security fixes included), never
# older than what the binaries were linked against here.
for deb in "$work"/debs/*.deb; do
    package=$(dpkg-deb -f "$deb" Package)
    version=$(dpkg-deb -f "$deb" Version)
    installed=$(dpkg-query -W -f '${Version}' "$package")
    dpkg --compare-versions "$version" ge "$installed" ||
        die "apt offers $package $version, older than the installed $installed the binaries were linked against"
done
for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$work/unpacked"
done

# Each library where ldd found it (the /usr-merged path: bookworm's packages ship
# under /lib, which on a merged system is /usr/lib): the loader in /lib64, the rest
# in /lib/x86_64-linux-gnu. Regular files only: a package's symlinks may be
# absolute, and would lead out of the unpacked tree.
mkdir -p "$root/usr/lib/x86_64-linux-gnu" "$root/usr/lib64"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
for library in $libraries; do
    name=$(basename "$library")
    found=$(find "$work/unpacked" -name "$name" -type f | head -n 1)
    [ -n "$found" ] || die "no package unpacked $name as a file"
    cp "$found" "$root/usr/${library#/usr/}"
done

# The CA bundle, as update-ca-certificates makes it from the package's certificates.
mkdir -p "$root/etc/ssl/certs"
find "$work/unpacked/usr/share/ca-certificates" -name '*.crt' | sort | xargs cat >"$root/etc/ssl/certs/ca-certificates.crt"
[ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || die "ca-certificates held no certificates"
mkdir -p "$root/usr/share/doc"
for package in $packages; do
    if [ -f "$work/unpacked/usr/share/doc/$package/copyright" ]; then
        mkdir -p "$root/usr/share/doc/$package"
        cp "$work/unpacked/usr/share/doc/$package/copyright" "$root/usr/share/doc/$package/"
    fi
done

# distroless's users: root, and nonroot as 65532; names resolve through files.
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
mkdir -p "$root/tmp" "$root/home/nonroot" "$root/root"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"

# Everything root's, but nonroot's home: owners given to tar, not set on disk.
log "podman import: $image ($(du -sh "$root" | cut -f1))"
tar --numeric-owner --owner=0 --group=0 --exclude=./home/nonroot -C "$root" -cf "$work/root.tar" .
tar --numeric-owner --owner=65532 --group=65532 --no-recursion -C "$root" -rf "$work/root.tar" ./home/nonroot
"${podman[@]}" import --quiet "$work/root.tar" "$image" >/dev/null
