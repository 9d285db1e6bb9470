# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the sourcing script
# Shared by build.sh and gen-gomod.sh (sourced, not run): pins and the Go environment.

CONTROLPLANE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$CONTROLPLANE_DIR/versions.env"

# shellcheck source=go-env.sh
. "$CONTROLPLANE_DIR/go-env.sh"

# Staging modules (k8s.io/api, ...) are published as v0.MINOR.PATCH for Kubernetes v1.MINOR.PATCH.
STAGING_VERSION="v0.${KUBERNETES_VERSION#v1.}"
