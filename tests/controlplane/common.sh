# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the sourcing script
# Shared by build.sh and gen-gomod.sh (sourced, not run): pins, cache root, Go environment.
# Everything Go downloads or compiles lives under one cache root outside the repo, so a
# warm machine rebuilds nothing and `rm -rf` of that root is a full reset.

CONTROLPLANE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$CONTROLPLANE_DIR/versions.env"

CACHE_ROOT=${AIAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aiagent-operator}

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null 2>&1 || { echo "controlplane: 'go' not found on PATH" >&2; exit 1; }

export GOMODCACHE="$CACHE_ROOT/gomodcache"
export GOCACHE="$CACHE_ROOT/gocache"
# Module cache files are read-only by default, which makes `rm -rf` of the cache root fail.
export GOFLAGS="-modcacherw"
# Never fetch another toolchain behind the user's back: the go directive must fit the local Go.
export GOTOOLCHAIN=local
export CGO_ENABLED=0

# Staging modules (k8s.io/api, ...) are published as v0.MINOR.PATCH for Kubernetes v1.MINOR.PATCH.
STAGING_VERSION="v0.${KUBERNETES_VERSION#v1.}"
