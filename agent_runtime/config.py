"""The format of `agent.yaml`: what the runtime needs to build and serve one agent.

The runtime owns this format. The operator renders it into the ConfigMap `<name>-agent`
(see `aiagent_operator.render`), and the CRD's `spec.model` / `spec.agent` reuse these models,
so a field is described once and means the same on a laptop and in a cluster.
No secret ever lives here: the API key reaches the runtime as an environment variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, JsonValue, ValidationError, model_validator

# The MCP models are re-exported too: the operator imports agent.yaml's format from here only.
from .mcp_config import MCP_HEADER_ENV_PREFIX as MCP_HEADER_ENV_PREFIX
from .mcp_config import RESERVED_HEADER_RULE as RESERVED_HEADER_RULE
from .mcp_config import McpHeaderFields as McpHeaderFields
from .mcp_config import McpServer as McpServer
from .mcp_config import McpServerFields as McpServerFields
from .mcp_config import mcp_header_env as mcp_header_env
from .mcp_config import unique_mcp_servers as unique_mcp_servers

# Re-exported: the operator's API models build on them.
from .wire import CamelModel as CamelModel
from .wire import cel_rule as cel_rule

Framework = Literal["crewai", "langchain", "openai-agents"]
Provider = Literal["openai", "anthropic", "azure", "ollama", "openai-compatible"]
# The runtime's built-in tools; the CRD refuses any other name.
BuiltinTool = Literal["calculator", "http_get"]

# Providers that cannot work without an explicit endpoint.
PROVIDERS_REQUIRING_BASE_URL = ("openai-compatible", "azure")
_NEEDS_BASE_URL = list(PROVIDERS_REQUIRING_BASE_URL)  # rendered as a CEL list literal

DEFAULT_CONFIG_PATH = Path("/etc/aiagent/agent.yaml")
API_KEY_ENV = "MODEL_API_KEY"


# The model's CEL rules, apart so the operator's ModelSpec can add its own to them (pydantic
# replaces a parent's json_schema_extra rather than merging it).
MODEL_RULES: list[JsonValue] = [
    cel_rule(
        f"!(self.provider in {_NEEDS_BASE_URL}) || has(self.baseURL)",
        "model.baseURL is required when model.provider is openai-compatible or azure",
        ".baseURL",
    )
]


class ModelConfig(CamelModel):
    """Which language model the agent talks to, and how."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": MODEL_RULES})

    provider: Provider = Field(
        "openai",
        description="Model provider: openai, anthropic, azure, ollama, or openai-compatible "
        "(any server speaking the OpenAI chat completions API; needs baseURL).",
    )
    name: str = Field(
        min_length=1,
        max_length=253,
        description="Model name as the provider knows it, e.g. gpt-4o-mini.",
    )
    base_url: str | None = Field(
        None,
        alias="baseURL",
        max_length=2048,
        pattern=r"^https?://",
        description="Provider endpoint, e.g. http://vllm.models.svc:8000/v1. "
        "Required for openai-compatible and azure; optional otherwise.",
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature (0 to 2). Provider default when unset."
    )
    max_tokens: int | None = Field(
        None, ge=1, le=1_000_000, description="Upper bound on tokens generated per answer."
    )
    timeout_seconds: int = Field(
        60,
        ge=1,
        le=600,
        description="Per-request timeout towards the provider; past it the runtime answers 504.",
    )

    @model_validator(mode="after")
    def _base_url_when_required(self) -> ModelConfig:
        # Same rule as the CEL validation above, for agent.yaml files read outside a cluster.
        if self.provider in PROVIDERS_REQUIRING_BASE_URL and not self.base_url:
            raise ValueError(f"model.baseURL is required when model.provider is {self.provider}")
        return self


class AgentFields(CamelModel):
    """What the agent is: the fields shared by agent.yaml and the AIAgent spec."""

    description: str | None = Field(
        None,
        max_length=1024,
        description="One line about what the agent does; shown in the A2A agent card.",
    )
    instructions: str | None = Field(
        None,
        max_length=65536,
        description="System prompt (LangChain) or backstory (CrewAI).",
    )
    role: str | None = Field(
        None,
        max_length=1024,
        description="CrewAI agent role. For LangChain it is prepended to the system prompt.",
    )
    goal: str | None = Field(
        None,
        max_length=4096,
        description="CrewAI agent goal. For LangChain it is appended to the system prompt.",
    )
    tools: list[BuiltinTool] = Field(
        default_factory=list,
        max_length=16,
        description="Names of built-in runtime tools the agent may call: calculator, http_get.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    http_allowed_hosts: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Hosts the http_get tool may fetch from (exact names, or *.example.com); "
        "empty: http_get refuses every URL.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class AgentSection(AgentFields):
    """The agent section of agent.yaml."""

    mcp_servers: list[McpServer] = Field(
        default_factory=list,
        max_length=16,
        description="MCP servers whose tools the agent may call, besides the built-in tools.",
    )

    @model_validator(mode="after")
    def _unique_servers(self) -> AgentSection:
        unique_mcp_servers(self.mcp_servers)
        return self

    framework_config_path: str | None = Field(
        None,
        description="Path of a full framework config file (CrewAI agents/tasks YAML, LangChain "
        "agent settings) that takes the place of the inline fields.",
    )


class LimitsFields(CamelModel):
    """Budgets enforced before a request reaches the model: over one, the runtime answers 429
    with Retry-After on every route. Unset: no limit of that kind."""

    requests_per_minute: int | None = Field(
        None, ge=1, le=10_000_000, description="Requests the agent serves per minute."
    )
    tokens_per_minute: int | None = Field(
        None,
        ge=1,
        le=10_000_000_000,
        description="Model tokens (in + out) per minute; a request is refused once the "
        "minute's tokens are spent.",
    )
    concurrent_requests: int | None = Field(
        None, ge=1, le=100_000, description="Requests served at once."
    )
    max_tokens_per_request: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Upper bound on the tokens the model may generate for one request (a "
        "request asking for more is capped to it).",
    )


class BudgetSection(CamelModel):
    """A budget several agents share (a ModelConfig's per-namespace budget), as agent.yaml
    holds it. The operator fills it in; people do not write it."""

    name: str = Field(
        min_length=1,
        max_length=512,
        description="Key of the shared counters, the same for every agent that shares it.",
    )
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    divisor: int = Field(
        1,
        ge=1,
        description="Pods that share the budget, when counters are per pod (no state store): "
        "each pod may spend 1/divisor of it.",
    )


class LimitsSection(LimitsFields):
    """The limits section of agent.yaml.

    With a Dapr state store (dapr.stateStore), the per-minute counters live in it and hold across
    replicas exactly. Without one, each pod counts alone and may spend 1/divisor of each limit
    (the operator sets divisor to the agent's pods); concurrent requests are always per pod,
    divided the same way.
    """

    divisor: int = Field(
        1, ge=1, description="Pods that share the limits when counters are per pod."
    )
    budget: BudgetSection | None = Field(
        None, description="A budget shared with other agents, enforced besides these limits."
    )


DEAD_LETTER_SUFFIX = "-dead"
REPLY_SUFFIX = "-replies"


class DaprSubscription(CamelModel):
    """Work taken from a Dapr pub/sub topic: each message is a question, answered on replyTopic."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.replyTopic) || self.replyTopic != self.topic",
                    "dapr.subscribe.replyTopic must differ from topic "
                    "(the agent would read its own answers as questions)",
                    ".replyTopic",
                ),
                cel_rule(
                    "!has(self.deadLetterTopic) || self.deadLetterTopic != self.topic",
                    "dapr.subscribe.deadLetterTopic must differ from topic",
                    ".deadLetterTopic",
                ),
            ]
        }
    )

    topic: str = Field(
        min_length=1,
        max_length=249,
        description='Topic the agent takes questions from; each message\'s data is {"input": '
        '"...", "sessionId": optional, "correlationId": optional (default: the CloudEvent id)}.',
    )
    reply_topic: str | None = Field(
        None,
        min_length=1,
        max_length=249,
        description='Topic the answers are published to, as {"correlationId", "sessionId", '
        '"output", "agent", "usage"}. Default: <topic>-replies.',
    )
    dead_letter_topic: str | None = Field(
        None,
        min_length=1,
        max_length=249,
        description="Topic Dapr moves a message to when it cannot be answered: bad input at "
        "once, a failing provider after the retries. Default: <topic>-dead.",
    )

    @property
    def replies(self) -> str:
        """The reply topic in effect."""
        return self.reply_topic or f"{self.topic}{REPLY_SUFFIX}"

    @property
    def dead_letter(self) -> str:
        """The dead-letter topic in effect."""
        return self.dead_letter_topic or f"{self.topic}{DEAD_LETTER_SUFFIX}"

    @model_validator(mode="after")
    def _distinct_topics(self) -> DaprSubscription:
        # Same rules as the CEL validations above, for agent.yaml files read outside a cluster.
        if self.replies == self.topic:
            raise ValueError("replyTopic must differ from topic (the agent would answer answers)")
        if self.dead_letter == self.topic:
            raise ValueError("deadLetterTopic must differ from topic")
        return self


class DaprSection(CamelModel):
    """What the runtime needs to know about the Dapr sidecar beside it: component names only
    (the operator, not the runtime, creates components from their full definitions)."""

    enabled: bool = Field(False, description="A Dapr sidecar runs beside the agent.")
    state_store: str | None = Field(
        None,
        max_length=253,
        description="Name of the Dapr state store component that keeps conversation memory; "
        "every replica with the same app id continues every session.",
    )
    pubsub: str | None = Field(
        None, max_length=253, description="Name of the Dapr pub/sub component for subscribe."
    )
    subscribe: DaprSubscription | None = Field(
        None,
        description="Take work from a topic of dapr.pubsub and answer on another (needs pubsub).",
    )

    @model_validator(mode="after")
    def _subscribe_needs_pubsub(self) -> DaprSection:
        if self.subscribe is not None and not self.pubsub:
            raise ValueError("subscribe needs pubsub, the component its topics live on")
        return self


class AgentConfig(CamelModel):
    """The whole of agent.yaml."""

    name: str = Field(min_length=1, max_length=253, description="The agent's name.")
    framework: Framework
    model: ModelConfig
    agent: AgentSection = AgentSection()
    dapr: DaprSection = DaprSection()
    limits: LimitsSection = LimitsSection()

    def to_yaml(self) -> str:
        wire = self.to_wire()
        # Agents without MCP servers (or limits) keep the agent.yaml (and so the config hash, and
        # their pods) they had before MCP servers (or limits) existed.
        if not wire["agent"].get("mcpServers"):
            wire["agent"].pop("mcpServers", None)
        if self.limits == LimitsSection():
            wire.pop("limits", None)
        # Text as written (an emoji stays one, not "\U0001F600"), for whoever reads the ConfigMap.
        return str(yaml.safe_dump(wire, sort_keys=False, allow_unicode=True))


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


# Fields of an AIAgent spec that only the operator acts on; they are not part of agent.yaml.
_OPERATOR_ONLY_MODEL_FIELDS = ("apiKeySecretRef",)
_OPERATOR_ONLY_AGENT_FIELDS = ("configMapRef",)


def agent_config_from_manifest(
    manifest: dict[str, Any], framework_config_path: str | None = None
) -> AgentConfig:
    """The agent.yaml an AIAgent manifest stands for (used by the operator and by `aiagent`).

    Pod-level settings (replicas, resources, …) are dropped; Secret references are dropped
    because the key arrives as the MODEL_API_KEY environment variable.
    """
    spec = dict(manifest.get("spec") or {})
    name = (manifest.get("metadata") or {}).get("name") or "agent"
    if spec.get("modelRef") and not spec.get("model"):
        raise ConfigError(
            "spec.modelRef names a ModelConfig, which only the operator resolves in a cluster: "
            "give spec.model to run this agent here"
        )
    model = {
        k: v for k, v in (spec.get("model") or {}).items() if k not in _OPERATOR_ONLY_MODEL_FIELDS
    }
    agent = {
        k: v for k, v in (spec.get("agent") or {}).items() if k not in _OPERATOR_ONLY_AGENT_FIELDS
    }
    if framework_config_path:
        agent["frameworkConfigPath"] = framework_config_path
    if agent.get("mcpServers"):
        agent["mcpServers"] = [_runtime_mcp_server(s) for s in agent["mcpServers"]]
    dapr = spec.get("dapr") or {}
    return AgentConfig.model_validate(
        {
            "name": name,
            "framework": spec.get("framework"),
            "model": model,
            "agent": agent,
            "dapr": {
                "enabled": dapr.get("enabled", True),
                "stateStore": _component_name(dapr, "stateStore"),
                "pubsub": _component_name(dapr, "pubsub"),
                "subscribe": dapr.get("subscribe"),
            },
            # The spec's limits hold on a laptop too (one process: no share to divide).
            "limits": spec.get("limits") or {},
        }
    )


def _runtime_mcp_server(server: Any) -> Any:
    """An MCP server of the spec as agent.yaml holds it: a header from a Secret becomes the name
    of the environment variable the operator fills from that Secret, never the value."""
    if not isinstance(server, dict):
        return server  # the validation that follows says what is wrong
    headers = []
    for header in server.get("headers") or []:
        if isinstance(header, dict) and "valueFrom" in header:
            env = mcp_header_env(str(server.get("name")), str(header.get("name")))
            header = {"name": header.get("name"), "valueFromEnv": env}
        headers.append(header)
    return {**server, "headers": headers}


def _component_name(dapr: dict[str, Any], field: str) -> str | None:
    """`spec.dapr.<field>` as agent.yaml keeps it: the component's name.

    The AIAgent spec gives a component as an object ({name, type, version, metadata}: the
    operator creates it when `type` is set); a plain name is accepted too (hand-written files).
    """
    value = dapr.get(field)
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"dapr.{field}: expected a component name or an object with a name")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"dapr.{field}.name: a component needs a name")
    return name


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"{where}: {first['msg']}"


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read agent.yaml, or an AIAgent manifest, into an AgentConfig.

    Raises ConfigError with one line naming the file and the offending field.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        if raw.get("kind") == "AIAgent":
            return agent_config_from_manifest(raw)
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        prefix = "spec." if raw.get("kind") == "AIAgent" else ""
        raise ConfigError(f"{path}: {prefix}{_first_error(exc)}") from None
    except ConfigError as exc:  # from the manifest's spec
        raise ConfigError(f"{path}: spec.{exc}") from None
