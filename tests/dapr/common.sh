# Shared by build.sh and gen-gomod.sh (sourced, not run): pin, cache root, Go environment.
# Same cache root and Go caches as tests/controlplane, so the two share downloaded modules.

DAPR_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$DAPR_DIR/versions.env"

CACHE_ROOT=${AIAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aiagent-operator}

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null 2>&1 || { echo "dapr: 'go' not found on PATH" >&2; exit 1; }

export GOMODCACHE="$CACHE_ROOT/gomodcache"
export GOCACHE="$CACHE_ROOT/gocache"
# Module cache files are read-only by default, which makes `rm -rf` of the cache root fail.
export GOFLAGS="-modcacherw"
# Never fetch another toolchain behind the user's back: the go directive must fit the local Go.
export GOTOOLCHAIN=local
export CGO_ENABLED=0

