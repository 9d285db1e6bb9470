#!/usr/bin/env bash
# Builds daprd (the Dapr sidecar) from Go modules into a cache directory outside the repo:
#
#   $CACHE_ROOT/dapr-bin/<dapr version>-<hash of pin, wrapper module, these scripts, go version>/daprd
#
# A rebuild happens only when one of those changes; with the binary present this returns at once.
# Progress goes to stderr; the bin dir is the LAST line of stdout:  BIN=$(./build.sh | tail -1)
#
#   ./build.sh              build if missing, print the bin dir
#   ./build.sh --print-dir  print the bin dir only (no build, it may not exist yet)
#
# The binary is upstream daprd at DAPR_VERSION with only the components of gomod/components
# (state.in-memory, pubsub.in-memory); see gen-gomod.sh for why and how.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cache_key() {
    {
        cat "$DAPR_DIR/versions.env" "$DAPR_DIR/build.sh" "$DAPR_DIR/common.sh" "$DAPR_DIR/../../localcluster/go-env.sh"
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

if [ -x "$BIN_DIR/daprd" ]; then
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
if [ -x "$BIN_DIR/daprd" ]; then
    echo "$BIN_DIR"
    exit 0
fi

LOG="$BIN_DIR/build.log"
STAGE="$BIN_DIR/.tmp.$$"
mkdir -p "$STAGE"
echo "[dapr-build] building daprd $DAPR_VERSION into $BIN_DIR (log: $LOG)" >&2
echo "[dapr-build] a cold build (module downloads + compile) takes a few minutes on two cores" >&2

v=${DAPR_VERSION#v}
LDFLAGS="-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$v \
-X github.com/dapr/dapr/pkg/buildinfo.gitversion=$DAPR_VERSION"

# Own session/process group so an interrupt stops `go` and its compilers in one kill; output to
# a staging name, renamed at the end, so an interrupted build never leaves a binary behind.
setsid bash -c 'cd "$1/gomod" && exec go build -trimpath -ldflags "$2" -o "$3/daprd" .' \
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
"$STAGE/daprd" --version >/dev/null || { echo "[dapr-build] built daprd does not run" >&2; exit 1; }
mv -f "$STAGE/daprd" "$BIN_DIR/daprd"
printf 'DAPR_VERSION=%s\nGO=%s\n' "$DAPR_VERSION" "$(go version)" >"$BIN_DIR/VERSIONS"
echo "[dapr-build] daprd ready in ${SECONDS}s ($(du -h "$BIN_DIR/daprd" | cut -f1))" >&2
echo "$BIN_DIR"
