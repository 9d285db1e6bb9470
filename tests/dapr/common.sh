# shellcheck shell=bash
# Shared by build.sh and gen-gomod.sh (sourced, not run): pin, cache root, Go environment.
# Same cache root and Go caches as localcluster/, so the two share downloaded modules.

DAPR_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$DAPR_DIR/versions.env"

# shellcheck source=../../localcluster/go-env.sh
. "$DAPR_DIR/../../localcluster/go-env.sh"

