"""Kubernetes shapes the AIAgent API reuses: name patterns, references to Secrets and ConfigMaps,
resource requirements. Part of `api` (which re-exports them); apart so `dapr_api` can use them."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue

from agent_runtime.config import CamelModel, cel_rule

# Kubernetes name shapes, so a bad reference is refused at apply time rather than at reconcile.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
# A label (or annotation) key: an optional DNS subdomain prefix and '/', then a name of at most
# 63 characters. Written without backslashes, so that CEL string literals take it as it is.
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
QUALIFIED_NAME_MAX = 253 + 1 + 63
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
# What the API server takes as a resource quantity, less the sign (no resource is negative).
QUANTITY = (
    r"^[+]?([0-9]+([.][0-9]*)?|[.][0-9]+)"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?[0-9]{1,3}))?$"
)

PreservedObject = dict[str, Any]  # passed through to the pod template as Kubernetes defines it
Quantity = int | str  # a Kubernetes resource quantity: 2, "500m", "1Gi"
# As a map's values: the schema's pattern and length apply to the string form (as in the
# CRDs controller-gen makes for resource.Quantity); an integer is checked by a CEL rule.
QuantityValue = Annotated[Quantity, Field(json_schema_extra={"pattern": QUANTITY, "maxLength": 64})]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]
QualifiedName = Annotated[str, Field(max_length=QUALIFIED_NAME_MAX, pattern=QUALIFIED_NAME)]


def qualified_keys_rule(what: str) -> dict[str, JsonValue]:
    """A CEL rule for a map whose keys become label or annotation keys on a child (a schema
    cannot constrain a map's keys otherwise)."""
    return cel_rule(
        f"self.all(k, size(k) <= {QUALIFIED_NAME_MAX} && k.matches('{QUALIFIED_NAME}') "
        "&& (!k.contains('/') || k.indexOf('/') <= 253))",
        f"{what} keys must be Kubernetes label keys: [prefix/]name, the name at most 63 "
        "characters (e.g. team, example.com/team)",
    )


def label_map(what: str, max_items: int = 64) -> Any:
    """A Field for a map that becomes Kubernetes labels (or a label selector's matchLabels)."""
    return Field(
        default_factory=dict,
        max_length=max_items,
        json_schema_extra={"x-kubernetes-validations": [qualified_keys_rule(what)]},
    )


_QUANTITY_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: Quantity) -> Decimal | None:
    """A resource quantity as a number (e.g. "1Gi" -> 1073741824), or None if it is not one."""
    text = str(value)
    if not re.fullmatch(QUANTITY, text):
        return None
    match = re.fullmatch(r"[+]?([0-9.]+)([eE][-+]?[0-9]+|[A-Za-z]*)", text)
    if match is None:
        return None
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number) * Decimal(10) ** int(suffix[1:])
        return Decimal(number) * _QUANTITY_SUFFIXES[suffix]
    except (InvalidOperation, KeyError):
        return None


class SecretKeyRef(CamelModel):
    """A key of a Secret in the AIAgent's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret.")
    key: str = Field(max_length=253, pattern=CONFIG_KEY, description="Key within the Secret.")


class ConfigMapKeyRef(CamelModel):
    """A key of a ConfigMap in the AIAgent's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the ConfigMap.")
    key: str = Field(max_length=253, pattern=CONFIG_KEY, description="Key within the ConfigMap.")


STANDARD_RESOURCES = ["cpu", "memory", "ephemeral-storage"]
# An extended resource (a device plugin's, e.g. nvidia.com/gpu): a domain, '/', a name.
EXTENDED_RESOURCE = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)+/"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


def _quantities_rules(what: str) -> list[JsonValue]:
    return [
        cel_rule(
            f"self.all(k, k in {STANDARD_RESOURCES} || (size(k) <= {QUALIFIED_NAME_MAX} "
            f"&& k.matches('{EXTENDED_RESOURCE}') && !k.startsWith('kubernetes.io/')))",
            f"{what}: resources are cpu, memory, ephemeral-storage, or an extended resource "
            "named <domain>/<name> (e.g. nvidia.com/gpu)",
        ),
        cel_rule(
            "self.all(k, !string(self[k]).startsWith('-'))",
            f"{what}: each value must be a non-negative quantity, e.g. 2, 500m, 1.5, 512Mi, 1Gi",
        ),
    ]


class ResourceRequirements(CamelModel):
    """Compute resources, as in a Kubernetes container."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.requests) || !has(self.limits) || self.requests.all(k, "
                    "!(k in self.limits) || !isQuantity(string(self.requests[k])) "
                    "|| !isQuantity(string(self.limits[k])) || "
                    "quantity(string(self.requests[k])).compareTo("
                    "quantity(string(self.limits[k]))) <= 0)",
                    "each request must be less than or equal to the limit of the same resource",
                    ".requests",
                ),
                cel_rule(
                    "!has(self.requests) || self.requests.all(k, !k.contains('/') "
                    "|| (has(self.limits) && k in self.limits "
                    "&& string(self.requests[k]) == string(self.limits[k])))",
                    "an extended resource (<domain>/<name>) needs a limit, and its request, if "
                    "set, must equal the limit",
                    ".requests",
                ),
                cel_rule(
                    "!has(self.limits) || self.limits.all(k, !k.contains('/') "
                    "|| string(self.limits[k]).matches('^[+]?[0-9]+$'))",
                    "an extended resource (<domain>/<name>) takes a whole number, e.g. 1",
                    ".limits",
                ),
            ]
        }
    }

    requests: dict[str, QuantityValue] | None = Field(
        None,
        max_length=16,
        description="Minimum resources, e.g. {cpu: 250m, memory: 512Mi}.",
        json_schema_extra={"x-kubernetes-validations": _quantities_rules("requests")},
    )
    limits: dict[str, QuantityValue] | None = Field(
        None,
        max_length=16,
        description="Maximum resources, e.g. {memory: 1Gi}.",
        json_schema_extra={"x-kubernetes-validations": _quantities_rules("limits")},
    )


class LocalObjectReference(CamelModel):
    """A reference to an object in the same namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the object.")


class LabelSelectorRequirement(CamelModel):
    """A label selector requirement, as in Kubernetes."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                    " : (!has(self.values) || size(self.values) == 0)",
                    "In and NotIn need values; Exists and DoesNotExist take none",
                    ".values",
                )
            ]
        }
    }

    key: QualifiedName = Field(description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[LabelValue] | None = Field(
        None, max_length=64, description="Label values, for In and NotIn."
    )


class LabelSelector(CamelModel):
    """A label selector, as in Kubernetes: every matchLabels pair and every matchExpressions
    requirement must hold; an empty selector selects everything."""

    match_labels: dict[str, LabelValue] | None = Field(
        None,
        max_length=64,
        description="Labels that must be present with these values.",
        json_schema_extra={"x-kubernetes-validations": [qualified_keys_rule("matchLabels")]},
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        None, max_length=32, description="Requirements on labels."
    )


# -- environment ----------------------------------------------------------------------------------

# The pod fields a container may read through the downward API (env valueFrom.fieldRef).
FIELD_PATH = (
    r"^(metadata[.](name|namespace|uid)|metadata[.](labels|annotations)\['[^']+'\]"
    r"|spec[.](nodeName|serviceAccountName)|status[.](hostIP|hostIPs|podIP|podIPs))$"
)
RESOURCE_FIELD = r"^(limits|requests)[.](cpu|memory|ephemeral-storage)$"


class OptionalSecretKeyRef(SecretKeyRef):
    """A key of a Secret, as in a Kubernetes SecretKeySelector."""

    optional: bool | None = Field(None, description="Start the pod even if the key is missing.")


class OptionalConfigMapKeyRef(ConfigMapKeyRef):
    """A key of a ConfigMap, as in a Kubernetes ConfigMapKeySelector."""

    optional: bool | None = Field(None, description="Start the pod even if the key is missing.")


class ObjectFieldSelector(CamelModel):
    """A field of the pod (downward API)."""

    field_path: str = Field(
        max_length=512,
        pattern=FIELD_PATH,
        description="e.g. metadata.name, metadata.labels['team'], status.podIP.",
    )
    api_version: Literal["v1"] | None = Field(None, description="Always v1.")


class ResourceFieldSelector(CamelModel):
    """A resource request or limit of the agent container (downward API)."""

    resource: str = Field(
        max_length=64, pattern=RESOURCE_FIELD, description="e.g. limits.memory, requests.cpu."
    )
    container_name: Literal["agent"] | None = Field(
        None, description="The agent container (the only one the spec describes)."
    )
    divisor: QuantityValue | None = Field(None, description="Unit of the value, e.g. 1Mi.")


class EnvVarSource(CamelModel):
    """Where an environment variable's value comes from, as in Kubernetes (exactly one)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
                    "has(self.resourceFieldRef)].filter(x, x).size() == 1",
                    "valueFrom needs exactly one of secretKeyRef, configMapKeyRef, fieldRef or "
                    "resourceFieldRef",
                )
            ]
        }
    }

    secret_key_ref: OptionalSecretKeyRef | None = Field(None, description="A Secret's key.")
    config_map_key_ref: OptionalConfigMapKeyRef | None = Field(
        None, description="A ConfigMap's key."
    )
    field_ref: ObjectFieldSelector | None = Field(None, description="A field of the pod.")
    resource_field_ref: ResourceFieldSelector | None = Field(
        None, description="A resource of the agent container."
    )


class NameRef(CamelModel):
    """A ConfigMap or Secret in the AIAgent's namespace, all of whose keys become variables."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Its name.")
    optional: bool | None = Field(None, description="Start the pod even if it is missing.")


class EnvFromSource(CamelModel):
    """Every key of a ConfigMap or Secret as an environment variable, as in Kubernetes."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.configMapRef) != has(self.secretRef)",
                    "envFrom entries need exactly one of configMapRef or secretRef",
                )
            ]
        }
    }

    prefix: str | None = Field(
        None,
        max_length=253,
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        description="Prepended to each key.",
    )
    config_map_ref: NameRef | None = Field(None, description="A ConfigMap.")
    secret_ref: NameRef | None = Field(None, description="A Secret.")


# -- affinity -------------------------------------------------------------------------------------


class NodeSelectorRequirement(CamelModel):
    """A requirement on a node's labels (or fields), as in Kubernetes."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                    " : self.operator in ['Gt', 'Lt'] ? (has(self.values) && size(self.values) == 1"
                    " && self.values[0].matches('^-?[0-9]+$'))"
                    " : (!has(self.values) || size(self.values) == 0)",
                    "In and NotIn need values, Gt and Lt one integer, Exists and DoesNotExist none",
                    ".values",
                )
            ]
        }
    }

    key: QualifiedName = Field(description="The node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, Gt or Lt."
    )
    values: list[LabelValue] | None = Field(None, max_length=64, description="Values.")


class NodeSelectorTerm(CamelModel):
    """Requirements that must all hold, as in Kubernetes."""

    match_expressions: list[NodeSelectorRequirement] | None = Field(
        None, max_length=32, description="Requirements on node labels."
    )
    match_fields: list[NodeSelectorRequirement] | None = Field(
        None, max_length=32, description="Requirements on node fields (metadata.name)."
    )


class NodeSelector(CamelModel):
    """Node selector terms, any one of which must hold."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=32, description="The terms (ORed)."
    )


class PreferredSchedulingTerm(CamelModel):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100, description="Weight, 1 to 100.")
    preference: NodeSelectorTerm = Field(description="The preferred nodes.")


class NodeAffinity(CamelModel):
    """Node affinity, as in Kubernetes."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        None, description="Nodes the pods must run on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = (
        Field(None, max_length=32, description="Nodes the pods prefer.")
    )


class PodAffinityTerm(CamelModel):
    """Pods (by labels and namespaces) to run near, or away from, per topology domain."""

    label_selector: LabelSelector | None = Field(None, description="The pods.")
    namespace_selector: LabelSelector | None = Field(None, description="Their namespaces.")
    namespaces: list[Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]] | None = Field(
        None, max_length=32, description="Their namespaces, by name."
    )
    topology_key: QualifiedName = Field(description="e.g. kubernetes.io/hostname.")
    match_label_keys: list[QualifiedName] | None = Field(
        None, max_length=32, description="Label keys whose values the pods must share."
    )
    mismatch_label_keys: list[QualifiedName] | None = Field(
        None, max_length=32, description="Label keys whose values the pods must not share."
    )


class WeightedPodAffinityTerm(CamelModel):
    """A weighted pod (anti-)affinity preference."""

    weight: int = Field(ge=1, le=100, description="Weight, 1 to 100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(CamelModel):
    """Pod affinity or anti-affinity, as in Kubernetes."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        None, max_length=32, description="Terms that must hold."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        Field(None, max_length=32, description="Terms preferred.")
    )


class Affinity(CamelModel):
    """Scheduling constraints of the pods, as in Kubernetes."""

    node_affinity: NodeAffinity | None = Field(None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(None, description="Pod affinity.")
    pod_anti_affinity: PodAffinity | None = Field(None, description="Pod anti-affinity.")
