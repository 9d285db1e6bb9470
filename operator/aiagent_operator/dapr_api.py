"""The `spec.dapr` part of the AIAgent API: the sidecar, and the Dapr Components the agent uses
(existing ones by name, or ones the operator creates from `type` and `metadata`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue, field_validator

from agent_runtime.config import CamelModel, DaprSubscription, cel_rule

from .kubetypes import DNS_LABEL, DNS_SUBDOMAIN, ResourceRequirements, SecretKeyRef


class ComponentMetadataEntry(CamelModel):
    """One metadata entry of a Dapr Component: a literal value, or a Secret key Dapr reads."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.value) != has(self.secretKeyRef)",
                    "metadata entries need exactly one of value or secretKeyRef",
                )
            ]
        }
    }

    name: str = Field(
        min_length=1, max_length=253, description="Metadata field of the component, e.g. redisHost."
    )
    value: str | None = Field(
        None, max_length=16384, description="Literal value. Use secretKeyRef for passwords."
    )
    secret_key_ref: SecretKeyRef | None = Field(
        None,
        description="A key of a Secret in the AIAgent's namespace; Dapr resolves it through its "
        "built-in Kubernetes secret store, so the value never passes through the operator.",
    )


def _component_rules(field: str, prefix: str, kind: str) -> list[JsonValue]:
    """CEL rules of spec.dapr.<field>: `type` asks the operator to create the Component, and only
    then do version and metadata mean anything."""
    path = f"spec.dapr.{field}"
    return [
        cel_rule(
            f"!has(self.type) || self.type.startsWith('{prefix}')",
            f"{path}.type must start with '{prefix}' (a Dapr {kind} component type, e.g. "
            f"{prefix}redis)",
            ".type",
        ),
        cel_rule(
            "has(self.type) || !has(self.version)",
            f"{path}.version needs {path}.type: without a type the Component must already exist "
            "and keeps its own version",
            ".version",
        ),
        cel_rule(
            "has(self.type) || !has(self.metadata) || size(self.metadata) == 0",
            f"{path}.metadata needs {path}.type: set type to have the operator create the "
            "Component, or drop metadata to use an existing Component as it is",
            ".metadata",
        ),
    ]


class DaprComponentRef(CamelModel):
    """A Dapr Component the agent uses: an existing one (name only), or one the operator creates,
    scoped to the agent's app id and owned by the AIAgent (name and type)."""

    name: str = Field(
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Component name: an existing Component in the AIAgent's namespace, or the "
        "one to create when type is set.",
    )
    type: str | None = Field(
        None,
        max_length=253,
        pattern=r"^[a-z0-9]+(\.[a-z0-9][-a-z0-9_]*)+$",
        description="Component type, e.g. state.redis or pubsub.redis. Set: the operator "
        "creates the Component from type, version and metadata. Unset: the Component must "
        "already exist.",
    )
    version: str | None = Field(
        None,
        max_length=32,
        pattern=r"^v[0-9]+((alpha|beta)[0-9]*)?$",
        description="Component version (only with type). Defaults to v1.",
    )
    metadata: list[ComponentMetadataEntry] = Field(
        default_factory=list,
        max_length=64,
        description="Component metadata (only with type): each entry a value or a secretKeyRef.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class StateStoreRef(DaprComponentRef):
    """The Dapr state store that keeps conversation memory across restarts and replicas."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": _component_rules("stateStore", "state.", "state store")
        }
    }


class PubsubRef(DaprComponentRef):
    """The Dapr pub/sub component the agent subscribes and publishes through."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": _component_rules("pubsub", "pubsub.", "pub/sub")
        }
    }


class DaprSpec(CamelModel):
    """The Dapr sidecar: state (conversation memory) and messaging for the agent."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.subscribe) || has(self.pubsub)",
                    "spec.dapr.subscribe needs spec.dapr.pubsub: name the pub/sub Component "
                    "to subscribe through",
                    ".subscribe",
                ),
                cel_rule(
                    "!has(self.stateStore) || !has(self.pubsub) "
                    "|| self.stateStore.name != self.pubsub.name",
                    "spec.dapr.stateStore.name and spec.dapr.pubsub.name must differ: one "
                    "Component cannot be both a state store and a pub/sub",
                    ".pubsub.name",
                ),
            ]
        }
    }

    enabled: bool = Field(True, description="Annotate the pods for Dapr sidecar injection.")
    app_id: str | None = Field(
        None,
        max_length=63,
        pattern=DNS_LABEL,
        description="Dapr app id. Defaults to the AIAgent's name.",
    )
    state_store: StateStoreRef | None = Field(
        None,
        description="Dapr state store that keeps conversation memory across restarts: an "
        "existing Component (name), or one the operator creates (name, type, metadata).",
    )
    pubsub: PubsubRef | None = Field(
        None,
        description="Dapr pub/sub: an existing Component (name), or one the operator creates "
        "(name, type, metadata).",
    )
    # The runtime owns what a subscription means; the spec takes its model as it is.
    subscribe: DaprSubscription | None = Field(
        None,
        description="Take questions from a topic of spec.dapr.pubsub and publish the answers "
        "to another (needs pubsub).",
    )
    config: str | None = Field(
        None, max_length=253, description="Dapr Configuration resource (dapr.io/config)."
    )
    log_level: Literal["debug", "info", "warn", "error"] = Field(
        "info", description="Log level of the sidecar."
    )
    enable_metrics: bool = Field(True, description="Let the sidecar expose Prometheus metrics.")
    sidecar: ResourceRequirements | None = Field(
        None, description="Resources of the sidecar container (cpu and memory only)."
    )

    @field_validator("state_store", "pubsub", mode="before")
    @classmethod
    def _name_alone(cls, value: object) -> object:
        # AIAgents stored before the object form (a plain Component name) still read; the CRD
        # refuses the string form for anything written now.
        return {"name": value} if isinstance(value, str) else value

    def components(self) -> list[tuple[str, DaprComponentRef]]:
        """(spec field, reference) of each Component the agent names, in a stable order."""
        refs: list[tuple[str, DaprComponentRef | None]] = [
            ("spec.dapr.stateStore", self.state_store),
            ("spec.dapr.pubsub", self.pubsub),
        ]
        return [(field, ref) for field, ref in refs if ref is not None]
