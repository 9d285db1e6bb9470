"""Kubernetes shapes the AIAgent API reuses: name patterns, references to Secrets and ConfigMaps,
resource requirements. Part of `api` (which re-exports them); apart so `dapr_api` can use them."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from agent_runtime.config import CamelModel

# Kubernetes name shapes, so a bad reference is refused at apply time rather than at reconcile.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"

PreservedObject = dict[str, Any]  # passed through to the pod template as Kubernetes defines it
Quantity = int | str  # a Kubernetes resource quantity: 2, "500m", "1Gi"


class SecretKeyRef(CamelModel):
    """A key of a Secret in the AIAgent's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret.")
    key: str = Field(max_length=253, pattern=CONFIG_KEY, description="Key within the Secret.")


class ConfigMapKeyRef(CamelModel):
    """A key of a ConfigMap in the AIAgent's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the ConfigMap.")
    key: str = Field(max_length=253, pattern=CONFIG_KEY, description="Key within the ConfigMap.")


class ResourceRequirements(CamelModel):
    """Compute resources, as in a Kubernetes container."""

    requests: dict[str, Quantity] | None = Field(
        None, description="Minimum resources, e.g. {cpu: 250m, memory: 512Mi}."
    )
    limits: dict[str, Quantity] | None = Field(
        None, description="Maximum resources, e.g. {memory: 1Gi}."
    )


class LocalObjectReference(CamelModel):
    """A reference to an object in the same namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the object.")
