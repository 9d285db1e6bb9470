"""Runtime settings from the environment: limits, auth, logging. The agent itself is agent.yaml."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .config import API_KEY_ENV, AgentConfig, ModelConfig

# The variable each provider's own SDK reads, used when MODEL_API_KEY is unset (laptop use).
PROVIDER_KEY_ENV = {
    "openai": "OPENAI_API_KEY",
    "openai-compatible": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "azure": "AZURE_OPENAI_API_KEY",
    "ollama": "",
}


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"aiagent: {name} must be an integer, got {value!r}") from None


def _float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        raise SystemExit(f"aiagent: {name} must be a number, got {value!r}") from None


@dataclass(frozen=True)
class RuntimeSettings:
    """Read once at startup; see the README for each variable."""

    auth_token: str = ""
    max_body_bytes: int = 1024 * 1024
    max_input_chars: int = 32_000
    # A client slower than these is cut off (slow-loris): the request line and headers must
    # arrive within header_timeout_seconds of its first byte (or of the connection), the body
    # within body_timeout_seconds of the headers.
    header_timeout_seconds: float = 10
    body_timeout_seconds: float = 30
    max_sessions: int = 10_000
    max_session_messages: int = 40
    log_format: str = "json"
    dapr_http_port: int = 0
    # Dapr's app API token: when set, the sidecar's calls (/dapr/*) carry it as dapr-api-token.
    app_api_token: str = ""
    pubsub_max_attempts: int = 3
    shutdown_grace_seconds: int = 25
    # How long startup keeps trying to reach the MCP servers before the agent fails.
    mcp_connect_seconds: int = 20
    # Where a fatal startup error goes for Kubernetes (the terminationMessagePath).
    termination_log: str = "/dev/termination-log"
    cors_origins: list[str] = field(default_factory=list)
    # The length of the fixed windows that limits.requestsPerMinute and tokensPerMinute count
    # in: a minute, as their names say; tests shorten it so they need not wait a minute.
    limit_window_seconds: int = 60
    # The agent's namespace (the operator sets it from the downward API), a label of every
    # metric; empty outside a cluster.
    namespace: str = ""

    @classmethod
    def from_environment(cls) -> RuntimeSettings:
        return cls(
            auth_token=os.environ.get("AIAGENT_AUTH_TOKEN", ""),
            max_body_bytes=_int("AIAGENT_MAX_BODY_BYTES", cls.max_body_bytes),
            max_input_chars=_int("AIAGENT_MAX_INPUT_CHARS", cls.max_input_chars),
            header_timeout_seconds=max(0.1, _float("AIAGENT_HEADER_TIMEOUT_SECONDS", 10)),
            body_timeout_seconds=max(0.1, _float("AIAGENT_BODY_TIMEOUT_SECONDS", 30)),
            max_sessions=_int("AIAGENT_MAX_SESSIONS", cls.max_sessions),
            max_session_messages=_int("AIAGENT_MAX_SESSION_MESSAGES", cls.max_session_messages),
            log_format=os.environ.get("AIAGENT_LOG_FORMAT", cls.log_format),
            dapr_http_port=_int("DAPR_HTTP_PORT", 0),
            app_api_token=os.environ.get("APP_API_TOKEN", ""),
            pubsub_max_attempts=max(1, _int("AIAGENT_PUBSUB_MAX_ATTEMPTS", 3)),
            shutdown_grace_seconds=_int("AIAGENT_SHUTDOWN_GRACE_SECONDS", 25),
            mcp_connect_seconds=max(0, _int("AIAGENT_MCP_CONNECT_SECONDS", 20)),
            termination_log=os.environ.get("AIAGENT_TERMINATION_LOG", cls.termination_log),
            limit_window_seconds=max(1, _int("AIAGENT_LIMIT_WINDOW_SECONDS", 60)),
            namespace=os.environ.get("AIAGENT_NAMESPACE", ""),
        )

    def secrets(self, config: AgentConfig) -> list[str | None]:
        """Every secret value the process holds, for the Redactor of logs and error messages."""
        return [
            api_key_for(config.model),
            self.auth_token,
            self.app_api_token,
            *mcp_header_secrets(config),
        ]


def api_key_for(model: ModelConfig) -> str | None:
    """MODEL_API_KEY (the operator sets it from the Secret), else the provider's usual variable."""
    key = os.environ.get(API_KEY_ENV) or os.environ.get(
        PROVIDER_KEY_ENV.get(model.provider, ""), ""
    )
    return key or None


def mcp_header_secrets(config: AgentConfig) -> list[str]:
    """The values of MCP headers taken from environment variables (Secrets, in a cluster), and
    of their credential alone ("Bearer <token>" also yields "<token>")."""
    values: list[str] = []
    for server in config.agent.mcp_servers:
        for header in server.headers:
            value = os.environ.get(header.value_from_env or "", "")
            if value:
                values += [value, value.rsplit(" ", 1)[-1]]
    return values
