"""The local cluster: a control plane built from Go modules, kwok's fake nodes, and (where the
host allows it) one real node running our own images. Used by `make demo`, `make cluster` and the
test fixtures alike; see README.md in this directory."""

from .cluster import LocalCluster, real_node_unavailable
from .procs import ClusterError, free_port

__all__ = ["ClusterError", "LocalCluster", "free_port", "real_node_unavailable"]
