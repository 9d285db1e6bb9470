# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the sourcing script
# The Go build environment shared by localcluster/ and tests/dapr (sourced, not run).
# Everything Go downloads or compiles lives under one cache root outside the repo, so a warm
# machine rebuilds nothing, both builds share downloaded modules, and `rm -rf` of the root resets.

CACHE_ROOT=${AIAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aiagent-operator}

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null 2>&1 || { echo "'go' not found on PATH" >&2; exit 1; }

export GOMODCACHE="$CACHE_ROOT/gomodcache"
export GOCACHE="$CACHE_ROOT/gocache"
# Module cache files are read-only by default, which makes `rm -rf` of the cache root fail.
export GOFLAGS="-modcacherw"
# Never fetch another toolchain behind the user's back: the go directive must fit the local Go.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
