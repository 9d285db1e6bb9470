#!/usr/bin/env bash
# Builds Dapr (control plane + sidecar) from Go modules into a cache directory outside the repo:
#
#   $CACHE_ROOT/dapr-bin/<dapr version>-<hash of pin, wrapper module, these scripts, go version>/
#       dapr                 one static multi-call binary (see gomod/main.go)
#       daprd injector operator placement scheduler sentry    hard links to it
#
# A rebuild happens only when one of those changes; with the binary present this returns at once.
# Progress goes to stderr; the bin dir is the LAST line of stdout:  BIN=$(./build.sh | tail -1)
#
#   ./build.sh              build if missing, print the bin dir
#   ./build.sh --print-dir  print the bin dir only (no build, it may not exist yet)
#
# daprd is upstream's at DAPR_VERSION with only the components of gomod/components; see
# gen-gomod.sh for why and how.
set -euo pipefail
DAPR_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$DAPR_DIR/versions.env"
# shellcheck source=../go-env.sh
. "$DAPR_DIR/../go-env.sh"

COMMANDS=(daprd injector operator placement scheduler sentry)

cache_key() {
    {
        cat "$DAPR_DIR/versions.env" "$DAPR_DIR/build.sh" "$DAPR_DIR/../go-env.sh"
        (cd "$DAPR_DIR/gomod" && find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) | LC_ALL=C sort | xargs cat)
        go version
    } | sha256sum | cut -c1-12
}

BIN_DIR="$CACHE_ROOT/dapr-bin/$DAPR_VERSION-$(cache_key)"

if [ "${1:-}" = "--print-dir" ]; then
    echo "$BIN_DIR"
    exit 0
elif [ $# -gt 0 ]; then
    echo "usage: $0 [--print-dir]" >&2
    exit 2
fi

complete() {
    local c
    for c in dapr "${COMMANDS[@]}"; do [ -x "$BIN_DIR/$c" ] || return 1; done
}

if complete; then
    echo "$BIN_DIR"
    exit 0
fi

mkdir -p "$BIN_DIR"
# Two builds of the same key (two terminals, parallel test sessions) would duplicate the work.
exec 9>"$BIN_DIR/.lock"
if ! flock -n 9; then
    echo "[dapr-build] another build of $BIN_DIR is running; waiting for it" >&2
    flock 9
fi
if complete; then
    echo "$BIN_DIR"
    exit 0
fi

LOG="$BIN_DIR/build.log"
STAGE="$BIN_DIR/.tmp.$$"
mkdir -p "$STAGE"
echo "[dapr-build] building dapr $DAPR_VERSION (${COMMANDS[*]}) into $BIN_DIR (log: $LOG)" >&2
echo "[dapr-build] a cold build (module downloads + compile) takes several minutes on two cores" >&2

v=${DAPR_VERSION#v}
# As upstream's Makefile, less the git commit we do not have.
LDFLAGS="-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$v \
-X github.com/dapr/dapr/pkg/buildinfo.gitversion=$DAPR_VERSION \
-X github.com/dapr/kit/logger.DaprVersion=$v"

# Own session/process group so an interrupt stops `go` and its compilers in one kill; output to
# a staging dir, moved into place at the end (the binary last), so an interrupted build never
# leaves what complete() would take for a finished one. CGO_ENABLED=0 (go-env.sh): static, like
# upstream's images.
setsid bash -c 'cd "$1/gomod" && exec go build -trimpath -ldflags "$2" -o "$3/dapr" .' \
    _ "$DAPR_DIR" "$LDFLAGS" "$STAGE" >"$LOG" 2>&1 &
PID=$!
cleanup() {
    kill -- "-$PID" 2>/dev/null || true
    rm -rf "$STAGE"
}
trap cleanup EXIT
trap 'echo "[dapr-build] interrupted" >&2; exit 130' INT TERM

last_beat=$SECONDS
while kill -0 "$PID" 2>/dev/null; do
    sleep 1
    if [ $((SECONDS - last_beat)) -ge 30 ]; then
        last_beat=$SECONDS
        echo "[dapr-build] still building (${SECONDS}s)" >&2
    fi
done
rc=0; wait "$PID" || rc=$?
if [ $rc -ne 0 ]; then
    echo "[dapr-build] FAILED (exit $rc) after ${SECONDS}s; last lines of $LOG:" >&2
    tail -n 30 "$LOG" | sed 's/^/    /' >&2
    exit 1
fi
for c in "${COMMANDS[@]}"; do ln -f "$STAGE/dapr" "$STAGE/$c"; done
"$STAGE/daprd" --version >/dev/null || { echo "[dapr-build] built daprd does not run" >&2; exit 1; }
for c in "${COMMANDS[@]}" dapr; do mv -f "$STAGE/$c" "$BIN_DIR/$c"; done
printf 'DAPR_VERSION=%s\nGO=%s\n' "$DAPR_VERSION" "$(go version)" >"$BIN_DIR/VERSIONS"
echo "[dapr-build] dapr ready in ${SECONDS}s ($(du -h "$BIN_DIR/dapr" | cut -f1))" >&2
echo "$BIN_DIR"
