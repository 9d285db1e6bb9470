"""The AIAgent API (`aiagents.dev/v1alpha1`) as pydantic models: the one source of truth.

`aiagent_operator.crd` generates the CRD's schema from these models (`make crds`), so every
description here is what `kubectl explain aiagent.spec...` prints, and every bound and rule here
is enforced by the API server before the operator sees an object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue, field_validator, model_validator

from agent_runtime.config import (
    MCP_HEADER_ENV_PREFIX,
    MODEL_RULES,
    RESERVED_HEADER_RULE,
    AgentFields,
    BudgetSection,
    CamelModel,
    Framework,
    LimitsFields,
    McpHeaderFields,
    McpServerFields,
    cel_rule,
    unique_mcp_servers,
)
from agent_runtime.config import ModelConfig as ModelFields

from .dapr_api import (
    ComponentMetadataEntry,
    DaprComponentRef,
    DaprSpec,
    PubsubRef,
    StateStoreRef,
)
from .kubetypes import (
    CONFIG_KEY,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    LABEL_VALUE,
    QUALIFIED_NAME,
    QUALIFIED_NAME_MAX,
    Affinity,
    ConfigMapKeyRef,
    EnvFromSource,
    EnvVarSource,
    LabelValue,
    LocalObjectReference,
    PreservedObject,
    Quantity,
    ResourceRequirements,
    SecretKeyRef,
    qualified_keys_rule,
)
from .network_policy import NetworkPolicySpec

GROUP = "aiagents.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AIAgent"
PLURAL = "aiagents"
SINGULAR = "aiagent"
SHORT_NAMES = ["aia"]
CATEGORIES = ["ai", "agents"]
MODEL_CONFIG_KIND = "ModelConfig"
MODEL_CONFIG_PLURAL = "modelconfigs"
MODEL_CONFIG_SINGULAR = "modelconfig"
MODEL_CONFIG_SHORT_NAMES = ["aimc"]

ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# The children (Service, pod labels, Dapr app id) need the AIAgent's name to be a DNS-1035 label.
MAX_NAME_LENGTH = 63
# A pod's annotations (ours among them) must fit in 256 KiB: 32 of 7 KiB leave room for ours.
MAX_POD_ANNOTATIONS = 32
MAX_CONDITION_MESSAGE = 32768
MAX_ANNOTATION_BYTES = 7168

__all__ = [
    "CONFIG_KEY",
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "ComponentMetadataEntry",
    "ConfigMapKeyRef",
    "DaprComponentRef",
    "DaprSpec",
    "LocalObjectReference",
    "PreservedObject",
    "PubsubRef",
    "Quantity",
    "ResourceRequirements",
    "SecretKeyRef",
    "StateStoreRef",
]


# Besides the runtime's rules: a baseURL must parse as a URL with a host, as the operator reads it
# to open the NetworkPolicy towards the model.
_MODEL_RULES: list[JsonValue] = [
    *MODEL_RULES,
    cel_rule(
        "!has(self.baseURL) || (isURL(self.baseURL) && url(self.baseURL).getHost() != '')",
        "model.baseURL must be an http:// or https:// URL with a host, "
        "e.g. http://vllm.models.svc:8000/v1",
        ".baseURL",
    ),
]


class ModelSpec(ModelFields):
    """The language model, plus where its API key lives."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": _MODEL_RULES}}

    api_key_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding the provider API key. It reaches the pod as the "
        "MODEL_API_KEY environment variable and is never copied anywhere else. "
        "Optional for ollama and for servers that need no key.",
    )


class ModelRef(CamelModel):
    """A ModelConfig the agent uses instead of spec.model: the platform's model, endpoint and API
    key, shared by many agents. Temperature and max tokens may be set here per agent."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="The ModelConfig's name.")
    namespace: str | None = Field(
        None,
        max_length=63,
        pattern=DNS_LABEL,
        description="The ModelConfig's namespace; unset: the AIAgent's own. One in another "
        "namespace must list the AIAgent's namespace in spec.allowedNamespaces.",
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="Overrides the ModelConfig's temperature for this agent."
    )
    max_tokens: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Overrides the ModelConfig's maxTokens for this agent.",
    )


# A namespace name, or "*" for every namespace.
ALLOWED_NAMESPACE = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"


class NamespaceBudget(CamelModel):
    """What all the agents of one namespace that use a ModelConfig may spend together."""

    requests_per_minute: int | None = Field(
        None, ge=1, le=10_000_000, description="Requests per minute, summed over the agents."
    )
    tokens_per_minute: int | None = Field(
        None,
        ge=1,
        le=10_000_000_000,
        description="Model tokens (in + out) per minute, summed over the agents.",
    )


class ModelConfigSpec(ModelSpec):
    """A model the platform offers to AIAgents (spec.modelRef), and who may use it."""

    api_key_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key, in the ModelConfig's namespace, holding the provider API key. "
        "Agents never read this Secret: the operator copies the key into a Secret it manages in "
        "each agent's namespace (<agent>-model-key), and keeps the copy current.",
    )
    allowed_namespaces: list[Annotated[str, Field(max_length=63, pattern=ALLOWED_NAMESPACE)]] = (
        Field(
            default_factory=list,
            max_length=256,
            description="Namespaces, besides the ModelConfig's own, whose AIAgents may use it; "
            "'*' allows every namespace.",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        )
    )
    namespace_budget: NamespaceBudget | None = Field(
        None,
        description="A budget per namespace: the sum of what that namespace's agents spend "
        "through this ModelConfig, enforced by the agents' runtimes before each request.",
    )


class ModelConfig(CamelModel):
    """A ModelConfig as the operator reads it from the API server."""

    model_config = {"extra": "ignore"}

    name: str
    namespace: str
    uid: str = ""
    resource_version: str = ""
    spec: ModelConfigSpec

    @classmethod
    def from_body(cls, body: Any) -> ModelConfig:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            resource_version=meta.get("resourceVersion", ""),
            spec=ModelConfigSpec.model_validate(dict(body.get("spec") or {})),
        )

    def allows(self, namespace: str) -> bool:
        """Whether AIAgents in `namespace` may use it."""
        allowed = self.spec.allowed_namespaces
        return namespace == self.namespace or "*" in allowed or namespace in allowed


# Headers that carry credentials: a plain value would sit in the agent's ConfigMap.
CREDENTIAL_HEADERS = ["authorization", "proxy-authorization", "cookie", "x-api-key"]


class SecretSource(CamelModel):
    """Where a secret value comes from."""

    secret_key_ref: SecretKeyRef = Field(
        description="A key of a Secret in the AIAgent's namespace."
    )


class McpHeaderSpec(McpHeaderFields):
    """A header sent to an MCP server: a literal value, or a Secret key (for credentials)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                RESERVED_HEADER_RULE,
                cel_rule(
                    "has(self.value) != has(self.valueFrom)",
                    "an MCP header needs exactly one of value or valueFrom",
                ),
                cel_rule(
                    f"!has(self.value) || !(self.name.lowerAscii() in {CREDENTIAL_HEADERS})",
                    "this header carries a credential: take it from a Secret with "
                    "valueFrom.secretKeyRef, not a plain value",
                    ".value",
                ),
            ]
        }
    }

    value: str | None = Field(
        None, max_length=8192, description="Literal value, for headers that are not secret."
    )
    value_from: SecretSource | None = Field(
        None,
        description="The value from a Secret: it reaches the pod as an environment variable "
        f"({MCP_HEADER_ENV_PREFIX}<SERVER>__<HEADER>) and is never copied anywhere else. The "
        "Secret holds the whole value, e.g. 'Bearer <token>'.",
    )


class McpServerSpec(McpServerFields):
    """An MCP server (streamable HTTP) whose tools the agent may call."""

    headers: list[McpHeaderSpec] = Field(
        default_factory=list,
        max_length=16,
        description="Headers sent with every request to the server.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "x-kubernetes-validations": [
                cel_rule(
                    "self.all(h, self.filter(o, o.name.lowerAscii() == h.name.lowerAscii())"
                    ".size() == 1)",
                    "header names must be unique (HTTP header names ignore case)",
                )
            ],
        },
    )


class AgentSpec(AgentFields):
    """What the agent is and does."""

    mcp_servers: list[McpServerSpec] = Field(
        default_factory=list,
        max_length=16,
        description="MCP servers (streamable HTTP) whose tools the agent may call, besides the "
        "built-in tools; each tool is offered to the model as <server>_<tool>.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @model_validator(mode="after")
    def _unique_servers(self) -> AgentSpec:
        unique_mcp_servers(self.mcp_servers)
        return self

    config_map_ref: ConfigMapKeyRef | None = Field(
        None,
        description="A ConfigMap key holding a full framework config (CrewAI agents/tasks YAML or "
        "LangChain agent settings), mounted into the pod and used instead of the inline fields.",
    )


class AutoscalingSpec(CamelModel):
    """A HorizontalPodAutoscaler on CPU. While enabled, spec.replicas is ignored."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "self.maxReplicas >= self.minReplicas",
                    "autoscaling.maxReplicas must be greater than or equal to "
                    "autoscaling.minReplicas",
                    ".maxReplicas",
                )
            ]
        }
    }

    enabled: bool = Field(False, description="Create a HorizontalPodAutoscaler for the agent.")
    min_replicas: int = Field(1, ge=1, le=1000, description="Lower bound of replicas.")
    max_replicas: int = Field(10, ge=1, le=1000, description="Upper bound of replicas.")
    target_cpu_utilization_percentage: int = Field(
        70,
        ge=1,
        le=100,
        alias="targetCPUUtilizationPercentage",
        description="Average CPU utilization (percent of the request) the autoscaler aims for.",
    )


class ServiceSpec(CamelModel):
    """The ClusterIP Service in front of the agent."""

    port: int = Field(
        80, ge=1, le=65535, description="Service port; traffic goes to 8080 in the pod."
    )


class EnvVar(CamelModel):
    """An environment variable for the agent container."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "self.name != 'MODEL_API_KEY'",
                    "MODEL_API_KEY is set by the operator from spec.model.apiKeySecretRef or "
                    "spec.modelRef; "
                    "do not set it in env",
                    ".name",
                ),
                # Header variables are <prefix><SERVER>__<HEADER>; runtime settings that share
                # the prefix (AIAGENT_MCP_CONNECT_SECONDS) have no "__" and stay settable.
                cel_rule(
                    f"!(self.name.startsWith('{MCP_HEADER_ENV_PREFIX}') && "
                    "self.name.contains('__'))",
                    f"{MCP_HEADER_ENV_PREFIX}<SERVER>__<HEADER> variables are set by the operator "
                    "from spec.agent.mcpServers[].headers; do not set them in env",
                    ".name",
                ),
                cel_rule(
                    "!has(self.valueFrom) || !has(self.value) || self.value == ''",
                    "set value or valueFrom, not both",
                    ".valueFrom",
                ),
            ]
        }
    }

    name: str = Field(max_length=253, pattern=ENV_NAME, description="Variable name.")
    value: str | None = Field(
        None, max_length=32768, description="Literal value. Use valueFrom for secrets."
    )
    value_from: EnvVarSource | None = Field(
        None,
        description="Source of the value: secretKeyRef, configMapKeyRef, fieldRef or "
        "resourceFieldRef, as in Kubernetes.",
    )


class Toleration(CamelModel):
    """A pod toleration, as in Kubernetes."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "(has(self.key) && self.key != '') "
                    "|| (has(self.operator) && self.operator == 'Exists')",
                    "a toleration without a key needs operator Exists (it tolerates every taint)",
                    ".operator",
                ),
                cel_rule(
                    "!has(self.operator) || self.operator != 'Exists' || !has(self.value) "
                    "|| self.value == ''",
                    "a toleration with operator Exists takes no value",
                    ".value",
                ),
                cel_rule(
                    "!has(self.tolerationSeconds) "
                    "|| (has(self.effect) && self.effect == 'NoExecute')",
                    "tolerationSeconds needs effect NoExecute",
                    ".tolerationSeconds",
                ),
            ]
        }
    }

    key: str | None = Field(
        None,
        max_length=QUALIFIED_NAME_MAX,
        pattern=f"({QUALIFIED_NAME})|^$",
        description="Taint key; empty matches all keys (with operator Exists).",
    )
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal.")
    value: str | None = Field(
        None, max_length=63, pattern=LABEL_VALUE, description="Taint value for Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        None, description="How long a NoExecute taint is tolerated before eviction."
    )


class AIAgentSpec(CamelModel):
    """The desired state of an AI agent served over HTTP."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.model) != has(self.modelRef)",
                    "set exactly one of spec.model (the model, inline) or spec.modelRef (a "
                    "ModelConfig's name)",
                )
            ]
        }
    }

    framework: Framework = Field(description="Agent framework: crewai, langchain or openai-agents.")
    model: ModelSpec | None = Field(
        None, description="The language model the agent uses. Exactly one of model or modelRef."
    )
    model_ref: ModelRef | None = Field(
        None,
        description="A ModelConfig that says which model the agent uses, and holds its API key. "
        "Exactly one of model or modelRef.",
    )
    limits: LimitsFields = Field(
        LimitsFields(),
        description="Budgets the agent's runtime enforces before each request (429 with "
        "Retry-After when spent). Across replicas they hold exactly when spec.dapr.stateStore is "
        "set (shared counters); otherwise each pod gets its share (the limit divided by the "
        "pods: replicas, or autoscaling.maxReplicas).",
    )

    @model_validator(mode="after")
    def _one_model(self) -> AIAgentSpec:
        # The same rule as the CEL validation above, for manifests read outside a cluster.
        if (self.model is None) == (self.model_ref is None):
            raise ValueError("set exactly one of spec.model or spec.modelRef")
        return self

    agent: AgentSpec = Field(AgentSpec(), description="What the agent is and does.")
    image: str | None = Field(
        None,
        max_length=1024,
        pattern=r"^[^\s]+$",
        description="Runtime image. Defaults to the operator's configured agent runtime image.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Image pull policy of the agent container."
    )
    replicas: int = Field(
        1, ge=0, le=1000, description="Number of pods. Ignored while autoscaling is enabled."
    )
    autoscaling: AutoscalingSpec = Field(
        AutoscalingSpec(), description="CPU-based horizontal autoscaling."
    )
    resources: ResourceRequirements | None = Field(
        None,
        description="Agent container resources; keys not given fall back to the operator defaults.",
    )
    dapr: DaprSpec = Field(DaprSpec(), description="Dapr sidecar settings.")
    service: ServiceSpec = Field(ServiceSpec(), description="Service settings.")
    network_policy: NetworkPolicySpec = Field(
        NetworkPolicySpec(),
        description="A NetworkPolicy for the agent's pods: who may call them, and what they may "
        "reach (DNS, the model, MCP servers, Dapr). Enforced only by network plugins that "
        "enforce NetworkPolicy.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=128,
        description="Extra environment variables (one per name; one the operator sets too, "
        "such as HOME, takes this value).",
        # The Deployment's env is a map by name for server-side apply: a name twice is refused.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    env_from: list[EnvFromSource] = Field(
        default_factory=list,
        max_length=32,
        description="Extra environment from ConfigMaps or Secrets (secretRef, configMapRef).",
    )
    service_account_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="ServiceAccount of the pods. Unset: the namespace default, no token mounted.",
    )
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Pod node selector: node label keys and values.",
        json_schema_extra={"x-kubernetes-validations": [qualified_keys_rule("nodeSelector")]},
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=64, description="Pod tolerations."
    )
    affinity: Affinity | None = Field(None, description="Pod affinity, as in Kubernetes.")
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=16,
        description="Secrets for pulling the image.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    pod_annotations: dict[str, Annotated[str, Field(max_length=MAX_ANNOTATION_BYTES)]] = Field(
        default_factory=dict,
        max_length=MAX_POD_ANNOTATIONS,
        description=f"Extra annotations on the pods (at most {MAX_POD_ANNOTATIONS}, each value "
        f"at most {MAX_ANNOTATION_BYTES} bytes: a pod's annotations must fit in 256 KiB).",
        json_schema_extra={
            "x-kubernetes-validations": [
                qualified_keys_rule("podAnnotations"),
                cel_rule(
                    f"self.all(k, size(bytes(self[k])) <= {MAX_ANNOTATION_BYTES})",
                    f"podAnnotations values must be at most {MAX_ANNOTATION_BYTES} bytes",
                ),
            ]
        },
    )
    pod_labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Extra labels on the pods (label keys and values, as in Kubernetes). The "
        "operator's own labels take precedence.",
        json_schema_extra={"x-kubernetes-validations": [qualified_keys_rule("podLabels")]},
    )


Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(CamelModel):
    """A condition of the AIAgent, as in Kubernetes (metav1.Condition)."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="CamelCase reason for the last transition.")
    message: str = Field("", max_length=MAX_CONDITION_MESSAGE, description="Human-readable detail.")
    last_transition_time: str | None = Field(
        None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        None, description="The .metadata.generation the condition was computed for."
    )

    @field_validator("message", mode="before")
    @classmethod
    def _fit(cls, value: object) -> object:
        # An API server's refusal may list many fields: cut it rather than fail the status write.
        if isinstance(value, str) and len(value) > MAX_CONDITION_MESSAGE:
            return value[: MAX_CONDITION_MESSAGE - 3] + "..."
        return value


class AIAgentStatus(CamelModel):
    """The observed state of the agent, kept by the operator."""

    observed_generation: int | None = Field(
        None, description="The .metadata.generation whose children are applied."
    )
    phase: Phase | None = Field(
        None, description="Pending, Progressing, Ready, Degraded or Failed."
    )
    replicas: int | None = Field(None, description="Pods of the agent's Deployment.")
    ready_replicas: int | None = Field(None, description="Pods that pass the readiness probe.")
    selector: str | None = Field(
        None, description="Label selector of the pods (used by the scale subresource)."
    )
    endpoint: str | None = Field(None, description="In-cluster URL of the agent's HTTP API.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Conditions; Ready tells whether the agent serves requests.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class AIAgent(CamelModel):
    """An AIAgent as the operator reads it from the API server."""

    model_config = {"extra": "ignore"}

    name: str
    namespace: str
    uid: str
    generation: int = 1
    resource_version: str = ""
    deleting: bool = False  # metadata.deletionTimestamp is set
    spec: AIAgentSpec
    status: AIAgentStatus = Field(default_factory=AIAgentStatus)
    # Derived by the operator, never read from the object (see `model_configs.effective`): a
    # digest of the versions of the Secrets its pods read (in the pod template, so a rotated key
    # rolls them), the ModelConfig budget it shares, and the platform Secret ("namespace/name/
    # key", and its resourceVersion) its key copy is made from.
    secrets_version: str = ""
    budget: BudgetSection | None = None
    key_source: str = ""
    key_source_version: str = ""

    @property
    def model(self) -> ModelSpec:
        """The model, once spec.modelRef is resolved into spec.model (`model_configs`)."""
        if self.spec.model is None:
            raise ValueError(f"{self.namespace}/{self.name}: spec.modelRef is not resolved")
        return self.spec.model

    @classmethod
    def from_body(cls, body: Any) -> AIAgent:
        """Parse a raw object (a kopf Body or a dict from the API)."""
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=meta.get("generation", 1),
            resource_version=meta.get("resourceVersion", ""),
            deleting=bool(meta.get("deletionTimestamp")),
            spec=AIAgentSpec.model_validate(dict(body.get("spec") or {})),
            status=AIAgentStatus.model_validate(_known_status(body.get("status") or {})),
        )


def _known_status(status: Any) -> dict[str, Any]:
    # Kopf and older operator versions may leave fields of their own in status; ignore them.
    return {k: v for k, v in dict(status).items() if k in _STATUS_WIRE_NAMES}


_STATUS_WIRE_NAMES = {field.alias or name for name, field in AIAgentStatus.model_fields.items()}
