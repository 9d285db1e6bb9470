"""The `agent.mcpServers` part of agent.yaml: MCP servers whose tools the agent may call.

The AIAgent spec reuses McpServerFields and McpHeaderFields (`aiagent_operator.api`); there a
header may come from a Secret, which reaches the runtime only as an environment variable.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator

from .wire import CamelModel, cel_rule

# MCP server names prefix their tools' names (`<server>_<tool>`) and, with header names, name the
# environment variables of secret headers; neither may hold "--", so the "__" between them in
# mcp_header_env is unambiguous and no two headers share a variable.
MCP_SERVER_NAME = r"^[a-z0-9]+(-[a-z0-9]+)*$"
HTTP_HEADER_NAME = r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$"
MCP_HEADER_ENV_PREFIX = "AIAGENT_MCP_"
# Headers the MCP client sets itself; a configured one would break the protocol.
RESERVED_MCP_HEADERS = [
    "accept",
    "connection",
    "content-length",
    "content-type",
    "host",
    "mcp-protocol-version",
    "mcp-session-id",
    "transfer-encoding",
]


def mcp_header_env(server: str, header: str) -> str:
    """The environment variable that carries a secret MCP header's value into the runtime,
    e.g. AIAGENT_MCP_GITHUB__AUTHORIZATION (the operator fills it from the header's Secret)."""
    return f"{MCP_HEADER_ENV_PREFIX}{server}__{header}".upper().replace("-", "_")


# A subclass that sets its own rules must repeat this one (pydantic replaces json_schema_extra).
RESERVED_HEADER_RULE = cel_rule(
    f"!(self.name.lowerAscii() in {RESERVED_MCP_HEADERS})",
    "the MCP client sets this header itself; it cannot be configured",
    ".name",
)


class McpHeaderFields(CamelModel):
    """An HTTP header sent with every request to an MCP server."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [RESERVED_HEADER_RULE]}
    )

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=HTTP_HEADER_NAME,
        description="Header name, e.g. Authorization or X-Tenant.",
    )

    @model_validator(mode="after")
    def _not_reserved(self) -> McpHeaderFields:
        if self.name.lower() in RESERVED_MCP_HEADERS:
            raise ValueError(f"the MCP client sets {self.name} itself; it cannot be configured")
        return self


class McpHeader(McpHeaderFields):
    """A header in agent.yaml: a literal value, or the environment variable holding a secret."""

    value: str | None = Field(None, max_length=8192, description="Literal value.")
    value_from_env: str | None = Field(
        None,
        max_length=253,
        description="Environment variable holding the value (secrets: the operator sets it "
        "from the header's Secret, and only its name is written here).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> McpHeader:
        if (self.value is None) == (self.value_from_env is None):
            raise ValueError(f"header {self.name} needs exactly one of value or valueFromEnv")
        return self


class McpServerFields(CamelModel):
    """An MCP server reached over streamable HTTP, whose tools the agent may call."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "isURL(self.url) && url(self.url).getScheme() in ['http', 'https'] "
                    "&& url(self.url).getHost() != ''",
                    "mcpServers[].url must be an http:// or https:// URL, "
                    "e.g. http://github-mcp.tools.svc:8080/mcp",
                    ".url",
                )
            ]
        }
    )

    name: str = Field(
        min_length=1,
        max_length=32,
        pattern=MCP_SERVER_NAME,
        description="Short name of the server (lowercase letters, digits, single dashes). The "
        "model sees its tools as <name>_<tool>, so tools of two servers never clash.",
    )
    url: str = Field(
        max_length=2048,
        pattern=r"^https?://",
        description="Streamable HTTP endpoint of the server, e.g. http://github-mcp.tools.svc/mcp.",
    )
    tools: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list,
        max_length=128,
        description="Allow-list of the server's tool names (as the server names them) offered to "
        "the model; empty: all of them. A listed tool the server lacks stops the agent at startup.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    timeout_seconds: int = Field(
        30,
        ge=1,
        le=600,
        description="Per-call timeout of the server's tools: a call past it reaches the model as "
        "a tool error. Connecting at startup may take this long, or at least 10 s.",
    )


class McpServer(McpServerFields):
    """An MCP server in agent.yaml."""

    headers: list[McpHeader] = Field(
        default_factory=list, max_length=16, description="Headers sent with every request."
    )

    @model_validator(mode="after")
    def _unique_headers(self) -> McpServer:
        names = [h.name.lower() for h in self.headers]
        if len(names) != len(set(names)):
            raise ValueError(f"MCP server {self.name}: header names must be unique")
        return self


def unique_mcp_servers(servers: list[Any]) -> None:
    """Raise unless the MCP servers' names are unique (the CRD's list map does it in a cluster)."""
    names = [s.name for s in servers]
    if len(names) != len(set(names)):
        raise ValueError(f"mcpServers: names must be unique, got {names}")
