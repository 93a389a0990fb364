#!/usr/bin/env bash
# Protobuf hygiene for proto/: `buf lint` (proto/buf.yaml), then `buf breaking`
# against the version of proto/ this one replaces, so a change that would break
# readers of records already on the topics (or their generated code) fails.
#
#   scripts/check-protos.sh                      # buf from PATH, or BUF=/path/to/buf
#   PRESENCE_BUF_AGAINST='.git#tag=v1.0.0,subdir=proto' scripts/check-protos.sh
#
# What `buf breaking` compares against, unless PRESENCE_BUF_AGAINST names any buf
# input (a git ref, a descriptor set file, a module):
# 1. on a branch: the merge base with main (`main`, else `origin/main`), so the
#    branch's whole change counts, whatever main did since;
# 2. on main itself with proto/ edited but not committed: HEAD;
# 3. on main itself, clean: the parent of the newest commit that changed proto/,
#    so CI on main checks the latest schema change. A push of several schema
#    commits is checked as one step from the oldest of them only if CI runs on
#    each; PRESENCE_BUF_AGAINST pins a release instead.
# A shallow clone lacks that history: it is fetched (`git fetch --unshallow`),
# and if that fails the check fails rather than compare against nothing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUF=${BUF:-buf}

log() {
    printf '==> %s\n' "$*" >&2
}

# The commit whose proto/ this one is compared with; empty when proto/ has no
# earlier version (it was added by the first commit).
base_commit() {
    local main mb newest
    for main in main origin/main; do
        if git rev-parse --verify --quiet "$main^{commit}" >/dev/null; then
            mb=$(git merge-base HEAD "$main")
            if [ "$mb" != "$(git rev-parse HEAD)" ]; then
                echo "$mb"
                return
            fi
            break
        fi
    done
    if [ -n "$(git status --porcelain -- proto)" ]; then
        git rev-parse HEAD
        return
    fi
    newest=$(git log -1 --format=%H HEAD -- proto)
    git rev-parse --verify --quiet "$newest^" || true
}

if [ "$(git rev-parse --is-shallow-repository)" = true ] && [ -z "${PRESENCE_BUF_AGAINST:-}" ]; then
    log "shallow clone: fetching the history buf breaking compares against"
    if ! git fetch --quiet --unshallow; then
        log "cannot fetch the history of proto/: run 'git fetch --unshallow', or set PRESENCE_BUF_AGAINST"
        exit 1
    fi
fi

log "buf lint proto"
"$BUF" lint proto

against=${PRESENCE_BUF_AGAINST:-}
if [ -z "$against" ]; then
    base=$(base_commit)
    if [ -z "$base" ]; then
        log "buf breaking: proto/ has no earlier version to compare with"
        exit 0
    fi
    # The common dir, so that a git worktree works too.
    against="$(git rev-parse --path-format=absolute --git-common-dir)#format=git,ref=$base,subdir=proto"
fi
log "buf breaking proto --against $against"
"$BUF" breaking proto --against "$against"
