"""A local Kubernetes control plane built from Go modules (see README.md in this directory)."""
